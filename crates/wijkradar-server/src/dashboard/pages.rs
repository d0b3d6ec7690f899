//! The dashboard's pages. Every figure comes from [`Query::table`] or
//! [`Query::alerts`] through [`Query::answer_granted`]: the grant check,
//! the release path and the audit entry of the gRPC calls.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query as Params, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use wijkradar_map::Atlas;
use wijkradar_proto::v1 as pb;

use super::Dashboard;
use super::format::{csv_safe, decimal, esc, period, whole};
use super::session::{COOKIE, Session};
use crate::access::Organisation;
use crate::error::ApiError;
use crate::query::{Query, describe_table};

/// How the audit log names the dashboard's calls.
const TABLE_CALL: &str = "Dashboard.GetTable";
const CATALOGUE_CALL: &str = "Dashboard.GetCatalogue";
const ALERTS_CALL: &str = "Dashboard.GetAlerts";
const LOGIN_CALL: &str = "Dashboard.Login";

/// Months of history the pages show.
const HISTORY_MONTHS: i32 = 24;

/// Class breaks of the map for months, in households per 1,000. They are
/// the same for every month so that colours mean the same over time; a
/// quarter's and a year's are wider ([`Granularity::breaks`]).
const BREAKS: [f64; 4] = [2.5, 5.0, 10.0, 20.0];

/// The map's width in SVG units.
const MAP_WIDTH: f64 = 640.0;

type Shared = State<Arc<Dashboard>>;

/// A page that went wrong, in Dutch, with its HTTP status.
pub(super) struct Failure(pub(super) StatusCode, pub(super) String);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        let status = match &e {
            ApiError::InvalidArgument(_) | ApiError::TooLarge(_) => StatusCode::BAD_REQUEST,
            ApiError::PermissionDenied(_) | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unauthenticated | ApiError::NotAuthorised => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let text = match status {
            StatusCode::FORBIDDEN => "U hebt geen toegang tot de cijfers van deze gemeente.".into(),
            StatusCode::NOT_FOUND => "Dit bestaat niet (meer).".into(),
            StatusCode::CONFLICT => {
                "Iemand anders heeft dit intussen gewijzigd. Laad de pagina opnieuw.".into()
            }
            StatusCode::BAD_REQUEST => format!("Deze vraag kan niet worden beantwoord: {e}"),
            _ => "Er ging iets mis. Probeer het later opnieuw.".into(),
        };
        Failure(status, text)
    }
}

#[derive(Template)]
#[template(path = "fout.html")]
struct FailurePage<'a> {
    title: &'a str,
    message: &'a str,
    signed_in: Option<Signed>,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let page = FailurePage {
            title: "Fout",
            message: &self.1,
            signed_in: None,
        };
        (self.0, render(&page)).into_response()
    }
}

pub(super) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dashboard template");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Who is signed in, as the page header shows it.
#[derive(Debug, Clone)]
pub(super) struct Signed {
    pub(super) organisation: String,
    pub(super) csrf: String,
}

/// A page for a signed-in analyst: `slot` gets who is signed in (for the
/// header's log-out form), then it is rendered; a failure is its own page.
pub(super) fn signed<P: Template>(
    page: Result<P, Failure>,
    slot: fn(&mut P) -> &mut Option<Signed>,
    org: &Organisation,
    csrf: &str,
) -> Response {
    match page {
        Ok(mut page) => {
            *slot(&mut page) = Some(Signed {
                organisation: org.name.clone(),
                csrf: csrf.to_owned(),
            });
            render(&page)
        }
        Err(f) => f.into_response(),
    }
}

/// The session of the request's cookie and its organisation.
fn signed_in(d: &Dashboard, headers: &HeaderMap) -> Option<(String, Session, Organisation)> {
    let cookies = headers.get_all(header::COOKIE);
    let id = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))?
        .to_owned();
    let session = d.sessions.get(&id)?;
    let org = d
        .query
        .state
        .access()
        .organisations()
        .iter()
        .find(|o| o.name == session.organisation)?
        .clone();
    Some((id, session, org))
}

/// The signed-in organisation, or the page that asks to log in.
pub(super) fn require(
    d: &Dashboard,
    headers: &HeaderMap,
) -> Result<(Session, Organisation), Box<Response>> {
    match signed_in(d, headers) {
        Some((_, s, o)) if o.analyst.is_some() => Ok((s, o)),
        Some(_) => Err(Box::new(
            Failure(
                StatusCode::FORBIDDEN,
                "Deze organisatie mag geen cijfers inzien.".into(),
            )
            .into_response(),
        )),
        None => Err(Box::new(login_page(d, StatusCode::UNAUTHORIZED))),
    }
}

/// [`require`] for a form: also the session's CSRF token, else 403.
pub(super) fn require_form(
    d: &Dashboard,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(Session, Organisation), Box<Response>> {
    let (session, org) = require(d, headers)?;
    if !same_token(&session.csrf, csrf) {
        return Err(Box::new(
            Failure(StatusCode::FORBIDDEN, "Ongeldig formulier.".into()).into_response(),
        ));
    }
    Ok((session, org))
}

#[derive(Template)]
#[template(path = "inloggen.html")]
struct LoginPage<'a> {
    title: &'a str,
    signed_in: Option<Signed>,
    /// Whether the identity provider's login is offered.
    oidc: bool,
    /// What went wrong with a login, if one did.
    problem: &'a str,
}

