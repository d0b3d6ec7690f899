//! The monthly detection run of one municipality, as the server does it:
//! every wijk and buurt series of every signal type tested with the method
//! its history allows, the false discovery rate controlled over the month's
//! tests of each level (wijken first: they are fewer, larger and more
//! reliable), and the discoveries ranked.

use crate::fdr::benjamini_hochberg;
use crate::{Method, Test, farrington, pooled};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Wijk,
    Buurt,
}

/// One area's monthly counts, oldest first, ending with the tested month.
#[derive(Debug, Clone)]
pub struct Series {
    pub level: Level,
    pub counts: Vec<u64>,
    pub households: f64,
}

/// Which method tested a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    Method(Method),
    /// The area's level on the municipality's pooled seasonal curve, with
    /// window sums ([`pooled`]): the default once two years are there.
    Pooled,
}

impl Chosen {
    pub fn name(self) -> &'static str {
        match self {
            Chosen::Method(m) => m.name(),
            Chosen::Pooled => "pooled_windows",
        }
    }

    /// The method for a series with `history` months before the tested
    /// one: none under 6 months, the negative-binomial predictive method
    /// until two years are there to fit a season, then the pooled curve.
    pub fn for_history(history: usize) -> Option<Chosen> {
        match history {
            0..6 => None,
            6..24 => Some(Chosen::Method(Method::NbPredictive)),
            _ => Some(Chosen::Pooled),
        }
    }
}

/// A tested series.
#[derive(Debug, Clone, Copy)]
pub struct Finding {
    /// Index into the series given.
    pub series: usize,
    pub method: Chosen,
    pub test: Test,
    /// Benjamini–Hochberg adjusted p-value within its level.
    pub q_value: f64,
    /// A discovery at the run's false discovery rate.
    pub discovery: bool,
}

/// The series of one signal type in one municipality, all the same length,
/// ending with the tested month; `total` is the municipality's own series
/// (the sum of its buurten), for the pooled curve when `shared` is not
/// given.
#[derive(Debug, Clone)]
pub struct Group {
    pub series: Vec<Series>,
    pub total: Vec<u64>,
    pub households: f64,
    /// What the pooled method borrows from every municipality.
    pub shared: Option<Shared>,
}

/// What the pooled method of a signal type borrows from every municipality
/// the aggregator holds: the seasonal curve is fitted on their summed
/// series, the overdispersion is the one all their areas of a level share,
/// and the prior is what their common levels have in common. A
/// municipality's own sum is small (a curve with a season window instead
/// of a factor per calendar month, and noisy) and its few areas pin the
/// overdispersion down poorly. Each area's level stays the municipality's
/// own, shrunk toward the municipality's common level, which is shrunk
/// toward the country's only as far as municipalities are alike
/// (`wijkradar eval` measures the difference).
#[derive(Debug, Clone, PartialEq)]
pub struct Shared {
    pub total: Vec<u64>,
    pub households: f64,
    /// The overdispersion the wijken share, and the one the buurten share;
    /// None where the history is too short for the curve.
    pub overdispersion: [Option<f64>; 2],
    /// Per level, the country's common level and the spreads between and
    /// within gemeenten, toward which a gemeente's common level is shrunk
    /// ([`pooled::shrink_toward`]).
    pub prior: [Option<pooled::Prior>; 2],
}

impl Shared {
    /// From the groups of one signal type in every municipality, each
    /// ending with the same tested month.
    pub fn of<'a>(groups: impl IntoIterator<Item = &'a Group>) -> Shared {
        let groups: Vec<&Group> = groups.into_iter().collect();
        let months = groups.iter().map(|g| g.total.len()).max().unwrap_or(0);
        let mut total = vec![0u64; months];
        for g in &groups {
            // Aligned on the tested month: a municipality with a shorter
            // history adds to the latest months.
            let skip = months - g.total.len();
            for (t, x) in total[skip..].iter_mut().zip(&g.total) {
                *t += x;
            }
        }
        let households = groups.iter().map(|g| g.households).sum();
        let curve = months
            .checked_sub(1)
            .and_then(|t| pooled::Curve::fit(&total, households, t));
        let full: Vec<&&Group> = groups.iter().filter(|g| g.total.len() == months).collect();
        let per_level = [Level::Wijk, Level::Buurt].map(|level| {
            let mut curve = curve.clone()?;
            fn of_level(g: &Group, level: Level) -> Vec<(&[u64], f64)> {
                g.series
                    .iter()
                    .filter(|s| s.level == level)
                    .map(|s| (s.counts.as_slice(), s.households))
                    .collect()
            }
            let mut levels = curve
                .pool_dispersion(
                    full.iter().flat_map(|g| of_level(g, level)),
                    &farrington::Config::default(),
                )
                .into_iter();
            let a = curve.overdispersion();
            // Each gemeente's common level on the curve.
            let commons: Vec<pooled::Common> = full
                .iter()
                .filter_map(|g| {
                    let mine: Vec<_> = levels.by_ref().take(of_level(g, level).len()).collect();
                    pooled::common(&mine, &curve)
                })
                .collect();
            Some((a, pooled::prior(&commons)))
        });
        Shared {
            total,
            households,
            overdispersion: per_level.map(|p| p.and_then(|p| p.0)),
            prior: per_level.map(|p| p.and_then(|p| p.1)),
        }
    }

    fn index(level: Level) -> usize {
        match level {
            Level::Wijk => 0,
            Level::Buurt => 1,
        }
    }

    /// What a gemeente's common level of this level is shrunk toward.
    pub fn prior(&self, level: Level) -> Option<pooled::Prior> {
        self.prior[Shared::index(level)]
    }

    /// The overdispersion the areas of this level share.
    pub fn overdispersion(&self, level: Level) -> Option<f64> {
        self.overdispersion[Shared::index(level)]
    }
}

