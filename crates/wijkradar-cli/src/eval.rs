//! `wijkradar eval`: how well each detection method finds rising problems,
//! measured on simulated signals over the real wijken of the Netherlands
//! (CBS 2023 areas, 2024 dwellings as household base), against a
//! near-oracle that is told the true baseline. Every detector's alarm cutoff
//! is calibrated to the same false-alarm budget on outbreak-free data drawn
//! with another seed, then scored on data with injected outbreaks.

use std::fmt::Write as _;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use wijkradar_detect::eval::Simulated;
use wijkradar_detect::eval::{
    self, Detector, OutbreakKind, Outcome, Scenario, calibrate, choose_outbreaks, evaluate,
    simulate,
};
use wijkradar_detect::{Method, Test};
use wijkradar_domain::hierarchy::Dwellings;
use wijkradar_domain::{AreaCode, AreaLevel, CellTotal, GemeenteCode, Hierarchy};
use wijkradar_release::{ReleasePolicy, Released, Threshold};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    /// What else to evaluate; without it, the detection methods.
    #[command(subcommand)]
    pub what: Option<EvalWhat>,
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// False alarms allowed per 100 area-years.
    #[arg(long, default_value_t = 2.0)]
    pub budget: f64,
    /// Smallest wijk tested, in dwellings.
    #[arg(long, default_value_t = 1000)]
    pub min_dwellings: u64,
    /// Signals per 1,000 households per month, per signal type.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Share of areas that get an outbreak.
    #[arg(long, default_value_t = 0.3)]
    pub share: f64,
    /// How much areas differ in their rate: the standard deviation, on the
    /// log scale, of each area's log-normal factor of mean 1 (0: every area
    /// has the same rate; 0.5: a factor of about 5 between the 5% lowest and
    /// the 5% highest).
    #[arg(long, default_value_t = 0.0)]
    pub area_sd: f64,
    /// The areas tested: wijken, or buurten (each with its wijk's 2024
    /// dwellings spread evenly over its buurten: the shipped CBS figures
    /// have no buurt counts).
    #[arg(long, value_enum, default_value = "wijk")]
    pub level: EvalLevel,
    /// Over which areas the pooled method finds the common level that the
    /// areas' levels are shrunk toward: per municipality, as the server
    /// does, or over the whole country. The seasonal curve and the
    /// overdispersion come from all areas either way, as in the server.
    #[arg(long, value_enum, default_value = "gemeente")]
    pub pool: EvalPool,
}