pub(super) fn login_page(d: &Dashboard, status: StatusCode) -> Response {
    login_problem(d, status, "")
}

/// The login page with a message about a login that failed.
pub(super) fn login_problem(d: &Dashboard, status: StatusCode, problem: &str) -> Response {
    let page = LoginPage {
        title: "Inloggen",
        signed_in: None,
        oidc: d.oidc.is_some(),
        problem,
    };
    (status, render(&page)).into_response()
}

pub(super) async fn home(State(d): Shared, headers: HeaderMap) -> Response {
    let (_, org) = match require(&d, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match org.analyst.iter().flatten().next() {
        Some(g) => Redirect::to(&format!("/gemeente/{g}")).into_response(),
        None => Failure(
            StatusCode::FORBIDDEN,
            "Deze organisatie mag van geen enkele gemeente cijfers inzien.".into(),
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct LoginParams {
    code: String,
}

pub(super) async fn login(State(d): Shared, Params(p): Params<LoginParams>) -> Response {
    match d.sessions.log_in(&p.code) {
        Some(id) => {
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = d.sessions.cookie(&id).parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        None => login_page(&d, StatusCode::FORBIDDEN),
    }
}

/// Sends the browser to the identity provider.
pub(super) async fn oidc_start(State(d): Shared) -> Response {
    let Some(oidc) = &d.oidc else {
        return not_found().await;
    };
    match oidc.start().await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "OpenID Connect login could not start");
            login_problem(
                &d,
                StatusCode::BAD_GATEWAY,
                "De inlogdienst van uw organisatie is nu niet bereikbaar. Probeer het later opnieuw.",
            )
        }
    }
}

#[derive(Deserialize)]
pub(super) struct OidcBack {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The identity provider's answer: a session for the organisation the
/// account's groups map to, or a refusal; both audited.
pub(super) async fn oidc_back(State(d): Shared, Params(p): Params<OidcBack>) -> Response {
    let Some(oidc) = &d.oidc else {
        return not_found().await;
    };
    let audit = &d.query.state.audit;
    let (Some(code), Some(state)) = (p.code, p.state) else {
        let reason = format!(
            "the identity provider answered without a code ({})",
            crate::convert::printable(p.error.as_deref().unwrap_or("no error given"))
        );
        audit.record(
            "unknown",
            crate::call_event(LOGIN_CALL, "", "oidc", Some(reason)),
            true,
        );
        return login_problem(&d, StatusCode::FORBIDDEN, "Het inloggen is afgebroken.");
    };
    match oidc.finish(&code, &state).await {
        Ok((organisation, subject)) => {
            audit.record(
                &organisation,
                crate::call_event(
                    LOGIN_CALL,
                    "",
                    &format!("oidc subject={}", crate::convert::printable(&subject)),
                    None,
                ),
                true,
            );
            let id = d.sessions.open(organisation);
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = d.sessions.cookie(&id).parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "OpenID Connect login refused");
            audit.record(
                "unknown",
                crate::call_event(LOGIN_CALL, "", "oidc", Some(e.to_string())),
                true,
            );
            let says = match e {
                super::oidc::LoginError::NoGroup => {
                    "Uw account hoort bij geen groep die toegang heeft tot Wijkradar. Vraag uw beheerder om toegang."
                }
                super::oidc::LoginError::UnknownState => {
                    "Dit inloggen is verlopen of niet hier begonnen. Probeer het opnieuw."
                }
                _ => "Het inloggen is mislukt. Probeer het opnieuw.",
            };
            login_problem(&d, StatusCode::FORBIDDEN, says)
        }
    }
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    csrf: String,
}

pub(super) async fn logout(
    State(d): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LogoutForm>,
) -> Response {
    let Some((id, session, _)) = signed_in(&d, &headers) else {
        return login_page(&d, StatusCode::UNAUTHORIZED);
    };
    if !same_token(&session.csrf, &form.csrf) {
        return Failure(StatusCode::FORBIDDEN, "Ongeldig formulier.".into()).into_response();
    }
    d.sessions.close(&id);
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) =
        format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0").parse()
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Compares two tokens in time that does not depend on where they differ.
pub(super) fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Template)]
#[template(path = "uitleg.html")]
struct ExplanationPage<'a> {
    title: &'a str,
    signed_in: Option<Signed>,
    k: u32,
    d: u32,
    floor: u64,
}

pub(super) async fn explanation(State(d): Shared, headers: HeaderMap) -> Response {
    let state = &d.query.state;
    let page = ExplanationPage {
        title: "Uitleg bij de cijfers",
        signed_in: signed_in(&d, &headers).map(|(_, s, o)| Signed {
            organisation: o.name,
            csrf: s.csrf,
        }),
        k: state.policy.k(),
        d: state.policy.max_noise(),
        floor: state.bases.floor,
    };
    render(&page)
}

