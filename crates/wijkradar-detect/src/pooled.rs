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
//! uncertainty (after [`shrink`] or [`shrink_toward`], the posterior's:
//! each level borrowed from the areas' common level as far as the spread
//! between areas allows), Var(log S) the curve's. The p-value is the smallest of the
//! windows', times four (Bonferroni over the windows). Nothing of the
//! tested months enters the fit.
//! Where the pooled series is small (under [`MONTHLY_FROM`] a month), the
//! curve has the Farrington season window and a trend instead of a factor
//! per calendar month.

use crate::farrington::{self, WINDOWS};
use crate::glm::{self, P};
use crate::{Test, Window};

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
    /// Per month up to the tested one: the expected count per household and
    /// the variance of the curve's log, computed once (every area asks).
    per_month: Vec<(f64, f64)>,
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
        let mut curve = Curve {
            fit,
            t,
            last_fit,
            monthly,
            phi,
            overdispersion: None,
            per_month: Vec::new(),
        };
        curve.per_month = (0..=t)
            .map(|i| (curve.predict(i), curve.predict_log_variance(i)))
            .collect();
        Some(curve)
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
        let levels = self.levels(areas, config);
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

    /// Each area's level on the curve, in order (what
    /// [`Curve::pool_dispersion`] returns, without estimating the
    /// overdispersion: for areas that take one estimated over more areas).
    pub fn levels<'a>(
        &self,
        areas: impl IntoIterator<Item = (&'a [u64], f64)>,
        config: &farrington::Config,
    ) -> Vec<Option<Level>> {
        areas
            .into_iter()
            .map(|(counts, households)| Level::of(counts, households, self, config))
            .collect()
    }

    /// Sets the areas' shared overdispersion to one estimated over more
    /// areas than the ones tested (every municipality's, [`crate::monitor::Shared`]).
    pub fn set_overdispersion(&mut self, a: f64) {
        self.overdispersion = Some(a);
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

    /// Expected count per household in month `i` (at most the tested one).
    fn per_household(&self, i: usize) -> f64 {
        self.per_month[i].0
    }

    /// The variance of the curve's log at month `i`: its own uncertainty.
    fn log_variance(&self, i: usize) -> f64 {
        self.per_month[i].1
    }

    fn predict(&self, i: usize) -> f64 {
        self.fit.predict(&self.design(i), 0.0)
    }

    fn predict_log_variance(&self, i: usize) -> f64 {
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
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    level: f64,
    /// Per fitted month: the count, the curve × the area's households, and
    /// the month's weight (below 1 for a past outbreak).
    months: Vec<(f64, f64, f64)>,
    /// The area's own dispersion (weighted Pearson), at least 1.
    phi: f64,
    /// The level's relative variance once shrunk toward the areas' common
    /// level ([`shrink`]); None when not shrunk.
    shrunk_variance: Option<f64>,
}

/// The fewest areas whose levels are shrunk toward their common level: with
/// fewer, the spread between areas is not known well enough.
pub const SHRINK_FROM: usize = 8;

/// The common level of a set of areas on the curve, from their levels:
/// the weighted mean, its variance, and the spread between the areas'
/// true levels (τ², with its margin, see [`shrink`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Common {
    pub level: f64,
    pub variance: f64,
    pub spread: f64,
}

/// What the gemeenten' common levels have in common: the country's level
/// and the spread between gemeenten (with its margin), toward which a
/// gemeente's common level is shrunk in turn ([`shrink_toward`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prior {
    pub level: f64,
    pub spread: f64,
    /// The spread between areas within a gemeente, over the gemeenten that
    /// have enough areas to tell (the median): for a gemeente with too few
    /// areas to estimate its own.
    pub within: f64,
}

