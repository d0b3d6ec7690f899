//! A negative-binomial CUSUM for slow, sustained rises: over the last
//! `window` months, S_j = max(0, S_{j−1} + z_j − k) on the Pearson residuals
//! z_j = (y_j − μ_j)/√(φ·μ_j) against the Farrington-flexible baseline fitted
//! on the months before the window; an alarm when S_t ≥ h.

use crate::Test;
use crate::farrington;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub window: usize,
    pub k: f64,
    pub h: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            window: 6,
            k: 1.0,
            h: 2.3,
        }
    }
}

pub fn test(counts: &[u64], households: f64, t: usize, config: &Config) -> Option<Test> {
    let observed = *counts.get(t)?;
    let start = (t + 1).checked_sub(config.window)?;
    let last_fit = start.checked_sub(1)?;
    let fconfig = farrington::Config {
        guard: 0,
        ..farrington::Config::default()
    };
    let b = farrington::baseline(counts, households, t, last_fit, &fconfig)?;
    let mut s: f64 = 0.0;
    let mut mean_t = 0.0;
    for (j, &y) in counts.iter().enumerate().take(t + 1).skip(start) {
        let mu = b.mean(j).max(1e-6);
        let z = (y as f64 - mu) / (b.phi * mu).sqrt();
        s = (s + z - config.k).max(0.0);
        mean_t = mu;
    }
    // The count this month would have needed to reach h, given the months before.
    let before = s - ((observed as f64 - mean_t) / (b.phi * mean_t).sqrt() - config.k);
    let needed = mean_t + (config.h - before.max(0.0) + config.k) * (b.phi * mean_t).sqrt();
    Some(Test {
        expected: mean_t,
        threshold: needed.max(0.0) - f64::EPSILON,
        observed,
        p_value: None,
        score: s,
        windows: [None; 4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sustained_moderate_rise_accumulates() {
        // Steady 10 for 24 months, then 15 for six: no single month is
        // extreme, the sum of excesses is.
        let mut counts = vec![10u64; 30];
        for c in &mut counts[24..] {
            *c = 15;
        }
        let t = test(&counts, 2000.0, 29, &Config::default()).unwrap();
        // z = 5/√10 = 1.581 per month, minus k = 1: S = 6·0.581 = 3.49.
        let z = 5.0 / 10f64.sqrt();
        assert!((t.score - 6.0 * (z - 1.0)).abs() < 1e-3, "{t:?}");
        assert!(t.score >= 2.3 && t.alarm());
        // The steady series stays at zero.
        let flat = vec![10u64; 30];
        let t = test(&flat, 2000.0, 29, &Config::default()).unwrap();
        assert_eq!(t.score, 0.0);
        assert!(!t.alarm());
    }
}
