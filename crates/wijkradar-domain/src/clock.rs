//! The one clock. Everything that depends on the date reads it here: in
//! the server which month has ended, retention, when a period is closed for
//! release, the time of an alert's status or an intervention's version; in
//! the command line the month an export or a demo runs up to. Tests fix it
//! to a date (`ServerConfig::clock`), so that they do not depend on the day
//! they run.

use crate::Month;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// A fixed moment, in seconds since 1970 (UTC).
    Fixed(i64),
}

impl Clock {
    /// Seconds since 1970 (UTC).
    pub fn unix_seconds(self) -> i64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            Clock::Fixed(at) => at,
        }
    }

    /// The current month.
    pub fn month(self) -> Month {
        Month::from_unix_seconds(self.unix_seconds())
    }

    /// The first month not yet closed for release, `after_days` after
    /// months end.
    pub fn closed_before(self, after_days: u32) -> Month {
        Month::from_unix_seconds(self.unix_seconds() - i64::from(after_days) * 86_400)
    }
}
