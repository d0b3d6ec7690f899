//! One intervention's analysis from released cells.
//!
//! The input is what the release rules let out: per wijk and period a
//! released count, or nothing when the cell was suppressed. The steps:
//! 1. Comparison wijken with more than half of their cells suppressed are
//!    left out; the other suppressed cells are imputed from a Poisson model
//!    with area and period effects, capped below the threshold.
//! 2. Rates per 1,000 households; the treated wijken pooled into one series
//!    (their counts over their households).
//! 3. Synthetic difference-in-differences, with synthetic control,
//!    difference-in-differences and the Poisson model beside it.
//! 4. Placebos in space for the interval and the p-value; diagnostics.

use crate::EffectError;
use crate::panel::Panel;
use crate::placebo::{self, Inference};
use crate::poisson;
use crate::sdid::{self, Estimate, Estimator};

/// One wijk's released figures.
#[derive(Debug, Clone)]
pub struct AreaSeries {
    /// Households: the rate's base.
    pub households: f64,
    /// Released count per period; `None` where the cell was suppressed.
    pub cells: Vec<Option<f64>>,
}

/// What the analysis needs.
#[derive(Debug, Clone)]
pub struct Design {
    pub treated: Vec<AreaSeries>,
    /// Comparison wijken: same gemeente, neighbours already left out.
    pub donors: Vec<AreaSeries>,
    /// Index of the first period from the start on.
    pub start: usize,
    /// A suppressed cell's true value lies below this.
    pub threshold: f64,
    /// 12 for months, 4 for quarters.
    pub periods_per_year: usize,
    /// Placebo draws at most.
    pub draws: usize,
    pub seed: u64,
}

/// Comparison wijken with more suppressed cells than this share are left out.
pub const MAX_SUPPRESSED_DONOR: f64 = 0.5;
/// Placebos an interval needs at least. Most of an estimate's variance is
/// its treated series' own ([`Design::analyse`]); the placebos give the
/// comparison side, which five can. With fewer than [`CLAIM_PLACEBOS`] no
/// p-value can fall below 0.10: such a design can bound an effect, not
/// show one.
pub const MIN_PLACEBOS: usize = 5;

/// Placebos a p-value below 0.10 needs: it is at least 1/(placebos + 1).
pub const CLAIM_PLACEBOS: usize = 9;

/// Above this share of suppressed monthly cells, quarters are used.
pub const MONTHLY_SUPPRESSED_MAX: f64 = 0.3;

/// Comparison wijken with mostly released monthly cells a design wants
/// before it settles for months.
pub const MONTHLY_DONORS_MIN: usize = 15;

/// Whether a design should use quarters: more than
/// [`MONTHLY_SUPPRESSED_MAX`] of the monthly cells it would use are
/// suppressed (the treated wijken's, and those of the comparison wijken
/// not left out for having mostly suppressed cells), or fewer than
/// [`MONTHLY_DONORS_MIN`] comparison wijken have mostly released months.
pub fn prefers_quarters<'a>(
    treated: impl IntoIterator<Item = &'a [Option<f64>]>,
    donors: impl IntoIterator<Item = &'a [Option<f64>]>,
) -> bool {
    let share = |row: &[Option<f64>]| {
        row.iter().filter(|c| c.is_none()).count() as f64 / row.len().max(1) as f64
    };
    let kept: Vec<&[Option<f64>]> = donors
        .into_iter()
        .filter(|row| share(row) <= MAX_SUPPRESSED_DONOR)
        .collect();
    let few = kept.len() < MONTHLY_DONORS_MIN;
    let rows: Vec<&[Option<f64>]> = treated.into_iter().chain(kept).collect();
    let total: usize = rows.iter().map(|r| r.len()).sum();
    let hidden: usize = rows
        .iter()
        .map(|r| r.iter().filter(|c| c.is_none()).count())
        .sum();
    few || total == 0 || hidden as f64 / total as f64 > MONTHLY_SUPPRESSED_MAX
}

