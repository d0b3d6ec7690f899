//! `wijkradar eval alerts`: the early warning scored exactly as the API
//! returns it.
//!
//! Households are simulated in the real wijken of a sample of gemeenten
//! (CBS 2024 dwellings; Bron: CBS). Each wijk's monthly count per payment
//! type comes from the evaluation's simulator (negative binomial, season,
//! trend, wijken that differ in rate), with rises injected into wijken:
//! every payment type rises at once, as when a wijk's money troubles grow.
//! Each month's count is spread over the wijk's households by a frailty
//! that clusters problems in few households, so the derived series
//! (households with several signal types, with any payment arrear) behave
//! as in life. The signals go into a real store. A real aggregator answers
//! `GetAlerts` over gRPC with mutual TLS for every gemeente and tested
//! month, and what it returns is scored against the truth.
//!
//! The near-oracle scores the same counts, calibrated to the false-alarm
//! rate the API reached. For the derived series it is told their baseline
//! as the mean over replicate worlds without rises.

use std::collections::HashMap;
use std::fmt::Write as _;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};
use wijkradar_detect::Test;
use wijkradar_detect::eval::{
    self, Detector, Outbreak, OutbreakKind, Outcome, Scenario, Simulated, calibrate,
    choose_outbreaks, evaluate,
};
use wijkradar_domain::derived::{self, Derived, HouseholdSignal, Joins};
use wijkradar_domain::hierarchy::Dwellings;
use wijkradar_domain::{
    AreaCode, BuurtCode, Clock, GemeenteCode, Hierarchy, Month, PartnerPseudonym, SignalTypeName,
    SignalUnit, WijkCode,
};
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::ServerKey;
use wijkradar_server::access::Role;
use wijkradar_store::StoredSignal;

#[derive(Debug, Clone, Args)]
pub struct AlertEvalArgs {
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Gemeenten simulated, drawn at random from all of the Netherlands
    /// (0: all of them; an hour or more).
    #[arg(long, default_value_t = 60)]
    pub gemeenten: usize,
    /// Signals per 1,000 households per month, per payment type.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// How much wijken differ in their rate: the log-scale standard
    /// deviation of each wijk's factor, per type.
    #[arg(long, default_value_t = 0.5)]
    pub area_sd: f64,
    /// Share of tested wijken that get a rise (in every payment type).
    #[arg(long, default_value_t = 0.3)]
    pub share: f64,
    /// Smallest wijk scored, in dwellings (smaller ones are simulated and
    /// tested by the server, not scored).
    #[arg(long, default_value_t = 1000)]
    pub min_dwellings: u64,
    /// How problems cluster in households: the gamma shape of each
    /// household's frailty (mean 1). Smaller clusters more.
    #[arg(long, default_value_t = 0.5)]
    pub clustering: f64,
    /// Worlds without rises simulated for the derived series' baseline.
    #[arg(long, default_value_t = 50)]
    pub replicates: usize,
}

/// The payment types simulated: the four the arrears indicator joins.
const TYPES: [&str; 4] = [
    "huurachterstand",
    "energieachterstand",
    "drinkwaterachterstand",
    "zorgpremieachterstand",
];

/// The derived series scored.
const DERIVED: [Derived; 3] = [
    Derived::PaymentArrears,
    Derived::SeveralProblems,
    Derived::SignalledAgain,
];

/// A simulated wijk: its households, each in a buurt, with a frailty.
struct Wijk {
    code: WijkCode,
    gemeente: usize,
    households: f64,
    buurten: Vec<BuurtCode>,
    /// Cumulative frailty over the households: who gets a signal.
    cumulative: Vec<f64>,
}

impl Wijk {
    fn buurt_of(&self, household: usize) -> BuurtCode {
        self.buurten[household % self.buurten.len()]
    }

