//! The alerts page: the month's rising areas of a gemeente, ranked as
//! `GetAlerts` gives them, each with a status the analysts keep (nieuw,
//! bekeken, opgepakt, afgesloten), stored through the writer and audited.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query as Params, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use wijkradar_proto::v1 as pb;
use wijkradar_store::{AlertRef, AlertStatus, AlertStatusRecord};

use super::Dashboard;
use super::format::{decimal, period, whole};
use super::pages::{Failure, Signed, catalogue, measures, require, require_form, signed};
use crate::access::Organisation;
use crate::query::Query;

const ALERTS_CALL: &str = "Dashboard.GetAlerts";
const STATUS_CALL: &str = "Dashboard.SetAlertStatus";

/// The statuses in the order an analyst moves through them.
const STATUSES: [(AlertStatus, &str, &str); 4] = [
    (AlertStatus::New, "nieuw", "Nieuw"),
    (AlertStatus::Seen, "bekeken", "Bekeken"),
    (AlertStatus::TakenUp, "opgepakt", "Opgepakt"),
    (AlertStatus::Closed, "afgesloten", "Afgesloten"),
];

fn status_name(s: AlertStatus) -> &'static str {
    STATUSES.iter().find(|x| x.0 == s).map_or("nieuw", |x| x.1)
}

/// One alert as the page shows it.
#[derive(Debug)]
struct Row {
    area: String,
    area_name: String,
    href: String,
    level: &'static str,
    measure: String,
    measure_label: String,
    /// The months counted together (`feb t/m jul 2026`).
    window: String,
    seen: String,
    expected: String,
    bound: String,
    status: &'static str,
    /// Who set the status, when there is one.
    set_by: String,
}

#[derive(Template)]
#[template(path = "meldingen.html")]
struct AlertsPage {
    title: String,
    signed_in: Option<Signed>,
    gemeente: String,
    gemeente_name: String,
    month: String,
    month_label: String,
    rows: Vec<Row>,
    series_tested: u32,
    statuses: Vec<(&'static str, &'static str)>,
    csrf: String,
    /// An alert's months span a key change that was not linked (marked †).
    key_change: bool,
}

#[derive(Deserialize)]
pub(super) struct AlertsParams {
    maand: Option<String>,
}

