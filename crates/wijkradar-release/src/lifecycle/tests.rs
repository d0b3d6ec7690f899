//! The lifecycle over releases kept in memory: no server, no store.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use wijkradar_domain::{BuurtCode, CellTotal, GemeenteCode, Hierarchy, Month};

use super::*;
use crate::{GemeenteTable, Period, ReleasePolicy, Threshold};

/// One measure's releases in memory; a period's state and totals are the
/// sums of its months'.
#[derive(Default)]
struct Memory {
    buurten: Vec<BuurtCode>,
    states: RefCell<HashMap<Month, u64>>,
    stored: RefCell<HashMap<Period, Arc<Snapshot>>>,
    /// Every new version: its period, version and what its audit took in.
    log: RefCell<Vec<(String, Vec<String>)>>,
}

impl Memory {
    fn new(buurten: Vec<BuurtCode>) -> Memory {
        Memory {
            buurten,
            ..Memory::default()
        }
    }

    /// A late signal in month `m`.
    fn bump(&self, m: Month) {
        *self.states.borrow_mut().entry(m).or_default() += 1;
    }

    /// What the audit of `name` took in, by the last new version so named.
    fn audited_with(&self, name: &str) -> Vec<String> {
        let log = self.log.borrow();
        let entry = log.iter().rev().find(|(n, _)| n == name);
        entry
            .unwrap_or_else(|| panic!("{name} was not made"))
            .1
            .clone()
    }

    fn made(&self) -> usize {
        self.log.borrow().len()
    }
}

impl Releases for Memory {
    type Error = Infallible;

    fn stored(&self, period: Period) -> Result<Option<Arc<Snapshot>>, Infallible> {
        Ok(self.stored.borrow().get(&period).cloned())
    }

    fn state(&self, period: Period) -> u64 {
        let states = self.states.borrow();
        period.months().filter_map(|m| states.get(&m)).sum()
    }

    fn totals(&self, period: Period) -> Result<Vec<(BuurtCode, CellTotal)>, Infallible> {
        // 20 to 40 households in each buurt, more for longer periods.
        let per_month = |i: usize| 20 + (i * 7 % 21) as u64;
        Ok(self
            .buurten
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let total = CellTotal {
                    households: per_month(i) * u64::from(period.len()),
                    cell_key: (i as u32).wrapping_mul(2_654_435_761) ^ period.first().index(),
                };
                (b, total)
            })
            .collect())
    }

    fn store(
        &self,
        period: Period,
        _previous: Option<&Snapshot>,
        new: NewRelease,
    ) -> Result<Arc<Snapshot>, Infallible> {
        let name = format!("{period} v{}", new.snapshot.version);
        let with = new
            .audited_with
            .iter()
            .map(|n| format!("{n}{}", if n.stale { " (stale)" } else { "" }))
            .collect();
        self.log.borrow_mut().push((name, with));
        let s = Arc::new(new.snapshot);
        self.stored.borrow_mut().insert(period, s.clone());
        Ok(s)
    }
}

fn m(s: &str) -> Month {
    s.parse().expect("a month")
}

struct Setup {
    table: GemeenteTable,
    policy: ReleasePolicy,
    memory: Memory,
}

/// Schiermonnikoog: a gemeente of a few buurten keeps the audits quick.
fn setup() -> Setup {
    let h = Hierarchy::netherlands_2023();
    let g: GemeenteCode = "GM0088".parse().expect("a gemeente");
    let policy = ReleasePolicy::new(Threshold::new(10).expect("k"), 4, 2.0).expect("a policy");
    Setup {
        table: GemeenteTable::new(&h, g),
        policy,
        memory: Memory::new(h.buurten_of(g).collect()),
    }
}

impl Setup {
    /// Signal types' rules in `now`, with periods before `closed_before`
    /// closed, at most three versions, everything kept from 2024.
    fn rules(&self, now: &str, closed_before: &str) -> Lifecycle<'_> {
        Lifecycle {
            table: &self.table,
            policy: &self.policy,
            counts: Counts::Type,
            now: m(now),
            closed_before: m(closed_before),
            max_versions: 3,
            first_kept: m("2024-01"),
            all_kept_from: m("2024-01"),
        }
    }

    fn release(&self, rules: &Lifecycle<'_>, period: Period) -> Result<Release, NotReleased> {
        let Ok(r) = rules.release(&self.memory, period);
        r
    }
}

#[test]
fn a_period_waits_until_it_has_ended_and_closed_and_goes_with_retention() {
    let s = setup();
    let rules = s.rules("2026-06", "2026-05");
    let month = |x: &str| Period::month(m(x));
    assert_eq!(
        s.release(&rules, month("2026-06")).unwrap_err(),
        NotReleased::Pending
    );
    // Ended, not closed, nothing released before.
    assert_eq!(
        s.release(&rules, month("2026-05")).unwrap_err(),
        NotReleased::Pending
    );
    assert_eq!(s.release(&rules, month("2026-04")).unwrap().version(), 1);
    assert_eq!(
        s.release(&rules, month("2023-12")).unwrap_err(),
        NotReleased::Purged
    );
    // A quarter that reaches into an open month waits for it.
    let q2 = Period::new(m("2026-04"), 3);
    assert_eq!(s.release(&rules, q2).unwrap_err(), NotReleased::Pending);
    assert_eq!(s.memory.made(), 1);
}

