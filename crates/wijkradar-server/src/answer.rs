//! A table answer being built, part by part (one signal type or derived
//! indicator × one period): as a list of cells, or in the compact columns
//! form for whole-municipality tables. Both come from the same releases and
//! the same rate rules; `TableColumns::cells` turns the second into the
//! first, and a test holds them equal.

use wijkradar_domain::{AreaCode, AreaLevel};
use wijkradar_proto::v1 as pb;
use wijkradar_release::{Bases, GemeenteTable, Rate, Released};

use crate::query::VersionedRelease;

/// How a row's rate is found.
#[derive(Debug, Clone, Copy)]
struct RowRate {
    /// Whether the row's own base is at least the floor (and above 0).
    own: bool,
    /// For a buurt below the floor (or without a base): its wijk's node,
    /// when the wijk's base is at least the floor.
    rolled_up: Option<usize>,
}

#[derive(Debug)]
enum Form {
    Cells(Vec<pb::Cell>),
    Columns {
        columns: Box<pb::TableColumns>,
        rates: Vec<RowRate>,
        /// The wijken rows roll their rates up to, in order: their released
        /// values go once per block.
        rolled_up: Vec<usize>,
    },
}

#[derive(Debug)]
pub(crate) struct Answer<'a> {
    bases: &'a Bases,
    level: AreaLevel,
    /// The nodes of the table at `level`, in order: the rows.
    rows: Vec<usize>,
    codes: Vec<AreaCode>,
    form: Form,
}

impl<'a> Answer<'a> {
    pub(crate) fn new(
        bases: &'a Bases,
        table: &GemeenteTable,
        level: AreaLevel,
        columns: bool,
    ) -> Answer<'a> {
        let codes = table.codes().to_vec();
        let rows: Vec<usize> = (0..codes.len())
            .filter(|&i| codes[i].level() == level)
            .collect();
        let form = if columns {
            let index: std::collections::HashMap<AreaCode, usize> =
                codes.iter().enumerate().map(|(i, &a)| (a, i)).collect();
            let usable = |a: &AreaCode| {
                bases
                    .per_area
                    .get(a)
                    .copied()
                    .filter(|&b| b >= bases.floor && b > 0)
            };
            let signed = |a: &AreaCode| bases.per_area.get(a).map_or(-1, |&b| b as i64);
            let mut c = pb::TableColumns::default();
            let mut rates = Vec::with_capacity(rows.len());
            for &i in &rows {
                let area = codes[i];
                let small = bases.per_area.get(&area).is_none_or(|&b| b < bases.floor);
                let rolled_up = match area {
                    AreaCode::Buurt(b) if small => {
                        let wijk = AreaCode::Wijk(b.wijk());
                        index
                            .get(&wijk)
                            .copied()
                            .filter(|_| usable(&wijk).is_some())
                    }
                    _ => None,
                };
                let rate_area = match area {
                    AreaCode::Buurt(b) if small => AreaCode::Wijk(b.wijk()),
                    _ => area,
                };
                c.area_codes.push(area.to_string());
                c.rate_area_codes.push(rate_area.to_string());
                c.rate_area_bases.push(signed(&rate_area));
                c.own_bases.push(signed(&area));
                rates.push(RowRate {
                    own: usable(&area).is_some(),
                    rolled_up,
                });
            }
            let mut rolled_up: Vec<usize> = Vec::new();
            for w in rates.iter().filter_map(|r| r.rolled_up) {
                if !rolled_up.contains(&w) {
                    rolled_up.push(w);
                }
            }
            c.rolled_up_areas = rolled_up.iter().map(|&w| codes[w].to_string()).collect();
            Form::Columns {
                columns: Box::new(c),
                rates,
                rolled_up,
            }
        } else {
            Form::Cells(Vec::new())
        };
        Answer {
            bases,
            level,
            rows,
            codes,
            form,
        }
    }

    /// Adds one part: its release, or the status of all its cells (pending,
    /// purged); `crosses` when it spans a key change that was not linked.
    pub(crate) fn part(
        &mut self,
        name: &str,
        period: &str,
        release: Result<VersionedRelease, pb::CellStatus>,
        crosses: bool,
    ) {
        match &mut self.form {
            Form::Cells(cells) => {
                let first = cells.len();
                push_cells(
                    cells,
                    self.bases,
                    &self.codes,
                    self.level,
                    name,
                    period,
                    release,
                );
                for c in &mut cells[first..] {
                    c.crosses_key_change = crosses;
                }
            }
            Form::Columns {
                columns,
                rates,
                rolled_up,
            } => {
                columns.block_signal_types.push(name.to_owned());
                columns.block_periods.push(period.to_owned());
                columns.block_crosses_key_change.push(crosses);
                let (version, released) = match release {
                    Ok(r) => r,
                    Err(status) => {
                        columns.block_release_versions.push(0);
                        let n = self.rows.len();
                        let first = columns.statuses.len();
                        for cell in first..first + n {
                            push_bit(&mut columns.has_rate_bits, cell, false);
                        }
                        columns
                            .statuses
                            .extend(std::iter::repeat_n(status as u8, n));
                        columns
                            .rolled_up_values
                            .extend(std::iter::repeat_n(0, rolled_up.len()));
                        return;
                    }
                };
                columns.block_release_versions.push(version);
                let value = |node: usize| match released.get(node) {
                    Some((_, Released::Value(v))) => Some(*v),
                    _ => None,
                };
                for (&node, rate) in self.rows.iter().zip(rates.iter()) {
                    let v = value(node);
                    match v {
                        Some(v) => {
                            columns.statuses.push(pb::CellStatus::Released as u8);
                            columns.released_values.push(v);
                        }
                        None => columns.statuses.push(pb::CellStatus::Suppressed as u8),
                    }
                    // The rate's numerator: the cell's own value, or its
                    // wijk's (sent once per block below); the reader divides
                    // by the row's rate area base, as `rates` in the cells
                    // form.
                    let has_rate = match (rate.own, v, rate.rolled_up) {
                        (true, Some(_), _) => true,
                        (false, _, Some(wijk)) => value(wijk).is_some(),
                        _ => false,
                    };
                    let cell = columns.statuses.len() - 1;
                    push_bit(&mut columns.has_rate_bits, cell, has_rate);
                }
                // A released value is at least k: 0 stands for none.
                columns
                    .rolled_up_values
                    .extend(rolled_up.iter().map(|&w| value(w).unwrap_or(0)));
            }
        }
    }

    /// The cells, or the columns.
    pub(crate) fn finish(self) -> (Vec<pb::Cell>, Option<pb::TableColumns>) {
        match self.form {
            Form::Cells(cells) => (cells, None),
            Form::Columns { columns, .. } => (Vec::new(), Some(*columns)),
        }
    }
}

