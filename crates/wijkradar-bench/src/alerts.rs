//! `wijkradar-bench alerts`: an alerts query for one gemeente on a store
//! holding 36 months of signals for all of the Netherlands, over gRPC with
//! mutual TLS. The first query of the month also computes what the pooled
//! method borrows from every gemeente (each signal type's summed series and
//! shared overdispersion, `monitor::Shared`); later ones reuse it. The
//! baseline in the same run is reading the gemeente's own counts from the store.

use rand::SeedableRng;
use wijkradar_dev::DevSetup;
use wijkradar_domain::{BuurtCode, GemeenteCode, Hierarchy, Month, SignalTypeName};
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::ServerKey;
use wijkradar_server::access::Role;

use crate::current_month;

pub async fn run(
    signals: usize,
    types: usize,
    queries: usize,
    gemeente_signals: usize,
    derived: bool,
) -> anyhow::Result<()> {
    let hierarchy = Hierarchy::netherlands_2023();
    let buurten: Vec<BuurtCode> = hierarchy.buurten().collect();
    let catalogue = wijkradar_domain::Catalogue::dutch_defaults();
    let types: Vec<SignalTypeName> = catalogue
        .types()
        .iter()
        .take(types)
        .map(|t| t.name.clone())
        .collect();
    let last = current_month().plus(-1);
    let months: Vec<Month> = last.plus(-35).through(last).collect();
    let almere: GemeenteCode = "GM0034".parse().expect("valid");
    println!(
        "Alerts benchmark: {signals} signals over all {} buurten of the Netherlands ({} gemeenten) × {} types × {} months; alerts for Almere (GM0034), {}",
        buurten.len(),
        hierarchy.gemeenten().count(),
        types.len(),
        months.len(),
        types
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dir = tempfile::tempdir()?;
    let mut setup = DevSetup::create(dir.path(), &[("bench-analyst", "Bench", Role::Analyst)])?;
    setup.config.release.materialise_every_seconds = 0;
    setup.config.retention.purge_every_seconds = 0;
    let key = ServerKey::load(&setup.config.keys.server_key)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    crate::release::fill(&setup, &key, &mut rng, &buurten, &types, &months, signals).await?;
    if gemeente_signals > 0 {
        println!("  and {gemeente_signals} signals in Almere alone (every type, 24 months)");
        crate::store::fill_in_children(&setup, gemeente_signals, almere)?;
    }
    let started = std::time::Instant::now();

    let server = wijkradar_server::start(&setup.config).await?;
    println!("  server ready in {:.1} s", started.elapsed().as_secs_f64());
    let read_own = || -> anyhow::Result<f64> {
        let started = std::time::Instant::now();
        let mut cells = 0;
        for t in &types {
            for &m in &months {
                cells += server.store().buurt_counts(t, m, almere)?.len();
            }
        }
        std::hint::black_box(cells);
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    };
    let conn = setup.client_at(server.addr, "bench-analyst");
    let mut client = conn.query_client().await?;
    let request = || pb::GetAlertsRequest {
        gemeente_code: almere.to_string(),
        month: last.to_string(),
        signal_types: types
            .iter()
            .map(|t| t.to_string())
            .chain(
                derived
                    .then_some(wijkradar_domain::derived::Derived::ALL)
                    .into_iter()
                    .flatten()
                    .map(|d| d.name().to_owned()),
            )
            .collect(),
    };
    let own_first = read_own()?;
    let (first, answer) = timed(&mut client, request()).await?;
    let mut later = Vec::with_capacity(queries);
    let mut own = Vec::with_capacity(queries);
    for _ in 0..queries {
        own.push(read_own()?);
        later.push(timed(&mut client, request()).await?.0);
    }
    server.shutdown().await?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (later_median, own_median) = (median(&mut later), median(&mut own));
    println!(
        "  {} series tested, {} alerts",
        answer.series_tested,
        answer.alerts.len()
    );
    println!("| measurement | time |");
    println!("|---|---|");
    println!(
        "| reading Almere's own counts from the store (baseline), first / median of {queries} | {own_first:.1} ms / {own_median:.1} ms |"
    );
    println!(
        "| first alerts query of the month (computes the shared curve and overdispersion from every gemeente{}) | {first:.0} ms ({:.0}× the baseline's median) |",
        if derived {
            ", the derived indicators' from every gemeente's households"
        } else {
            ""
        },
        first / own_median
    );
    println!(
        "| later alerts queries, median of {queries} | {later_median:.1} ms ({:.1}× the baseline's median) |",
        later_median / own_median
    );
    Ok(())
}

/// One alerts query and its time in milliseconds.
async fn timed(
    client: &mut pb::query_service_client::QueryServiceClient<tonic::transport::Channel>,
    request: pb::GetAlertsRequest,
) -> anyhow::Result<(f64, pb::GetAlertsResponse)> {
    let started = std::time::Instant::now();
    let answer = client.get_alerts(request).await?.into_inner();
    Ok((started.elapsed().as_secs_f64() * 1000.0, answer))
}