/// The comparison wijken: `others` without the treated wijken's
/// `neighbours` (they may feel the intervention too), unless that leaves
/// fewer than max(8, 3 × treated): then all others, for without enough
/// comparison wijken there is neither a fit nor a placebo distribution.
/// Returns them and how many neighbours were left out.
pub fn choose_donors<T: PartialEq + Copy>(
    treated: usize,
    others: &[T],
    neighbours: &[T],
) -> (Vec<T>, usize) {
    let far: Vec<T> = others
        .iter()
        .copied()
        .filter(|w| !neighbours.contains(w))
        .collect();
    if far.len() >= (3 * treated).max(8) {
        let left_out = others.len() - far.len();
        (far, left_out)
    } else {
        (others.to_vec(), 0)
    }
}

/// z₀.₉₅ + z₀.₈₀: a two-sided 10% test with 80% power.
const DETECTABLE_Z: f64 = 1.644_853_6 + 0.841_621_2;

/// The answer.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Synthetic difference-in-differences: the default.
    pub estimate: Estimate,
    /// The checks beside it, as relative changes (−0.2 is 20% fewer).
    pub synthetic_control: f64,
    pub diff_in_diff: f64,
    pub poisson: f64,
    /// The interval and p-value from placebos in space; `None` with too few
    /// comparison wijken.
    pub inference: Option<Inference>,
    /// The effect relative to the course without the intervention, with
    /// its 90% interval.
    pub relative: Interval,
    /// The effect in households per period, with its 90% interval.
    pub households_per_period: Interval,
    /// Rates per 1,000 households, mean before and after the start.
    pub treated_rate: (f64, f64),
    /// Per period: a treated wijk's cell was suppressed, so the treated
    /// course there holds an imputed value.
    pub treated_imputed: Vec<bool>,
    pub comparison_rate: (f64, f64),
    pub diagnostics: Diagnostics,
}

/// A point estimate with its 90% interval (the same when there is none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// What the user should weigh beside the estimate.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// Root mean square gap between the treated course and its synthetic
    /// course before the start (rate per 1,000).
    pub pre_fit: f64,
    /// Share of placebos that fit better before the start: near 1 means
    /// the treated wijken are hard to match.
    pub placebos_fitting_better: f64,
    /// The same estimate with a start one year earlier, on the data before
    /// the real start: it should be near 0.
    pub false_start: Option<f64>,
    /// 1 / Σω²: how many comparison wijken carry the estimate.
    pub effective_donors: f64,
    pub largest_weight: f64,
    pub donors_used: usize,
    pub donors_left_out: usize,
    /// Shares of suppressed (imputed) cells.
    pub suppressed_treated: f64,
    pub suppressed_donors: f64,
    /// The treated wijken were chosen right after a spike: part of a fall
    /// may come by itself (regression to the mean).
    pub chosen_after_spike: bool,
}

/// The pooled, imputed data: the panel and what it was made from.
struct Prepared {
    /// Rates relative to each series' own mean before the start.
    panel: Panel,
    /// The treated series' mean rate before the start: normalised values
    /// times this are rates per 1,000 households.
    treated_scale: f64,
    /// Counts (imputed) per unit, donors first then treated.
    counts: Vec<Vec<f64>>,
    /// Released counts only, `None` where suppressed, same order.
    released: Vec<Vec<Option<f64>>>,
    households: Vec<f64>,
    n_donors: usize,
    donors_left_out: usize,
    suppressed_treated: f64,
    suppressed_donors: f64,
}

impl Design {
    fn periods(&self) -> usize {
        self.treated.first().map_or(0, |a| a.cells.len())
    }

