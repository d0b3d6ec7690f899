//! I8 and I9 of docs/privacy.md on the real system: after partners submit through
//! the agent and an analyst queries, neither the store's files nor any log
//! line holds an address, a postcode, a partner pseudonym; nor does any log
//! line hold a server pseudonym.

use crate::captured_logs;
use wijkradar_agent::Pc6Table;
use wijkradar_agent::normalise::household_key;
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::{PartnerKey, ServerKey};
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer, all_bytes, contains, read_simple_export};

use crate::table_request;

/// Every log line of this test process, at every level.
/// A pseudonym as it could be written: raw, as hex, and as a logged byte
/// array.
fn as_written(what: &str, bytes: &[u8]) -> [(String, Vec<u8>); 3] {
    [
        (what.to_owned(), bytes.to_vec()),
        (format!("{what} (hex)"), hex::encode(bytes).into_bytes()),
        (format!("{what} (debug)"), format!("{bytes:?}").into_bytes()),
    ]
}

#[tokio::test]
async fn no_identifier_or_pseudonym_reaches_the_store_files_or_the_logs() {
    let logs = captured_logs();
    let server = TestServer::start().await;
    let partner_key = PartnerKey::load(&server.setup.partner_key).unwrap();
    let server_key = ServerKey::load(&server.setup.config.keys.server_key).unwrap();

    // 30 households in each of three postcodes of Almere, with additions.
    let postcodes = ["1316XA", "1316XB", "1316XC"];
    let buurt = "00340101";
    let mut table = String::from("PC6,Huisnummer,Buurt2023,Wijk2023,Gem2023\n");
    let mut export = String::from("postcode,huisnummer,toevoeging,signaaltype,maand\n");
    for pc in postcodes {
        for n in 1..=30 {
            table.push_str(&format!(
                "{pc},{n},{buurt},{},{}\n",
                &buurt[..6],
                &buurt[..4]
            ));
            export.push_str(&format!(
                "{} {},{n},-b,huurachterstand,2024-06\n",
                &pc[..4],
                pc[4..].to_lowercase()
            ));
        }
    }
    let table = Pc6Table::from_reader(table.as_bytes()).unwrap();
    let (_, signals) = read_simple_export(&export, &table, &partner_key);
    assert_eq!(signals.len(), 90);
    wijkradar_agent::submit(
        server.channel(PARTNER_A).await,
        signals,
        partner_key.id().as_str(),
        25,
        |_| {},
    )
    .await
    .unwrap();
    // The analyst's view, so query logging runs too.
    let mut q = server.query(ANALYST).await;
    let answer = q
        .get_table(table_request(
            pb::AreaLevel::Buurt,
            &["huurachterstand"],
            "2024-06",
            "2024-06",
        ))
        .await
        .unwrap();
    assert!(
        answer.into_inner().cells.iter().any(|c| c.value.is_some()),
        "the data arrived"
    );

    // What must never appear: raw, as hex, and as a logged byte array.
    let mut identifying: Vec<(String, Vec<u8>)> = Vec::new();
    let mut server_side: Vec<(String, Vec<u8>)> = Vec::new();
    for pc in postcodes {
        identifying.push((format!("postcode {pc}"), pc.as_bytes().to_vec()));
        identifying.push((
            format!("postcode {pc} spaced"),
            format!("{} {}", &pc[..4], &pc[4..]).into_bytes(),
        ));
        for n in 1..=30 {
            let address = household_key(pc.as_bytes().try_into().unwrap(), n, "B");
            let p = partner_key.pseudonymise(address.as_bytes());
            identifying.push((format!("address {address}"), address.clone().into_bytes()));
            identifying.extend(as_written(
                &format!("partner pseudonym of {address}"),
                p.as_bytes(),
            ));
            let s = server_key.rekey(&p);
            server_side.extend(as_written(
                &format!("server pseudonym of {address}"),
                s.as_bytes(),
            ));
        }
    }

    // I9: the store's files hold none of what identifies, and not even the
    // server pseudonyms: the store keeps them only sealed under a secret per
    // (type, month), which retention erases.
    let stored = all_bytes(&server.setup.config.data_dir);
    assert!(
        stored.len() > 10_000,
        "the store has data: {} bytes",
        stored.len()
    );
    for (what, bytes) in &identifying {
        assert!(
            !contains(&stored, bytes),
            "the store's files hold the {what}"
        );
    }
    for (what, bytes) in &server_side {
        assert!(
            !contains(&stored, bytes),
            "the store's files hold the {what}"
        );
    }
    // The scan sees what is stored in the clear (the partner key's id, with
    // its count of signals), so it would see the others.
    assert!(
        contains(&stored, partner_key.id().as_str().as_bytes()),
        "the scan sees stored keys"
    );

    // I8: no log line holds any of them.
    let logged = logs.lock().unwrap().clone();
    assert!(
        contains(&logged, b"batch acknowledged"),
        "the logs were captured"
    );
    // Every audited event is in the log too, with the fields the BIO
    // expects: who, what, on what, with what result (the line has the time).
    let text = String::from_utf8_lossy(&logged);
    assert!(
        text.lines().any(|l| l.contains("audited")
            && l.contains(&format!("who={PARTNER_A}"))
            && l.contains("what=\"Submit\"")
            && l.contains("result=\"stored\"")
            && l.contains("object=batch ")),
        "a BIO line for a stored batch"
    );
    for (what, bytes) in identifying.iter().chain(&server_side) {
        assert!(!contains(&logged, bytes), "a log line holds the {what}");
    }
}

