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
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let signals: Vec<pb::Signal> = (0..n)
        .map(|_| pb::Signal {
            pseudonym: rng.random::<[u8; 32]>().to_vec(),
            buurt_code: buurten[rng.random_range(0..buurten.len())].to_string(),
            signal_type: types[rng.random_range(0..types.len())].to_string(),
            month: months[rng.random_range(0..months.len())].to_string(),
            severity: None,
        })
        .collect();

    println!("Ingest benchmark: {n} signals, batches of {batch_size}, best of {runs} runs");
    let (mut best_raw, mut best_e2e) = (f64::MAX, f64::MAX);
    for run in 1..=runs {
        let dir = tempfile::tempdir()?;
        let setup = DevSetup::create(dir.path(), &[("bench-partner", "Bench", Role::Partner)])?;

        // Baseline: the same records, re-keyed as the server would, written raw.
        let key = ServerKey::load(&setup.config.keys.server_key)?;
        let stored: Vec<StoredSignal> = signals
            .iter()
            .map(|s| StoredSignal {
                pseudonym: key
                    .rekey(&PartnerPseudonym::try_from(s.pseudonym.as_slice()).expect("32 bytes")),
                buurt: s.buurt_code.parse().expect("valid"),
                signal_type: s.signal_type.parse().expect("valid"),
                month: s.month.parse().expect("valid"),
                severity: None,
            })
            .collect();
        let raw =
            wijkradar_store::raw_write_baseline(&dir.path().join("raw"), &stored, batch_size)?
                .as_secs_f64();

        // End to end: agent client → gRPC over mutual TLS → server → sled, flushed.
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
        let started = std::time::Instant::now();
        let report = wijkradar_agent::submit(channel, signals.clone(), batch_size, |_| {}).await?;
        let e2e = started.elapsed().as_secs_f64();
        server.shutdown().await?;
        anyhow::ensure!(
            report.stored * batch_size >= n,
            "not every batch was stored"
        );

        println!(
            "  run {run}: raw sled {:>9.0} signals/s, end to end {:>9.0} signals/s, ratio {:.2}",
            n as f64 / raw,
            n as f64 / e2e,
            raw / e2e
        );
        best_raw = best_raw.min(raw);
        best_e2e = best_e2e.min(e2e);
    }
    println!(
        "| raw sled (apply_batch + flush per batch) | {:.0} signals/s |",
        n as f64 / best_raw
    );
    println!(
        "| end to end (gRPC + mTLS + durable ack)   | {:.0} signals/s |",
        n as f64 / best_e2e
    );
    println!(
        "| ratio end to end / raw                   | {:.2} |",
        best_raw / best_e2e
    );
    Ok(())
}
