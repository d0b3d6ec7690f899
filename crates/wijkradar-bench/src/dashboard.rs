//! `wijkradar-bench dashboard`: what the dashboard costs the server.
//!
//! 1. The wijk map of all of the Netherlands: every wijk's outline drawn
//!    as SVG paths (the simplified boundaries are read once, at first use;
//!    that is timed apart).
//! 2. A gemeente's buurt page (map, table, every period of 24 months of one
//!    measure) over HTTPS, on a store filled with random signals over its
//!    buurten, against the same table over gRPC with mutual TLS: the
//!    page's own cost is the difference.
//! 3. The page's weight with its stylesheet and script.

use std::time::Instant;

use wijkradar_dev::{DevSetup, HttpsClient};
use wijkradar_domain::{AreaCode, GemeenteCode, Hierarchy};
use wijkradar_map::Atlas;
use wijkradar_proto::v1 as pb;
use wijkradar_server::access::Role;

use crate::store::{fill_in_children, grid, percentile};

const ANALYST: &str = "bench-analyst";

pub async fn run(n: usize, g: GemeenteCode, pages: usize) -> anyhow::Result<()> {
    let hierarchy = Hierarchy::netherlands_2023();
    let name = hierarchy
        .name(AreaCode::Gemeente(g))
        .unwrap_or("?")
        .to_owned();
    println!(
        "Dashboard benchmark: {n} signals over the buurten of {name} ({g}), {pages} pages timed"
    );

    // 1. The national wijk map.
    let started = Instant::now();
    let atlas = Atlas::wijken();
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let codes: Vec<String> = hierarchy
        .gemeenten()
        .flat_map(|gm| hierarchy.wijken_of(gm).collect::<Vec<_>>())
        .map(|w| w.to_string())
        .collect();
    let mut draw_ms = Vec::new();
    let mut svg_bytes = 0;
    for i in 0..23 {
        let started = Instant::now();
        let drawing = atlas.draw(codes.iter().map(String::as_str), 800.0);
        svg_bytes = drawing
            .paths
            .iter()
            .map(|(c, d)| c.len() + d.len() + 40)
            .sum();
        std::hint::black_box(&drawing);
        if i >= 3 {
            draw_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    draw_ms.sort_by(f64::total_cmp);

    // 2. The gemeente's page on a filled store.
    let dir = tempfile::tempdir()?;
    let mut setup = DevSetup::create(dir.path(), &[(ANALYST, "Bench", Role::Analyst)])?
        .with_dashboard("127.0.0.1:0", ANALYST);
    std::fs::write(
        &setup.config.access,
        wijkradar_dev::access_entry(
            ANALYST,
            &wijkradar_dev::dev_oin(0),
            &[Role::Analyst],
            &[&g.to_string()],
        ),
    )?;
    setup.config.release.materialise_every_seconds = 0;
    fill_in_children(&setup, n, g)?;
    let server = wijkradar_server::start(&setup.config).await?;
    let dashboard = server.dashboard.as_ref().expect("dashboard on");
    let mut web = HttpsClient::to(dashboard.addr, &setup.pki_dir.join("ca.pem"));
    web.log_in(dashboard.login_url.as_deref().expect("a login link"))
        .await;
    let (_, _, types, months) = grid(g);
    let measure = types[0].to_string();
    let path = format!("/gemeente/{g}?maat={measure}&periode=maand&niveau=buurt");
    let mut page_ms = Vec::new();
    let mut html = Vec::new();
    for i in 0..pages + 3 {
        let started = Instant::now();
        let page = web.get(&path).await;
        anyhow::ensure!(page.status == 200, "the page answered {}", page.status);
        if i >= 3 {
            page_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        html = page.body;
    }
    // Baseline: the table the page shows, over gRPC with mutual TLS.
    let conn = setup.client_at(server.addr, ANALYST);
    let mut client = conn.query_client().await?;
    let request = pb::GetTableRequest {
        gemeente_code: g.to_string(),
        level: pb::AreaLevel::Buurt.into(),
        signal_types: vec![measure.clone()],
        from_month: months[0].to_string(),
        to_month: months[months.len() - 1].to_string(),
        period: pb::Period::Month.into(),
        layout: pb::TableLayout::Cells.into(),
        ..Default::default()
    };
    let mut table_ms = Vec::new();
    for i in 0..pages + 3 {
        let started = Instant::now();
        let answer = client.get_table(request.clone()).await?.into_inner();
        std::hint::black_box(answer.cells.len());
        if i >= 3 {
            table_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let css = web.get("/static/stijl.css").await.body.len();
    let js = web.get("/static/app.js").await.body.len();
    server.shutdown().await?;
    page_ms.sort_by(f64::total_cmp);
    table_ms.sort_by(f64::total_cmp);

    println!("| measurement | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| national wijk map, {} wijken drawn ({:.1} MB of paths; boundaries read once: {load_ms:.0} ms) | {:.1} ms | {:.1} ms |",
        codes.len(),
        svg_bytes as f64 / 1e6,
        percentile(&draw_ms, 0.5),
        percentile(&draw_ms, 0.99)
    );
    println!(
        "| {name}'s buurt page over HTTPS (map, table, 24 months of {measure}) | {:.1} ms | {:.1} ms |",
        percentile(&page_ms, 0.5),
        percentile(&page_ms, 0.99)
    );
    println!(
        "| the same table over gRPC + mTLS (baseline) | {:.1} ms | {:.1} ms |",
        percentile(&table_ms, 0.5),
        percentile(&table_ms, 0.99)
    );
    println!(
        "| ratio p50 page / table | {:.2} | |",
        percentile(&page_ms, 0.5) / percentile(&table_ms, 0.5)
    );
    println!(
        "| page weight: HTML {:.0} kB + CSS {:.1} kB + JS {:.1} kB = {:.0} kB | | |",
        html.len() as f64 / 1e3,
        css as f64 / 1e3,
        js as f64 / 1e3,
        (html.len() + css + js) as f64 / 1e3
    );
    Ok(())
}
