//! The benchmarks' commands, and `ingest` and `query`: the store under
//! the whole server against raw store reads and writes.

use clap::Subcommand;
use prost::Message as _;
use rand::{Rng, SeedableRng};
use wijkradar_dev::DevSetup;
use wijkradar_domain::{BuurtCode, GemeenteCode, Hierarchy, PartnerPseudonym, SignalTypeName};
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::ServerKey;
use wijkradar_server::access::Role;
use wijkradar_store::StoredSignal;

use crate::current_month;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// End-to-end ingest (gRPC, mutual TLS, durable acknowledgements) against
    /// raw store writes of the same signals.
    Ingest {
        /// Signals to write.
        #[arg(long, default_value_t = 500_000)]
        signals: usize,
        /// Signals per batch, in both measurements.
        #[arg(long, default_value_t = 5000)]
        batch_size: usize,
        /// Repetitions; the best of each is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The partner agent on a large export: reading, normalising, mapping
    /// and pseudonymising against parsing alone and HMAC alone; then sending
    /// from the outbox against submitting the same signals from memory.
    Agent {
        /// Export rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Repetitions of the reading part; the best is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Skip the sending part.
        #[arg(long)]
        no_send: bool,
    },
    /// The monthly detection run for all of the Netherlands: every wijk and
    /// buurt × signal types with 36 months of history, against EARS C2 over
    /// the same series.
    Detect {
        /// Signal types.
        #[arg(long, default_value_t = 8)]
        types: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A month's release for all of the Netherlands (every gemeente × type,
    /// audited), as the operator's MaterialiseReleases does it, against
    /// reading the same counts from the store.
    Release {
        /// Signals in each run's month.
        #[arg(long, default_value_t = 1_000_000)]
        signals: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Signals spread over the twelve months of last year, so that the
        /// release of every ended period includes a year (audited with its
        /// quarters and their months).
        #[arg(long, default_value_t = 0)]
        year_signals: usize,
    },
    /// One intervention's analysis with 1,000 placebos on one core, against
    /// a single SDID estimate on the same panel.
    Intervention {
        /// Treated wijken (1 to 5).
        #[arg(long, default_value_t = 3)]
        treated: usize,
        /// Comparison wijken.
        #[arg(long, default_value_t = 40)]
        donors: usize,
        #[arg(long, default_value_t = 36)]
        months: usize,
        #[arg(long, default_value_t = 1000)]
        placebos: usize,
        /// Repetitions; the best is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// An alerts query for one gemeente on a store with 36 months of
    /// signals for all of the Netherlands: the first of the month (which
    /// computes what the pooled method borrows from every gemeente) and
    /// later ones, against reading the gemeente's own counts from the store.
    Alerts {
        /// Signals over the 36 months.
        #[arg(long, default_value_t = 1_000_000)]
        signals: usize,
        /// Signal types (the catalogue's first ones).
        #[arg(long, default_value_t = 2)]
        types: usize,
        /// Later queries timed.
        #[arg(long, default_value_t = 20)]
        queries: usize,
        /// Signals in Almere alone on top (every type, 24 months), written
        /// in child processes: a gemeente with millions of signals.
        #[arg(long, default_value_t = 0)]
        gemeente_signals: usize,
        /// Ask the derived indicators too: the first query then also reads
        /// every gemeente's households for their shared baseline.
        #[arg(long)]
        derived: bool,
    },
    /// The aggregator under continuous ingest with table and alert queries
    /// for a while: throughput, latencies, errors, memory and disk over
    /// time, the last interval against the first.
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Partners sending at once, each batch after the last is acknowledged.
        #[arg(long, default_value_t = 4)]
        partners: usize,
        /// Signals per batch.
        #[arg(long, default_value_t = 2000)]
        batch: usize,
        /// Seconds per reported interval.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Seconds between the scheduled release runs (0: none).
        #[arg(long, default_value_t = 60)]
        release_every: u64,
    },
    /// Memory and disk at scale in one process: signals written in batches
    /// as partners send them, then a month's releases and the alerts of
    /// every gemeente; ingest against raw store writes of the same records.
    Memory {
        #[arg(long, default_value_t = 10_000_000)]
        signals: usize,
        /// Partners writing at once, each its own signal type.
        #[arg(long, default_value_t = 4)]
        partners: usize,
        /// Signals per batch.
        #[arg(long, default_value_t = 2000)]
        batch: usize,
        /// Signal types (the catalogue's first ones).
        #[arg(long, default_value_t = 4)]
        types: usize,
    },
    /// (Used by `query`, `dashboard` and `alerts`: fills a store in a process
    /// of its own, so that the fill's memory is not the server's.)
    #[command(hide = true)]
    Fill {
        #[arg(long)]
        data_dir: std::path::PathBuf,
        #[arg(long)]
        server_key: std::path::PathBuf,
        #[arg(long)]
        signals: usize,
        /// Which part of the fill this is (its random seed).
        #[arg(long, default_value_t = 0)]
        part: u64,
        /// The gemeente whose buurten the signals fall in.
        #[arg(long, default_value = "GM0034")]
        gemeente: GemeenteCode,
    },
    /// The dashboard: the national wijk map drawn, and a gemeente's buurt
    /// page over HTTPS on a filled store, against the same table over gRPC;
    /// the page's weight with its assets.
    Dashboard {
        /// Signals stored before the pages are asked for.
        #[arg(long, default_value_t = 1_000_000)]
        signals: usize,
        /// The gemeente whose page is timed (its buurten hold the signals).
        #[arg(long, default_value = "GM0363")]
        gemeente: GemeenteCode,
        /// Pages timed (after 3 untimed ones).
        #[arg(long, default_value_t = 50)]
        pages: usize,
    },
    /// Latency of a whole-municipality table (all buurten × all types × 24
    /// months, released and audited) over gRPC with mutual TLS, against
    /// reading the same counts from the store.
    Query {
        /// Signals stored before querying.
        #[arg(long, default_value_t = 1_000_000)]
        signals: usize,
        /// Queries timed (after 3 untimed ones).
        #[arg(long, default_value_t = 50)]
        queries: usize,
    },
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let (n, batch_size, runs) = match cmd {
        BenchCommand::Ingest {
            signals,
            batch_size,
            runs,
        } => (signals, batch_size, runs),
        BenchCommand::Query { signals, queries } => return query(signals, queries).await,
        BenchCommand::Fill {
            data_dir,
            server_key,
            signals,
            part,
            gemeente,
        } => return fill(&data_dir, &server_key, signals, part, gemeente).await,
        BenchCommand::Dashboard {
            signals,
            gemeente,
            pages,
        } => return crate::dashboard::run(signals, gemeente, pages).await,
        BenchCommand::Release {
            signals,
            runs,
            year_signals,
        } => {
            return crate::release::run(signals, runs, year_signals).await;
        }
        BenchCommand::Detect { types, runs } => return crate::detect::run(types, runs),
        BenchCommand::Intervention {
            treated,
            donors,
            months,
            placebos,
            runs,
        } => return crate::intervention::run(treated, donors, months, placebos, runs),
        BenchCommand::Alerts {
            signals,
            types,
            queries,
            gemeente_signals,
            derived,
        } => return crate::alerts::run(signals, types, queries, gemeente_signals, derived).await,
        BenchCommand::Agent {
            rows,
            runs,
            no_send,
        } => return crate::agent::run(rows, runs, !no_send).await,
        BenchCommand::Soak {
            minutes,
            partners,
            batch,
            interval,
            release_every,
        } => return crate::soak::run(minutes, partners, batch, interval, release_every).await,
        BenchCommand::Memory {
            signals,
            partners,
            batch,
            types,
        } => return crate::memory::run(signals, partners, batch, types).await,
    };
    let hierarchy = Hierarchy::netherlands_2023();
    let almere: GemeenteCode = "GM0034".parse().expect("valid");
    let buurten: Vec<BuurtCode> = hierarchy.buurten_of(almere).collect();
    let types: Vec<SignalTypeName> = ["huurachterstand", "energieachterstand", "schoolverzuim"]
        .iter()
        .map(|t| t.parse().expect("valid"))
        .collect();
    let months: Vec<_> = current_month()
        .plus(-24)
        .through(current_month().plus(-1))
        .collect();
    // Signals arrive as partners send them: one export per month and signal
    // type, households (random pseudonyms) spread over all of Almere's buurten.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let per_export = n.div_ceil(months.len() * types.len());
    let signals: Vec<pb::Signal> = months
        .iter()
        .flat_map(|m| types.iter().map(move |t| (m, t)))
        .flat_map(|(m, t)| std::iter::repeat_n((m, t), per_export))
        .take(n)
        .map(|(month, signal_type)| pb::Signal {
            pseudonym: rng.random::<[u8; 32]>().to_vec(),
            buurt_code: buurten[rng.random_range(0..buurten.len())].to_string(),
            signal_type: signal_type.to_string(),
            month: month.to_string(),
            severity: None,
            household_pseudonym: Vec::new(),
            previous_epoch_pseudonym: Vec::new(),
        })
        .collect();

    println!(
        "Ingest benchmark: {n} signals as {} monthly exports ({} months × {} types) over {} buurten of Almere, batches of {batch_size}, {runs} runs",
        months.len() * types.len(),
        months.len(),
        types.len(),
        buurten.len()
    );
    let mut results = Vec::with_capacity(runs);
    for run in 1..=runs {
        // Alternate which side goes first: each run leaves dirty pages and
        // a warmer allocator behind for the one after it.
        let raw_first = run % 2 == 1;
        let (raw, (e2e, cpu)) = if raw_first {
            let raw = measure_raw(&signals, batch_size)?;
            (raw, measure_end_to_end(&signals, batch_size).await?)
        } else {
            let e2e = measure_end_to_end(&signals, batch_size).await?;
            (measure_raw(&signals, batch_size)?, e2e)
        };
        println!(
            "  run {run}: raw store {:>7.0} signals/s, end to end {:>7.0} signals/s, ratio {:.2} (end to end: {:.1} CPU-seconds in {:.1} s; {} first)",
            n as f64 / raw,
            n as f64 / e2e,
            raw / e2e,
            cpu,
            e2e,
            if raw_first { "raw" } else { "end to end" },
        );
        results.push((raw, e2e));
    }
    let best_raw = results.iter().map(|r| r.0).fold(f64::MAX, f64::min);
    let best_e2e = results.iter().map(|r| r.1).fold(f64::MAX, f64::min);
    let mut ratios: Vec<f64> = results.iter().map(|(raw, e2e)| raw / e2e).collect();
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    let median = if ratios.len() % 2 == 1 {
        ratios[mid]
    } else {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    };
    println!("| measurement | best of {runs} |");
    println!("|---|---|");
    println!(
        "| raw store (one durable transaction per batch) | {:.0} signals/s |",
        n as f64 / best_raw
    );
    println!(
        "| end to end (gRPC + mTLS + durable ack) | {:.0} signals/s |",
        n as f64 / best_e2e
    );
    println!(
        "| ratio end to end / raw, best of each | {:.2} |",
        best_raw / best_e2e
    );
    println!("| ratio end to end / raw, median of runs | {median:.2} |");
    Ok(())
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn query(n: usize, queries: usize) -> anyhow::Result<()> {
    let (almere, buurten, types, months) = grid("GM0034".parse().expect("valid"));
    let to = *months.last().expect("24 months");
    println!(
        "Query benchmark: {n} signals over {} buurten × {} types × {} months of Almere; {queries} whole-municipality tables (buurt level, all types, 24 months)",
        buurten.len(),
        types.len(),
        months.len()
    );

    let dir = tempfile::tempdir()?;
    let mut setup = DevSetup::create(dir.path(), &[("bench-analyst", "Bench", Role::Analyst)])?;
    // The queries are timed alone: the untimed first ones release the
    // months asked for, and no scheduled job releases the rest meanwhile.
    setup.config.release.materialise_every_seconds = 0;
    fill_in_children(&setup, n, almere)?;
    eprintln!("{}", rss("before the server starts"));

    let server = wijkradar_server::start(&setup.config).await?;
    eprintln!("{}", rss("with the server started"));
    // Baseline: reading the same counts from the store, nothing else.
    let mut raw = Vec::with_capacity(queries);
    for i in 0..queries + 3 {
        let started = std::time::Instant::now();
        let mut cells = 0;
        for t in &types {
            for m in &months {
                cells += server.store().buurt_counts(t, *m, almere)?.len();
            }
        }
        std::hint::black_box(cells);
        if i >= 3 {
            raw.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let conn = setup.client_at(server.addr, "bench-analyst");
    let mut client = conn.query_client().await?;
    let request = |layout: pb::TableLayout| pb::GetTableRequest {
        gemeente_code: almere.to_string(),
        level: pb::AreaLevel::Buurt.into(),
        signal_types: vec![],
        from_month: months[0].to_string(),
        to_month: to.to_string(),
        period: pb::Period::Month.into(),
        layout: layout.into(),
        ..Default::default()
    };
    // One layout after the other: taking turns, the cells answers' few MB
    // of allocations showed in the columns answers' tail.
    let mut cells_ms = Vec::with_capacity(queries);
    let mut columns_ms = Vec::with_capacity(queries);
    let mut cells = 0;
    let mut bytes = [0usize; 2];
    for layout in [pb::TableLayout::Cells, pb::TableLayout::Columns] {
        for i in 0..queries + 3 {
            let started = std::time::Instant::now();
            let answer = client.get_table(request(layout)).await?.into_inner();
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            bytes[usize::from(layout == pb::TableLayout::Columns)] = answer.encoded_len();
            if layout == pb::TableLayout::Columns {
                let c = answer.columns.unwrap_or_default();
                anyhow::ensure!(c.statuses.len() == cells, "both layouts hold every cell");
            } else {
                cells = answer.cells.len();
            }
            if i >= 3 {
                match layout {
                    pb::TableLayout::Columns => columns_ms.push(ms),
                    _ => cells_ms.push(ms),
                }
            }
        }
    }
    server.shutdown().await?;
    raw.sort_by(f64::total_cmp);
    cells_ms.sort_by(f64::total_cmp);
    columns_ms.sort_by(f64::total_cmp);
    println!("| measurement | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| reading the counts from the store (baseline) | {:.1} ms | {:.1} ms |",
        percentile(&raw, 0.5),
        percentile(&raw, 0.99)
    );
    println!(
        "| whole table over gRPC + mTLS, released and audited ({cells} cells), as cells ({:.2} MB) | {:.1} ms | {:.1} ms |",
        bytes[0] as f64 / 1e6,
        percentile(&cells_ms, 0.5),
        percentile(&cells_ms, 0.99)
    );
    println!(
        "| the same table as columns ({:.2} MB) | {:.1} ms | {:.1} ms |",
        bytes[1] as f64 / 1e6,
        percentile(&columns_ms, 0.5),
        percentile(&columns_ms, 0.99)
    );
    println!(
        "| ratio p50 columns / baseline | {:.1} |",
        percentile(&columns_ms, 0.5) / percentile(&raw, 0.5)
    );
    Ok(())
}

/// Seconds to write the signals, re-keyed as the server would, raw into the store.
fn measure_raw(signals: &[pb::Signal], batch_size: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let key = ServerKey::generate(&dir.path().join("server.key"))?;
    let stored: Vec<StoredSignal> = signals
        .iter()
        .map(|s| StoredSignal {
            pseudonym: key
                .rekey(&PartnerPseudonym::try_from(s.pseudonym.as_slice()).expect("32 bytes")),
            buurt: s.buurt_code.parse().expect("valid"),
            signal_type: s.signal_type.parse().expect("valid"),
            month: s.month.parse().expect("valid"),
            severity: None,
            // The raw baseline writes only the signal records, no cell keys.
            record_key: 0,
            household: None,
            previous: None,
        })
        .collect();
    Ok(
        wijkradar_store::raw_write_baseline(&dir.path().join("raw"), &stored, batch_size)?
            .as_secs_f64(),
    )
}

/// Seconds (and CPU-seconds) from the first batch sent to the last
/// acknowledgement: agent client → gRPC over mutual TLS → server → store.
async fn measure_end_to_end(
    signals: &[pb::Signal],
    batch_size: usize,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let setup = DevSetup::create(dir.path(), &[("bench-partner", "Bench", Role::Partner)])?
        .without_rate_limits();
    let server = wijkradar_server::start(&setup.config).await?;
    let conn = setup.client_at(server.addr, "bench-partner");
    let channel = conn.connect().await?;
    let to_send = signals.to_vec();
    let (started, cpu_before) = (std::time::Instant::now(), process_cpu_seconds());
    let report = wijkradar_agent::submit(channel, to_send, "bench", batch_size, |_| {}).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    anyhow::ensure!(
        report.stored == signals.len().div_ceil(batch_size),
        "not every batch was stored"
    );
    anyhow::ensure!(
        server.store().signal_count()? == signals.len() as u64,
        "not every signal was stored"
    );
    server.shutdown().await?;
    Ok((elapsed, cpu))
}

/// CPU time (user + system) of this process so far, from /proc; 0 where
/// that is not available.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// This process's resident memory, for the benchmark's report.
fn rss(when: &str) -> String {
    let kb: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    format!("  memory (RSS) {when}: {:.2} GB", kb as f64 / 1e6)
}
/// Fills the setup's store with `n` random signals over gemeente `g`'s
/// grid (every type × 24 months), through its own writer as ingest would,
/// in child processes of a million signals each: what the fill holds in
/// memory is not counted in the server's. (With sled this mattered: it kept
/// 2.8 GB per million signals written.)
pub fn fill_in_children(setup: &DevSetup, n: usize, g: GemeenteCode) -> anyhow::Result<()> {
    const PART: usize = 1_000_000;
    let bar = indicatif::ProgressBar::new(n as u64);
    for part in 0..n.div_ceil(PART) {
        let signals = PART.min(n - part * PART);
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(["fill", "--signals", &signals.to_string()])
            .args(["--part", &part.to_string(), "--gemeente", &g.to_string()])
            .arg("--data-dir")
            .arg(&setup.config.data_dir)
            .arg("--server-key")
            .arg(&setup.config.keys.server_key)
            .status()?;
        anyhow::ensure!(status.success(), "filling the store failed");
        bar.inc(signals as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

async fn fill(
    data_dir: &std::path::Path,
    server_key: &std::path::Path,
    n: usize,
    part: u64,
    g: GemeenteCode,
) -> anyhow::Result<()> {
    let (_, buurten, types, months) = grid(g);
    let key = ServerKey::load(server_key)?;
    {
        // Fill the store through its own writer, as ingest would.
        let store = wijkradar_store::Store::open(data_dir, key.id().as_str())?;
        let (queue, writer) = wijkradar_store::IngestQueue::start(store.clone(), 64);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11 + part);
        let mut ids = Vec::new();
        for (i, chunk) in (0..n).collect::<Vec<_>>().chunks(10_000).enumerate() {
            let signals: Vec<StoredSignal> = chunk
                .iter()
                .map(|_| random_signal(&key, &mut rng, &buurten, &types, &months))
                .collect();
            let id = format!("fill-{part}-{i}");
            ids.push(("bench".to_owned(), id.clone()));
            let batch = wijkradar_store::IncomingBatch {
                partner: "bench".into(),
                id: wijkradar_domain::BatchId::new(&id).expect("valid"),
                key_id: wijkradar_domain::PseudonymKeyId::new("bench").expect("valid"),
                digest: [0; 32],
                signals,
            };
            queue.submit(batch).await?;
        }
        // No audit log here: the batches' `U` records go, or the server
        // would write their entries at its start.
        queue.forget_unaudited(&ids).await?;
        drop(queue);
        writer.join();
    }

    Ok(())
}

/// A benchmark's grid: a gemeente, its buurten, every catalogue type and
/// the 24 months up to the last ended one.
pub fn grid(
    g: GemeenteCode,
) -> (
    GemeenteCode,
    Vec<BuurtCode>,
    Vec<SignalTypeName>,
    Vec<wijkradar_domain::Month>,
) {
    let buurten = Hierarchy::netherlands_2023().buurten_of(g).collect();
    let types = wijkradar_domain::Catalogue::dutch_defaults()
        .types()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let to = current_month().plus(-1);
    (g, buurten, types, to.plus(-23).through(to).collect())
}

/// A stored signal of a random household in a random cell of the grid,
/// keyed as the server would.
pub fn random_signal(
    key: &ServerKey,
    rng: &mut impl Rng,
    buurten: &[BuurtCode],
    types: &[SignalTypeName],
    months: &[wijkradar_domain::Month],
) -> StoredSignal {
    let pseudonym = key.rekey(&PartnerPseudonym::from_bytes(rng.random()));
    StoredSignal {
        record_key: key.record_key(&pseudonym),
        pseudonym,
        buurt: buurten[rng.random_range(0..buurten.len())],
        signal_type: types[rng.random_range(0..types.len())].clone(),
        month: months[rng.random_range(0..months.len())],
        severity: None,
        household: None,
        previous: None,
    }
}
