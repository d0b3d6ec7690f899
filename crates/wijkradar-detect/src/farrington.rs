//! A Farrington-flexible style method (Noufaily et al. 2013, as
//! `surveillance::farringtonFlexible`), for monthly counts: a quasi-Poisson
//! regression log μ = α [+ γ·same season] [+ β·t] + log(households) on the
//! months of the last `years` years up to `guard` months before the tested
//! one. "Same season" marks the months within `w` of the tested calendar
//! month, so the model compares a month with itself in earlier years; a
//! trend is kept only over at least `trend_months` of data and when it is
//! significant (Farrington's original rule). Dispersion φ = max(1, Pearson
//! χ²/df). Past outbreaks are down-weighted: points whose Anscombe residual
//! exceeds 2.58 get weight s⁻², and the model is fitted again. The upper
//! bound is the 1 − α quantile of the negative binomial with the predicted
//! mean and variance φ·μ ("nbPlugin"). No alarm without `min_cases` over
//! the last 4 months.

use crate::glm::{self, P};
use crate::{Test, Window, upper_quantile, upper_tail};

#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Years of history used.
    pub years: usize,
    /// Half-width of the seasonal window, in months.
    pub w: usize,
    /// Most recent months left out of the fit (an ongoing rise would
    /// otherwise raise its own baseline).
    pub guard: usize,
    pub alpha: f64,
    /// Least data, in months, to consider a trend.
    pub trend_months: usize,
    /// Least cases over the last 4 months for an alarm.
    pub min_cases: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            years: 3,
            w: 1,
            guard: 2,
            alpha: 0.05,
            trend_months: 18,
            min_cases: 5,
        }
    }
}

/// The fitted baseline of the months up to `last_fit`, to predict later ones.
#[derive(Debug, Clone)]
pub struct Baseline {
    fit: glm::Fit,
    /// The tested month, whose season the model marks.
    target: usize,
    w: usize,
    pub phi: f64,
    offset: f64,
}

impl Baseline {
    fn covariates(&self, i: usize) -> [f64; P] {
        row(&[1.0, same_season(i, self.target, self.w), i as f64])
    }

    /// The expected count of month `i`.
    pub fn mean(&self, i: usize) -> f64 {
        self.fit.predict(&self.covariates(i), self.offset)
    }

    /// The variance of the fitted linear predictor at month `i`:
    /// φ·xᵀ(XᵀWX)⁻¹x, the uncertainty of the baseline itself.
    pub fn eta_variance(&self, i: usize) -> f64 {
        let x = self.covariates(i);
        let mut q = 0.0;
        for a in 0..P {
            for b in 0..P {
                q += x[a] * self.fit.cov[a][b] * x[b];
            }
        }
        self.phi * q.max(0.0)
    }
}

/// A design row from its first covariates, the rest zero.
pub(crate) fn row(values: &[f64]) -> [f64; P] {
    let mut r = [0.0; P];
    r[..values.len()].copy_from_slice(values);
    r
}

pub(crate) fn same_season(i: usize, target: usize, w: usize) -> f64 {
    let d = (target.abs_diff(i)) % 12;
    if d <= w || d >= 12 - w { 1.0 } else { 0.0 }
}

