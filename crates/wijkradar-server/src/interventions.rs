//! Interventions: registered by analysts of a gemeente, judged on released
//! figures only.
//!
//! A report reads the wijk tables of the gemeente through [`Query::table`],
//! the same release path as every other answer: it sees released values,
//! and "suppressed" where a cell was not released. Monthly figures are used
//! when most cells are released, quarterly ones otherwise. The estimate
//! itself is `wijkradar-effect`'s.

use std::collections::HashMap;

use tonic::{Request, Response, Status};
use wijkradar_domain::intervention::{Intervention, Plan, PlanContext};
use wijkradar_domain::{AreaCode, GemeenteCode, Month, WijkCode};
use wijkradar_effect::design::{AreaSeries, Design, Progress};
use wijkradar_proto::v1 as pb;
use wijkradar_proto::v1::intervention_service_server::InterventionService;
use wijkradar_release::PeriodKind;

use crate::access::{Organisation, Role};
use crate::auth::authorize;
use crate::convert::{intervention_to_proto, period_to_proto, plan_from_proto};
use crate::error::{ApiError, Violation};
use crate::query::Query;

/// Months of figures before the start a report uses at most.
const HISTORY_MONTHS: i32 = 36;
/// Placebo draws by default, and at most.
const DEFAULT_DRAWS: u32 = 1000;
const MAX_DRAWS: u32 = 5000;

/// The gRPC service.
#[derive(Debug)]
pub struct Interventions {
    pub(crate) query: Query,
}

/// Released cells of one measure's wijk tables: period labels, and per
/// wijk a value or `None` where suppressed.
struct Released {
    labels: Vec<String>,
    months: Vec<Vec<Month>>,
    cells: HashMap<String, Vec<Option<f64>>>,
}

impl Query {
    /// The released wijk figures of `measure` over `from..=to` by `period`.
    /// A period with a cell still pending or already purged is left out.
    fn released_wijk_series(
        &self,
        g: GemeenteCode,
        measure: &str,
        from: Month,
        to: Month,
        period: PeriodKind,
    ) -> Result<Released, ApiError> {
        let periods = period.covering(from, to);
        let mut out = Released {
            labels: Vec::new(),
            months: Vec::new(),
            cells: HashMap::new(),
        };
        // One table spans at most MAX_TABLE_MONTHS months: ask in chunks of
        // whole periods.
        let per_chunk = (crate::convert::MAX_TABLE_MONTHS / period.length()) as usize;
        for chunk in periods.chunks(per_chunk.max(1)) {
            let (first, last) = (chunk[0].first(), chunk[chunk.len() - 1].last());
            let answer = self.table(pb::GetTableRequest {
                gemeente_code: g.to_string(),
                level: pb::AreaLevel::Wijk as i32,
                signal_types: vec![measure.to_owned()],
                from_month: first.to_string(),
                to_month: last.to_string(),
                period: period_to_proto(period) as i32,
                layout: pb::TableLayout::Cells as i32,
                ..Default::default()
            })?;
            let mut by_period: HashMap<&str, Vec<&pb::Cell>> = HashMap::new();
            for cell in &answer.cells {
                by_period.entry(cell.month.as_str()).or_default().push(cell);
            }
            for p in chunk {
                let label = p.to_string();
                let Some(cells) = by_period.get(label.as_str()) else {
                    continue;
                };
                let usable = cells.iter().all(|c| {
                    matches!(
                        c.status(),
                        pb::CellStatus::Released | pb::CellStatus::Suppressed
                    )
                });
                if !usable {
                    continue;
                }
                let index = out.labels.len();
                out.labels.push(label);
                out.months.push(p.months().collect());
                for c in cells {
                    let row = out.cells.entry(c.area_code.clone()).or_default();
                    row.resize(index, None);
                    row.push(match c.status() {
                        pb::CellStatus::Released => c.value.map(|v| v as f64),
                        _ => None,
                    });
                }
            }
        }
        let n = out.labels.len();
        out.cells.values_mut().for_each(|row| row.resize(n, None));
        Ok(out)
    }

    fn households(&self, w: WijkCode) -> Option<f64> {
        self.state
            .bases
            .per_area
            .get(&AreaCode::Wijk(w))
            .map(|&b| b as f64)
    }

