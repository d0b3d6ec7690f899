//! Boundary conversions from protobuf requests to domain values. Every
//! check a request can fail is here, reported per field, before anything
//! reaches the store.

use wijkradar_domain::{
    AreaCode, AreaLevel, Batch, BatchId, BuurtCode, Catalogue, GemeenteCode, Hierarchy, Month,
    PartnerPseudonym, PseudonymKeyId, Severity, Signal, SignalTypeName, WijkCode,
};
use wijkradar_proto::v1 as pb;
use wijkradar_release::{NotReleased, PeriodKind};

use crate::error::{ApiError, Violation};

/// What a batch is checked against.
#[derive(Debug)]
pub struct IngestRules<'a> {
    pub hierarchy: &'a Hierarchy,
    pub catalogue: &'a Catalogue,
    pub max_batch_signals: usize,
    /// The current month; later months are refused.
    pub now: Month,
}

/// A validated batch and the digest of its content.
#[derive(Debug)]
pub struct CheckedBatch {
    pub batch: Batch,
    pub digest: [u8; 32],
}

/// The previous epoch's key of a batch in a key change's overlap: a valid
/// id of the same domain (its first part) as the batch's key, not that key.
fn previous_key_from_proto(id: &str, key_id: &PseudonymKeyId) -> Result<PseudonymKeyId, ApiError> {
    let field = "batch.previous_key_id";
    let invalid = |why: String| ApiError::InvalidArgument(vec![Violation::new(field, why)]);
    let previous = PseudonymKeyId::new(id).map_err(|e| invalid(e.to_string()))?;
    if previous == *key_id {
        return Err(invalid(
            "must name the previous epoch's key, not key_id".into(),
        ));
    }
    if previous.domain() != key_id.domain() {
        return Err(invalid(format!(
            "must be of the same pseudonymisation domain as key_id ({})",
            key_id.domain()
        )));
    }
    Ok(previous)
}

