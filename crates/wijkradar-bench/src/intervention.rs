//! `wijkradar-bench intervention`: one intervention's analysis (synthetic
//! difference-in-differences, its three checks, 1,000 placebos and the
//! diagnostics) on one core, against a single SDID estimate on the same
//! panel.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Poisson};
use wijkradar_effect::design::{AreaSeries, Design};
use wijkradar_effect::{Estimator, Panel, estimate};

/// `treated` wijken and `donors` comparison wijken of 1,500–4,500
/// households over `months` months at 6 households per 1,000 a month,
/// starting two thirds in; cells under 10 suppressed.
fn design(treated: usize, donors: usize, months: usize, placebos: usize) -> Design {
    let mut rng = StdRng::seed_from_u64(7);
    let mut area = |i: usize| {
        let households = 1500.0 + 3000.0 * ((i * 37) % 100) as f64 / 100.0;
        let cells = (0..months)
            .map(|_| {
                let n = Poisson::new(households / 1000.0 * 6.0)
                    .unwrap()
                    .sample(&mut rng);
                (n >= 10.0).then_some(n)
            })
            .collect();
        AreaSeries { households, cells }
    };
    Design {
        treated: (0..treated).map(&mut area).collect(),
        donors: (treated..treated + donors).map(&mut area).collect(),
        start: months * 2 / 3,
        threshold: 10.0,
        periods_per_year: 12,
        draws: placebos,
        seed: 1,
    }
}

pub fn run(
    treated: usize,
    donors: usize,
    months: usize,
    placebos: usize,
    runs: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!((1..=5).contains(&treated), "--treated: 1 to 5");
    anyhow::ensure!(
        donors >= 9 && months >= 12,
        "--donors at least 9, --months at least 12"
    );
    let d = design(treated, donors, months, placebos);
    // The baseline: one SDID estimate on the panel of the same rates.
    let rate = |a: &AreaSeries| -> Vec<f64> {
        a.cells
            .iter()
            .map(|c| c.unwrap_or(5.0) / a.households * 1000.0)
            .collect()
    };
    let rows: Vec<Vec<f64>> = d.donors.iter().chain(&d.treated).map(rate).collect();
    let panel = Panel::new(rows, donors, d.start)?;
    let mut one = f64::INFINITY;
    let mut whole = f64::INFINITY;
    let mut placebos_used = 0;
    for _ in 0..runs.max(1) {
        let t = std::time::Instant::now();
        for _ in 0..100 {
            std::hint::black_box(estimate(&panel, Estimator::SyntheticDid));
        }
        one = one.min(t.elapsed().as_secs_f64() / 100.0);
        let t = std::time::Instant::now();
        let a = d.analyse()?;
        whole = whole.min(t.elapsed().as_secs_f64());
        placebos_used = a.inference.map_or(0, |i| i.placebos);
    }
    println!(
        "Interventie: {treated} behandelde wijken, {donors} vergelijkingswijken, {months} maanden, {placebos_used} placebo's, beste van {runs} (één kern)."
    );
    println!("| measurement | time | ratio |");
    println!("|---|---|---|");
    println!(
        "| one SDID estimate (baseline) | {:.2} ms | 1 |",
        one * 1000.0
    );
    println!(
        "| the whole analysis (SDID, checks, placebos, diagnostics) | {:.0} ms | {:.0} |",
        whole * 1000.0,
        whole / one
    );
    Ok(())
}
