//! Interventions in the dashboard: the gemeente's list with a form to
//! register one, and each one's report with its chart. Registration goes
//! through the same check, store and audit as the gRPC call; the report
//! through [`Query::answer_granted`].

use std::fmt::Write as _;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wijkradar_proto::v1 as pb;

use super::Dashboard;
use super::chart::{Frame, TOP};
use super::format::{decimal, esc, period};
use super::pages::{Failure, Signed, catalogue, measures, require, require_form, signed};
use crate::access::Organisation;
use crate::error::ApiError;
use crate::interventions::Interventions;
use crate::query::Query;

const LIST_CALL: &str = "Dashboard.ListInterventions";
const REGISTER_CALL: &str = "Dashboard.RegisterIntervention";
const REPORT_CALL: &str = "Dashboard.GetInterventionReport";

/// One intervention in the list.
#[derive(Debug)]
struct Listed {
    href: String,
    name: String,
    wijken: String,
    start: String,
    goal: String,
    version: u32,
}

#[derive(Template)]
#[template(path = "interventies.html")]
struct ListPage {
    title: String,
    signed_in: Option<Signed>,
    gemeente: String,
    gemeente_name: String,
    listed: Vec<Listed>,
    wijken: Vec<(String, String)>,
    measures: Vec<(String, String)>,
    csrf: String,
    /// Faults of a form sent back, and what was sent.
    faults: Vec<String>,
    form: RegisterForm,
    /// The five wijk fields and the wijk chosen in each.
    slots: Vec<(String, String)>,
    /// What registration said it can detect.
    registered: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct RegisterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    naam: String,
    #[serde(default)]
    wijk1: String,
    #[serde(default)]
    wijk2: String,
    #[serde(default)]
    wijk3: String,
    #[serde(default)]
    wijk4: String,
    #[serde(default)]
    wijk5: String,
    #[serde(default)]
    start: String,
    #[serde(default)]
    maat: String,
    #[serde(default)]
    bereik: String,
    #[serde(default)]
    richting: String,
    #[serde(default)]
    doel: String,
    #[serde(default)]
    termijn: String,
}

impl RegisterForm {
    /// An empty form with the usual goal: 20% fewer payment arrears within
    /// 24 months, reaching a fifth of the households.
    fn initial() -> RegisterForm {
        RegisterForm {
            termijn: "24".into(),
            richting: "omlaag".into(),
            doel: "20".into(),
            bereik: "20".into(),
            maat: "betalingsachterstand".into(),
            ..Default::default()
        }
    }

    fn wijken(&self) -> Vec<String> {
        [
            &self.wijk1,
            &self.wijk2,
            &self.wijk3,
            &self.wijk4,
            &self.wijk5,
        ]
        .into_iter()
        .filter(|w| !w.is_empty())
        .cloned()
        .collect()
    }

    /// The plan as the API takes it; a number that does not parse is NaN,
    /// which the plan's check refuses with its field.
    fn plan(&self, gemeente: &str) -> pb::InterventionPlan {
        let number = |s: &str| {
            s.trim()
                .replace(',', ".")
                .parse::<f64>()
                .unwrap_or(f64::NAN)
        };
        pb::InterventionPlan {
            gemeente_code: gemeente.to_owned(),
            name: self.naam.clone(),
            wijk_codes: self.wijken(),
            start_month: self.start.clone(),
            measures: vec![self.maat.clone()],
            expected_reach_percent: number(&self.bereik),
            goal: Some(pb::Goal {
                direction: match self.richting.as_str() {
                    "omlaag" => pb::GoalDirection::Decrease,
                    "omhoog" => pb::GoalDirection::Increase,
                    _ => pb::GoalDirection::Unspecified,
                } as i32,
                percent: number(&self.doel),
                horizon_months: self.termijn.trim().parse().unwrap_or(0),
            }),
        }
    }
}

/// Dutch names of a plan's fields, for the form's faults.
fn field_label(field: &str) -> &'static str {
    match field
        .trim_start_matches("plan.")
        .split('[')
        .next()
        .unwrap_or("")
    {
        "name" => "Naam",
        "wijk_codes" => "Wijken",
        "start_month" => "Startmaand",
        "measures" => "Onderwerp",
        "expected_reach_percent" => "Bereik",
        "goal.direction" => "Richting van het doel",
        "goal.percent" => "Doel",
        "goal.horizon_months" => "Termijn",
        _ => "Formulier",
    }
}