#[derive(Debug, clap::Subcommand)]
pub enum EvalWhat {
    /// The intervention report: bias, coverage of its 90% interval, false
    /// positives and power, on simulated interventions in real wijken.
    Interventions(crate::eval_interventions::InterventionEvalArgs),
    /// The alerts exactly as `GetAlerts` returns them, on a real store and
    /// a real aggregator, against the near-oracle on the same counts.
    Alerts(crate::eval_alerts::AlertEvalArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalPool {
    Gemeente,
    Land,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalLevel {
    Wijk,
    Buurt,
}

/// Excess-household bands for the report.
const BANDS: [(f64, f64, &str); 5] = [
    (0.0, 5.0, "< 5"),
    (5.0, 10.0, "5–10"),
    (10.0, 20.0, "10–20"),
    (20.0, 50.0, "20–50"),
    (50.0, f64::INFINITY, "≥ 50"),
];

/// The simulated world's options, checked before anything runs.
pub(crate) fn check_world(rate: f64, area_sd: f64, share: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "--rate: must be a positive number of signals per 1,000 households a month, got {rate}"
    );
    anyhow::ensure!(
        area_sd.is_finite() && (0.0..=3.0).contains(&area_sd),
        "--area-sd: must be a number from 0 to 3 (the standard deviation on the log scale), got {area_sd}"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&share),
        "--share: must be a share from 0 to 1, got {share}"
    );
    Ok(())
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.what {
        Some(EvalWhat::Interventions(a)) => return crate::eval_interventions::run(a),
        Some(EvalWhat::Alerts(_)) => anyhow::bail!("eval alerts runs async: see main"),
        None => {}
    }
    check_world(args.rate, args.area_sd, args.share)?;
    let started = std::time::Instant::now();
    let hierarchy = Hierarchy::netherlands_2023();
    let dwellings = Dwellings::kwb_2024();
    let wijk_dwellings = hierarchy
        .all_of_country()
        .filter(|a| a.level() == AreaLevel::Wijk)
        .filter_map(|a| Some((a, *dwellings.per_area.get(&a)? as f64)));
    // Each tested area's households and municipality.
    let tested: Vec<(f64, GemeenteCode)> = match args.level {
        EvalLevel::Wijk => wijk_dwellings
            .map(|(a, d)| (d, a.gemeente()))
            .collect::<Vec<_>>(),
        EvalLevel::Buurt => wijk_dwellings
            .flat_map(|(a, d)| {
                let AreaCode::Wijk(w) = a else {
                    return Vec::new();
                };
                let n = hierarchy.buurten_of_wijk(w).count().max(1);
                vec![(d / n as f64, a.gemeente()); n]
            })
            .collect(),
    }
    .into_iter()
    .filter(|&(d, _)| d >= args.min_dwellings as f64)
    .collect();
    let households: Vec<f64> = tested.iter().map(|&(d, _)| d).collect();
    let pools: Vec<usize> = match args.pool {
        EvalPool::Land => vec![0; tested.len()],
        EvalPool::Gemeente => {
            let mut index = std::collections::BTreeMap::new();
            tested
                .iter()
                .map(|&(_, g)| {
                    let next = index.len();
                    *index.entry(g).or_insert(next)
                })
                .collect()
        }
    };
    let (area, areas) = match args.level {
        EvalLevel::Wijk => ("wijk", "wijken"),
        EvalLevel::Buurt => ("buurt", "buurten"),
    };
    let scenario = Scenario {
        rate_per_1000: args.rate,
        area_sd: args.area_sd,
        ..Scenario::default()
    };
    let outbreaks = choose_outbreaks(&scenario, households.len(), args.share, args.seed);
    let null = simulate(&scenario, &households, &[], args.seed.wrapping_add(1));
    let sim = simulate(&scenario, &households, &outbreaks, args.seed);
    println!(
        "Evaluatie van de detectiemethoden (seed {}): {} {areas} met ten minste {} woningen (Bron: CBS), {} maanden, getoetst vanaf maand {}; {:.1} signalen per 1.000 huishoudens per maand, maartpiek ×{}, trend +{:.0}% per jaar, negatief-binomiaal (size {}), spreiding tussen gebieden {} (sd log); uitbraken in {} {areas}.",
        args.seed,
        households.len(),
        args.min_dwellings,
        scenario.months,
        scenario.first_test + 1,
        scenario.rate_per_1000,
        scenario.march_peak,
        scenario.trend_per_year * 100.0,
        scenario.size,
        scenario.area_sd,
        outbreaks.len()
    );

    let detectors: Vec<Detector> = Method::ALL
        .iter()
        .map(|&m| Detector::Method(m))
        .chain([
            Detector::PooledOwnLevel,
            Detector::Pooled,
            Detector::LevelOracle,
            Detector::Oracle,
        ])
        .collect();
    let bar = ProgressBar::new(detectors.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("methoden toetsen [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut results: Vec<(Detector, f64, Outcome, Outcome)> = Vec::new();
    for d in detectors {
        bar.set_message(d.name());
        let cutoff = calibrate(&eval::score(d, &null, &scenario, &pools), args.budget);
        let tests = eval::score(d, &sim, &scenario, &pools);
        let calibrated = evaluate(&tests, &sim, &scenario, Some(cutoff));
        let nominal = evaluate(&tests, &sim, &scenario, None);
        results.push((d, cutoff, calibrated, nominal));
        bar.inc(1);
    }
    bar.finish_and_clear();
    print!("{}", report(&results, args.budget));
    // What the user sees of the default method's alarms, at its cutoff.
    let policy = ReleasePolicy::new(Threshold::new(10)?, 4, 2.0)?;
    let pooled = results.iter().find(|r| r.0 == Detector::Pooled);
    if let Some((_, cutoff, all, _)) = pooled {
        let tests = eval::score(Detector::Pooled, &sim, &scenario, &pools);
        let mut rows = vec![("alle alarmen (niet alles mag getoond)", all.clone())];
        for (name, rule) in [
            (
                "getoond: alleen met een vrijgegeven maandcel",
                Shown::MonthCell,
            ),
            ("getoond: met het vrijgegeven venster", Shown::Window),
        ] {
            let shown = shown(&tests, &sim, &scenario, *cutoff, &policy, rule, args.seed);
            rows.push((name, evaluate(&shown, &sim, &scenario, Some(*cutoff))));
        }
        let oracle = results
            .iter()
            .find(|r| r.0 == Detector::Oracle)
            .map_or(f64::NAN, |r| r.2.sensitivity());
        print!("{}", report_shown(&rows, oracle));
    }
    println!(
        "Klaar in {:.1} s. Opnieuw: wijkradar eval --seed {} --budget {} --level {area} --min-dwellings {} --area-sd {} --pool {}",
        started.elapsed().as_secs_f64(),
        args.seed,
        args.budget,
        args.min_dwellings,
        args.area_sd,
        match args.pool {
            EvalPool::Gemeente => "gemeente",
            EvalPool::Land => "land",
        }
    );
    Ok(())
}

fn lag_text(o: &Outcome) -> String {
    o.median_lag().map_or("–".into(), |l| format!("{l:.1}"))
}

fn report(results: &[(Detector, f64, Outcome, Outcome)], budget: f64) -> String {
    let mut s = String::new();
    let oracle = results
        .iter()
        .find(|r| r.0 == Detector::Oracle)
        .map(|r| r.2.sensitivity())
        .unwrap_or(f64::NAN);
    let _ = writeln!(
        s,
        "\nGekalibreerd op {budget} vals alarm per 100 gebiedsjaren (op data zonder uitbraken, andere seed):\n"
    );
    header(&mut s, &outcome_columns("methode"));
    for (d, _, o, _) in results {
        row(&mut s, &outcome_cells(d.name(), o, oracle));
    }
    let _ = writeln!(
        s,
        "\nMediane vertraging (maanden van begin tot eerste alarm, over de gevonden uitbraken) per soort, gekalibreerd:\n"
    );
    let mut columns = vec!["methode".to_owned()];
    columns.extend(per_kind(|k| k.name().to_owned()));
    header(&mut s, &columns);
    for (d, _, o, _) in results {
        let mut cells = vec![d.name().to_owned()];
        cells.extend(per_kind(|k| {
            o.median_lag_of(k).map_or("–".into(), |l| format!("{l:.1}"))
        }));
        row(&mut s, &cells);
    }
    let _ = writeln!(
        s,
        "\nSensitiviteit naar grootte van de uitbraak (verwachte extra huishoudens), gekalibreerd:\n"
    );
    let mut columns = vec!["methode".to_owned()];
    columns.extend(BANDS.iter().map(|&(lo, hi, name)| {
        let n = results
            .first()
            .map_or(0, |r| r.2.sensitivity_where(|_, e| e >= lo && e < hi).0);
        format!("{name} (n = {n})")
    }));
    header(&mut s, &columns);
    for (d, _, o, _) in results {
        let mut cells = vec![d.name().to_owned()];
        cells.extend(
            BANDS.iter().map(|&(lo, hi, _)| {
                format!("{:.2}", o.sensitivity_where(|_, e| e >= lo && e < hi).1)
            }),
        );
        row(&mut s, &cells);
    }
    let _ = writeln!(
        s,
        "\nMet de eigen drempel van elke methode (niet gekalibreerd):\n"
    );
    header(
        &mut s,
        &[
            "methode",
            "vals alarm / 100 gebiedsjaren",
            "sensitiviteit",
            "mediane vertraging (mnd)",
        ]
        .map(String::from),
    );
    for (d, _, _, o) in results {
        if matches!(d, Detector::Oracle | Detector::LevelOracle) {
            continue;
        }
        let cells = [
            d.name().to_owned(),
            format!("{:.1}", o.false_alarms_per_100_area_years()),
            format!("{:.3}", o.sensitivity()),
            lag_text(o),
        ];
        row(&mut s, &cells);
    }
    s
}

/// Which of a detector's alarms the API shows.
#[derive(Debug, Clone, Copy)]
enum Shown {
    /// Only where the month's cell is released (the rule before windows).
    MonthCell,
    /// Where a window whose own evidence reaches the cutoff has a released
    /// cell (what `GetAlerts` does).
    Window,
}

/// The tests with every alarm the API would not show taken out (score
/// −∞). A cell is released when its count, perturbed by the cell-key
/// method with a random key, is at least k; the audit's further
/// suppressions are not simulated. A window counts the sum of its months,
/// as if every household were signalled once.
fn shown(
    tests: &[Vec<Option<Test>>],
    sim: &Simulated,
    s: &Scenario,
    cutoff: f64,
    policy: &ReleasePolicy,
    rule: Shown,
    seed: u64,
) -> Vec<Vec<Option<Test>>> {
    let evidence = 10f64.powf(-cutoff);
    let released = |a: usize, t: usize, w: usize| {
        let Some(start) = (t + 1).checked_sub(w) else {
            return false;
        };
        let households: u64 = sim.counts[a][start..=t].iter().sum();
        let cell_key = mix(seed ^ ((a as u64) << 24) ^ ((t as u64) << 8) ^ w as u64) as u32;
        let total = CellTotal {
            households,
            cell_key,
        };
        matches!(policy.release(total), Released::Value(_))
    };
    tests
        .iter()
        .enumerate()
        .map(|(a, row)| {
            row.iter()
                .enumerate()
                .map(|(j, test)| {
                    let test = (*test)?;
                    let t = s.first_test + j;
                    if test.score <= cutoff {
                        return Some(test);
                    }
                    let visible = match rule {
                        Shown::MonthCell => released(a, t, 1),
                        Shown::Window => test
                            .windows_within(evidence)
                            .iter()
                            .any(|w| released(a, t, w.months)),
                    };
                    Some(if visible {
                        test
                    } else {
                        Test {
                            score: f64::NEG_INFINITY,
                            ..test
                        }
                    })
                })
                .collect()
        })
        .collect()
}

/// SplitMix64's finaliser: a well-spread key from a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The default method's alarms as the user sees them, against all of them.
fn report_shown(rows: &[(&str, Outcome)], oracle: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nWat de gebruiker ziet van pooled (zelfde drempel; k = 10, D = 4; een cel is vrijgegeven als haar verstoorde waarde ten minste k is):\n"
    );
    header(&mut s, &outcome_columns("alarmen"));
    for (name, o) in rows {
        row(&mut s, &outcome_cells(name, o, oracle));
    }
    s
}

/// The header of [`outcome_cells`]' rows, the first column named `first`.
fn outcome_columns(first: &str) -> Vec<String> {
    let mut columns: Vec<String> = [
        first,
        "vals alarm / 100 gebiedsjaren",
        "sensitiviteit",
        "t.o.v. near-oracle",
    ]
    .map(String::from)
    .into();
    columns.extend(per_kind(|k| k.name().to_owned()));
    columns.push("mediane vertraging (mnd)".to_owned());
    columns
}

/// A calibrated outcome's row: false alarms, sensitivity, against the
/// near-oracle, per kind of rise, median lag.
fn outcome_cells(name: &str, o: &Outcome, oracle: f64) -> Vec<String> {
    let mut cells = vec![
        name.to_owned(),
        format!("{:.2}", o.false_alarms_per_100_area_years()),
        format!("{:.3}", o.sensitivity()),
        format!("{:.2}", o.sensitivity() / oracle),
    ];
    cells.extend(per_kind(|k| {
        format!("{:.2}", o.sensitivity_where(|kk, _| kk == k).1)
    }));
    cells.push(lag_text(o));
    cells
}

/// A row of a Markdown table.
fn row(s: &mut String, cells: &[String]) {
    let _ = writeln!(s, "| {} |", cells.join(" | "));
}

/// A Markdown table's header and the line under it, as many columns wide.
fn header(s: &mut String, columns: &[String]) {
    row(s, columns);
    let _ = writeln!(s, "|{}", "---|".repeat(columns.len()));
}

/// One cell per kind of outbreak, in their order.
fn per_kind(cell: impl Fn(OutbreakKind) -> String) -> Vec<String> {
    OutbreakKind::ALL.iter().map(|&k| cell(k)).collect()
}
