//! The pooled baseline: a quasi-Poisson model with a factor per calendar
//! month and a trend, fitted once on the sum of all areas' series of a
//! signal type (large counts, so season and trend are known precisely), and
//! each area's own level on top of it. An area's
//! expected count in month j is L·S_j, with S_j the pooled curve per
//! household and L the area's level: its counts over the fitted months
//! divided by the curve's, down-weighting months whose Anscombe residual
//! exceeds 2.58 (past outbreaks). The sums over the last 1, 2, 3 and 6
//! months are then tested against L·S, with the variance
//! Σ(μ + a·μ²) + μ²·(Var(log L) + Var(log S)): a the overdispersion the
//! areas share (a negative binomial of size 1/a, estimated by moments over
//! every area's fitted months, [`Curve::pool_dispersion`]; without it, the
//! area's own Pearson dispersion φ·μ), Var(log L) the level's own
//! uncertainty, Var(log S) the curve's. The p-value is the smallest of the
//! windows', times four (Bonferroni over the windows). Nothing of the
//! tested months enters the fit.
//! Where the pooled series is small (under [`MONTHLY_FROM`] a month), the
//! curve has the Farrington season window and a trend instead of a factor
//! per calendar month.

use crate::farrington::{self, WINDOWS};
use crate::glm::{self, P};
use crate::{Test, upper_quantile, upper_tail};

/// The pooled curve for testing month `t`: fitted on months up to the
/// one before the longest window.
#[derive(Debug, Clone)]
pub struct Curve {
    fit: glm::Fit,
    t: usize,
    last_fit: usize,
    /// A factor per calendar month, or the Farrington season window.
    monthly: bool,
    /// The pooled series' own dispersion.
    phi: f64,
    /// The areas' shared overdispersion a (a month's variance μ + a·μ²,
    /// negative binomial of size 1/a), once [`Curve::pool_dispersion`] has
    /// estimated it from every area's fitted months.
    overdispersion: Option<f64>,
}

/// Intercept, calendar months 2..12 against month 1, trend.
const MONTHLY_COVARIATES: usize = 13;

/// Below this many signals a month in all, a factor per calendar month is
/// too noisy: the curve then has a season window and a trend only.
pub const MONTHLY_FROM: f64 = 200.0;

fn monthly_design(i: usize) -> [f64; P] {
    let mut x = [0.0; P];
    x[0] = 1.0;
    if !i.is_multiple_of(12) {
        x[i % 12] = 1.0;
    }
    x[12] = i as f64;
    x
}

impl Curve {
    /// Fits the curve on the summed counts of all areas over the last three
    /// years before the longest window (`households` their summed base):
    /// at least 18 months, so every calendar month is seen.
    pub fn fit(total: &[u64], households: f64, t: usize) -> Option<Curve> {
        let longest = WINDOWS[WINDOWS.len() - 1];
        let last_fit = (t + 1).checked_sub(longest + 1)?;
        let first = (last_fit + 1).saturating_sub(36);
        if last_fit + 1 - first < 18 || last_fit >= total.len() {
            return None;
        }
        let months = first..=last_fit;
        let y: Vec<f64> = months.clone().map(|i| total[i] as f64).collect();
        let monthly = y.iter().sum::<f64>() / y.len() as f64 >= MONTHLY_FROM;
        let (x, p): (Vec<[f64; P]>, usize) = if monthly {
            (
                months.clone().map(monthly_design).collect(),
                MONTHLY_COVARIATES,
            )
        } else {
            (months.clone().map(|i| window_design(i, t)).collect(), 3)
        };
        let offset = vec![households.max(1.0).ln(); y.len()];
        let fit = glm::poisson(&x, &y, &offset, &vec![1.0; y.len()], p)?;
        let chi2: f64 = y
            .iter()
            .zip(&fit.mu)
            .map(|(y, mu)| (y - mu).powi(2) / mu.max(1e-9))
            .sum();
        let phi = (chi2 / (y.len() - p).max(1) as f64).max(1.0);
        Some(Curve {
            fit,
            t,
            last_fit,
            monthly,
            phi,
            overdispersion: None,
        })
    }

