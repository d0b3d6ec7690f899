//! Releases: turning true counts into what may leave the aggregator.
//!
//! A cell's true count of distinct households is perturbed by the cell key
//! method ([`PerturbationTable`], docs/privacy.md, "What leaves the aggregator", point 2): noise of at
//! most D, unbiased, with variance V, chosen by the cell's key, so the same
//! set of households gives the same released value however and whenever it
//! is asked. A released value below k is shown as suppressed, never as a
//! number (point 3), and k is never below 5.
//!
//! Every cell of a gemeente's table is released together and audited
//! ([`audit`]), and rates per 1,000 households come from released values
//! only ([`rates`]). A table tied to earlier releases (its period's parts,
//! its earlier versions) is audited against them too ([`linked`]). When a
//! period is released, and with what, is the [`lifecycle`].
//!
//! Architecture invariant: no IO; a [`Released`] value has no way to carry the
//! true count of a suppressed cell.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod audit;
pub mod lifecycle;
pub mod linked;
pub mod open;
mod period;
mod ptable;
pub mod rates;

use std::collections::BTreeMap;

pub use lifecycle::{Lifecycle, NotReleased, Release, Snapshot};
pub use linked::Link;
pub use period::{Period, PeriodKind};
pub use ptable::{PerturbationTable, PtableError};
pub use rates::{Bases, Rate};

use wijkradar_domain::{AreaCode, BuurtCode, CellTotal, GemeenteCode, Hierarchy};

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

impl Released {
    /// A cell as releases are stored: its value, or `None` where
    /// suppressed.
    pub fn stored(cell: Option<u64>) -> Released {
        cell.map_or(Released::Suppressed, Released::Value)
    }
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

/// The released table of one gemeente for one signal type and month: every
/// cell at every level (gemeente, wijken, buurten), perturbed, thresholded
/// and audited together, so that asking for one level or another, or for
/// all three, never gives more than this one release.
#[derive(Debug, Clone)]
pub struct GemeenteTable {
    /// Node i's area; node 0 is the gemeente, then its wijken, then buurten.
    codes: Vec<AreaCode>,
    tree: audit::AreaTree,
    buurt_index: BTreeMap<BuurtCode, usize>,
}

impl GemeenteTable {
    pub fn new(hierarchy: &Hierarchy, g: GemeenteCode) -> GemeenteTable {
        let mut codes = vec![AreaCode::Gemeente(g)];
        let mut parents = vec![None];
        let mut wijk_index = BTreeMap::new();
        for w in hierarchy.wijken_of(g) {
            wijk_index.insert(w, codes.len());
            codes.push(AreaCode::Wijk(w));
            parents.push(Some(0));
        }
        let mut buurt_index = BTreeMap::new();
        for b in hierarchy.buurten_of(g) {
            let Some(&w) = wijk_index.get(&b.wijk()) else {
                continue;
            };
            buurt_index.insert(b, codes.len());
            codes.push(AreaCode::Buurt(b));
            parents.push(Some(w));
        }
        GemeenteTable {
            codes,
            tree: audit::AreaTree::from_parents(&parents),
            buurt_index,
        }
    }

    /// The areas of the table, in node order.
    pub fn codes(&self) -> &[AreaCode] {
        &self.codes
    }

    /// Releases every cell from the buurten's totals; buurten without a total
    /// hold none. Returns each area with its released value, in node order.
    /// The audit takes in `links`: what was released before and is tied to
    /// this table (its period's parts, its earlier versions).
    pub fn release(
        &self,
        policy: &ReleasePolicy,
        buurt_totals: &[(BuurtCode, CellTotal)],
        links: &[Link],
    ) -> Vec<(AreaCode, Released)> {
        let totals = self.totals(buurt_totals);
        let mut released: Vec<Released> = totals.iter().map(|t| policy.release(*t)).collect();
        linked::audit_linked(
            &self.tree,
            &mut released,
            links,
            policy.k(),
            policy.max_noise(),
        );
        self.codes.iter().copied().zip(released).collect()
    }

    /// The true totals of every area, in node order, rolled up from the
    /// buurten's (with their cell keys).
    pub fn totals(&self, buurt_totals: &[(BuurtCode, CellTotal)]) -> Vec<CellTotal> {
        let mut totals = vec![CellTotal::default(); self.codes.len()];
        for (b, t) in buurt_totals {
            if let Some(&i) = self.buurt_index.get(b) {
                totals[i] += *t;
            }
        }
        // Parents come before children: sum from the back.
        for i in (1..self.codes.len()).rev() {
            let parent = self.tree.parent(i).expect("only the root has none");
            let t = totals[i];
            totals[parent] += t;
        }
        totals
    }

    /// What an attacker computes from a released table (all levels, as
    /// obtained through any queries): each area's feasible interval. Areas
    /// missing from `released` count as suppressed.
    pub fn attack(
        &self,
        released: &BTreeMap<AreaCode, Released>,
        max_noise: u32,
    ) -> BTreeMap<AreaCode, audit::Interval> {
        let cells: Vec<Released> = self
            .codes
            .iter()
            .map(|c| released.get(c).copied().unwrap_or(Released::Suppressed))
            .collect();
        self.codes
            .iter()
            .copied()
            .zip(audit::feasible_intervals(&self.tree, &cells, max_noise))
            .collect()
    }
}

impl GemeenteTable {
    /// A table's cells by area in node order; missing areas are suppressed.
    pub fn in_node_order(&self, released: &BTreeMap<AreaCode, Released>) -> Vec<Released> {
        self.codes
            .iter()
            .map(|c| released.get(c).copied().unwrap_or(Released::Suppressed))
            .collect()
    }

    /// What an attacker computes from a released table together with the
    /// releases it is tied to (in node order): every suppressed cell's
    /// interval, as (table, area, interval) with table 0 this one
    /// ([`linked::linked_intervals`]).
    pub fn attack_linked(
        &self,
        this: &[Released],
        links: &[Link],
        max_noise: u32,
    ) -> Vec<(usize, AreaCode, audit::Interval)> {
        linked::linked_intervals(&self.tree, this, links, max_noise)
            .into_iter()
            .map(|(t, i, interval)| (t, self.codes[i], interval))
            .collect()
    }
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
    fn a_gemeente_table_rolls_up_counts_and_cell_keys_and_audits_them() {
        let h = Hierarchy::netherlands_2023();
        let g: GemeenteCode = "GM0034".parse().unwrap();
        let table = GemeenteTable::new(&h, g);
        let buurten: Vec<BuurtCode> = h.buurten_of(g).collect();
        // 30 households in every buurt of Almere.
        let totals: Vec<(BuurtCode, CellTotal)> = buurten
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                (
                    b,
                    CellTotal {
                        households: 30,
                        cell_key: i as u32 * 7919,
                    },
                )
            })
            .collect();
        let p = policy(10);
        let released = table.release(&p, &totals, &[]);
        assert_eq!(released.len(), 1 + h.wijken_of(g).count() + buurten.len());
        // The gemeente's value is the perturbed sum of all buurten, keys included.
        let sum = totals.iter().fold(CellTotal::default(), |t, (_, c)| t + *c);
        assert_eq!(released[0], (AreaCode::Gemeente(g), p.release(sum)));
        // Nothing in the released table is below k, and every buurt is released.
        for (area, r) in &released {
            if let Released::Value(v) = r {
                assert!(*v >= 10, "{area}");
            }
        }
        assert!(
            released
                .iter()
                .filter(|(a, _)| matches!(a, AreaCode::Buurt(_)))
                .all(|(_, r)| *r != Released::Suppressed)
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