pub fn batch_from_proto(
    req: pb::SubmitRequest,
    rules: &IngestRules<'_>,
) -> Result<CheckedBatch, ApiError> {
    let pb_batch = req
        .batch
        .ok_or_else(|| ApiError::InvalidArgument(vec![Violation::new("batch", "is required")]))?;
    let id = BatchId::new(&pb_batch.batch_id)
        .map_err(|e| ApiError::InvalidArgument(vec![Violation::new("batch.batch_id", e)]))?;
    let key_id = PseudonymKeyId::new(&pb_batch.key_id)
        .map_err(|e| ApiError::InvalidArgument(vec![Violation::new("batch.key_id", e)]))?;
    let previous_key_id = match pb_batch.previous_key_id.as_str() {
        "" => None,
        id => Some(previous_key_from_proto(id, &key_id)?),
    };
    let n = pb_batch.signals.len();
    if n == 0 {
        return Err(ApiError::InvalidArgument(vec![Violation::new(
            "batch.signals",
            "a batch holds at least one signal",
        )]));
    }
    if n > rules.max_batch_signals {
        return Err(ApiError::TooLarge(Violation::new(
            "batch.signals",
            format!(
                "a batch holds at most {} signals; split it into smaller batches",
                rules.max_batch_signals
            ),
        )));
    }

    let mut violations = Vec::new();
    let mut signals = Vec::with_capacity(n);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(&[key_id.as_str().len() as u8]);
    digest.update(key_id.as_str().as_bytes());
    for (i, s) in pb_batch.signals.into_iter().enumerate() {
        let field = |name: &str| format!("batch.signals[{i}].{name}");
        let pseudonym = PartnerPseudonym::try_from(s.pseudonym.as_slice())
            .map_err(|e| Violation::new(field("pseudonym"), e));
        let buurt = s
            .buurt_code
            .parse::<BuurtCode>()
            .map_err(|e| Violation::new(field("buurt_code"), e))
            .and_then(|b| {
                if rules.hierarchy.contains(AreaCode::Buurt(b)) {
                    Ok(b)
                } else {
                    Err(Violation::new(
                        field("buurt_code"),
                        format!("{b} is not a buurt in the CBS classification"),
                    ))
                }
            });
        let signal_type = match rules.catalogue.get(&s.signal_type) {
            Some(def) => Ok(def.name.clone()),
            None => Err(Violation::new(
                field("signal_type"),
                format!(
                    "`{}` is not in the signal catalogue",
                    printable(&s.signal_type)
                ),
            )),
        };
        let month = s
            .month
            .parse::<Month>()
            .and_then(|m| m.not_after(rules.now))
            .map_err(|e| Violation::new(field("month"), e));
        let household = if s.household_pseudonym.is_empty() {
            Ok(None)
        } else {
            PartnerPseudonym::try_from(s.household_pseudonym.as_slice())
                .map(Some)
                .map_err(|e| Violation::new(field("household_pseudonym"), e))
        };
        let previous = match (&previous_key_id, s.previous_epoch_pseudonym.is_empty()) {
            (_, true) => Ok(None),
            (Some(_), false) => PartnerPseudonym::try_from(s.previous_epoch_pseudonym.as_slice())
                .map(Some)
                .map_err(|e| Violation::new(field("previous_epoch_pseudonym"), e)),
            (None, false) => Err(Violation::new(
                field("previous_epoch_pseudonym"),
                "is sent only in a batch that names its previous_key_id",
            )),
        };
        let severity = match s.severity {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .ok()
                .and_then(Severity::new)
                .map(Some)
                .ok_or_else(|| Violation::new(field("severity"), "must be 1, 2 or 3")),
        };
        match (
            pseudonym,
            buurt,
            signal_type,
            month,
            severity,
            household,
            previous,
        ) {
            (
                Ok(pseudonym),
                Ok(buurt),
                Ok(signal_type),
                Ok(month),
                Ok(severity),
                Ok(household),
                Ok(previous),
            ) => {
                update_digest(
                    &mut digest,
                    &pseudonym,
                    &buurt,
                    &signal_type,
                    month,
                    severity,
                );
                // A batch without household pseudonyms digests as before,
                // so resending an older agent's batch is recognised.
                if let Some(h) = &household {
                    digest.update(b"H");
                    digest.update(h.as_bytes());
                }
                if let Some(p) = &previous {
                    digest.update(b"E");
                    digest.update(p.as_bytes());
                }
                signals.push(Signal {
                    pseudonym,
                    buurt,
                    signal_type,
                    month,
                    severity,
                    household,
                    previous,
                });
            }
            (a, b, c, d, e, f, g) => {
                violations.extend(
                    [
                        a.err(),
                        b.err(),
                        c.err(),
                        d.err(),
                        e.err(),
                        f.err(),
                        g.err(),
                    ]
                    .into_iter()
                    .flatten(),
                );
            }
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::InvalidArgument(violations));
    }
    Ok(CheckedBatch {
        batch: Batch {
            id,
            key_id,
            previous_key_id,
            signals,
        },
        digest: digest
            .finish()
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes"),
    })
}

fn update_digest(
    d: &mut ring::digest::Context,
    p: &PartnerPseudonym,
    b: &BuurtCode,
    t: &SignalTypeName,
    m: Month,
    s: Option<Severity>,
) {
    d.update(p.as_bytes());
    d.update(b.body());
    d.update(&[t.as_str().len() as u8]);
    d.update(t.as_str().as_bytes());
    d.update(&m.index().to_be_bytes());
    d.update(&[s.map_or(0, |s| s.get())]);
}

/// Echoes user text in an error only as short printable ASCII.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .take(48)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// A validated table request.
#[derive(Debug)]
pub struct TableQuery {
    pub gemeente: GemeenteCode,
    pub level: AreaLevel,
    pub signal_types: Vec<SignalTypeName>,
    /// Derived indicators, when named.
    pub derived: Vec<wijkradar_domain::derived::Derived>,
    pub from: Month,
    pub to: Month,
    pub period: PeriodKind,
    /// Answer in the compact columns form.
    pub columns: bool,
    /// Open data: differential privacy instead of cell keys.
    pub open_data: bool,
}

