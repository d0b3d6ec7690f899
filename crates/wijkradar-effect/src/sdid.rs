//! Synthetic difference-in-differences and its two relatives.
//!
//! This follows Arkhangelsky, Athey, Hirshberg, Imbens and Wager (2021),
//! "Synthetic Difference-in-Differences", as the R package `synthdid`
//! computes it: unit weights ω and time weights λ found by Frank–Wolfe on
//! the collapsed panel, sparsified once, then
//! τ = (ȳ_treated − ωᵀY_controls) after, minus the same λ-weighted before.
//! Synthetic control is the case λ = 0 without an intercept; plain
//! difference-in-differences the case of uniform ω and λ.

use crate::panel::Panel;

/// Which estimator to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// Synthetic difference-in-differences: the default.
    SyntheticDid,
    /// Synthetic control (Abadie et al. 2010), as `synthdid::sc_estimate`.
    SyntheticControl,
    /// Plain difference-in-differences with uniform weights.
    DiffInDiff,
}

/// One estimate with the weights it was made with.
#[derive(Debug, Clone)]
pub struct Estimate {
    /// The average effect over the periods after the start.
    pub tau: f64,
    /// Weight of each comparison unit, summing to 1.
    pub omega: Vec<f64>,
    /// Weight of each period before the start, summing to 1 (all 0 for
    /// synthetic control).
    pub lambda: Vec<f64>,
    /// The treated units' course without the intervention, per period:
    /// the weighted comparison units plus the λ-weighted gap before.
    pub counterfactual: Vec<f64>,
    /// The treated units' mean, per period.
    pub treated: Vec<f64>,
}

/// Frank–Wolfe iterations before the weights are sparsified once.
const ITER_BEFORE_SPARSIFY: usize = 100;
/// Frank–Wolfe iterations at most after that.
const ITER_MAX: usize = 10_000;

/// Estimates the effect on `panel` with `estimator`.
pub fn estimate(panel: &Panel, estimator: Estimator) -> Estimate {
    let (n0, t0) = (panel.n0(), panel.t0());
    let n1 = panel.n() - n0;
    let t1 = panel.t() - t0;
    let noise = noise_level(panel).max(1e-12);
    let min_decrease = 1e-5 * noise;
    let collapsed = collapsed_form(panel);
    let (omega, lambda) = match estimator {
        Estimator::DiffInDiff => (vec![1.0 / n0 as f64; n0], vec![1.0 / t0 as f64; t0]),
        Estimator::SyntheticDid => {
            let zeta_omega = ((n1 * t1) as f64).powf(0.25) * noise;
            let zeta_lambda = 1e-6 * noise;
            let lambda = weights(&lambda_problem(&collapsed), zeta_lambda, true, min_decrease);
            let omega = weights(&omega_problem(&collapsed), zeta_omega, true, min_decrease);
            (omega, lambda)
        }
        Estimator::SyntheticControl => {
            let zeta_omega = 1e-6 * noise;
            let omega = weights(&omega_problem(&collapsed), zeta_omega, false, min_decrease);
            (omega, vec![0.0; t0])
        }
    };
    finish(panel, omega, lambda)
}

/// τ and the courses from the weights.
fn finish(panel: &Panel, omega: Vec<f64>, lambda: Vec<f64>) -> Estimate {
    let (n0, t0, t) = (panel.n0(), panel.t0(), panel.t());
    let treated = panel.treated_mean();
    let synthetic: Vec<f64> = (0..t)
        .map(|s| (0..n0).map(|i| omega[i] * panel.at(i, s)).sum())
        .collect();
    let gap_before: f64 = (0..t0)
        .map(|s| lambda[s] * (treated[s] - synthetic[s]))
        .sum();
    let counterfactual: Vec<f64> = synthetic.iter().map(|v| v + gap_before).collect();
    let after = t0..t;
    let tau = after
        .clone()
        .map(|s| treated[s] - counterfactual[s])
        .sum::<f64>()
        / after.len() as f64;
    Estimate {
        tau,
        omega,
        lambda,
        counterfactual,
        treated,
    }
}

/// The standard deviation of the first differences of the comparison
/// units before the start: the scale of the regularisation.
fn noise_level(panel: &Panel) -> f64 {
    let diffs: Vec<f64> = (0..panel.n0())
        .flat_map(|i| (1..panel.t0()).map(move |s| panel.at(i, s) - panel.at(i, s - 1)))
        .collect();
    sample_sd(&diffs)
}

pub(crate) fn sample_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let ss: f64 = v.iter().map(|x| (x - mean).powi(2)).sum();
    (ss / (v.len() - 1) as f64).sqrt()
}

/// A dense row-major matrix.
#[derive(Debug, Clone)]
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Matrix {
    fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Matrix {
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                data.push(f(r, c));
            }
        }
        Matrix { rows, cols, data }
    }
}

/// The panel with the treated units averaged into one row and the periods
/// after the start averaged into one column: (N0 + 1) × (T0 + 1).
fn collapsed_form(panel: &Panel) -> Matrix {
    let (n, n0, t, t0) = (panel.n(), panel.n0(), panel.t(), panel.t0());
    let mean = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
        let count = (rows.len() * cols.len()) as f64;
        rows.flat_map(|i| cols.clone().map(move |s| (i, s)))
            .map(|(i, s)| panel.at(i, s))
            .sum::<f64>()
            / count
    };
    Matrix::from_fn(n0 + 1, t0 + 1, |r, c| {
        let rows = if r < n0 { r..r + 1 } else { n0..n };
        let cols = if c < t0 { c..c + 1 } else { t0..t };
        mean(rows, cols)
    })
}

