//! Open data: quarterly and yearly tables at wijk and gemeente level with
//! differential privacy, for figures a municipality publishes openly.
//!
//! One household changes a table of one measure and period by at most one
//! in its wijk's cell and one in the gemeente's: the table's L1
//! sensitivity is 2. Each cell gets discrete Laplace noise of integer scale
//! t, so one release is (2/t)-differentially private. Releases of one
//! gemeente, measure and year draw on one budget; the caller refuses a
//! release that would spend more. Negative results are shown as 0
//! (post-processing, which costs no privacy).
//!
//! The sampler is exact: integer arithmetic only, after Canonne, Kamath
//! and Steinke, "The discrete Gaussian for differential privacy" (2020),
//! algorithm 2. No floating point, so no leak through rounding.

use wijkradar_domain::{AreaLevel, BuurtCode, CellTotal};

use crate::GemeenteTable;

/// How much one household changes one open table, summed over its cells.
pub const SENSITIVITY: u64 = 2;

/// A source of uniform random 64-bit words: a cryptographic generator in
/// production, a seeded one in tests.
pub trait Entropy {
    fn next_u64(&mut self) -> u64;
}

/// Uniform in `0..n` (n ≥ 1), without modulo bias.
fn below(e: &mut impl Entropy, n: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let x = e.next_u64();
        if x < zone {
            return x % n;
        }
    }
}

/// Bernoulli(num / den).
fn bernoulli(e: &mut impl Entropy, num: u64, den: u64) -> bool {
    below(e, den) < num
}

/// Bernoulli(exp(-num / den)) for 0 ≤ num ≤ den.
fn bernoulli_exp_at_most_one(e: &mut impl Entropy, num: u64, den: u64) -> bool {
    let mut k: u64 = 1;
    while bernoulli(e, num, den.saturating_mul(k)) {
        k += 1;
    }
    k % 2 == 1
}

/// Bernoulli(exp(-num / den)) for any num ≥ 0.
fn bernoulli_exp(e: &mut impl Entropy, num: u64, den: u64) -> bool {
    let mut rest = num;
    while rest > den {
        if !bernoulli_exp_at_most_one(e, 1, 1) {
            return false;
        }
        rest -= den;
    }
    bernoulli_exp_at_most_one(e, rest, den)
}

/// Discrete Laplace of scale `t` (≥ 1): P(x) ∝ exp(-|x| / t).
pub fn discrete_laplace(e: &mut impl Entropy, t: u64) -> i64 {
    assert!(t >= 1, "a scale of at least 1");
    loop {
        let u = below(e, t);
        if !bernoulli_exp(e, u, t) {
            continue;
        }
        let mut v: u64 = 0;
        while bernoulli_exp(e, 1, 1) {
            v += 1;
        }
        let x = u + t * v;
        let negative = bernoulli(e, 1, 2);
        if negative && x == 0 {
            continue;
        }
        return if negative { -(x as i64) } else { x as i64 };
    }
}

/// The variance of discrete Laplace noise of scale `t`:
/// 2e^(-1/t) / (1 - e^(-1/t))².
pub fn variance(t: u64) -> f64 {
    let q = (-1.0 / t as f64).exp();
    2.0 * q / (1.0 - q).powi(2)
}

/// An open release of one measure and period: every wijk and the gemeente
/// with its true total plus noise of scale `t` (0 where that is below);
/// buurten hold nothing. In the table's node order.
pub fn release(
    table: &GemeenteTable,
    buurt_totals: &[(BuurtCode, CellTotal)],
    t: u64,
    e: &mut impl Entropy,
) -> Vec<Option<u64>> {
    let totals = table.totals(buurt_totals);
    table
        .codes()
        .iter()
        .zip(totals)
        .map(|(area, total)| match area.level() {
            AreaLevel::Buurt => None,
            AreaLevel::Wijk | AreaLevel::Gemeente => {
                let noisy = total.households as i64 + discrete_laplace(e, t);
                Some(noisy.max(0) as u64)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wijkradar_domain::{GemeenteCode, Hierarchy};

    /// SplitMix64: a seeded generator for the tests.
    struct Seeded(u64);

    impl Entropy for Seeded {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn the_noise_has_the_discrete_laplace_shape() {
        let mut e = Seeded(7);
        for t in [1u64, 4, 10] {
            let n = 200_000;
            let draws: Vec<i64> = (0..n).map(|_| discrete_laplace(&mut e, t)).collect();
            let mean = draws.iter().sum::<i64>() as f64 / n as f64;
            let var = draws
                .iter()
                .map(|&x| (x as f64 - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            assert!(mean.abs() < 0.05 * (1.0 + t as f64), "t {t}: mean {mean}");
            let expected = variance(t);
            assert!(
                (var / expected - 1.0).abs() < 0.03,
                "t {t}: {var} against {expected}"
            );
            // P(0) / P(1) = e^(1/t): the ratio one household can move.
            let count = |v: i64| draws.iter().filter(|&&x| x == v).count() as f64;
            let ratio = count(0) / count(1);
            let want = (1.0 / t as f64).exp();
            assert!(
                (ratio / want - 1.0).abs() < 0.05,
                "t {t}: {ratio} against {want}"
            );
            assert!(
                (count(1) / count(-1) - 1.0).abs() < 0.05,
                "t {t}: not symmetric"
            );
        }
    }

    #[test]
    fn an_open_release_has_every_wijk_and_the_gemeente_and_no_buurt() {
        let h = Hierarchy::netherlands_2023();
        let g: GemeenteCode = "GM0034".parse().unwrap();
        let table = GemeenteTable::new(&h, g);
        let buurten: Vec<BuurtCode> = h.buurten_of(g).collect();
        let totals: Vec<(BuurtCode, CellTotal)> = buurten
            .iter()
            .map(|&b| {
                let t = CellTotal {
                    households: 3,
                    cell_key: 0,
                };
                (b, t)
            })
            .collect();
        let out = release(&table, &totals, 4, &mut Seeded(1));
        let mut gemeente = None;
        for (area, v) in table.codes().iter().zip(&out) {
            match area.level() {
                AreaLevel::Buurt => assert_eq!(*v, None),
                AreaLevel::Wijk => assert!(v.is_some(), "{area}"),
                AreaLevel::Gemeente => gemeente = *v,
            }
        }
        // The gemeente's own noise, around its true total.
        let truth = 3 * buurten.len() as u64;
        assert!(
            gemeente.unwrap().abs_diff(truth) < 60,
            "{gemeente:?} against {truth}"
        );
    }
}
