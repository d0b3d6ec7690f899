//! Inference by placebo in space.
//!
//! With one to five treated wijken, cluster-robust or bootstrap errors are
//! not valid. Instead the same estimate is made for sets of comparison
//! wijken as if they had been treated. Their spread is the estimator's
//! spread without an effect: it gives the interval, and the share of
//! placebos at least as large gives the p-value.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;

use crate::sdid::sample_sd;

/// The draws of pseudo-treated sets: every set when there are at most
/// `draws` of them, else `draws` random sets (seeded, so a report repeats).
pub fn draws(donors: usize, treated: usize, draws: usize, seed: u64) -> Vec<Vec<usize>> {
    if treated == 0 || treated >= donors {
        return Vec::new();
    }
    if combinations(donors, treated).is_some_and(|c| c <= draws as u128) {
        return all_sets(donors, treated);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    (0..draws)
        .map(|_| {
            let mut set = sample(&mut rng, donors, treated).into_vec();
            set.sort_unstable();
            set
        })
        .collect()
}

fn combinations(n: usize, k: usize) -> Option<u128> {
    let mut c: u128 = 1;
    for i in 0..k {
        c = c.checked_mul((n - i) as u128)? / (i as u128 + 1);
    }
    Some(c)
}

fn all_sets(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut set: Vec<usize> = (0..k).collect();
    loop {
        out.push(set.clone());
        // The next combination in lexicographic order.
        let Some(i) = (0..k).rev().find(|&i| set[i] < n - k + i) else {
            return out;
        };
        set[i] += 1;
        for j in i + 1..k {
            set[j] = set[j - 1] + 1;
        }
    }
}

/// An estimate's interval and p-value from its placebos.
#[derive(Debug, Clone)]
pub struct Inference {
    /// The 90% interval: the estimate ± 1.645 placebo standard errors.
    pub low: f64,
    pub high: f64,
    /// The placebo standard error.
    pub standard_error: f64,
    /// Two-sided permutation p-value: (1 + placebos at least as far from
    /// 0) / (1 + placebos).
    pub p_value: f64,
    /// How many placebos there were.
    pub placebos: usize,
}

/// z for a two-sided 90% interval.
pub const Z90: f64 = 1.644_853_626_951_472_2;

impl Inference {
    /// `None` with fewer than 2 placebos: no interval can be given.
    pub fn new(estimate: f64, placebos: &[f64]) -> Option<Inference> {
        if placebos.len() < 2 {
            return None;
        }
        // As synthdid's placebo variance: sqrt((r − 1)/r) · sd.
        let r = placebos.len() as f64;
        let se = ((r - 1.0) / r).sqrt() * sample_sd(placebos);
        let extreme = placebos
            .iter()
            .filter(|p| p.abs() >= estimate.abs())
            .count();
        Some(Inference {
            low: estimate - Z90 * se,
            high: estimate + Z90 * se,
            standard_error: se,
            p_value: (1 + extreme) as f64 / (1.0 + r),
            placebos: placebos.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_sets_are_all_enumerated_once() {
        let sets = draws(6, 2, 1000, 1);
        assert_eq!(sets.len(), 15);
        let mut unique = sets.clone();
        unique.dedup();
        assert_eq!(unique.len(), 15);
        assert!(sets.iter().all(|s| s[0] < s[1] && s[1] < 6));
    }

    #[test]
    fn many_sets_are_drawn() {
        let sets = draws(40, 3, 1000, 1);
        assert_eq!(sets.len(), 1000);
        assert_eq!(sets, draws(40, 3, 1000, 1), "seeded");
    }

    #[test]
    fn p_value_counts_placebos_as_extreme() {
        let placebos = [-3.0, -1.0, 0.5, 2.0];
        let inf = Inference::new(2.0, &placebos).unwrap();
        assert!((inf.p_value - 3.0 / 5.0).abs() < 1e-12);
        assert!(inf.low < 2.0 && inf.high > 2.0);
    }
}
