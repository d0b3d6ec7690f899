//! Benjamini–Hochberg control of the false discovery rate over one month's
//! tests: sort the m p-values, find the largest rank i with p_(i) ≤ i·q/m,
//! and reject the i smallest.

/// Which of `p_values` are discoveries at false discovery rate `q`.
pub fn benjamini_hochberg(p_values: &[f64], q: f64) -> Vec<bool> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let cut = order
        .iter()
        .enumerate()
        .filter(|&(rank, &i)| p_values[i] <= (rank + 1) as f64 * q / m as f64)
        .map(|(rank, _)| rank + 1)
        .max()
        .unwrap_or(0);
    let mut out = vec![false; m];
    for &i in &order[..cut] {
        out[i] = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // m = 5, q = 0.05: thresholds 0.01, 0.02, 0.03, 0.04, 0.05.
        // Sorted 0.001, 0.015, 0.035, 0.038, 0.2: rank 4 passes (0.038 ≤ 0.04),
        // so the four smallest are discoveries, though 0.035 > 0.03.
        let p = [0.2, 0.035, 0.001, 0.038, 0.015];
        assert_eq!(
            benjamini_hochberg(&p, 0.05),
            [false, true, true, true, true]
        );
        assert_eq!(benjamini_hochberg(&[0.5, 0.9], 0.05), [false, false]);
        assert!(benjamini_hochberg(&[], 0.05).is_empty());
    }
}
