//! The evaluation harness's core: a simulator of monthly counts per area
//! (negative binomial around a baseline with the household offset, a March
//! peak and a trend), injected outbreaks with their true excess, scoring of
//! any detector month by month, calibration of its cutoff to a false-alarm
//! budget on outbreak-free data, and the measures: sensitivity, false alarms
//! per 100 area-years, months to detection.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, Poisson};

use crate::{Method, Test, oracle};

/// The simulated world.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub months: usize,
    /// The first month tested; the ones before are history.
    pub first_test: usize,
    /// Expected households signalled per 1,000 households per month.
    pub rate_per_1000: f64,
    /// The factor of March over other months.
    pub march_peak: f64,
    /// Relative change per year.
    pub trend_per_year: f64,
    /// Negative binomial size: variance μ + μ²/size.
    pub size: f64,
    /// The calendar month (0 = January) of month 0.
    pub first_calendar_month: usize,
    /// How much areas differ in their rate: each area's rate is the
    /// scenario's times a log-normal factor of mean 1 and this standard
    /// deviation on the log scale (0: every area has the same rate).
    pub area_sd: f64,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario {
            months: 36,
            first_test: 24,
            rate_per_1000: 2.0,
            march_peak: 1.3,
            trend_per_year: 0.05,
            size: 20.0,
            first_calendar_month: 0,
            area_sd: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutbreakKind {
    /// +50% for 3 months.
    Plus50For3,
    /// A rise to double over 6 months: ×7/6, ×8/6, …, ×2.
    DoublingOver6,
    /// A sudden doubling that stays.
    Jump,
}

impl OutbreakKind {
    pub const ALL: [OutbreakKind; 3] = [
        OutbreakKind::Plus50For3,
        OutbreakKind::DoublingOver6,
        OutbreakKind::Jump,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OutbreakKind::Plus50For3 => "+50% for 3 months",
            OutbreakKind::DoublingOver6 => "doubling over 6 months",
            OutbreakKind::Jump => "sudden doubling",
        }
    }

    /// Months it lasts (a jump lasts to the end of any series).
    pub fn length(self) -> usize {
        match self {
            OutbreakKind::Plus50For3 => 3,
            OutbreakKind::DoublingOver6 => 6,
            OutbreakKind::Jump => usize::MAX / 2,
        }
    }

    /// The factor on the baseline `j` months into the outbreak, or `None`
    /// once it is over.
    pub fn factor(self, j: usize) -> Option<f64> {
        match self {
            OutbreakKind::Plus50For3 => (j < 3).then_some(1.5),
            OutbreakKind::DoublingOver6 => (j < 6).then(|| 1.0 + (j + 1) as f64 / 6.0),
            OutbreakKind::Jump => Some(2.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Outbreak {
    pub area: usize,
    pub start: usize,
    pub kind: OutbreakKind,
}

/// Months after an outbreak in which alarms are not counted either way.
pub const AFTERMATH: usize = 6;

enum Phase {
    Quiet,
    Inside(usize),
    Aftermath,
}

/// Simulated counts with their truth.
#[derive(Debug, Clone)]
pub struct Simulated {
    pub counts: Vec<Vec<u64>>,
    /// The true baseline, without outbreaks.
    pub mu: Vec<Vec<f64>>,
    /// At most one per area.
    pub outbreaks: Vec<Outbreak>,
    pub households: Vec<f64>,
}

impl Simulated {
    /// Where month `t` of `area` stands to the area's outbreak.
    fn phase(&self, area: usize, t: usize) -> Phase {
        let Some(i) = self.outbreaks.iter().position(|o| o.area == area) else {
            return Phase::Quiet;
        };
        let o = self.outbreaks[i];
        if t < o.start {
            return Phase::Quiet;
        }
        match o.kind.factor(t - o.start) {
            Some(_) => Phase::Inside(i),
            // Sums over recent months still hold the outbreak for a while:
            // an alarm then is neither a detection nor false.
            None if t - o.start < o.kind.length() + AFTERMATH => Phase::Aftermath,
            None => Phase::Quiet,
        }
    }

    /// The expected extra households of an outbreak over its months.
    pub fn excess(&self, o: &Outbreak, months: usize) -> f64 {
        (o.start..months)
            .filter_map(|t| {
                o.kind
                    .factor(t - o.start)
                    .map(|f| (f - 1.0) * self.mu[o.area][t])
            })
            .sum()
    }
}

/// The baseline mean of an area with `households` in month `t`.
pub fn baseline(s: &Scenario, households: f64, t: usize) -> f64 {
    let calendar = (s.first_calendar_month + t) % 12;
    let season = if calendar == 2 { s.march_peak } else { 1.0 };
    let trend = (1.0 + s.trend_per_year).powf(t as f64 / 12.0);
    households / 1000.0 * s.rate_per_1000 * season * trend
}

/// Draws every area's counts; `outbreaks` multiply the baseline.
pub fn simulate(s: &Scenario, households: &[f64], outbreaks: &[Outbreak], seed: u64) -> Simulated {
    simulate_world(s, households, outbreaks, seed, seed)
}

/// [`simulate`] with the areas' own rates drawn from `levels_seed` and the
/// counts from `noise_seed`: worlds of the same areas with other counts.
pub fn simulate_world(
    s: &Scenario,
    households: &[f64],
    outbreaks: &[Outbreak],
    levels_seed: u64,
    noise_seed: u64,
) -> Simulated {
    let mut rng = StdRng::seed_from_u64(noise_seed);
    // The areas' own rates, from a stream of their own: the counts of a
    // scenario without differences between areas stay as they were.
    let mut area_rng = StdRng::seed_from_u64(levels_seed ^ 0x0a4e_a5d0);
    let spread = rand_distr::LogNormal::new(-s.area_sd * s.area_sd / 2.0, s.area_sd)
        .expect("a finite, non-negative standard deviation");
    let mut counts = Vec::with_capacity(households.len());
    let mut mus = Vec::with_capacity(households.len());
    for (a, &h) in households.iter().enumerate() {
        let outbreak = outbreaks.iter().find(|o| o.area == a);
        let own = if s.area_sd > 0.0 {
            spread.sample(&mut area_rng)
        } else {
            1.0
        };
        let mut row = Vec::with_capacity(s.months);
        let mut mu_row = Vec::with_capacity(s.months);
        for t in 0..s.months {
            let mu = own * baseline(s, h, t);
            let factor = outbreak
                .filter(|o| t >= o.start)
                .and_then(|o| o.kind.factor(t - o.start))
                .unwrap_or(1.0);
            // Negative binomial as a gamma mixture of Poissons.
            let lambda = Gamma::new(s.size, mu * factor / s.size)
                .expect("valid gamma")
                .sample(&mut rng);
            let y = if lambda > 0.0 {
                Poisson::new(lambda)
                    .expect("valid Poisson")
                    .sample(&mut rng) as u64
            } else {
                0
            };
            row.push(y);
            mu_row.push(mu);
        }
        counts.push(row);
        mus.push(mu_row);
    }
    Simulated {
        counts,
        mu: mus,
        outbreaks: outbreaks.to_vec(),
        households: households.to_vec(),
    }
}

/// Outbreaks in about `share` of the areas, kinds in turn, starting at a
/// random tested month that leaves room for at least 3 outbreak months.
pub fn choose_outbreaks(s: &Scenario, areas: usize, share: f64, seed: u64) -> Vec<Outbreak> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x000b_7ea4);
    let mut out = Vec::new();
    for area in 0..areas {
        if rng.random_bool(share) {
            let kind = OutbreakKind::ALL[out.len() % 3];
            let start = rng.random_range(s.first_test..=s.months - 3);
            out.push(Outbreak { area, start, kind });
        }
    }
    out
}

/// A detector under evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    Method(Method),
    /// Each area's level on the curve pooled over all areas, shrunk toward
    /// the level the areas share (the server's default).
    Pooled,
    /// The same with each area's own level, not shrunk.
    PooledOwnLevel,
    /// The near-oracle, told the true baseline.
    Oracle,
    /// Told the curve, the overdispersion and how areas spread, but not
    /// each area's own level ([`oracle::test_learning`]).
    LevelOracle,
}

impl Detector {
    pub fn name(self) -> &'static str {
        match self {
            Detector::Method(m) => m.name(),
            Detector::Pooled => "pooled_windows",
            Detector::PooledOwnLevel => "pooled_own_level",
            Detector::Oracle => "near_oracle",
            Detector::LevelOracle => "oracle_learns_level",
        }
    }
}

