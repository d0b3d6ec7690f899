//! Calendar months, `YYYY-MM`, as a count of months since year 0 so that
//! ranges and storage keys are plain integers in order.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonthError {
    #[error("expected YYYY-MM, got `{0}`")]
    Format(String),
    #[error("month {0} is in the future")]
    Future(Month),
}

impl Month {
    pub fn new(year: u32, month: u32) -> Option<Month> {
        ((1..=12).contains(&month) && (1900..=9999).contains(&year))
            .then(|| Month(year * 12 + month - 1))
    }
    pub fn year(self) -> u32 {
        self.0 / 12
    }
    /// 1 to 12.
    pub fn month(self) -> u32 {
        self.0 % 12 + 1
    }
    pub fn index(self) -> u32 {
        self.0
    }
    pub fn from_index(i: u32) -> Option<Month> {
        Month::new(i / 12, i % 12 + 1)
    }
    pub fn plus(self, months: i32) -> Month {
        Month(self.0.saturating_add_signed(months))
    }
    /// Months from `self` to `to` inclusive; empty if `to` is earlier.
    pub fn through(self, to: Month) -> impl Iterator<Item = Month> + Clone {
        (self.0..=to.0).map(Month)
    }
    /// The month of a Unix time in seconds (UTC).
    pub fn from_unix_seconds(secs: i64) -> Month {
        // Days since 1970-01-01 to civil date (Howard Hinnant's algorithm).
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        Month::new(y as u32, m as u32).expect("a month after 1970")
    }
    /// Rejects a month later than `now`.
    pub fn not_after(self, now: Month) -> Result<Month, MonthError> {
        if self > now {
            Err(MonthError::Future(self))
        } else {
            Ok(self)
        }
    }
}

impl FromStr for Month {
    type Err = MonthError;
    fn from_str(s: &str) -> Result<Month, MonthError> {
        let err = || MonthError::Format(s.chars().take(16).collect());
        let b = s.as_bytes();
        if b.len() != 7 || b[4] != b'-' || !b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit) {
            return Err(err());
        }
        Month::new(
            s[..4].parse().map_err(|_| err())?,
            s[5..].parse().map_err(|_| err())?,
        )
        .ok_or_else(err)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

impl fmt::Debug for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let m: Month = "2024-03".parse().unwrap();
        assert_eq!((m.year(), m.month()), (2024, 3));
        for bad in [
            "2024-13",
            "2024-00",
            "2024-3",
            "24-03",
            "2024/03",
            "",
            "2024-03-01",
            "２０２４-03",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        assert_eq!(m.plus(-3).to_string(), "2023-12");
        assert_eq!(m.through(m.plus(2)).count(), 3);
        assert!(m.plus(1).not_after(m).is_err());
    }

    #[test]
    fn civil_month_of_unix_time() {
        assert_eq!(Month::from_unix_seconds(0).to_string(), "1970-01");
        assert_eq!(Month::from_unix_seconds(951_782_400).to_string(), "2000-02"); // 2000-02-29
        assert_eq!(
            Month::from_unix_seconds(1_795_000_000).to_string(),
            "2026-11"
        );
        assert_eq!(
            Month::from_unix_seconds(1_704_067_199).to_string(),
            "2023-12"
        );
    }

    proptest::proptest! {
        #[test]
        fn round_trips(y in 1900u32..9999, m in 1u32..=12) {
            let month = Month::new(y, m).unwrap();
            proptest::prop_assert_eq!(month.to_string().parse::<Month>().unwrap(), month);
            proptest::prop_assert_eq!(Month::from_index(month.index()).unwrap(), month);
        }
    }
}
