//! The derived indicators (docs/product.md, docs/early-warning.md), counted per
//! month and buurt from each household's signals:
//!
//! - **several problems**: households with signals of 2 or more types in the
//!   6 months ending with the month (the multi-problem household that no
//!   single source sees);
//! - **signalled again**: households with a signal in the month and another
//!   one (any type) in the 6 months before it;
//! - **payment arrears**: households with a signal of any payment-arrears
//!   type in the month (rent, energy, drinking water, health premium: the
//!   catalogue marks them). One household behind on rent and energy counts
//!   once; together the types give larger, more often released cells.
//!
//! A household counts once per month, in one buurt: that of its latest
//! signal in the window. Cell keys add up as for signal types, so the same
//! perturbation, threshold and audit apply.

use std::collections::HashMap;

use crate::{BuurtCode, CellTotal, Month};

/// The window of both indicators, in months, the month itself included.
pub const WINDOW_MONTHS: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Derived {
    SeveralProblems,
    SignalledAgain,
    PaymentArrears,
}

/// The store's ids of the signal types that the payment-arrears indicator
/// joins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joins {
    pub payment_arrears: Vec<u16>,
}

impl Derived {
    /// Every indicator, in the order the store numbers them (new ones go
    /// last).
    pub const ALL: [Derived; 3] = [
        Derived::SeveralProblems,
        Derived::SignalledAgain,
        Derived::PaymentArrears,
    ];