/// Every tested month of every area: the detector's test, if it could test.
/// `pools` gives each area's pool. The pooled detectors fit the seasonal
/// curve on the sum of all areas and the overdispersion over all areas (as
/// the server does over every municipality it holds,
/// [`crate::monitor::Shared`]), and per pool the areas' levels and the
/// common level they are shrunk toward (as the server does per
/// municipality).
pub fn score(
    d: Detector,
    sim: &Simulated,
    s: &Scenario,
    pools: &[usize],
) -> Vec<Vec<Option<Test>>> {
    assert_eq!(pools.len(), sim.counts.len(), "one pool per area");
    let config = crate::farrington::Config::default();
    // Per tested month: the curve with the overdispersion of all areas, and
    // each area's level on it (shrunk within its pool for the default).
    let mut pooled: Vec<Option<(crate::pooled::Curve, Vec<Option<crate::pooled::Level>>)>> =
        Vec::new();
    if matches!(d, Detector::Pooled | Detector::PooledOwnLevel) {
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (a, &p) in pools.iter().enumerate() {
            if members.len() <= p {
                members.resize(p + 1, Vec::new());
            }
            members[p].push(a);
        }
        let total: Vec<u64> = (0..s.months)
            .map(|i| sim.counts.iter().map(|r| r[i]).sum())
            .collect();
        let households: f64 = sim.households.iter().sum();
        for t in s.first_test..s.months {
            pooled.push(
                crate::pooled::Curve::fit(&total, households, t).map(|mut curve| {
                    let all = sim.counts.iter().map(Vec::as_slice);
                    let mut levels =
                        curve.pool_dispersion(all.zip(sim.households.iter().copied()), &config);
                    if d == Detector::Pooled {
                        // Each pool's levels, the pools' common levels, then
                        // what those have in common.
                        let mut by_pool: Vec<Vec<Option<crate::pooled::Level>>> = members
                            .iter()
                            .map(|areas| areas.iter().map(|&a| levels[a].take()).collect())
                            .collect();
                        let commons: Vec<crate::pooled::Common> = by_pool
                            .iter()
                            .filter_map(|l| crate::pooled::common(l, &curve))
                            .collect();
                        let prior = crate::pooled::prior(&commons);
                        for (areas, mut mine) in members.iter().zip(by_pool.drain(..)) {
                            crate::pooled::shrink_toward(&mut mine, &curve, prior);
                            for (&a, l) in areas.iter().zip(mine) {
                                levels[a] = l;
                            }
                        }
                    }
                    (curve, levels)
                }),
            );
        }
    }
    (0..sim.counts.len())
        .map(|a| {
            // The curve the level-learning oracle is told: the baseline
            // without the area's own factor.
            let curve: Vec<f64> = if d == Detector::LevelOracle {
                (0..s.months)
                    .map(|i| baseline(s, sim.households[a], i))
                    .collect()
            } else {
                Vec::new()
            };
            (s.first_test..s.months)
                .map(|t| match d {
                    Detector::Method(m) => m.test(&sim.counts[a], sim.households[a], t),
                    Detector::Pooled | Detector::PooledOwnLevel => {
                        let (curve, levels) = pooled[t - s.first_test].as_ref()?;
                        crate::pooled::test_level(
                            levels[a].as_ref()?,
                            &sim.counts[a],
                            sim.households[a],
                            curve,
                            &config,
                        )
                    }
                    Detector::Oracle => oracle::test(&sim.counts[a], &sim.mu[a], s.size, t),
                    Detector::LevelOracle => {
                        oracle::test_learning(&sim.counts[a], &curve, s.size, s.area_sd, t)
                    }
                })
                .collect()
        })
        .collect()
}