/// A finding of [`run_month`]: which group (signal type) and which series.
#[derive(Debug, Clone, Copy)]
pub struct GroupFinding {
    pub group: usize,
    pub finding: Finding,
}

/// The month's run of one municipality: every series of every group
/// tested, and the false discovery rate controlled over all of the month's
/// tests of a level (every signal type together), wijken before buurten.
/// Returns every tested series, discoveries first, wijken before buurten,
/// each in order of p-value.
pub fn run_month(groups: &[Group], fdr: f64) -> Vec<GroupFinding> {
    let mut all: Vec<GroupFinding> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        all.extend(
            test_group(group)
                .into_iter()
                .map(|finding| GroupFinding { group: g, finding }),
        );
    }
    let level_of = |f: &GroupFinding| groups[f.group].series[f.finding.series].level;
    for level in [Level::Wijk, Level::Buurt] {
        let idx: Vec<usize> = (0..all.len())
            .filter(|&i| level_of(&all[i]) == level)
            .collect();
        let p: Vec<f64> = idx
            .iter()
            .map(|&i| all[i].finding.test.p_value.unwrap_or(1.0))
            .collect();
        let discoveries = benjamini_hochberg(&p, fdr);
        for ((&i, d), q) in idx.iter().zip(discoveries).zip(adjusted(&p)) {
            all[i].finding.discovery = d;
            all[i].finding.q_value = q;
        }
    }
    all.sort_by(|a, b| {
        b.finding
            .discovery
            .cmp(&a.finding.discovery)
            .then(level_of(a).cmp(&level_of(b)))
            .then(
                a.finding
                    .test
                    .p_value
                    .unwrap_or(1.0)
                    .total_cmp(&b.finding.test.p_value.unwrap_or(1.0)),
            )
    });
    all
}

/// [`run_month`] for one signal type.
pub fn run(series: &[Series], total: &[u64], total_households: f64, fdr: f64) -> Vec<Finding> {
    let group = Group {
        series: series.to_vec(),
        total: total.to_vec(),
        households: total_households,
        shared: None,
    };
    run_month(std::slice::from_ref(&group), fdr)
        .into_iter()
        .map(|f| f.finding)
        .collect()
}

