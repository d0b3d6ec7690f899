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
    let best = best_window(counts, mu, size, 0.0, t);
    Some(Test::from_p(mu[t], f64::INFINITY, observed, best))
}

/// The smallest upper-tail p-value over the windows ending at month `t`,
/// each sum tested against the means `mu` (variance μ + μ²/size per month)
/// with `log_var`, the relative variance of a level estimated from the
/// counts, on top (0 when the level is known).
fn best_window(counts: &[u64], mu: &[f64], size: f64, log_var: f64, t: usize) -> f64 {
    let mut best = 1.0f64;
    for w in WINDOWS {
        let Some(start) = (t + 1).checked_sub(w) else {
            continue;
        };
        let y: u64 = counts[start..=t].iter().sum();
        let m: f64 = mu[start..=t].iter().sum();
        let v: f64 = mu[start..=t].iter().map(|m| m + m * m / size).sum::<f64>() + m * m * log_var;
        best = best.min(upper_tail(y, m, v));
    }
    best
}

/// The level-learning oracle: told everything the near-oracle is except
/// each area's own level. It knows the curve every area follows
/// (`baseline`: season, trend and household offset, without the area's
/// factor), the overdispersion, and how areas' factors spread (log-normal
/// with mean 1 and log-scale sd `area_sd`: the prior). It learns the
/// area's factor from its own counts before the longest window (months up
/// to `t − 6`), the Bayesian way (precision-weighted on the log scale with
/// the prior), and tests the windows with that estimate's uncertainty
/// added. No method that has to learn an area's level from its counts can
/// expect to do better; the gap between it and the near-oracle is the
/// price of not knowing the levels.
pub fn test_learning(
    counts: &[u64],
    baseline: &[f64],
    size: f64,
    area_sd: f64,
    t: usize,
) -> Option<Test> {
    let observed = *counts.get(t)?;
    let longest = WINDOWS[WINDOWS.len() - 1];
    let history = (t + 1).checked_sub(longest)?;
    if history == 0 {
        return None;
    }
    let seen: u64 = counts[..history].iter().sum();
    let expected: f64 = baseline[..history].iter().sum();
    let (log_factor, log_var) = if area_sd > 0.0 {
        // The own estimate's log and its variance (delta method), half a
        // count added so that none is not minus infinity.
        let own = (seen as f64 + 0.5) / expected;
        let own_var: f64 = baseline[..history]
            .iter()
            .map(|b| own * b + (own * b).powi(2) / size)
            .sum::<f64>()
            / (own * expected).powi(2);
        // The prior: log-normal with mean 1, so its log has mean −sd²/2.
        let prior_var = area_sd * area_sd;
        let prior_mean = -prior_var / 2.0;
        let precision = 1.0 / own_var + 1.0 / prior_var;
        let mean = (own.ln() / own_var + prior_mean / prior_var) / precision;
        (mean, 1.0 / precision)
    } else {
        (0.0, 0.0)
    };
    let factor = (log_factor + log_var / 2.0).exp();
    let mu: Vec<f64> = baseline.iter().map(|b| b * factor).collect();
    let best = best_window(counts, &mu, size, log_var, t);
    Some(Test::from_p(mu[t], f64::INFINITY, observed, best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learner_finds_the_level_and_is_less_sure_than_the_oracle() {
        // An area at twice the curve: its history says so, against a
        // prior of 1 that is loose (sd 0.5 on the log scale).
        let baseline = vec![4.0; 24];
        let counts = vec![8u64; 24];
        let learnt = test_learning(&counts, &baseline, 1e9, 0.5, 23).unwrap();
        assert!((learnt.expected / 8.0 - 1.0).abs() < 0.05, "{learnt:?}");
        // Where areas do not differ, the learner is the oracle.
        let same = test_learning(&counts, &baseline, 1e9, 0.0, 23).unwrap();
        let oracle = test(&counts, &baseline, 1e9, 23).unwrap();
        assert_eq!(same.p_value, oracle.p_value);
        // A rise over the last three months is less sure for the learner
        // than for an oracle told the true level of 8.
        let mut rising = counts.clone();
        for c in &mut rising[21..] {
            *c = 14;
        }
        let learnt = test_learning(&rising, &baseline, 1e9, 0.5, 23).unwrap();
        let told = test(&rising, &[8.0; 24], 1e9, 23).unwrap();
        assert!(learnt.p_value.unwrap() > told.p_value.unwrap());
        assert!(learnt.p_value.unwrap() < 0.01, "{learnt:?}");
    }

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
