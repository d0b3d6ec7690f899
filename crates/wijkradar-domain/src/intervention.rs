//! Interventions a gemeente registers to learn whether they work: which
//! wijken, from when, aimed at what, and the goal.

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{GemeenteCode, Hierarchy, Month, WijkCode};

/// Treated wijken at most: with more, a wijkaanpak is a policy for the
/// whole gemeente and has no comparison left.
pub const MAX_WIJKEN: usize = 5;
/// Months of released figures needed before the start.
pub const MIN_HISTORY_MONTHS: u32 = 24;
/// How far ahead a start may lie.
pub const MAX_MONTHS_AHEAD: u32 = 12;
pub const MAX_NAME_CHARS: usize = 120;
pub const MAX_MEASURES: usize = 5;
pub const HORIZON_MONTHS: std::ops::RangeInclusive<u32> = 3..=60;

/// What a gemeente plans: the part an analyst writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    #[serde(with = "as_text")]
    pub gemeente: GemeenteCode,
    pub name: String,
    #[serde(with = "as_texts")]
    pub wijken: Vec<WijkCode>,
    #[serde(with = "as_text")]
    pub start: Month,
    /// Signal types or derived indicators, by name.
    pub measures: Vec<String>,
    /// Share of the wijken's households it expects to reach, in (0, 1].
    pub reach: f64,
    pub goal: Goal,
}

/// The change aimed at, against the course without the intervention.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    /// Signed relative change: −0.2 for 20% fewer.
    pub change: f64,
    pub horizon_months: u32,
}

/// A stored version of an intervention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intervention {
    pub id: u32,
    pub version: u32,
    pub plan: Plan,
    /// Organisation that stored this version, and when (Unix seconds).
    pub changed_by: String,
    pub changed_at: i64,
}

/// A field of a plan at fault, and why: in English for the API, in Dutch
/// for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub field: &'static str,
    pub reason: String,
    pub dutch: String,
}

/// What a plan is checked against.
#[derive(Clone, Copy)]
pub struct PlanContext<'a> {
    pub hierarchy: &'a Hierarchy,
    /// Whether a name is a signal type or derived indicator.
    pub is_measure: &'a dyn Fn(&str) -> bool,
    /// The current month.
    pub now: Month,
    /// The first month the aggregator still keeps figures for.
    pub first_month: Month,
}

impl std::fmt::Debug for PlanContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanContext")
            .field("now", &self.now)
            .field("first_month", &self.first_month)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Every fault of the plan, in field order; empty when it is sound.
    pub fn check(&self, cx: &PlanContext<'_>) -> Vec<PlanError> {
        let mut faults = Vec::new();
        let mut fault = |field: &'static str, reason: String, dutch: String| {
            faults.push(PlanError {
                field,
                reason,
                dutch,
            })
        };
        let name = self.name.trim();
        if name.is_empty() {
            fault("name", "must not be empty".into(), "vul een naam in".into());
        } else if name.chars().count() > MAX_NAME_CHARS {
            fault(
                "name",
                format!("at most {MAX_NAME_CHARS} characters"),
                format!("hooguit {MAX_NAME_CHARS} tekens"),
            );
        } else if name.chars().any(char::is_control) {
            fault(
                "name",
                "must not contain control characters".into(),
                "bevat ongeldige tekens".into(),
            );
        }
        let n = self.wijken.len();
        if n == 0 || n > MAX_WIJKEN {
            fault(
                "wijk_codes",
                format!("needs 1 to {MAX_WIJKEN} wijken, got {n}"),
                format!("kies één tot {MAX_WIJKEN} wijken (nu {n})"),
            );
        }
        let g = self.gemeente;
        let known: Vec<WijkCode> = cx.hierarchy.wijken_of(g).collect();
        if known.is_empty() {
            fault(
                "gemeente_code",
                format!("{g} has no wijken in the area codes"),
                format!("{g} heeft geen wijken in de gebiedsindeling"),
            );
        }
        for (i, w) in self.wijken.iter().enumerate() {
            if w.gemeente() != g {
                fault(
                    "wijk_codes",
                    format!("{w} lies in {}, not in {g}", w.gemeente()),
                    format!("{w} ligt in {}, niet in {g}", w.gemeente()),
                );
            } else if !known.contains(w) {
                fault(
                    "wijk_codes",
                    format!("{w} is not a wijk of {g}"),
                    format!("{w} is geen wijk van {g}"),
                );
            } else if self.wijken[..i].contains(w) {
                fault(
                    "wijk_codes",
                    format!("{w} is named twice"),
                    format!("{w} staat er twee keer in"),
                );
            }
        }
        if !known.is_empty() && n >= known.len().saturating_sub(1) {
            fault(
                "wijk_codes",
                "leaves fewer than 2 wijken of the gemeente to compare with".into(),
                "er blijven minder dan 2 wijken over om mee te vergelijken".into(),
            );
        }
        if self.start > cx.now.plus(MAX_MONTHS_AHEAD as i32) {
            fault(
                "start_month",
                format!(
                    "{} lies more than {MAX_MONTHS_AHEAD} months ahead",
                    self.start
                ),
                format!(
                    "{} ligt meer dan {MAX_MONTHS_AHEAD} maanden vooruit",
                    self.start
                ),
            );
        }
        let history = (self.start.index() as i64 - cx.first_month.index() as i64).max(0);
        if history < MIN_HISTORY_MONTHS as i64 {
            fault(
                "start_month",
                format!(
                    "needs {MIN_HISTORY_MONTHS} months of figures before it; the aggregator keeps figures from {} ({history} months before)",
                    cx.first_month
                ),
                format!(
                    "er zijn {MIN_HISTORY_MONTHS} maanden cijfers vóór de start nodig; er zijn cijfers vanaf {} ({history} maanden ervoor)",
                    cx.first_month
                ),
            );
        }
        let m = self.measures.len();
        if m == 0 || m > MAX_MEASURES {
            fault(
                "measures",
                format!("needs 1 to {MAX_MEASURES} measures, got {m}"),
                format!("kies één tot {MAX_MEASURES} onderwerpen (nu {m})"),
            );
        }
        for (i, measure) in self.measures.iter().enumerate() {
            if !(cx.is_measure)(measure) {
                fault(
                    "measures",
                    format!("`{measure}` is not a signal type or derived indicator"),
                    format!("„{measure}” is geen onderwerp van Wijkradar"),
                );
            } else if self.measures[..i].contains(measure) {
                fault(
                    "measures",
                    format!("`{measure}` is named twice"),
                    format!("„{measure}” staat er twee keer in"),
                );
            }
        }
        if !(self.reach > 0.0 && self.reach <= 1.0) {
            fault(
                "expected_reach_percent",
                "must lie in (0, 100]".into(),
                "een percentage boven 0 en tot en met 100".into(),
            );
        }
        let change = self.goal.change;
        if !(change.is_finite() && change != 0.0 && change.abs() <= 1.0) {
            fault(
                "goal.percent",
                "must lie in (0, 100]".into(),
                "een percentage boven 0 en tot en met 100".into(),
            );
        }
        if !HORIZON_MONTHS.contains(&self.goal.horizon_months) {
            let (low, high) = (HORIZON_MONTHS.start(), HORIZON_MONTHS.end());
            fault(
                "goal.horizon_months",
                format!("must lie in {low} to {high}"),
                format!("{low} tot en met {high} maanden"),
            );
        }
        faults
    }
}