/// Tests the last month of every series of a group with the method its
/// history allows.
fn test_group(group: &Group) -> Vec<Finding> {
    let Some(t) = group.total.len().checked_sub(1) else {
        return Vec::new();
    };
    let config = farrington::Config::default();
    let Some(chosen) = Chosen::for_history(t) else {
        return Vec::new();
    };
    // The shared series aligned on the group's months (both end with the
    // tested month).
    let (total, households) = match &group.shared {
        Some(shared) if shared.total.len() >= group.total.len() => (
            &shared.total[shared.total.len() - group.total.len()..],
            shared.households,
        ),
        _ => (&group.total[..], group.households),
    };
    // Per level (wijken, buurten): the curve with that level's shared
    // overdispersion, and each series' level on it, shrunk toward the
    // common level of the municipality's areas of that level. A wijk sums
    // its buurten, so its months vary less beyond Poisson than a buurt's,
    // and wijken differ less from each other than buurten do.
    let fitted = match chosen {
        Chosen::Pooled => pooled::Curve::fit(total, households, t),
        Chosen::Method(_) => None,
    };
    let mut curves: Vec<pooled::Curve> = Vec::new();
    let mut levels: Vec<Option<(usize, pooled::Level)>> = vec![None; group.series.len()];
    if let Some(fitted) = &fitted {
        for level in [Level::Wijk, Level::Buurt] {
            let members: Vec<usize> = (0..group.series.len())
                .filter(|&i| group.series[i].level == level)
                .collect();
            if members.is_empty() {
                continue;
            }
            let mut c = fitted.clone();
            let areas = members.iter().map(|&i| {
                let s = &group.series[i];
                (s.counts.as_slice(), s.households)
            });
            // The shared overdispersion where given, else the group's own.
            let mut found = match group.shared.as_ref().and_then(|s| s.overdispersion(level)) {
                Some(a) => {
                    c.set_overdispersion(a);
                    c.levels(areas, &config)
                }
                None => c.pool_dispersion(areas, &config),
            };
            let prior = group.shared.as_ref().and_then(|s| s.prior(level));
            pooled::shrink_toward(&mut found, &c, prior);
            for (&i, l) in members.iter().zip(found) {
                levels[i] = l.map(|l| (curves.len(), l));
            }
            curves.push(c);
        }
    }
    let mut findings = Vec::new();
    for (i, s) in group.series.iter().enumerate() {
        let (method, test) = match (chosen, &fitted) {
            (Chosen::Pooled, Some(_)) => (
                Chosen::Pooled,
                levels[i].as_ref().and_then(|(c, l)| {
                    pooled::test_level(l, &s.counts, s.households, &curves[*c], &config)
                }),
            ),
            // Without a curve (a short or empty history), the single-series model.
            (Chosen::Pooled, None) => (
                Chosen::Method(Method::Farrington),
                Method::Farrington.test(&s.counts, s.households, t),
            ),
            (Chosen::Method(m), _) => (chosen, m.test(&s.counts, s.households, t)),
        };
        if let Some(test) = test {
            findings.push(Finding {
                series: i,
                method,
                test,
                q_value: 1.0,
                discovery: false,
            });
        }
    }
    findings
}

