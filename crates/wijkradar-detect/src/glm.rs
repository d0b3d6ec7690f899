//! A weighted Poisson regression with a log link and an offset, fitted by
//! iteratively reweighted least squares, for up to 14 covariates: the
//! quasi-Poisson models of the Farrington-flexible method (an intercept, a
//! seasonal indicator, a trend) and of the pooled curve (an intercept, 11
//! calendar months, a trend).

/// Most covariates a model has.
pub const P: usize = 14;

#[derive(Debug, Clone)]
pub struct Fit {
    pub beta: [f64; P],
    /// Fitted means of the data points.
    pub mu: Vec<f64>,
    /// (XᵀWX)⁻¹ at the fit: the covariance of β up to the dispersion.
    pub cov: [[f64; P]; P],
    /// Covariates used.
    pub p: usize,
}

impl Fit {
    /// The diagonal of the hat matrix: leverage of each point.
    pub fn hat(&self, x: &[[f64; P]], weights: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(&self.mu)
            .zip(weights)
            .map(|((xi, &mu), &w)| {
                let mut q = 0.0;
                for a in 0..self.p {
                    for b in 0..self.p {
                        q += xi[a] * self.cov[a][b] * xi[b];
                    }
                }
                (w * mu * q).clamp(0.0, 0.999_999)
            })
            .collect()
    }

    pub fn predict(&self, x: &[f64; P], offset: f64) -> f64 {
        let eta: f64 = (0..self.p).map(|a| self.beta[a] * x[a]).sum::<f64>() + offset;
        eta.exp()
    }
}

/// Inverts a symmetric positive definite p×p matrix by Gauss–Jordan
/// elimination; `None` when it is singular.
fn invert(m: &[[f64; P]; P], p: usize) -> Option<[[f64; P]; P]> {
    let mut a = *m;
    let mut inv = [[0.0; P]; P];
    for (i, row) in inv.iter_mut().enumerate().take(p) {
        row[i] = 1.0;
    }
    for col in 0..p {
        let pivot = (col..p).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let d = a[col][col];
        for k in 0..p {
            a[col][k] /= d;
            inv[col][k] /= d;
        }
        for r in 0..p {
            if r != col {
                let f = a[r][col];
                for k in 0..p {
                    a[r][k] -= f * a[col][k];
                    inv[r][k] -= f * inv[col][k];
                }
            }
        }
    }
    Some(inv)
}

/// Fits log μ = Xβ + offset to counts `y` with prior `weights`, using the
/// first `p` columns of `x`.
pub fn poisson(
    x: &[[f64; P]],
    y: &[f64],
    offset: &[f64],
    weights: &[f64],
    p: usize,
) -> Option<Fit> {
    let n = y.len();
    if n <= p {
        return None;
    }
    let mean_y = y.iter().sum::<f64>() / n as f64;
    let mean_offset = offset.iter().sum::<f64>() / n as f64;
    let mut beta = [0.0; P];
    beta[0] = (mean_y + 0.1).ln() - mean_offset;
    let mut mu = vec![0.0; n];
    let mut cov = [[0.0; P]; P];
    for _ in 0..50 {
        let mut xtwx = [[0.0; P]; P];
        let mut xtwz = [0.0; P];
        for i in 0..n {
            let eta: f64 = (0..p).map(|a| beta[a] * x[i][a]).sum::<f64>() + offset[i];
            let m = eta.exp().max(1e-10);
            mu[i] = m;
            let z = eta - offset[i] + (y[i] - m) / m;
            let w = weights[i] * m;
            for a in 0..p {
                xtwz[a] += w * x[i][a] * z;
                for b in 0..p {
                    xtwx[a][b] += w * x[i][a] * x[i][b];
                }
            }
        }
        cov = invert(&xtwx, p)?;
        let mut next = [0.0; P];
        for a in 0..p {
            next[a] = (0..p).map(|b| cov[a][b] * xtwz[b]).sum();
        }
        let change = (0..p)
            .map(|a| (next[a] - beta[a]).abs())
            .fold(0.0, f64::max);
        beta = next;
        if change < 1e-8 {
            break;
        }
    }
    for i in 0..n {
        let eta: f64 = (0..p).map(|a| beta[a] * x[i][a]).sum::<f64>() + offset[i];
        mu[i] = eta.exp();
    }
    Some(Fit { beta, mu, cov, p })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intercept_only_fit_is_the_mean_rate() {
        // log μ = β + log(households): the MLE of e^β is Σy / Σhouseholds.
        let y = [3.0, 5.0, 4.0, 8.0];
        let households = [1000.0f64, 1000.0, 2000.0, 2000.0];
        let offset: Vec<f64> = households.iter().map(|h| h.ln()).collect();
        let x = [crate::farrington::row(&[1.0]); 4];
        let fit = poisson(&x, &y, &offset, &[1.0; 4], 1).unwrap();
        assert!((fit.beta[0].exp() - 20.0 / 6000.0).abs() < 1e-12);
        assert!((fit.mu[2] - 2000.0 * 20.0 / 6000.0).abs() < 1e-9);
    }

    #[test]
    fn a_two_group_fit_gives_each_group_its_mean() {
        // An indicator: the MLE is each group's own mean.
        let y = [2.0, 4.0, 10.0, 14.0];
        let r = |s: f64| crate::farrington::row(&[1.0, s]);
        let x = [r(0.0), r(0.0), r(1.0), r(1.0)];
        let fit = poisson(&x, &y, &[0.0; 4], &[1.0; 4], 2).unwrap();
        assert!((fit.beta[0].exp() - 3.0).abs() < 1e-9);
        assert!(((fit.beta[0] + fit.beta[1]).exp() - 12.0).abs() < 1e-9);
        // Var(β₀) = 1/(Σ μ in group 0) = 1/6.
        assert!((fit.cov[0][0] - 1.0 / 6.0).abs() < 1e-9);
    }

    #[test]
    fn a_log_linear_trend_is_recovered() {
        let x: Vec<[f64; P]> = (0..12)
            .map(|t| crate::farrington::row(&[1.0, t as f64]))
            .collect();
        let y: Vec<f64> = (0..12).map(|t| 5.0 * (0.1 * t as f64).exp()).collect();
        let fit = poisson(&x, &y, &[0.0; 12], &[1.0; 12], 2).unwrap();
        assert!((fit.beta[0] - 5.0f64.ln()).abs() < 1e-6);
        assert!((fit.beta[1] - 0.1).abs() < 1e-6);
    }
}