pub(super) async fn not_found() -> Response {
    Failure(StatusCode::NOT_FOUND, "Deze pagina bestaat niet.".into()).into_response()
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "stijl.css" => (
            include_bytes!("../../assets/stijl.css"),
            "text/css; charset=utf-8",
        ),
        "app.js" => (
            include_bytes!("../../assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return not_found().await,
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// The period granularity a page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Granularity {
    Maand,
    #[default]
    Kwartaal,
    Jaar,
}

impl Granularity {
    fn proto(self) -> pb::Period {
        match self {
            Granularity::Maand => pb::Period::Month,
            Granularity::Kwartaal => pb::Period::Quarter,
            Granularity::Jaar => pb::Period::Year,
        }
    }

    /// The map's class breaks: a quarter counts each household once over
    /// three months, so its rates are about twice a month's; a year's
    /// about four times.
    fn breaks(self) -> [f64; 4] {
        let factor = match self {
            Granularity::Maand => 1.0,
            Granularity::Kwartaal => 2.0,
            Granularity::Jaar => 4.0,
        };
        BREAKS.map(|b| b * factor)
    }

    fn name(self) -> &'static str {
        match self {
            Granularity::Maand => "maand",
            Granularity::Kwartaal => "kwartaal",
            Granularity::Jaar => "jaar",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Level {
    #[default]
    Wijk,
    Buurt,
}

#[derive(Deserialize, Default)]
pub(super) struct TableParams {
    /// The measure: a signal type or derived indicator.
    maat: Option<String>,
    #[serde(default)]
    periode: Granularity,
    /// The period shown (`2026-Q3`); default the last one released.
    wanneer: Option<String>,
    #[serde(default)]
    niveau: Level,
}

/// One measure the user can choose.
#[derive(Debug, Clone)]
struct MeasureOption {
    name: String,
    label: String,
    selected: bool,
}

/// One row of the figures table beside the map.
#[derive(Debug, Clone)]
struct Row {
    code: String,
    name: String,
    /// The wijk page the row links to.
    href: String,
    value: String,
    rate: String,
    /// For sorting: the rate, or -1 where there is none.
    sort_rate: f64,
    sort_value: i64,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "gemeente.html")]
struct GemeentePage {
    title: String,
    signed_in: Option<Signed>,
    gemeente: String,
    gemeente_name: String,
    measures: Vec<MeasureOption>,
    measure_label: String,
    granularity: &'static str,
    level: &'static str,
    periods: Vec<(String, String, bool)>,
    period_label: String,
    map: String,
    legend: Vec<(String, String)>,
    rows: Vec<Row>,
    missing_boundaries: usize,
    k: u32,
    export_query: String,
    suppressed_share: String,
    /// The table spans a key change that was not linked.
    key_change: bool,
}

/// The catalogue of gemeente `g`, audited.
pub(super) async fn catalogue(
    d: &Dashboard,
    org: &Organisation,
    g: &str,
) -> Result<pb::GetCatalogueResponse, ApiError> {
    d.query.may_query(org, CATALOGUE_CALL, g)?;
    let req = pb::GetCatalogueRequest {
        gemeente_code: g.to_owned(),
    };
    d.query
        .answer_granted(org, CATALOGUE_CALL, g, String::new(), req, Query::catalogue)
        .await
}

/// A table, through the API's own path, audited.
async fn table(
    d: &Dashboard,
    org: &Organisation,
    req: pb::GetTableRequest,
) -> Result<pb::GetTableResponse, ApiError> {
    let g = req.gemeente_code.clone();
    d.query.may_query(org, TABLE_CALL, &g)?;
    let asked = describe_table(&req);
    d.query
        .answer_granted(org, TABLE_CALL, &g, asked, req, Query::table)
        .await
}

/// The months a page asks for: the last [`HISTORY_MONTHS`] of the
/// gemeente's data, whole years where the period is a year.
fn month_range(cat: &pb::GetCatalogueResponse) -> Option<(String, String)> {
    let last: wijkradar_domain::Month = cat.last_month.parse().ok()?;
    let first: wijkradar_domain::Month = cat.first_month.parse().ok()?;
    let from = first.max(last.plus(1 - HISTORY_MONTHS));
    Some((from.to_string(), last.to_string()))
}

/// The measures of the catalogue (risks, then chances) and the derived
/// indicators, with their Dutch labels.
pub(super) fn measures(cat: &pb::GetCatalogueResponse) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = cat
        .signal_types
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.description.clone(),
                t.kind() == pb::SignalKind::Protective,
            )
        })
        .collect();
    out.sort_by_key(|m| m.2);
    out.extend(
        wijkradar_domain::derived::Derived::ALL
            .into_iter()
            .map(|d| (d.name().to_owned(), d.description().to_owned(), false)),
    );
    out
}

/// The colour class of a rate: 0 (lowest) to 4.
fn class_of(rate: f64, breaks: &[f64; 4]) -> usize {
    breaks.iter().take_while(|&&b| rate >= b).count()
}

