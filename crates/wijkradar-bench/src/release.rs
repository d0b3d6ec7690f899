//! `wijkradar-bench release`: computing a month's release for all of the
//! Netherlands (every gemeente × signal type: perturbed, thresholded,
//! audited, stored and logged), as the operator's MaterialiseReleases call
//! does it, against reading the same counts from the store.

use rand::SeedableRng;
use wijkradar_dev::DevSetup;
use wijkradar_domain::{BuurtCode, GemeenteCode, Hierarchy, Month, SignalTypeName};
use wijkradar_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use wijkradar_pseudonym::ServerKey;
use wijkradar_server::access::Role;
use wijkradar_store::StoredSignal;

use crate::current_month;

pub async fn run(signals: usize, runs: usize, year_signals: usize) -> anyhow::Result<()> {
    let hierarchy = Hierarchy::netherlands_2023();
    let buurten: Vec<BuurtCode> = hierarchy.buurten().collect();
    let gemeenten: Vec<GemeenteCode> = hierarchy.gemeenten().collect();
    let types: Vec<_> = wijkradar_domain::Catalogue::dutch_defaults()
        .types()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    println!(
        "Release benchmark: per run one month of {signals} signals over all {} buurten of the Netherlands ({} gemeenten) × {} types; the month's release of every gemeente × type and derived indicator",
        buurten.len(),
        gemeenten.len(),
        types.len()
    );
    let dir = tempfile::tempdir()?;
    let mut setup = DevSetup::create(dir.path(), &[("bench-operator", "Bench", Role::Operator)])?;
    // The operator's call does the work, not the schedules.
    setup.config.release.materialise_every_seconds = 0;
    setup.config.retention.purge_every_seconds = 0;
    // Releasing every period of a year for the whole country takes longer
    // than a query may (the scheduled job has no deadline): over an hour
    // on two cores (2026-12-03, cut off at the hour this had before).
    setup.config.limits.request_timeout_seconds = 6 * 3600;
    let key = ServerKey::load(&setup.config.keys.server_key)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut rows = Vec::new();
    for run in 0..runs {
        // Each run releases a month of its own, filled through the store's
        // writer while the server is down (untimed).
        let month = current_month().plus(-1 - run as i32);
        fill(&setup, &key, &mut rng, &buurten, &types, &[month], signals).await?;
        let server = wijkradar_server::start(&setup.config).await?;
        // Baseline: every count cell of the month, read from the store. The two
        // alternate which goes first: the first warms the pages for the second.
        let read_counts = || -> anyhow::Result<(f64, usize)> {
            let started = std::time::Instant::now();
            let mut cells = 0;
            for g in &gemeenten {
                for t in &types {
                    cells += server.store().buurt_counts(t, month, *g)?.len();
                }
            }
            Ok((started.elapsed().as_secs_f64(), std::hint::black_box(cells)))
        };
        let conn = setup.client_at(server.addr, "bench-operator");
        let mut admin = AdminServiceClient::new(conn.connect().await?);
        let baseline_first = run % 2 == 0;
        let mut measured = None;
        if baseline_first {
            measured = Some(read_counts()?);
        }
        let started = std::time::Instant::now();
        let answer = admin
            .materialise_releases(pb::MaterialiseReleasesRequest {
                month: month.to_string(),
            })
            .await?
            .into_inner();
        let release = started.elapsed().as_secs_f64();
        let (baseline, cells) = match measured {
            Some(m) => m,
            None => read_counts()?,
        };
        server.shutdown().await?;
        println!(
            "  run {}: {month}: {} tables released in {release:.2} s; reading their {cells} count cells {baseline:.2} s; ratio {:.1} ({} first)",
            run + 1,
            answer.tables_released,
            release / baseline,
            if baseline_first { "reading" } else { "release" }
        );
        rows.push((release, baseline, answer.tables_released));
    }
    // Then every ended period at once, as the scheduler does it: with the
    // runs' months filled, that is each earlier month's quarter (and year)
    // for every gemeente × measure, each audited with its parts.
    if year_signals > 0 {
        let last_year = current_month().plus(-12).year();
        let months: Vec<Month> = (1..=12)
            .map(|m| Month::new(last_year, m).expect("a month"))
            .collect();
        println!("  filling {year_signals} signals over the months of {last_year}");
        fill(
            &setup,
            &key,
            &mut rng,
            &buurten,
            &types,
            &months,
            year_signals,
        )
        .await?;
    }
    let server = wijkradar_server::start(&setup.config).await?;
    let conn = setup.client_at(server.addr, "bench-operator");
    let mut admin = AdminServiceClient::new(conn.connect().await?);
    let started = std::time::Instant::now();
    let periods = admin
        .materialise_releases(pb::MaterialiseReleasesRequest {
            month: String::new(),
        })
        .await?
        .into_inner();
    let periods_took = started.elapsed().as_secs_f64();
    server.shutdown().await?;
    println!(
        "  every ended period: {} tables released in {periods_took:.2} s (the quarters and years the runs completed, audited with their parts)",
        periods.tables_released
    );
    let best = rows.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let best_base = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    println!("| measurement | best of {runs} |");
    println!("|---|---|");
    println!("| reading the month's counts from the store (baseline) | {best_base:.2} s |");
    println!(
        "| the month's release of all of the Netherlands ({} tables, audited, stored, logged) | {best:.2} s |",
        rows[0].2
    );
    Ok(())
}

/// Writes `signals` random signals over `months` through the store's writer,
/// while the aggregator is down (untimed).
pub(crate) async fn fill(
    setup: &DevSetup,
    key: &ServerKey,
    rng: &mut rand::rngs::StdRng,
    buurten: &[BuurtCode],
    types: &[SignalTypeName],
    months: &[Month],
    signals: usize,
) -> anyhow::Result<()> {
    let store = wijkradar_store::Store::open(&setup.config.data_dir, key.id().as_str())?;
    let (queue, writer) = wijkradar_store::IngestQueue::start(store, 64);
    let bar = indicatif::ProgressBar::new(signals as u64);
    let mut left = signals;
    let mut i = 0;
    let mut ids = Vec::new();
    while left > 0 {
        let n = left.min(10_000);
        let batch: Vec<StoredSignal> = (0..n)
            .map(|_| crate::store::random_signal(key, rng, buurten, types, months))
            .collect();
        let id = format!("fill-{}-{i}", months[0]);
        ids.push(("bench".to_owned(), id.clone()));
        queue
            .submit(wijkradar_store::IncomingBatch {
                partner: "bench".into(),
                id: wijkradar_domain::BatchId::new(&id).expect("valid"),
                key_id: wijkradar_domain::PseudonymKeyId::new("bench").expect("valid"),
                digest: [0; 32],
                signals: batch,
            })
            .await?;
        bar.inc(n as u64);
        left -= n;
        i += 1;
    }
    bar.finish_and_clear();
    // No audit log here: the batches' `U` records go, or the server would
    // write their entries at its start.
    queue.forget_unaudited(&ids).await?;
    drop(queue);
    writer.join();
    Ok(())
}