mod as_text {
    use super::*;

    pub fn serialize<T: Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: serde::Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod as_texts {
    use super::*;

    pub fn serialize<T: Display, S: serde::Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: serde::Deserializer<'de>,
    {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            gemeente: "GM0034".parse().unwrap(),
            name: "Schuldhulp aan huis".into(),
            wijken: vec!["WK003403".parse().unwrap()],
            start: "2026-01".parse().unwrap(),
            measures: vec!["betalingsachterstand".into()],
            reach: 0.3,
            goal: Goal {
                change: -0.2,
                horizon_months: 24,
            },
        }
    }

    fn check(p: &Plan) -> Vec<(&'static str, String)> {
        let h = Hierarchy::netherlands_2023();
        let is_measure = |m: &str| m == "betalingsachterstand" || m == "huurachterstand";
        let cx = PlanContext {
            hierarchy: &h,
            is_measure: &is_measure,
            now: "2026-11".parse().unwrap(),
            first_month: "2023-01".parse().unwrap(),
        };
        p.check(&cx)
            .into_iter()
            .map(|e| (e.field, e.reason))
            .collect()
    }

    #[test]
    fn a_sound_plan_passes_and_round_trips() {
        assert!(check(&plan()).is_empty());
        let json = serde_json::to_string(&plan()).unwrap();
        assert!(json.contains("\"WK003403\"") && json.contains("\"2026-01\""));
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan());
    }

    #[test]
    fn each_fault_names_its_field() {
        let mut p = plan();
        p.wijken.push("WK036301".parse().unwrap());
        p.start = "2028-01".parse().unwrap();
        p.measures.push("onbekend".into());
        p.reach = 0.0;
        p.goal.horizon_months = 100;
        let faults = check(&p);
        let fields: Vec<&str> = faults.iter().map(|f| f.0).collect();
        assert_eq!(
            fields,
            [
                "wijk_codes",
                "start_month",
                "measures",
                "expected_reach_percent",
                "goal.horizon_months"
            ]
        );
        assert!(
            faults[0].1.contains("WK036301 lies in GM0363"),
            "{}",
            faults[0].1
        );
    }

    #[test]
    fn too_little_history_is_refused_with_the_months_there_are() {
        let mut p = plan();
        p.start = "2024-06".parse().unwrap();
        let faults = check(&p);
        assert_eq!(faults.len(), 1);
        assert!(faults[0].1.contains("17 months before"), "{}", faults[0].1);
    }
}
