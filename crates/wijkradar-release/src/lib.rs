//! Releases: turning true counts into what may leave the aggregator.
//!
//! A cell's true count of distinct households is perturbed by the cell key
//! method ([`PerturbationTable`], PRIVACY.md "Releases" point 2): noise of at
//! most D, unbiased, with variance V, chosen by the cell's key, so the same
//! set of households gives the same released value however and whenever it
//! is asked. A released value below k is shown as suppressed, never as a
//! number (point 3), and k is never below 5.
//!
//! Not yet here: materialised, versioned releases and the disclosure audit
//! (points 5 and 6 of PRIVACY.md); rates per 1,000 households.
//!
//! Architecture invariant: no IO; a [`Released`] value has no way to carry the
//! true count of a suppressed cell.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod ptable;

use std::collections::BTreeMap;

pub use ptable::{PerturbationTable, PtableError};

use wijkradar_domain::{AreaCode, AreaLevel, BuurtCode, CellTotal};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Released {
    Value(u64),
    /// The count is below k; how far below is not said.
    Suppressed,
}

/// What may leave the aggregator: k and the perturbation table together.
#[derive(Debug, Clone)]
pub struct ReleasePolicy {
    k: Threshold,
    table: PerturbationTable,
}

impl ReleasePolicy {
    /// Builds (and checks) the perturbation table for `max_noise` D and `variance` V.
    pub fn new(k: Threshold, max_noise: u32, variance: f64) -> Result<ReleasePolicy, PtableError> {
        Ok(ReleasePolicy {
            k,
            table: PerturbationTable::build(max_noise, variance)?,
        })
    }

    pub fn k(&self) -> u32 {
        self.k.k()
    }

    /// D: a released value is at most this far from the true count.
    pub fn max_noise(&self) -> u32 {
        self.table.max_noise()
    }

    /// The released form of a cell: its perturbed count if that is at least
    /// k, else suppressed.
    pub fn release(&self, total: CellTotal) -> Released {
        let value = self.table.perturb(total.households, total.cell_key);
        if value < u64::from(self.k.k()) {
            Released::Suppressed
        } else {
            Released::Value(value)
        }
    }
}

/// Sums buurt totals into the areas of `level`. Every area in `areas` gets a
/// total, zero when no buurt of it has one, so that an empty area is released
/// (as suppressed) like any other and absence tells nothing.
pub fn roll_up(
    level: AreaLevel,
    areas: &[AreaCode],
    buurt_totals: &[(BuurtCode, CellTotal)],
) -> BTreeMap<AreaCode, CellTotal> {
    let mut out: BTreeMap<AreaCode, CellTotal> =
        areas.iter().map(|&a| (a, CellTotal::default())).collect();
    for &(buurt, total) in buurt_totals {
        let area = match level {
            AreaLevel::Buurt => AreaCode::Buurt(buurt),
            AreaLevel::Wijk => AreaCode::Wijk(buurt.wijk()),
            AreaLevel::Gemeente => AreaCode::Gemeente(buurt.gemeente()),
        };
        if let Some(sum) = out.get_mut(&area) {
            *sum += total;
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
    fn rolls_buurten_up_into_wijken_and_gemeente_with_their_cell_keys() {
        let b = |s: &str| s.parse::<BuurtCode>().unwrap();
        let t = |households, cell_key| CellTotal {
            households,
            cell_key,
        };
        let totals = [
            (b("BU00340101"), t(7, u32::MAX)),
            (b("BU00340102"), t(5, 2)),
            (b("BU00340201"), t(3, 9)),
        ];
        let wijken: Vec<AreaCode> = ["WK003401", "WK003402", "WK003403"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<CellTotal> = roll_up(AreaLevel::Wijk, &wijken, &totals)
            .into_values()
            .collect();
        // Cell keys add modulo 2^32.
        assert_eq!(got, [t(12, 1), t(3, 9), t(0, 0)]);
        let gm = ["GM0034".parse().unwrap()];
        assert_eq!(
            roll_up(AreaLevel::Gemeente, &gm, &totals)
                .into_values()
                .collect::<Vec<_>>(),
            [t(15, 10)]
        );
    }

    fn policy(k: u32) -> ReleasePolicy {
        ReleasePolicy::new(Threshold::new(k).unwrap(), 4, 2.0).unwrap()
    }

    proptest::proptest! {
        /// I1 and I3: every released value is suppressed or at least k, and
        /// at most D from the truth; an empty cell is suppressed.
        #[test]
        fn released_values_are_never_below_k_nor_far_from_the_truth(k in 5u32..50, n in 0u64..200, key in proptest::prelude::any::<u32>()) {
            let p = policy(k);
            match p.release(CellTotal { households: n, cell_key: key }) {
                Released::Value(v) => {
                    proptest::prop_assert!(v >= u64::from(k));
                    proptest::prop_assert!(v.abs_diff(n) <= 4);
                }
                Released::Suppressed => proptest::prop_assert!(n < u64::from(k) + 4),
            }
        }

        /// I2: the same households give the same answer, in any order.
        #[test]
        fn the_same_households_give_the_same_answer(keys in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..60)) {
            let p = policy(10);
            let forward = keys.iter().fold(CellTotal::default(), |t, &k| t + CellTotal::one(k));
            let backward = keys.iter().rev().fold(CellTotal::default(), |t, &k| t + CellTotal::one(k));
            proptest::prop_assert_eq!(p.release(forward), p.release(backward));
        }
    }

    #[test]
    fn cells_of_equal_true_count_do_not_all_get_the_same_noise() {
        // The noise depends on who is in the cell: across many cells of 30
        // households, several different released values occur.
        let p = policy(10);
        let values: std::collections::BTreeSet<_> = (0..200u32)
            .map(|i| {
                p.release(CellTotal {
                    households: 30,
                    cell_key: i.wrapping_mul(2_654_435_761),
                })
            })
            .collect();
        assert!(values.len() >= 5, "{values:?}");
    }
}