fn legend(breaks: &[f64; 4]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut low = 0.0;
    for (i, &b) in breaks.iter().enumerate() {
        out.push((
            format!("k{i}"),
            format!("{} tot {}", decimal(low), decimal(b)),
        ));
        low = b;
    }
    out.push(("k4".into(), format!("{} of meer", decimal(low))));
    out
}

fn status_text(status: pb::CellStatus) -> &'static str {
    match status {
        pb::CellStatus::Released => "gepubliceerd",
        pb::CellStatus::Suppressed => "afgeschermd",
        pb::CellStatus::Pending => "nog niet vrijgegeven",
        _ => "onbekend",
    }
}

pub(super) async fn gemeente(
    State(d): Shared,
    headers: HeaderMap,
    Path(code): Path<String>,
    Params(p): Params<TableParams>,
) -> Response {
    let (session, org) = match require(&d, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let page = gemeente_page(&d, &org, &code, p).await;
    signed(page, |p| &mut p.signed_in, &org, &session.csrf)
}

/// The cells of one measure and granularity over the page's months.
struct Figures {
    cells: Vec<pb::Cell>,
    k: u32,
}

async fn figures(
    d: &Dashboard,
    org: &Organisation,
    g: &str,
    cat: &pb::GetCatalogueResponse,
    measures: Vec<String>,
    granularity: Granularity,
    level: pb::AreaLevel,
) -> Result<Figures, Failure> {
    let Some((from, to)) = month_range(cat) else {
        return Ok(Figures {
            cells: Vec::new(),
            k: cat.k,
        });
    };
    let req = pb::GetTableRequest {
        gemeente_code: g.to_owned(),
        level: level.into(),
        signal_types: measures,
        from_month: from,
        to_month: to,
        period: granularity.proto().into(),
        layout: pb::TableLayout::Cells.into(),
        ..Default::default()
    };
    let answer = table(d, org, req).await?;
    Ok(Figures {
        cells: answer.cells,
        k: answer.k,
    })
}

async fn gemeente_page(
    d: &Dashboard,
    org: &Organisation,
    code: &str,
    p: TableParams,
) -> Result<GemeentePage, Failure> {
    let cat = catalogue(d, org, code).await?;
    let all = measures(&cat);
    // Where users start: the payment arrears joined, which at realistic
    // rates shows the most released cells.
    let start = wijkradar_domain::derived::Derived::PaymentArrears.name();
    let measure = p
        .maat
        .clone()
        .filter(|m| all.iter().any(|(n, _, _)| n == m))
        .or_else(|| all.iter().find(|m| m.0 == start).map(|m| m.0.clone()))
        .or_else(|| all.first().map(|m| m.0.clone()))
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, "Geen signaaltypen.".into()))?;
    let level = match p.niveau {
        Level::Wijk => pb::AreaLevel::Wijk,
        Level::Buurt => pb::AreaLevel::Buurt,
    };
    let fig = figures(d, org, code, &cat, vec![measure.clone()], p.periode, level).await?;
    // The periods with figures, newest first; the chosen or the newest.
    let mut labels: Vec<String> = fig
        .cells
        .iter()
        .filter(|c| c.status() != pb::CellStatus::Pending)
        .map(|c| c.month.clone())
        .collect();
    labels.sort();
    labels.dedup();
    labels.reverse();
    let chosen = p
        .wanneer
        .clone()
        .filter(|w| labels.contains(w))
        .or_else(|| labels.first().cloned())
        .unwrap_or_default();
    let names: HashMap<&str, &str> = cat
        .areas
        .iter()
        .map(|a| (a.code.as_str(), a.name.as_str()))
        .collect();
    let parent: HashMap<&str, &str> = cat
        .areas
        .iter()
        .map(|a| (a.code.as_str(), a.parent_code.as_str()))
        .collect();
    let cells: BTreeMap<&str, &pb::Cell> = fig
        .cells
        .iter()
        .filter(|c| c.month == chosen)
        .map(|c| (c.area_code.as_str(), c))
        .collect();
    let query_of = |extra: &str| {
        format!(
            "maat={}&periode={}&niveau={}{extra}",
            esc(&measure),
            p.periode.name(),
            if level == pb::AreaLevel::Buurt {
                "buurt"
            } else {
                "wijk"
            }
        )
    };
    let wijk_of = |area: &str| -> String {
        if level == pb::AreaLevel::Buurt {
            parent.get(area).copied().unwrap_or(area).to_owned()
        } else {
            area.to_owned()
        }
    };
    let mut rows = Vec::new();
    let mut suppressed = 0usize;
    for (&area, cell) in &cells {
        let status = cell.status();
        if status == pb::CellStatus::Suppressed {
            suppressed += 1;
        }
        let rate = cell.rate_per_1000;
        rows.push(Row {
            code: area.to_owned(),
            name: names.get(area).copied().unwrap_or(area).to_owned(),
            href: format!("/wijk/{}?periode={}", wijk_of(area), p.periode.name()),
            value: match (status, cell.value) {
                (pb::CellStatus::Released, Some(v)) => whole(v),
                (pb::CellStatus::Suppressed, _) => format!("<{}", fig.k),
                _ => "–".into(),
            },
            rate: match rate {
                Some(r) if cell.rate_area_code != cell.area_code => {
                    format!("{} (wijk)", decimal(r))
                }
                Some(r) => decimal(r),
                None => "–".into(),
            },
            sort_rate: rate.unwrap_or(-1.0),
            sort_value: cell.value.map_or(-1, |v| v as i64),
            status: status_text(status),
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let atlas = if level == pb::AreaLevel::Buurt {
        Atlas::buurten()
    } else {
        Atlas::wijken()
    };
    let drawing = atlas.draw(cells.keys().copied(), MAP_WIDTH);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" class="kaart" role="group" aria-labelledby="kaart-titel"><title id="kaart-titel">Kaart: {title}</title><defs><pattern id="arcering" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" class="arcering-grond"/><line x1="0" y1="0" x2="0" y2="6" class="arcering-lijn"/></pattern></defs>"##,
        w = drawing.width,
        h = drawing.height,
        title = esc(&format!(
            "{} per 1.000 huishoudens, {}",
            all.iter()
                .find(|m| m.0 == measure)
                .map_or("", |m| m.1.as_str()),
            period(&chosen)
        )),
    );
    for (area, path) in &drawing.paths {
        let cell = cells[area.as_str()];
        let name = names.get(area.as_str()).copied().unwrap_or(area);
        let (class, says) = match (cell.status(), cell.rate_per_1000) {
            (pb::CellStatus::Suppressed, _) => ("onderdrukt".to_owned(), format!("<{}", fig.k)),
            (pb::CellStatus::Released, Some(r)) => (
                format!("k{}", class_of(r, &p.periode.breaks())),
                format!("{} per 1.000 huishoudens", decimal(r)),
            ),
            (pb::CellStatus::Released, None) => (
                "geen-cijfer".to_owned(),
                format!(
                    "{} huishoudens (geen huishoudensbasis)",
                    whole(cell.value.unwrap_or(0))
                ),
            ),
            _ => ("geen-cijfer".to_owned(), "nog niet vrijgegeven".to_owned()),
        };
        let label = esc(&format!("{name}: {says}"));
        let _ = write!(
            svg,
            r#"<a href="/wijk/{wijk}?periode={g}" aria-label="{label}" data-code="{code}"><path d="{path}" class="{class}"><title>{label}</title></path></a>"#,
            wijk = esc(&wijk_of(area)),
            g = p.periode.name(),
            code = esc(area),
        );
    }
    svg.push_str("</svg>");
    let gemeente_name = names.get(code).copied().unwrap_or(code).to_owned();
    let measure_label = all
        .iter()
        .find(|m| m.0 == measure)
        .map_or(measure.clone(), |m| m.1.clone());
    let suppressed_share = if cells.is_empty() {
        String::new()
    } else {
        format!(
            "{} van de {}",
            whole(suppressed as u64),
            whole(cells.len() as u64)
        )
    };
    Ok(GemeentePage {
        title: format!("{gemeente_name}: {measure_label}"),
        signed_in: None,
        gemeente: code.to_owned(),
        gemeente_name,
        measures: all
            .iter()
            .map(|(name, label, protective)| MeasureOption {
                name: name.clone(),
                label: if *protective {
                    format!("{label} (kans)")
                } else {
                    label.clone()
                },
                selected: *name == measure,
            })
            .collect(),
        measure_label,
        granularity: p.periode.name(),
        level: if level == pb::AreaLevel::Buurt {
            "buurt"
        } else {
            "wijk"
        },
        periods: labels
            .iter()
            .map(|l| (l.clone(), period(l), *l == chosen))
            .collect(),
        period_label: period(&chosen),
        map: svg,
        legend: legend(&p.periode.breaks()),
        rows,
        missing_boundaries: drawing.missing.len(),
        k: fig.k,
        export_query: query_of(&format!("&gemeente={code}&wanneer={chosen}")),
        suppressed_share,
        key_change: cells.values().any(|c| c.crosses_key_change),
    })
}

/// One chart of a wijk page.
#[derive(Debug)]
struct Chart {
    label: String,
    svg: String,
    /// The figures of the chart as a table (the accessible equivalent).
    rows: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "wijk.html")]