/// Time weights: the comparison units' periods before (columns) against
/// their mean after (last column).
fn lambda_problem(collapsed: &Matrix) -> Matrix {
    Matrix::from_fn(collapsed.rows - 1, collapsed.cols, |r, c| {
        collapsed.at(r, c)
    })
}

/// Unit weights: the comparison units (columns) against the treated mean
/// (last column), over the periods before (rows).
fn omega_problem(collapsed: &Matrix) -> Matrix {
    Matrix::from_fn(collapsed.cols - 1, collapsed.rows, |r, c| {
        collapsed.at(c, r)
    })
}

/// Weights on the simplex for the columns of `y` but the last, fitting the
/// last column with a ridge penalty `zeta`: 100 iterations, sparsify
/// (weights at most a quarter of the largest go to 0), then to convergence.
fn weights(y: &Matrix, zeta: f64, intercept: bool, min_decrease: f64) -> Vec<f64> {
    let cols = y.cols - 1;
    let first = frank_wolfe(
        y,
        zeta,
        intercept,
        vec![1.0 / cols as f64; cols],
        min_decrease,
        ITER_BEFORE_SPARSIFY,
    );
    frank_wolfe(y, zeta, intercept, sparsify(first), min_decrease, ITER_MAX)
}

fn sparsify(mut v: Vec<f64>) -> Vec<f64> {
    let max = v.iter().cloned().fold(f64::MIN, f64::max);
    for x in v.iter_mut() {
        if *x <= max / 4.0 {
            *x = 0.0;
        }
    }
    let sum: f64 = v.iter().sum();
    v.iter_mut().for_each(|x| *x /= sum);
    v
}

/// Minimises ζ²‖x‖² + ‖Ax − b‖²/rows over the unit simplex, with exact line
/// search; stops when an iteration gains less than `min_decrease`².
///
/// Works on the Gram matrix AᵀA: every quantity a step needs (Gx, ‖Ax‖²,
/// xᵀAᵀb, ‖x‖²) is updated in O(columns), so an iteration does not touch
/// the rows. The steps are those of `synthdid`'s `fw.step`.
fn frank_wolfe(
    y: &Matrix,
    zeta: f64,
    intercept: bool,
    mut x: Vec<f64>,
    min_decrease: f64,
    max_iter: usize,
) -> Vec<f64> {
    let (rows, cols) = (y.rows, y.cols - 1);
    let mut data = y.data.clone();
    if intercept {
        for c in 0..y.cols {
            let mean = (0..rows).map(|r| data[r * y.cols + c]).sum::<f64>() / rows as f64;
            (0..rows).for_each(|r| data[r * y.cols + c] -= mean);
        }
    }
    let a = |r: usize, c: usize| data[r * y.cols + c];
    let gram: Vec<f64> = (0..cols * cols)
        .map(|k| (0..rows).map(|r| a(r, k / cols) * a(r, k % cols)).sum())
        .collect();
    let atb: Vec<f64> = (0..cols)
        .map(|c| (0..rows).map(|r| a(r, c) * a(r, cols)).sum())
        .collect();
    let btb: f64 = (0..rows).map(|r| a(r, cols).powi(2)).sum();
    let eta = rows as f64 * zeta * zeta;
    let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(p, q)| p * q).sum::<f64>();
    let mut gx: Vec<f64> = (0..cols)
        .map(|c| dot(&gram[c * cols..(c + 1) * cols], &x))
        .collect();
    let mut axax = dot(&gx, &x);
    let mut xatb = dot(&x, &atb);
    let mut xx = dot(&x, &x);
    let mut previous = f64::INFINITY;
    let mut last = f64::INFINITY;
    for t in 0..max_iter {
        if t >= 2 && previous - last <= min_decrease * min_decrease {
            break;
        }
        // The half gradient g = AᵀAx − Aᵀb + ηx in one pass with gᵀx and
        // the vertex of the simplex where g is smallest: the step goes there.
        let (mut i, mut g_min, mut gtx) = (0, f64::INFINITY, 0.0);
        for c in 0..cols {
            let g = gx[c] - atb[c] + eta * x[c];
            gtx += g * x[c];
            if g < g_min {
                (i, g_min) = (c, g);
            }
        }
        // On the simplex, x is the vertex e_i exactly when x_i = 1.
        if x[i] != 1.0 {
            // d = e_i − x; the line search −gᵀd / (‖Ad‖² + η‖d‖²).
            let num = gtx - g_min;
            let row = &gram[i * cols..(i + 1) * cols];
            let ad2 = row[i] - 2.0 * gx[i] + axax;
            let dd = xx - 2.0 * x[i] + 1.0;
            let den = ad2 + eta * dd;
            let s = if den > 0.0 {
                (num / den).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let keep = 1.0 - s;
            axax = keep * keep * axax + 2.0 * s * keep * gx[i] + s * s * row[i];
            xatb = keep * xatb + s * atb[i];
            xx = keep * keep * xx + 2.0 * s * keep * x[i] + s * s;
            // AᵀA is symmetric: its column i is its row i.
            for ((xc, gc), r) in x.iter_mut().zip(gx.iter_mut()).zip(row) {
                *xc *= keep;
                *gc = keep * *gc + s * r;
            }
            x[i] += s;
        }
        previous = last;
        last = zeta * zeta * xx + (axax - 2.0 * xatb + btb) / rows as f64;
    }
    x
}