/// Longest month range one table may span.
pub const MAX_TABLE_MONTHS: u32 = 36;

pub fn gemeente_from_proto(code: &str, hierarchy: &Hierarchy) -> Result<GemeenteCode, ApiError> {
    let g: GemeenteCode = code
        .parse()
        .map_err(|e| ApiError::InvalidArgument(vec![Violation::new("gemeente_code", e)]))?;
    if !hierarchy.contains(AreaCode::Gemeente(g)) {
        return Err(ApiError::InvalidArgument(vec![Violation::new(
            "gemeente_code",
            format!("{g} is not a gemeente in the CBS classification"),
        )]));
    }
    Ok(g)
}

pub fn level_from_proto(level: i32) -> Result<AreaLevel, ApiError> {
    match pb::AreaLevel::try_from(level) {
        Ok(pb::AreaLevel::Buurt) => Ok(AreaLevel::Buurt),
        Ok(pb::AreaLevel::Wijk) => Ok(AreaLevel::Wijk),
        Ok(pb::AreaLevel::Gemeente) => Ok(AreaLevel::Gemeente),
        _ => Err(ApiError::InvalidArgument(vec![Violation::new(
            "level",
            "must be AREA_LEVEL_BUURT, AREA_LEVEL_WIJK or AREA_LEVEL_GEMEENTE",
        )])),
    }
}

pub fn level_to_proto(level: AreaLevel) -> pb::AreaLevel {
    match level {
        AreaLevel::Buurt => pb::AreaLevel::Buurt,
        AreaLevel::Wijk => pb::AreaLevel::Wijk,
        AreaLevel::Gemeente => pb::AreaLevel::Gemeente,
    }
}

/// The requested signal types, every catalogue type when none is named;
/// unknown names become violations of `signal_types[i]`, names that `other`
/// knows (derived indicators) are passed over.
fn signal_types_besides(
    names: &[String],
    catalogue: &Catalogue,
    other: impl Fn(&str) -> bool,
    violations: &mut Vec<Violation>,
) -> Vec<SignalTypeName> {
    if names.is_empty() {
        return catalogue.types().iter().map(|t| t.name.clone()).collect();
    }
    let mut types = Vec::new();
    for (i, t) in names.iter().enumerate() {
        if other(t) {
            continue;
        }
        match catalogue.get(t) {
            Some(def) => types.push(def.name.clone()),
            None => violations.push(Violation::new(
                format!("signal_types[{i}]"),
                format!("`{}` is not in the signal catalogue", printable(t)),
            )),
        }
    }
    types
}

/// The named derived indicators and signal types: every catalogue type when
/// nothing is named, none when only derived indicators are.
fn types_and_derived_from_proto(
    names: &[String],
    catalogue: &Catalogue,
    violations: &mut Vec<Violation>,
) -> (Vec<wijkradar_domain::derived::Derived>, Vec<SignalTypeName>) {
    use wijkradar_domain::derived::Derived;
    let derived: Vec<Derived> = names.iter().filter_map(|t| Derived::from_name(t)).collect();
    let types = if !derived.is_empty() && derived.len() == names.len() {
        Vec::new()
    } else {
        signal_types_besides(
            names,
            catalogue,
            |t| Derived::from_name(t).is_some(),
            violations,
        )
    };
    (derived, types)
}

/// A validated alerts request.
#[derive(Debug)]
pub struct AlertsQuery {
    pub gemeente: GemeenteCode,
    pub month: Month,
    pub signal_types: Vec<SignalTypeName>,
    /// Derived indicators to test too (all when no type is named).
    pub derived: Vec<wijkradar_domain::derived::Derived>,
}

