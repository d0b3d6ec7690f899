//! `wijkradar eval interventions`: how well the intervention report
//! estimates a known effect, on simulated counts over the real wijken of
//! Dutch gemeenten at realistic rates, released as the server releases
//! them (cell key noise, threshold k), with months or quarters chosen as
//! the server chooses them.
//!
//! For each number of treated wijken (1, 3, 5) and true effect (0, −10,
//! −20, −30%) it reports bias, the coverage of the 90% interval, how often
//! an effect is claimed (p < 0.10: false positives when there is none,
//! power when there is), and a "chosen because it spiked" scenario.

use std::sync::Mutex;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, LogNormal, Poisson};
use wijkradar_domain::hierarchy::Dwellings;
use wijkradar_domain::{AreaCode, CellTotal, GemeenteCode, Hierarchy, WijkCode};
use wijkradar_effect::design::{self, AreaSeries, Design};
use wijkradar_release::{ReleasePolicy, Released, Threshold};

#[derive(Debug, Clone, Args)]
pub struct InterventionEvalArgs {
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Simulated interventions per scenario (with 1,000, a coverage of
    /// 0.90 is measured to within about ±0.015 where 400 are estimated).
    #[arg(long, default_value_t = 1000)]
    pub trials: usize,
    /// Placebo draws per estimate.
    #[arg(long, default_value_t = 1000)]
    pub placebos: usize,
    /// Households with the measure per 1,000 households per month (payment
    /// arrears of all kinds together: about 6 at realistic rates).
    #[arg(long, default_value_t = 6.0)]
    pub rate: f64,
    /// How much wijken differ in their rate: the log-scale standard
    /// deviation of each wijk's factor.
    #[arg(long, default_value_t = 0.4)]
    pub area_sd: f64,
    /// Overdispersion: the gamma shape of the month-to-month variation
    /// (smaller is more overdispersed).
    #[arg(long, default_value_t = 30.0)]
    pub shape: f64,
    /// Smallest treated wijk, in dwellings.
    #[arg(long, default_value_t = 1000)]
    pub min_dwellings: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// Months simulated: 24 before the start, 12 after.
const MONTHS: usize = 36;
const START: usize = 24;
const EFFECTS: [f64; 4] = [0.0, -0.1, -0.2, -0.3];
const TREATED: [usize; 3] = [1, 3, 5];

/// A gemeente the harness can use: its wijken with a household base.
struct Gemeente {
    wijken: Vec<(WijkCode, f64)>,
    /// Indexes of wijken big enough to be treated.
    eligible: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Choice {
    Random,
    /// The wijk whose last three months before the start rose most above
    /// its earlier months.
    AfterSpike,
}

/// One estimate against its truth.
#[derive(Debug, Clone, Copy)]
struct Trial {
    estimate: f64,
    low: f64,
    high: f64,
    p: f64,
    quarters: bool,
    suppressed: f64,
    spike_warned: bool,
    donors: usize,
    placebos: usize,
}

pub fn run(args: InterventionEvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.trials > 0, "--trials: at least 1");
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate: a positive number"
    );
    anyhow::ensure!((0.0..=3.0).contains(&args.area_sd), "--area-sd: 0 to 3");
    anyhow::ensure!(args.shape > 0.0, "--shape: a positive number");
    let hierarchy = Hierarchy::netherlands_2023();
    let dwellings = Dwellings::kwb_2024();
    let gemeenten = gemeenten(&hierarchy, &dwellings, args.min_dwellings);
    let policy = ReleasePolicy::new(Threshold::new(10)?, 4, 2.0)?;
    println!(
        "Interventies: {} gemeenten met genoeg wijken, {} proeven per scenario, {} placebo's, {:.1} per 1.000 huishoudens per maand, k = 10, D = 4.",
        gemeenten.len(),
        args.trials,
        args.placebos,
        args.rate
    );
    let mut scenarios: Vec<(usize, f64, Choice)> = TREATED
        .iter()
        .flat_map(|&n| EFFECTS.iter().map(move |&e| (n, e, Choice::Random)))
        .collect();
    scenarios.push((1, 0.0, Choice::AfterSpike));
    let bar = ProgressBar::new((scenarios.len() * args.trials) as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} schattingen, nog {eta}",
    )?);
    let started = std::time::Instant::now();
    let results: Mutex<Vec<Vec<Option<Trial>>>> = Mutex::new(vec![Vec::new(); scenarios.len()]);
    let jobs: Vec<(usize, usize)> = (0..scenarios.len())
        .flat_map(|s| (0..args.trials).map(move |t| (s, t)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..args.threads.max(1) {
            scope.spawn(|| {
                loop {
                    let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(s, t)) = jobs.get(j) else { break };
                    let (n, effect, choice) = scenarios[s];
                    let seed = args.seed ^ ((s as u64) << 40) ^ t as u64;
                    if let Some(trial) =
                        one_trial(&args, &gemeenten, &policy, n, effect, choice, seed)
                    {
                        results.lock().expect("not poisoned")[s].push(trial);
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let results = results.into_inner().expect("not poisoned");
    println!(
        "\n| treated wijken | true effect | estimates | not estimated (too few comparison wijken) | quarterly | bias (pp) | RMSE (pp) | 90% coverage | claimed (p < 0.10) | mean interval width (pp) | comparison wijken | placebos |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((n, effect, choice), trials) in scenarios.iter().zip(&results) {
        let label = match choice {
            Choice::Random => format!("{n}"),
            Choice::AfterSpike => format!("{n}, chosen after a spike"),
        };
        println!("{}", row(&label, *effect, trials));
    }
    let estimated = |r: &[Option<Trial>]| -> Vec<Trial> { r.iter().flatten().copied().collect() };
    let spike = estimated(results.last().expect("the spike scenario"));
    let random = estimated(&results[0]);
    let warned = spike.iter().filter(|t| t.spike_warned).count();
    let random_warned = random.iter().filter(|t| t.spike_warned).count();
    println!(
        "\nSpike warning: shown in {warned} of {} wijken chosen after a spike, and in {random_warned} of {} chosen at random.",
        spike.len(),
        random.len()
    );
    let suppressed: Vec<f64> = results
        .iter()
        .flatten()
        .flatten()
        .map(|t| t.suppressed)
        .collect();
    println!(
        "Suppressed treated cells in the series used: {:.1}% on average. {} estimates in {:.0} s on {} threads.",
        100.0 * suppressed.iter().sum::<f64>() / suppressed.len().max(1) as f64,
        suppressed.len(),
        started.elapsed().as_secs_f64(),
        args.threads
    );
    Ok(())
}

fn row(label: &str, effect: f64, all: &[Option<Trial>]) -> String {
    let trials: Vec<Trial> = all.iter().flatten().copied().collect();
    let not_estimated = all.len() - trials.len();
    let n = trials.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Trial) -> f64| trials.iter().map(f).sum::<f64>() / n;
    let bias = mean(&|t| t.estimate - effect) * 100.0;
    let rmse = mean(&|t| (t.estimate - effect).powi(2)).sqrt() * 100.0;
    let coverage = mean(&|t| f64::from(u8::from(t.low <= effect && effect <= t.high)));
    let claimed = mean(&|t| f64::from(u8::from(t.p < 0.10)));
    let quarterly = mean(&|t| f64::from(u8::from(t.quarters)));
    let width = mean(&|t| t.high - t.low) * 100.0;
    let donors = mean(&|t| t.donors as f64);
    let placebos = mean(&|t| t.placebos as f64);
    format!(
        "| {label} | {:+.0}% | {} | {not_estimated} | {:.0}% | {bias:+.1} | {rmse:.1} | {coverage:.2} | {claimed:.2} | {width:.1} | {donors:.1} | {placebos:.0} |",
        effect * 100.0,
        trials.len(),
        quarterly * 100.0
    )
}

/// Gemeenten with at least 8 wijken that have a household base, of which
/// at least 5 are big enough to be treated.
fn gemeenten(hierarchy: &Hierarchy, dwellings: &Dwellings, min: u64) -> Vec<Gemeente> {
    let codes: Vec<GemeenteCode> = hierarchy.gemeenten().collect();
    codes
        .into_iter()
        .filter_map(|g| {
            let wijken: Vec<(WijkCode, f64)> = hierarchy
                .wijken_of(g)
                .filter_map(|w| Some((w, *dwellings.per_area.get(&AreaCode::Wijk(w))? as f64)))
                .filter(|(_, h)| *h >= 50.0)
                .collect();
            let eligible: Vec<usize> = (0..wijken.len())
                .filter(|&i| wijken[i].1 >= min as f64)
                .collect();
            (wijken.len() >= 8 && eligible.len() >= 5).then_some(Gemeente { wijken, eligible })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn one_trial(
    args: &InterventionEvalArgs,
    gemeenten: &[Gemeente],
    policy: &ReleasePolicy,
    n_treated: usize,
    effect: f64,
    choice: Choice,
    seed: u64,
) -> Option<Option<Trial>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let g = gemeenten.choose(&mut rng)?;
    let level = LogNormal::new(-args.area_sd * args.area_sd / 2.0, args.area_sd).ok()?;
    let trend: f64 = rng.random_range(-0.01..0.01);
    let phase: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    let means: Vec<Vec<f64>> = g
        .wijken
        .iter()
        .map(|(_, h)| {
            let l = level.sample(&mut rng);
            (0..MONTHS)
                .map(|t| {
                    let season =
                        1.0 + 0.1 * (phase + t as f64 * std::f64::consts::TAU / 12.0).sin();
                    h / 1000.0 * args.rate * l * season * (1.0 + trend * t as f64)
                })
                .collect()
        })
        .collect();
    let gamma = Gamma::new(args.shape, 1.0 / args.shape).ok()?;
    let draw = |mean: f64, rng: &mut StdRng| -> u64 {
        let m = mean * gamma.sample(rng);
        if m <= 0.0 {
            0
        } else {
            Poisson::new(m).map(|p| p.sample(rng) as u64).unwrap_or(0)
        }
    };
    let mut counts: Vec<Vec<u64>> = means
        .iter()
        .map(|row| row.iter().map(|&m| draw(m, &mut rng)).collect())
        .collect();
    let treated: Vec<usize> = match choice {
        Choice::Random => g
            .eligible
            .choose_multiple(&mut rng, n_treated)
            .copied()
            .collect(),
        Choice::AfterSpike => {
            let rise = |i: &usize| {
                let c = &counts[*i];
                let recent = c[START - 3..START].iter().sum::<u64>() as f64 / 3.0;
                let before = c[..START - 3].iter().sum::<u64>() as f64 / (START - 3) as f64;
                recent / before.max(0.5)
            };
            let mut by_rise = g.eligible.clone();
            by_rise.sort_by(|a, b| rise(b).total_cmp(&rise(a)));
            by_rise.into_iter().take(n_treated).collect()
        }
    };
    for &i in &treated {
        for t in START..MONTHS {
            counts[i][t] = draw(means[i][t] * (1.0 + effect), &mut rng);
        }
    }
    // Neighbours of the treated wijken are left out while enough others
    // remain, as the server does.
    let atlas = wijkradar_map::Atlas::wijken();
    let neighbours: Vec<usize> = treated
        .iter()
        .flat_map(|&i| atlas.neighbours(&g.wijken[i].0.to_string()))
        .filter_map(|c| g.wijken.iter().position(|(w, _)| w.to_string() == c))
        .collect();
    let others: Vec<usize> = (0..g.wijken.len())
        .filter(|i| !treated.contains(i))
        .collect();
    let (donors, _) = design::choose_donors(treated.len(), &others, &neighbours);
    let release = |counts: &[u64], rng: &mut StdRng| -> Vec<Option<f64>> {
        counts
            .iter()
            .map(|&n| {
                match policy.release(CellTotal {
                    households: n,
                    cell_key: rng.random(),
                }) {
                    Released::Value(v) => Some(v as f64),
                    Released::Suppressed => None,
                }
            })
            .collect()
    };
    let monthly: Vec<Vec<Option<f64>>> = counts.iter().map(|c| release(c, &mut rng)).collect();
    let quarters = design::prefers_quarters(
        treated.iter().map(|&i| monthly[i].as_slice()),
        donors.iter().map(|&i| monthly[i].as_slice()),
    );
    // A quarter's count is the sum of its months here: households with
    // the measure in two months of a quarter count once on the server, so
    // real quarterly counts are somewhat smaller.
    let cells: Vec<Vec<Option<f64>>> = if quarters {
        counts
            .iter()
            .map(|c| {
                let q: Vec<u64> = c.chunks(3).map(|m| m.iter().sum()).collect();
                release(&q, &mut rng)
            })
            .collect()
    } else {
        monthly
    };
    let series = |i: usize| AreaSeries {
        households: g.wijken[i].1,
        cells: cells[i].clone(),
    };
    let design = Design {
        treated: treated.iter().map(|&i| series(i)).collect(),
        donors: donors.iter().map(|&i| series(i)).collect(),
        start: if quarters { START / 3 } else { START },
        threshold: f64::from(policy.k()),
        periods_per_year: if quarters { 4 } else { 12 },
        draws: args.placebos,
        seed,
    };
    let Ok(a) = design.analyse() else {
        return Some(None);
    };
    Some(Some(Trial {
        estimate: a.relative.estimate,
        low: a.relative.low,
        high: a.relative.high,
        p: a.inference.as_ref().map_or(1.0, |i| i.p_value),
        quarters,
        suppressed: a.diagnostics.suppressed_treated,
        spike_warned: a.diagnostics.chosen_after_spike,
        donors: a.diagnostics.donors_used,
        placebos: a.inference.as_ref().map_or(0, |i| i.placebos),
    }))
}