    /// Estimates the overdispersion the areas share, by moments over every
    /// area's fitted months (down-weighted months left out): a month's
    /// squared residual against the area's level, corrected for the level
    /// being fitted on it, is μ + a·μ² on average. One area's own
    /// dispersion rests on a few dozen small counts and is often far off;
    /// hundreds of areas together pin it down. Returns each area's level,
    /// in order, for [`test_level`].
    pub fn pool_dispersion<'a>(
        &mut self,
        areas: impl IntoIterator<Item = (&'a [u64], f64)>,
        config: &farrington::Config,
    ) -> Vec<Option<Level>> {
        let levels: Vec<Option<Level>> = areas
            .into_iter()
            .map(|(counts, households)| Level::of(counts, households, self, config))
            .collect();
        let (mut num, mut den) = (0.0, 0.0);
        for l in levels.iter().flatten() {
            let total: f64 = l.months.iter().map(|m| m.1 * l.level).sum();
            for &(y, shape, w) in &l.months {
                if w < 1.0 {
                    continue;
                }
                let mu = l.level * shape;
                let leverage = mu / total.max(1e-12);
                num += (y - mu).powi(2) / (1.0 - leverage).max(0.1) - mu;
                den += mu * mu;
            }
        }
        if den > 0.0 {
            self.overdispersion = Some((num / den).max(0.0));
        }
        levels
    }

    /// The areas' shared overdispersion, when estimated.
    pub fn overdispersion(&self) -> Option<f64> {
        self.overdispersion
    }

    fn design(&self, i: usize) -> [f64; P] {
        if self.monthly {
            monthly_design(i)
        } else {
            window_design(i, self.t)
        }
    }

    /// Expected count per household in month `i`.
    fn per_household(&self, i: usize) -> f64 {
        self.fit.predict(&self.design(i), 0.0)
    }

    /// The variance of the curve's log at month `i`: its own uncertainty.
    fn log_variance(&self, i: usize) -> f64 {
        let x = self.design(i);
        let mut q = 0.0;
        for a in 0..self.fit.p {
            for b in 0..self.fit.p {
                q += x[a] * self.fit.cov[a][b] * x[b];
            }
        }
        self.phi * q.max(0.0)
    }
}

/// Intercept, the Farrington season window around the tested month, trend.
fn window_design(i: usize, t: usize) -> [f64; P] {
    farrington::row(&[1.0, farrington::same_season(i, t, 1), i as f64])
}

/// An area's level on the curve, from its fitted months (the level does not
/// depend on the shared overdispersion).
#[derive(Debug, Clone)]
pub struct Level {
    level: f64,
    /// Per fitted month: the count, the curve × the area's households, and
    /// the month's weight (below 1 for a past outbreak).
    months: Vec<(f64, f64, f64)>,
    /// The area's own dispersion (weighted Pearson), at least 1.
    phi: f64,
}

