//! Interventions end to end: registered over mutual TLS with precise
//! errors, versioned without lost changes, kept across a restart, audited,
//! and a built-in fall found in the released figures.

use tonic::Code;
use wijkradar_domain::{Hierarchy, Month};
use wijkradar_proto::v1 as pb;
use wijkradar_proto::v1::intervention_service_client::InterventionServiceClient;
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer, current_month};

use crate::dashboard::{audit_log, browser_of, csrf_of};
use crate::{batch, submit};

const TREATED: &str = "WK003403";
/// Months of signals, up to last month; the start lies 10 months back.
const MONTHS: i32 = 34;
const START_BACK: i32 = 10;

/// 24 wijken of Almere with 60–135 households with rent arrears a
/// month; in the treated wijk 40% fewer from the start.
async fn server_with_history(dashboard: bool) -> TestServer {
    let server = TestServer::start_with(|c| {
        if dashboard {
            crate::local_dashboard(c);
        }
    })
    .await;
    let h = Hierarchy::netherlands_2023();
    let g = "GM0034".parse().unwrap();
    let mut wijken: Vec<_> = h.wijken_of(g).collect();
    wijken.sort();
    let last = current_month().plus(-1);
    let start = current_month().plus(-START_BACK);
    let mut batches = Vec::new();
    let mut state = 0x9e37_79b9_u64;
    for (i, w) in wijken.iter().take(24).enumerate() {
        let buurt = h.buurten_of_wijk(*w).min().expect("a buurt");
        for back in 0..MONTHS {
            let month: Month = last.plus(-back);
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let base = 60 + (i as u64 * 3) + (state >> 60);
            let n = if w.to_string() == TREATED && month >= start {
                base * 6 / 10
            } else {
                base
            };
            let seed = (i as u64) << 32 | u64::from(month.index());
            batches.push(batch(
                &format!("i-{w}-{month}"),
                "huurachterstand",
                &buurt.to_string(),
                &month.to_string(),
                seed,
                n,
            ));
        }
    }
    let outcome = submit(server.channel(PARTNER_A).await, batches).await;
    assert!(outcome.iter().all(Result::is_ok), "{outcome:?}");
    server
}

fn plan(wijken: &[&str], start: Month) -> pb::InterventionPlan {
    pb::InterventionPlan {
        gemeente_code: "GM0034".into(),
        name: "Schuldhulp aan huis".into(),
        wijk_codes: wijken.iter().map(|w| w.to_string()).collect(),
        start_month: start.to_string(),
        measures: vec!["huurachterstand".into()],
        expected_reach_percent: 30.0,
        goal: Some(pb::Goal {
            direction: pb::GoalDirection::Decrease as i32,
            percent: 20.0,
            horizon_months: 24,
        }),
    }
}

async fn client(
    server: &TestServer,
    name: &str,
) -> InterventionServiceClient<tonic::transport::Channel> {
    InterventionServiceClient::new(server.channel(name).await)
}

