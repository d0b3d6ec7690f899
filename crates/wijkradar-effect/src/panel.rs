//! A balanced panel: units × periods, comparison units first, treated
//! units last; periods before the start first.

use crate::EffectError;

/// Outcomes of `n` units over `t` periods, row-major. Rows `0..n0` are the
/// comparison units, the rest treated; columns `0..t0` lie before the start.
#[derive(Debug, Clone)]
pub struct Panel {
    values: Vec<f64>,
    n: usize,
    n0: usize,
    t: usize,
    t0: usize,
}

impl Panel {
    /// A panel from its rows; every row must have the same length.
    pub fn new(rows: Vec<Vec<f64>>, n0: usize, t0: usize) -> Result<Panel, EffectError> {
        let n = rows.len();
        let t = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != t) {
            return Err(EffectError::Unbalanced);
        }
        if n0 == 0 || n0 >= n {
            return Err(EffectError::Units {
                comparison: n0,
                treated: n.saturating_sub(n0),
            });
        }
        if t0 < 2 || t0 >= t {
            return Err(EffectError::Periods {
                before: t0,
                after: t.saturating_sub(t0),
            });
        }
        if rows.iter().flatten().any(|v| !v.is_finite()) {
            return Err(EffectError::NotFinite);
        }
        Ok(Panel {
            values: rows.concat(),
            n,
            n0,
            t,
            t0,
        })
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn n0(&self) -> usize {
        self.n0
    }

    pub fn t(&self) -> usize {
        self.t
    }

    pub fn t0(&self) -> usize {
        self.t0
    }

    pub fn at(&self, unit: usize, period: usize) -> f64 {
        self.values[unit * self.t + period]
    }

    /// The treated units' mean per period.
    pub fn treated_mean(&self) -> Vec<f64> {
        let n1 = (self.n - self.n0) as f64;
        (0..self.t)
            .map(|s| (self.n0..self.n).map(|i| self.at(i, s)).sum::<f64>() / n1)
            .collect()
    }
}