    fn prepare(&self) -> Result<Prepared, EffectError> {
        let t = self.periods();
        let all = self.treated.iter().chain(&self.donors);
        if all.clone().any(|a| a.cells.len() != t) {
            return Err(EffectError::Unbalanced);
        }
        let suppressed = |a: &AreaSeries| {
            a.cells.iter().filter(|c| c.is_none()).count() as f64 / t.max(1) as f64
        };
        let kept: Vec<&AreaSeries> = self
            .donors
            .iter()
            .filter(|a| a.households > 0.0 && suppressed(a) <= MAX_SUPPRESSED_DONOR)
            .collect();
        let units: Vec<&AreaSeries> = kept.iter().copied().chain(&self.treated).collect();
        let n_donors = kept.len();
        if n_donors == 0 {
            return Err(EffectError::Units {
                comparison: 0,
                treated: self.treated.len(),
            });
        }
        let released: Vec<Vec<Option<f64>>> = units.iter().map(|a| a.cells.clone()).collect();
        let households: Vec<f64> = units.iter().map(|a| a.households).collect();
        // The imputation model sees no treated cell after the start, so an
        // effect cannot leak into what fills the gaps.
        let blind: Vec<Vec<Option<f64>>> = released
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row.iter()
                    .enumerate()
                    .map(|(s, c)| {
                        if i >= n_donors && s >= self.start {
                            None
                        } else {
                            *c
                        }
                    })
                    .collect()
            })
            .collect();
        let expected = poisson::expected_without_effect(&blind, &households);
        let cap = (self.threshold - 1.0).max(0.0);
        let counts: Vec<Vec<f64>> = released
            .iter()
            .zip(&expected)
            .map(|(row, e)| {
                row.iter()
                    .zip(e)
                    .map(|(c, e)| c.unwrap_or_else(|| e.clamp(0.0, cap)))
                    .collect()
            })
            .collect();
        // Each series relative to its own mean before the start: a trend
        // that multiplies every wijk's rate then moves every series alike,
        // and the effect comes out as a relative change.
        let mut rows: Vec<Vec<f64>> = (0..n_donors)
            .map(|i| normalised(pooled(&counts[i..=i], &households[i..=i]), self.start).0)
            .collect();
        let (treated_row, treated_scale) = normalised(
            pooled(&counts[n_donors..], &households[n_donors..]),
            self.start,
        );
        rows.push(treated_row);
        // With no period after the start (a design judged on its history
        // only), the panel's last period stands in as "after"; only
        // [`Design::detectable_effect`] uses such a panel.
        let panel = Panel::new(rows, n_donors, self.start.min(t.saturating_sub(1)))?;
        let share = |areas: &[&AreaSeries]| {
            let cells = areas.len() * t;
            let hidden: usize = areas
                .iter()
                .map(|a| a.cells.iter().filter(|c| c.is_none()).count())
                .sum();
            if cells == 0 {
                0.0
            } else {
                hidden as f64 / cells as f64
            }
        };
        let treated: Vec<&AreaSeries> = self.treated.iter().collect();
        Ok(Prepared {
            panel,
            treated_scale,
            counts,
            released,
            households,
            n_donors,
            donors_left_out: self.donors.len() - n_donors,
            suppressed_treated: share(&treated),
            suppressed_donors: share(&kept),
        })
    }

    /// The whole analysis.
    pub fn analyse(&self) -> Result<Analysis, EffectError> {
        if self.start >= self.periods() {
            return Err(EffectError::Periods {
                before: self.start,
                after: 0,
            });
        }
        let p = self.prepare()?;
        let estimate = sdid::estimate(&p.panel, Estimator::SyntheticDid);
        let relative_of = |e: &Estimate| relative(e, p.panel.t0());
        let synthetic_control = relative_of(&sdid::estimate(&p.panel, Estimator::SyntheticControl));
        let diff_in_diff = relative_of(&sdid::estimate(&p.panel, Estimator::DiffInDiff));
        let n_donors = p.n_donors;
        let start = self.start;
        let poisson = poisson::fit(&p.released, &p.households, |i, s| {
            i >= n_donors && s >= start
        })
        .relative();

        let sets = placebo::draws(n_donors, self.treated.len(), self.draws, self.seed);
        let treated_sigma2 = series_noise(&p.panel, start);
        let treated_parts = own_parts(&estimate, treated_sigma2, start);
        let treated_own = treated_parts.0 + treated_parts.1;
        // Each placebo: its estimate, its own series' share of the
        // estimate's variance, and its fit before the start brought to the
        // treated series' noise.
        let placebos: Vec<(f64, f64, f64)> = sets
            .iter()
            .filter_map(|set| {
                let panel = placebo_panel(&p, set, start).ok()?;
                let e = sdid::estimate(&panel, Estimator::SyntheticDid);
                let sigma2 = series_noise(&panel, start);
                let scale = (treated_sigma2 / sigma2).sqrt();
                Some((
                    e.tau,
                    own_variance(&e, sigma2, start),
                    pre_fit(&e, start) * scale,
                ))
            })
            .collect();
        let pairs: Vec<(f64, f64)> = placebos.iter().map(|p| (p.0, p.1)).collect();
        // A placebo's comparison side averages n₀ − n₁ donors, the
        // estimate's n₀: its variance is about (n₀ − n₁)/n₀ of a placebo's.
        let comparison = n_donors.saturating_sub(self.treated.len()) as f64 / n_donors as f64;
        let inference = Inference::heteroskedastic(estimate.tau, treated_own, comparison, &pairs);
        if pairs.len() < MIN_PLACEBOS || inference.is_none() {
            return Err(EffectError::TooFewComparisons {
                donors: n_donors,
                placebos: pairs.len(),
            });
        }
        let level = counterfactual_level(&estimate, start);
        let treated_households: f64 = self.treated.iter().map(|a| a.households).sum();
        let (low, high) = inference
            .as_ref()
            .map_or((estimate.tau, estimate.tau), |i| (i.low, i.high));
        let scaled = |f: f64| Interval {
            estimate: estimate.tau * f,
            low: low * f,
            high: high * f,
        };
        let fit = pre_fit(&estimate, start);
        let better = placebos.iter().filter(|p| p.2 < fit).count();
        let omega_sq: f64 = estimate.omega.iter().map(|w| w * w).sum();
        let t = p.panel.t();
        let mean = |v: &[f64], r: std::ops::Range<usize>| {
            v[r.clone()].iter().sum::<f64>() / r.len() as f64
        };
        let comparison = pooled(&p.counts[..n_donors], &p.households[..n_donors]);
        let diagnostics = Diagnostics {
            pre_fit: fit,
            placebos_fitting_better: if placebos.is_empty() {
                0.0
            } else {
                better as f64 / placebos.len() as f64
            },
            false_start: self.false_start(&p),
            effective_donors: if omega_sq > 0.0 { 1.0 / omega_sq } else { 0.0 },
            largest_weight: estimate.omega.iter().cloned().fold(0.0, f64::max),
            donors_used: n_donors,
            donors_left_out: p.donors_left_out,
            suppressed_treated: p.suppressed_treated,
            suppressed_donors: p.suppressed_donors,
            chosen_after_spike: chosen_after_spike(
                &estimate.treated[..start],
                self.periods_per_year,
            ),
        };
        Ok(Analysis {
            synthetic_control,
            diff_in_diff,
            poisson,
            relative: inference.as_ref().map_or(scaled(1.0 / level), |i| {
                relative_interval(estimate.tau, level, treated_parts, i.comparison_variance)
            }),
            households_per_period: scaled(p.treated_scale * treated_households / 1000.0),
            treated_rate: (
                mean(&estimate.treated, 0..start) * p.treated_scale,
                mean(&estimate.treated, start..t) * p.treated_scale,
            ),
            comparison_rate: (mean(&comparison, 0..start), mean(&comparison, start..t)),
            treated_imputed: (0..t)
                .map(|s| self.treated.iter().any(|a| a.cells[s].is_none()))
                .collect(),
            inference,
            diagnostics,
            // In rates per 1,000 households again.
            estimate: Estimate {
                tau: estimate.tau * p.treated_scale,
                counterfactual: estimate
                    .counterfactual
                    .iter()
                    .map(|v| v * p.treated_scale)
                    .collect(),
                treated: estimate
                    .treated
                    .iter()
                    .map(|v| v * p.treated_scale)
                    .collect(),
                ..estimate
            },
        })
    }

    /// The estimate with a start one year earlier, on the periods before
    /// the real start only.
    fn false_start(&self, p: &Prepared) -> Option<f64> {
        let start = self.start.checked_sub(self.periods_per_year)?;
        if start < 2 {
            return None;
        }
        let rows = (0..p.panel.n())
            .map(|i| (0..self.start).map(|s| p.panel.at(i, s)).collect())
            .collect();
        let panel = Panel::new(rows, p.n_donors, start).ok()?;
        Some(relative(
            &sdid::estimate(&panel, Estimator::SyntheticDid),
            start,
        ))
    }

    /// The smallest effect this design can detect, as a relative change:
    /// false starts in the history before the start, each estimated for
    /// the treated wijken and for placebo sets of comparison wijken. With
    /// no true effect there, their spread is the design's noise; the
    /// smallest detectable effect is (z₀.₉₅ + z₀.₈₀) times it.
    pub fn detectable_effect(&self, horizon: usize) -> Result<Detectable, EffectError> {
        let p = self.prepare()?;
        let before = self.start;
        let window = horizon.min(before / 3).max(1);
        let first = (before / 2).max(2);
        if first + window > before {
            return Err(EffectError::Periods { before, after: 0 });
        }
        let sets = placebo::draws(p.n_donors, self.treated.len(), 40, self.seed);
        // At each false start: the treated wijken's own error, and the
        // variance the placebos' model gives a series as noisy as theirs.
        let mut variances = Vec::new();
        for start in first..=before - window {
            let end = start + window;
            let cut = |panel: &Panel| -> Vec<Vec<f64>> {
                (0..panel.n())
                    .map(|i| (0..end).map(|s| panel.at(i, s)).collect())
                    .collect()
            };
            let level = treated_level(&p, start);
            if let Ok(panel) = Panel::new(cut(&p.panel), p.n_donors, start) {
                let tau = sdid::estimate(&panel, Estimator::SyntheticDid).tau;
                variances.push((tau / level).powi(2));
            }
            let placebos: Vec<(f64, f64)> = sets
                .iter()
                .filter_map(|set| {
                    let full = placebo_panel(&p, set, p.panel.t0()).ok()?;
                    let panel = Panel::new(cut(&full), full.n0(), start).ok()?;
                    let e = sdid::estimate(&panel, Estimator::SyntheticDid);
                    let own = own_variance(&e, series_noise(&panel, start), start);
                    Some((e.tau, own))
                })
                .collect();
            if let (Some(model), Ok(panel)) = (
                placebo::VarianceModel::fit(&placebos),
                Panel::new(cut(&p.panel), p.n_donors, start),
            ) {
                let e = sdid::estimate(&panel, Estimator::SyntheticDid);
                let own = own_variance(&e, series_noise(&panel, start), start);
                variances.push(model.variance(own) / level.powi(2));
            }
        }
        let variances: Vec<f64> = variances.into_iter().filter(|v| v.is_finite()).collect();
        if variances.len() < 3 {
            return Err(EffectError::Periods { before, after: 0 });
        }
        let rms = (variances.iter().sum::<f64>() / variances.len() as f64).sqrt();
        let backtests = (before - window + 1 - first) * (1 + sets.len());
        Ok(Detectable {
            relative: DETECTABLE_Z * rms,
            window,
            backtests,
        })
    }
}

