//! The near-oracle of the evaluation: a detector that is told each series'
//! true baseline (the simulator knows it) and tests the sums over the last
//! 1, 2, 3 and 6 months against it. Its sensitivity at a false-alarm budget
//! is the practical ceiling on the data.

use crate::{Test, upper_tail};

pub const WINDOWS: [usize; 4] = [1, 2, 3, 6];

/// Tests month `t` of `counts` against the true means `mu` with negative
/// binomial size `size` (variance μ + μ²/size).
pub fn test(counts: &[u64], mu: &[f64], size: f64, t: usize) -> Option<Test> {
    let observed = *counts.get(t)?;
    let mut best = 1.0f64;
    for w in WINDOWS {
        let Some(start) = (t + 1).checked_sub(w) else {
            continue;
        };
        let y: u64 = counts[start..=t].iter().sum();
        let m: f64 = mu[start..=t].iter().sum();
        let v: f64 = mu[start..=t].iter().map(|m| m + m * m / size).sum();
        best = best.min(upper_tail(y, m, v));
    }
    Some(Test::from_p(mu[t], f64::INFINITY, observed, best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_rise_is_seen_in_a_longer_window() {
        // Truth 4 a month; the last three months 7 each: a single month is
        // unremarkable, three together are not.
        let mu = vec![4.0; 12];
        let mut counts = vec![4u64; 12];
        for c in &mut counts[9..] {
            *c = 7;
        }
        let t = test(&counts, &mu, 1e9, 11).unwrap();
        let v = |m: f64, months: f64| m + months * 16.0 / 1e9;
        let by_window = [
            upper_tail(7, 4.0, v(4.0, 1.0)),
            upper_tail(14, 8.0, v(8.0, 2.0)),
            upper_tail(21, 12.0, v(12.0, 3.0)),
            upper_tail(33, 24.0, v(24.0, 6.0)),
        ];
        assert!(by_window[2] < by_window[0], "{by_window:?}");
        let min = by_window.iter().copied().fold(1.0, f64::min);
        assert!((t.p_value.unwrap() - min).abs() < 1e-12);
        assert!(min < by_window[0] / 5.0, "{by_window:?}");
    }
}