pub(super) async fn page(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(code): Path<String>,
    Params(p): Params<AlertsParams>,
) -> Response {
    let (session, org) = match require(&d, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let page = alerts_page(&d, &org, &code, p.maand.unwrap_or_default(), &session.csrf).await;
    signed(page, |p| &mut p.signed_in, &org, &session.csrf)
}

async fn alerts_page(
    d: &Dashboard,
    org: &Organisation,
    code: &str,
    month: String,
    csrf: &str,
) -> Result<AlertsPage, Failure> {
    let cat = catalogue(d, org, code).await?;
    let g = d.query.may_query(org, ALERTS_CALL, code)?;
    let asked = format!("month={}", crate::convert::printable(&month));
    let req = pb::GetAlertsRequest {
        gemeente_code: code.to_owned(),
        month,
        signal_types: Vec::new(),
    };
    let answer = d
        .query
        .answer_granted(org, ALERTS_CALL, code, asked, req, Query::alerts)
        .await?;
    let names: HashMap<&str, &str> = cat
        .areas
        .iter()
        .map(|a| (a.code.as_str(), a.name.as_str()))
        .collect();
    let labels: HashMap<String, String> =
        measures(&cat).into_iter().map(|(n, l, _)| (n, l)).collect();
    let stored: HashMap<(String, String), AlertStatusRecord> = match answer.month.parse() {
        Ok(m) => d
            .query
            .state
            .store
            .alert_statuses(g, m)
            .map_err(crate::error::ApiError::from)?
            .into_iter()
            .map(|(a, r)| ((a.area, a.measure), r))
            .collect(),
        Err(_) => HashMap::new(),
    };
    let rows = answer
        .alerts
        .iter()
        .map(|a| {
            let record = stored.get(&(a.area_code.clone(), a.signal_type.clone()));
            let wijk = if a.area_code.starts_with("BU") {
                format!("WK{}", &a.area_code[2..8])
            } else {
                a.area_code.clone()
            };
            Row {
                area: a.area_code.clone(),
                area_name: names
                    .get(a.area_code.as_str())
                    .copied()
                    .unwrap_or(&a.area_code)
                    .to_owned(),
                href: format!("/wijk/{wijk}?periode=maand"),
                level: if a.level() == pb::AreaLevel::Buurt {
                    "buurt"
                } else {
                    "wijk"
                },
                measure: a.signal_type.clone(),
                measure_label: labels
                    .get(&a.signal_type)
                    .cloned()
                    .unwrap_or_else(|| a.signal_type.clone()),
                window: super::format::window(&a.window_first_month, &a.month),
                seen: whole(a.released_value) + super::pages::dagger(a.crosses_key_change),
                expected: decimal(a.expected),
                bound: decimal(a.threshold),
                status: record.map_or("nieuw", |r| status_name(r.status)),
                set_by: record.map_or(String::new(), |r| r.by.clone()),
            }
        })
        .collect();
    let gemeente_name = names.get(code).copied().unwrap_or(code).to_owned();
    Ok(AlertsPage {
        title: format!("{gemeente_name}: meldingen"),
        signed_in: None,
        gemeente: code.to_owned(),
        gemeente_name,
        month_label: period(&answer.month),
        month: answer.month,
        rows,
        series_tested: answer.series_tested,
        key_change: answer.alerts.iter().any(|a| a.crosses_key_change),
        statuses: STATUSES.iter().map(|s| (s.1, s.2)).collect(),
        csrf: csrf.to_owned(),
    })
}

#[derive(Deserialize)]
pub(super) struct StatusForm {
    csrf: String,
    maand: String,
    gebied: String,
    maat: String,
    status: String,
}

/// Sets an alert's status: the session's CSRF token, the analyst's grant
/// for the gemeente, an area of that gemeente, a known measure and status;
/// then stored (flushed) and audited before the page is shown again.
pub(super) async fn set_status(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(code): Path<String>,
    axum::Form(form): axum::Form<StatusForm>,
) -> Response {
    let (_, org) = match require_form(&d, &headers, &form.csrf) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match store_status(&d, &org, &code, &form).await {
        Ok(()) => Redirect::to(&format!("/meldingen/{code}?maand={}", form.maand)).into_response(),
        Err(f) => f.into_response(),
    }
}

async fn store_status(
    d: &Dashboard,
    org: &Organisation,
    code: &str,
    form: &StatusForm,
) -> Result<(), Failure> {
    let state = &d.query.state;
    let g = d.query.may_query(org, STATUS_CALL, code)?;
    let bad = |what: &str| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("Ongeldig formulier: {what}."),
        )
    };
    let month: wijkradar_domain::Month = form.maand.parse().map_err(|_| bad("maand"))?;
    let area: wijkradar_domain::AreaCode = form.gebied.parse().map_err(|_| bad("gebied"))?;
    if area.gemeente() != g || !state.hierarchy.contains(area) {
        return Err(bad("gebied hoort niet bij deze gemeente"));
    }
    let known_measure = state
        .catalogue
        .types()
        .iter()
        .any(|t| t.name.as_str() == form.maat)
        || wijkradar_domain::derived::Derived::from_name(&form.maat).is_some();
    if !known_measure {
        return Err(bad("maat"));
    }
    let status = STATUSES
        .iter()
        .find(|s| s.1 == form.status)
        .map(|s| s.0)
        .ok_or_else(|| bad("status"))?;
    let alert = AlertRef {
        gemeente: g,
        month,
        area: area.to_string(),
        measure: form.maat.clone(),
    };
    let record = AlertStatusRecord {
        status,
        by: org.name.clone(),
        at: d.query.state.clock.unix_seconds(),
    };
    state
        .queue
        .set_alert_status(alert, record)
        .await
        .map_err(crate::error::ApiError::from)?;
    state.audit.record(
        &org.name,
        crate::call_event(
            STATUS_CALL,
            code,
            &format!(
                "month={month} area={area} measure={} status={}",
                form.maat, form.status
            ),
            None,
        ),
        true,
    );
    Ok(())
}