impl Level {
    /// The level, with past outbreaks down-weighted; None with under six
    /// fitted months.
    fn of(
        counts: &[u64],
        households: f64,
        curve: &Curve,
        config: &farrington::Config,
    ) -> Option<Level> {
        let t = curve.t;
        counts.get(t)?;
        let first = t.saturating_sub(12 * config.years + config.w);
        let fitted = first..=curve.last_fit;
        if fitted.clone().count() < 6 {
            return None;
        }
        let shape: Vec<f64> = fitted
            .clone()
            .map(|i| curve.per_household(i) * households)
            .collect();
        let y: Vec<f64> = fitted.clone().map(|i| counts[i] as f64).collect();
        // The level, then again with past outbreaks down-weighted.
        let level_with = |w: &[f64]| {
            let num: f64 = y.iter().zip(w).map(|(y, w)| y * w).sum();
            let den: f64 = shape.iter().zip(w).map(|(s, w)| s * w).sum();
            num / den.max(1e-12)
        };
        let mut weights = vec![1.0; y.len()];
        let mut level = level_with(&weights);
        // The residuals are scaled by the area's own dispersion, estimated
        // robustly (the median squared Pearson residual over the median of
        // χ²₁, 0.455), so that neither ordinary noise of an overdispersed
        // series reads as an outbreak nor a past outbreak hides itself.
        let mut r2: Vec<f64> = y
            .iter()
            .zip(&shape)
            .map(|(y, s)| (y - level * s).powi(2) / (level * s).max(1e-9))
            .collect();
        r2.sort_by(f64::total_cmp);
        let phi0 = (r2[r2.len() / 2] / 0.455).max(1.0);
        let mut any = false;
        for ((w, &yi), &si) in weights.iter_mut().zip(&y).zip(&shape) {
            let mu = (level * si).max(1e-9);
            let s = 1.5 * (yi.powf(2.0 / 3.0) * mu.powf(-1.0 / 6.0) - mu.sqrt()) / phi0.sqrt();
            if s > 2.58 {
                *w = s.powi(-2);
                any = true;
            }
        }
        if any {
            level = level_with(&weights);
        }
        let n = y.len() as f64;
        let chi2: f64 = y
            .iter()
            .zip(&shape)
            .zip(&weights)
            .map(|((y, s), w)| w * (y - level * s).powi(2) / (level * s).max(1e-9))
            .sum();
        Some(Level {
            level,
            phi: (chi2 / (n - 1.0)).max(1.0),
            months: y
                .into_iter()
                .zip(shape)
                .zip(weights)
                .map(|((y, s), w)| (y, s, w))
                .collect(),
        })
    }
}

/// Tests the curve's month of an area's counts against its level on it.
pub fn test(
    counts: &[u64],
    households: f64,
    curve: &Curve,
    config: &farrington::Config,
) -> Option<Test> {
    let level = Level::of(counts, households, curve, config)?;
    test_level(&level, counts, households, curve, config)
}