/// The smallest detectable effect and how it was found.
#[derive(Debug, Clone, Copy)]
pub struct Detectable {
    /// As a relative change (0.18 is 18%).
    pub relative: f64,
    /// Periods after each false start.
    pub window: usize,
    /// How many false-start estimates it rests on.
    pub backtests: usize,
}

/// The treated series' mean before period `start`.
fn treated_level(p: &Prepared, start: usize) -> f64 {
    let treated = p.panel.n() - 1;
    (0..start).map(|s| p.panel.at(treated, s)).sum::<f64>() / start as f64
}

/// The noise of a panel's treated series: the variance of its first
/// differences before `start`, halved (the variance per period if the
/// periods vary independently around a slow course). Measured, not
/// modelled: it holds the counts' Poisson noise, their overdispersion, the
/// cell key noise and the imputed cells alike. A small wijk's series is
/// noisier; placebos of small comparison wijken would otherwise make the
/// interval of a large treated wijk too wide, and that of a small one too
/// narrow.
fn series_noise(panel: &Panel, start: usize) -> f64 {
    let treated = panel.n() - 1;
    let diffs: Vec<f64> = (1..start.min(panel.t()))
        .map(|s| panel.at(treated, s) - panel.at(treated, s - 1))
        .collect();
    (sdid::sample_sd(&diffs).powi(2) / 2.0).max(1e-12)
}