struct WijkPage {
    title: String,
    signed_in: Option<Signed>,
    gemeente: String,
    gemeente_name: String,
    wijk_name: String,
    granularity: &'static str,
    risks: Vec<Chart>,
    chances: Vec<Chart>,
    derived: Vec<Chart>,
    alerts: Vec<(String, String, String, String, String, String)>,
    alerts_month: String,
    k: u32,
    /// A figure or alert spans a key change that was not linked (marked †).
    key_change: bool,
}

pub(super) async fn wijk(
    State(d): Shared,
    headers: HeaderMap,
    Path(code): Path<String>,
    Params(p): Params<TableParams>,
) -> Response {
    let (session, org) = match require(&d, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let page = wijk_page(&d, &org, &code, p.periode).await;
    signed(page, |p| &mut p.signed_in, &org, &session.csrf)
}

async fn wijk_page(
    d: &Dashboard,
    org: &Organisation,
    code: &str,
    granularity: Granularity,
) -> Result<WijkPage, Failure> {
    let wijk: wijkradar_domain::WijkCode = code
        .parse()
        .map_err(|_| Failure(StatusCode::NOT_FOUND, "Deze wijk bestaat niet.".into()))?;
    let g = wijk.gemeente().to_string();
    let cat = catalogue(d, org, &g).await?;
    let all = measures(&cat);
    let names: Vec<String> = all.iter().map(|m| m.0.clone()).collect();
    let wijk_cells = figures(
        d,
        org,
        &g,
        &cat,
        names.clone(),
        granularity,
        pb::AreaLevel::Wijk,
    )
    .await?;
    let gemeente_cells = figures(
        d,
        org,
        &g,
        &cat,
        names,
        granularity,
        pb::AreaLevel::Gemeente,
    )
    .await?;
    let area_name = |c: &str| {
        cat.areas
            .iter()
            .find(|a| a.code == c)
            .map_or(c.to_owned(), |a| a.name.clone())
    };
    let mut risks = Vec::new();
    let mut chances = Vec::new();
    let mut derived = Vec::new();
    // A figure shown over a key change that was not linked (marked †).
    let mut key_change = false;
    for (name, label, protective) in &all {
        let series = |cells: &[pb::Cell], area: &str| -> Vec<pb::Cell> {
            let mut s: Vec<pb::Cell> = cells
                .iter()
                .filter(|c| c.signal_type == *name && c.area_code == area)
                .cloned()
                .collect();
            s.sort_by(|a, b| a.month.cmp(&b.month));
            s
        };
        let own = series(&wijk_cells.cells, code);
        let whole_gemeente = series(&gemeente_cells.cells, &g);
        // A measure no partner sends has nothing to show.
        if !whole_gemeente
            .iter()
            .any(|c| c.status() == pb::CellStatus::Released)
        {
            continue;
        }
        key_change |= own
            .iter()
            .any(|c| c.crosses_key_change && c.status() == pb::CellStatus::Released);
        let chart = Chart {
            label: label.clone(),
            svg: trend_svg(label, &own, &whole_gemeente, wijk_cells.k),
            rows: own
                .iter()
                .map(|c| {
                    let gem = whole_gemeente
                        .iter()
                        .find(|x| x.month == c.month)
                        .and_then(|x| x.rate_per_1000);
                    (
                        period(&c.month),
                        match (c.status(), c.rate_per_1000, c.value) {
                            (pb::CellStatus::Suppressed, _, _) => format!("<{}", wijk_cells.k),
                            (_, Some(r), _) => decimal(r) + dagger(c.crosses_key_change),
                            (_, None, Some(v)) => {
                                format!("{} huishoudens{}", whole(v), dagger(c.crosses_key_change))
                            }
                            _ => "–".into(),
                        },
                        gem.map_or("–".into(), decimal),
                    )
                })
                .collect(),
        };
        let which = wijkradar_domain::derived::Derived::from_name(name);
        if which == Some(wijkradar_domain::derived::Derived::PaymentArrears) {
            // The arrears joined, first among the worries.
            risks.insert(0, chart);
        } else if which.is_some() {
            derived.push(chart);
        } else if *protective {
            chances.push(chart);
        } else {
            risks.push(chart);
        }
    }
    // The month's alerts in this wijk and its buurten.
    let alerts_req = pb::GetAlertsRequest {
        gemeente_code: g.clone(),
        month: String::new(),
        signal_types: Vec::new(),
    };
    d.query.may_query(org, ALERTS_CALL, &g)?;
    let answer = d
        .query
        .answer_granted(
            org,
            ALERTS_CALL,
            &g,
            String::new(),
            alerts_req,
            Query::alerts,
        )
        .await?;
    let label_of = |n: &str| {
        all.iter()
            .find(|m| m.0 == n)
            .map_or(n.to_owned(), |m| m.1.clone())
    };
    let in_wijk: Vec<&pb::Alert> = answer
        .alerts
        .iter()
        .filter(|a| {
            a.area_code == code
                || a.area_code.get(2..8) == code.get(2..8) && a.area_code.starts_with("BU")
        })
        .collect();
    key_change |= in_wijk.iter().any(|a| a.crosses_key_change);
    let alerts = in_wijk
        .into_iter()
        .map(|a| {
            (
                area_name(&a.area_code),
                label_of(&a.signal_type),
                super::format::window(&a.window_first_month, &a.month),
                whole(a.released_value) + dagger(a.crosses_key_change),
                decimal(a.expected),
                decimal(a.threshold),
            )
        })
        .collect();
    let wijk_name = area_name(code);
    Ok(WijkPage {
        title: format!("{wijk_name}: trends"),
        signed_in: None,
        gemeente: g.clone(),
        gemeente_name: area_name(&g),
        wijk_name,
        granularity: granularity.name(),
        risks,
        chances,
        derived,
        alerts,
        alerts_month: period(&answer.month),
        k: wijk_cells.k,
        key_change,
    })
}

/// The mark of a figure over a key change that was not linked.
pub(super) fn dagger(crosses: bool) -> &'static str {
    if crosses { " †" } else { "" }
}

