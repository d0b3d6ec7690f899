//! The perturbation table of the cell key method (docs/privacy.md, "What leaves the aggregator",
//! point 2): for every true count n, a distribution of noise d with
//!
//! - support `max(-n, -D) ..= D`, so a released value is never negative and
//!   never more than D away from the truth (I3);
//! - mean 0 (unbiased) and variance V (I4);
//! - n = 0 → d = 0 always: an empty cell stays empty.
//!
//! Among all distributions that satisfy these, it takes the one of maximum
//! entropy, p(d) ∝ exp(a·d + b·d²), solved by Newton's method. Rows for
//! n ≥ D are all the same. The probabilities are quantised once, at build,
//! to integer thresholds out of 2³², and the noise of a cell is picked by
//! its cell key (uniform over u32) with integer comparisons only: the same
//! cell key gives the same noise on every host.

use std::fmt;

/// The quantisation unit: probabilities are whole multiples of 2⁻³².
const SCALE: u64 = 1 << 32;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PtableError {
    #[error("max_noise (D) must be from 1 to 20, got {0}")]
    MaxNoise(u32),
    #[error(
        "variance (V) must be above 0 and below max_noise (D = {d}), got {v}: a count of 1 allows no more"
    )]
    Variance { d: u32, v: f64 },
    #[error("the perturbation table row for n = {n} fails its check: {what}")]
    Check { n: u32, what: String },
}

/// One row: thresholds for noise `low ..= D`.
#[derive(Clone, PartialEq, Eq)]
struct Row {
    low: i32,
    /// `cumulative[i]` = P(d ≤ low + i) × 2³²; the last is 2³².
    cumulative: Vec<u64>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct PerturbationTable {
    d: u32,
    v_micro: u64,
    rows: Vec<Row>,
}

impl fmt::Debug for PerturbationTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PerturbationTable(D = {}, V = {})",
            self.d,
            self.v_micro as f64 / 1e6
        )
    }
}