/// A BSN that passes the eleven-test, made from `i`.
fn bsn(i: u32) -> String {
    let mut base = 300_000_000 + u64::from(i) * 100;
    loop {
        let s = format!("{base:09}");
        let d: Vec<i64> = s.bytes().map(|b| i64::from(b - b'0')).collect();
        let check = (0..8).map(|k| (9 - k as i64) * d[k]).sum::<i64>() % 11;
        if check < 10 {
            return format!("{}{check}", &s[..8]);
        }
        base += 10;
    }
}

/// Issue 3, point 7: the agent on a person-based (BSN) export, through its
/// outbox to the aggregator. Neither what the agent keeps and sends (its
/// outbox), nor the store's files, nor any log line holds a BSN, a postcode
/// or an address; the store and logs hold no partner pseudonym either.
#[tokio::test]
async fn a_bsn_export_leaves_no_bsn_or_address_in_outbox_store_or_logs() {
    use wijkradar_agent::run::{prepare, send_pending};
    use wijkradar_agent::{Outbox, PartnerConfig, outbox::Import};

    let logs = captured_logs();
    let server = TestServer::start().await;
    let partner_key = PartnerKey::load(&server.setup.partner_key).unwrap();
    let work = tempfile::tempdir().unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/partners/leerplicht.toml"
    );
    let config = PartnerConfig::load(std::path::Path::new(example)).unwrap();

    let postcodes = ["1316YA", "1316YB"];
    let mut table = String::from("PC6,Huisnummer,Buurt2023,Wijk2023,Gem2023\n");
    let mut export = String::from(
        "BSN leerling;Postcode;Huisnummer;Toevoeging;Datum melding;Soort verzuim;School\n",
    );
    let mut pupils = Vec::new();
    for (p, pc) in postcodes.iter().enumerate() {
        for n in 1..=20u32 {
            table.push_str(&format!("{pc},{n},00340101,003401,0034\n"));
            let b = bsn(p as u32 * 100 + n);
            export.push_str(&format!(
                "{b};{} {};{n};;{n}-3-2025;Ongeoorloofd;Basisschool De Regenboog\n",
                &pc[..4],
                &pc[4..]
            ));
            pupils.push((b, *pc, n));
        }
    }
    let pc6 = Pc6Table::from_reader(table.as_bytes()).unwrap();
    let export_path = work.path().join("verzuim.csv");
    std::fs::write(&export_path, &export).unwrap();
    let rules = config.rules(
        &pc6,
        &partner_key,
        wijkradar_domain::Month::new(2026, 1).unwrap(),
    );
    let prepared = prepare(&export_path, &rules, 7, |_| {}).unwrap();
    assert_eq!(prepared.summary.signals(), 40);
    assert!(prepared.summary.rejects.is_empty());
    let outbox_dir = work.path().join("outbox");
    let outbox = Outbox::open(&outbox_dir).unwrap();
    let record = Import {
        at: 0,
        file_name: "verzuim.csv".into(),
        rows: 40,
        signals: 40,
        batches: prepared.batches.len() as u64,
        key_id: partner_key.id().to_string(),
    };
    outbox
        .import(&prepared.digest, &record, &prepared.batches)
        .unwrap();
    let sent = send_pending(&outbox, server.channel(PARTNER_A).await, |_| {})
        .await
        .unwrap();
    assert_eq!((sent.signals, sent.stored), (40, 6));
    drop(outbox);

    let mut identifying: Vec<(String, Vec<u8>)> = Vec::new();
    let mut partner_pseudonyms: Vec<(String, Vec<u8>)> = Vec::new();
    for (b, pc, n) in &pupils {
        identifying.push((format!("BSN {b}"), b.clone().into_bytes()));
        identifying.push((
            format!("person key of {b}"),
            format!("bsn|{b}").into_bytes(),
        ));
        identifying.push((
            format!("address {pc} {n}"),
            household_key(pc.as_bytes().try_into().unwrap(), *n, "").into_bytes(),
        ));
        let p = partner_key.pseudonymise(format!("bsn|{b}").as_bytes());
        partner_pseudonyms.extend(as_written(
            &format!("partner pseudonym of {b}"),
            p.as_bytes(),
        ));
    }
    for pc in postcodes {
        identifying.push((format!("postcode {pc}"), pc.as_bytes().to_vec()));
        identifying.push((
            format!("postcode {pc} spaced"),
            format!("{} {}", &pc[..4], &pc[4..]).into_bytes(),
        ));
    }

    // What the agent kept and sent: pseudonyms, never an identifier. The
    // scan sees the pseudonyms it holds by design, so it can see the rest.
    let kept = all_bytes(&outbox_dir);
    for (what, bytes) in &identifying {
        assert!(!contains(&kept, bytes), "the outbox holds the {what}");
    }
    assert!(
        partner_pseudonyms.iter().any(|(_, b)| contains(&kept, b)),
        "the scan sees the outbox's pseudonyms"
    );
    // What the aggregator stored and logged.
    let stored = all_bytes(&server.setup.config.data_dir);
    let logged = logs.lock().unwrap().clone();
    for (what, bytes) in identifying.iter().chain(&partner_pseudonyms) {
        assert!(
            !contains(&stored, bytes),
            "the store's files hold the {what}"
        );
        assert!(!contains(&logged, bytes), "a log line holds the {what}");
    }
}
