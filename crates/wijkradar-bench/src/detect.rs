//! `wijkradar-bench detect`: the whole monthly detection run for all of the
//! Netherlands, every wijk and buurt × 8 signal types, with 36 months of
//! history, as the server runs it per gemeente and type
//! (`wijkradar_detect::monitor::run_month` per gemeente: method per series,
//! the pooled curve and overdispersion per signal type over every gemeente,
//! each area's level shrunk toward its gemeente's, Benjamini–Hochberg over
//! the month's tests of each level); against EARS C2 over the same series
//! in the same run.

use std::time::Instant;

use wijkradar_detect::Method;
use wijkradar_detect::eval::{Scenario, simulate};
use wijkradar_detect::monitor::{self, Group, Level, Series};
use wijkradar_domain::hierarchy::Dwellings;
use wijkradar_domain::{AreaCode, Hierarchy};

pub fn run(types: usize, runs: usize) -> anyhow::Result<()> {
    let hierarchy = Hierarchy::netherlands_2023();
    let dwellings = Dwellings::kwb_2024();
    let scenario = Scenario::default();
    let gemeenten: Vec<_> = hierarchy.gemeenten().collect();
    let mut runs_data = Vec::new();
    let (mut n_wijken, mut n_buurten) = (0, 0);
    for (gi, &g) in gemeenten.iter().enumerate() {
        // Buurt households: the wijk's dwellings spread evenly over its buurten.
        let mut buurt_households = Vec::new();
        let mut wijk_of = Vec::new();
        let wijken: Vec<_> = hierarchy.wijken_of(g).collect();
        for (wi, &w) in wijken.iter().enumerate() {
            let buurten: Vec<_> = hierarchy.buurten_of_wijk(w).collect();
            let d = dwellings
                .per_area
                .get(&AreaCode::Wijk(w))
                .copied()
                .unwrap_or(0) as f64;
            for _ in &buurten {
                buurt_households.push((d / buurten.len().max(1) as f64).max(1.0));
                wijk_of.push(wi);
            }
        }
        n_wijken += wijken.len();
        n_buurten += buurt_households.len();
        let mut groups = Vec::with_capacity(types);
        for t in 0..types {
            let sim = simulate(&scenario, &buurt_households, &[], (gi * 16 + t) as u64);
            let mut series = Vec::with_capacity(wijken.len() + buurt_households.len());
            for wi in 0..wijken.len() {
                let mut counts = vec![0u64; scenario.months];
                let mut households = 0.0;
                for (b, _) in wijk_of.iter().enumerate().filter(|(_, w)| **w == wi) {
                    households += buurt_households[b];
                    for (c, x) in counts.iter_mut().zip(&sim.counts[b]) {
                        *c += x;
                    }
                }
                series.push(Series {
                    level: Level::Wijk,
                    counts,
                    households: households.max(1.0),
                });
            }
            let mut total = vec![0u64; scenario.months];
            for (b, counts) in sim.counts.iter().enumerate() {
                for (c, x) in total.iter_mut().zip(counts) {
                    *c += x;
                }
                series.push(Series {
                    level: Level::Buurt,
                    counts: counts.clone(),
                    households: buurt_households[b],
                });
            }
            let households = buurt_households.iter().sum();
            groups.push(Group {
                series,
                total,
                households,
                shared: None,
            });
        }
        runs_data.push(groups);
    }
    let n_series: usize = runs_data.iter().flatten().map(|g| g.series.len()).sum();
    println!(
        "Detection benchmark: {} gemeenten, {n_wijken} wijken and {n_buurten} buurten (CBS 2023) × {types} signal types = {n_series} series of {} months; {runs} runs, one thread",
        gemeenten.len(),
        scenario.months
    );
    let t = scenario.months - 1;
    for r in 1..=runs {
        let started = Instant::now();
        let mut ears_alarms = 0usize;
        for group in runs_data.iter().flatten() {
            for s in &group.series {
                if Method::EarsC2
                    .test(&s.counts, s.households, t)
                    .is_some_and(|x| x.alarm())
                {
                    ears_alarms += 1;
                }
            }
        }
        let ears = started.elapsed().as_secs_f64();
        let started = Instant::now();
        // What the pooled method borrows from every gemeente, per type, as
        // the server computes it (once, then kept while the store grows
        // less than 1%).
        for t in 0..types {
            let shared = monitor::Shared::of(runs_data.iter().map(|groups| &groups[t]));
            for groups in &mut runs_data {
                groups[t].shared = Some(shared.clone());
            }
        }
        let mut tested = 0usize;
        let mut discoveries = 0usize;
        for groups in &runs_data {
            let findings = monitor::run_month(groups, 0.05);
            tested += findings.len();
            discoveries += findings.iter().filter(|f| f.finding.discovery).count();
        }
        let full = started.elapsed().as_secs_f64();
        println!(
            "  run {r}: detection run {full:.2} s ({tested} series tested, {:.0} series/s, {discoveries} discoveries on data without outbreaks); EARS C2 alone {ears:.3} s ({ears_alarms} alarms); ratio {:.1}",
            tested as f64 / full,
            full / ears
        );
    }
    Ok(())
}