    fn is_measure(&self, name: &str) -> bool {
        self.state.catalogue.get(name).is_some()
            || wijkradar_domain::derived::Derived::from_name(name).is_some()
    }

    /// The first month gemeente `g` has figures for that retention keeps.
    fn first_month_of(&self, g: GemeenteCode, now: Month) -> Result<Month, ApiError> {
        let kept = self.first_kept_of_all(now);
        Ok(match self.state.store.month_range_of(g)? {
            Some((first, _)) => first.max(kept),
            None => now,
        })
    }

    /// The plan's faults, each in English and Dutch.
    pub(crate) fn plan_faults(
        &self,
        plan: &Plan,
        now: Month,
    ) -> Result<Vec<wijkradar_domain::intervention::PlanError>, ApiError> {
        let is_measure = |m: &str| self.is_measure(m);
        let cx = PlanContext {
            hierarchy: &self.state.hierarchy,
            is_measure: &is_measure,
            now,
            first_month: self.first_month_of(plan.gemeente, now)?,
        };
        Ok(plan.check(&cx))
    }

    fn check_plan(&self, plan: &Plan, now: Month) -> Result<(), ApiError> {
        let faults = self.plan_faults(plan, now)?;
        if faults.is_empty() {
            return Ok(());
        }
        Err(ApiError::InvalidArgument(
            faults
                .into_iter()
                .map(|f| Violation::new(format!("plan.{}", f.field), f.reason))
                .collect(),
        ))
    }
}

/// The comparison wijken ([`wijkradar_effect::design::choose_donors`]):
/// the gemeente's others with a household base, except `busy` ones (with
/// an intervention of their own), neighbours of the treated wijken left
/// out while enough remain.
fn comparison_wijken(query: &Query, plan: &Plan, busy: &[WijkCode]) -> (Vec<WijkCode>, usize) {
    let atlas = wijkradar_map::Atlas::wijken();
    let neighbours: Vec<WijkCode> = plan
        .wijken
        .iter()
        .flat_map(|w| atlas.neighbours(&w.to_string()))
        .filter_map(|c| c.parse().ok())
        .collect();
    let others: Vec<WijkCode> = query
        .state
        .hierarchy
        .wijken_of(plan.gemeente)
        .filter(|w| !plan.wijken.contains(w) && !busy.contains(w) && query.households(*w).is_some())
        .collect();
    wijkradar_effect::design::choose_donors(plan.wijken.len(), &others, &neighbours)
}

/// One measure's data, ready for the estimator.
struct Prepared {
    design: Design,
    labels: Vec<String>,
    donors: Vec<WijkCode>,
    neighbours_left_out: usize,
    period: PeriodKind,
}