/// Moments for a random-effects mean (Paule–Mandel style iteration):
/// estimates `x` with sampling variances `v(i, m)` at the mean m. Returns
/// the weighted mean, its variance, and the spread τ² plus two standard
/// errors of its estimate (√(2/Σu²), u = 1/(v + τ²)): a few values that
/// happen to lie close together must not be taken for a spread of zero.
/// With `fixed` the spread is given, not estimated (and no margin added).
fn random_effects(x: &[f64], v: impl Fn(usize, f64) -> f64, fixed: Option<f64>) -> (f64, f64, f64) {
    let mut m = x.iter().sum::<f64>() / x.len() as f64;
    let (mut tau2, mut var_m, mut tau2_se) = (fixed.unwrap_or(0.0), 0.0, 0.0);
    for _ in 0..20 {
        let before = (m, tau2);
        let vs: Vec<f64> = (0..x.len()).map(|i| v(i, m.max(1e-9))).collect();
        let u: Vec<f64> = vs.iter().map(|v| 1.0 / (v + tau2).max(1e-12)).collect();
        let su: f64 = u.iter().sum();
        m = x.iter().zip(&u).map(|(x, u)| u * x).sum::<f64>() / su;
        var_m = 1.0 / su;
        if fixed.is_some() {
            if (m - before.0).abs() <= 1e-9 * m.abs() {
                break;
            }
            continue;
        }
        let (num, den) = x
            .iter()
            .zip(&u)
            .zip(&vs)
            .fold((0.0, 0.0), |(num, den), ((x, u), v)| {
                (num + u * u * ((x - m).powi(2) - v), den + u * u)
            });
        tau2 = (num / den).max(0.0);
        tau2_se = (2.0 / den).sqrt();
        if (m - before.0).abs() <= 1e-9 * m.abs() && (tau2 - before.1).abs() <= 1e-12 {
            break;
        }
    }
    (m, var_m, tau2 + 2.0 * tau2_se)
}

/// A level's sampling variance at the level `m`, under the negative
/// binomial with overdispersion `a`: the weighted sum of its months'
/// variances over the square of the weighted sum of their shapes.
fn sampling(l: &Level, m: f64, a: f64) -> f64 {
    let den: f64 = l.months.iter().map(|&(_, s, w)| w * s).sum();
    let num: f64 = l
        .months
        .iter()
        .map(|&(_, s, w)| w * w * (m * s + a * m * m * s * s))
        .sum();
    num / den.max(1e-12).powi(2)
}

/// The common level of the areas whose levels are given (from
/// [`Curve::pool_dispersion`]); None with fewer than [`SHRINK_FROM`] areas
/// or no shared overdispersion estimated.
pub fn common(levels: &[Option<Level>], curve: &Curve) -> Option<Common> {
    let a = curve.overdispersion?;
    let areas: Vec<&Level> = levels.iter().flatten().collect();
    if areas.len() < SHRINK_FROM {
        return None;
    }
    let x: Vec<f64> = areas.iter().map(|l| l.level).collect();
    let (level, variance, spread) = random_effects(&x, |i, m| sampling(areas[i], m, a), None);
    Some(Common {
        level,
        variance,
        spread,
    })
}

/// The country's level and the spread between gemeenten, from the
/// gemeenten' common levels (each with its own variance); None with fewer
/// than [`SHRINK_FROM`] of them.
pub fn prior(commons: &[Common]) -> Option<Prior> {
    if commons.len() < SHRINK_FROM {
        return None;
    }
    let x: Vec<f64> = commons.iter().map(|c| c.level).collect();
    let (level, _, spread) = random_effects(&x, |i, _| commons[i].variance, None);
    let mut within: Vec<f64> = commons.iter().map(|c| c.spread).collect();
    within.sort_by(f64::total_cmp);
    Some(Prior {
        level,
        spread,
        within: within[within.len() / 2],
    })
}

/// Empirical Bayes: shrinks each area's level (from
/// [`Curve::pool_dispersion`]) toward the level the areas share, by as much
/// as its own noise exceeds the true spread between areas.
///
/// The spread τ² is estimated by moments: the squared deviations of the
/// levels from their weighted mean, less each level's sampling variance V
/// under the negative binomial with the shared overdispersion, plus two
/// standard errors of its estimate, so that a few areas that happen
/// to look alike do not borrow more than the data assure: an area whose
/// true rate differs from its neighbours' would otherwise be pulled toward
/// them and alarm month after month. Where areas truly differ (τ² large
/// against the noise) a level keeps nearly its own value; where they do
/// not, a small area's level borrows from the others. The level's variance
/// becomes the posterior's, B·V + (1 − B)²·Var(mean), B = τ²/(τ² + V) (as
/// in the gamma–Poisson posterior: V at the common level in B, at the
/// area's own in the variance). Fewer than [`SHRINK_FROM`] areas, or no
/// shared overdispersion estimated: unchanged.
pub fn shrink(levels: &mut [Option<Level>], curve: &Curve) {
    shrink_toward(levels, curve, None);
}

