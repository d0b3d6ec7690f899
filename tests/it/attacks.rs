//! The attack suite of docs/privacy.md on the real server, on synthetic data
//! whose truth the test knows: averaging repeated queries and equivalent
//! phrasings of one query (I2), and small counts in logs and error messages
//! (I8). Differencing across levels is in `pipeline.rs` (I6 over the API),
//! across periods and versions in `pipeline.rs` too (the linked audit), and
//! the one-household difference (I7) is measured in
//! `crates/wijkradar-release/tests/differencing.rs`.

use std::collections::{BTreeMap, BTreeSet};

use wijkradar_proto::v1 as pb;
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer};

use crate::{batch, captured_logs, submit, table_request as request};

/// The buurten of Almere the data goes to, with how many households each
/// has per month: from 1 (far below k) to 39.
fn households_of(buurt: usize) -> u64 {
    1 + 2 * buurt as u64
}

/// The first 20 buurten of Almere.
fn buurten() -> Vec<String> {
    let g = "GM0034".parse().unwrap();
    wijkradar_domain::Hierarchy::netherlands_2023()
        .buurten_of(g)
        .take(20)
        .map(|b| b.to_string())
        .collect()
}

async fn fill(server: &TestServer) {
    let mut batches = Vec::new();
    for month in ["2024-03", "2024-04"] {
        for (i, b) in buurten().iter().enumerate() {
            for t in ["huurachterstand", "energieachterstand"] {
                let id = format!("{month}-{b}-{t}");
                batches.push(batch(&id, t, b, month, i as u64, households_of(i)));
            }
        }
    }
    let acks = submit(server.channel(PARTNER_A).await, batches).await;
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");
}

/// (area, type, month) → (status, value) of every cell of an answer.
type Answer = BTreeMap<(String, String, String), (i32, Option<u64>)>;

fn answer_of(resp: pb::GetTableResponse) -> Answer {
    let cells = match resp.columns {
        Some(columns) => columns.cells(),
        None => resp.cells,
    };
    cells
        .into_iter()
        .map(|c| ((c.area_code, c.signal_type, c.month), (c.status, c.value)))
        .collect()
}

/// I2 against an analyst who asks the same table again and again, and in
/// every equivalent way the API allows, to average the noise away: every
/// phrasing gives each cell one and the same released value, so the mean of
/// any number of answers is that value, and the noise stays.
#[tokio::test]
async fn repeated_and_rephrased_queries_give_one_answer_to_average() {
    let mut server = TestServer::start().await;
    fill(&server).await;
    let mut q = server.query(ANALYST).await;
    let types = ["huurachterstand", "energieachterstand"];
    let mut seen: BTreeMap<_, BTreeSet<(i32, Option<u64>)>> = BTreeMap::new();
    let mut record = |answer: Answer| {
        for (cell, value) in answer {
            seen.entry(cell).or_default().insert(value);
        }
    };
    let buurt = pb::AreaLevel::Buurt;
    // The same question 30 times.
    for _ in 0..30 {
        let r = request(buurt, &types, "2024-03", "2024-04");
        record(answer_of(q.get_table(r).await.unwrap().into_inner()));
    }
    // Rephrased: one month at a time, a wider range, the types one by one
    // and in the other order, the compact layout.
    let mut phrasings = vec![
        request(buurt, &types, "2024-03", "2024-03"),
        request(buurt, &types, "2024-04", "2024-04"),
        request(buurt, &types, "2024-01", "2024-06"),
        request(
            buurt,
            &["energieachterstand", "huurachterstand"],
            "2024-03",
            "2024-04",
        ),
        request(buurt, &["huurachterstand"], "2024-03", "2024-04"),
        request(buurt, &["energieachterstand"], "2024-04", "2024-05"),
    ];
    let mut columns = request(buurt, &types, "2024-03", "2024-04");
    columns.layout = pb::TableLayout::Columns.into();
    phrasings.push(columns);
    for r in phrasings {
        record(answer_of(q.get_table(r).await.unwrap().into_inner()));
    }
    // And after a restart.
    server.restart().await;
    let mut q = server.query(ANALYST).await;
    record(answer_of(
        q.get_table(request(buurt, &types, "2024-03", "2024-04"))
            .await
            .unwrap()
            .into_inner(),
    ));

    let released = pb::CellStatus::Released as i32;
    let mut noisy = 0;
    for (i, b) in buurten().iter().enumerate() {
        for t in types {
            for m in ["2024-03", "2024-04"] {
                let values = &seen[&(b.to_string(), t.to_string(), m.to_string())];
                assert_eq!(values.len(), 1, "{b} {t} {m}: {values:?}");
                let (status, value) = *values.iter().next().unwrap();
                if status == released {
                    noisy += usize::from(value != Some(households_of(i)));
                }
            }
        }
    }
    // The one answer is perturbed: averaging it does not find the truth.
    assert!(noisy > 0, "some released cells differ from their truth");
}

/// I8 on the real server: no log line at any level carries a count of
/// households below k next to a count-like name, nor does any error
/// message, after small and refused batches and queries of small cells.
#[tokio::test]
async fn no_small_count_in_logs_or_error_messages() {
    let logs = captured_logs();
    let server = TestServer::start().await;
    fill(&server).await;
    let channel = server.channel(PARTNER_A).await;
    // A batch of 3 and one refused at its fourth signal (of 7).
    let buurten = buurten();
    let mut refused = batch("fout", "huurachterstand", &buurten[0], "2024-05", 99, 7);
    refused.signals[3].buurt_code = "BU99999999".into();
    let small = batch("klein", "huurachterstand", &buurten[1], "2024-05", 98, 3);
    let acks = submit(channel, vec![small, refused]).await;
    let errors: Vec<String> = acks
        .iter()
        .filter_map(|a| a.as_ref().err().map(|s| s.message().to_owned()))
        .collect();
    assert_eq!(errors.len(), 1, "{acks:?}");
    let mut q = server.query(ANALYST).await;
    let r = request(
        pb::AreaLevel::Buurt,
        &["huurachterstand"],
        "2024-03",
        "2024-05",
    );
    let table = q.get_table(r).await.unwrap().into_inner();
    assert!(
        table
            .cells
            .iter()
            .any(|c| c.status == pb::CellStatus::Suppressed as i32),
        "small cells were asked for"
    );
    let alerts = q
        .get_alerts(pb::GetAlertsRequest {
            gemeente_code: "GM0034".into(),
            month: "2024-04".into(),
            signal_types: vec![],
        })
        .await
        .unwrap();
    drop(alerts);

    let k = server.setup.config.release.k.k() as u64;
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged.contains("batch acknowledged"),
        "the logs were captured"
    );
    let counted = [
        "signals",
        "households",
        "count",
        "stored",
        "value",
        "total",
        "cells",
        "n",
    ];
    for line in logged.lines().chain(errors.iter().map(String::as_str)) {
        for word in line.split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}') {
            let Some((name, number)) = word.split_once('=').or_else(|| word.split_once(':')) else {
                continue;
            };
            let name = name.trim().trim_matches('"');
            if let Ok(n) = number.trim().trim_matches('"').parse::<u64>() {
                assert!(
                    !(counted.contains(&name) && (1..k).contains(&n)),
                    "a small count in: {line}"
                );
            }
        }
        for unit in ["signals", "households", "signalen", "huishoudens"] {
            for n in 1..k {
                assert!(
                    !line.contains(&format!(" {n} {unit}")),
                    "a small count in: {line}"
                );
            }
        }
    }
}
