//! Early warning for small monthly counts per area (docs/early-warning.md):
//! the detection methods of public-health surveillance, each a tested unit
//! with the formulas of the R package `surveillance`, Benjamini–Hochberg
//! control of the false discovery rate over a month's tests, a near-oracle
//! detector for the evaluation, and the evaluation's simulator.
//!
//! A series is the monthly count of distinct households of one area and
//! signal type, oldest first, with the area's households as offset. Every
//! method tests one month `t` of it against the months before, and answers
//! a [`Test`]: the expected count, the upper bound, and a p-value or score.
//! No IO; no clock.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod cusum;
pub mod ears;
pub mod eval;
pub mod farrington;
pub mod fdr;
mod glm;
pub mod monitor;
pub mod nb_predictive;
pub mod oracle;
pub mod pooled;

use statrs::distribution::{DiscreteCDF, NegativeBinomial, Poisson};

/// The outcome of testing one month of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Test {
    /// The count the baseline expects this month.
    pub expected: f64,
    /// The upper bound: an observed count above it is an alarm.
    pub threshold: f64,
    pub observed: u64,
    /// P(count ≥ observed) under the baseline, where the method has one.
    pub p_value: Option<f64>,
    /// The method's statistic, larger = more alarming; what an evaluation
    /// calibrates to a false-alarm budget.
    pub score: f64,
    /// The windows of months tested together, shortest first, by a method
    /// that tests sums of the last 1, 2, 3 and 6 months; none for a method
    /// that tests the month alone.
    pub windows: [Option<Window>; 4],
}

/// The sum of the last `months` months against the baseline's sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Months summed, the tested month the last.
    pub months: usize,
    pub observed: u64,
    pub expected: f64,
    /// The window's upper bound at the method's α.
    pub threshold: f64,
    /// P(sum ≥ observed) under the baseline, for this window alone.
    pub p_value: f64,
}

impl Test {
    /// A test known only by its score: an alarm from outside the harness
    /// (an API's alert), for scoring.
    pub fn scored(score: f64) -> Test {
        Test {
            expected: 0.0,
            threshold: 0.0,
            observed: 0,
            p_value: None,
            score,
            windows: [None; 4],
        }
    }

    pub fn alarm(&self) -> bool {
        self.observed as f64 > self.threshold
    }

    /// A test whose score is −log₁₀ of its p-value.
    pub(crate) fn from_p(expected: f64, threshold: f64, observed: u64, p: f64) -> Test {
        Test {
            expected,
            threshold,
            observed,
            p_value: Some(p),
            score: -p.max(1e-300).log10(),
            windows: [None; 4],
        }
    }

    /// The windows whose own evidence reaches `cutoff`, a p-value after the
    /// same correction for the number of windows as the test's: each would
    /// have raised the alarm alone. Strongest first. A method that tests the
    /// month alone gives the month.
    pub fn windows_within(&self, cutoff: f64) -> Vec<Window> {
        // Not the test itself (the minimum-cases rule, for one).
        if self.p_value.is_none_or(|p| p > cutoff) {
            return Vec::new();
        }
        let looks = self.windows.iter().flatten().count();
        if looks == 0 {
            let month = Window {
                months: 1,
                observed: self.observed,
                expected: self.expected,
                threshold: self.threshold,
                p_value: self.p_value.unwrap_or(1.0),
            };
            return if month.p_value <= cutoff {
                vec![month]
            } else {
                Vec::new()
            };
        }
        let mut within: Vec<Window> = self
            .windows
            .iter()
            .flatten()
            .filter(|w| w.p_value * looks as f64 <= cutoff)
            .copied()
            .collect();
        within.sort_by(|a, b| a.p_value.total_cmp(&b.p_value));
        within
    }

    /// The same with the minimum-cases rule: fewer than `min_cases` over the
    /// last 4 months never alarm (p = 1, no bound).
    pub(crate) fn gated(
        counts: &[u64],
        t: usize,
        min_cases: u64,
        expected: f64,
        threshold: f64,
        p: f64,
    ) -> Test {
        let recent: u64 = counts[t.saturating_sub(3)..=t].iter().sum();
        if recent >= min_cases {
            Test::from_p(expected, threshold, counts[t], p)
        } else {
            Test::from_p(expected, f64::INFINITY, counts[t], 1.0)
        }
    }
}

impl Window {
    /// A window of `months` months summing to `observed`, against a
    /// baseline sum of mean `mean` and variance `variance`.
    pub(crate) fn of(months: usize, observed: u64, mean: f64, variance: f64, alpha: f64) -> Window {
        Window {
            months,
            observed,
            expected: mean,
            threshold: upper_quantile(alpha, mean, variance),
            p_value: upper_tail(observed, mean, variance),
        }
    }
}

impl Test {
    /// The test of month `t` by its windows: the smallest window p-value,
    /// corrected for the looks (Bonferroni) so that it is a p-value again;
    /// the month's own expectation and bound; the minimum-cases rule.
    pub(crate) fn of_windows(
        counts: &[u64],
        t: usize,
        min_cases: u64,
        windows: [Window; 4],
    ) -> Test {
        let best = windows.iter().map(|w| w.p_value).fold(1.0, f64::min);
        let p = (best * windows.len() as f64).min(1.0);
        let month = windows[0];
        debug_assert_eq!(month.months, 1);
        let mut test = Test::gated(counts, t, min_cases, month.expected, month.threshold, p);
        test.windows = windows.map(Some);
        test
    }
}