fn prepare(
    query: &Query,
    plan: &Plan,
    measure: &str,
    through: Month,
    draws: u32,
    history_only: bool,
    busy: &[WijkCode],
) -> Result<Result<Prepared, String>, ApiError> {
    let g = plan.gemeente;
    let now = query.state.month();
    let first = query
        .first_month_of(g, now)?
        .max(plan.start.plus(-HISTORY_MONTHS));
    if through < first {
        return Ok(Err("Er zijn nog geen cijfers om mee te werken.".into()));
    }
    let (donors, neighbours_left_out) = comparison_wijken(query, plan, busy);
    let mut period = PeriodKind::Month;
    let mut released = query.released_wijk_series(g, measure, first, through, period)?;
    let rows = |codes: &[WijkCode]| -> Vec<Vec<Option<f64>>> {
        codes
            .iter()
            .filter_map(|w| released.cells.get(&w.to_string()).cloned())
            .collect()
    };
    let (treated_rows, donor_rows) = (rows(&plan.wijken), rows(&donors));
    let quarters = wijkradar_effect::design::prefers_quarters(
        treated_rows.iter().map(Vec::as_slice),
        donor_rows.iter().map(Vec::as_slice),
    );
    if quarters {
        period = PeriodKind::Quarter;
        // Whole quarters only: the first must start at or after `first`,
        // the last must have ended by `through`.
        let quarter_of = |m: Month| PeriodKind::Quarter.covering(m, m)[0];
        let from = match quarter_of(first).first() {
            q if q < first => q.plus(3),
            q => q,
        };
        let to = match quarter_of(through).last() {
            q if q > through => q.plus(-3),
            q => q,
        };
        if to < from {
            return Ok(Err("Er is nog geen heel kwartaal met cijfers.".into()));
        }
        released = query.released_wijk_series(g, measure, from, to, period)?;
    }
    // The first period holding the start: a quarter that starts before it
    // counts as after (its effect is diluted, never claimed early). With
    // `history_only`, the periods all lie before the start.
    let start = match released
        .months
        .iter()
        .position(|ms| ms.iter().any(|m| *m >= plan.start))
    {
        Some(s) => s,
        None if history_only => released.labels.len(),
        None => {
            return Ok(Err(
                "Er zijn nog geen vrijgegeven cijfers van na de start.".into()
            ));
        }
    };
    if start < 4 {
        return Ok(Err(format!(
            "Te weinig vrijgegeven cijfers van vóór de start ({start} perioden); er zijn er minstens 4 nodig."
        )));
    }
    let series = |w: &WijkCode| -> Option<AreaSeries> {
        Some(AreaSeries {
            households: query.households(*w)?,
            cells: released.cells.get(&w.to_string())?.clone(),
        })
    };
    let treated: Vec<AreaSeries> = plan.wijken.iter().filter_map(series).collect();
    if treated.len() != plan.wijken.len() {
        return Ok(Err(
            "Van een van de wijken is het aantal huishoudens niet bekend.".into(),
        ));
    }
    let (donors, donor_series): (Vec<WijkCode>, Vec<AreaSeries>) =
        donors.iter().filter_map(|w| Some((*w, series(w)?))).unzip();
    let design = Design {
        treated,
        donors: donor_series,
        start,
        threshold: query.state.policy.k() as f64,
        periods_per_year: 12 / period.length() as usize,
        draws: draws as usize,
        seed: u64::from(
            plan.wijken[0]
                .body()
                .iter()
                .fold(0u32, |h, b| h.wrapping_mul(31) ^ u32::from(*b)),
        ),
    };
    Ok(Ok(Prepared {
        design,
        labels: released.labels,
        donors,
        neighbours_left_out,
        period,
    }))
}

/// The wijken of the gemeente's other interventions (all but `own`): they
/// do not compare, for their course is not the course without one.
fn busy_wijken(
    query: &Query,
    g: GemeenteCode,
    own: Option<u32>,
) -> Result<Vec<WijkCode>, ApiError> {
    Ok(query
        .state
        .store
        .interventions(g)?
        .into_iter()
        .filter(|i| Some(i.id) != own)
        .flat_map(|i| i.plan.wijken)
        .collect())
}

/// The smallest effect the design can detect, from the figures before the
/// start, per measure.
fn detectable(
    query: &Query,
    plan: &Plan,
    busy: &[WijkCode],
) -> Result<Vec<pb::Detectable>, ApiError> {
    let now = query.state.month();
    let through = now.plus(-1).min(plan.start.plus(-1));
    let mut out = Vec::new();
    for measure in &plan.measures {
        let d = match prepare(query, plan, measure, through, 40, true, busy)? {
            Ok(p) => {
                let horizon = (plan.goal.horizon_months / p.period.length()).max(1) as usize;
                p.design
                    .detectable_effect(horizon)
                    .ok()
                    .map(|d| (d, p.period.length()))
            }
            Err(_) => None,
        };
        let goal = plan.goal.change.abs() * 100.0;
        out.push(match d {
            Some((d, months)) => {
                let percent = d.relative * 100.0;
                let below = goal < percent;
                let mut text = format!(
                    "Met deze wijken en cijfers is een effect vanaf ongeveer {}% te zien (uit {} proefstarts in de geschiedenis, telkens {} maanden erna).",
                    crate::dashboard::format::decimal(percent),
                    d.backtests,
                    d.window as u32 * months
                );
                if below {
                    text.push_str(&format!(
                        " Het doel ({}%) is kleiner dan dat: ook als het gehaald wordt, laten de cijfers het waarschijnlijk niet zien. Meer wijken, een langere looptijd of een maat met meer signalen helpen.",
                        crate::dashboard::format::decimal(goal)
                    ));
                }
                pb::Detectable {
                    measure: measure.clone(),
                    percent,
                    window_months: d.window as u32 * months,
                    backtests: d.backtests as u32,
                    goal_below_detectable: below,
                    text,
                }
            }
            None => pb::Detectable {
                measure: measure.clone(),
                percent: 0.0,
                window_months: 0,
                backtests: 0,
                goal_below_detectable: false,
                text: "De geschiedenis is te kort om te zeggen welk effect te zien zou zijn.".into(),
            },
        });
    }
    Ok(out)
}