    /// The indicator's name where a signal type's would be.
    pub fn name(self) -> &'static str {
        match self {
            Derived::SeveralProblems => "meerdere_signaaltypen_6m",
            Derived::SignalledAgain => "opnieuw_gesignaleerd_6m",
            Derived::PaymentArrears => "betalingsachterstand",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Derived::SeveralProblems => "Huishoudens met 2 of meer signaaltypen in 6 maanden",
            Derived::SignalledAgain => "Huishoudens opnieuw gesignaleerd binnen 6 maanden",
            Derived::PaymentArrears => {
                "Huishoudens met een betalingsachterstand (huur, energie, drinkwater of zorgpremie)"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Derived> {
        Derived::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether a household keeps counting for months once it counts
    /// (several problems: up to six months after its second type). The
    /// early warning then tests the households that come to count each
    /// month ([`enters_in`]): a month's stock is mostly last month's, so
    /// its rise hides in slow drift.
    pub fn is_stock(self) -> bool {
        matches!(self, Derived::SeveralProblems)
    }
}

/// One signal of a household: type (any stable id), month, buurt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HouseholdSignal {
    pub signal_type: u16,
    pub month: Month,
    pub buurt: BuurtCode,
}

/// Whether a household with `signals` counts for `which` in `month`, and
/// in which buurt.
pub fn counts_in(
    which: Derived,
    signals: &[HouseholdSignal],
    month: Month,
    joins: &Joins,
) -> Option<BuurtCode> {
    let first = month.plus(1 - WINDOW_MONTHS as i32);
    let in_window = |s: &&HouseholdSignal| s.month >= first && s.month <= month;
    let latest = signals.iter().filter(in_window).max_by_key(|s| s.month)?;
    match which {
        Derived::SeveralProblems => {
            let first_type = signals.iter().find(in_window)?.signal_type;
            signals
                .iter()
                .filter(in_window)
                .any(|s| s.signal_type != first_type)
                .then_some(latest.buurt)
        }
        Derived::PaymentArrears => signals
            .iter()
            .rfind(|s| s.month == month && joins.payment_arrears.contains(&s.signal_type))
            .map(|s| s.buurt),
        Derived::SignalledAgain => {
            let now = signals.iter().rfind(|s| s.month == month)?;
            let before = month.plus(-(WINDOW_MONTHS as i32));
            signals
                .iter()
                .any(|s| s.month >= before && s.month < month)
                .then_some(now.buurt)
        }
    }
}

/// In which buurt a household comes to count for `which` in `month`: it
/// counts then, and for a stock ([`Derived::is_stock`]) did not the month
/// before. What the early warning tests.
pub fn enters_in(
    which: Derived,
    signals: &[HouseholdSignal],
    month: Month,
    joins: &Joins,
) -> Option<BuurtCode> {
    let buurt = counts_in(which, signals, month, joins)?;
    if which.is_stock() && counts_in(which, signals, month.plus(-1), joins).is_some() {
        return None;
    }
    Some(buurt)
}

/// Per (month, buurt): the households that come to count for `which`
/// ([`enters_in`]). The series the early warning tests.
pub fn tested_counts<'a>(
    which: Derived,
    households: impl IntoIterator<Item = &'a [HouseholdSignal]>,
    months: &[Month],
    joins: &Joins,
) -> HashMap<(Month, BuurtCode), u64> {
    let mut out: HashMap<(Month, BuurtCode), u64> = HashMap::new();
    for signals in households {
        for &m in months {
            if let Some(b) = enters_in(which, signals, m, joins) {
                *out.entry((m, b)).or_default() += 1;
            }
        }
    }
    out
}

/// Per (month, buurt): the households counting for `which` and their cell
/// key, from every household's record key and signals.
pub fn totals<'a>(
    which: Derived,
    households: impl IntoIterator<Item = (u32, &'a [HouseholdSignal])>,
    months: &[Month],
    joins: &Joins,
) -> HashMap<(Month, BuurtCode), CellTotal> {
    let mut out: HashMap<(Month, BuurtCode), CellTotal> = HashMap::new();
    for (record_key, signals) in households {
        for &m in months {
            if let Some(b) = counts_in(which, signals, m, joins) {
                *out.entry((m, b)).or_default() += CellTotal::one(record_key);
            }
        }
    }
    out
}

/// Per buurt: the households that count in at least one of `months` (by
/// `counts`, which says in which buurt a household counts in a month), each
/// once, in the buurt of its latest such month: a quarter's or a year's
/// cells.
pub fn period_totals<'a>(
    households: impl IntoIterator<Item = (u32, &'a [HouseholdSignal])>,
    months: &[Month],
    counts: impl Fn(&[HouseholdSignal], Month) -> Option<BuurtCode>,
) -> HashMap<BuurtCode, CellTotal> {
    let mut out: HashMap<BuurtCode, CellTotal> = HashMap::new();
    for (record_key, signals) in households {
        if let Some(b) = months.iter().rev().find_map(|&m| counts(signals, m)) {
            *out.entry(b).or_default() += CellTotal::one(record_key);
        }
    }
    out
}

/// In which buurt a household counts for signal type `t` in `month`: that
/// of its signal of the type that month.
pub fn of_type(t: u16) -> impl Fn(&[HouseholdSignal], Month) -> Option<BuurtCode> {
    move |signals, month| {
        signals
            .iter()
            .find(|s| s.signal_type == t && s.month == month)
            .map(|s| s.buurt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: u16, m: &str, b: &str) -> HouseholdSignal {
        HouseholdSignal {
            signal_type: t,
            month: m.parse().unwrap(),
            buurt: b.parse().unwrap(),
        }
    }

    #[test]
    fn several_problems_within_six_months() {
        let m = |x: &str| x.parse::<Month>().unwrap();
        // Rent arrears in January, energy arrears in June: 2 types in the
        // 6 months ending June (January..June), not in those ending July.
        let h = [s(1, "2026-01", "BU00340101"), s(2, "2026-06", "BU00340102")];
        let which = Derived::SeveralProblems;
        assert_eq!(counts_in(which, &h, m("2026-05"), &Joins::default()), None);
        assert_eq!(
            counts_in(which, &h, m("2026-06"), &Joins::default()),
            Some("BU00340102".parse().unwrap())
        );
        assert_eq!(counts_in(which, &h, m("2026-07"), &Joins::default()), None);
        // The same type twice is one problem.
        let same = [s(1, "2026-01", "BU00340101"), s(1, "2026-03", "BU00340101")];
        assert_eq!(
            counts_in(which, &same, m("2026-03"), &Joins::default()),
            None
        );
        // A move: counted once, in the buurt of the latest signal.
        let moved = [s(1, "2026-02", "BU00340101"), s(2, "2026-04", "BU00340201")];
        assert_eq!(
            counts_in(which, &moved, m("2026-05"), &Joins::default()),
            Some("BU00340201".parse().unwrap())
        );
    }

    #[test]
    fn the_early_warning_counts_a_stock_in_the_month_it_enters() {
        let m = |x: &str| x.parse::<Month>().unwrap();
        let joins = Joins {
            payment_arrears: vec![1, 2],
        };
        // Two types by March: several problems from March to June (the 6
        // months ending June still hold January).
        let h = [s(1, "2026-01", "BU00340101"), s(2, "2026-03", "BU00340101")];
        let several = Derived::SeveralProblems;
        let counted: Vec<bool> = ["2026-03", "2026-04", "2026-06", "2026-07"]
            .iter()
            .map(|x| counts_in(several, &h, m(x), &joins).is_some())
            .collect();
        assert_eq!(counted, [true, true, true, false]);
        let entered: Vec<Month> = m("2026-01")
            .through(m("2026-12"))
            .filter(|&x| enters_in(several, &h, x, &joins).is_some())
            .collect();
        assert_eq!(entered, [m("2026-03")]);
        // A monthly indicator is tested as it counts: arrears in two months
        // in a row count in both.
        let arrears = [s(1, "2026-03", "BU00340101"), s(1, "2026-04", "BU00340101")];
        let which = Derived::PaymentArrears;
        assert!(enters_in(which, &arrears, m("2026-04"), &joins).is_some());
        let months: Vec<Month> = m("2026-01").through(m("2026-12")).collect();
        let tested = tested_counts(several, [&h[..], &arrears[..]], &months, &joins);
        assert_eq!(tested.len(), 1);
        assert_eq!(tested[&(m("2026-03"), "BU00340101".parse().unwrap())], 1);
    }

    #[test]
    fn signalled_again_within_six_months() {
        let m = |x: &str| x.parse::<Month>().unwrap();
        let which = Derived::SignalledAgain;
        let h = [s(1, "2026-01", "BU00340101"), s(1, "2026-07", "BU00340101")];
        // July is 6 months after January: again. A signal 7 months on is not.
        assert!(counts_in(which, &h, m("2026-07"), &Joins::default()).is_some());
        let late = [s(1, "2026-01", "BU00340101"), s(3, "2026-08", "BU00340101")];
        assert_eq!(
            counts_in(which, &late, m("2026-08"), &Joins::default()),
            None
        );
        // Without a signal in the month itself, nothing.
        assert_eq!(counts_in(which, &h, m("2026-06"), &Joins::default()), None);
        assert_eq!(counts_in(which, &h, m("2026-01"), &Joins::default()), None);
    }

    #[test]
    fn payment_arrears_join_their_types_and_count_a_household_once() {
        let m = |x: &str| x.parse::<Month>().unwrap();
        // Types 1 (rent) and 2 (energy) are arrears; 5 (school absence) is not.
        let joins = Joins {
            payment_arrears: vec![1, 2],
        };
        let which = Derived::PaymentArrears;
        // Rent and energy in the same month: one household, in the buurt of
        // the later-listed signal.
        let both = [s(1, "2026-03", "BU00340101"), s(2, "2026-03", "BU00340102")];
        assert_eq!(
            counts_in(which, &both, m("2026-03"), &joins),
            Some("BU00340102".parse().unwrap())
        );
        // Only in its month; another kind of signal does not count.
        assert_eq!(counts_in(which, &both, m("2026-04"), &joins), None);
        let absent = [s(5, "2026-03", "BU00340101")];
        assert_eq!(counts_in(which, &absent, m("2026-03"), &joins), None);
        // Without the catalogue's marks nothing joins.
        assert_eq!(
            counts_in(which, &both, m("2026-03"), &Joins::default()),
            None
        );
        let t = totals(
            which,
            [(1u32, &both[..]), (2, &absent[..])],
            &[m("2026-03")],
            &joins,
        );
        assert_eq!(t.values().map(|c| c.households).sum::<u64>(), 1);
    }

    #[test]
    fn a_quarter_counts_each_household_once_where_it_was_last() {
        let months: Vec<Month> = ["2026-01", "2026-02", "2026-03"]
            .iter()
            .map(|m| m.parse().unwrap())
            .collect();
        // Signalled in January and March (moved in between), and one in
        // February only; another type and another quarter do not count.
        let a = [s(1, "2026-01", "BU00340101"), s(1, "2026-03", "BU00340102")];
        let b = [s(1, "2026-02", "BU00340101"), s(2, "2026-03", "BU00340101")];
        let c = [s(2, "2026-02", "BU00340101"), s(1, "2026-04", "BU00340101")];
        let t = period_totals(
            [(1u32, &a[..]), (2, &b[..]), (4, &c[..])],
            &months,
            of_type(1),
        );
        let one: BuurtCode = "BU00340101".parse().unwrap();
        let two: BuurtCode = "BU00340102".parse().unwrap();
        assert_eq!(
            t[&one],
            CellTotal {
                households: 1,
                cell_key: 2
            }
        );
        assert_eq!(
            t[&two],
            CellTotal {
                households: 1,
                cell_key: 1
            }
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn totals_add_households_and_cell_keys() {
        let months: Vec<Month> = vec!["2026-06".parse().unwrap()];
        let a = [s(1, "2026-05", "BU00340101"), s(2, "2026-06", "BU00340101")];
        let b = [s(1, "2026-02", "BU00340101"), s(4, "2026-06", "BU00340101")];
        let c = [s(1, "2026-06", "BU00340101")];
        let t = totals(
            Derived::SeveralProblems,
            [(7u32, &a[..]), (u32::MAX, &b[..]), (5, &c[..])],
            &months,
            &Joins::default(),
        );
        let cell = t[&(months[0], "BU00340101".parse().unwrap())];
        assert_eq!(cell.households, 2);
        assert_eq!(cell.cell_key, 7u32.wrapping_add(u32::MAX));
    }
}