/// The methods, by name as reports and configuration use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    EarsC1,
    EarsC2,
    EarsC3,
    NbPredictive,
    Farrington,
    FarringtonWindows,
    NbCusum,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::EarsC1,
        Method::EarsC2,
        Method::EarsC3,
        Method::NbPredictive,
        Method::Farrington,
        Method::FarringtonWindows,
        Method::NbCusum,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::EarsC1 => "ears_c1",
            Method::EarsC2 => "ears_c2",
            Method::EarsC3 => "ears_c3",
            Method::NbPredictive => "nb_predictive",
            Method::Farrington => "farrington_flexible",
            Method::FarringtonWindows => "farrington_windows",
            Method::NbCusum => "nb_cusum",
        }
    }

    /// Tests month `t` of `counts` (households as offset) with this
    /// method's defaults; `None` when the history is too short.
    pub fn test(self, counts: &[u64], households: f64, t: usize) -> Option<Test> {
        match self {
            Method::EarsC1 => ears::test(counts, t, ears::Variant::C1, &ears::Config::default()),
            Method::EarsC2 => ears::test(counts, t, ears::Variant::C2, &ears::Config::default()),
            Method::EarsC3 => ears::test(counts, t, ears::Variant::C3, &ears::Config::default()),
            Method::NbPredictive => {
                nb_predictive::test(counts, t, &nb_predictive::Config::default())
            }
            Method::Farrington => {
                farrington::test(counts, households, t, &farrington::Config::default())
            }
            Method::FarringtonWindows => {
                farrington::test_windows(counts, households, t, &farrington::Config::default())
            }
            Method::NbCusum => cusum::test(counts, households, t, &cusum::Config::default()),
        }
    }
}

/// The upper tail P(X ≥ x) of a count with mean `mean` and variance
/// `variance`: negative binomial when overdispersed, Poisson otherwise.
pub fn upper_tail(x: u64, mean: f64, variance: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if mean <= 0.0 {
        return 0.0;
    }
    // The survival function can round to just below zero far out in the tail.
    match count_distribution(mean, variance) {
        Count::Nb(d) => d.sf(x - 1),
        Count::Poisson(d) => d.sf(x - 1),
    }
    .clamp(0.0, 1.0)
}

/// The `1 − alpha` quantile of the same distribution: the least x with
/// P(X ≤ x) ≥ 1 − alpha, that is P(X ≥ x + 1) ≤ alpha.
pub fn upper_quantile(alpha: f64, mean: f64, variance: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    let fits = |x: u64| upper_tail(x + 1, mean, variance) <= alpha;
    let mut hi = (mean.ceil() as u64).max(1);
    while !fits(hi) {
        hi *= 2;
    }
    let mut lo = 0;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fits(mid) { hi = mid } else { lo = mid + 1 }
    }
    lo as f64
}

enum Count {
    Nb(NegativeBinomial),
    Poisson(Poisson),
}

fn count_distribution(mean: f64, variance: f64) -> Count {
    if variance > mean * (1.0 + 1e-9) {
        // size r with mean r(1−p)/p = mean and variance mean/p.
        let p = mean / variance;
        let r = mean * p / (1.0 - p);
        Count::Nb(NegativeBinomial::new(r, p).expect("valid negative binomial"))
    } else {
        Count::Poisson(Poisson::new(mean).expect("valid Poisson"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_quantiles_by_hand() {
        // Poisson(2): P(X ≥ 1) = 1 − e^−2.
        assert!((upper_tail(1, 2.0, 2.0) - (1.0 - (-2.0f64).exp())).abs() < 1e-12);
        // Poisson(2): P(X ≤ 4) = 0.9473, P(X ≤ 5) = 0.9834: the 0.95 quantile is 5.
        assert_eq!(upper_quantile(0.05, 2.0, 2.0), 5.0);
        // Geometric (NB size 1, p = ½): mean 1, variance 2; P(X ≥ x) = ½^x.
        for x in 0..6u64 {
            assert!(
                (upper_tail(x, 1.0, 2.0) - 0.5f64.powi(x as i32)).abs() < 1e-12,
                "{x}"
            );
        }
        // Its 0.95 quantile: P(X ≤ 4) = 1 − 1/32 = 0.969 ≥ 0.95 > P(X ≤ 3) = 0.9375.
        assert_eq!(upper_quantile(0.05, 1.0, 2.0), 4.0);
        assert_eq!(upper_tail(0, 0.0, 0.0), 1.0);
        assert_eq!(upper_tail(3, 0.0, 0.0), 0.0);
    }
}

/// Draws for the unit tests.
#[cfg(test)]
pub(crate) mod draw {
    use rand_distr::{Distribution, Gamma, Poisson};

    /// A negative binomial count of this mean and size (variance
    /// mean + mean²/size), as a gamma mixture of Poissons.
    pub fn negative_binomial(rng: &mut impl rand::Rng, size: f64, mean: f64) -> u64 {
        let lambda = Gamma::new(size, mean / size).unwrap().sample(rng);
        Poisson::new(lambda).unwrap().sample(rng) as u64
    }
}