/// Fits the baseline for testing month `t` on months ≤ `last_fit`.
pub fn baseline(
    counts: &[u64],
    households: f64,
    t: usize,
    last_fit: usize,
    config: &Config,
) -> Option<Baseline> {
    let first = t.saturating_sub(12 * config.years + config.w);
    if last_fit < first || last_fit >= counts.len() {
        return None;
    }
    let months: Vec<usize> = (first..=last_fit).collect();
    let n = months.len();
    if n < 6 {
        return None;
    }
    let y: Vec<f64> = months.iter().map(|&i| counts[i] as f64).collect();
    let offset = households.max(1.0).ln();
    let offsets = vec![offset; n];
    // A seasonal term only when the data hold a same-season month and
    // others (a year back at least).
    let seasonal = months.iter().any(|&i| same_season(i, t, config.w) == 1.0)
        && months.iter().any(|&i| same_season(i, t, config.w) == 0.0)
        && n >= 12;
    let x: Vec<[f64; P]> = months
        .iter()
        .map(|&i| {
            let s = same_season(i, t, config.w);
            if seasonal {
                row(&[1.0, s, i as f64])
            } else {
                row(&[1.0, i as f64])
            }
        })
        .collect();
    let base_p = if seasonal { 2 } else { 1 };
    let fit_with = |weights: &[f64], p: usize| glm::poisson(&x, &y, &offsets, weights, p);
    let dispersion = |fit: &glm::Fit, weights: &[f64], p: usize| {
        let chi2: f64 = y
            .iter()
            .zip(&fit.mu)
            .zip(weights)
            .map(|((y, mu), w)| w * (y - mu).powi(2) / mu.max(1e-10))
            .sum();
        (chi2 / (n - p) as f64).max(1.0)
    };
    // Trend: only over enough months, and only if significant.
    let mut p = base_p;
    let ones = vec![1.0; n];
    let mut fit = fit_with(&ones, base_p)?;
    if n >= config.trend_months
        && let Some(with_trend) = fit_with(&ones, base_p + 1)
    {
        let phi = dispersion(&with_trend, &ones, base_p + 1);
        let se = (phi * with_trend.cov[base_p][base_p]).sqrt();
        if (with_trend.beta[base_p] / se).abs() > 1.96 {
            fit = with_trend;
            p = base_p + 1;
        }
    }
    // Down-weight past outbreaks and fit again.
    let phi = dispersion(&fit, &ones, p);
    let hat = fit.hat(&x, &ones);
    let mut weights: Vec<f64> = y
        .iter()
        .zip(&fit.mu)
        .zip(&hat)
        .map(|((&y, &mu), &h)| {
            let s = 1.5 * (y.powf(2.0 / 3.0) * mu.powf(-1.0 / 6.0) - mu.sqrt())
                / (phi * (1.0 - h)).sqrt();
            if s > 2.58 { s.powi(-2) } else { 1.0 }
        })
        .collect();
    if weights.iter().any(|&w| w < 1.0) {
        let gamma = n as f64 / weights.iter().sum::<f64>();
        weights.iter_mut().for_each(|w| *w *= gamma);
        fit = fit_with(&weights, p)?;
    }
    let phi = dispersion(&fit, &weights, p);
    // Keep the fit's own columns when predicting.
    let fit = if seasonal {
        fit
    } else {
        // Without a seasonal column the trend sits in column 1: move it.
        let mut moved = fit;
        moved.beta = row(&[moved.beta[0], 0.0, moved.beta[1]]);
        let mut cov = [[0.0; P]; P];
        cov[0][0] = moved.cov[0][0];
        cov[0][2] = moved.cov[0][1];
        cov[2][0] = moved.cov[1][0];
        cov[2][2] = moved.cov[1][1];
        moved.cov = cov;
        moved.p = 3;
        moved
    };
    Some(Baseline {
        fit,
        target: t,
        w: config.w,
        phi,
        offset,
    })
}

