//! CSV in → agent → server → query out, and what must not change it:
//! a restart, a resent export, a second partner sending the same household.

use std::collections::BTreeMap;
use wijkradar_agent::Pc6Table;
use wijkradar_agent::normalise::household_key;
use wijkradar_domain::{AreaCode, AreaLevel, BuurtCode, CellTotal, Hierarchy};
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::{PartnerKey, ServerKey};
use wijkradar_release::{GemeenteTable, Released};
use wijkradar_tests::{ANALYST, PARTNER_A, PARTNER_B, TestServer, read_simple_export};

use crate::{Cells, cells, table_request};

pub(crate) struct Fixture {
    pub(crate) a: BuurtCode,
    pub(crate) b: BuurtCode,
    pub(crate) c: BuurtCode,
    pub(crate) table: Pc6Table,
}

/// Three real buurten of Almere: A and B in one wijk, C in another; a
/// postcode table mapping 1315AA → A, 1315AB → B, 1315AC → C.
pub(crate) fn fixture() -> Fixture {
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
pub(crate) fn export_a() -> String {
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

pub(crate) async fn run_agent(
    server: &TestServer,
    partner: &str,
    export: &str,
    key: &PartnerKey,
    table: &Pc6Table,
) -> wijkradar_agent::SubmitReport {
    let (_, signals) = read_simple_export(export, table, key);
    wijkradar_agent::submit(
        server.channel(partner).await,
        signals,
        key.id().as_str(),
        7,
        |_| {},
    )
    .await
    .unwrap()
}

pub(crate) async fn table(server: &TestServer, level: pb::AreaLevel) -> Cells {
    let mut q = server.query(ANALYST).await;
    cells(
        &q.get_table(table_request(
            level,
            &["huurachterstand", "energieachterstand"],
            "2024-02",
            "2024-04",
        ))
        .await
        .unwrap()
        .into_inner(),
    )
}

pub(crate) fn level_of(level: pb::AreaLevel) -> AreaLevel {
    match level {
        pb::AreaLevel::Buurt => AreaLevel::Buurt,
        pb::AreaLevel::Wijk => AreaLevel::Wijk,
        _ => AreaLevel::Gemeente,
    }
}

/// Households as (postcode, house numbers).
type Households = [(&'static str, std::ops::RangeInclusive<u32>)];

/// The cell total of these households, worked out here from the keys,
/// independently of the server: partner pseudonym → server pseudonym →
/// record key → cell key.
pub(crate) fn total_of(server: &TestServer, households: &Households) -> CellTotal {
    let partner = PartnerKey::load(&server.setup.partner_key).unwrap();
    let server_key = ServerKey::load(&server.setup.config.keys.server_key).unwrap();
    let mut total = CellTotal::default();
    for (pc, numbers) in households {
        for n in numbers.clone() {
            let address = household_key(pc.as_bytes().try_into().unwrap(), n, "");
            let p = server_key.rekey(&partner.pseudonymise(address.as_bytes()));
            total += CellTotal::one(server_key.record_key(&p));
        }
    }
    total
}

/// The whole released table (every level) for buurt totals, by the release
/// rules: perturbation, threshold, audit.
pub(crate) fn expected_table(
    server: &TestServer,
    buurten: &[(BuurtCode, CellTotal)],
) -> BTreeMap<AreaCode, Option<u64>> {
    let policy = server.setup.config.release.policy().unwrap();
    let table = GemeenteTable::new(&Hierarchy::netherlands_2023(), "GM0034".parse().unwrap());
    table
        .release(&policy, buurten, &[])
        .into_iter()
        .map(|(a, r)| {
            (
                a,
                if let Released::Value(v) = r {
                    Some(v)
                } else {
                    None
                },
            )
        })
        .collect()
}

#[tokio::test]
pub(crate) async fn csv_through_agent_and_server_gives_the_expected_protected_table() {
    let mut server = TestServer::start().await;
    let f = fixture();
    let key = PartnerKey::load(&server.setup.partner_key).unwrap();

    let (export, signals) = read_simple_export(&export_a(), &f.table, &key);
    assert_eq!((export.rows, signals.len()), (28, 27));
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
        "postcode,huisnummer,toevoeging,signaaltype,maand\n1315AA,1,,huurachterstand,2024-03\n",
    );
    for n in 1..=12 {
        export_b.push_str(&format!("1315aa,{n},,energieachterstand,2024-03\n"));
    }
    // In April, 20 households in buurt A and none in B, the only other buurt
    // of A's wijk: the wijk then holds exactly A's households.
    for n in 1..=20 {
        export_b.push_str(&format!("1315AA,{n},,huurachterstand,2024-04\n"));
    }
    run_agent(&server, PARTNER_B, &export_b, &key, &f.table).await;

    // The households of each cell; a cell holds each household once, however
    // often and by whom it was sent (I5).
    let (in_a, in_b, in_c): (&Households, &Households, &Households) = (
        &[("1315AA", 1..=12)],
        &[("1315AB", 1..=4)],
        &[("1315AC", 1..=10)],
    );
    let rent = expected_table(
        &server,
        &[
            (f.a, total_of(&server, in_a)),
            (f.b, total_of(&server, in_b)),
            (f.c, total_of(&server, in_c)),
        ],
    );
    let energy = expected_table(&server, &[(f.a, total_of(&server, in_a))]);
    let april = expected_table(&server, &[(f.a, total_of(&server, &[("1315AA", 1..=20)]))]);
    // Buurt A, its wijk and the gemeente hold the same 20 households, so the
    // same cell key and the same released value, and every other cell is
    // empty: B, or an empty wijk, would be pinned to 0..=8. Each of the three
    // would be released on its own (20 − D ≥ k), so the audit has to hide at
    // least one of them: a secondary suppression.
    assert_eq!(
        Hierarchy::netherlands_2023()
            .buurten_of_wijk(f.a.wijk())
            .collect::<Vec<_>>(),
        [f.a, f.b]
    );
    let hidden = [
        AreaCode::Buurt(f.a),
        AreaCode::Wijk(f.a.wijk()),
        AreaCode::Gemeente("GM0034".parse().unwrap()),
    ]
    .iter()
    .filter(|a| april[a].is_none())
    .count();
    assert!(
        hidden >= 1,
        "the audit hides one of A, its wijk, the gemeente in April"
    );
    let empty = expected_table(&server, &[]);
    assert!(
        empty.values().all(Option::is_none),
        "an empty month releases nothing"
    );
    assert_eq!(
        rent[&AreaCode::Buurt(f.b)],
        None,
        "4 households can never reach k = 10 with D = 4"
    );

    for level in [
        pb::AreaLevel::Buurt,
        pb::AreaLevel::Wijk,
        pb::AreaLevel::Gemeente,
    ] {
        let got = table(&server, level).await;
        let areas =
            Hierarchy::netherlands_2023().areas_of("GM0034".parse().unwrap(), level_of(level));
        assert_eq!(
            got.len(),
            areas.len() * 2 * 3,
            "every area × type × month is answered"
        );
        for ((area, t, m), value) in &got {
            let want = match (t.as_str(), m.as_str()) {
                ("huurachterstand", "2024-03") => &rent,
                ("energieachterstand", "2024-03") => &energy,
                ("huurachterstand", "2024-04") => &april,
                _ => &empty,
            };
            assert_eq!(
                *value,
                want[&area.parse::<AreaCode>().unwrap()],
                "{area} {t} {m}"
            );
        }
    }

    // The attack from outside: everything the API released, all three levels
    // of each type and month together, leaves every suppressed cell wider
    // than max(k, 2D) (I6).
    let mut seen: BTreeMap<(String, String), BTreeMap<AreaCode, Released>> = BTreeMap::new();
    for level in [
        pb::AreaLevel::Buurt,
        pb::AreaLevel::Wijk,
        pb::AreaLevel::Gemeente,
    ] {
        for ((area, t, m), value) in table(&server, level).await {
            let r = value.map_or(Released::Suppressed, Released::Value);
            seen.entry((t, m))
                .or_default()
                .insert(area.parse::<AreaCode>().unwrap(), r);
        }
    }
    let g = GemeenteTable::new(&Hierarchy::netherlands_2023(), "GM0034".parse().unwrap());
    for ((t, m), released) in &seen {
        for (area, interval) in g.attack(released, 4) {
            if released[&area] == Released::Suppressed {
                assert!(
                    interval.width().is_none_or(|w| w >= 10),
                    "{area} {t} {m} narrowed to {interval:?}"
                );
            }
        }
    }

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
        ("2024-03", "2024-04", 10)
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
pub(crate) async fn a_resent_export_is_acknowledged_again_and_changes_no_count() {
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