/// The variance the treated series' own noise gives the estimate τ: τ
/// subtracts the λ-weighted periods before the start from the mean of the
/// T₁ periods after it, so with noise `sigma2` per period (see
/// [`series_noise`]), independent between periods, that is σ²·(Σλ² + 1/T₁).
///
/// A count's variance grows with its mean, so the periods after the start
/// get σ² times the ratio of their mean to the mean before: a fall of 30%
/// leaves about 0.7 of the noise there. Without that the interval errs
/// wide under a real fall and narrow under a real rise. A placebo's ratio
/// is about 1.
fn own_variance(e: &Estimate, sigma2: f64, start: usize) -> f64 {
    let (before, after) = own_parts(e, sigma2, start);
    before + after
}

/// [`own_variance`] in its two parts: from the periods before the start
/// (σ²·Σλ², part of the course without the intervention) and after it
/// (σ²·r/T₁).
fn own_parts(e: &Estimate, sigma2: f64, start: usize) -> (f64, f64) {
    let t = e.treated.len();
    if start == 0 || start >= t {
        return (sigma2, 0.0);
    }
    let mean =
        |r: std::ops::Range<usize>| e.treated[r.clone()].iter().sum::<f64>() / r.len() as f64;
    let (before, after) = (mean(0..start), mean(start..t));
    let ratio = if before > 0.0 && after.is_finite() {
        (after / before).clamp(0.25, 4.0)
    } else {
        1.0
    };
    let lambda_sq: f64 = e.lambda.iter().map(|l| l * l).sum();
    (sigma2 * lambda_sq, sigma2 * ratio / (t - start) as f64)
}

