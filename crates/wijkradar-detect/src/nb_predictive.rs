//! The negative-binomial predictive method (`surveillance::algo.bayes`):
//! with the last n months as reference, the count is predicted by the
//! negative binomial with size Σ reference + ½ and probability n/(n+1),
//! mean (Σ + ½)/n; the upper bound is its 1 − α quantile. Suits short
//! histories and small counts.

use crate::{Test, upper_quantile, upper_tail};

#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Reference months.
    pub n: usize,
    pub alpha: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config { n: 6, alpha: 0.05 }
    }
}

pub fn test(counts: &[u64], t: usize, config: &Config) -> Option<Test> {
    let start = t.checked_sub(config.n)?;
    let observed = *counts.get(t)?;
    let sum = counts[start..t].iter().sum::<u64>() as f64;
    let n = config.n as f64;
    let size = sum + 0.5;
    let p = n / (n + 1.0);
    let mean = size * (1.0 - p) / p;
    let variance = mean / p;
    Some(Test::from_p(
        mean,
        upper_quantile(config.alpha, mean, variance),
        observed,
        upper_tail(observed, mean, variance),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // Reference 0,1,0,2,0,0: Σ = 3, size 3.5, p = 6/7, mean 3.5/6.
        let counts = [0, 1, 0, 2, 0, 0, 4];
        let t = test(&counts, 6, &Config::default()).unwrap();
        assert!((t.expected - 3.5 / 6.0).abs() < 1e-12);
        // P(X = 0) = p^size = (6/7)^3.5; P(X = 1) = size·(1−p)·p^size.
        let p0 = (6.0f64 / 7.0).powf(3.5);
        let p1 = 3.5 * (1.0 / 7.0) * p0;
        let p2 = 3.5 * 4.5 / 2.0 * (1.0f64 / 7.0).powi(2) * p0;
        let p3 = 3.5 * 4.5 * 5.5 / 6.0 * (1.0f64 / 7.0).powi(3) * p0;
        let tail4 = 1.0 - p0 - p1 - p2 - p3;
        assert!((t.p_value.unwrap() - tail4).abs() < 1e-10, "{t:?} {tail4}");
        // The 0.95 quantile: the smallest x with P(X ≤ x) ≥ 0.95.
        let cdf = [p0, p0 + p1, p0 + p1 + p2, p0 + p1 + p2 + p3];
        let q = cdf.iter().position(|&c| c >= 0.95).unwrap() as f64;
        assert_eq!(t.threshold, q);
        assert!(t.alarm());
        assert!(test(&counts, 5, &Config::default()).is_none());
    }
}