impl Interventions {
    async fn analyst(
        &self,
        request: &Request<impl Sized>,
        call: &str,
        code: &str,
    ) -> Result<(Organisation, GemeenteCode), Status> {
        let analyst = authorize(&self.query.state, request, Role::Analyst, call)?;
        let g = self.query.may_query(&analyst, call, code)?;
        Ok((analyst, g))
    }

    pub(crate) fn audit(
        &self,
        who: &Organisation,
        call: &str,
        g: &str,
        asked: &str,
        result: &Result<impl Sized, ApiError>,
    ) {
        let refused = result.as_ref().err().map(ToString::to_string);
        self.query
            .state
            .audit
            .record(&who.name, crate::call_event(call, g, asked, refused), false);
    }

    /// Checks the plan, stores `version`, and tells what it can detect.
    pub(crate) async fn store(
        &self,
        who: &Organisation,
        plan: Plan,
        id: Option<u32>,
        expected_version: u32,
    ) -> Result<(Intervention, Vec<pb::Detectable>), ApiError> {
        let query = Query {
            state: self.query.state.clone(),
        };
        let checked_plan = plan.clone();
        let (next_id, version, detectable) = tokio::task::spawn_blocking(move || {
            let now = query.state.month();
            query.check_plan(&checked_plan, now)?;
            let g = checked_plan.gemeente;
            let (next_id, version) = match id {
                None => {
                    let last = query.state.store.interventions(g)?.last().map_or(0, |i| i.id);
                    (last + 1, 1)
                }
                Some(id) => {
                    let current = query
                        .state
                        .store
                        .intervention(g, id)?
                        .ok_or_else(|| ApiError::NotFound(format!("{g} has no intervention {id}")))?;
                    if current.version != expected_version {
                        return Err(ApiError::Conflict(format!(
                            "intervention {id} is at version {}, not {expected_version}: read it again and repeat the change",
                            current.version
                        )));
                    }
                    (id, current.version + 1)
                }
            };
            let busy = busy_wijken(&query, g, Some(next_id))?;
            Ok((next_id, version, detectable(&query, &checked_plan, &busy)?))
        })
        .await
        .map_err(|_| ApiError::Internal)??;
        let intervention = Intervention {
            id: next_id,
            version,
            plan,
            changed_by: who.name.clone(),
            changed_at: self.query.state.clock.unix_seconds(),
        };
        match self.query.state.queue.put_intervention(&intervention).await {
            Ok(()) => Ok((intervention, detectable)),
            Err(wijkradar_store::StoreError::VersionTaken) => Err(ApiError::Conflict(format!(
                "intervention {next_id} version {version} was stored meanwhile: read it again and repeat the change"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

#[tonic::async_trait]
impl InterventionService for Interventions {
    async fn register_intervention(
        &self,
        request: Request<pb::RegisterInterventionRequest>,
    ) -> Result<Response<pb::RegisterInterventionResponse>, Status> {
        const CALL: &str = "RegisterIntervention";
        let code = request
            .get_ref()
            .plan
            .as_ref()
            .map(|p| crate::convert::printable(&p.gemeente_code))
            .unwrap_or_default();
        let (analyst, _) = self.analyst(&request, CALL, &code).await?;
        let result = match plan_from_proto(request.into_inner().plan, &self.query.state.hierarchy) {
            Ok(plan) => self.store(&analyst, plan, None, 0).await,
            Err(e) => Err(e),
        };
        let asked = result
            .as_ref()
            .map(|(i, _)| format!("id={} version=1", i.id))
            .unwrap_or_default();
        self.audit(&analyst, CALL, &code, &asked, &result);
        let (intervention, detectable) = result?;
        Ok(Response::new(pb::RegisterInterventionResponse {
            intervention: Some(intervention_to_proto(&intervention)),
            detectable,
        }))
    }

    async fn update_intervention(
        &self,
        request: Request<pb::UpdateInterventionRequest>,
    ) -> Result<Response<pb::UpdateInterventionResponse>, Status> {
        const CALL: &str = "UpdateIntervention";
        let r = request.get_ref();
        let code = r
            .plan
            .as_ref()
            .map(|p| crate::convert::printable(&p.gemeente_code))
            .unwrap_or_default();
        let asked = format!("id={} expected_version={}", r.id, r.expected_version);
        let (analyst, _) = self.analyst(&request, CALL, &code).await?;
        let r = request.into_inner();
        let result = match plan_from_proto(r.plan, &self.query.state.hierarchy) {
            Ok(plan) => {
                self.store(&analyst, plan, Some(r.id), r.expected_version)
                    .await
            }
            Err(e) => Err(e),
        };
        self.audit(&analyst, CALL, &code, &asked, &result);
        let (intervention, detectable) = result?;
        Ok(Response::new(pb::UpdateInterventionResponse {
            intervention: Some(intervention_to_proto(&intervention)),
            detectable,
        }))
    }

    async fn list_interventions(
        &self,
        request: Request<pb::ListInterventionsRequest>,
    ) -> Result<Response<pb::ListInterventionsResponse>, Status> {
        const CALL: &str = "ListInterventions";
        let code = crate::convert::printable(&request.get_ref().gemeente_code);
        let (analyst, g) = self.analyst(&request, CALL, &code).await?;
        let result = self
            .query
            .state
            .store
            .interventions(g)
            .map_err(ApiError::from);
        self.audit(&analyst, CALL, &code, "", &result);
        Ok(Response::new(pb::ListInterventionsResponse {
            interventions: result?.iter().map(intervention_to_proto).collect(),
        }))
    }

    async fn get_intervention_report(
        &self,
        request: Request<pb::GetInterventionReportRequest>,
    ) -> Result<Response<pb::GetInterventionReportResponse>, Status> {
        const CALL: &str = "GetInterventionReport";
        let code = crate::convert::printable(&request.get_ref().gemeente_code);
        let (analyst, _) = self.analyst(&request, CALL, &code).await?;
        let r = request.into_inner();
        let asked = format!("id={}", r.id);
        let answer = self
            .query
            .answer_granted(&analyst, CALL, &code, asked, r, Query::intervention_report)
            .await?;
        Ok(Response::new(answer))
    }
}

impl Query {
    /// The report of one intervention: for each measure, the estimate and
    /// everything beside it, and the text in Dutch.
    pub(crate) fn intervention_report(
        &self,
        r: pb::GetInterventionReportRequest,
    ) -> Result<pb::GetInterventionReportResponse, ApiError> {
        let g = crate::convert::gemeente_from_proto(&r.gemeente_code, &self.state.hierarchy)?;
        if r.placebo_draws > MAX_DRAWS {
            return Err(ApiError::InvalidArgument(vec![Violation::new(
                "placebo_draws",
                format!("at most {MAX_DRAWS}"),
            )]));
        }
        let draws = if r.placebo_draws == 0 {
            DEFAULT_DRAWS
        } else {
            r.placebo_draws
        };
        let intervention = self
            .state
            .store
            .intervention(g, r.id)?
            .ok_or_else(|| ApiError::NotFound(format!("{g} has no intervention {}", r.id)))?;
        let through = self.state.month().plus(-1);
        let busy = busy_wijken(self, g, Some(r.id))?;
        let mut measures = Vec::new();
        for measure in &intervention.plan.measures {
            measures.push(self.measure_report(
                &intervention.plan,
                measure,
                through,
                draws,
                &busy,
            )?);
        }
        Ok(pb::GetInterventionReportResponse {
            intervention: Some(intervention_to_proto(&intervention)),
            through_month: through.to_string(),
            measures,
        })
    }

    fn measure_report(
        &self,
        plan: &Plan,
        measure: &str,
        through: Month,
        draws: u32,
        busy: &[WijkCode],
    ) -> Result<pb::EffectReport, ApiError> {
        let not_estimated = |text: String| pb::EffectReport {
            measure: measure.to_owned(),
            estimated: false,
            text: vec![text],
            ..Default::default()
        };
        let p = match prepare(self, plan, measure, through, draws, false, busy)? {
            Ok(p) => p,
            Err(why) => return Ok(not_estimated(why)),
        };
        let a = match p.design.analyse() {
            Ok(a) => a,
            Err(wijkradar_effect::EffectError::TooFewComparisons { donors, .. }) => {
                return Ok(not_estimated(format!(
                    "Geen schatting: er zijn {donors} bruikbare vergelijkingswijken, te weinig voor een eerlijk interval (er zijn minstens {} proefwijken nodig). Wijken waarvan meer dan de helft van de cellen onder {} blijft, tellen niet mee.",
                    wijkradar_effect::design::MIN_PLACEBOS,
                    self.state.policy.k()
                )));
            }
            Err(_) => {
                return Ok(not_estimated(
                    "Geen schatting: te weinig perioden met vrijgegeven cijfers.".into(),
                ));
            }
        };
        let months = p.period.length();
        let start = p.design.start;
        let elapsed_months = (p.labels.len() - start) as u32 * months;
        let progress = wijkradar_effect::design::progress(
            &a.relative,
            plan.goal.change,
            elapsed_months as usize,
            plan.goal.horizon_months as usize,
        );
        let mut weights: Vec<pb::DonorWeight> = p
            .donors
            .iter()
            .zip(&a.estimate.omega)
            .filter(|(_, w)| **w > 0.0)
            .map(|(c, w)| pb::DonorWeight {
                wijk_code: c.to_string(),
                weight: *w,
            })
            .collect();
        weights.sort_by(|x, y| y.weight.total_cmp(&x.weight));
        weights.truncate(10);
        let d = &a.diagnostics;
        let report = pb::EffectReport {
            measure: measure.to_owned(),
            estimated: true,
            period: if months == 1 {
                pb::ReportPeriod::Month
            } else {
                pb::ReportPeriod::Quarter
            } as i32,
            periods_before: start as u32,
            periods_after: (p.labels.len() - start) as u32,
            treated_rate_before: a.treated_rate.0,
            treated_rate_after: a.treated_rate.1,
            comparison_rate_before: a.comparison_rate.0,
            comparison_rate_after: a.comparison_rate.1,
            effect_percent: a.relative.estimate * 100.0,
            effect_percent_low: a.relative.low * 100.0,
            effect_percent_high: a.relative.high * 100.0,
            effect_households_per_period: a.households_per_period.estimate,
            effect_households_low: a.households_per_period.low,
            effect_households_high: a.households_per_period.high,
            p_value: a.inference.as_ref().map_or(1.0, |i| i.p_value),
            placebos: a.inference.as_ref().map_or(0, |i| i.placebos as u32),
            synthetic_control_percent: a.synthetic_control * 100.0,
            diff_in_diff_percent: a.diff_in_diff * 100.0,
            poisson_percent: a.poisson * 100.0,
            diagnostics: Some(pb::Diagnostics {
                pre_fit: d.pre_fit,
                placebos_fitting_better: d.placebos_fitting_better,
                false_start_percent: d.false_start.map(|f| f * 100.0),
                effective_donors: d.effective_donors,
                largest_weight: d.largest_weight,
                donors_used: d.donors_used as u32,
                donors_left_out: d.donors_left_out as u32,
                neighbours_left_out: p.neighbours_left_out as u32,
                suppressed_treated: d.suppressed_treated,
                suppressed_donors: d.suppressed_donors,
                chosen_after_spike: d.chosen_after_spike,
                weights,
            }),
            progress: match progress {
                Progress::OnCourse => pb::Progress::OnCourse,
                Progress::TooEarly => pb::Progress::TooEarly,
                Progress::NotOnCourse => pb::Progress::NotOnCourse,
            } as i32,
            periods: p.labels.clone(),
            treated: a.estimate.treated.clone(),
            counterfactual: a.estimate.counterfactual.clone(),
            treated_imputed: a.treated_imputed.clone(),
            text: Vec::new(),
        };
        let names: Vec<String> = plan
            .wijken
            .iter()
            .map(|w| {
                self.state
                    .hierarchy
                    .name(AreaCode::Wijk(*w))
                    .map_or_else(|| w.to_string(), str::to_owned)
            })
            .collect();
        let described = self
            .state
            .catalogue
            .get(measure)
            .map(|t| t.description.clone())
            .or_else(|| {
                wijkradar_domain::derived::Derived::from_name(measure)
                    .map(|d| d.description().to_owned())
            })
            .unwrap_or_else(|| measure.to_owned());
        let text = crate::intervention_text::paragraphs(
            plan,
            &names,
            &described,
            &report,
            self.state.policy.k(),
        );
        Ok(pb::EffectReport { text, ..report })
    }
}