/// `now` is the current month: the tested month must have ended.
pub fn alerts_query_from_proto(
    req: pb::GetAlertsRequest,
    hierarchy: &Hierarchy,
    catalogue: &Catalogue,
    now: Month,
) -> Result<AlertsQuery, ApiError> {
    use wijkradar_domain::derived::Derived;
    let gemeente = gemeente_from_proto(&req.gemeente_code, hierarchy)?;
    let mut violations = Vec::new();
    let (mut derived, signal_types) =
        types_and_derived_from_proto(&req.signal_types, catalogue, &mut violations);
    if req.signal_types.is_empty() {
        derived = Derived::ALL.to_vec();
    }
    let month = if req.month.is_empty() {
        Some(now.plus(-1))
    } else {
        match req.month.parse::<Month>() {
            Ok(m) if m < now => Some(m),
            Ok(_) => {
                violations.push(Violation::new(
                    "month",
                    "has not ended yet: alerts are for ended months",
                ));
                None
            }
            Err(e) => {
                violations.push(Violation::new("month", e));
                None
            }
        }
    };
    match month {
        Some(month) if violations.is_empty() => Ok(AlertsQuery {
            gemeente,
            month,
            signal_types,
            derived,
        }),
        _ => Err(ApiError::InvalidArgument(violations)),
    }
}

pub fn table_query_from_proto(
    req: pb::GetTableRequest,
    hierarchy: &Hierarchy,
    catalogue: &Catalogue,
) -> Result<TableQuery, ApiError> {
    let gemeente = gemeente_from_proto(&req.gemeente_code, hierarchy)?;
    let level = level_from_proto(req.level)?;
    let mut violations = Vec::new();
    let (derived, signal_types) =
        types_and_derived_from_proto(&req.signal_types, catalogue, &mut violations);
    let period = match pb::Period::try_from(req.period) {
        Ok(pb::Period::Unspecified | pb::Period::Month) => PeriodKind::Month,
        Ok(pb::Period::Quarter) => PeriodKind::Quarter,
        Ok(pb::Period::Year) => PeriodKind::Year,
        Ok(pb::Period::Last2Months) => PeriodKind::Window(2),
        Ok(pb::Period::Last3Months) => PeriodKind::Window(3),
        Ok(pb::Period::Last6Months) => PeriodKind::Window(6),
        Err(_) => {
            violations.push(Violation::new(
                "period",
                "must be PERIOD_MONTH, PERIOD_QUARTER, PERIOD_YEAR or PERIOD_LAST_2_MONTHS, _3_ or _6_",
            ));
            PeriodKind::Month
        }
    };
    let columns = match pb::TableLayout::try_from(req.layout) {
        Ok(pb::TableLayout::Unspecified | pb::TableLayout::Cells) => false,
        Ok(pb::TableLayout::Columns) => true,
        Err(_) => {
            violations.push(Violation::new(
                "layout",
                "must be TABLE_LAYOUT_CELLS or TABLE_LAYOUT_COLUMNS",
            ));
            false
        }
    };
    let from = req
        .from_month
        .parse::<Month>()
        .map_err(|e| violations.push(Violation::new("from_month", e)))
        .ok();
    let to = req
        .to_month
        .parse::<Month>()
        .map_err(|e| violations.push(Violation::new("to_month", e)))
        .ok();
    if let (Some(f), Some(t)) = (from, to) {
        if t < f {
            violations.push(Violation::new("to_month", "must not be before from_month"));
        } else if t.index() - f.index() >= MAX_TABLE_MONTHS {
            violations.push(Violation::new(
                "to_month",
                format!("a table spans at most {MAX_TABLE_MONTHS} months"),
            ));
        }
    }
    if req.open_data {
        if !matches!(period, PeriodKind::Quarter | PeriodKind::Year) {
            violations.push(Violation::new(
                "period",
                "open data (open_data) is released per quarter or year only",
            ));
        }
        if !matches!(level, AreaLevel::Wijk | AreaLevel::Gemeente) {
            violations.push(Violation::new(
                "level",
                "open data (open_data) is released for wijken and the gemeente only",
            ));
        }
    }
    match (from, to) {
        (Some(from), Some(to)) if violations.is_empty() => Ok(TableQuery {
            gemeente,
            level,
            signal_types,
            derived,
            from,
            to,
            period,
            columns,
            open_data: req.open_data,
        }),
        _ => Err(ApiError::InvalidArgument(violations)),
    }
}