/// [`test`] with the area's level already found ([`Curve::pool_dispersion`]).
pub fn test_level(
    level: &Level,
    counts: &[u64],
    households: f64,
    curve: &Curve,
    config: &farrington::Config,
) -> Option<Test> {
    let t = curve.t;
    counts.get(t)?;
    let Level { level, months, phi } = level;
    let (level, phi) = (*level, *phi);
    // A month's variance: the negative binomial's with the areas' shared
    // overdispersion, or (not estimated) the area's own dispersion.
    let month_variance = |mu: f64| match curve.overdispersion {
        Some(a) => mu + a * mu * mu,
        None => phi * mu,
    };
    // The level's relative variance: the fitted months' variance over the
    // square of their expected sum.
    let fitted: f64 = months.iter().map(|&(_, s, w)| w * level * s).sum();
    let log_level_var = months
        .iter()
        .map(|&(_, s, w)| w * month_variance(level * s))
        .sum::<f64>()
        / fitted.max(0.5).powi(2);
    let mut best = 1.0f64;
    let mut one = (0.0, f64::INFINITY);
    for w in WINDOWS {
        let start = t + 1 - w;
        let y: u64 = counts[start..=t].iter().sum();
        let mus = (start..=t).map(|i| level * curve.per_household(i) * households);
        let mu: f64 = mus.clone().sum();
        let own: f64 = mus.map(month_variance).sum();
        let curve_var = (start..=t).map(|i| curve.log_variance(i)).sum::<f64>() / w as f64;
        let variance = own + mu * mu * (log_level_var + curve_var);
        best = best.min(upper_tail(y, mu, variance));
        if w == 1 {
            one = (mu, upper_quantile(config.alpha, mu, variance));
        }
    }
    // The smallest of four windows' p-values, corrected for the four looks
    // (Bonferroni), so that it is a p-value again.
    let p = (best * WINDOWS.len() as f64).min(1.0);
    Some(Test::gated(counts, t, config.min_cases, one.0, one.1, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_area_level_rides_on_the_pooled_season() {
        // The pooled series: 1,000 a month, March 1,300; one area is 1% of it.
        let total: Vec<u64> = (0..31)
            .map(|i| if i % 12 == 2 { 1300 } else { 1000 })
            .collect();
        let config = farrington::Config {
            w: 0,
            ..farrington::Config::default()
        };
        // Test month 26 (a March): fitted on months 0..=19.
        let curve = Curve::fit(&total, 100_000.0, 26).unwrap();
        let area: Vec<u64> = total.iter().map(|&c| c / 100).collect();
        let t = test(&area, 1000.0, &curve, &config).unwrap();
        assert!((t.expected - 13.0).abs() < 1e-6, "{t:?}");
        assert!(!t.alarm());
        // The area doubles over its last three months: found.
        let mut rising = area.clone();
        for c in &mut rising[24..27] {
            *c *= 2;
        }
        let t = test(&rising, 1000.0, &curve, &config).unwrap();
        assert!(t.p_value.unwrap() < 1e-4, "{t:?}");
    }

    #[test]
    fn the_shared_overdispersion_is_found_from_many_small_areas() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Gamma, Poisson};
        // 400 areas of 4 households a month, negative binomial of size 10
        // (variance 4 + 16/10): a = 0.1. One area's 24 months could not say.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let gamma = Gamma::new(10.0, 0.4).unwrap();
        let areas: Vec<Vec<u64>> = (0..400)
            .map(|_| {
                (0..31)
                    .map(|_| {
                        Poisson::new(gamma.sample(&mut rng))
                            .unwrap()
                            .sample(&mut rng) as u64
                    })
                    .collect()
            })
            .collect();
        let total: Vec<u64> = (0..31).map(|t| areas.iter().map(|a| a[t]).sum()).collect();
        let config = farrington::Config::default();
        let mut curve = Curve::fit(&total, 400_000.0, 30).unwrap();
        assert_eq!(curve.overdispersion(), None);
        curve.pool_dispersion(areas.iter().map(|a| (a.as_slice(), 1000.0)), &config);
        let a = curve.overdispersion().unwrap();
        assert!((0.06..0.14).contains(&a), "{a}");
        // Poisson counts: no overdispersion.
        let poisson = Poisson::new(4.0).unwrap();
        let areas: Vec<Vec<u64>> = (0..400)
            .map(|_| (0..31).map(|_| poisson.sample(&mut rng) as u64).collect())
            .collect();
        let total: Vec<u64> = (0..31).map(|t| areas.iter().map(|a| a[t]).sum()).collect();
        let mut curve = Curve::fit(&total, 400_000.0, 30).unwrap();
        curve.pool_dispersion(areas.iter().map(|a| (a.as_slice(), 1000.0)), &config);
        assert!(curve.overdispersion().unwrap() < 0.03);
        // The test's variance uses it: a month of 9 against 4 is rarer
        // under Poisson than under size 10.
        let mut rising = areas[0].clone();
        rising[30] = 12;
        let p = |c: &Curve| test(&rising, 1000.0, c, &config).unwrap().p_value.unwrap();
        let mut wider = curve.clone();
        wider.overdispersion = Some(0.1);
        assert!(p(&curve) < p(&wider), "{} {}", p(&curve), p(&wider));
    }

    #[test]
    fn a_past_outbreak_does_not_raise_the_level() {
        let total = vec![1000u64; 31];
        let config = farrington::Config::default();
        let curve = Curve::fit(&total, 100_000.0, 30).unwrap();
        let mut area = vec![10u64; 31];
        for c in &mut area[5..8] {
            *c = 40;
        }
        let t = test(&area, 1000.0, &curve, &config).unwrap();
        assert!(t.expected < 11.0, "{t:?}");
    }
}