/// The cutoff on the score that keeps alarms (score > cutoff) on
/// outbreak-free data within `per_100_area_years`.
pub fn calibrate(null: &[Vec<Option<Test>>], per_100_area_years: f64) -> f64 {
    let mut scores: Vec<f64> = null
        .iter()
        .flatten()
        .map(|t| t.map_or(f64::NEG_INFINITY, |t| t.score))
        .collect();
    let allowed = (per_100_area_years / 1200.0 * scores.len() as f64).floor() as usize;
    scores.sort_by(|a, b| b.total_cmp(a));
    scores.get(allowed).copied().unwrap_or(f64::NEG_INFINITY)
}

/// How a detector did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub outbreaks: usize,
    pub detected: usize,
    /// Months from start to first alarm, per detected outbreak.
    pub lags: Vec<usize>,
    pub false_alarms: usize,
    pub quiet_area_months: usize,
    /// Per outbreak: (kind, expected excess households, months from its
    /// start to the first alarm if detected).
    pub per_outbreak: Vec<(OutbreakKind, f64, Option<usize>)>,
}

fn median(l: &[usize]) -> Option<f64> {
    if l.is_empty() {
        return None;
    }
    let mut l = l.to_vec();
    l.sort_unstable();
    let m = l.len() / 2;
    Some(if l.len() % 2 == 1 {
        l[m] as f64
    } else {
        (l[m - 1] + l[m]) as f64 / 2.0
    })
}