#[tokio::test]
async fn an_intervention_is_checked_versioned_kept_audited_and_its_effect_found() {
    let mut server = server_with_history(false).await;
    let start = current_month().plus(-START_BACK);
    let mut c = client(&server, ANALYST).await;
    let register = |p: pb::InterventionPlan| pb::RegisterInterventionRequest { plan: Some(p) };

    // Precise refusals, nothing stored.
    let other = c
        .register_intervention(register(plan(&["WK036301"], start)))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument);
    assert_eq!(crate::bad_fields(&other), ["plan.wijk_codes"]);
    assert!(
        other.message().contains("WK036301 lies in GM0363"),
        "{}",
        other.message()
    );
    let ahead = c
        .register_intervention(register(plan(&[TREATED], current_month().plus(14))))
        .await
        .unwrap_err();
    assert_eq!(crate::bad_fields(&ahead), ["plan.start_month"]);
    let short = c
        .register_intervention(register(plan(&[TREATED], current_month().plus(-20))))
        .await
        .unwrap_err();
    assert_eq!(crate::bad_fields(&short), ["plan.start_month"]);
    assert!(
        short.message().contains("needs 24 months"),
        "{}",
        short.message()
    );
    let mut no_goal = plan(&[TREATED], start);
    no_goal.goal = None;
    let no_goal = c
        .register_intervention(register(no_goal))
        .await
        .unwrap_err();
    assert_eq!(crate::bad_fields(&no_goal), ["plan.goal.direction"]);
    // Another gemeente's analysts only; a partner not at all.
    let mut elsewhere = plan(&["WK036301"], start);
    elsewhere.gemeente_code = "GM0363".into();
    let denied = c
        .register_intervention(register(elsewhere))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let partner = client(&server, PARTNER_A)
        .await
        .list_interventions(pb::ListInterventionsRequest {
            gemeente_code: "GM0034".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(partner.code(), Code::PermissionDenied);

    // Registered, with the smallest detectable effect.
    let registered = c
        .register_intervention(register(plan(&[TREATED], start)))
        .await
        .unwrap()
        .into_inner();
    let i = registered.intervention.unwrap();
    assert_eq!((i.id, i.version, i.changed_by.as_str()), (1, 1, ANALYST));
    let d = &registered.detectable[0];
    assert!(d.percent > 0.0 && d.backtests >= 3, "{d:?}");

    // A change against an old version is refused; against the latest it
    // makes version 2.
    let mut changed = plan(&[TREATED], start);
    changed.name = "Schuldhulp aan huis, uitgebreid".into();
    let stale = c
        .update_intervention(pb::UpdateInterventionRequest {
            id: 1,
            expected_version: 2,
            plan: Some(changed.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let v2 = c
        .update_intervention(pb::UpdateInterventionRequest {
            id: 1,
            expected_version: 1,
            plan: Some(changed),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v2.intervention.unwrap().version, 2);

    // Kept across a restart.
    server.restart().await;
    let mut c = client(&server, ANALYST).await;
    let listed = c
        .list_interventions(pb::ListInterventionsRequest {
            gemeente_code: "GM0034".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .interventions;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].version,
            listed[0].plan.as_ref().unwrap().name.as_str()
        ),
        (2, "Schuldhulp aan huis, uitgebreid")
    );

    // The report finds the 40% fall.
    let report = c
        .get_intervention_report(pb::GetInterventionReportRequest {
            gemeente_code: "GM0034".into(),
            id: 1,
            placebo_draws: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let m = &report.measures[0];
    assert!(m.estimated, "{:?}", m.text);
    assert_eq!(m.period(), pb::ReportPeriod::Month);
    assert_eq!(m.periods_after, START_BACK as u32);
    assert!(
        m.effect_percent < -25.0 && m.effect_percent > -55.0,
        "{}",
        m.effect_percent
    );
    assert!(m.effect_percent_high < 0.0, "{m:?}");
    assert!(m.p_value < 0.2, "{}", m.p_value);
    assert_eq!(m.progress(), pb::Progress::OnCourse);
    assert_eq!(m.treated.len(), m.periods.len());
    let text = m.text.join("\n");
    assert!(text.contains("eerste aanwijzingen"), "{text}");
    assert!(
        !text.contains("bewezen effectief") && !text.contains("is bewezen"),
        "{text}"
    );
    // Another wijk, untouched, shows no clear effect.
    let mut calm = plan(&["WK003405"], start);
    calm.name = "Controle".into();
    c.register_intervention(register(calm)).await.unwrap();
    let calm = c
        .get_intervention_report(pb::GetInterventionReportRequest {
            gemeente_code: "GM0034".into(),
            id: 2,
            placebo_draws: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let m = &calm.measures[0];
    assert!(m.estimated, "{:?}", m.text);
    assert!(m.effect_percent.abs() < 10.0, "{m:?}");
    assert_ne!(m.progress(), pb::Progress::OnCourse, "{m:?}");

    // Every call is in the audit log, refusals with their reason.
    let calls: Vec<(String, String, String, String)> = audit_log(&server)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["entry"].clone())
        .filter(|e| {
            e["call"]
                .as_str()
                .is_some_and(|c| c.contains("Intervention"))
        })
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (
                field("call"),
                field("gemeente"),
                field("request"),
                field("outcome"),
            )
        })
        .collect();
    let has = |call: &str, gemeente: &str, request: &str, outcome: &str| {
        calls.iter().any(|c| {
            (c.0.as_str(), c.1.as_str(), c.2.as_str(), c.3.as_str())
                == (call, gemeente, request, outcome)
        })
    };
    assert!(
        has("RegisterIntervention", "GM0034", "", "refused"),
        "{calls:?}"
    );
    assert!(has("RegisterIntervention", "GM0363", "", "refused"));
    assert!(has(
        "RegisterIntervention",
        "GM0034",
        "id=1 version=1",
        "ok"
    ));
    assert!(has(
        "UpdateIntervention",
        "GM0034",
        "id=1 expected_version=2",
        "refused"
    ));
    assert!(has(
        "UpdateIntervention",
        "GM0034",
        "id=1 expected_version=1",
        "ok"
    ));
    assert!(has("GetInterventionReport", "GM0034", "id=1", "ok"));
}

#[tokio::test]
async fn the_dashboard_registers_with_dutch_faults_and_shows_the_report_with_its_chart() {
    let server = server_with_history(true).await;
    let mut web = browser_of(&server);
    let url = server
        .dashboard()
        .and_then(|d| d.login_url.clone())
        .unwrap();
    web.log_in(&url).await;
    let page = web.get("/interventies/GM0034").await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("Nog geen interventies") && html.contains("Registreren"));
    let token = csrf_of(&html);
    let start = current_month().plus(-START_BACK).to_string();
    let form = |wijk: &str, doel: &str, csrf: &str| {
        format!(
            "csrf={csrf}&naam=Schuldhulp+aan+huis&wijk1={wijk}&start={start}&maat=huurachterstand&bereik=30&richting=omlaag&doel={doel}&termijn=24"
        )
    };
    // A forged form is refused; faults come back in Dutch, nothing stored.
    let forged = web
        .request(
            "POST",
            "/interventies/GM0034",
            Some(&form(TREATED, "20", "00")),
        )
        .await;
    assert_eq!(forged.status, 403);
    let bad = web
        .request(
            "POST",
            "/interventies/GM0034",
            Some(&form("WK036301", "0", &token)),
        )
        .await;
    assert_eq!(bad.status, 400);
    let text = bad.text();
    assert!(
        text.contains("Wijken: WK036301 ligt in GM0363, niet in GM0034"),
        "{text}"
    );
    assert!(text.contains("Doel: een percentage boven 0"), "{text}");
    assert!(
        server
            .store()
            .interventions("GM0034".parse().unwrap())
            .unwrap()
            .is_empty()
    );
    // Registered: said what it can detect, listed, and reported.
    let done = web
        .request(
            "POST",
            "/interventies/GM0034",
            Some(&form(TREATED, "20", &token)),
        )
        .await;
    assert_eq!(done.status, 200);
    let text = done.text();
    assert!(
        text.contains("Geregistreerd: Schuldhulp aan huis (nummer 1)"),
        "{text}"
    );
    assert!(text.contains("effect vanaf ongeveer"), "{text}");
    assert!(text.contains("href=\"/interventie/GM0034/1\""));
    let report = web.get("/interventie/GM0034/1").await;
    assert_eq!(report.status, 200);
    let html = report.text();
    assert!(html.contains("eerste aanwijzingen"), "{html}");
    assert!(
        html.contains("<svg")
            && html.contains("class=\"lijn-wijk\"")
            && html.contains("class=\"start\"")
    );
    assert!(html.contains("Zonder interventie (geschat)"));
    // Another gemeente's interventions are not the analyst's.
    assert_eq!(web.get("/interventies/GM0363").await.status, 403);
    assert_eq!(web.get("/interventie/GM0034/7").await.status, 404);
}