pub fn test(counts: &[u64], households: f64, t: usize, config: &Config) -> Option<Test> {
    let observed = *counts.get(t)?;
    let last_fit = t.checked_sub(config.guard + 1)?;
    let b = baseline(counts, households, t, last_fit, config)?;
    let mean = b.mean(t);
    let variance = b.phi * mean;
    let threshold = upper_quantile(config.alpha, mean, variance);
    Some(Test::gated(
        counts,
        t,
        config.min_cases,
        mean,
        threshold,
        upper_tail(observed, mean, variance),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_poisson_series_expects_its_mean() {
        // 24 months of exactly 10: μ = 10, φ = 1, no trend, no season.
        let mut counts = vec![10u64; 25];
        counts[24] = 19;
        let t = test(&counts, 2000.0, 24, &Config::default()).unwrap();
        assert!((t.expected - 10.0).abs() < 1e-6, "{t:?}");
        // Poisson(10): P(X ≤ 15) = 0.9513 ≥ 0.95 > P(X ≤ 14) = 0.9165.
        assert_eq!(t.threshold, 15.0);
        assert!(t.alarm());
        // P(X ≥ 19 | Poisson 10) = 0.007187.
        assert!((t.p_value.unwrap() - 0.007_187).abs() < 1e-5, "{t:?}");
    }

    #[test]
    fn the_same_month_in_earlier_years_sets_the_season() {
        // Every March (month index ≡ 2 mod 12) is 30, other months 10.
        let counts: Vec<u64> = (0..37).map(|i| if i % 12 == 2 { 30 } else { 10 }).collect();
        let config = Config {
            w: 0,
            ..Config::default()
        };
        let march = test(&counts, 1000.0, 26, &config).unwrap();
        assert!((march.expected - 30.0).abs() < 1e-6, "{march:?}");
        assert!(!march.alarm());
        let april = test(&counts, 1000.0, 27, &config).unwrap();
        assert!((april.expected - 10.0).abs() < 1e-6, "{april:?}");
    }

    #[test]
    fn a_past_outbreak_is_down_weighted() {
        // A steady 10 with a past outbreak of 40 for three months.
        let mut counts = vec![10u64; 31];
        for c in &mut counts[12..15] {
            *c = 40;
        }
        let b = baseline(
            &counts,
            1000.0,
            30,
            27,
            &Config {
                w: 0,
                ..Config::default()
            },
        )
        .unwrap();
        let plain_mean = counts[..=27].iter().sum::<u64>() as f64 / 28.0;
        assert!(b.mean(30) < plain_mean, "{} < {plain_mean}", b.mean(30));
        assert!(b.mean(30) < 11.5, "{}", b.mean(30));
    }

    #[test]
    fn a_significant_trend_is_kept_and_projected() {
        // Doubling over three years: the expectation follows the trend.
        let counts: Vec<u64> = (0..37)
            .map(|i| (20.0 * 2f64.powf(i as f64 / 36.0)).round() as u64)
            .collect();
        let t = test(&counts, 5000.0, 36, &Config::default()).unwrap();
        assert!((t.expected - 40.0).abs() < 2.0, "{t:?}");
    }

    #[test]
    fn few_cases_never_alarm() {
        let mut counts = vec![0u64; 25];
        counts[24] = 3;
        let t = test(&counts, 500.0, 24, &Config::default()).unwrap();
        assert!(!t.alarm());
        assert_eq!(t.p_value, Some(1.0));
    }
}

/// The windows a rise is summed over.
pub const WINDOWS: [usize; 4] = [1, 2, 3, 6];

/// The same baseline, with the months' sums over the last 1, 2, 3 and 6
/// months tested against it, as the near-oracle does with the true one:
/// a rise spread over months adds up. The baseline is fitted on the months
/// before the longest window, and its own uncertainty (the variance of the
/// fitted linear predictor) widens the predictive distribution. The p-value
/// is the smallest of the windows'.
pub fn test_windows(counts: &[u64], households: f64, t: usize, config: &Config) -> Option<Test> {
    counts.get(t)?;
    let longest = WINDOWS[WINDOWS.len() - 1];
    let last_fit = (t + 1).checked_sub(longest + 1)?;
    let b = baseline(counts, households, t, last_fit, config)?;
    let windows = WINDOWS.map(|w| {
        let start = t + 1 - w;
        let y: u64 = counts[start..=t].iter().sum();
        let mu: f64 = (start..=t).map(|i| b.mean(i)).sum();
        let eta_var = (start..=t).map(|i| b.eta_variance(i)).sum::<f64>() / w as f64;
        let variance = b.phi * mu + mu * mu * eta_var;
        Window::of(w, y, mu, variance, config.alpha)
    });
    Some(Test::of_windows(counts, t, config.min_cases, windows))
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn a_three_month_rise_adds_up_where_no_single_month_stands_out() {
        // 24 steady months of 10, then three of 15.
        let mut counts = vec![10u64; 33];
        for c in &mut counts[30..] {
            *c = 15;
        }
        let single = test(&counts, 3000.0, 32, &Config::default()).unwrap();
        let windows = test_windows(&counts, 3000.0, 32, &Config::default()).unwrap();
        assert!((windows.expected - 10.0).abs() < 1e-6, "{windows:?}");
        // One month: P(X ≥ 15 | 10) ≈ 0.083; three months: P(X ≥ 45 | 30) ≈ 0.0073,
        // widened a little by the baseline's own uncertainty (27 months
        // fitted); the p-value is four times the smallest (Bonferroni).
        assert!(single.p_value.unwrap() > 0.05, "{single:?}");
        let smallest = windows.p_value.unwrap() / 4.0;
        assert!(
            smallest < 0.02 && smallest > upper_tail(45, 30.0, 30.0),
            "{smallest}"
        );
        // The window that raised it is the three months together (45
        // against 30); the month alone would not have.
        let raising = windows.windows_within(windows.p_value.unwrap());
        assert_eq!(raising.len(), 1, "{raising:?}");
        let w = raising[0];
        assert_eq!((w.months, w.observed), (3, 45), "{w:?}");
        assert!(
            (w.expected - 30.0).abs() < 1e-6 && w.threshold < 45.0,
            "{w:?}"
        );
        assert!(
            windows
                .windows_within(0.5 * windows.p_value.unwrap())
                .is_empty()
        );
    }
}