pub(super) async fn list(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Response {
    let (session, org) = match require(&d, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    respond(
        &d,
        &org,
        &session.csrf,
        &code,
        Vec::new(),
        RegisterForm::initial(),
        Vec::new(),
    )
    .await
}

/// Registers from the form: the session's CSRF token, then the same path
/// as `RegisterIntervention`. A refused form is shown again with its faults.
pub(super) async fn register(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(code): Path<String>,
    axum::Form(form): axum::Form<RegisterForm>,
) -> Response {
    let (session, org) = match require_form(&d, &headers, &form.csrf) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(e) = d.query.may_query(&org, REGISTER_CALL, &code) {
        return Failure::from(e).into_response();
    }
    let service = Interventions {
        query: Query {
            state: d.query.state.clone(),
        },
    };
    let plan = crate::convert::plan_from_proto(Some(form.plan(&code)), &d.query.state.hierarchy);
    // The faults in Dutch for the form; the audit gets the API's words.
    let dutch: Vec<String> = match &plan {
        Ok(plan) => match d.query.plan_faults(plan, d.query.state.month()) {
            Ok(faults) => faults
                .iter()
                .map(|f| format!("{}: {}", field_label(f.field), f.dutch))
                .collect(),
            Err(e) => return Failure::from(e).into_response(),
        },
        Err(ApiError::InvalidArgument(vs)) => vs
            .iter()
            .map(|v| format!("{}: geen geldige waarde", field_label(&v.field)))
            .collect(),
        Err(_) => Vec::new(),
    };
    let result = match plan {
        Ok(plan) => service.store(&org, plan, None, 0).await,
        Err(e) => Err(e),
    };
    let asked = result
        .as_ref()
        .map(|(i, _)| format!("id={} version=1", i.id))
        .unwrap_or_default();
    service.audit(&org, REGISTER_CALL, &code, &asked, &result);
    match result {
        Ok((i, detectable)) => {
            let mut said = vec![format!("Geregistreerd: {} (nummer {}).", i.plan.name, i.id)];
            said.extend(detectable.into_iter().map(|d| d.text));
            respond(
                &d,
                &org,
                &session.csrf,
                &code,
                said,
                RegisterForm::initial(),
                Vec::new(),
            )
            .await
        }
        Err(ApiError::InvalidArgument(_)) => {
            let mut page = respond(&d, &org, &session.csrf, &code, Vec::new(), form, dutch).await;
            *page.status_mut() = StatusCode::BAD_REQUEST;
            page
        }
        Err(e) => Failure::from(e).into_response(),
    }
}

async fn respond(
    d: &Dashboard,
    org: &Organisation,
    csrf: &str,
    code: &str,
    registered: Vec<String>,
    form: RegisterForm,
    faults: Vec<String>,
) -> Response {
    let page = list_page(d, org, code, csrf, registered, form, faults).await;
    signed(page, |p| &mut p.signed_in, org, csrf)
}

async fn list_page(
    d: &Dashboard,
    org: &Organisation,
    code: &str,
    csrf: &str,
    registered: Vec<String>,
    form: RegisterForm,
    faults: Vec<String>,
) -> Result<ListPage, Failure> {
    let cat = catalogue(d, org, code).await?;
    let g = d.query.may_query(org, LIST_CALL, code)?;
    let stored = d.query.state.store.interventions(g).map_err(ApiError::from);
    d.query.state.audit.record(
        &org.name,
        crate::call_event(
            LIST_CALL,
            code,
            "",
            stored.as_ref().err().map(ToString::to_string),
        ),
        false,
    );
    let name_of = |c: &str| {
        cat.areas
            .iter()
            .find(|a| a.code == c)
            .map_or_else(|| c.to_owned(), |a| a.name.clone())
    };
    let listed = stored?
        .iter()
        .map(|i| Listed {
            href: format!("/interventie/{code}/{}", i.id),
            name: i.plan.name.clone(),
            wijken: i
                .plan
                .wijken
                .iter()
                .map(|w| name_of(&w.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            start: period(&i.plan.start.to_string()),
            goal: format!(
                "{}{}% binnen {} maanden",
                if i.plan.goal.change < 0.0 { "−" } else { "+" },
                decimal(i.plan.goal.change.abs() * 100.0),
                i.plan.goal.horizon_months
            ),
            version: i.version,
        })
        .collect();
    let mut wijken: Vec<(String, String)> = cat
        .areas
        .iter()
        .filter(|a| a.level() == pb::AreaLevel::Wijk)
        .map(|a| (a.code.clone(), a.name.clone()))
        .collect();
    wijken.sort_by(|a, b| a.1.cmp(&b.1));
    let gemeente_name = name_of(code);
    Ok(ListPage {
        title: format!("{gemeente_name}: interventies"),
        signed_in: None,
        gemeente: code.to_owned(),
        gemeente_name,
        listed,
        wijken,
        measures: measures(&cat).into_iter().map(|(n, l, _)| (n, l)).collect(),
        csrf: csrf.to_owned(),
        faults,
        slots: [
            &form.wijk1,
            &form.wijk2,
            &form.wijk3,
            &form.wijk4,
            &form.wijk5,
        ]
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("wijk{}", i + 1), (*w).clone()))
        .collect(),
        form,
        registered,
    })
}

/// One measure of a report as the page shows it.
#[derive(Debug)]
struct Measure {
    label: String,
    estimated: bool,
    text: Vec<String>,
    svg: String,
    /// Period, treated rate, estimated rate without the intervention.
    rows: Vec<(String, String, String)>,
    /// Diagnostics as label and value.
    checks: Vec<(String, String)>,
    weights: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "interventie.html")]
struct ReportPage {
    title: String,
    signed_in: Option<Signed>,
    gemeente: String,
    gemeente_name: String,
    name: String,
    summary: String,
    through: String,
    measures: Vec<Measure>,
}

pub(super) async fn report(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path((code, id)): Path<(String, u32)>,
) -> Response {
    let (session, org) = match require(&d, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let page = report_page(&d, &org, &code, id).await;
    signed(page, |p| &mut p.signed_in, &org, &session.csrf)
}

async fn report_page(
    d: &Dashboard,
    org: &Organisation,
    code: &str,
    id: u32,
) -> Result<ReportPage, Failure> {
    let cat = catalogue(d, org, code).await?;
    d.query.may_query(org, REPORT_CALL, code)?;
    let req = pb::GetInterventionReportRequest {
        gemeente_code: code.to_owned(),
        id,
        placebo_draws: 0,
    };
    let answer = d
        .query
        .answer_granted(
            org,
            REPORT_CALL,
            code,
            format!("id={id}"),
            req,
            Query::intervention_report,
        )
        .await?;
    let name_of = |c: &str| {
        cat.areas
            .iter()
            .find(|a| a.code == c)
            .map_or_else(|| c.to_owned(), |a| a.name.clone())
    };
    let labels: std::collections::HashMap<String, String> =
        measures(&cat).into_iter().map(|(n, l, _)| (n, l)).collect();
    let plan = answer
        .intervention
        .as_ref()
        .and_then(|i| i.plan.clone())
        .unwrap_or_default();
    let goal = plan.goal.unwrap_or_default();
    let summary = format!(
        "In {}, vanaf {}. Doel: {}{}% binnen {} maanden. Verwacht bereik: {}% van de huishoudens.",
        plan.wijk_codes
            .iter()
            .map(|w| name_of(w))
            .collect::<Vec<_>>()
            .join(", "),
        period(&plan.start_month),
        if goal.direction() == pb::GoalDirection::Decrease {
            "−"
        } else {
            "+"
        },
        decimal(goal.percent),
        goal.horizon_months,
        decimal(plan.expected_reach_percent)
    );
    let measures = answer
        .measures
        .iter()
        .map(|m| {
            let label = labels
                .get(&m.measure)
                .cloned()
                .unwrap_or_else(|| m.measure.clone());
            let k = cat.k;
            let rows = m
                .periods
                .iter()
                .zip(m.treated.iter().zip(&m.counterfactual))
                .enumerate()
                .map(|(i, (p, (t, c)))| {
                    let imputed = m.treated_imputed.get(i).copied().unwrap_or(false);
                    let shown = if imputed {
                        format!("{} (geschat: een wijk onder {k})", decimal(*t))
                    } else {
                        decimal(*t)
                    };
                    (period(p), shown, decimal(*c))
                })
                .collect();
            let checks = m.diagnostics.as_ref().map(checks).unwrap_or_default();
            let weights = m
                .diagnostics
                .as_ref()
                .map(|diag| {
                    diag.weights
                        .iter()
                        .map(|w| {
                            (
                                name_of(&w.wijk_code),
                                format!("{}%", decimal(w.weight * 100.0)),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Measure {
                svg: if m.estimated {
                    effect_svg(&label, m)
                } else {
                    String::new()
                },
                label,
                estimated: m.estimated,
                text: m.text.clone(),
                rows,
                checks,
                weights,
            }
        })
        .collect();
    let gemeente_name = name_of(code);
    Ok(ReportPage {
        title: format!("{}: {}", gemeente_name, plan.name),
        signed_in: None,
        gemeente: code.to_owned(),
        gemeente_name,
        name: plan.name.clone(),
        summary,
        through: period(&answer.through_month),
        measures,
    })
}

fn checks(d: &pb::Diagnostics) -> Vec<(String, String)> {
    let percent = |x: f64| format!("{}%", decimal(x * 100.0));
    let mut out = vec![
        (
            "Vergelijkingswijken gebruikt".to_owned(),
            d.donors_used.to_string(),
        ),
        (
            "Waarvan echt meetellend (effectief)".to_owned(),
            decimal(d.effective_donors),
        ),
        ("Grootste gewicht".to_owned(), percent(d.largest_weight)),
        (
            "Buurwijken weggelaten".to_owned(),
            d.neighbours_left_out.to_string(),
        ),
        (
            "Wijken weggelaten (vooral cellen onder de drempel)".to_owned(),
            d.donors_left_out.to_string(),
        ),
        (
            "Geschatte cellen, behandelde wijken".to_owned(),
            percent(d.suppressed_treated),
        ),
        (
            "Geschatte cellen, vergelijkingswijken".to_owned(),
            percent(d.suppressed_donors),
        ),
        (
            "Proefwijken die vóór de start beter passen".to_owned(),
            percent(d.placebos_fitting_better),
        ),
    ];
    if let Some(f) = d.false_start_percent {
        out.push((
            "Proefstart 12 maanden eerder".into(),
            format!("{}%", decimal(f)),
        ));
    }
    out.push((
        "Gekozen direct na een piek".into(),
        if d.chosen_after_spike { "ja" } else { "nee" }.into(),
    ));
    out
}

/// The treated wijken's rate (solid) against the estimated course without
/// the intervention (dashed), with the start marked.
fn effect_svg(label: &str, m: &pb::EffectReport) -> String {
    let max = m
        .treated
        .iter()
        .chain(&m.counterfactual)
        .cloned()
        .fold(1.0_f64, f64::max);
    let frame = Frame::new(220.0, m.periods.len(), max);
    let (x, y) = (|i| frame.x(i), |v| frame.y(v));
    let mut s = frame.open(
        &format!(
            "{label} per 1.000 huishoudens in de behandelde wijken, doorgetrokken, tegen de geschatte loop zonder de interventie, gestippeld"
        ),
        m.periods.iter().map(String::as_str),
    );
    let start = x(m.periods_before as usize) - frame.slot() / 2.0;
    let _ = write!(
        s,
        r#"<line x1="{start:.1}" x2="{start:.1}" y1="{TOP}" y2="{}" class="start"/><text x="{:.1}" y="{}" class="as">start</text>"#,
        frame.floor(),
        start + 3.0,
        TOP + 10.0
    );
    let path = |values: &[f64]| -> String {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{}{:.1} {:.1}", if i == 0 { 'M' } else { 'L' }, x(i), y(*v)))
            .collect()
    };
    let _ = write!(
        s,
        r#"<path d="{}" class="lijn-gemeente"/>"#,
        path(&m.counterfactual)
    );
    let _ = write!(s, r#"<path d="{}" class="lijn-wijk"/>"#, path(&m.treated));
    // Periods where a treated wijk's cell was suppressed: an open point,
    // for the value there is the imputation model's.
    for (i, v) in m.treated.iter().enumerate() {
        if m.treated_imputed.get(i).copied().unwrap_or(false) {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" class="punt-onderdrukt"><title>{}: geschat</title></circle>"#,
                x(i),
                y(*v),
                esc(&period(&m.periods[i]))
            );
        }
    }
    s.push_str("</svg>");
    s
}
