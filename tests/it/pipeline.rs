//! CSV in → agent → server → query out, and what must not change it:
//! a restart, a resent export, a second partner sending the same household.

use wijkradar_agent::normalise::household_key;
use wijkradar_agent::{Pc6Table, read_export};
use wijkradar_domain::{AreaLevel, BuurtCode, CellTotal, Hierarchy, Month};
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::{PartnerKey, ServerKey};
use wijkradar_release::Released;
use wijkradar_tests::{ANALYST, PARTNER_A, PARTNER_B, TestServer};

use crate::{Cells, cells, table_request};

struct Fixture {
    a: BuurtCode,
    b: BuurtCode,
    c: BuurtCode,
    table: Pc6Table,
}

/// Three real buurten of Almere: A and B in one wijk, C in another; a
/// postcode table mapping 1315AA → A, 1315AB → B, 1315AC → C.
fn fixture() -> Fixture {
    let h = Hierarchy::netherlands_2023();
    let almere = "GM0034".parse().unwrap();
    let wijken: Vec<_> = h.wijken_of(almere).collect();
    let mut first = h.buurten_of_wijk(wijken[0]);
    let (a, b) = (first.next().unwrap(), first.next().unwrap());
    let c = h.buurten_of_wijk(wijken[1]).next().unwrap();
    let mut csv = String::from("PC6;Huisnummer;Buurt2023;Wijk2023;Gem2023\n");
    for (pc, buurt) in [("1315AA", a), ("1315AB", b), ("1315AC", c)] {
        let code = buurt.to_string();
        for n in 1..=20 {
            csv.push_str(&format!(
                "{pc};{n};{};{};{}\n",
                &code[2..],
                &code[2..8],
                &code[2..6]
            ));
        }
    }
    Fixture {
        a,
        b,
        c,
        table: Pc6Table::from_reader(csv.as_bytes()).unwrap(),
    }
}

/// Partner A's export: 12 households in A (one written twice in another
/// spelling), 4 in B, 10 in C, with rent arrears in 2024-03; one row whose
/// address is not in the postcode table.
fn export_a() -> String {
    let mut csv = String::from("postcode,huisnummer,toevoeging,signaaltype,maand\n");
    for n in 1..=12 {
        csv.push_str(&format!("1315AA,{n},,huurachterstand,2024-03\n"));
    }
    csv.push_str("1315 aa,1,,huurachterstand,2024-03\n");
    for n in 1..=4 {
        csv.push_str(&format!("1315AB,{n},,huurachterstand,2024-03\n"));
    }
    for n in 1..=10 {
        csv.push_str(&format!("1315AC,{n},,huurachterstand,2024-03\n"));
    }
    csv.push_str("9999ZZ,1,,huurachterstand,2024-03\n");
    csv
}

async fn run_agent(
    server: &TestServer,
    partner: &str,
    export: &str,
    key: &PartnerKey,
    table: &Pc6Table,
) -> wijkradar_agent::SubmitReport {
    let export = read_export(export.as_bytes(), table, key, Month::new(2026, 1).unwrap()).unwrap();
    wijkradar_agent::submit(server.channel(partner).await, export.signals, 7, |_| {})
        .await
        .unwrap()
}

async fn table(server: &TestServer, level: pb::AreaLevel) -> Cells {
    let mut q = server.query(ANALYST).await;
    cells(
        &q.get_table(table_request(
            level,
            &["huurachterstand", "energieachterstand"],
            "2024-02",
            "2024-03",
        ))
        .await
        .unwrap()
        .into_inner(),
    )
}

/// Asserts `got` holds exactly the `expected` released values and
/// suppresses every other cell.
fn assert_released(got: &Cells, expected: &[(String, &str, &str, Option<u64>)]) {
    for ((area, t, m), value) in got {
        let want = expected
            .iter()
            .find(|e| &e.0 == area && e.1 == t && e.2 == m)
            .and_then(|e| e.3);
        assert_eq!(*value, want, "{area} {t} {m}");
    }
    for e in expected {
        assert!(
            got.contains_key(&(e.0.clone(), e.1.into(), e.2.into())),
            "missing cell {e:?}"
        );
    }
}

/// What the release rules give for a cell holding these households
/// (postcode, house number), worked out here from the keys, independently
/// of the server: partner pseudonym → server pseudonym → record key → cell
/// key → perturbation table → threshold.
fn expected_release(
    server: &TestServer,
    households: &[(&str, std::ops::RangeInclusive<u32>)],
) -> Option<u64> {
    let partner = PartnerKey::load(&server.setup.partner_key).unwrap();
    let server_key = ServerKey::load(&server.setup.config.keys.server_key).unwrap();
    let policy = server.setup.config.release.policy().unwrap();
    let mut total = CellTotal::default();
    for (pc, numbers) in households {
        for n in numbers.clone() {
            let address = household_key(pc.as_bytes().try_into().unwrap(), n, "");
            let p = server_key.rekey(&partner.pseudonymise(address.as_bytes()));
            total += CellTotal::one(server_key.record_key(&p));
        }
    }
    match policy.release(total) {
        Released::Value(v) => {
            assert!(
                v.abs_diff(total.households) <= 4,
                "I3: within D of the truth"
            );
            Some(v)
        }
        Released::Suppressed => None,
    }
}