/// Benjamini–Hochberg adjusted p-values: q_(i) = min over j ≥ i of p_(j)·m/j.
fn adjusted(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for rank in (0..m).rev() {
        let i = order[rank];
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_follows_the_history() {
        assert_eq!(Chosen::for_history(5), None);
        assert_eq!(
            Chosen::for_history(6),
            Some(Chosen::Method(Method::NbPredictive))
        );
        assert_eq!(
            Chosen::for_history(23),
            Some(Chosen::Method(Method::NbPredictive))
        );
        assert_eq!(Chosen::for_history(24), Some(Chosen::Pooled));
    }

    #[test]
    fn adjusted_p_values_by_hand() {
        // m = 4: sorted 0.01, 0.02, 0.03, 0.5 → 0.04, 0.04, 0.04, 0.5.
        let q = adjusted(&[0.03, 0.5, 0.01, 0.02]);
        for (got, want) in q.iter().zip([0.04, 0.5, 0.04, 0.04]) {
            assert!((got - want).abs() < 1e-12, "{q:?}");
        }
    }

    #[test]
    fn a_rising_wijk_is_found_and_ranked_first() {
        // 20 wijken of ~10 a month for 30 months (Poisson-like wiggle);
        // wijk 7 rises to double over the last 3 months.
        let mut series = Vec::new();
        for w in 0..20u64 {
            let counts: Vec<u64> = (0..30u64).map(|t| 10 + (t * 7 + w * 3) % 5 - 2).collect();
            series.push(Series {
                level: Level::Wijk,
                counts,
                households: 5000.0,
            });
        }
        for c in &mut series[7].counts[27..] {
            *c *= 2;
        }
        let total: Vec<u64> = (0..30)
            .map(|t| series.iter().map(|s| s.counts[t]).sum())
            .collect();
        let findings = run(&series, &total, 100_000.0, 0.05);
        assert_eq!(findings.len(), 20);
        assert!(findings.iter().all(|f| f.method == Chosen::Pooled));
        assert_eq!(findings[0].series, 7);
        assert!(findings[0].discovery, "{:?}", findings[0]);
        assert_eq!(findings.iter().filter(|f| f.discovery).count(), 1);
    }

    /// `areas` wijken of about `per_month` households a month over
    /// `months` months (a fixed wiggle), as one municipality's group.
    fn flat_group(areas: usize, per_month: u64, months: usize) -> Group {
        let series: Vec<Series> = (0..areas)
            .map(|w| Series {
                level: Level::Wijk,
                counts: (0..months)
                    .map(|t| per_month + ((t * 7 + w * 3) % 5) as u64)
                    .collect(),
                households: 5000.0,
            })
            .collect();
        let total = (0..months)
            .map(|t| series.iter().map(|s| s.counts[t]).sum())
            .collect();
        Group {
            series,
            total,
            households: 5000.0 * areas as f64,
            shared: None,
        }
    }

    #[test]
    fn shared_series_are_summed_on_the_tested_month() {
        let long = flat_group(20, 8, 30);
        let short = flat_group(5, 8, 20);
        let shared = Shared::of([&long, &short]);
        assert_eq!(shared.total.len(), 30);
        assert_eq!(shared.total[..10], long.total[..10]);
        for t in 10..30 {
            assert_eq!(shared.total[t], long.total[t] + short.total[t - 10]);
        }
        assert_eq!(shared.households, 125_000.0);
        // Counts wiggling less than Poisson: no overdispersion; no buurten.
        assert_eq!(shared.overdispersion, [Some(0.0), None]);
        // Too short for the pooled curve: none.
        assert_eq!(
            Shared::of([&flat_group(20, 8, 12)]).overdispersion,
            [None, None]
        );
    }

    #[test]
    fn wijken_and_buurten_each_have_their_own_overdispersion() {
        use rand::SeedableRng;
        // 60 wijken of 5 buurten; a buurt's month is negative binomial of
        // size 5 around 4 (a = 0.2). A wijk sums five independent buurten:
        // its extra variance is a fifth as large relative to its mean²
        // (a = 0.04).
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut series = Vec::new();
        let mut wijken = Vec::new();
        for _ in 0..60 {
            let buurten: Vec<Vec<u64>> = (0..5)
                .map(|_| {
                    (0..30)
                        .map(|_| crate::draw::negative_binomial(&mut rng, 5.0, 4.0))
                        .collect()
                })
                .collect();
            wijken.push(Series {
                level: Level::Wijk,
                counts: (0..30)
                    .map(|t| buurten.iter().map(|b| b[t]).sum())
                    .collect(),
                households: 5000.0,
            });
            series.extend(buurten.into_iter().map(|counts| Series {
                level: Level::Buurt,
                counts,
                households: 1000.0,
            }));
        }
        let total: Vec<u64> = (0..30)
            .map(|t| wijken.iter().map(|w| w.counts[t]).sum())
            .collect();
        wijken.extend(series);
        let group = Group {
            series: wijken,
            total,
            households: 300_000.0,
            shared: None,
        };
        let shared = Shared::of([&group]);
        let (wijk, buurt) = (
            shared.overdispersion(Level::Wijk).unwrap(),
            shared.overdispersion(Level::Buurt).unwrap(),
        );
        assert!((0.12..0.3).contains(&buurt), "{buurt}");
        assert!(wijk < buurt / 2.5, "{wijk} {buurt}");
    }

    #[test]
    fn a_municipality_borrows_the_curve_and_overdispersion_it_cannot_fit() {
        // A municipality whose own sum cannot carry a curve (here: empty,
        // so the curve expects nothing and every series looks like a
        // rise). Given the others' curve, each series is expected at its
        // own level again (2–6 a month).
        let mut small = flat_group(3, 2, 30);
        small.total = vec![0; 30];
        let others = flat_group(40, 8, 30);
        for f in test_group(&small) {
            assert!(f.test.expected < 0.01, "{f:?}");
        }
        small.shared = Some(Shared::of([&others]));
        let pooled = test_group(&small);
        assert_eq!(pooled.len(), 3);
        for f in &pooled {
            assert_eq!(f.method, Chosen::Pooled);
            assert!((2.0..6.0).contains(&f.test.expected), "{f:?}");
        }
        // The shared overdispersion is the one used: a wider one gives a
        // larger p-value to the same rising series.
        for c in &mut small.series[0].counts[27..] {
            *c *= 3;
        }
        let p = |a: f64| {
            let mut g = small.clone();
            let shared = g.shared.as_mut().unwrap();
            shared.overdispersion = [Some(a), None];
            shared.prior = [None, None];
            test_group(&g)[0].test.p_value.unwrap()
        };
        assert!(p(0.0) < p(0.5), "{} {}", p(0.0), p(0.5));
    }

    #[test]
    fn a_short_history_uses_the_predictive_method_and_none_is_too_short() {
        let series = vec![Series {
            level: Level::Buurt,
            counts: vec![3; 10],
            households: 500.0,
        }];
        let f = run(&series, &[3; 10], 500.0, 0.05);
        assert_eq!(f[0].method, Chosen::Method(Method::NbPredictive));
        assert!(run(&series[..], &[3; 4], 500.0, 0.05).is_empty());
    }
}
