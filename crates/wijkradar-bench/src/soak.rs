//! `wijkradar-bench soak`: the aggregator under continuous load for a
//! while, as an operator would watch it. Partners send batches without a
//! pause over mutual TLS (nine in ten signals of the current month, one in
//! ten late); an analyst asks tables and alerts meanwhile; the
//! scheduled release run and retention run as configured. Every interval it
//! reports throughput, latencies, errors, the process's memory (RSS) and
//! the data directory's size. The baseline is the run's own first interval:
//! the ratios of the last interval to the first show drift.
//!
//! The server runs in this process, so RSS includes the load generator (a
//! few MB of batches in flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use wijkradar_dev::DevSetup;
use wijkradar_domain::{BuurtCode, GemeenteCode, Hierarchy, Month};
use wijkradar_proto::v1 as pb;
use wijkradar_server::access::Role;

use crate::current_month;

/// What one interval saw.
#[derive(Debug, Default, Clone)]
struct Interval {
    ingest_ms: Vec<f64>,
    table_ms: Vec<f64>,
    alerts_ms: Vec<f64>,
    errors: u64,
}

pub async fn run(
    minutes: f64,
    partners: usize,
    batch: usize,
    interval_seconds: u64,
    release_every: u64,
) -> anyhow::Result<()> {
    let hierarchy = Hierarchy::netherlands_2023();
    let almere: GemeenteCode = "GM0034".parse().expect("valid");
    let buurten: Arc<Vec<BuurtCode>> = Arc::new(hierarchy.buurten_of(almere).collect());
    let types: Arc<Vec<String>> = Arc::new(
        wijkradar_domain::Catalogue::dutch_defaults()
            .types()
            .iter()
            .map(|t| t.name.to_string())
            .collect(),
    );
    let last = current_month().plus(-1);
    let months: Arc<Vec<Month>> = Arc::new(last.plus(-23).through(last).collect());
    let dir = tempfile::tempdir()?;
    let mut clients: Vec<(String, &str, Role)> = (0..partners)
        .map(|i| (format!("partner-{i}"), "Partner", Role::Partner))
        .collect();
    clients.push(("analyst".into(), "Gemeente", Role::Analyst));
    let named: Vec<(&str, &str, Role)> = clients
        .iter()
        .map(|(n, o, r)| (n.as_str(), *o, *r))
        .collect();
    let mut setup = DevSetup::create(dir.path(), &named)?;
    // The release run every minute by default, as a busy operator might
    // schedule it; no rate limit in the way of the load.
    setup.config.release.materialise_every_seconds = release_every;
    setup.config.limits.partner_signals_per_second = 10_000_000;
    setup.config.limits.partner_burst_signals = 10_000_000;
    let server = wijkradar_server::start(&setup.config).await?;
    println!(
        "Soak: {minutes} min, {partners} partners sending batches of {batch} without a pause, an analyst asking a table and the alerts in turn; Almere ({} buurten) × {} types × 24 months; a line every {interval_seconds} s",
        buurten.len(),
        types.len()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let current = Arc::new(Mutex::new(Interval::default()));
    let mut tasks = Vec::new();
    for p in 0..partners {
        let client = setup.client_at(server.addr, &format!("partner-{p}"));
        let (stop, acked, current) = (stop.clone(), acked.clone(), current.clone());
        let (buurten, types, months) = (buurten.clone(), types.clone(), months.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + p as u64);
            let now = current_month();
            let mut n = 0u64;
            // One connection per partner, as an agent keeps; a new one
            // after an error.
            let mut channel = None;
            while !stop.load(Ordering::Relaxed) {
                let signals: Vec<pb::Signal> = (0..batch)
                    .map(|_| pb::Signal {
                        pseudonym: rng.random::<[u8; 32]>().to_vec(),
                        buurt_code: buurten[rng.random_range(0..buurten.len())].to_string(),
                        signal_type: types[rng.random_range(0..types.len())].clone(),
                        // Mostly this month's export; one in ten a late
                        // signal of an earlier month (a new version of its
                        // releases, up to the cap).
                        month: if rng.random_bool(0.9) {
                            now.to_string()
                        } else {
                            months[rng.random_range(0..months.len())].to_string()
                        },
                        ..Default::default()
                    })
                    .collect();
                let batch = pb::Batch {
                    batch_id: format!("soak-{p}-{n}"),
                    key_id: "GM0034.2026.50a450a450a450a4".into(),
                    previous_key_id: String::new(),
                    signals,
                };
                n += 1;
                let started = Instant::now();
                if channel.is_none() {
                    channel = client.connect().await.ok();
                }
                let sent = match &channel {
                    Some(c) => send_one(c.clone(), batch).await,
                    None => Err(anyhow::anyhow!("no connection")),
                };
                if sent.is_err() {
                    channel = None;
                }
                let took = started.elapsed().as_secs_f64() * 1000.0;
                let mut now = current.lock().await;
                match sent {
                    Ok(k) => {
                        acked.fetch_add(k as u64, Ordering::Relaxed);
                        now.ingest_ms.push(took);
                    }
                    Err(_) => now.errors += 1,
                }
            }
        }));
    }
    {
        let client = setup.client_at(server.addr, "analyst");
        let (stop, current) = (stop.clone(), current.clone());
        let first = months[0];
        tasks.push(tokio::spawn(async move {
            let Ok(mut q) = client.query_client().await else {
                current.lock().await.errors += 1;
                return;
            };
            let mut turn = 0u64;
            while !stop.load(Ordering::Relaxed) {
                turn += 1;
                let table = turn.is_multiple_of(2);
                let started = Instant::now();
                let ok = if table {
                    q.get_table(pb::GetTableRequest {
                        gemeente_code: almere.to_string(),
                        level: pb::AreaLevel::Wijk as i32,
                        signal_types: vec!["huurachterstand".into()],
                        from_month: first.to_string(),
                        to_month: last.to_string(),
                        period: pb::Period::Quarter as i32,
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                } else {
                    q.get_alerts(pb::GetAlertsRequest {
                        gemeente_code: almere.to_string(),
                        month: last.to_string(),
                        signal_types: vec!["huurachterstand".into()],
                    })
                    .await
                    .is_ok()
                };
                let took = started.elapsed().as_secs_f64() * 1000.0;
                let mut now = current.lock().await;
                match (ok, table) {
                    (false, _) => now.errors += 1,
                    (true, true) => now.table_ms.push(took),
                    (true, false) => now.alerts_ms.push(took),
                }
                drop(now);
                // An analyst clicks, not a loop: a query every 200 ms.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    println!(
        "| t (s) | signals/s | ingest p50 / p99 (ms) | table p50 / p99 (ms) | alerts p50 / p99 (ms) | errors | RSS (MB) | data dir (MB) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let began = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut rows: Vec<(f64, f64, Interval, f64, f64)> = Vec::new();
    let mut acked_before = 0;
    let mut errors = 0;
    let mut all = Interval::default();
    while began.elapsed() < total {
        let wait = Duration::from_secs(interval_seconds).min(total - began.elapsed());
        let tick = Instant::now();
        tokio::time::sleep(wait).await;
        let seen = std::mem::take(&mut *current.lock().await);
        let now_acked = acked.load(Ordering::Relaxed);
        let rate = (now_acked - acked_before) as f64 / tick.elapsed().as_secs_f64();
        acked_before = now_acked;
        let (rss, disk) = (rss_mb(), dir_mb(&setup.config.data_dir));
        errors += seen.errors;
        println!(
            "| {:.0} | {rate:.0} | {} | {} | {} | {} | {rss:.0} | {disk:.0} |",
            began.elapsed().as_secs_f64(),
            p50_p99(&seen.ingest_ms),
            p50_p99(&seen.table_ms),
            p50_p99(&seen.alerts_ms),
            seen.errors
        );
        all.ingest_ms.extend(&seen.ingest_ms);
        all.table_ms.extend(&seen.table_ms);
        all.alerts_ms.extend(&seen.alerts_ms);
        rows.push((began.elapsed().as_secs_f64(), rate, seen, rss, disk));
    }
    stop.store(true, Ordering::Relaxed);
    let stored = acked.load(Ordering::Relaxed);
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(());
    };
    println!();
    println!("| summary | value |");
    println!("|---|---|");
    println!(
        "| signals acknowledged | {stored} in {:.0} s ({:.0}/s) |",
        last.0,
        stored as f64 / last.0
    );
    println!("| errors | {errors} |");
    println!(
        "| ingest p50 / p99, whole run | {} ms |",
        p50_p99(&all.ingest_ms)
    );
    println!(
        "| table p50 / p99, whole run | {} ms |",
        p50_p99(&all.table_ms)
    );
    println!(
        "| alerts p50 / p99, whole run | {} ms |",
        p50_p99(&all.alerts_ms)
    );
    println!(
        "| RSS first / last interval | {:.0} / {:.0} MB |",
        first.3, last.3
    );
    println!(
        "| data directory at the end | {:.0} MB, {:.0} bytes per signal |",
        last.4,
        last.4 * 1e6 / stored.max(1) as f64
    );
    println!(
        "| ratio last / first interval: throughput, ingest p99 | {:.2}, {:.2} |",
        last.1 / first.1.max(1.0),
        percentile(&last.2.ingest_ms, 0.99) / percentile(&first.2.ingest_ms, 0.99).max(1e-9)
    );
    // The load stops: calls in flight get 30 s, as `serve` gives them.
    let stopping = Instant::now();
    let grace = Duration::from_secs(30);
    for t in tasks {
        if tokio::time::timeout(grace.saturating_sub(stopping.elapsed()), t)
            .await
            .is_err()
        {
            break;
        }
    }
    let stopped = tokio::time::timeout(Duration::from_secs(120), server.shutdown()).await;
    match stopped {
        Ok(done) => {
            done?;
            println!(
                "| graceful stop after the load | {:.1} s |",
                stopping.elapsed().as_secs_f64()
            );
        }
        Err(_) => println!("| graceful stop after the load | not within 120 s |"),
    }
    Ok(())
}

/// Sends one batch on its own stream; the number of signals acknowledged.
async fn send_one(channel: tonic::transport::Channel, batch: pb::Batch) -> anyhow::Result<usize> {
    let n = batch.signals.len();
    let mut client = pb::ingest_service_client::IngestServiceClient::new(channel);
    let request = tokio_stream::iter([pb::SubmitRequest { batch: Some(batch) }]);
    let mut answers = client.submit(request).await?.into_inner();
    match answers.message().await? {
        Some(_) => Ok(n),
        None => anyhow::bail!("no acknowledgement"),
    }
}

fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn p50_p99(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!("{:.1} / {:.1}", percentile(v, 0.5), percentile(v, 0.99))
}

/// This process's resident memory, from `/proc/self/status` (Linux).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The size of the files under `dir`.
fn dir_mb(dir: &std::path::Path) -> f64 {
    fn walk(p: &std::path::Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(p) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / 1e6
}