#[tokio::test]
async fn csv_through_agent_and_server_gives_the_expected_protected_table() {
    let mut server = TestServer::start().await;
    let f = fixture();
    let key = PartnerKey::load(&server.setup.partner_key).unwrap();

    let export = read_export(
        export_a().as_bytes(),
        &f.table,
        &key,
        Month::new(2026, 1).unwrap(),
    )
    .unwrap();
    assert_eq!((export.rows, export.signals.len()), (28, 27));
    assert_eq!(export.rejects.len(), 1);
    assert_eq!(export.rejects[0].line, 29);
    assert_eq!(
        export.rejects[0].reason,
        "adres staat niet in de postcodetabel"
    );

    let report = run_agent(&server, PARTNER_A, &export_a(), &key, &f.table).await;
    assert_eq!(
        (report.batches, report.stored, report.already_stored),
        (4, 4, 0)
    );

    // Partner B knows household 1315AA 1 too, and 12 energy arrears in A.
    let mut export_b = String::from(
        "postcode;huisnummer;toevoeging;signaaltype;maand\n1315AA;1;;huurachterstand;2024-03\n",
    );
    for n in 1..=12 {
        export_b.push_str(&format!("1315aa;{n};;energieachterstand;2024-03\n"));
    }
    run_agent(&server, PARTNER_B, &export_b, &key, &f.table).await;

    let (a, b, c) = (f.a.to_string(), f.b.to_string(), f.c.to_string());
    let (wa, wc) = (f.a.wijk().to_string(), f.c.wijk().to_string());
    // The households of each cell; a cell holds each household once, however
    // often and by whom it was sent (I5).
    let in_a = ("1315AA", 1..=12);
    let in_b = ("1315AB", 1..=4);
    let in_c = ("1315AC", 1..=10);
    let rent = |households: &[(&str, std::ops::RangeInclusive<u32>)]| {
        expected_release(&server, households)
    };
    let buurt_expected = [
        (
            a.clone(),
            "huurachterstand",
            "2024-03",
            rent(std::slice::from_ref(&in_a)),
        ),
        (
            b.clone(),
            "huurachterstand",
            "2024-03",
            rent(std::slice::from_ref(&in_b)),
        ),
        (
            c.clone(),
            "huurachterstand",
            "2024-03",
            rent(std::slice::from_ref(&in_c)),
        ),
        (
            a.clone(),
            "energieachterstand",
            "2024-03",
            rent(std::slice::from_ref(&in_a)),
        ),
    ];
    assert_eq!(
        buurt_expected[1].3, None,
        "4 households can never reach k = 10 with D = 4"
    );
    let buurten = table(&server, pb::AreaLevel::Buurt).await;
    assert_released(&buurten, &buurt_expected);
    let all_buurten = Hierarchy::netherlands_2023()
        .areas_of("GM0034".parse().unwrap(), AreaLevel::Buurt)
        .len();
    assert_eq!(
        buurten.len(),
        all_buurten * 2 * 2,
        "every buurt × type × month is answered"
    );

    let wijk_expected = [
        (
            wa.clone(),
            "huurachterstand",
            "2024-03",
            rent(&[in_a.clone(), in_b.clone()]),
        ),
        (
            wc,
            "huurachterstand",
            "2024-03",
            rent(std::slice::from_ref(&in_c)),
        ),
        (
            wa,
            "energieachterstand",
            "2024-03",
            rent(std::slice::from_ref(&in_a)),
        ),
    ];
    assert!(
        wijk_expected[0].3.is_some(),
        "16 households are always released with k = 10, D = 4"
    );
    assert_released(&table(&server, pb::AreaLevel::Wijk).await, &wijk_expected);
    let gemeente_expected = [
        (
            "GM0034".to_string(),
            "huurachterstand",
            "2024-03",
            rent(&[in_a.clone(), in_b, in_c]),
        ),
        (
            "GM0034".to_string(),
            "energieachterstand",
            "2024-03",
            rent(&[in_a]),
        ),
    ];
    assert_released(
        &table(&server, pb::AreaLevel::Gemeente).await,
        &gemeente_expected,
    );

    // A restart changes no answer.
    let before = (
        table(&server, pb::AreaLevel::Buurt).await,
        table(&server, pb::AreaLevel::Wijk).await,
    );
    let mut q = server.query(ANALYST).await;
    let catalogue = q
        .get_catalogue(pb::GetCatalogueRequest {
            gemeente_code: "GM0034".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            catalogue.first_month.as_str(),
            catalogue.last_month.as_str(),
            catalogue.k
        ),
        ("2024-03", "2024-03", 10)
    );
    assert_eq!(catalogue.max_noise, 4);
    server.restart().await;
    let after = (
        table(&server, pb::AreaLevel::Buurt).await,
        table(&server, pb::AreaLevel::Wijk).await,
    );
    assert_eq!(before, after);
    let mut q = server.query(ANALYST).await;
    assert_eq!(
        q.get_catalogue(pb::GetCatalogueRequest {
            gemeente_code: "GM0034".into()
        })
        .await
        .unwrap()
        .into_inner(),
        catalogue
    );
}

#[tokio::test]
async fn a_resent_export_is_acknowledged_again_and_changes_no_count() {
    let server = TestServer::start().await;
    let f = fixture();
    let key = PartnerKey::load(&server.setup.partner_key).unwrap();
    run_agent(&server, PARTNER_A, &export_a(), &key, &f.table).await;
    let (cells_before, checksum_before) = (
        table(&server, pb::AreaLevel::Buurt).await,
        server.store_checksum(),
    );

    let again = run_agent(&server, PARTNER_A, &export_a(), &key, &f.table).await;
    assert_eq!(
        (again.batches, again.stored, again.already_stored),
        (4, 0, 4)
    );
    assert_eq!(table(&server, pb::AreaLevel::Buurt).await, cells_before);
    assert_eq!(
        server.store_checksum(),
        checksum_before,
        "a resent batch writes nothing"
    );
}
