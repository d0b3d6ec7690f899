//! `wijkradar-bench memory`: memory and disk of the aggregator at scale,
//! in one process (issue 18.9). Partners' batches are written through the
//! store's writer as ingest writes them (four partners at once, each with
//! monthly exports of its own signal type over all of the Netherlands);
//! then the server starts on the store, releases the last month for every
//! gemeente, and answers the alerts of every gemeente; then a child
//! writing into the store is killed and the server starts again. Reported:
//! ingest speed, the process's memory (RSS now and its peak), the store's
//! size on disk per signal, and start-up after a clean stop and a crash. The baseline, measured last in the same run, is the
//! raw speed of writing the same records into a fresh store file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use wijkradar_dev::DevSetup;
use wijkradar_domain::{
    BuurtCode, GemeenteCode, Hierarchy, Month, PartnerPseudonym, SignalTypeName,
};
use wijkradar_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use wijkradar_pseudonym::ServerKey;
use wijkradar_server::access::Role;
use wijkradar_store::{IncomingBatch, StoredSignal};

use crate::current_month;

/// What a partner sends: `batches` batches of `batch` signals of its type,
/// month after month, over all buurten. The same for the same `partner`.
struct Partner {
    rng: rand::rngs::StdRng,
    signal_type: SignalTypeName,
    batches: usize,
}

impl Partner {
    fn batch(
        &mut self,
        key: &ServerKey,
        n: usize,
        size: usize,
        buurten: &[BuurtCode],
        months: &[Month],
    ) -> Vec<StoredSignal> {
        // Monthly exports: the first batches are the first month's.
        let month = months[n * months.len() / self.batches.max(1)];
        (0..size)
            .map(|_| {
                let pseudonym = key.rekey(&PartnerPseudonym::from_bytes(self.rng.random()));
                StoredSignal {
                    record_key: key.record_key(&pseudonym),
                    pseudonym,
                    buurt: buurten[self.rng.random_range(0..buurten.len())],
                    signal_type: self.signal_type.clone(),
                    month,
                    severity: None,
                    household: None,
                    previous: None,
                }
            })
            .collect()
    }
}