/// A trend chart: the wijk's rate per 1,000 households (its released
/// count where it has no rate) as a line with points, the gemeente's
/// rate dashed beside it; a suppressed period is a hollow grey point on
/// the axis marked `<k`, and breaks the line.
fn trend_svg(label: &str, own: &[pb::Cell], gemeente: &[pb::Cell], k: u32) -> String {
    let value = |c: &pb::Cell| -> Option<f64> {
        if c.status() != pb::CellStatus::Released {
            return None;
        }
        c.rate_per_1000.or(c.value.map(|v| v as f64))
    };
    let uses_rate = own.iter().any(|c| c.rate_per_1000.is_some());
    let gem_value =
        |c: &pb::Cell| -> Option<f64> { if uses_rate { c.rate_per_1000 } else { None } };
    let max = own
        .iter()
        .filter_map(value)
        .chain(gemeente.iter().filter_map(gem_value))
        .fold(1.0f64, f64::max);
    let frame = super::chart::Frame::new(200.0, own.len(), max);
    let (x, y) = (|i| frame.x(i), |v| frame.y(v));
    let mut s = frame.open(
        &format!(
            "Trend van {label} in de wijk{}",
            if uses_rate {
                ", per 1.000 huishoudens, met de gemeente ter vergelijking"
            } else {
                ""
            }
        ),
        own.iter().map(|c| c.month.as_str()),
    );
    let line = |s: &mut String, points: &[(usize, Option<f64>)], class: &str| {
        let mut d = String::new();
        let mut pen_down = false;
        for &(i, v) in points {
            match v {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1} {:.1}",
                        if pen_down { 'L' } else { 'M' },
                        x(i),
                        y(v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(s, r#"<path d="{d}" class="{class}"/>"#);
        }
    };
    if uses_rate {
        let gem: Vec<(usize, Option<f64>)> = own
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    i,
                    gemeente
                        .iter()
                        .find(|g| g.month == c.month)
                        .and_then(gem_value),
                )
            })
            .collect();
        line(&mut s, &gem, "lijn-gemeente");
    }
    let points: Vec<(usize, Option<f64>)> =
        own.iter().enumerate().map(|(i, c)| (i, value(c))).collect();
    line(&mut s, &points, "lijn-wijk");
    for (i, c) in own.iter().enumerate() {
        match (c.status(), value(c)) {
            (_, Some(v)) => {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" class="punt"><title>{}: {}</title></circle>"#,
                    x(i),
                    y(v),
                    esc(&period(&c.month)),
                    decimal(v)
                );
            }
            (pb::CellStatus::Suppressed, None) => {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" class="punt-onderdrukt"><title>{}: &lt;{k}</title></circle>"#,
                    x(i),
                    y(0.0),
                    esc(&period(&c.month)),
                );
            }
            _ => {}
        }
    }
    s.push_str("</svg>");
    s
}

