//! `wijkradar bench`: benchmarks anyone can rerun, each against a baseline
//! measured in the same run.

use clap::Subcommand;
use rand::{Rng, SeedableRng};
use wijkradar_domain::{BuurtCode, GemeenteCode, Hierarchy, PartnerPseudonym, SignalTypeName};
use wijkradar_pki::Role;
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::ServerKey;
use wijkradar_server::dev::DevSetup;
use wijkradar_store::StoredSignal;

use crate::agent::current_month;
use crate::connection::Connection;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// End-to-end ingest (gRPC, mutual TLS, durable acknowledgements) against
    /// raw sled writes of the same signals.
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
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Ingest {
        signals: n,
        batch_size,
        runs,
    } = cmd;
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
            "  run {run}: raw sled {:>7.0} signals/s, end to end {:>7.0} signals/s, ratio {:.2} (end to end: {:.1} CPU-seconds in {:.1} s; {} first)",
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
        "| raw sled (apply_batch + flush per batch) | {:.0} signals/s |",
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

/// Seconds to write the signals, re-keyed as the server would, raw into sled.
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
        })
        .collect();
    Ok(
        wijkradar_store::raw_write_baseline(&dir.path().join("raw"), &stored, batch_size)?
            .as_secs_f64(),
    )
}

/// Seconds (and CPU-seconds) from the first batch sent to the last
/// acknowledgement: agent client → gRPC over mutual TLS → server → sled.
async fn measure_end_to_end(
    signals: &[pb::Signal],
    batch_size: usize,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let setup = DevSetup::create(dir.path(), &[("bench-partner", "Bench", Role::Partner)])?;
    let server = wijkradar_server::start(&setup.config).await?;
    let files = setup.client("bench-partner");
    let conn = Connection {
        server: format!("https://{}", server.addr),
        ca: setup.pki_dir.join("ca.pem"),
        cert: files.cert,
        key: files.key,
        server_name: "localhost".into(),
    };
    let channel = conn.connect().await?;
    let to_send = signals.to_vec();
    let (started, cpu_before) = (std::time::Instant::now(), process_cpu_seconds());
    let report = wijkradar_agent::submit(channel, to_send, batch_size, |_| {}).await?;
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
