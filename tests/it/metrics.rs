//! Metrics for the operator (issue 19, point 4): a scrape of `/metrics`
//! after stored and refused batches and an alerts run counts them, with
//! latency histograms on explicit buckets and the gauges read at the
//! scrape; no label or value names an organisation, an area or a
//! pseudonym.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wijkradar_proto::v1 as pb;
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer, current_month};

use crate::{batch, pseudonym, submit};

/// `GET path` over plain HTTP/1.1: the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The samples of the exposition: `name{labels}` → value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn a_scrape_counts_batches_refusals_and_runs_without_naming_anyone() {
    let server = TestServer::start_with(|c| {
        c.metrics = Some(wijkradar_server::config::MetricsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
        });
    })
    .await;
    let addr = server.metrics().expect("metrics configured").addr;
    let month = current_month().plus(-1).to_string();
    // Two stored batches of 12 and 3 signals, then one refused: a signal
    // type the partner may not send.
    let stored = submit(
        server.channel(PARTNER_A).await,
        vec![
            batch("m-1", "huurachterstand", "BU00340101", &month, 1, 12),
            batch("m-2", "huurachterstand", "BU00340101", &month, 2, 3),
        ],
    )
    .await;
    assert!(stored.iter().all(|r| r.is_ok()), "{stored:?}");
    let refused = submit(
        server.channel(PARTNER_A).await,
        vec![batch("m-3", "nope", "BU00340101", &month, 3, 2)],
    )
    .await;
    assert!(refused[0].is_err());
    let mut q = server.query(ANALYST).await;
    q.get_alerts(pb::GetAlertsRequest {
        gemeente_code: "GM0034".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let s = samples(&body);
    let get = |name: &str| {
        *s.get(name)
            .unwrap_or_else(|| panic!("{name} in the scrape:\n{body}"))
    };
    assert_eq!(
        get(r#"wijkradar_batches_total{outcome="stored",code=""}"#),
        2.0
    );
    assert_eq!(
        get(r#"wijkradar_signals_total{outcome="stored",code=""}"#),
        15.0
    );
    assert_eq!(
        get(r#"wijkradar_batches_total{outcome="refused",code="InvalidArgument"}"#),
        1.0
    );
    assert_eq!(get("wijkradar_ingest_seconds_count"), 3.0);
    assert_eq!(get(r#"wijkradar_ingest_seconds_bucket{le="30.0"}"#), 3.0);
    assert_eq!(get("wijkradar_audit_append_seconds_count"), 2.0);
    assert_eq!(get("wijkradar_alerts_runs_total"), 1.0);
    assert_eq!(get("wijkradar_signals_stored"), 15.0);
    assert_eq!(get("wijkradar_ingest_queue_depth"), 0.0);
    assert!(get("wijkradar_store_bytes") > 0.0);
    assert!(get("wijkradar_audit_log_bytes") > 0.0);

    // Nothing of who or where: no organisation, area code, batch id or
    // pseudonym, in any label or line.
    for needle in [
        PARTNER_A,
        ANALYST,
        "GM0034",
        "BU0034",
        "WK0034",
        "m-1",
        "huurachterstand",
    ] {
        assert!(!body.contains(needle), "{needle} in the scrape");
    }
    for seed in 1..=3 {
        let p = hex::encode(pseudonym(seed, 0));
        assert!(!body.contains(&p[..12]), "a pseudonym in the scrape");
    }
    // Only /metrics is served.
    let (status, _) = http_get(addr, "/").await;
    assert!(status.contains("404"), "{status}");
}

/// The example configuration turns the listener on, on localhost.
#[test]
fn the_example_configuration_has_a_local_metrics_listener() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/server.example.toml"
    ))
    .unwrap();
    let config = wijkradar_server::ServerConfig::parse(&text).unwrap();
    let metrics = config.metrics.expect("a [metrics] section");
    assert!(metrics.listen.ip().is_loopback(), "{:?}", metrics.listen);
}
