//! The dashboard in a real headless browser (Debian's chromium, driven by
//! chromedriver over WebDriver): log in, open the map, click a wijk, see
//! its trends, sort the table, download the CSV, and print the wijk page
//! to PDF.
//!
//! `.ci/run` installs chromium and chromedriver and sets
//! `WIJKRADAR_BROWSER_TESTS=1`, so in CI a missing browser fails the test.
//! Elsewhere, without chromedriver on the PATH, the test says so and
//! passes without running.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};

use crate::dashboard::server_with_figures;

/// Saves a screenshot of the page the browser shows as `name` in the
/// folder `WIJKRADAR_SCREENSHOTS` names, when it is set (how the pictures
/// in `docs/` are made).
async fn screenshot(c: &fantoccini::Client, name: &str) -> Result<(), fantoccini::error::CmdError> {
    if let Some(dir) = std::env::var_os("WIJKRADAR_SCREENSHOTS") {
        let png = c.screenshot().await?;
        std::fs::write(std::path::Path::new(&dir).join(name), png).expect("write the screenshot");
    }
    Ok(())
}

/// axe-core, vendored (see `tests/vendor/axe-core/README.md`).
const AXE: &str = include_str!("../vendor/axe-core/axe.min.js");

/// The serious and critical WCAG 2.1 A/AA violations axe-core finds on the
/// page the browser shows, as "rule: target" lines.
async fn accessibility_problems(
    c: &fantoccini::Client,
) -> Result<Vec<String>, fantoccini::error::CmdError> {
    c.execute(AXE, vec![]).await?;
    let found = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })
                 .then(r => done(r.violations
                   .filter(v => v.impact === "serious" || v.impact === "critical")
                   .flatMap(v => v.nodes.map(n => v.id + ": " + n.target.join(" ")))))
                 .catch(e => done(["axe failed: " + e]));"#,
            vec![],
        )
        .await?;
    Ok(found
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| vec![format!("unexpected answer {found}")]))
}

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Option<Driver> {
    let required = std::env::var_os("WIJKRADAR_BROWSER_TESTS").is_some();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    match Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => Some(Driver { child, port }),
        Err(e) if !required => {
            eprintln!("chromedriver not found ({e}): browser test skipped");
            None
        }
        Err(e) => panic!("chromedriver is required (WIJKRADAR_BROWSER_TESTS): {e}"),
    }
}

