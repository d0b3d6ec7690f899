//! The dashboard over real HTTPS: login, the pages' figures against the
//! gRPC answer, grants, headers, exports. The browser test is in
//! `browser.rs`.

use wijkradar_proto::v1 as pb;
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer};

use crate::{batch, submit};

pub(crate) use wijkradar_dev::{HttpsClient as Web, Page};

/// A browser's part against the test server's dashboard.
pub(crate) fn browser_of(server: &TestServer) -> Web {
    Web::to(
        server.dashboard().expect("dashboard on").addr,
        &server.setup.pki_dir.join("ca.pem"),
    )
}

/// A server with the dashboard, signing in as the analyst, and signals of
/// huurachterstand in Almere in the first quarter of 2024: many households
/// in three buurten of one wijk, a few in others.
pub(crate) async fn server_with_figures() -> TestServer {
    let server = TestServer::start_with(crate::local_dashboard).await;
    let mut batches = Vec::new();
    for (i, (buurt, n)) in [
        ("BU00340101", 30),
        ("BU00340102", 25),
        ("BU00340202", 20),
        ("BU00340201", 3),
        ("BU00341401", 2),
    ]
    .into_iter()
    .enumerate()
    {
        for month in ["2024-01", "2024-02", "2024-03"] {
            batches.push(batch(
                &format!("d-{i}-{month}"),
                "huurachterstand",
                buurt,
                month,
                i as u64,
                n,
            ));
        }
    }
    let outcome = submit(server.channel(PARTNER_A).await, batches).await;
    assert!(outcome.iter().all(Result::is_ok), "{outcome:?}");
    server
}

fn login_url(server: &TestServer) -> String {
    server
        .dashboard()
        .and_then(|d| d.login_url.clone())
        .expect("a one-time login")
}

#[tokio::test]
async fn no_figures_without_login_and_a_login_link_works_once() {
    let server = server_with_figures().await;
    let mut web = browser_of(&server);
    for path in [
        "/",
        "/gemeente/GM0034",
        "/wijk/WK003401",
        "/export/tabel.csv?gemeente=GM0034&maat=huurachterstand",
    ] {
        let page = web.get(path).await;
        assert_eq!(page.status, 401, "{path}");
        assert!(page.text().contains("Inloggen"), "{path}");
        assert!(!page.text().contains("<table"), "{path}: no figures");
    }
    let url = login_url(&server);
    let first = web.log_in(&url).await;
    assert_eq!(first.status, 303);
    let cookie = first.header("set-cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Max-Age=1800"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let home = web.get("/").await;
    assert_eq!(home.status, 303);
    assert_eq!(home.header("location"), "/gemeente/GM0034");
    // The link works once: a second browser cannot use it.
    let mut other = browser_of(&server);
    assert_eq!(other.log_in(&url).await.status, 403);
    assert!(other.cookie.is_none());
    assert_eq!(other.get("/gemeente/GM0034").await.status, 401);
    // A made-up session is no session.
    other.cookie = Some("wijkradar_sessie=00ff".into());
    assert_eq!(other.get("/gemeente/GM0034").await.status, 401);

    // Logging out needs the session's CSRF token.
    let page = web.get("/gemeente/GM0034").await.text();
    let token = csrf_of(&page);
    let forged = web.request("POST", "/uitloggen", Some("csrf=00")).await;
    assert_eq!(forged.status, 403);
    assert_eq!(web.get("/gemeente/GM0034").await.status, 200);
    let out = web
        .request("POST", "/uitloggen", Some(&format!("csrf={token}")))
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(web.get("/gemeente/GM0034").await.status, 401);
}

/// Every URL in a page: nothing may point elsewhere (the SVG namespace
/// names, it is not fetched).
fn external_urls(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://", "//"] {
        for (i, _) in text.match_indices(scheme) {
            let rest: String = text[i..].chars().take(40).collect();
            let namespace = rest.starts_with("http://www.w3.org/2000/svg\"");
            let in_https = scheme == "//" && i > 0 && text[..i].ends_with(':');
            let comment = scheme == "//" && (rest.starts_with("// ") || i == 0);
            if !namespace && !in_https && !comment {
                found.push(rest);
            }
        }
    }
    found
}

