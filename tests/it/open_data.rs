//! Open data with differential privacy (issue 20, point 5): quarters and
//! years at wijk and gemeente level, every cell released with discrete
//! Laplace noise, each release made once on the gemeente's yearly budget
//! per measure, and refused once that budget is spent.

use tonic::Code;
use wijkradar_proto::v1 as pb;
use wijkradar_server::config::OpenDataConfig;
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer};

use crate::{audit_log, bad_fields, batch, submit, table_request};

/// A wijk of Almere with many households in rent arrears, and one with a
/// few: under cell keys the second is "<10".
const BIG: &str = "BU00340101";
const SMALL: &str = "BU00340201";

fn quarter(first: &str, open_data: bool) -> pb::GetTableRequest {
    pb::GetTableRequest {
        period: pb::Period::Quarter.into(),
        open_data,
        ..table_request(pb::AreaLevel::Wijk, &["huurachterstand"], first, first)
    }
}

async fn fill(server: &TestServer) {
    let months = ["2025-02", "2025-05", "2025-08", "2025-11"];
    let mut batches = Vec::new();
    for (i, month) in months.iter().enumerate() {
        let i = i as u64;
        batches.push(batch(
            &format!("big-{i}"),
            "huurachterstand",
            BIG,
            month,
            10 + i,
            40,
        ));
        batches.push(batch(
            &format!("small-{i}"),
            "huurachterstand",
            SMALL,
            month,
            20 + i,
            3,
        ));
    }
    let acks = submit(server.channel(PARTNER_A).await, batches).await;
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");
}

#[tokio::test]
async fn open_data_releases_every_cell_once_within_the_yearly_budget() {
    let server = TestServer::start_with(|c| {
        c.open_data = Some(OpenDataConfig {
            epsilon_per_release: 0.5,
            budget_per_year: 1.0,
        })
    })
    .await;
    fill(&server).await;
    let mut q = server.query(ANALYST).await;
    let small_wijk = "WK003402";
    // Under cell keys the small wijk is suppressed.
    let guarded = q
        .get_table(quarter("2025-01", false))
        .await
        .unwrap()
        .into_inner();
    let cell = |r: &pb::GetTableResponse, area: &str| {
        r.cells
            .iter()
            .find(|c| c.area_code == area)
            .cloned()
            .expect("the area's cell")
    };
    assert_eq!(
        cell(&guarded, small_wijk).status(),
        pb::CellStatus::Suppressed
    );
    // As open data every wijk and the gemeente has a value; no threshold.
    let open = q
        .get_table(quarter("2025-01", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((open.k, open.open_data_epsilon), (0, 0.5));
    assert!(!open.cells.is_empty());
    for c in &open.cells {
        assert_eq!(c.status(), pb::CellStatus::Released, "{c:?}");
        assert!(c.value.is_some(), "{c:?}");
    }
    // The noise has scale 4: the big wijk's 40 households stay near 40.
    let big = cell(&open, "WK003401").value.unwrap();
    assert!(big.abs_diff(40) <= 40, "{big}");
    // Made once: asked again, the same values.
    let again = q
        .get_table(quarter("2025-01", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.cells, open.cells);
    // The budget (1.0) holds two releases of ε 0.5: the second quarter is
    // made, the third refused with the field and why.
    q.get_table(quarter("2025-04", true)).await.unwrap();
    let refused = q.get_table(quarter("2025-07", true)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(bad_fields(&refused), ["open_data"]);
    assert!(refused.message().contains("budget"), "{refused:?}");
    // What was released stays available.
    let first = q
        .get_table(quarter("2025-01", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.cells, open.cells);
    assert_eq!(audit_log(&server).matches("open data (ε 0.5)").count(), 2);
    // A type no partner ever sent holds no household: zeros, the same each
    // time, spending nothing.
    let mut none = quarter("2025-01", true);
    none.signal_types = vec!["drinkwaterachterstand".into()];
    let zeros = q.get_table(none.clone()).await.unwrap().into_inner();
    assert!(zeros.cells.iter().all(|c| c.value == Some(0)), "{zeros:?}");
    assert_eq!(
        q.get_table(none).await.unwrap().into_inner().cells,
        zeros.cells
    );

    // Buurten and months are not open data.
    let mut buurt = quarter("2025-01", true);
    buurt.level = pb::AreaLevel::Buurt.into();
    let e = q.get_table(buurt).await.unwrap_err();
    assert_eq!(
        (e.code(), bad_fields(&e)),
        (Code::InvalidArgument, vec!["level".to_owned()])
    );
    let mut month = quarter("2025-01", true);
    month.period = pb::Period::Month.into();
    let e = q.get_table(month).await.unwrap_err();
    assert_eq!(
        (e.code(), bad_fields(&e)),
        (Code::InvalidArgument, vec!["period".to_owned()])
    );
}

#[tokio::test]
async fn open_data_is_refused_where_it_is_not_configured() {
    let server = TestServer::start().await;
    let e = server
        .query(ANALYST)
        .await
        .get_table(quarter("2025-01", true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("[open_data]"), "{e:?}");
}