#[derive(Deserialize)]
pub(super) struct ExportParams {
    gemeente: String,
    #[serde(flatten)]
    table: TableParams,
    /// `excel` (`;`, decimal comma, byte order mark) or `csv`.
    #[serde(default)]
    formaat: Option<String>,
}

pub(super) async fn export(
    State(d): Shared,
    headers: HeaderMap,
    Path(file): Path<String>,
    Params(p): Params<ExportParams>,
) -> Response {
    let (_, org) = match require(&d, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (made, kind, name) = match file.as_str() {
        "tabel.csv" => (
            export_csv(&d, &org, p).await,
            "text/csv; charset=utf-8",
            "wijkradar.csv",
        ),
        "kaart.geojson" => (
            export_geojson(&d, &org, p).await,
            "application/geo+json",
            "wijkradar.geojson",
        ),
        _ => return not_found().await,
    };
    match made {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, kind.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            body,
        )
            .into_response(),
        Err(f) => f.into_response(),
    }
}

/// What an export holds: the catalogue, and the figures of the measure,
/// level and kind of period it names, over the page's months.
async fn exported(
    d: &Dashboard,
    org: &Organisation,
    p: &ExportParams,
) -> Result<(pb::GetCatalogueResponse, Figures), Failure> {
    let cat = catalogue(d, org, &p.gemeente).await?;
    let measure = p
        .table
        .maat
        .clone()
        .filter(|m| measures(&cat).iter().any(|(n, _, _)| n == m))
        .ok_or_else(|| Failure(StatusCode::BAD_REQUEST, "Onbekende maat.".into()))?;
    let level = match p.table.niveau {
        Level::Wijk => pb::AreaLevel::Wijk,
        Level::Buurt => pb::AreaLevel::Buurt,
    };
    let fig = figures(
        d,
        org,
        &p.gemeente,
        &cat,
        vec![measure],
        p.table.periode,
        level,
    )
    .await?;
    Ok((cat, fig))
}

