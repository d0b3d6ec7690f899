//! The periods a table covers: a calendar month, quarter or year, or an
//! alert's window of a few months ending with any month.

use std::fmt;

use wijkradar_domain::Month;

/// The kind of period a table is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    Month,
    Quarter,
    Year,
    /// The last 2, 3 or 6 months, ending with each month: an alert's
    /// window.
    Window(u32),
}

impl PeriodKind {
    /// Months in one period.
    pub fn length(self) -> u32 {
        match self {
            PeriodKind::Month => 1,
            PeriodKind::Quarter => 3,
            PeriodKind::Year => 12,
            PeriodKind::Window(n) => n,
        }
    }

    /// The periods that overlap `from..=to`: whole quarters or years, or
    /// the window ending with each month.
    pub fn covering(self, from: Month, to: Month) -> Vec<Period> {
        let length = self.length();
        if let PeriodKind::Window(n) = self {
            return from.through(to).map(|m| Period::ending(m, n)).collect();
        }
        let mut out: Vec<Period> = Vec::new();
        for m in from.through(to) {
            let first = Month::new(m.year(), (m.month() - 1) / length * length + 1)
                .expect("a valid first month");
            if out.last().is_none_or(|p| p.first != first) {
                out.push(Period::new(first, length));
            }
        }
        out
    }
}

/// Consecutive months that one table counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    first: Month,
    length: u32,
}

impl Period {
    /// `length` months from `first` (at least one).
    pub fn new(first: Month, length: u32) -> Period {
        assert!(length > 0, "a period has a month at least");
        Period { first, length }
    }

    /// One month.
    pub fn month(m: Month) -> Period {
        Period::new(m, 1)
    }

    /// The `length` months ending with `last`.
    pub fn ending(last: Month, length: u32) -> Period {
        Period::new(last.plus(1 - length as i32), length)
    }

    pub fn first(self) -> Month {
        self.first
    }

    pub fn last(self) -> Month {
        self.first.plus(self.length as i32 - 1)
    }

    /// How many months it covers.
    pub fn len(self) -> u32 {
        self.length
    }

    /// Never: a period has a month at least.
    pub fn is_empty(self) -> bool {
        false
    }

    pub fn months(self) -> impl Iterator<Item = Month> + Clone {
        self.first.through(self.last())
    }

    /// What it is: a calendar month, quarter or year where it is aligned as
    /// one, else a window.
    pub fn kind(self) -> PeriodKind {
        let aligned = |n: u32| (self.first.month() - 1).is_multiple_of(n);
        match self.length {
            1 => PeriodKind::Month,
            3 if aligned(3) => PeriodKind::Quarter,
            12 if aligned(12) => PeriodKind::Year,
            n => PeriodKind::Window(n),
        }
    }

    /// The parts its release is tied to: a year's quarters, the months of
    /// anything longer than a month; none for a month.
    pub fn parts(self) -> Vec<Period> {
        let length = if self.kind() == PeriodKind::Year {
            3
        } else {
            1
        };
        if self.length == 1 {
            return Vec::new();
        }
        (0..self.length / length)
            .map(|i| Period::new(self.first.plus((i * length) as i32), length))
            .collect()
    }
}

/// The label users and the audit log see: `2026-03`, `2026-Q1`, `2026`, or
/// a window by its range, `2026-01..2026-06`.
impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.first;
        match self.kind() {
            PeriodKind::Month => write!(f, "{m}"),
            PeriodKind::Quarter => write!(f, "{}-Q{}", m.year(), (m.month() - 1) / 3 + 1),
            PeriodKind::Year => write!(f, "{}", m.year()),
            PeriodKind::Window(_) => write!(f, "{m}..{}", self.last()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Month {
        s.parse().expect("a month")
    }

    #[test]
    fn labels_name_calendar_periods_and_windows() {
        assert_eq!(Period::month(m("2026-03")).to_string(), "2026-03");
        assert_eq!(Period::new(m("2026-04"), 3).to_string(), "2026-Q2");
        assert_eq!(Period::new(m("2026-01"), 12).to_string(), "2026");
        // Three months not aligned as a quarter are a window.
        assert_eq!(Period::new(m("2026-02"), 3).to_string(), "2026-02..2026-04");
        assert_eq!(
            Period::ending(m("2026-11"), 6).to_string(),
            "2026-06..2026-11"
        );
    }

    #[test]
    fn a_year_is_tied_to_its_quarters_and_a_window_to_its_months() {
        let year = Period::new(m("2025-01"), 12);
        let quarters: Vec<String> = year.parts().iter().map(|p| p.to_string()).collect();
        assert_eq!(quarters, ["2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4"]);
        let window = Period::ending(m("2025-03"), 2);
        assert_eq!(
            window.parts(),
            [Period::month(m("2025-02")), Period::month(m("2025-03"))]
        );
        assert!(Period::month(m("2025-03")).parts().is_empty());
    }

    #[test]
    fn covering_gives_whole_periods_over_a_range() {
        let q = PeriodKind::Quarter.covering(m("2025-02"), m("2025-07"));
        let labels: Vec<String> = q.iter().map(|p| p.to_string()).collect();
        assert_eq!(labels, ["2025-Q1", "2025-Q2", "2025-Q3"]);
        let w = PeriodKind::Window(3).covering(m("2025-03"), m("2025-04"));
        assert_eq!(
            w,
            [
                Period::ending(m("2025-03"), 3),
                Period::ending(m("2025-04"), 3)
            ]
        );
    }
}