    /// `n` distinct households, drawn in proportion to their frailty.
    fn draw(&self, n: u64, rng: &mut StdRng, out: &mut Vec<usize>) {
        out.clear();
        let total = *self.cumulative.last().unwrap_or(&0.0);
        let n = (n as usize).min(self.cumulative.len());
        while out.len() < n {
            let x = rng.random::<f64>() * total;
            let h = self.cumulative.partition_point(|&c| c <= x);
            let h = h.min(self.cumulative.len() - 1);
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
}

/// Per wijk: each signalled household's signals (type index, month).
type Placed = Vec<HashMap<usize, Vec<HouseholdSignal>>>;

/// The simulated gemeenten.
struct World {
    gemeenten: Vec<GemeenteCode>,
    wijken: Vec<Wijk>,
    /// Indexes of the wijken scored.
    tested: Vec<usize>,
    months: Vec<Month>,
    scenario: Scenario,
}

impl World {
    fn households(&self) -> Vec<f64> {
        self.wijken.iter().map(|w| w.households).collect()
    }

    /// The scored wijken's part of series over all simulated wijken, with
    /// `outbreaks` (numbered over the scored wijken).
    fn scored(&self, counts: &[Vec<u64>], mu: &[Vec<f64>], outbreaks: &[Outbreak]) -> Simulated {
        Simulated {
            counts: self.tested.iter().map(|&w| counts[w].clone()).collect(),
            mu: self.tested.iter().map(|&w| mu[w].clone()).collect(),
            outbreaks: outbreaks.to_vec(),
            households: self
                .tested
                .iter()
                .map(|&w| self.wijken[w].households)
                .collect(),
        }
    }

    /// Each scored wijk's gemeente: the pools the levels are shrunk in.
    fn pools(&self) -> Vec<usize> {
        self.tested
            .iter()
            .map(|&w| self.wijken[w].gemeente)
            .collect()
    }

    /// Each type's counts per wijk and month: the same rises in every type,
    /// each type's wijk levels and noise its own.
    fn counts(&self, outbreaks: &[Outbreak], levels_seed: u64, noise_seed: u64) -> Vec<Simulated> {
        let households = self.households();
        (0..TYPES.len() as u64)
            .map(|t| {
                eval::simulate_world(
                    &self.scenario,
                    &households,
                    outbreaks,
                    levels_seed.wrapping_add(t * 7919),
                    noise_seed.wrapping_add(t * 104_729),
                )
            })
            .collect()
    }

    /// Spreads every count over the wijk's households.
    fn place(&self, sims: &[Simulated], seed: u64) -> Placed {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9_1ace);
        let mut chosen = Vec::new();
        self.wijken
            .iter()
            .enumerate()
            .map(|(w, wijk)| {
                let mut households: HashMap<usize, Vec<HouseholdSignal>> = HashMap::new();
                for (m, &month) in self.months.iter().enumerate() {
                    for (t, sim) in sims.iter().enumerate() {
                        wijk.draw(sim.counts[w][m], &mut rng, &mut chosen);
                        for &h in &chosen {
                            households.entry(h).or_default().push(HouseholdSignal {
                                signal_type: t as u16,
                                month,
                                buurt: wijk.buurt_of(h),
                            });
                        }
                    }
                }
                households
            })
            .collect()
    }

    /// A derived series per wijk and month, as the server tests it (a stock
    /// by the households that come to count, [`derived::enters_in`]).
    fn derived(&self, which: Derived, placed: &Placed) -> Vec<Vec<u64>> {
        let joins = Joins {
            payment_arrears: (0..TYPES.len() as u16).collect(),
        };
        placed
            .iter()
            .map(|households| {
                let mut row = vec![0u64; self.months.len()];
                for signals in households.values() {
                    let first = self
                        .months
                        .iter()
                        .position(|m| *m == signals[0].month)
                        .unwrap_or(0);
                    for (m, &month) in self.months.iter().enumerate().skip(first) {
                        if derived::enters_in(which, signals, month, &joins).is_some() {
                            row[m] += 1;
                        }
                    }
                }
                row
            })
            .collect()
    }
}

pub async fn run(args: AlertEvalArgs) -> anyhow::Result<()> {
    crate::eval::check_world(args.rate, args.area_sd, args.share)?;
    anyhow::ensure!(
        args.clustering.is_finite() && args.clustering > 0.0,
        "--clustering: must be a positive number, got {}",
        args.clustering
    );
    anyhow::ensure!(
        args.replicates >= 2,
        "--replicates: at least 2, got {}",
        args.replicates
    );
    let started = std::time::Instant::now();
    let world = world(&args)?;
    let s = world.scenario;
    let tested_outbreaks = choose_outbreaks(&s, world.tested.len(), args.share, args.seed);
    // The same rises in the numbering of all simulated wijken.
    let outbreaks: Vec<Outbreak> = tested_outbreaks
        .iter()
        .map(|o| Outbreak {
            area: world.tested[o.area],
            ..*o
        })
        .collect();
    let levels_seed = args.seed;
    let sims = world.counts(&outbreaks, levels_seed, args.seed);
    let placed = world.place(&sims, args.seed);
    let signals: u64 = sims.iter().flat_map(|s| s.counts.iter().flatten()).sum();
    println!(
        "Evaluatie van de waarschuwingen zoals de API ze geeft (seed {}): {} gemeenten, {} wijken ({} met ten minste {} woningen, Bron: CBS), {} betalingsachterstanden ({}) van {:.1} per 1.000 huishoudens per maand per soort, spreiding tussen wijken {} (sd log), clustering in huishoudens {}; {} maanden, getoetst de laatste {}; stijgingen in {} wijken; {} signalen.",
        args.seed,
        world.gemeenten.len(),
        world.wijken.len(),
        world.tested.len(),
        args.min_dwellings,
        TYPES.len(),
        TYPES.join(", "),
        s.rate_per_1000,
        s.area_sd,
        args.clustering,
        s.months,
        s.months - s.first_test,
        outbreaks.len(),
        signals
    );

    let answers = ask_the_api(&world, &placed, signals).await?;
    let api_time = answers.seconds;

    // The truth per series family, restricted to the scored wijken.
    let world = &world;
    let types_truth = join_areas(
        &sims
            .iter()
            .map(|sim| world.scored(&sim.counts, &sim.mu, &tested_outbreaks))
            .collect::<Vec<_>>(),
    );
    let null_sims = world.counts(&[], levels_seed, args.seed.wrapping_add(1));
    let types_null = join_areas(
        &null_sims
            .iter()
            .map(|sim| world.scored(&sim.counts, &sim.mu, &[]))
            .collect::<Vec<_>>(),
    );
    // Each type's wijken are pooled per gemeente, apart from the other
    // types' (fewer than 1,000 gemeenten).
    let pools: Vec<usize> = (0..TYPES.len())
        .flat_map(|t| world.pools().into_iter().map(move |g| t * 1000 + g))
        .collect();
    let mut rows = Vec::new();
    let api = evaluate(&answers.tests(world, None), &types_truth, &s, Some(0.5));
    rows.push(Row::compare(
        "de vier soorten, elk apart",
        api,
        &types_truth,
        &types_null,
        &s,
        &pools,
        Learner::Told,
    ));

    // The derived series: their baseline from replicate worlds.
    let baselines = derived_baselines(world, args.replicates, args.seed, levels_seed);
    for (&which, baseline) in DERIVED.iter().zip(baselines) {
        let DerivedBaseline { mu, size, null } = baseline;
        let series = world.derived(which, &placed);
        let truth = world.scored(&series, &mu, &tested_outbreaks);
        let null = world.scored(&null, &mu, &[]);
        let scenario = Scenario { size, ..s };
        let api = evaluate(
            &answers.tests(world, Some(which)),
            &truth,
            &scenario,
            Some(0.5),
        );
        rows.push(Row::compare(
            which.name(),
            api,
            &truth,
            &null,
            &scenario,
            &world.pools(),
            Learner::FromMeans,
        ));
    }
    print!("{}", report(&rows, &answers, world, &tested_outbreaks));
    println!(
        "API: {} vragen in {:.0} s (mediaan {:.0} ms per vraag); alles samen {:.0} s.",
        answers.calls,
        api_time,
        answers.median_ms,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A derived series' baseline from worlds without rises.
struct DerivedBaseline {
    /// Per wijk and month: the mean over the worlds.
    mu: Vec<Vec<f64>>,
    /// The negative binomial size of its variance around that mean
    /// (μ + μ²/size), over all wijk-months.
    size: f64,
    /// The first world's series: outbreak-free data for calibration.
    null: Vec<Vec<u64>>,
}

/// Every derived series' baseline ([`DERIVED`] in turn), from `replicates`
/// worlds of the same wijk levels with other counts.
fn derived_baselines(
    world: &World,
    replicates: usize,
    seed: u64,
    levels_seed: u64,
) -> Vec<DerivedBaseline> {
    let s = world.scenario;
    let bar = bar(replicates as u64, "basislijn afgeleide reeksen");
    let mut sums = vec![vec![vec![0.0f64; s.months]; world.wijken.len()]; DERIVED.len()];
    let mut squares = sums.clone();
    let mut nulls = Vec::new();
    for r in 0..replicates {
        let noise = seed.wrapping_add(1000 + r as u64);
        let sims = world.counts(&[], levels_seed, noise);
        let placed = world.place(&sims, noise);
        for (d, &which) in DERIVED.iter().enumerate() {
            let series = world.derived(which, &placed);
            for (w, row) in series.iter().enumerate() {
                for (m, &y) in row.iter().enumerate() {
                    sums[d][w][m] += y as f64;
                    squares[d][w][m] += (y as f64).powi(2);
                }
            }
            if r == 0 {
                nulls.push(series);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = replicates as f64;
    sums.into_iter()
        .zip(squares)
        .zip(nulls)
        .map(|((sums, squares), null)| {
            let mu: Vec<Vec<f64>> = sums
                .iter()
                .map(|row| row.iter().map(|x| x / n).collect())
                .collect();
            let (mut excess, mut mu2) = (0.0, 0.0);
            for (w, row) in mu.iter().enumerate() {
                for (m, &mean) in row.iter().enumerate() {
                    let var = (squares[w][m] / n - mean * mean) * n / (n - 1.0);
                    excess += var - mean;
                    mu2 += mean * mean;
                }
            }
            let size = if excess > 0.0 { mu2 / excess } else { 1e6 };
            DerivedBaseline { mu, size, null }
        })
        .collect()
}

/// The gemeenten drawn, their wijken and households.
fn world(args: &AlertEvalArgs) -> anyhow::Result<World> {
    let hierarchy = Hierarchy::netherlands_2023();
    let dwellings = Dwellings::kwb_2024();
    let mut gemeenten: Vec<GemeenteCode> = hierarchy.gemeenten().collect();
    gemeenten.sort();
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x6e_e3e7);
    if args.gemeenten > 0 && args.gemeenten < gemeenten.len() {
        gemeenten.shuffle(&mut rng);
        gemeenten.truncate(args.gemeenten);
        gemeenten.sort();
    }
    let frailty = Gamma::new(args.clustering, 1.0 / args.clustering)
        .map_err(|e| anyhow::anyhow!("--clustering: {e}"))?;
    let mut wijken = Vec::new();
    for (g, &code) in gemeenten.iter().enumerate() {
        for w in hierarchy.wijken_of(code) {
            let buurten: Vec<BuurtCode> = hierarchy.buurten_of_wijk(w).collect();
            let Some(&d) = dwellings.per_area.get(&AreaCode::Wijk(w)) else {
                continue;
            };
            if d == 0 || buurten.is_empty() {
                continue;
            }
            let mut total = 0.0;
            let cumulative = (0..d)
                .map(|_| {
                    total += frailty.sample(&mut rng);
                    total
                })
                .collect();
            wijken.push(Wijk {
                code: w,
                gemeente: g,
                households: d as f64,
                buurten,
                cumulative,
            });
        }
    }
    let tested = (0..wijken.len())
        .filter(|&w| wijken[w].households >= args.min_dwellings as f64)
        .collect();
    let last = Clock::System.month().plus(-1);
    let scenario = Scenario {
        rate_per_1000: args.rate,
        area_sd: args.area_sd,
        ..Scenario::default()
    };
    let first = last.plus(1 - scenario.months as i32);
    Ok(World {
        gemeenten,
        wijken,
        tested,
        months: first.through(last).collect(),
        scenario: Scenario {
            first_calendar_month: first.month() as usize - 1,
            ..scenario
        },
    })
}

/// Several series families as one: the areas of each in turn.
fn join_areas(parts: &[Simulated]) -> Simulated {
    let per = parts.first().map_or(0, |p| p.counts.len());
    Simulated {
        counts: parts.iter().flat_map(|p| p.counts.clone()).collect(),
        mu: parts.iter().flat_map(|p| p.mu.clone()).collect(),
        outbreaks: parts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.outbreaks.iter().map(move |o| Outbreak {
                    area: o.area + i * per,
                    ..*o
                })
            })
            .collect(),
        households: parts.iter().flat_map(|p| p.households.clone()).collect(),
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {{pos}}/{{len}} {{eta}}"))
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// What the API returned for every gemeente and tested month.
#[derive(Debug, Default)]
struct Answers {
    /// (series name, wijk, tested month index from 0): the window shown.
    wijk_alerts: HashMap<(String, WijkCode, usize), u32>,
    /// Buurt alerts: (series name, wijk of the buurt, tested month index).
    buurt_alerts: Vec<(String, WijkCode, usize)>,
    calls: usize,
    seconds: f64,
    median_ms: f64,
}

impl Answers {
    /// An alarm (score 1) where the API alerted the scored wijk: per type
    /// in turn, or for one derived series.
    fn tests(&self, world: &World, which: Option<Derived>) -> Vec<Vec<Option<Test>>> {
        let names: Vec<String> = match which {
            None => TYPES.iter().map(|t| (*t).to_owned()).collect(),
            Some(d) => vec![d.name().to_owned()],
        };
        let tested = world.scenario.months - world.scenario.first_test;
        names
            .iter()
            .flat_map(|name| {
                world.tested.iter().map(move |&w| {
                    (0..tested)
                        .map(|j| {
                            let key = (name.clone(), world.wijken[w].code, j);
                            let score = f64::from(u8::from(self.wijk_alerts.contains_key(&key)));
                            Some(Test::scored(score))
                        })
                        .collect()
                })
            })
            .collect()
    }
}

/// Writes the signals into a real store, starts a real aggregator and asks
/// `GetAlerts` for every gemeente and tested month.
async fn ask_the_api(world: &World, placed: &Placed, signals: u64) -> anyhow::Result<Answers> {
    let dir = tempfile::tempdir()?;
    let mut setup = wijkradar_dev::DevSetup::create(dir.path(), &[])?;
    setup.config.release.materialise_every_seconds = 0;
    setup.config.retention.purge_every_seconds = 0;
    let name = "eval-analyst";
    wijkradar_pki::issue(
        &setup.pki_dir,
        name,
        "Evaluatie",
        Some(&wijkradar_dev::dev_oin(0)),
    )?;
    let codes: Vec<String> = world.gemeenten.iter().map(|g| g.to_string()).collect();
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    std::fs::write(
        &setup.config.access,
        wijkradar_dev::access_entry(name, &wijkradar_dev::dev_oin(0), &[Role::Analyst], &codes),
    )?;
    let key = ServerKey::load(&setup.config.keys.server_key)?;
    fill(&setup, &key, placed, signals).await?;

    let server = wijkradar_server::start(&setup.config).await?;
    let mut client = setup.client_at(server.addr, name).query_client().await?;
    let tested: Vec<(usize, Month)> = world
        .months
        .iter()
        .copied()
        .enumerate()
        .skip(world.scenario.first_test)
        .collect();
    let asked: Vec<String> = TYPES
        .iter()
        .map(|t| (*t).to_owned())
        .chain(Derived::ALL.iter().map(|d| d.name().to_owned()))
        .collect();
    let wijk_of: HashMap<BuurtCode, WijkCode> = world
        .wijken
        .iter()
        .flat_map(|w| w.buurten.iter().map(move |&b| (b, w.code)))
        .collect();
    let bar = bar(
        (tested.len() * world.gemeenten.len()) as u64,
        "GetAlerts per gemeente en maand",
    );
    let mut answers = Answers::default();
    let mut times = Vec::new();
    let started = std::time::Instant::now();
    for (j, (_, month)) in tested.iter().enumerate() {
        for g in &world.gemeenten {
            let call = std::time::Instant::now();
            let answer = client
                .get_alerts(pb::GetAlertsRequest {
                    gemeente_code: g.to_string(),
                    month: month.to_string(),
                    signal_types: asked.clone(),
                })
                .await?
                .into_inner();
            times.push(call.elapsed().as_secs_f64() * 1000.0);
            for alert in answer.alerts {
                let area: AreaCode = alert.area_code.parse()?;
                match area {
                    AreaCode::Wijk(w) => {
                        answers
                            .wijk_alerts
                            .insert((alert.signal_type, w, j), alert.window_months);
                    }
                    AreaCode::Buurt(b) => {
                        if let Some(&w) = wijk_of.get(&b) {
                            answers.buurt_alerts.push((alert.signal_type, w, j));
                        }
                    }
                    _ => {}
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    answers.seconds = started.elapsed().as_secs_f64();
    answers.calls = times.len();
    times.sort_by(f64::total_cmp);
    answers.median_ms = times.get(times.len() / 2).copied().unwrap_or(0.0);
    drop(client);
    server.shutdown().await?;
    Ok(answers)
}

/// A stable partner pseudonym of a simulated household (`person` 0) or of
/// its one person with person-type signals (`person` 1).
fn partner_pseudonym(wijk: usize, household: usize, person: u8) -> PartnerPseudonym {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(wijk as u64).to_le_bytes());
    bytes[8..16].copy_from_slice(&(household as u64).to_le_bytes());
    bytes[16] = person;
    bytes[31] = 0xe7;
    PartnerPseudonym::from_bytes(bytes)
}

/// Writes every placed signal through the store's writer (untimed).
async fn fill(
    setup: &wijkradar_dev::DevSetup,
    key: &ServerKey,
    placed: &Placed,
    signals: u64,
) -> anyhow::Result<()> {
    let catalogue = wijkradar_domain::Catalogue::dutch_defaults();
    let types: Vec<(SignalTypeName, bool)> = TYPES
        .iter()
        .map(|t| {
            let def = catalogue.get(t).expect("a catalogue type");
            (def.name.clone(), def.unit == SignalUnit::Person)
        })
        .collect();
    let store = wijkradar_store::Store::open(&setup.config.data_dir, key.id().as_str())?;
    let (queue, writer) = wijkradar_store::IngestQueue::start(store, 64);
    let bar = bar(signals, "signalen in de opslag");
    let mut ids = Vec::new();
    let mut batch: Vec<StoredSignal> = Vec::new();
    let flush = |batch: &mut Vec<StoredSignal>, ids: &mut Vec<(String, String)>| {
        let id = format!("eval-{}", ids.len());
        ids.push(("eval".to_owned(), id.clone()));
        wijkradar_store::IncomingBatch {
            partner: "eval".into(),
            id: wijkradar_domain::BatchId::new(&id).expect("valid"),
            key_id: wijkradar_domain::PseudonymKeyId::new("eval").expect("valid"),
            digest: [0; 32],
            signals: std::mem::take(batch),
        }
    };
    for (w, households) in placed.iter().enumerate() {
        for (&h, list) in households {
            let household = key.rekey(&partner_pseudonym(w, h, 0));
            let person = key.rekey(&partner_pseudonym(w, h, 1));
            for s in list {
                let (name, is_person) = &types[s.signal_type as usize];
                let pseudonym = if *is_person { person } else { household };
                batch.push(StoredSignal {
                    record_key: key.record_key(&pseudonym),
                    pseudonym,
                    buurt: s.buurt,
                    signal_type: name.clone(),
                    month: s.month,
                    severity: None,
                    household: is_person.then_some(household),
                    previous: None,
                });
            }
            if batch.len() >= 10_000 {
                bar.inc(batch.len() as u64);
                queue.submit(flush(&mut batch, &mut ids)).await?;
            }
        }
    }
    if !batch.is_empty() {
        bar.inc(batch.len() as u64);
        queue.submit(flush(&mut batch, &mut ids)).await?;
    }
    bar.finish_and_clear();
    // No audit log here: the batches' `U` records go, or the server would
    // write their entries at its start.
    queue.forget_unaudited(&ids).await?;
    drop(queue);
    writer.join();
    Ok(())
}

/// One series family: the API against the harness's detectors on the same
/// counts, each calibrated to the API's false-alarm rate.
struct Row {
    name: String,
    api: Outcome,
    oracle: Outcome,
    learner: Outcome,
    pooled: Outcome,
    /// The near-oracle, the level-learning oracle and the harness's copy
    /// of the server's method at the issue's budget, 2 false alarms per
    /// 100 wijk-years.
    at_two: [Outcome; 3],
}

/// How the level-learning oracle gets its curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Learner {
    /// From the simulator's scenario, as `wijkradar eval` does.
    Told,
    /// From the baseline given (the derived series' replicate means):
    /// every wijk's share of it is its level, which the oracle learns.
    FromMeans,
}

impl Row {
    fn compare(
        name: &str,
        api: Outcome,
        truth: &Simulated,
        null: &Simulated,
        s: &Scenario,
        pools: &[usize],
        learner: Learner,
    ) -> Row {
        let api_rate = api.false_alarms_per_100_area_years();
        let at_budget = |d: Detector, budget: f64| {
            if d == Detector::LevelOracle && learner == Learner::FromMeans {
                let learn = Learning::of(truth);
                let cutoff = calibrate(&learn.tests(null, s), budget);
                return evaluate(&learn.tests(truth, s), truth, s, Some(cutoff));
            }
            let cutoff = calibrate(&eval::score(d, null, s, pools), budget);
            evaluate(&eval::score(d, truth, s, pools), truth, s, Some(cutoff))
        };
        Row {
            name: name.to_owned(),
            oracle: at_budget(Detector::Oracle, api_rate),
            learner: at_budget(Detector::LevelOracle, api_rate),
            pooled: at_budget(Detector::Pooled, api_rate),
            at_two: [Detector::Oracle, Detector::LevelOracle, Detector::Pooled]
                .map(|d| at_budget(d, 2.0)),
            api,
        }
    }
}

/// The level-learning oracle of a series whose baseline is given, not
/// drawn from a scenario: the common curve is the baseline's rate per
/// household over all wijken, each wijk's level its own mean over that
/// (normalised to mean 1), and the spread the sd of their logs. It is told
/// the curve and the spread, and learns each level
/// ([`wijkradar_detect::oracle::test_learning`]).
struct Learning {
    curves: Vec<Vec<f64>>,
    spread: f64,
}

impl Learning {
    fn of(sim: &Simulated) -> Learning {
        let months = sim.mu.first().map_or(0, Vec::len);
        let households: f64 = sim.households.iter().sum();
        let rate: Vec<f64> = (0..months)
            .map(|t| sim.mu.iter().map(|r| r[t]).sum::<f64>() / households)
            .collect();
        let per_household: f64 = rate.iter().sum();
        let levels: Vec<f64> = sim
            .mu
            .iter()
            .zip(&sim.households)
            .map(|(mu, h)| (mu.iter().sum::<f64>() / (h * per_household)).max(1e-9))
            .collect();
        let mean = levels.iter().sum::<f64>() / levels.len().max(1) as f64;
        let logs: Vec<f64> = levels.iter().map(|l| (l / mean).ln()).collect();
        let log_mean = logs.iter().sum::<f64>() / logs.len().max(1) as f64;
        let spread = (logs.iter().map(|l| (l - log_mean).powi(2)).sum::<f64>()
            / logs.len().max(2).saturating_sub(1) as f64)
            .sqrt();
        Learning {
            curves: sim
                .households
                .iter()
                .map(|h| rate.iter().map(|r| r * h * mean).collect())
                .collect(),
            spread,
        }
    }

    fn tests(&self, sim: &Simulated, s: &Scenario) -> Vec<Vec<Option<Test>>> {
        sim.counts
            .iter()
            .zip(&self.curves)
            .map(|(counts, curve)| {
                (s.first_test..s.months)
                    .map(|t| {
                        wijkradar_detect::oracle::test_learning(
                            counts,
                            curve,
                            s.size,
                            self.spread,
                            t,
                        )
                    })
                    .collect()
            })
            .collect()
    }
}

fn report(rows: &[Row], answers: &Answers, world: &World, outbreaks: &[Outbreak]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| reeks | stijgingen | API: gevoeligheid | API: vals alarm per 100 wijkjaren | bijna-orakel bij hetzelfde vals alarm | API / bijna-orakel | orakel dat het niveau leert | API / dat orakel | pooled_windows van de harness | bij 2 vals alarm per 100: bijna-orakel / orakel dat leert / pooled_windows |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    let ratio = |a: &Outcome, b: &Outcome| {
        if b.detected == 0 {
            "–".to_owned()
        } else {
            format!("{:.2}", a.sensitivity() / b.sensitivity())
        }
    };
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.2} | {:.3} | {} | {:.3} | {} | {:.3} | {:.3} / {:.3} / {:.3} |",
            r.name,
            r.api.outbreaks,
            r.api.sensitivity(),
            r.api.false_alarms_per_100_area_years(),
            r.oracle.sensitivity(),
            ratio(&r.api, &r.oracle),
            r.learner.sensitivity(),
            ratio(&r.api, &r.learner),
            r.pooled.sensitivity(),
            r.at_two[0].sensitivity(),
            r.at_two[1].sensitivity(),
            r.at_two[2].sensitivity(),
        );
    }
    let _ = writeln!(
        out,
        "\nMediane vertraging in maanden per soort stijging (API / bijna-orakel):\n"
    );
    let _ = writeln!(out, "| reeks | {} |", {
        OutbreakKind::ALL.map(|k| k.name()).join(" | ")
    });
    let _ = writeln!(out, "|---|---|---|---|");
    for r in rows {
        let lag = |o: &Outcome, k| {
            o.median_lag_of(k)
                .map_or("–".to_owned(), |l| format!("{l}"))
        };
        let cells: Vec<String> = OutbreakKind::ALL
            .iter()
            .map(|&k| format!("{} / {}", lag(&r.api, k), lag(&r.oracle, k)))
            .collect();
        let _ = writeln!(out, "| {} | {} |", r.name, cells.join(" | "));
    }
    // Which windows the API showed.
    let mut windows: HashMap<u32, usize> = HashMap::new();
    for w in answers.wijk_alerts.values() {
        *windows.entry(*w).or_default() += 1;
    }
    let mut shown: Vec<(u32, usize)> = windows.into_iter().collect();
    shown.sort_unstable();
    let _ = writeln!(
        out,
        "\nWijkwaarschuwingen: {} (venster van 1/2/3/6 maanden: {}).",
        answers.wijk_alerts.len(),
        shown
            .iter()
            .map(|(w, n)| format!("{w} mnd: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Buurt alerts: inside a wijk with a rise, in its months, or not.
    let rising: HashMap<WijkCode, &Outbreak> = outbreaks
        .iter()
        .map(|o| (world.wijken[world.tested[o.area]].code, o))
        .collect();
    let inside = answers
        .buurt_alerts
        .iter()
        .filter(|(_, w, j)| {
            rising.get(w).is_some_and(|o| {
                let t = world.scenario.first_test + j;
                t >= o.start && t < o.start.saturating_add(o.kind.length())
            })
        })
        .count();
    let _ = writeln!(
        out,
        "Buurtwaarschuwingen: {}, waarvan {} in een wijk tijdens haar stijging.",
        answers.buurt_alerts.len(),
        inside
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wijk(frailties: &[f64]) -> Wijk {
        let mut total = 0.0;
        Wijk {
            code: "WK003401".parse().expect("valid"),
            gemeente: 0,
            households: frailties.len() as f64,
            buurten: vec!["BU00340101".parse().expect("valid")],
            cumulative: frailties
                .iter()
                .map(|f| {
                    total += f;
                    total
                })
                .collect(),
        }
    }

    #[test]
    fn a_draw_takes_distinct_households_by_their_frailty() {
        // Household 0 carries 9 times the frailty of each of the others.
        let mut frailties = vec![1.0; 10];
        frailties[0] = 9.0;
        let w = wijk(&frailties);
        let mut rng = StdRng::seed_from_u64(1);
        let mut out = Vec::new();
        let mut first = 0;
        for _ in 0..2000 {
            w.draw(1, &mut rng, &mut out);
            first += usize::from(out == [0]);
        }
        // P(household 0) = 9/18.
        assert!((first as f64 / 2000.0 - 0.5).abs() < 0.04, "{first}");
        // Never the same household twice; never more than there are.
        w.draw(10, &mut rng, &mut out);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        w.draw(50, &mut rng, &mut out);
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn joined_families_number_their_areas_and_rises_in_turn() {
        let part = |rise: bool| Simulated {
            counts: vec![vec![1; 3]; 2],
            mu: vec![vec![1.0; 3]; 2],
            outbreaks: if rise {
                vec![Outbreak {
                    area: 1,
                    start: 2,
                    kind: OutbreakKind::Jump,
                }]
            } else {
                Vec::new()
            },
            households: vec![100.0, 200.0],
        };
        let joined = join_areas(&[part(true), part(false), part(true)]);
        assert_eq!(joined.counts.len(), 6);
        assert_eq!(
            joined.households,
            vec![100.0, 200.0, 100.0, 200.0, 100.0, 200.0]
        );
        let areas: Vec<usize> = joined.outbreaks.iter().map(|o| o.area).collect();
        assert_eq!(areas, vec![1, 5]);
    }

    #[test]
    fn the_learner_of_given_means_is_told_their_curve_and_spread() {
        // Two wijken of the same size, one at twice the other's level, both
        // with a March-like peak in month 2.
        let curve = [1.0, 1.0, 1.5, 1.0];
        let sim = Simulated {
            counts: vec![vec![0; 4]; 2],
            mu: vec![curve.to_vec(), curve.iter().map(|m| 2.0 * m).collect()],
            outbreaks: Vec::new(),
            households: vec![1000.0, 1000.0],
        };
        let learn = Learning::of(&sim);
        // The common curve is their mean; the levels 2/3 and 4/3 around it.
        let common: Vec<f64> = curve.iter().map(|m| 1.5 * m).collect();
        for c in &learn.curves {
            for (a, b) in c.iter().zip(&common) {
                assert!((a - b).abs() < 1e-9, "{c:?}");
            }
        }
        // The sd of ln(2/3) and ln(4/3): ln 2 / √2.
        assert!((learn.spread - 2f64.ln() / 2f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn api_alerts_become_alarms_of_their_wijk_series_and_month() {
        let w = wijk(&[1.0; 1000]);
        let code = w.code;
        let world = World {
            gemeenten: vec!["GM0034".parse().expect("valid")],
            wijken: vec![w],
            tested: vec![0],
            months: Vec::new(),
            scenario: Scenario::default(),
        };
        let mut answers = Answers::default();
        answers
            .wijk_alerts
            .insert(("energieachterstand".to_owned(), code, 3), 2);
        answers
            .wijk_alerts
            .insert((Derived::SeveralProblems.name().to_owned(), code, 5), 6);
        let alarms = |tests: Vec<Vec<Option<Test>>>| -> Vec<(usize, usize)> {
            let mut out = Vec::new();
            for (a, row) in tests.iter().enumerate() {
                for (j, t) in row.iter().enumerate() {
                    if t.is_some_and(|t| t.score > 0.5) {
                        out.push((a, j));
                    }
                }
            }
            out
        };
        // Types in turn: energieachterstand is the second family.
        assert_eq!(alarms(answers.tests(&world, None)), vec![(1, 3)]);
        assert_eq!(
            alarms(answers.tests(&world, Some(Derived::SeveralProblems))),
            vec![(0, 5)]
        );
        assert!(alarms(answers.tests(&world, Some(Derived::PaymentArrears))).is_empty());
    }
}