/// One part as cells, with rates from [`Bases::rates`].
fn push_cells(
    cells: &mut Vec<pb::Cell>,
    bases: &Bases,
    codes: &[AreaCode],
    level: AreaLevel,
    name: &str,
    period: &str,
    release: Result<VersionedRelease, pb::CellStatus>,
) {
    let (version, released) = match release {
        Ok(r) => r,
        Err(status) => {
            for area in codes.iter().filter(|a| a.level() == level) {
                cells.push(pb::Cell {
                    area_code: area.to_string(),
                    signal_type: name.to_owned(),
                    month: period.to_owned(),
                    status: status.into(),
                    rate_area_code: area.to_string(),
                    ..Default::default()
                });
            }
            return;
        }
    };
    let rates = bases.rates(&released);
    for ((area, released), rate) in released.into_iter().zip(rates) {
        if area.level() != level {
            continue;
        }
        let (status, value) = match released {
            Released::Value(v) => (pb::CellStatus::Released, Some(v)),
            Released::Suppressed => (pb::CellStatus::Suppressed, None),
        };
        let (rate_per_1000, rate_area, household_base) = match rate {
            Rate::Own { per_1000, base } => (Some(per_1000), area, Some(base)),
            Rate::RolledUp {
                area: wijk,
                per_1000,
                base,
            } => (Some(per_1000), wijk, Some(base)),
            Rate::None => (None, area, bases.per_area.get(&area).copied()),
        };
        cells.push(pb::Cell {
            area_code: area.to_string(),
            signal_type: name.to_owned(),
            month: period.to_owned(),
            status: status.into(),
            value,
            rate_per_1000,
            rate_area_code: rate_area.to_string(),
            household_base,
            release_version: version,
            crosses_key_change: false,
        });
    }
}

/// Sets bit `i` (least significant first) of a bitset that grows one cell at
/// a time: `bits` holds exactly the bytes cells `0..i` need.
fn push_bit(bits: &mut Vec<u8>, i: usize, set: bool) {
    if i.is_multiple_of(8) {
        bits.push(0);
    }
    if set {
        *bits.last_mut().expect("a byte for cell i") |= 1 << (i % 8);
    }
}

#[cfg(test)]
mod tests {
    use super::push_bit;

    #[test]
    fn rate_bits_are_one_per_cell_least_significant_first() {
        let mut bits = Vec::new();
        let set = [0, 3, 8, 9, 16];
        for i in 0..17 {
            push_bit(&mut bits, i, set.contains(&i));
        }
        assert_eq!(bits, vec![0b0000_1001, 0b0000_0011, 0b0000_0001]);
    }
}