impl Outcome {
    pub fn sensitivity(&self) -> f64 {
        self.detected as f64 / self.outbreaks.max(1) as f64
    }
    pub fn false_alarms_per_100_area_years(&self) -> f64 {
        self.false_alarms as f64 / (self.quiet_area_months.max(1) as f64 / 12.0) * 100.0
    }
    pub fn median_lag(&self) -> Option<f64> {
        median(&self.lags)
    }
    /// The median lag over the detected outbreaks of one kind.
    pub fn median_lag_of(&self, kind: OutbreakKind) -> Option<f64> {
        let lags: Vec<usize> = self
            .per_outbreak
            .iter()
            .filter(|o| o.0 == kind)
            .filter_map(|o| o.2)
            .collect();
        median(&lags)
    }
    /// Sensitivity over the outbreaks whose excess is in `range`.
    pub fn sensitivity_where(&self, keep: impl Fn(OutbreakKind, f64) -> bool) -> (usize, f64) {
        let chosen: Vec<bool> = self
            .per_outbreak
            .iter()
            .filter(|(k, e, _)| keep(*k, *e))
            .map(|&(_, _, d)| d.is_some())
            .collect();
        let n = chosen.len();
        let hit = chosen.iter().filter(|&&d| d).count();
        (n, hit as f64 / n.max(1) as f64)
    }
}

