//! What a table answers: rates per 1,000 from released values, the columns
//! layout against the cells layout, household bases from a CBS file, and a
//! derived indicator's count.

use std::collections::BTreeMap;
use wijkradar_domain::BuurtCode;
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::PartnerKey;
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer};

use crate::pipeline::*;
use crate::table_request;

/// The raw cells of one table, with their rates.
pub(crate) async fn raw_table(
    server: &TestServer,
    level: pb::AreaLevel,
    month: &str,
) -> pb::GetTableResponse {
    let mut q = server.query(ANALYST).await;
    q.get_table(table_request(level, &["huurachterstand"], month, month))
        .await
        .unwrap()
        .into_inner()
}

pub(crate) fn cell<'a>(resp: &'a pb::GetTableResponse, area: &str) -> &'a pb::Cell {
    resp.cells.iter().find(|c| c.area_code == area).unwrap()
}

/// May 2024: 40 households in buurt A, 20 in B (A's wijk has no other
/// buurten) and 20 in C, in another wijk.
pub(crate) async fn may_2024(server: &TestServer) -> Fixture {
    let f = fixture();
    let key = PartnerKey::load(&server.setup.partner_key).unwrap();
    let mut export = String::from("postcode,huisnummer,toevoeging,signaaltype,maand\n");
    for n in 1..=20 {
        for row in [
            format!("1315AA,{n},"),
            format!("1315AA,{n},B"),
            format!("1315AB,{n},"),
            format!("1315AC,{n},"),
        ] {
            export.push_str(&format!("{row},huurachterstand,2024-05\n"));
        }
    }
    run_agent(server, PARTNER_A, &export, &key, &f.table).await;
    f
}

#[tokio::test]
pub(crate) async fn rates_per_1000_use_the_released_value_and_small_buurten_show_their_wijk() {
    let server = TestServer::start().await;
    may_2024(&server).await;
    let bases = wijkradar_domain::hierarchy::Dwellings::kwb_2024().per_area;
    let own = |c: &pb::Cell| -> Option<f64> {
        let base = *bases.get(&c.area_code.parse().unwrap())?;
        (base >= 100).then_some(c.value? as f64 * 1000.0 / base as f64)
    };

    // The audit decides which cells are released; whatever it decided, the
    // rates follow the released values exactly.
    let gemeente = raw_table(&server, pb::AreaLevel::Gemeente, "2024-05").await;
    let g = &gemeente.cells[0];
    assert_eq!(
        (
            gemeente.rate_floor,
            gemeente.household_base_measure.as_str()
        ),
        (100, "Woningvoorraad_35")
    );
    assert!(
        g.rate_per_1000.is_some(),
        "the gemeente (92,353 dwellings) stays released with a rate"
    );
    assert_eq!((g.rate_per_1000, g.household_base), (own(g), Some(92_353)));

    let wijken = raw_table(&server, pb::AreaLevel::Wijk, "2024-05").await;
    let mut wijk_rates = BTreeMap::new();
    for c in &wijken.cells {
        assert_eq!(c.rate_per_1000, own(c), "{}", c.area_code);
        assert_eq!(c.rate_area_code, c.area_code);
        wijk_rates.insert(c.area_code.clone(), c.rate_per_1000);
    }
    // The shipped figures have no buurt bases: every buurt shows its wijk's
    // rate when the wijk has one, and none otherwise.
    let buurten = raw_table(&server, pb::AreaLevel::Buurt, "2024-05").await;
    for c in &buurten.cells {
        let wijk = c.area_code.parse::<BuurtCode>().unwrap().wijk().to_string();
        assert_eq!(c.rate_per_1000, wijk_rates[&wijk], "{}", c.area_code);
        if c.rate_per_1000.is_some() {
            assert_eq!(c.rate_area_code, wijk, "a rolled-up rate names its wijk");
        }
    }
}