pub async fn run(
    signals: usize,
    partners: usize,
    batch: usize,
    types: usize,
) -> anyhow::Result<()> {
    let hierarchy = Hierarchy::netherlands_2023();
    let buurten: Arc<Vec<BuurtCode>> = Arc::new(hierarchy.buurten().collect());
    let gemeenten: Vec<GemeenteCode> = hierarchy.gemeenten().collect();
    let types: Vec<SignalTypeName> = wijkradar_domain::Catalogue::dutch_defaults()
        .types()
        .iter()
        .take(types)
        .map(|t| t.name.clone())
        .collect();
    let last = current_month().plus(-1);
    let months: Arc<Vec<Month>> = Arc::new(last.plus(-11).through(last).collect());
    println!(
        "Memory benchmark: {signals} signals in batches of {batch} from {partners} partners at once (monthly exports, one type each of {}) over all {} buurten of the Netherlands × {} months; then the last month's release of every gemeente and the alerts of all {} gemeenten",
        types
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        buurten.len(),
        months.len(),
        gemeenten.len()
    );
    let dir = tempfile::tempdir()?;
    let mut setup = DevSetup::create(
        dir.path(),
        &[
            ("bench-operator", "Bench", Role::Operator),
            ("bench-analyst", "Bench", Role::Analyst),
        ],
    )?;
    setup.config.release.materialise_every_seconds = 0;
    setup.config.retention.purge_every_seconds = 0;
    setup.config.limits.request_timeout_seconds = 3600;
    // The analyst may ask every gemeente.
    let codes: Vec<String> = gemeenten.iter().map(|g| g.to_string()).collect();
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    let mut access = String::new();
    for (i, (name, role)) in [
        ("bench-operator", Role::Operator),
        ("bench-analyst", Role::Analyst),
    ]
    .into_iter()
    .enumerate()
    {
        let oin = wijkradar_dev::dev_oin(i);
        access.push_str(&wijkradar_dev::access_entry(name, &oin, &[role], &codes));
    }
    std::fs::write(&setup.config.access, access)?;
    let key = Arc::new(ServerKey::load(&setup.config.keys.server_key)?);

    // Ingest, through the store's own writer.
    let per_partner = signals / partners;
    let batches = per_partner.div_ceil(batch);
    let started = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let bar = indicatif::ProgressBar::new(signals as u64);
    let peak_during_ingest;
    {
        let store = wijkradar_store::Store::open(&setup.config.data_dir, key.id().as_str())?;
        let (queue, writer) = wijkradar_store::IngestQueue::start(store, 64);
        let mut tasks = Vec::new();
        for p in 0..partners {
            let (queue, key, acked) = (queue.clone(), key.clone(), acked.clone());
            let (buurten, months) = (buurten.clone(), months.clone());
            let mut partner = Partner {
                rng: rand::rngs::StdRng::seed_from_u64(300 + p as u64),
                signal_type: types[p % types.len()].clone(),
                batches,
            };
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::with_capacity(batches);
                for n in 0..batches {
                    let size = batch.min(per_partner - n * batch);
                    let signals = partner.batch(&key, n, size, &buurten, &months);
                    let id = format!("p{p}-{n}");
                    ids.push((format!("partner-{p}"), id.clone()));
                    let stored = queue
                        .submit(IncomingBatch {
                            partner: format!("partner-{p}"),
                            id: wijkradar_domain::BatchId::new(&id).expect("valid"),
                            key_id: wijkradar_domain::PseudonymKeyId::new("bench").expect("valid"),
                            digest: [0; 32],
                            signals,
                        })
                        .await?;
                    anyhow::ensure!(
                        stored == wijkradar_store::Outcome::Stored,
                        "a batch was not stored"
                    );
                    acked.fetch_add(size as u64, Ordering::Relaxed);
                }
                // No audit log here: the batches' `U` records go, or the
                // server would write their entries at its start.
                queue.forget_unaudited(&ids).await?;
                Ok(())
            }));
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let monitor = {
            let (stop, acked, bar) = (stop.clone(), acked.clone(), bar.clone());
            tokio::spawn(async move {
                let mut peak = 0.0f64;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    bar.set_position(acked.load(Ordering::Relaxed));
                    peak = peak.max(status_mb("VmRSS"));
                }
                peak
            })
        };
        for t in tasks {
            t.await??;
        }
        stop.store(true, Ordering::Relaxed);
        peak_during_ingest = monitor.await?;
        drop(queue);
        writer.join();
    }
    bar.finish_and_clear();
    let ingest = started.elapsed().as_secs_f64();
    let stored = acked.load(Ordering::Relaxed);
    let rss_after_ingest = status_mb("VmRSS");
    let (disk_len, disk_blocks) = dir_bytes(&setup.config.data_dir);

    // The month's release of every gemeente, then every gemeente's alerts.
    let started = Instant::now();
    let server = wijkradar_server::start(&setup.config).await?;
    let ready = started.elapsed().as_secs_f64();
    let conn = setup.client_at(server.addr, "bench-operator");
    let mut admin = AdminServiceClient::new(conn.connect().await?);
    let started = Instant::now();
    let released = admin
        .materialise_releases(pb::MaterialiseReleasesRequest {
            month: last.to_string(),
        })
        .await?
        .into_inner();
    let release = started.elapsed().as_secs_f64();
    let rss_after_release = status_mb("VmRSS");
    let conn = setup.client_at(server.addr, "bench-analyst");
    let mut query = conn.query_client().await?;
    let started = Instant::now();
    let mut alerts = 0;
    for g in &gemeenten {
        let answer = query
            .get_alerts(pb::GetAlertsRequest {
                gemeente_code: g.to_string(),
                month: last.to_string(),
                signal_types: types.iter().map(|t| t.to_string()).collect(),
            })
            .await?
            .into_inner();
        alerts += answer.alerts.len();
    }
    let alerts_took = started.elapsed().as_secs_f64();
    let rss_after_alerts = status_mb("VmRSS");
    let peak = status_mb("VmHWM");
    server.shutdown().await?;

    // A crash: a child process writing more batches into the store is
    // killed (SIGKILL) while it writes; the server then starts on it.
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["fill", "--signals", "1000000", "--part", "99"])
        .args(["--gemeente", "GM0034", "--data-dir"])
        .arg(&setup.config.data_dir)
        .arg("--server-key")
        .arg(&setup.config.keys.server_key)
        .spawn()?;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    child.kill()?;
    child.wait()?;
    let started = Instant::now();
    let server = wijkradar_server::start(&setup.config).await?;
    let ready_after_crash = started.elapsed().as_secs_f64();
    server.shutdown().await?;

    // Baseline: the same records written raw, generated in chunks outside
    // the timing.
    let raw_dir = tempfile::tempdir()?;
    let mut raw = wijkradar_store::RawWriter::open(&raw_dir.path().join("raw.redb"))?;
    let mut raw_seconds = 0.0;
    for p in 0..partners {
        let mut partner = Partner {
            rng: rand::rngs::StdRng::seed_from_u64(300 + p as u64),
            signal_type: types[p % types.len()].clone(),
            batches,
        };
        let per_chunk = 250;
        for first in (0..batches).step_by(per_chunk) {
            let chunk: Vec<StoredSignal> = (first..batches.min(first + per_chunk))
                .flat_map(|n| {
                    let size = batch.min(per_partner - n * batch);
                    partner.batch(&key, n, size, &buurten, &months)
                })
                .collect();
            raw_seconds += raw.write(&chunk, batch)?.as_secs_f64();
        }
    }
    drop(raw);

    let mb = |b: u64| b as f64 / 1e6;
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| ingest through the store's writer | {stored} signals in {ingest:.0} s: {:.0} signals/s |",
        stored as f64 / ingest
    );
    println!(
        "| raw store writes of the same records (baseline) | {:.0} signals/s; ratio ingest / raw {:.2} |",
        stored as f64 / raw_seconds,
        raw_seconds / ingest
    );
    println!(
        "| store on disk after ingest | {:.0} MB allocated ({:.0} bytes per signal); file length {:.0} MB |",
        mb(disk_blocks),
        disk_blocks as f64 / stored as f64,
        mb(disk_len)
    );
    println!(
        "| server ready on the store: after a clean stop / after a crash | {ready:.2} s / {ready_after_crash:.2} s |"
    );
    println!(
        "| the month's release, every gemeente | {release:.1} s, {} tables |",
        released.tables_released
    );
    println!(
        "| alerts of all {} gemeenten | {alerts_took:.1} s, {alerts} alerts |",
        gemeenten.len()
    );
    println!(
        "| RSS: most during ingest / after ingest / after release / after alerts | {peak_during_ingest:.0} / {rss_after_ingest:.0} / {rss_after_release:.0} / {rss_after_alerts:.0} MB |"
    );
    println!("| RSS peak of the process before the baseline (VmHWM) | {peak:.0} MB |");
    Ok(())
}

/// A field of `/proc/self/status` in MB (Linux).
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The files under `dir`: their length, and the bytes the disk gives them.
fn dir_bytes(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => (m.len(), m.blocks() * 512),
            Err(_) => (0, 0),
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}