/// Scores alarms (score > cutoff, or the method's own rule when `cutoff`
/// is `None`) against the truth.
pub fn evaluate(
    tests: &[Vec<Option<Test>>],
    sim: &Simulated,
    s: &Scenario,
    cutoff: Option<f64>,
) -> Outcome {
    let alarm = |t: &Option<Test>| match (t, cutoff) {
        (Some(t), Some(c)) => t.score > c,
        (Some(t), None) => t.alarm(),
        (None, _) => false,
    };
    let mut out = Outcome {
        outbreaks: sim.outbreaks.len(),
        ..Outcome::default()
    };
    let mut first_alarm: Vec<Option<usize>> = vec![None; sim.outbreaks.len()];
    for (a, row) in tests.iter().enumerate() {
        for (j, test) in row.iter().enumerate() {
            let t = s.first_test + j;
            match sim.phase(a, t) {
                Phase::Inside(i) => {
                    if alarm(test) && first_alarm[i].is_none() {
                        first_alarm[i] = Some(t);
                    }
                }
                Phase::Aftermath => {}
                Phase::Quiet => {
                    out.quiet_area_months += 1;
                    if alarm(test) {
                        out.false_alarms += 1;
                    }
                }
            }
        }
    }
    for (o, first) in sim.outbreaks.iter().zip(first_alarm) {
        if let Some(t) = first {
            out.detected += 1;
            out.lags.push(t - o.start);
        }
        out.per_outbreak
            .push((o.kind, sim.excess(o, s.months), first.map(|t| t - o.start)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulator_has_the_asked_mean_season_and_trend() {
        let s = Scenario::default();
        let households = vec![5000.0; 400];
        let sim = simulate(&s, &households, &[], 1);
        // January of year 1: 5000/1000 · 2 = 10; March ×1.3; a year on ×1.05.
        assert!((baseline(&s, 5000.0, 0) - 10.0).abs() < 1e-12);
        assert!(
            (baseline(&s, 5000.0, 2) / baseline(&s, 5000.0, 1) - 1.3 * 1.05f64.powf(1.0 / 12.0))
                .abs()
                < 1e-12
        );
        let mean = |t: usize| sim.counts.iter().map(|r| r[t] as f64).sum::<f64>() / 400.0;
        assert!((mean(0) - 10.0).abs() < 0.6, "{}", mean(0));
        assert!(
            (mean(14) - 13.0 * 1.05f64.powf(14.0 / 12.0)).abs() < 0.8,
            "{}",
            mean(14)
        );
        // Overdispersion: variance μ + μ²/20 = 15 at μ = 10.
        let var = sim
            .counts
            .iter()
            .map(|r| (r[0] as f64 - 10.0).powi(2))
            .sum::<f64>()
            / 400.0;
        assert!((var - 15.0).abs() < 4.0, "{var}");
    }

    #[test]
    fn scoring_counts_detections_lags_and_false_alarms() {
        let s = Scenario {
            months: 30,
            first_test: 24,
            ..Scenario::default()
        };
        let outbreak = Outbreak {
            area: 0,
            start: 26,
            kind: OutbreakKind::Plus50For3,
        };
        let sim = Simulated {
            counts: vec![vec![0; 30]; 2],
            mu: vec![vec![10.0; 30]; 2],
            outbreaks: vec![outbreak],
            households: vec![1000.0; 2],
        };
        let t = |score: f64| Some(Test::scored(score));
        // Area 0: an alarm before the outbreak (false), then in its 2nd
        // month; month 29 is the outbreak's aftermath. Area 1: one false alarm.
        let tests = vec![
            vec![t(5.0), t(0.0), t(0.0), t(5.0), t(5.0), t(0.0)],
            vec![t(0.0), t(0.0), t(0.0), t(0.0), t(0.0), t(5.0)],
        ];
        let o = evaluate(&tests, &sim, &s, Some(1.0));
        assert_eq!((o.detected, o.lags.clone()), (1, vec![1]));
        // Quiet: area 0 months 24 and 25, and all 6 of area 1.
        assert_eq!((o.false_alarms, o.quiet_area_months), (2, 8));
        assert!((o.false_alarms_per_100_area_years() - 2.0 / (8.0 / 12.0) * 100.0).abs() < 1e-9);
        assert!((sim.excess(&outbreak, 30) - 15.0).abs() < 1e-12);
        // The cutoff lets through at most the budget.
        let null = vec![vec![t(1.0), t(2.0), t(3.0)]; 400];
        // 1,200 area-months at 100 per 100 area-years: 100 alarms allowed.
        let c = calibrate(&null, 100.0);
        assert_eq!(
            c, 3.0,
            "the 101st largest score; only scores above it alarm"
        );
    }
}
