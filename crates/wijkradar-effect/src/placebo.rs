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
    /// The 90% interval: the estimate ± 1.645 standard errors.
    pub low: f64,
    pub high: f64,
    /// The standard error the placebos' variance model gives the treated
    /// series ([`VarianceModel`]).
    pub standard_error: f64,
    /// Two-sided permutation p-value: (1 + placebos whose standardised
    /// estimate is at least as far from 0) / (1 + placebos).
    pub p_value: f64,
    /// How many placebos there were.
    pub placebos: usize,
    /// The comparison side's part of the estimate's variance (the rest is
    /// the treated series' own).
    pub comparison_variance: f64,
}

/// z for a two-sided 90% interval.
pub const Z90: f64 = 1.644_853_626_951_472_2;

/// The variance of placebo estimates as the sum of two sides: τ² ≈ v + b.
/// `v` is what the pseudo-treated series' own noise adds, known from that
/// series (see `own_variance` in the design); `b` is what the comparison
/// side and the model's misfit add whatever the treated series, the mean of
/// τ² − v over the placebos (at least 0). A fitted slope for v was tried
/// first: with tens of placebos it was mostly noise, and where it fell to
/// 0 the interval of five large treated wijken took the spread of small
/// ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarianceModel {
    pub b: f64,
}

impl VarianceModel {
    /// From placebos as (estimate, v of the pseudo-treated series).
    pub fn fit(placebos: &[(f64, f64)]) -> Option<VarianceModel> {
        if placebos.len() < 2 {
            return None;
        }
        let n = placebos.len() as f64;
        let excess = placebos.iter().map(|(tau, v)| tau * tau - v).sum::<f64>() / n;
        Some(VarianceModel { b: excess.max(0.0) })
    }

    /// The variance of an estimate whose treated series adds `own`.
    pub fn variance(&self, own: f64) -> f64 {
        own + self.b
    }
}

impl Inference {
    /// Placebos of pseudo-treated series that vary more or less than the
    /// treated one: the interval from the variance the model gives the
    /// treated series (whose own noise adds `own`), the p-value from
    /// estimates standardised by each one's own modelled standard error.
    /// A placebo compares with the donors its pseudo-treated set leaves,
    /// the estimate with all of them: its comparison side varies
    /// `comparison` times as much as a placebo's (fewer than 1).
    pub fn heteroskedastic(
        estimate: f64,
        own: f64,
        comparison: f64,
        placebos: &[(f64, f64)],
    ) -> Option<Inference> {
        let model = VarianceModel::fit(placebos)?;
        let se = (own + comparison * model.b).sqrt();
        if !(se.is_finite() && se > 0.0) {
            return None;
        }
        // The p-value ranks the estimate among the placebos by one and the
        // same statistic: standardised as a placebo would be.
        let z = estimate.abs() / model.variance(own).sqrt();
        let extreme = placebos
            .iter()
            .filter(|(tau, s2)| {
                let sd = model.variance(*s2).sqrt();
                sd > 0.0 && tau.abs() / sd >= z
            })
            .count();
        Some(Inference {
            low: estimate - Z90 * se,
            high: estimate + Z90 * se,
            standard_error: se,
            p_value: (1 + extreme) as f64 / (1 + placebos.len()) as f64,
            placebos: placebos.len(),
            comparison_variance: comparison * model.b,
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
    fn the_variance_model_separates_the_two_sides() {
        // τ² = v + 1 exactly, in pairs of ± so the mean is 0.
        let placebos: Vec<(f64, f64)> = [0.5, 1.0, 2.0, 4.0]
            .iter()
            .flat_map(|&v: &f64| {
                let tau = (v + 1.0_f64).sqrt();
                [(tau, v), (-tau, v)]
            })
            .collect();
        let m = VarianceModel::fit(&placebos).unwrap();
        assert!((m.b - 1.0).abs() < 1e-9, "{m:?}");
        // A treated series with little noise gets the comparison side's
        // variance and a little more.
        let inf = Inference::heteroskedastic(0.0, 0.1, 1.0, &placebos).unwrap();
        assert!((inf.standard_error - 1.1_f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn placebos_that_vary_less_than_their_own_noise_add_nothing() {
        let placebos = [(0.1, 1.0), (-0.1, 1.0), (0.2, 2.0)];
        let m = VarianceModel::fit(&placebos).unwrap();
        assert_eq!(m.b, 0.0);
        assert_eq!(m.variance(0.5), 0.5);
    }

    #[test]
    fn p_value_counts_placebos_as_extreme() {
        // Alike in noise: each placebo counts as its own distance from 0.
        let placebos = [(-3.0, 1.0), (-1.0, 1.0), (0.5, 1.0), (2.0, 1.0)];
        let inf = Inference::heteroskedastic(2.0, 1.0, 1.0, &placebos).unwrap();
        assert!((inf.p_value - 3.0 / 5.0).abs() < 1e-12);
        assert!(inf.low < 2.0 && inf.high > 2.0);
    }
}