/// The interval of the relative effect τ/L (L: the course without the
/// intervention after the start, the counterfactual level) by the delta
/// method. τ is the treated series after the start, T, less L, so τ/L is
/// T/L − 1: T's noise counts as it is, L's is scaled by T/L. Under a real
/// fall of 30% the noise of L (the periods before the start and the
/// comparison side) counts 0.7 times, where the interval of τ itself
/// counts it whole.
fn relative_interval(
    tau: f64,
    level: f64,
    (before, after): (f64, f64),
    comparison: f64,
) -> Interval {
    let estimate = tau / level;
    let q = (1.0 + estimate).clamp(0.25, 4.0);
    let se = (after + q * q * (before + comparison)).sqrt() / level;
    Interval {
        estimate,
        low: estimate - placebo::Z90 * se,
        high: estimate + placebo::Z90 * se,
    }
}

/// A series divided by its mean before `start`, and that mean; a series
/// that is 0 throughout stays so.
fn normalised(row: Vec<f64>, start: usize) -> (Vec<f64>, f64) {
    let mean = row[..start.max(1).min(row.len())].iter().sum::<f64>() / start.max(1) as f64;
    if mean > 0.0 {
        (row.iter().map(|v| v / mean).collect(), mean)
    } else {
        (row, 1.0)
    }
}

/// Counts over households, per 1,000, per period.
fn pooled(counts: &[Vec<f64>], households: &[f64]) -> Vec<f64> {
    let total: f64 = households.iter().sum();
    let t = counts.first().map_or(0, Vec::len);
    (0..t)
        .map(|s| counts.iter().map(|c| c[s]).sum::<f64>() / total * 1000.0)
        .collect()
}

/// The donors of `set` pooled as if treated; the other donors compare.
fn placebo_panel(p: &Prepared, set: &[usize], start: usize) -> Result<Panel, EffectError> {
    let t = p.panel.t();
    let mut rows: Vec<Vec<f64>> = (0..p.n_donors)
        .filter(|i| !set.contains(i))
        .map(|i| (0..t).map(|s| p.panel.at(i, s)).collect())
        .collect();
    let n0 = rows.len();
    let counts: Vec<Vec<f64>> = set.iter().map(|&i| p.counts[i].clone()).collect();
    let households: Vec<f64> = set.iter().map(|&i| p.households[i]).collect();
    rows.push(normalised(pooled(&counts, &households), p.panel.t0()).0);
    Panel::new(rows, n0, start)
}

fn counterfactual_level(e: &Estimate, start: usize) -> f64 {
    let after = &e.counterfactual[start..];
    after.iter().sum::<f64>() / after.len() as f64
}

/// τ relative to the course without the intervention after the start.
fn relative(e: &Estimate, start: usize) -> f64 {
    let level = counterfactual_level(e, start);
    if level > 0.0 { e.tau / level } else { f64::NAN }
}

fn pre_fit(e: &Estimate, start: usize) -> f64 {
    let ss: f64 = (0..start)
        .map(|s| (e.treated[s] - e.counterfactual[s]).powi(2))
        .sum();
    (ss / start as f64).sqrt()
}