/// Maximum-entropy distribution on `low..=high` with mean 0 and variance `v`.
fn max_entropy(low: i32, high: i32, v: f64) -> Vec<f64> {
    let support: Vec<f64> = (low..=high).map(f64::from).collect();
    let (mut a, mut b) = (0.0f64, -1.0 / (2.0 * v));
    let dist = |a: f64, b: f64| -> Vec<f64> {
        let logits: Vec<f64> = support.iter().map(|&d| a * d + b * d * d).collect();
        let max = logits.iter().copied().fold(f64::MIN, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = w.iter().sum();
        w.into_iter().map(|x| x / total).collect()
    };
    // (E d, E d² − v) at (a, b): both must reach 0.
    let residual = |a: f64, b: f64| -> (f64, f64, Vec<f64>) {
        let p = dist(a, b);
        let m1: f64 = support.iter().zip(&p).map(|(d, p)| d * p).sum();
        let m2: f64 = support.iter().zip(&p).map(|(d, p)| d * d * p).sum();
        (m1, m2 - v, p)
    };
    for _ in 0..200 {
        let (g1, g2, p) = residual(a, b);
        let norm = g1.abs() + g2.abs();
        if norm < 1e-13 {
            break;
        }
        let moment = |k: i32| -> f64 { support.iter().zip(&p).map(|(d, p)| d.powi(k) * p).sum() };
        let (m1, m2, m3, m4) = (moment(1), moment(2), moment(3), moment(4));
        // Jacobian of (E d, E d²) in (a, b): the covariance of (d, d²).
        let (j11, j12, j22) = (m2 - m1 * m1, m3 - m1 * m2, m4 - m2 * m2);
        let det = j11 * j22 - j12 * j12;
        if det.abs() < 1e-300 {
            break;
        }
        let (da, db) = ((j22 * g1 - j12 * g2) / det, (j11 * g2 - j12 * g1) / det);
        // Backtracking: halve the Newton step until the residual shrinks.
        let mut step = 1.0;
        while step > 1e-9 {
            let (r1, r2, _) = residual(a - da * step, b - db * step);
            if r1.abs() + r2.abs() < norm {
                break;
            }
            step /= 2.0;
        }
        a -= da * step;
        b -= db * step;
    }
    dist(a, b)
}

fn quantise(p: &[f64]) -> Vec<u64> {
    let mut cumulative = Vec::with_capacity(p.len());
    let mut sum = 0.0;
    for &x in p {
        sum += x;
        cumulative.push(((sum * SCALE as f64).round() as u64).min(SCALE));
    }
    if let Some(last) = cumulative.last_mut() {
        *last = SCALE;
    }
    cumulative
}

impl PerturbationTable {
    /// Builds and checks the table for maximum noise `d` and variance `v`.
    pub fn build(d: u32, v: f64) -> Result<PerturbationTable, PtableError> {
        if !(1..=20).contains(&d) {
            return Err(PtableError::MaxNoise(d));
        }
        if !(v > 0.0 && v < f64::from(d)) {
            return Err(PtableError::Variance { d, v });
        }
        let di = d as i32;
        let mut rows = vec![Row {
            low: 0,
            cumulative: vec![SCALE],
        }];
        for n in 1..=di {
            let low = (-n).max(-di);
            rows.push(Row {
                low,
                cumulative: quantise(&max_entropy(low, di, v)),
            });
        }
        let table = PerturbationTable {
            d,
            v_micro: (v * 1e6).round() as u64,
            rows,
        };
        table.check()?;
        Ok(table)
    }

    pub fn max_noise(&self) -> u32 {
        self.d
    }

    pub fn variance(&self) -> f64 {
        self.v_micro as f64 / 1e6
    }

    fn row(&self, n: u64) -> &Row {
        &self.rows[n.min(u64::from(self.d)) as usize]
    }

    /// The probabilities of a row, from its integer thresholds.
    fn probabilities(&self, n: u64) -> (i32, Vec<f64>) {
        let row = self.row(n);
        let mut previous = 0;
        let p = row
            .cumulative
            .iter()
            .map(|&c| {
                let x = (c - previous) as f64 / SCALE as f64;
                previous = c;
                x
            })
            .collect();
        (row.low, p)
    }

    /// Verifies every row as quantised: total exactly 2³², support inside
    /// `max(-n, -D)..=D`, mean 0 and variance V to within 10⁻⁶ (rows n ≥ 1).
    pub fn check(&self) -> Result<(), PtableError> {
        let fail = |n: u32, what: String| Err(PtableError::Check { n, what });
        if self.rows[0].cumulative != [SCALE] || self.rows[0].low != 0 {
            return fail(0, "a true 0 must always stay 0".into());
        }
        for n in 1..=self.d {
            let row = self.row(u64::from(n));
            if row.cumulative.last() != Some(&SCALE)
                || row.cumulative.windows(2).any(|w| w[0] > w[1])
            {
                return fail(n, "thresholds must rise to exactly 2^32".into());
            }
            if row.low < -(n as i32) || row.low + row.cumulative.len() as i32 - 1 != self.d as i32 {
                return fail(n, "support outside max(-n, -D)..=D".into());
            }
            let (low, p) = self.probabilities(u64::from(n));
            let mean: f64 = p
                .iter()
                .enumerate()
                .map(|(i, p)| f64::from(low + i as i32) * p)
                .sum();
            let var: f64 = p
                .iter()
                .enumerate()
                .map(|(i, p)| f64::from(low + i as i32).powi(2) * p)
                .sum::<f64>()
                - mean * mean;
            if mean.abs() > 1e-6 {
                return fail(n, format!("mean {mean:e} is not 0"));
            }
            if (var - self.variance()).abs() > 1e-6 {
                return fail(n, format!("variance {var} is not {}", self.variance()));
            }
        }
        Ok(())
    }

    /// The noise for a cell of true count `n` with cell key `cell_key`.
    pub fn noise(&self, n: u64, cell_key: u32) -> i64 {
        let row = self.row(n);
        let position = row
            .cumulative
            .partition_point(|&c| c <= u64::from(cell_key));
        i64::from(row.low) + position as i64
    }

    /// `n` perturbed: never negative, never more than D from `n`, 0 stays 0.
    pub fn perturb(&self, n: u64, cell_key: u32) -> u64 {
        n.saturating_add_signed(self.noise(n, cell_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builds_the_default_table_and_refuses_impossible_ones() {
        let t = PerturbationTable::build(4, 2.0).unwrap();
        assert_eq!(t.max_noise(), 4);
        t.check().unwrap();
        assert_eq!(
            PerturbationTable::build(0, 1.0),
            Err(PtableError::MaxNoise(0))
        );
        assert!(matches!(
            PerturbationTable::build(2, 2.0),
            Err(PtableError::Variance { .. })
        ));
        assert!(matches!(
            PerturbationTable::build(4, 0.0),
            Err(PtableError::Variance { .. })
        ));
        for (d, v) in [(1, 0.5), (2, 1.0), (3, 2.5), (5, 3.0), (10, 9.5)] {
            PerturbationTable::build(d, v).unwrap_or_else(|e| panic!("D {d} V {v}: {e}"));
        }
    }

    #[test]
    fn a_row_is_a_distribution_the_cell_keys_sample_exactly() {
        // Walking every threshold of a row reproduces its probabilities: the
        // cell key picks noise d exactly for keys in [cum(d-1), cum(d)).
        let t = PerturbationTable::build(4, 2.0).unwrap();
        for n in 0..=6u64 {
            let row = t.row(n);
            let mut start = 0u64;
            for (i, &end) in row.cumulative.iter().enumerate() {
                let want = i64::from(row.low) + i as i64;
                if end > start {
                    assert_eq!(
                        t.noise(n, start as u32),
                        want,
                        "n {n}, first key of d {want}"
                    );
                    assert_eq!(
                        t.noise(n, (end - 1) as u32),
                        want,
                        "n {n}, last key of d {want}"
                    );
                }
                start = end;
            }
        }
    }

    proptest! {
        /// I4: every valid (D, V) gives rows that sum to 1 with mean 0 and
        /// variance V (checked by `build` on the quantised table).
        #[test]
        fn every_valid_configuration_builds_and_checks(d in 1u32..12, frac in 0.05f64..0.95) {
            let v = f64::from(d) * frac;
            prop_assert!(PerturbationTable::build(d, v).is_ok(), "D {} V {}", d, v);
        }

        /// I3: |released − true| ≤ D, never negative, 0 stays 0.
        #[test]
        fn perturbed_values_stay_within_d(n in 0u64..500, key in any::<u32>(), d in 1u32..8) {
            let t = PerturbationTable::build(d, f64::from(d) / 2.0).unwrap();
            let r = t.perturb(n, key);
            prop_assert!(r.abs_diff(n) <= u64::from(d));
            if n == 0 { prop_assert_eq!(r, 0); }
        }
    }
}