pub fn period_to_proto(kind: PeriodKind) -> pb::Period {
    match kind {
        PeriodKind::Month => pb::Period::Month,
        PeriodKind::Quarter => pb::Period::Quarter,
        PeriodKind::Year => pb::Period::Year,
        PeriodKind::Window(2) => pb::Period::Last2Months,
        PeriodKind::Window(3) => pb::Period::Last3Months,
        PeriodKind::Window(_) => pb::Period::Last6Months,
    }
}

/// A period that has no release, as the API marks its cells.
pub fn not_released_to_proto(not: NotReleased) -> pb::CellStatus {
    match not {
        NotReleased::Purged => pb::CellStatus::Purged,
        NotReleased::Pending => pb::CellStatus::Pending,
    }
}

/// An intervention plan from the API. Codes and the month must parse; the
/// rest is checked by [`wijkradar_domain::intervention::Plan::check`].
pub fn plan_from_proto(
    plan: Option<pb::InterventionPlan>,
    hierarchy: &Hierarchy,
) -> Result<wijkradar_domain::intervention::Plan, ApiError> {
    use wijkradar_domain::intervention::{Goal, Plan};
    let p =
        plan.ok_or_else(|| ApiError::InvalidArgument(vec![Violation::new("plan", "is required")]))?;
    let mut faults = Vec::new();
    let gemeente = match gemeente_from_proto(&p.gemeente_code, hierarchy) {
        Ok(g) => Some(g),
        Err(ApiError::InvalidArgument(vs)) => {
            faults.extend(
                vs.into_iter()
                    .map(|v| Violation::new(format!("plan.{}", v.field), v.description)),
            );
            None
        }
        Err(e) => return Err(e),
    };
    let mut wijken = Vec::new();
    for (i, w) in p.wijk_codes.iter().enumerate() {
        match w.parse::<WijkCode>() {
            Ok(w) => wijken.push(w),
            Err(e) => faults.push(Violation::new(format!("plan.wijk_codes[{i}]"), e)),
        }
    }
    let start = p
        .start_month
        .parse::<Month>()
        .map_err(|e| faults.push(Violation::new("plan.start_month", e)))
        .ok();
    let sign = match p.goal.as_ref().map(|g| g.direction()) {
        Some(pb::GoalDirection::Decrease) => -1.0,
        Some(pb::GoalDirection::Increase) => 1.0,
        _ => {
            faults.push(Violation::new(
                "plan.goal.direction",
                "must be DECREASE or INCREASE",
            ));
            0.0
        }
    };
    let goal = p.goal.unwrap_or_default();
    match (gemeente, start) {
        (Some(gemeente), Some(start)) if faults.is_empty() => Ok(Plan {
            gemeente,
            name: p.name.trim().to_owned(),
            wijken,
            start,
            measures: p.measures,
            reach: p.expected_reach_percent / 100.0,
            goal: Goal {
                change: sign * goal.percent / 100.0,
                horizon_months: goal.horizon_months,
            },
        }),
        _ => Err(ApiError::InvalidArgument(faults)),
    }
}

pub fn intervention_to_proto(i: &wijkradar_domain::intervention::Intervention) -> pb::Intervention {
    let p = &i.plan;
    pb::Intervention {
        id: i.id,
        version: i.version,
        plan: Some(pb::InterventionPlan {
            gemeente_code: p.gemeente.to_string(),
            name: p.name.clone(),
            wijk_codes: p.wijken.iter().map(ToString::to_string).collect(),
            start_month: p.start.to_string(),
            measures: p.measures.clone(),
            expected_reach_percent: p.reach * 100.0,
            goal: Some(pb::Goal {
                direction: if p.goal.change < 0.0 {
                    pb::GoalDirection::Decrease
                } else {
                    pb::GoalDirection::Increase
                } as i32,
                percent: p.goal.change.abs() * 100.0,
                horizon_months: p.goal.horizon_months,
            }),
        }),
        changed_by: i.changed_by.clone(),
        changed_at: i.changed_at,
    }
}
