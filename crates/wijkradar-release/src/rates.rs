//! Rates per 1,000 households (docs/privacy.md, "What leaves the aggregator", point 4): only for
//! areas whose household base is at least a floor (default 100), computed
//! from the released value, never from the true count, so a rate discloses
//! nothing its count does not. A buurt without a base that large (or without
//! a known base) shows its wijk's rate instead, and says so.

use std::collections::BTreeMap;

use wijkradar_domain::AreaCode;

use crate::Released;

/// The smallest household base a rate is given for, unless configured.
pub const DEFAULT_FLOOR: u64 = 100;

/// Household bases per area, with the floor below which no rate is given.
#[derive(Debug, Clone, Default)]
pub struct Bases {
    pub per_area: BTreeMap<AreaCode, u64>,
    pub floor: u64,
}

/// The rate shown for one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// The area's own released value per 1,000 of its base.
    Own { per_1000: f64, base: u64 },
    /// The buurt's base is unknown or below the floor: its wijk's rate.
    RolledUp {
        area: AreaCode,
        per_1000: f64,
        base: u64,
    },
    /// No rate: the value is suppressed, or no usable base exists.
    None,
}

impl Bases {
    fn own(&self, area: AreaCode, released: Released) -> Option<(f64, u64)> {
        let base = *self.per_area.get(&area)?;
        match released {
            Released::Value(v) if base >= self.floor && base > 0 => {
                Some((v as f64 * 1000.0 / base as f64, base))
            }
            _ => None,
        }
    }

    /// The rate of each cell of one released table (all levels).
    pub fn rates(&self, released: &[(AreaCode, Released)]) -> Vec<Rate> {
        let by_area: BTreeMap<AreaCode, Released> = released.iter().copied().collect();
        released
            .iter()
            .map(|&(area, r)| {
                if let Some((per_1000, base)) = self.own(area, r) {
                    return Rate::Own { per_1000, base };
                }
                let small = self.per_area.get(&area).is_none_or(|&b| b < self.floor);
                match area {
                    AreaCode::Buurt(b) if small => {
                        let wijk = AreaCode::Wijk(b.wijk());
                        match by_area.get(&wijk).and_then(|&wr| self.own(wijk, wr)) {
                            Some((per_1000, base)) => Rate::RolledUp {
                                area: wijk,
                                per_1000,
                                base,
                            },
                            None => Rate::None,
                        }
                    }
                    _ => Rate::None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Released::{Suppressed as S, Value as V};

    fn a(code: &str) -> AreaCode {
        code.parse().unwrap()
    }

    #[test]
    fn rates_only_above_the_floor_and_small_buurten_show_their_wijk() {
        let bases = Bases {
            per_area: [
                (a("WK003401"), 1035),
                (a("BU00340101"), 600),
                (a("BU00340102"), 40),
                (a("WK003402"), 80),
            ]
            .into(),
            floor: 100,
        };
        let table = [
            (a("WK003401"), V(30)),
            (a("BU00340101"), V(20)),
            (a("BU00340102"), V(10)),
            (a("BU00340103"), V(12)),
            (a("BU00340104"), S),
            (a("WK003402"), V(11)),
            (a("BU00340201"), V(11)),
        ];
        let r = bases.rates(&table);
        let wijk_rate = 30.0 * 1000.0 / 1035.0;
        assert_eq!(
            r[0],
            Rate::Own {
                per_1000: wijk_rate,
                base: 1035
            }
        );
        assert_eq!(
            r[1],
            Rate::Own {
                per_1000: 20.0 * 1000.0 / 600.0,
                base: 600
            }
        );
        // Base 40 < 100, and no base at all: the wijk's rate, marked.
        assert_eq!(
            r[2],
            Rate::RolledUp {
                area: a("WK003401"),
                per_1000: wijk_rate,
                base: 1035
            }
        );
        assert_eq!(
            r[3],
            Rate::RolledUp {
                area: a("WK003401"),
                per_1000: wijk_rate,
                base: 1035
            }
        );
        assert_eq!(
            r[4],
            Rate::RolledUp {
                area: a("WK003401"),
                per_1000: wijk_rate,
                base: 1035
            }
        );
        // A wijk below the floor gets none, nor do its buurten.
        assert_eq!((r[5], r[6]), (Rate::None, Rate::None));
    }

    #[test]
    fn a_suppressed_cell_with_a_large_base_has_no_rate() {
        let bases = Bases {
            per_area: [(a("WK003401"), 1035)].into(),
            floor: 100,
        };
        assert_eq!(bases.rates(&[(a("WK003401"), S)]), [Rate::None]);
    }
}
