//! Person signals linked per household (issue 17, point 3): a health
//! insurer's signals are about persons (pseudonyms of their BSN) and carry
//! the household's pseudonym (of the address) too. The type's own table
//! counts persons; the derived indicators count households, linking the
//! persons' signals with the housing corporation's signal of the same
//! address. Without the household pseudonym (BSN only) nothing links.

use wijkradar_proto::v1 as pb;
use wijkradar_tests::{ANALYST, PARTNER_A, PARTNER_B, TestServer, current_month};

use crate::{cells, pseudonym, submit, table_request};

const BUURT: &str = "BU00340101";

/// A batch of `signal_type` for `month`: one signal per (person, household).
fn batch(id: &str, signal_type: &str, month: &str, people: &[(Vec<u8>, Vec<u8>)]) -> pb::Batch {
    pb::Batch {
        batch_id: id.into(),
        key_id: crate::KEY_ID.into(),
        previous_key_id: String::new(),
        signals: people
            .iter()
            .map(|(person, household)| pb::Signal {
                pseudonym: person.clone(),
                buurt_code: BUURT.into(),
                signal_type: signal_type.into(),
                month: month.into(),
                severity: None,
                household_pseudonym: household.clone(),
                previous_epoch_pseudonym: Vec::new(),
            })
            .collect(),
    }
}

/// The released value of one cell of Almere's buurt `BUURT` for `month`.
async fn buurt_value(server: &TestServer, measure: &str, month: &str) -> Option<u64> {
    let answer = server
        .query(ANALYST)
        .await
        .get_table(table_request(
            pb::AreaLevel::Buurt,
            &[measure],
            month,
            month,
        ))
        .await
        .unwrap()
        .into_inner();
    *cells(&answer)
        .get(&(BUURT.to_owned(), measure.to_owned(), month.to_owned()))
        .expect("the buurt's cell")
}

#[tokio::test]
async fn persons_count_per_person_and_link_per_household() {
    let server = TestServer::start().await;
    // The BSN-only month first: the linked month's six-month window then
    // holds it too, and adds nothing to it.
    let (bsn_only_month, linked_month) = (
        current_month().plus(-3).to_string(),
        current_month().plus(-2).to_string(),
    );
    for (month, link, seed) in [(&linked_month, true, 0u64), (&bsn_only_month, false, 1000)] {
        // 30 households in rent arrears (their address pseudonyms).
        let households: Vec<Vec<u8>> = (0..30).map(|i| pseudonym(seed + 1, i)).collect();
        let rent: Vec<_> = households.iter().map(|h| (h.clone(), Vec::new())).collect();
        // Two insured persons in each of 15 of those households behind
        // on their health premium.
        let insured: Vec<_> = (0..30)
            .map(|i| {
                let household = if link {
                    households[i as usize / 2].clone()
                } else {
                    Vec::new()
                };
                (pseudonym(seed + 2, i), household)
            })
            .collect();
        let acks = submit(
            server.channel(PARTNER_A).await,
            vec![batch(
                &format!("rent-{month}"),
                "huurachterstand",
                month,
                &rent,
            )],
        )
        .await;
        assert!(acks[0].is_ok(), "{acks:?}");
        let acks = submit(
            server.channel(PARTNER_B).await,
            vec![batch(
                &format!("premium-{month}"),
                "zorgpremieachterstand",
                month,
                &insured,
            )],
        )
        .await;
        assert!(acks[0].is_ok(), "{acks:?}");
    }
    let near = |value: Option<u64>, truth: u64| value.is_some_and(|v| v.abs_diff(truth) <= 4);
    for month in [&linked_month, &bsn_only_month] {
        // The premium table counts the 30 persons, linked or not.
        let persons = buurt_value(&server, "zorgpremieachterstand", month).await;
        assert!(near(persons, 30), "{month}: {persons:?}");
        // Households with any payment arrear: 30 with the link (the
        // insured live in those households), 30 + 30 without.
        let any = buurt_value(&server, "betalingsachterstand", month).await;
        let truth = if month == &linked_month { 30 } else { 60 };
        assert!(near(any, truth), "{month}: {any:?} against {truth}");
    }
    // Households with two or more types: the 15 with an insured person,
    // only where the household pseudonym links them.
    let several = buurt_value(&server, "meerdere_signaaltypen_6m", &linked_month).await;
    assert!(near(several, 15), "{several:?}");
    let unlinked = buurt_value(&server, "meerdere_signaaltypen_6m", &bsn_only_month).await;
    assert_eq!(unlinked, None, "BSN only: nothing links (0 households)");

    // The household pseudonyms are kept sealed, like the persons': not in
    // the clear in the store's files, as sent or as the server keys them.
    let key = wijkradar_pseudonym::ServerKey::load(&server.setup.config.keys.server_key).unwrap();
    server.store().checksum().unwrap();
    let stored = wijkradar_tests::all_bytes(&server.setup.config.data_dir);
    for i in 0..15 {
        let sent = pseudonym(1, i);
        let partner = wijkradar_domain::PartnerPseudonym::try_from(sent.as_slice()).unwrap();
        let server_side = key.rekey(&partner);
        assert!(!wijkradar_tests::contains(&stored, &sent));
        assert!(!wijkradar_tests::contains(&stored, server_side.as_bytes()));
    }
}

/// A household pseudonym of the wrong length is refused with its field.
#[tokio::test]
async fn a_malformed_household_pseudonym_is_refused_by_field() {
    let server = TestServer::start().await;
    let month = current_month().plus(-1).to_string();
    let bad = batch(
        "bad",
        "zorgpremieachterstand",
        &month,
        &[(pseudonym(1, 1), vec![7; 5])],
    );
    let refused = submit(server.channel(PARTNER_B).await, vec![bad]).await;
    let status = refused[0].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        crate::bad_fields(status),
        vec!["batch.signals[0].household_pseudonym"]
    );
    assert_eq!(server.store().signal_count().unwrap(), 0);
}