#[tokio::test]
pub(crate) async fn the_columns_layout_holds_exactly_the_cells_of_the_cells_layout() {
    let server = TestServer::start().await;
    may_2024(&server).await;
    let now = wijkradar_tests::current_month().to_string();
    // The cells of every type over 32 months are a few MB.
    let mut q = server
        .query(ANALYST)
        .await
        .max_decoding_message_size(wijkradar_server::MAX_ANSWER_BYTES);
    let (mut with_rates, mut with_values) = (0, 0);
    for level in [
        pb::AreaLevel::Buurt,
        pb::AreaLevel::Wijk,
        pb::AreaLevel::Gemeente,
    ] {
        for (types, period) in [
            // Every type (most never stored), up to the pending current month.
            (vec![], pb::Period::Month),
            (
                vec!["huurachterstand", "meerdere_signaaltypen_6m"],
                pb::Period::Month,
            ),
            (vec!["huurachterstand"], pb::Period::Quarter),
        ] {
            let mut request = table_request(level, &types, "2024-04", &now);
            request.period = period.into();
            // The cells layout in pages: a whole answer this large is refused.
            let (cells, _) = crate::all_pages(&mut q, request.clone()).await;
            request.layout = pb::TableLayout::Columns.into();
            let columns = q.get_table(request).await.unwrap().into_inner();
            assert!(columns.cells.is_empty());
            let expanded = columns.columns.as_ref().unwrap().cells();
            with_rates += cells.iter().filter(|c| c.rate_per_1000.is_some()).count();
            with_values += cells.iter().filter(|c| c.value.is_some()).count();
            assert_eq!(expanded, cells, "{level:?} {types:?} {period:?}");
        }
    }
    // Which cells the audit releases depends on the keys; the gemeente's
    // are released whatever they are, so values and rates are compared.
    assert!(
        with_rates > 0 && with_values > 0,
        "{with_rates} {with_values}"
    );
}

#[tokio::test]
pub(crate) async fn household_bases_can_come_from_a_kerncijfers_csv() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kwb.csv");
    // StatLine layout: households per buurt, with a `.` where CBS publishes none.
    let csv = format!(
        "\"ID\";\"Regioaanduiding/Codering (code)\";\"Huishoudens/Particuliere huishoudens (aantal)\"\r\n\"1\";\"{}  \";\"  500\"\r\n\"2\";\"{}  \";\"   40\"\r\n\"3\";\"{}\";\"    .\"\r\n",
        f.a,
        f.b,
        f.a.wijk()
    );
    std::fs::write(&path, csv).unwrap();
    let server = TestServer::start_with(|c| c.release.household_base = Some(path.clone())).await;
    may_2024(&server).await;

    let buurten = raw_table(&server, pb::AreaLevel::Buurt, "2024-05").await;
    assert_eq!(
        buurten.household_base_measure,
        "Huishoudens/Particuliere huishoudens (aantal)"
    );
    let a = cell(&buurten, &f.a.to_string());
    let v = a
        .value
        .expect("40 households in a wijk whose buurten are all released");
    assert_eq!(
        (a.rate_per_1000, a.household_base, a.rate_area_code.as_str()),
        (
            Some(v as f64 * 1000.0 / 500.0),
            Some(500),
            a.area_code.as_str()
        )
    );
    // Buurt B: 40 households is below the floor, and its wijk has no base: no rate.
    assert_eq!(cell(&buurten, &f.b.to_string()).rate_per_1000, None);
}

/// The payment-arrears indicator joins the types the catalogue marks: a
/// household behind on rent and on energy counts once; school absence does
/// not count. Released by the same rules as any table.
#[tokio::test]
pub(crate) async fn payment_arrears_join_rent_and_energy_and_count_a_household_once() {
    let server = TestServer::start().await;
    let buurt = "BU00340101";
    let month = "2024-01";
    let batches = vec![
        // Households 0..30 behind on rent, the same 30 and 15 others on
        // energy, 20 others absent from school.
        crate::batch("rent", "huurachterstand", buurt, month, 1, 30),
        crate::batch("energy-same", "energieachterstand", buurt, month, 1, 30),
        crate::batch("energy-other", "energieachterstand", buurt, month, 2, 15),
        crate::batch("school", "schoolverzuim", buurt, month, 3, 20),
    ];
    let outcome = crate::submit(server.channel(PARTNER_A).await, batches).await;
    assert!(outcome.iter().all(Result::is_ok), "{outcome:?}");
    let mut q = server.query(ANALYST).await;
    let answer = q
        .get_table(table_request(
            pb::AreaLevel::Buurt,
            &["betalingsachterstand", "huurachterstand"],
            month,
            month,
        ))
        .await
        .unwrap()
        .into_inner();
    let value = |t: &str| {
        answer
            .cells
            .iter()
            .find(|c| c.area_code == buurt && c.signal_type == t)
            .and_then(|c| c.value)
            .unwrap_or_else(|| panic!("{t} released"))
    };
    // 45 distinct households, released within D = 4; rent alone 30.
    assert!(
        value("betalingsachterstand").abs_diff(45) <= 4,
        "{}",
        value("betalingsachterstand")
    );
    assert!(value("huurachterstand").abs_diff(30) <= 4);
    // The catalogue says which types it joins.
    let catalogue = q
        .get_catalogue(pb::GetCatalogueRequest {
            gemeente_code: "GM0034".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let joined: Vec<&str> = catalogue
        .signal_types
        .iter()
        .filter(|t| t.payment_arrears)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        joined,
        [
            "huurachterstand",
            "energieachterstand",
            "drinkwaterachterstand",
            "zorgpremieachterstand"
        ]
    );
}
