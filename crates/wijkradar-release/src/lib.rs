//! Releases: turning true counts into what may leave the aggregator.
//!
//! First version (PRIVACY.md "Releases", point 3): a cell whose count is
//! below k is released as suppressed, never as a number, and k is never
//! below 5. Cell-key perturbation and the disclosure audit come next; until
//! then differencing across levels is not defended against.
//!
//! Architecture invariant: no IO; a [`Released`] value has no way to carry the
//! true count of a suppressed cell.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod ptable;

use std::collections::BTreeMap;

pub use ptable::{PerturbationTable, PtableError};

use wijkradar_domain::{AreaCode, AreaLevel, BuurtCode};

/// The smallest k the aggregator accepts.
pub const MIN_K: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("k = {0} is below the minimum of {MIN_K}")]
    KTooSmall(u32),
}

/// The release threshold k.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "u32")]
pub struct Threshold(u32);

impl Threshold {
    pub fn new(k: u32) -> Result<Threshold, ReleaseError> {
        if k < MIN_K {
            Err(ReleaseError::KTooSmall(k))
        } else {
            Ok(Threshold(k))
        }
    }
    pub fn k(self) -> u32 {
        self.0
    }
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold(10)
    }
}

impl TryFrom<u32> for Threshold {
    type Error = ReleaseError;
    fn try_from(k: u32) -> Result<Self, ReleaseError> {
        Threshold::new(k)
    }
}

/// A cell as it may leave the aggregator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    Value(u64),
    /// The count is below k; how far below is not said.
    Suppressed,
}

impl Threshold {
    pub fn release(self, true_count: u64) -> Released {
        if true_count < u64::from(self.0) {
            Released::Suppressed
        } else {
            Released::Value(true_count)
        }
    }
}

/// Sums buurt counts into the areas of `level`. Every area in `areas` gets a
/// count, zero when no buurt of it has one, so that an empty area is released
/// (as suppressed) like any other and absence tells nothing.
pub fn roll_up(
    level: AreaLevel,
    areas: &[AreaCode],
    buurt_counts: &[(BuurtCode, u64)],
) -> BTreeMap<AreaCode, u64> {
    let mut out: BTreeMap<AreaCode, u64> = areas.iter().map(|&a| (a, 0)).collect();
    for &(buurt, n) in buurt_counts {
        let area = match level {
            AreaLevel::Buurt => AreaCode::Buurt(buurt),
            AreaLevel::Wijk => AreaCode::Wijk(buurt.wijk()),
            AreaLevel::Gemeente => AreaCode::Gemeente(buurt.gemeente()),
        };
        if let Some(total) = out.get_mut(&area) {
            *total += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_below_five_is_refused() {
        assert_eq!(Threshold::new(4), Err(ReleaseError::KTooSmall(4)));
        assert_eq!(Threshold::new(5).unwrap().k(), 5);
        assert_eq!(Threshold::default().k(), 10);
    }

    #[test]
    fn rolls_buurten_up_into_wijken_and_gemeente() {
        let b = |s: &str| s.parse::<BuurtCode>().unwrap();
        let counts = [
            (b("BU00340101"), 7),
            (b("BU00340102"), 5),
            (b("BU00340201"), 3),
        ];
        let wijken: Vec<AreaCode> = ["WK003401", "WK003402", "WK003403"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<u64> = roll_up(AreaLevel::Wijk, &wijken, &counts)
            .into_values()
            .collect();
        assert_eq!(got, [12, 3, 0]);
        let gm = ["GM0034".parse().unwrap()];
        assert_eq!(
            roll_up(AreaLevel::Gemeente, &gm, &counts)
                .into_values()
                .collect::<Vec<_>>(),
            [15]
        );
    }

    proptest::proptest! {
        /// I1: every released value is suppressed or at least k.
        #[test]
        fn released_values_are_never_below_k(k in 5u32..50, n in 0u64..200) {
            match Threshold::new(k).unwrap().release(n) {
                Released::Value(v) => { proptest::prop_assert!(v >= u64::from(k)); proptest::prop_assert_eq!(v, n); }
                Released::Suppressed => proptest::prop_assert!(n < u64::from(k)),
            }
        }
    }
}
