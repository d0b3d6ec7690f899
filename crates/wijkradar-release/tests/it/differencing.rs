//! I7 (docs/privacy.md), measured: an attacker holds two releases whose cells
//! differ by exactly one household (two months, or two areas) and guesses
//! which one holds it by taking the larger. Without perturbation that guess
//! is always right. With the cell key method each release carries its own
//! noise (the cell keys differ by the household's secret record key), so
//! the guess is right only about two times in three. This test pins that
//! measured level down: it fails if the noise is lost (accuracy → 1) or if
//! it stops being unbiased noise (accuracy far off the value computed from
//! the perturbation table). It does not reach "no better than chance",
//! which no unbiased noise of variance 2 can: see the issue note.

use wijkradar_domain::CellTotal;
use wijkradar_release::{ReleasePolicy, Released, Threshold};

use crate::common::SplitMix;

/// The attacker's accuracy over `trials` pairs of cells of 10..60
/// households, one pair differing by one household.
fn attack(policy: &ReleasePolicy, trials: u32, seed: u64) -> f64 {
    let mut rng = SplitMix(seed);
    let mut score = 0.0;
    for _ in 0..trials {
        let n = 10 + rng.next() % 50;
        let cell_key = (0..n).fold(0u32, |k, _| k.wrapping_add(rng.next() as u32));
        let extra = rng.next() as u32;
        let without = CellTotal {
            households: n,
            cell_key,
        };
        let with = CellTotal {
            households: n + 1,
            cell_key: cell_key.wrapping_add(extra),
        };
        let value = |c: CellTotal| match policy.release(c) {
            Released::Value(v) => v as f64,
            Released::Suppressed => 0.0,
        };
        let (a, b) = (value(with), value(without));
        score += if a > b {
            1.0
        } else if a == b {
            0.5
        } else {
            0.0
        };
    }
    score / f64::from(trials)
}

#[test]
fn a_one_household_difference_is_seen_about_two_times_in_three() {
    let policy = ReleasePolicy::new(Threshold::new(10).unwrap(), 4, 2.0).unwrap();
    let accuracy = attack(&policy, 40_000, 7);
    // The noise of two cells is independent, each with variance 2: the
    // difference is 1 + noise of variance 4, and P(1 + N > 0) + ½P(= 0)
    // for the table's integer noise is about 0.67.
    assert!(
        (0.60..0.74).contains(&accuracy),
        "a differencing attacker is right {accuracy:.3} of the time"
    );
    // More noise (the largest variance below D) makes the guess worse.
    let noisier = ReleasePolicy::new(Threshold::new(10).unwrap(), 4, 3.9).unwrap();
    let with_more_noise = attack(&noisier, 40_000, 7);
    eprintln!("differencing attacker: right {accuracy:.3} (V = 2), {with_more_noise:.3} (V = 3.9)");
    assert!(with_more_noise < accuracy);
}