#[tokio::test]
async fn the_map_and_table_show_the_api_s_figures_in_dutch_with_strict_headers() {
    let server = server_with_figures().await;
    let mut web = browser_of(&server);
    web.log_in(&login_url(&server)).await;
    let page = web
        .get("/gemeente/GM0034?maat=huurachterstand&periode=maand&wanneer=2024-02")
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("cache-control"), "no-store");
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let html = page.text();
    assert!(html.contains(r#"<html lang="nl">"#));
    assert!(html.contains("februari 2024"));
    assert!(html.contains("Bron: CBS"));
    assert!(html.contains("per 1.000 huishoudens"));
    assert_eq!(external_urls(&html), Vec::<String>::new());
    assert!(!html.contains("style="), "no inline style (CSP)");
    assert!(!html.contains("<script>"), "no inline script (CSP)");

    // The same figures as GetTable gives the analyst over gRPC.
    let mut query = server.query(ANALYST).await;
    let answer = query
        .get_table(pb::GetTableRequest {
            gemeente_code: "GM0034".into(),
            level: pb::AreaLevel::Wijk.into(),
            signal_types: vec!["huurachterstand".into()],
            from_month: "2024-02".into(),
            to_month: "2024-02".into(),
            period: pb::Period::Month.into(),
            layout: pb::TableLayout::Cells.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut released = 0;
    let mut suppressed = 0;
    for cell in &answer.cells {
        let row_start = format!(r#"<tr data-code="{}">"#, cell.area_code);
        let row = html
            .split(&row_start)
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("a row for {}", cell.area_code));
        let in_map = html
            .split(&format!(r#"data-code="{}"><path"#, cell.area_code))
            .nth(1)
            .map(|r| r.split("</a>").next().unwrap().to_owned());
        match cell.status() {
            pb::CellStatus::Released => {
                released += 1;
                let v = cell.value.unwrap();
                assert!(row.contains(&format!(">{v}<")), "{row}");
                if let Some(r) = cell.rate_per_1000 {
                    let shown = format!("{:.1}", r).replace('.', ",");
                    assert!(row.contains(&shown), "{shown} in {row}");
                }
            }
            pb::CellStatus::Suppressed => {
                suppressed += 1;
                assert!(row.contains("&#60;10") || row.contains("&lt;10"), "{row}");
                assert!(row.contains("afgeschermd"));
                if let Some(m) = in_map {
                    assert!(m.contains(r#"class="onderdrukt""#), "{m}");
                }
            }
            s => panic!("unexpected status {s:?}"),
        }
    }
    assert!(released >= 1 && suppressed >= 1, "{released} {suppressed}");
    assert!(
        html.matches("<path d=\"M").count() >= 20,
        "the wijken are drawn"
    );

    // The wijk page: trend charts and the gemeente beside the wijk.
    let wijk = web.get("/wijk/WK003401?periode=maand").await;
    assert_eq!(wijk.status, 200);
    let w = wijk.text();
    assert!(w.contains("Huurachterstand"));
    assert!(w.contains(r#"class="lijn-wijk""#));
    assert!(w.contains("januari 2024"));
    assert_eq!(external_urls(&w), Vec::<String>::new());

    // The explanation and the assets: no URL elsewhere either.
    for path in ["/uitleg", "/static/stijl.css", "/static/app.js"] {
        let p = web.get(path).await;
        assert_eq!(p.status, 200, "{path}");
        assert_eq!(external_urls(&p.text()), Vec::<String>::new(), "{path}");
    }
    assert_eq!(web.get("/static/geheim.txt").await.status, 404);

    // Every page view with figures is in the audit log, as a query of the
    // analyst.
    let log = audit_log(&server);
    // As a query of the analyst: its name is the entry's actor.
    let viewed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Dashboard.GetTable"))
        .collect();
    assert!(!viewed.is_empty(), "audited");
    for line in viewed {
        assert!(line.contains(&format!("\"actor\":\"{ANALYST}\"")), "{line}");
    }
}

#[tokio::test]
async fn an_analyst_sees_only_its_gemeenten_and_exports_csv_for_excel() {
    let server = server_with_figures().await;
    let mut web = browser_of(&server);
    web.log_in(&login_url(&server)).await;
    for path in [
        "/gemeente/GM0050",
        "/wijk/WK005001",
        "/export/tabel.csv?gemeente=GM0050&maat=huurachterstand",
    ] {
        let page = web.get(path).await;
        assert_eq!(page.status, 403, "{path}");
        assert!(page.text().contains("geen toegang"), "{path}");
    }
    let log = audit_log(&server);
    assert!(
        log.contains("may not query figures of GM0050"),
        "refusal audited"
    );

    let excel = web
        .get("/export/tabel.csv?gemeente=GM0034&maat=huurachterstand&periode=maand&niveau=wijk&formaat=excel")
        .await;
    assert_eq!(excel.status, 200);
    assert_eq!(excel.header("cache-control"), "no-store");
    assert!(excel.header("content-disposition").contains("attachment"));
    assert!(
        excel.body.starts_with(&[0xEF, 0xBB, 0xBF]),
        "byte order mark"
    );
    let text = excel.text();
    let mut lines = text.trim_start_matches('\u{feff}').lines();
    assert_eq!(
        lines.next().unwrap(),
        "gebiedscode;gebiedsnaam;maat;periode;status;waarde;per_1000_huishoudens;rate_van_gebied;huishoudens_basis;versie;over_sleutelwissel"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(';').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 11 && r[10] == "nee"));
    let released: Vec<&Vec<&str>> = rows.iter().filter(|r| r[4] == "gepubliceerd").collect();
    assert!(!released.is_empty());
    assert!(
        released
            .iter()
            .filter(|r| !r[6].is_empty())
            .all(|r| r[6].contains(',')),
        "decimal comma"
    );
    for r in rows.iter().filter(|r| r[4] == "afgeschermd") {
        assert_eq!(r[5], "", "a suppressed cell has no value: {r:?}");
    }
    let plain = web
        .get("/export/tabel.csv?gemeente=GM0034&maat=huurachterstand&periode=maand&formaat=csv")
        .await
        .text();
    assert!(plain.starts_with("gebiedscode,gebiedsnaam,"));
    assert!(!plain.starts_with('\u{feff}'));

    // GeoJSON of one month, as QGIS reads it: WGS84, closed rings, the
    // status per area, no value where it is suppressed.
    let geo = web
        .get("/export/kaart.geojson?gemeente=GM0034&maat=huurachterstand&periode=maand&wanneer=2024-02")
        .await;
    assert_eq!(geo.status, 200);
    assert_eq!(geo.header("content-type"), "application/geo+json");
    let json: serde_json::Value = serde_json::from_slice(&geo.body).unwrap();
    assert_eq!(json["type"], "FeatureCollection");
    let features = json["features"].as_array().unwrap();
    assert!(features.len() >= 20, "{} wijken", features.len());
    let mut suppressed = 0;
    for f in features {
        let p = &f["properties"];
        assert_eq!(p["periode"], "2024-02");
        match p["status"].as_str().unwrap() {
            "afgeschermd" => {
                suppressed += 1;
                assert!(p["waarde"].is_null(), "{p}");
            }
            "gepubliceerd" => assert!(p["waarde"].as_u64().unwrap() >= 10),
            s => panic!("{s}"),
        }
        for polygon in f["geometry"]["coordinates"].as_array().unwrap() {
            for ring in polygon.as_array().unwrap() {
                let ring = ring.as_array().unwrap();
                assert_eq!(ring.first(), ring.last());
                for point in ring {
                    let (lon, lat) = (point[0].as_f64().unwrap(), point[1].as_f64().unwrap());
                    assert!(
                        (5.0..5.5).contains(&lon) && (52.2..52.5).contains(&lat),
                        "Almere: {lon} {lat}"
                    );
                }
            }
        }
    }
    assert!(suppressed > 0);
}

/// A server with the dashboard and no signals yet.
async fn server_with_dashboard() -> TestServer {
    TestServer::start_with(crate::local_dashboard).await
}

pub(crate) use crate::audit_log;

pub(crate) fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF token in the page")
        .to_owned()
}

#[tokio::test]
async fn an_analyst_sets_the_status_of_an_alert_and_it_is_stored_and_audited() {
    let mut server = server_with_dashboard().await;
    let (rising, last) = crate::alerts::send_a_rising_wijk(&server).await;
    let mut web = browser_of(&server);
    web.log_in(&login_url(&server)).await;
    let page = web.get("/meldingen/GM0034").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("cache-control"), "no-store");
    let html = page.text();
    let first_row = html
        .split("<tbody>")
        .nth(1)
        .and_then(|b| b.split("</tr>").next())
        .expect("an alert");
    assert!(
        first_row.contains(&format!("/wijk/{rising}")),
        "{first_row}"
    );
    assert!(
        first_row.contains(r#"<option value="nieuw" selected>"#),
        "{first_row}"
    );
    let form = |status: &str, area: &str, csrf: &str| {
        format!("csrf={csrf}&maand={last}&gebied={area}&maat=huurachterstand&status={status}")
    };
    let csrf = csrf_of(&html);
    // A forged form, another gemeente's area, an unknown status, another
    // gemeente's page: refused.
    let rising_code = rising.to_string();
    for (path, status, area, token, code) in [
        (
            "/meldingen/GM0034/status",
            "opgepakt",
            rising_code.as_str(),
            "00",
            403,
        ),
        (
            "/meldingen/GM0034/status",
            "opgepakt",
            "WK005001",
            csrf.as_str(),
            400,
        ),
        (
            "/meldingen/GM0034/status",
            "vergeten",
            rising_code.as_str(),
            csrf.as_str(),
            400,
        ),
        (
            "/meldingen/GM0050/status",
            "opgepakt",
            "WK005001",
            csrf.as_str(),
            403,
        ),
    ] {
        let answer = web
            .request("POST", path, Some(&form(status, area, token)))
            .await;
        assert_eq!(answer.status, code, "{path} {status} {area}");
    }
    // Taken up: stored, shown with who set it, audited.
    let set = web
        .request(
            "POST",
            "/meldingen/GM0034/status",
            Some(&form("opgepakt", &rising.to_string(), &csrf)),
        )
        .await;
    assert_eq!(set.status, 303);
    let html = web
        .get(&format!("/meldingen/GM0034?maand={last}"))
        .await
        .text();
    let row = html
        .split(&format!("/wijk/{rising}"))
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap();
    assert!(
        row.contains(r#"<option value="opgepakt" selected>"#),
        "{row}"
    );
    assert!(row.contains(&format!("door {ANALYST}")), "{row}");
    let log = audit_log(&server);
    assert!(log.contains("Dashboard.SetAlertStatus"), "audited");
    assert!(log.contains("status=opgepakt"));
    // After a restart the status is still there.
    server.restart().await;
    let mut web = browser_of(&server);
    web.log_in(&login_url(&server)).await;
    let html = web
        .get(&format!("/meldingen/GM0034?maand={last}"))
        .await
        .text();
    assert!(html.contains(r#"<option value="opgepakt" selected>"#));
}