#[tokio::test]
async fn an_analyst_logs_in_opens_the_map_clicks_a_wijk_and_prints_its_report() {
    let Some(driver) = start_driver() else {
        return;
    };
    let server = server_with_figures().await;
    let login = server
        .dashboard()
        .and_then(|d| d.login_url.clone())
        .expect("a login link");
    let downloads = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "prefs": {
                "download.default_directory": downloads.path(),
                "download.prompt_for_download": false
            },
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,1000"
            ]
        }),
    );
    // The development CA is not in the browser's store.
    caps.insert("acceptInsecureCerts".into(), serde_json::Value::Bool(true));
    let webdriver = format!("http://127.0.0.1:{}", driver.port);
    let mut client = None;
    for _ in 0..50 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&webdriver)
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let c = client.expect("chromedriver answers");
    let outcome = async {
        c.goto(&login).await?;
        // Logged in and sent on to the gemeente's map.
        let url = c.current_url().await?;
        assert!(url.path().starts_with("/gemeente/GM0034"), "{url}");
        c.goto(&format!(
            "{}://{}/gemeente/GM0034?maat=huurachterstand&periode=maand&wanneer=2024-02",
            url.scheme(),
            url.authority()
        ))
        .await?;
        let title = c.find(Locator::Css("h1")).await?.text().await?;
        assert_eq!(title, "Almere");
        screenshot(&c, "dashboard-kaart-maand.png").await?;
        let problems = accessibility_problems(&c).await?;
        assert!(problems.is_empty(), "the map page: {problems:#?}");
        // The map by keyboard: its areas are links in the tab order.
        let focusable = c
            .execute(
                "return Array.from(document.querySelectorAll('svg.kaart a')).filter(a => a.tabIndex >= 0).length",
                vec![],
            )
            .await?;
        assert!(focusable.as_u64().unwrap_or(0) >= 20, "{focusable}");
        let paths = c.find_all(Locator::Css("svg.kaart path")).await?;
        assert!(paths.len() >= 20, "{} wijken drawn", paths.len());
        // Sorting the table by households puts the largest first.
        c.find(Locator::Css("thead button[data-kolom='1']"))
            .await?
            .click()
            .await?;
        c.find(Locator::Css("thead button[data-kolom='1']"))
            .await?
            .click()
            .await?;
        let first = c
            .find(Locator::Css("tbody tr td"))
            .await?
            .attr("data-waarde")
            .await?
            .unwrap_or_default();
        let all: Vec<i64> = {
            let mut v = Vec::new();
            for td in c
                .find_all(Locator::Css("tbody tr td:nth-of-type(1)"))
                .await?
            {
                v.push(
                    td.attr("data-waarde")
                        .await?
                        .unwrap_or_default()
                        .parse()
                        .unwrap_or(-1),
                );
            }
            v
        };
        assert_eq!(first.parse::<i64>().unwrap(), *all.iter().max().unwrap());
        // The CSV for Excel: clicked, and downloaded by the browser.
        c.find(Locator::LinkText("CSV voor Excel")).await?.click().await?;
        let file = downloads.path().join("wijkradar.csv");
        for _ in 0..50 {
            if file.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let csv = std::fs::read(&file).expect("the browser downloaded the CSV");
        assert!(csv.starts_with(&[0xEF, 0xBB, 0xBF]), "byte order mark");
        let csv = String::from_utf8(csv).unwrap();
        assert!(csv.trim_start_matches('\u{feff}').starts_with("gebiedscode;gebiedsnaam;"), "{csv}");
        assert!(csv.contains("afgeschermd"));
        // Click the wijk with the most households on the map.
        c.find(Locator::Css("svg.kaart a[data-code='WK003401']"))
            .await?
            .click()
            .await?;
        let url = c.current_url().await?;
        assert!(url.path().starts_with("/wijk/WK003401"), "{url}");
        let h1 = c.find(Locator::Css("h1")).await?.text().await?;
        assert!(!h1.is_empty());
        let charts = c.find_all(Locator::Css("svg.trend")).await?;
        assert!(!charts.is_empty(), "trend charts");
        c.find(Locator::Css("path.lijn-wijk")).await?;
        screenshot(&c, "dashboard-wijk.png").await?;
        let problems = accessibility_problems(&c).await?;
        assert!(problems.is_empty(), "the wijk page: {problems:#?}");
        let base = format!("{}://{}", url.scheme(), url.authority());
        for page in ["/uitleg", "/meldingen/GM0034", "/interventies/GM0034"] {
            c.goto(&format!("{base}{page}")).await?;
            if page == "/uitleg" {
                screenshot(&c, "dashboard-uitleg.png").await?;
            }
            let problems = accessibility_problems(&c).await?;
            assert!(problems.is_empty(), "{page}: {problems:#?}");
        }
        c.goto(&format!("{base}/wijk/WK003401?periode=maand")).await?;
        // The printable report: a PDF of A4 pages.
        let pdf = c
            .print(fantoccini::wd::PrintConfiguration::default())
            .await?;
        assert!(pdf.starts_with(b"%PDF"), "a PDF");
        let text = String::from_utf8_lossy(&pdf);
        let pages: usize = text
            .split("/Count ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .expect("a page count");
        assert!(pages >= 1, "{pages} pages");
        // A4 (the print stylesheet's @page), 595.92 × 841.92 points.
        let boxes: Vec<&str> = text.split("/MediaBox [0 0 ").skip(1).collect();
        assert_eq!(boxes.len(), pages);
        assert!(boxes.iter().all(|b| b.starts_with("595.9")), "A4 pages");
        Ok::<(), fantoccini::error::CmdError>(())
    }
    .await;
    let _ = c.close().await;
    outcome.expect("the browser walk");
}