/// The last quarter before the start (three months, or one quarter) lies
/// significantly above the periods before it: a one-sided z-test at 5%,
/// with the spread of single periods around their mean.
fn chosen_after_spike(before: &[f64], periods_per_year: usize) -> bool {
    let last = (periods_per_year / 4).max(1);
    if before.len() < last + 4 {
        return false;
    }
    let (history, recent) = before.split_at(before.len() - last);
    let recent = recent.iter().sum::<f64>() / last as f64;
    let mean = history.iter().sum::<f64>() / history.len() as f64;
    let sd = sdid::sample_sd(history);
    sd > 0.0 && (recent - mean) / (sd / (last as f64).sqrt()) > 1.644_853_6
}

/// How an intervention stands against its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The interval lies on the goal's side of 0 and the estimate reaches
    /// the goal pro rata.
    OnCourse,
    /// The whole interval falls short of the goal pro rata.
    NotOnCourse,
    /// Neither: the figures cannot tell yet.
    TooEarly,
}

/// Progress of `effect` against a goal of `goal` (relative, signed: −0.2
/// for 20% fewer) to be reached `horizon` periods after the start, when
/// `elapsed` periods have passed.
pub fn progress(effect: &Interval, goal: f64, elapsed: usize, horizon: usize) -> Progress {
    if elapsed < 2 || goal == 0.0 {
        return Progress::TooEarly;
    }
    let due = goal * (elapsed as f64 / horizon.max(1) as f64).min(1.0);
    // Work in the goal's direction: positive is toward the goal.
    let sign = goal.signum();
    let (estimate, low, high) = (
        effect.estimate * sign,
        effect.low.min(effect.high) * sign,
        effect.high.max(effect.low) * sign,
    );
    let (low, high) = (low.min(high), low.max(high));
    let due = due * sign;
    if low > 0.0 && estimate >= due {
        Progress::OnCourse
    } else if high < due {
        Progress::NotOnCourse
    } else {
        Progress::TooEarly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(treated: Vec<f64>, lambda: Vec<f64>) -> Estimate {
        Estimate {
            tau: 0.0,
            omega: vec![1.0],
            counterfactual: treated.clone(),
            treated,
            lambda,
        }
    }

    #[test]
    fn the_relative_interval_scales_the_course_without_by_the_fall() {
        // No effect: τ/L's variance is the whole variance over L².
        let none = relative_interval(0.0, 2.0, (0.04, 0.04), 0.08);
        let se = (0.04_f64 + 0.04 + 0.08).sqrt() / 2.0;
        assert!((none.high - placebo::Z90 * se).abs() < 1e-12, "{none:?}");
        // A fall of 30%: the course without (before the start, comparison
        // side) counts 0.7², what came after the start as it is.
        let fall = relative_interval(-0.6, 2.0, (0.04, 0.04), 0.08);
        let se = (0.04 + 0.49 * (0.04 + 0.08_f64)).sqrt() / 2.0;
        assert!((fall.estimate + 0.3).abs() < 1e-12);
        assert!(
            (fall.high - fall.estimate - placebo::Z90 * se).abs() < 1e-12,
            "{fall:?}"
        );
        assert!(fall.high - fall.low < none.high - none.low);
    }

    #[test]
    fn own_variance_follows_the_estimator_and_the_level_after_the_start() {
        // Four periods before (λ = ¼ each: Σλ² = ¼), four after.
        let flat = estimate(vec![1.0; 8], vec![0.25; 4]);
        assert!((own_variance(&flat, 2.0, 4) - 2.0 * (0.25 + 0.25)).abs() < 1e-12);
        // A fall of 30% after the start leaves 0.7 of the noise there.
        let fall = estimate(vec![1.0, 1.0, 1.0, 1.0, 0.7, 0.7, 0.7, 0.7], vec![0.25; 4]);
        assert!((own_variance(&fall, 2.0, 4) - 2.0 * (0.25 + 0.7 / 4.0)).abs() < 1e-12);
        // All weight on the last period before: its noise counts whole.
        let last = estimate(vec![1.0; 8], vec![0.0, 0.0, 0.0, 1.0]);
        assert!((own_variance(&last, 2.0, 4) - 2.0 * (1.0 + 0.25)).abs() < 1e-12);
    }
}