/// The figures of one measure, level and granularity as CSV, every period
/// of the page's months: for Dutch Excel (`;`, decimal comma, UTF-8 with
/// byte order mark) or plain (`,`, decimal point). The status is its own
/// column; text cells are guarded against formulas.
async fn export_csv(
    d: &Dashboard,
    org: &Organisation,
    p: ExportParams,
) -> Result<Vec<u8>, Failure> {
    let excel = p.formaat.as_deref() != Some("csv");
    let (cat, fig) = exported(d, org, &p).await?;
    let names: HashMap<&str, &str> = cat
        .areas
        .iter()
        .map(|a| (a.code.as_str(), a.name.as_str()))
        .collect();
    let sep = if excel { ';' } else { ',' };
    let number = |x: f64| {
        let s = format!("{x:.1}");
        if excel { s.replace('.', ",") } else { s }
    };
    let quote = |text: &str| {
        let t = csv_safe(text);
        if t.contains([sep, '"', '\n', '\r']) {
            format!("\"{}\"", t.replace('"', "\"\""))
        } else {
            t
        }
    };
    let mut out = String::new();
    if excel {
        out.push('\u{feff}');
    }
    let head = [
        "gebiedscode",
        "gebiedsnaam",
        "maat",
        "periode",
        "status",
        "waarde",
        "per_1000_huishoudens",
        "rate_van_gebied",
        "huishoudens_basis",
        "versie",
        "over_sleutelwissel",
    ];
    out.push_str(&head.join(&sep.to_string()));
    out.push_str("\r\n");
    for c in &fig.cells {
        let status = match c.status() {
            pb::CellStatus::Released => "gepubliceerd",
            pb::CellStatus::Suppressed => "afgeschermd",
            pb::CellStatus::Pending => "nog_niet_vrijgegeven",
            _ => "onbekend",
        };
        let fields = [
            quote(&c.area_code),
            quote(names.get(c.area_code.as_str()).copied().unwrap_or("")),
            quote(&c.signal_type),
            quote(&c.month),
            status.to_owned(),
            c.value.map_or(String::new(), |v| v.to_string()),
            c.rate_per_1000.map_or(String::new(), number),
            quote(&c.rate_area_code),
            c.household_base.map_or(String::new(), |b| b.to_string()),
            c.release_version.to_string(),
            if c.crosses_key_change { "ja" } else { "nee" }.to_owned(),
        ];
        out.push_str(&fields.join(&sep.to_string()));
        out.push_str("\r\n");
    }
    Ok(out.into_bytes())
}

/// The figures of one measure, level and period with the areas' outlines,
/// as GeoJSON (WGS84) that QGIS opens: a feature per area with a boundary,
/// its status, released value (none when suppressed) and rate.
async fn export_geojson(
    d: &Dashboard,
    org: &Organisation,
    p: ExportParams,
) -> Result<Vec<u8>, Failure> {
    let (cat, fig) = exported(d, org, &p).await?;
    let atlas = match p.table.niveau {
        Level::Wijk => Atlas::wijken(),
        Level::Buurt => Atlas::buurten(),
    };
    let latest = fig
        .cells
        .iter()
        .filter(|c| c.status() != pb::CellStatus::Pending)
        .map(|c| c.month.clone())
        .max()
        .unwrap_or_default();
    let chosen = p
        .table
        .wanneer
        .clone()
        .filter(|w| fig.cells.iter().any(|c| &c.month == w))
        .unwrap_or(latest);
    let names: HashMap<&str, &str> = cat
        .areas
        .iter()
        .map(|a| (a.code.as_str(), a.name.as_str()))
        .collect();
    let features: Vec<serde_json::Value> = fig
        .cells
        .iter()
        .filter(|c| c.month == chosen)
        .filter_map(|c| {
            let geometry = atlas.geojson_geometry(&c.area_code)?;
            Some(serde_json::json!({
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "gebiedscode": c.area_code,
                    "gebiedsnaam": names.get(c.area_code.as_str()).copied().unwrap_or(""),
                    "maat": c.signal_type,
                    "periode": c.month,
                    "status": match c.status() {
                        pb::CellStatus::Released => "gepubliceerd",
                        pb::CellStatus::Suppressed => "afgeschermd",
                        _ => "nog_niet_vrijgegeven",
                    },
                    "waarde": c.value,
                    "per_1000_huishoudens": c.rate_per_1000,
                    "versie": c.release_version,
                },
            }))
        })
        .collect();
    let collection = serde_json::json!({
        "type": "FeatureCollection",
        "name": format!("wijkradar {} {}", p.gemeente, chosen),
        "bron": "Gebiedsgrenzen: Bron: CBS (2023, CC BY 4.0). Cijfers: Wijkradar, beschermd.",
        "features": features,
    });
    Ok(collection.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_fixed_breaks() {
        let month = Granularity::Maand.breaks();
        assert_eq!(class_of(0.0, &month), 0);
        assert_eq!(class_of(2.49, &month), 0);
        assert_eq!(class_of(2.5, &month), 1);
        assert_eq!(class_of(19.9, &month), 3);
        assert_eq!(class_of(250.0, &month), 4);
        assert_eq!(legend(&month).len(), 5);
        assert_eq!(legend(&month)[4].1, "20,0 of meer");
        assert_eq!(legend(&Granularity::Kwartaal.breaks())[4].1, "40,0 of meer");
    }
}