#[test]
fn a_new_state_makes_a_new_version_audited_with_every_one_before_up_to_the_cap() {
    let s = setup();
    let rules = s.rules("2026-06", "2026-05");
    let march = Period::month(m("2026-03"));
    let first = s.release(&rules, march).unwrap();
    assert_eq!((first.version(), first.current), (1, true));
    assert!(s.memory.audited_with("2026-03 v1").is_empty());
    // The same state reads the stored release back.
    assert_eq!(s.release(&rules, march).unwrap().version(), 1);
    assert_eq!(s.memory.made(), 1);
    s.memory.bump(m("2026-03"));
    let second = s.release(&rules, march).unwrap();
    assert_eq!(second.version(), 2);
    assert_eq!(
        second.snapshot.earlier,
        std::slice::from_ref(&first.snapshot.cells)
    );
    assert_eq!(s.memory.audited_with("2026-03 v2"), ["2026-03 v1"]);
    s.memory.bump(m("2026-03"));
    s.release(&rules, march).unwrap();
    assert_eq!(
        s.memory.audited_with("2026-03 v3"),
        ["2026-03 v1", "2026-03 v2"]
    );
    // At the cap the last version stays, marked as no longer current.
    s.memory.bump(m("2026-03"));
    let capped = s.release(&rules, march).unwrap();
    assert_eq!((capped.version(), capped.current), (3, false));
    assert_eq!(s.memory.made(), 3);
}

#[test]
fn a_late_signal_after_an_early_release_waits_for_the_period_to_close() {
    let s = setup();
    // The operator released April early.
    let early = s.rules("2026-05", "2026-05");
    let april = Period::month(m("2026-04"));
    assert_eq!(s.release(&early, april).unwrap().version(), 1);
    s.memory.bump(m("2026-04"));
    let open = s.rules("2026-05", "2026-04");
    let kept = s.release(&open, april).unwrap();
    assert_eq!((kept.version(), kept.current), (1, false));
    // Once closed, the late signal makes version 2.
    let closed = s.rules("2026-06", "2026-05");
    assert_eq!(s.release(&closed, april).unwrap().version(), 2);
}

#[test]
fn a_quarter_is_audited_with_its_months_and_a_year_with_its_quarters_and_their_months() {
    let s = setup();
    let rules = s.rules("2026-06", "2026-05");
    let year = Period::new(m("2025-01"), 12);
    assert_eq!(s.release(&rules, year).unwrap().version(), 1);
    assert_eq!(
        s.memory.audited_with("2025-Q2 v1"),
        ["2025-04 v1", "2025-05 v1", "2025-06 v1"]
    );
    let with = s.memory.audited_with("2025 v1");
    let quarters: Vec<String> = (1..=4).map(|q| format!("2025-Q{q} v1")).collect();
    let months: Vec<String> = m("2025-01")
        .through(m("2025-12"))
        .map(|m| format!("{m} v1"))
        .collect();
    assert_eq!(with, [quarters, months].concat());
    // Sixteen parts and the year itself, each made once.
    assert_eq!(s.memory.made(), 17);
    // A window is tied to its months, as a quarter is.
    s.release(&rules, Period::ending(m("2025-12"), 2)).unwrap();
    assert_eq!(
        s.memory.audited_with("2025-11..2025-12 v1"),
        ["2025-11 v1", "2025-12 v1"]
    );
}

#[test]
fn a_part_s_earlier_versions_and_a_part_kept_at_its_cap_are_named() {
    let s = setup();
    let rules = s.rules("2026-06", "2026-05");
    let q1 = Period::new(m("2026-01"), 3);
    s.release(&rules, q1).unwrap();
    // January gets a second version: the quarter's next version is tied to
    // both of January's and to its own first.
    s.memory.bump(m("2026-01"));
    assert_eq!(s.release(&rules, q1).unwrap().version(), 2);
    assert_eq!(
        s.memory.audited_with("2026-Q1 v2"),
        [
            "2026-01 v2",
            "2026-02 v1",
            "2026-03 v1",
            "2026-01 v1",
            "2026-Q1 v1"
        ]
    );
    // With a cap of two, January stays at v2 after the next late signal:
    // the quarter is tied to its months as stale parts.
    let capped = Lifecycle {
        max_versions: 2,
        ..rules
    };
    s.memory.bump(m("2026-01"));
    let third = s.release(&capped, q1).unwrap();
    assert_eq!((third.version(), third.current), (2, false));
    let q1_25 = Period::new(m("2025-01"), 3);
    s.release(&capped, q1_25).unwrap();
    s.memory.bump(m("2025-02"));
    s.memory.bump(m("2025-02"));
    s.release(&capped, Period::month(m("2025-02"))).unwrap();
    s.memory.bump(m("2025-02"));
    assert_eq!(s.release(&capped, q1_25).unwrap().version(), 2);
    let with = s.memory.audited_with("2025-Q1 v2");
    assert_eq!(
        &with[..3],
        [
            "2025-01 v1 (stale)",
            "2025-02 v2 (stale)",
            "2025-03 v1 (stale)"
        ]
    );
}

#[test]
fn a_derived_table_that_looks_back_past_retention_is_not_tied_to_what_it_may_have_lost() {
    let s = setup();
    let rules = Lifecycle {
        counts: Counts::Derived,
        // The window of six months before 2025-03 reaches 2024-09, before
        // every type is kept again.
        all_kept_from: m("2024-12"),
        ..s.rules("2026-06", "2026-05")
    };
    let march = Period::month(m("2025-03"));
    s.release(&rules, march).unwrap();
    s.memory.bump(m("2025-03"));
    assert_eq!(s.release(&rules, march).unwrap().version(), 2);
    assert!(s.memory.audited_with("2025-03 v2").is_empty());
    // From 2025-06 the window is whole: the next version is tied to the first.
    let june = Period::month(m("2025-06"));
    s.release(&rules, june).unwrap();
    s.memory.bump(m("2025-06"));
    s.release(&rules, june).unwrap();
    assert_eq!(s.memory.audited_with("2025-06 v2"), ["2025-06 v1"]);
}
