//! Key changes (issue 17, point 4). When the partners move to a new epoch's
//! key, every household gets a new pseudonym. During the change's overlap
//! the agent sends each signal with its household's pseudonym under the
//! previous key too: the aggregator links the household across the change
//! (the derived indicators stay whole) and keeps a signal sent again under
//! the new key once. A change it cannot link is marked on every cell whose
//! months (or look-back) span it, never silently low.

use tonic::Code;
use wijkradar_proto::v1 as pb;
use wijkradar_tests::{ANALYST, PARTNER_A, PARTNER_B, TestServer, current_month};

use crate::{pseudonym, submit, table_request};

const BUURT: &str = "BU00340101";
/// The previous epoch's key; the new one is `crate::KEY_ID`.
const OLD_KEY: &str = "GM0034.2025.8899aabbccddeeff";

/// A batch under `key` of `signal_type` for `month`: one signal per
/// (pseudonym, pseudonym under the previous key, if sent).
fn batch(
    id: &str,
    key: &str,
    signal_type: &str,
    month: &str,
    households: &[(Vec<u8>, Vec<u8>)],
) -> pb::Batch {
    let overlap = households.iter().any(|(_, before)| !before.is_empty());
    pb::Batch {
        batch_id: id.into(),
        key_id: key.into(),
        previous_key_id: if overlap {
            OLD_KEY.into()
        } else {
            String::new()
        },
        signals: households
            .iter()
            .map(|(now, before)| pb::Signal {
                pseudonym: now.clone(),
                buurt_code: BUURT.into(),
                signal_type: signal_type.into(),
                month: month.into(),
                severity: None,
                household_pseudonym: Vec::new(),
                previous_epoch_pseudonym: before.clone(),
            })
            .collect(),
    }
}

/// The buurt's cell of `measure` in `month`.
async fn buurt_cell(server: &TestServer, measure: &str, month: &str) -> pb::Cell {
    let request = table_request(pb::AreaLevel::Buurt, &[measure], month, month);
    let answer = server
        .query(ANALYST)
        .await
        .get_table(request)
        .await
        .unwrap();
    answer
        .into_inner()
        .cells
        .into_iter()
        .find(|c| c.area_code == BUURT)
        .expect("the buurt's cell")
}

async fn send(server: &TestServer, partner: &str, batch: pb::Batch) {
    let acks = submit(server.channel(partner).await, vec![batch]).await;
    assert!(acks[0].is_ok(), "{acks:?}");
}

#[tokio::test]
async fn a_key_change_with_an_overlap_links_households_and_one_without_is_marked() {
    let server = TestServer::start().await;
    let (before, last_old, after) = (
        current_month().plus(-4).to_string(),
        current_month().plus(-3).to_string(),
        current_month().plus(-2).to_string(),
    );
    // 30 households in rent arrears under the old key, two months running.
    let old: Vec<Vec<u8>> = (0..30).map(|i| pseudonym(1, i)).collect();
    let new: Vec<Vec<u8>> = (0..30).map(|i| pseudonym(2, i)).collect();
    let under_old: Vec<_> = old.iter().map(|p| (p.clone(), Vec::new())).collect();
    for month in [&before, &last_old] {
        let b = batch(
            &format!("rent-{month}"),
            OLD_KEY,
            "huurachterstand",
            month,
            &under_old,
        );
        send(&server, PARTNER_A, b).await;
    }
    let rent = buurt_cell(&server, "huurachterstand", &last_old).await;
    assert_eq!(rent.release_version, 1);
    // After the change: the same households in energy arrears under the new
    // key, with their pseudonyms under the old one (the overlap).
    let overlap: Vec<_> = new.iter().cloned().zip(old.iter().cloned()).collect();
    let b = batch(
        "energy",
        crate::KEY_ID,
        "energieachterstand",
        &after,
        &overlap,
    );
    send(&server, PARTNER_B, b).await;
    // Households with two types in six months: all 30, linked across the
    // change; without the link it would be none.
    let several = buurt_cell(&server, "meerdere_signaaltypen_6m", &after).await;
    let near = |c: &pb::Cell, truth: u64| c.value.is_some_and(|v| v.abs_diff(truth) <= 4);
    assert!(near(&several, 30), "{several:?}");
    assert!(!several.crosses_key_change, "{several:?}");
    // The rent arrears sent again under the new key, as an agent does with
    // its export's history: kept once, the month's table unchanged.
    let b = batch(
        "rent-again",
        crate::KEY_ID,
        "huurachterstand",
        &last_old,
        &overlap,
    );
    send(&server, PARTNER_A, b).await;
    assert_eq!(
        buurt_cell(&server, "huurachterstand", &last_old).await,
        rent
    );

    // Ten more households under the new key without the overlap: the
    // change is no longer linked for what looks back over it.
    let unlinked: Vec<_> = (0..10).map(|i| (pseudonym(3, i), Vec::new())).collect();
    let b = batch(
        "energy-more",
        crate::KEY_ID,
        "energieachterstand",
        &after,
        &unlinked,
    );
    send(&server, PARTNER_B, b).await;
    let several = buurt_cell(&server, "meerdere_signaaltypen_6m", &after).await;
    assert!(several.crosses_key_change, "{several:?}");
    // A signal type's month under one key only is not marked.
    let energy = buurt_cell(&server, "energieachterstand", &after).await;
    assert!(!energy.crosses_key_change, "{energy:?}");
    let rent = buurt_cell(&server, "huurachterstand", &last_old).await;
    assert!(!rent.crosses_key_change, "{rent:?}");
}

#[tokio::test]
async fn previous_epoch_pseudonyms_are_refused_by_field_when_they_do_not_fit() {
    let server = TestServer::start().await;
    let month = current_month().plus(-1).to_string();
    let one = vec![(pseudonym(1, 0), pseudonym(2, 0))];
    let refused = |mut b: pb::Batch, field: &'static str| {
        let server = &server;
        async move {
            b.batch_id = format!("bad-{field}");
            let acks = submit(server.channel(PARTNER_A).await, vec![b]).await;
            let status = acks[0].as_ref().expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(field), "{field}: {status:?}");
        }
    };
    // A previous pseudonym without the previous key it was made with.
    let mut b = batch("x", crate::KEY_ID, "huurachterstand", &month, &one);
    b.previous_key_id.clear();
    refused(b, "batch.signals[0].previous_epoch_pseudonym").await;
    // A previous key of another domain, or the batch's own key.
    let mut b = batch("x", crate::KEY_ID, "huurachterstand", &month, &one);
    b.previous_key_id = "GM0363.2025.8899aabbccddeeff".into();
    refused(b, "batch.previous_key_id").await;
    let mut b = batch("x", crate::KEY_ID, "huurachterstand", &month, &one);
    b.previous_key_id = crate::KEY_ID.into();
    refused(b, "batch.previous_key_id").await;
    // A previous pseudonym of the wrong length.
    let short = vec![(pseudonym(1, 0), vec![7; 31])];
    let b = batch("x", crate::KEY_ID, "huurachterstand", &month, &short);
    refused(b, "batch.signals[0].previous_epoch_pseudonym").await;
}