/// [`shrink`], with the areas' common level itself first shrunk toward the
/// country's (`prior`) by as much as its own uncertainty exceeds the
/// spread between gemeenten: a gemeente of a few areas knows its common
/// level poorly, and where gemeenten are alike it borrows from the others.
/// Where they differ (real gemeenten do, by a factor of several), its
/// common level stays its own.
pub fn shrink_toward(levels: &mut [Option<Level>], curve: &Curve, prior: Option<Prior>) {
    let Some(a) = curve.overdispersion else {
        return;
    };
    let found = common(levels, curve).or_else(|| {
        // Too few areas to estimate their spread: the typical spread within
        // a gemeente, and the mean of the few with it.
        let p = prior?;
        let areas: Vec<&Level> = levels.iter().flatten().collect();
        if areas.is_empty() {
            return None;
        }
        let x: Vec<f64> = areas.iter().map(|l| l.level).collect();
        let (level, variance, spread) =
            random_effects(&x, |i, m| sampling(areas[i], m, a), Some(p.within));
        Some(Common {
            level,
            variance,
            spread,
        })
    });
    let Some(Common {
        mut level,
        mut variance,
        spread,
    }) = found
    else {
        return;
    };
    if let Some(p) = prior {
        let b = p.spread / (p.spread + variance).max(1e-12);
        level = p.level + b * (level - p.level);
        variance *= b;
    }
    for l in levels.iter_mut().flatten() {
        let b = spread / (spread + sampling(l, level.max(1e-9), a)).max(1e-12);
        l.level = level + b * (l.level - level);
        // As the gamma–Poisson posterior: the weight from the noise at the
        // common level, the variance from the noise at the area's own.
        let var = b * sampling(l, l.level.max(1e-9), a) + (1.0 - b).powi(2) * variance;
        l.shrunk_variance = Some(var / l.level.max(1e-9).powi(2));
    }
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
            shrunk_variance: None,
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

/// [`fn@test`] with the area's level already found ([`Curve::pool_dispersion`]).
pub fn test_level(
    level: &Level,
    counts: &[u64],
    households: f64,
    curve: &Curve,
    config: &farrington::Config,
) -> Option<Test> {
    let t = curve.t;
    counts.get(t)?;
    let Level {
        level,
        months,
        phi,
        shrunk_variance,
    } = level;
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
    let log_level_var = shrunk_variance.unwrap_or_else(|| {
        months
            .iter()
            .map(|&(_, s, w)| w * month_variance(level * s))
            .sum::<f64>()
            / fitted.max(0.5).powi(2)
    });
    let windows = WINDOWS.map(|w| {
        let start = t + 1 - w;
        let y: u64 = counts[start..=t].iter().sum();
        let mus = (start..=t).map(|i| level * curve.per_household(i) * households);
        let mu: f64 = mus.clone().sum();
        let own: f64 = mus.map(month_variance).sum();
        let curve_var = (start..=t).map(|i| curve.log_variance(i)).sum::<f64>() / w as f64;
        let variance = own + mu * mu * (log_level_var + curve_var);
        Window::of(w, y, mu, variance, config.alpha)
    });
    Some(Test::of_windows(counts, t, config.min_cases, windows))
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
        use rand_distr::{Distribution, Poisson};
        // 400 areas of 4 households a month, negative binomial of size 10
        // (variance 4 + 16/10): a = 0.1. One area's 24 months could not say.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let areas: Vec<Vec<u64>> = (0..400)
            .map(|_| {
                (0..31)
                    .map(|_| crate::draw::negative_binomial(&mut rng, 10.0, 4.0))
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

    /// Areas of 1,000 households drawn as Poisson with the given rates a
    /// month, the curve fitted on their sum for month 30, the shared
    /// overdispersion estimated: each area's own level and its shrunk one.
    fn own_and_shrunk(rates: &[f64], seed: u64) -> (Vec<Level>, Vec<Level>) {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Poisson};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let areas: Vec<Vec<u64>> = rates
            .iter()
            .map(|&r| {
                let p = Poisson::new(r).unwrap();
                (0..31).map(|_| p.sample(&mut rng) as u64).collect()
            })
            .collect();
        let total: Vec<u64> = (0..31).map(|t| areas.iter().map(|a| a[t]).sum()).collect();
        let config = farrington::Config::default();
        let mut curve = Curve::fit(&total, 1000.0 * rates.len() as f64, 30).unwrap();
        let own = curve.pool_dispersion(areas.iter().map(|a| (a.as_slice(), 1000.0)), &config);
        let mut shrunk = own.clone();
        shrink(&mut shrunk, &curve);
        let all = |l: Vec<Option<Level>>| l.into_iter().map(Option::unwrap).collect();
        (all(own), all(shrunk))
    }

    #[test]
    fn alike_areas_borrow_their_level_from_each_other() {
        // 300 areas with the same 3 a month: each one's own level, from 25
        // months of about 3, is off by about 12%; the common level is known
        // to 1%. Shrunk, the levels are closer to the truth and say so.
        let (own, shrunk) = own_and_shrunk(&[3.0; 300], 11);
        let truth = own.iter().map(|l| l.level).sum::<f64>() / own.len() as f64;
        let error = |ls: &[Level]| {
            (ls.iter().map(|l| (l.level - truth).powi(2)).sum::<f64>() / ls.len() as f64).sqrt()
                / truth
        };
        assert!((0.08..0.16).contains(&error(&own)), "{}", error(&own));
        assert!(error(&shrunk) < error(&own) / 3.0, "{}", error(&shrunk));
        for (o, s) in own.iter().zip(&shrunk) {
            let v = s.shrunk_variance.unwrap();
            assert!(v > 0.0 && v < 0.005, "{v}");
            assert_eq!(o.shrunk_variance, None);
        }
    }

    #[test]
    fn areas_that_differ_keep_their_own_level() {
        // Half the areas at 2 a month, half at 6 (levels about 0.5 and 1.5
        // on the curve of their mean): the spread between them dwarfs each
        // level's noise, so no level moves by more than 5% of the common
        // level (an extreme draw a few percent of its distance to it), and
        // the ones at 6 stay three times the ones at 2.
        let rates: Vec<f64> = (0..200)
            .map(|i| if i % 2 == 0 { 2.0 } else { 6.0 })
            .collect();
        let (own, shrunk) = own_and_shrunk(&rates, 12);
        for (o, s) in own.iter().zip(&shrunk) {
            assert!((s.level - o.level).abs() < 0.05, "{} {}", o.level, s.level);
        }
        let mean = |odd: usize| {
            shrunk
                .iter()
                .skip(odd)
                .step_by(2)
                .map(|l| l.level)
                .sum::<f64>()
                / 100.0
        };
        assert!(
            (mean(1) / mean(0) - 3.0).abs() < 0.3,
            "{} {}",
            mean(0),
            mean(1)
        );
    }

    #[test]
    fn a_few_areas_are_not_shrunk() {
        // Seven areas alike cannot tell how much areas differ: unchanged.
        let (own, shrunk) = own_and_shrunk(&[3.0; SHRINK_FROM - 1], 13);
        for (o, s) in own.iter().zip(&shrunk) {
            assert_eq!((o.level, s.shrunk_variance), (s.level, None));
        }
        // With eight, a level moves, but by less than among hundreds: the
        // spread's uncertainty is allowed for.
        let (own, shrunk) = own_and_shrunk(&[3.0; SHRINK_FROM], 13);
        let (own_many, shrunk_many) = own_and_shrunk(&[3.0; 300], 13);
        let moved = |o: &[Level], s: &[Level]| {
            o.iter()
                .zip(s)
                .map(|(o, s)| (o.level - s.level).abs())
                .sum::<f64>()
                / o.len() as f64
        };
        let few = moved(&own, &shrunk);
        let many = moved(&own_many[..SHRINK_FROM], &shrunk_many[..SHRINK_FROM]);
        assert!(few > 0.0 && few < many, "{few} {many}");
    }

    /// Gemeenten of areas of 1,000 households, Poisson at the given rates a
    /// month (one rate per gemeente), the curve and overdispersion over all
    /// of them: each gemeente's own levels, and the country's prior.
    fn gemeenten(rates: &[(f64, usize)], seed: u64) -> (Curve, Vec<Vec<Option<Level>>>, Prior) {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Poisson};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let areas: Vec<Vec<Vec<u64>>> = rates
            .iter()
            .map(|&(r, n)| {
                let p = Poisson::new(r).unwrap();
                (0..n)
                    .map(|_| (0..31).map(|_| p.sample(&mut rng) as u64).collect())
                    .collect()
            })
            .collect();
        let all: Vec<&Vec<u64>> = areas.iter().flatten().collect();
        let total: Vec<u64> = (0..31).map(|t| all.iter().map(|a| a[t]).sum()).collect();
        let config = farrington::Config::default();
        let mut curve = Curve::fit(&total, 1000.0 * all.len() as f64, 30).unwrap();
        curve.pool_dispersion(all.iter().map(|a| (a.as_slice(), 1000.0)), &config);
        let levels: Vec<Vec<Option<Level>>> = areas
            .iter()
            .map(|g| {
                curve
                    .clone()
                    .pool_dispersion(g.iter().map(|a| (a.as_slice(), 1000.0)), &config)
            })
            .collect();
        let commons: Vec<Common> = levels.iter().filter_map(|l| common(l, &curve)).collect();
        let prior = prior(&commons).unwrap();
        (curve, levels, prior)
    }

    #[test]
    fn a_gemeente_of_few_areas_borrows_from_alike_gemeenten() {
        // 30 gemeenten of 10 areas at 3 a month, and one of 4: too few to
        // tell its own spread, so alone it is not shrunk; with the country's
        // prior its levels move toward the common level and are known better.
        let mut rates = vec![(3.0, 10); 30];
        rates.push((3.0, 4));
        let (curve, levels, prior) = gemeenten(&rates, 21);
        assert!((prior.level - 1.0).abs() < 0.03, "{prior:?}");
        let small = &levels[30];
        let mut alone = small.clone();
        shrink(&mut alone, &curve);
        assert_eq!(alone, *small);
        let mut borrowed = small.clone();
        shrink_toward(&mut borrowed, &curve, Some(prior));
        let spread = |ls: &[Option<Level>]| {
            ls.iter()
                .flatten()
                .map(|l| (l.level - 1.0).abs())
                .sum::<f64>()
        };
        assert!(spread(&borrowed) < spread(small) / 2.0, "{borrowed:?}");
        for (o, b) in small.iter().zip(&borrowed) {
            let (o, b) = (o.as_ref().unwrap(), b.as_ref().unwrap());
            let own = sampling(o, o.level, curve.overdispersion.unwrap()) / o.level.powi(2);
            assert!(b.shrunk_variance.unwrap() < own * 0.7, "{b:?} {own}");
        }
    }

    #[test]
    fn a_gemeente_unlike_the_others_keeps_its_common_level() {
        // Half the gemeenten at 2 a month, half at 6 (levels about 0.5 and
        // 1.5): the spread between gemeenten dwarfs a gemeente's own
        // uncertainty, so a gemeente at 6 stays at about 1.5.
        let rates: Vec<(f64, usize)> = (0..30)
            .map(|i| (if i % 2 == 0 { 2.0 } else { 6.0 }, 10))
            .collect();
        let (curve, levels, prior) = gemeenten(&rates, 22);
        assert!(prior.spread > 0.1, "{prior:?}");
        let high = &levels[1];
        let own = high.iter().flatten().map(|l| l.level).sum::<f64>() / 10.0;
        let mut shrunk = high.clone();
        shrink_toward(&mut shrunk, &curve, Some(prior));
        let after = shrunk.iter().flatten().map(|l| l.level).sum::<f64>() / 10.0;
        assert!((after / own - 1.0).abs() < 0.03, "{own} {after}");
        assert!(after > 1.3, "{after}");
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
