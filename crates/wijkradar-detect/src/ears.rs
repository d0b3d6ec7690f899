//! EARS C1, C2 and C3 (CDC; `surveillance::earsC`). The reference is the
//! 7 months before the tested one (C1) or months t−9..t−3 (C2 and C3: a
//! guard band of 2). Upper bound U = mean + z(1−α)·max(sd, min_sigma), sd
//! with n − 1. C3 adds up the positive excesses (C2 − 1) of the two months
//! before and lowers z by them. A simple baseline to beat: it knows neither
//! seasons nor the household base.

use statrs::distribution::{ContinuousCDF, Normal};

use crate::Test;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    C1,
    C2,
    C3,
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub alpha: f64,
    /// Without a floor, a baseline of zeros alarms on one case.
    pub min_sigma: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            alpha: 0.001,
            min_sigma: 1.0,
        }
    }
}

/// Mean and floored sd of the reference of month `t`, and the C statistic.
fn c_stat(counts: &[u64], t: usize, lag: usize, min_sigma: f64) -> Option<(f64, f64, f64)> {
    let end = t.checked_sub(lag)?;
    let start = end.checked_sub(6)?;
    let reference = &counts[start..=end];
    let n = reference.len() as f64;
    let mean = reference.iter().sum::<u64>() as f64 / n;
    let var = reference
        .iter()
        .map(|&y| (y as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    let sigma = var.sqrt().max(min_sigma);
    Some((mean, sigma, (counts[t] as f64 - mean) / sigma))
}

pub fn test(counts: &[u64], t: usize, variant: Variant, config: &Config) -> Option<Test> {
    if t >= counts.len() {
        return None;
    }
    let z = Normal::standard().inverse_cdf(1.0 - config.alpha);
    let lag = match variant {
        Variant::C1 => 1,
        Variant::C2 | Variant::C3 => 3,
    };
    let (mean, sigma, c) = c_stat(counts, t, lag, config.min_sigma)?;
    let (threshold, score) = match variant {
        Variant::C1 | Variant::C2 => (mean + z * sigma, c),
        Variant::C3 => {
            let mut excess = 0.0;
            for back in 1..=2 {
                let (_, _, prev) = c_stat(counts, t.checked_sub(back)?, 3, config.min_sigma)?;
                excess += (prev - 1.0).max(0.0);
            }
            (mean + sigma * (z - excess), c + excess)
        }
    };
    Some(Test {
        expected: mean,
        threshold,
        observed: counts[t],
        p_value: Some(1.0 - Normal::standard().cdf(score)),
        score,
        windows: [None; 4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c1_by_hand() {
        // Reference 2,4,4,4,5,5,7 (mean 31/7), then 12.
        let counts = [2, 4, 4, 4, 5, 5, 7, 12];
        let t = test(&counts, 7, Variant::C1, &Config::default()).unwrap();
        let mean = 31.0 / 7.0;
        let ss: f64 = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0]
            .iter()
            .map(|y: &f64| (y - mean).powi(2))
            .sum();
        let sd = (ss / 6.0).sqrt();
        assert!((t.expected - mean).abs() < 1e-12);
        // z(0.999) = 3.0902323
        assert!(
            (t.threshold - (mean + 3.090_232_306 * sd)).abs() < 1e-6,
            "{t:?}"
        );
        assert!(t.alarm());
        assert!(test(&counts, 6, Variant::C1, &Config::default()).is_none());
    }

    #[test]
    fn min_sigma_keeps_a_zero_baseline_from_alarming_on_one_case() {
        let counts = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        for v in [Variant::C1, Variant::C2] {
            let t = test(&counts, 10, v, &Config::default()).unwrap();
            assert!((t.threshold - 3.090_232_306).abs() < 1e-6);
            assert!(!t.alarm());
            let none = Config {
                min_sigma: 0.0,
                ..Config::default()
            };
            assert!(
                test(&counts, 10, v, &none).unwrap().alarm(),
                "{v:?} without a floor"
            );
        }
    }

    #[test]
    fn c2_skips_a_guard_band_and_c3_remembers_recent_excess() {
        // The two months before t are high: C1 sees them, C2 does not.
        let counts = [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 9, 9, 9];
        let c1 = test(&counts, 13, Variant::C1, &Config::default()).unwrap();
        let c2 = test(&counts, 13, Variant::C2, &Config::default()).unwrap();
        assert!(c1.expected > 3.0);
        assert_eq!(c2.expected, 3.0);
        // C2 at t−1 and t−2 is (9 − 3)/1 = 6 each: C3 lowers z by 2·5 = 10.
        let c3 = test(&counts, 13, Variant::C3, &Config::default()).unwrap();
        assert!(
            (c3.threshold - (3.0 + (3.090_232_306 - 10.0))).abs() < 1e-6,
            "{c3:?}"
        );
        assert!((c3.score - (6.0 + 10.0)).abs() < 1e-9);
    }
}
