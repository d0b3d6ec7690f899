//! The analysis of one intervention on simulated wijken: a planted effect
//! is found, suppressed cells are imputed and counted, and the goal's
//! progress follows the interval.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Poisson};
use wijkradar_effect::EffectError;
use wijkradar_effect::design::{AreaSeries, Design, Interval, MIN_PLACEBOS, Progress, progress};

/// `donors` comparison wijken and `treated` treated ones, 36 months, start
/// at month 24; the treated wijken's rate is multiplied by `1 + effect`
/// from the start. Cells below `threshold` are suppressed.
fn simulate(seed: u64, treated: usize, effect: f64, rate: f64, threshold: f64) -> Design {
    let mut rng = StdRng::seed_from_u64(seed);
    let season = |s: usize| 1.0 + 0.15 * (s as f64 * std::f64::consts::TAU / 12.0).sin();
    let mut area = |i: usize, treat: bool| {
        let households = 1500.0 + 150.0 * (i % 11) as f64;
        let level = rate * (0.7 + 0.06 * (i % 9) as f64);
        let cells = (0..36)
            .map(|s| {
                let factor = if treat && s >= 24 { 1.0 + effect } else { 1.0 };
                let mean = households / 1000.0 * level * season(s) * factor;
                let count = Poisson::new(mean).unwrap().sample(&mut rng);
                (count >= threshold).then_some(count)
            })
            .collect();
        AreaSeries { households, cells }
    };
    let treated_areas = (0..treated).map(|i| area(100 + i, true)).collect();
    let donors = (0..24).map(|i| area(i, false)).collect();
    Design {
        treated: treated_areas,
        donors,
        start: 24,
        threshold,
        periods_per_year: 12,
        draws: 1000,
        seed,
    }
}

#[test]
fn a_planted_fall_of_thirty_percent_is_found() {
    let a = simulate(7, 3, -0.3, 12.0, 0.0).analyse().unwrap();
    let inference = a.inference.as_ref().unwrap();
    assert!(
        a.relative.estimate < -0.15 && a.relative.estimate > -0.45,
        "{:?}",
        a.relative
    );
    assert!(a.relative.high < 0.0, "interval {:?}", a.relative);
    assert!(inference.p_value < 0.05, "p {}", inference.p_value);
    assert!(a.households_per_period.estimate < 0.0);
    assert!(a.treated_rate.1 < a.treated_rate.0);
    assert_eq!(a.diagnostics.suppressed_treated, 0.0);
    assert!(a.diagnostics.effective_donors >= 1.0);
    // The checks point the same way.
    assert!(a.synthetic_control < 0.0 && a.diff_in_diff < 0.0 && a.poisson < 0.0);
}

#[test]
fn without_an_effect_the_interval_mostly_holds_zero() {
    let misses = (0..30)
        .filter(|&seed| {
            let a = simulate(seed, 1, 0.0, 8.0, 0.0).analyse().unwrap();
            a.relative.low > 0.0 || a.relative.high < 0.0
        })
        .count();
    // 10% expected; 8 of 30 would be far out (p < 0.03).
    assert!(misses <= 7, "{misses} of 30 intervals missed 0");
}

#[test]
fn too_few_usable_comparison_wijken_give_no_estimate() {
    // At 3 per 1,000 nearly every comparison wijk has mostly suppressed
    // cells.
    let design = simulate(3, 1, 0.0, 3.0, 10.0);
    match design.analyse() {
        Err(EffectError::TooFewComparisons { donors, placebos }) => {
            assert!(
                donors <= MIN_PLACEBOS && placebos < MIN_PLACEBOS,
                "{donors} {placebos}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn suppressed_cells_are_imputed_and_reported() {
    let design = simulate(3, 1, 0.0, 6.0, 10.0);
    let hidden = design
        .donors
        .iter()
        .flat_map(|a| &a.cells)
        .filter(|c| c.is_none())
        .count();
    assert!(hidden > 0, "the simulation should hide cells");
    let a = design.analyse().unwrap();
    assert!(a.diagnostics.suppressed_treated > 0.0);
    // The periods whose treated value is imputed are the suppressed ones.
    let hidden: Vec<bool> = design.treated[0]
        .cells
        .iter()
        .map(Option::is_none)
        .collect();
    assert_eq!(a.treated_imputed, hidden);
    assert!(a.diagnostics.suppressed_donors > 0.0);
    assert!(a.diagnostics.donors_left_out > 0, "{:?}", a.diagnostics);
    assert!(a.relative.estimate.is_finite());
}

#[test]
fn a_wijk_chosen_right_after_a_spike_is_flagged() {
    let mut design = simulate(5, 1, 0.0, 12.0, 0.0);
    let calm = design.analyse().unwrap();
    assert!(!calm.diagnostics.chosen_after_spike);
    for s in 21..24 {
        design.treated[0].cells[s] = design.treated[0].cells[s].map(|c| c * 2.5);
    }
    assert!(design.analyse().unwrap().diagnostics.chosen_after_spike);
}

#[test]
fn more_treated_wijken_detect_smaller_effects() {
    let one = simulate(11, 1, 0.0, 8.0, 0.0)
        .detectable_effect(24)
        .unwrap();
    let five = simulate(11, 5, 0.0, 8.0, 0.0)
        .detectable_effect(24)
        .unwrap();
    assert!(one.backtests >= 3 && five.backtests >= 3);
    assert!(
        five.relative < one.relative,
        "{} vs {}",
        five.relative,
        one.relative
    );
    assert!(
        one.relative > 0.05 && one.relative < 1.0,
        "{}",
        one.relative
    );
}

#[test]
fn progress_follows_the_interval_and_the_goal() {
    let i = |estimate, low, high| Interval {
        estimate,
        low,
        high,
    };
    // Goal −20% in 24 months; 12 months in, −10% is due.
    assert_eq!(
        progress(&i(-0.15, -0.25, -0.05), -0.2, 12, 24),
        Progress::OnCourse
    );
    assert_eq!(
        progress(&i(-0.05, -0.15, 0.05), -0.2, 12, 24),
        Progress::TooEarly
    );
    assert_eq!(
        progress(&i(0.02, -0.04, 0.08), -0.2, 12, 24),
        Progress::NotOnCourse
    );
    assert_eq!(
        progress(&i(-0.3, -0.4, -0.2), -0.2, 1, 24),
        Progress::TooEarly
    );
    // A goal to raise a protective signal.
    assert_eq!(
        progress(&i(0.15, 0.05, 0.25), 0.1, 24, 24),
        Progress::OnCourse
    );
}
