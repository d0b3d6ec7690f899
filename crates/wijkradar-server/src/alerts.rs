//! Early warning through the query API: the month's detection run over a
//! gemeente's wijken and buurten, every signal type, with the false
//! discovery rate controlled over all of the month's tests of a level
//! (`wijkradar_detect::monitor::run_month`), on the true series inside the
//! aggregator. What leaves is filtered by the release rules. A rise is
//! often found in the sum of the last 2, 3 or 6 months, where each month
//! alone is small. An alert shows one window whose own evidence raised it:
//! the strongest whose cell of the area is released in its audited table.
//! It names the area only then, and shows only that released value. A
//! window's table is released like a quarter: cell keys over its distinct
//! households, the threshold, and the audit against its released months.
//! A rise whose every window is suppressed never becomes an alert. The derived indicators
//! (several problems, signalled again) are tested beside the signal types;
//! their month's cells are released by the same rules (cell keys from the
//! households' record keys, perturbation, threshold, audit), materialised
//! and versioned like every table (`tables.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use wijkradar_detect::monitor::{self, Group, Level, Series, Shared};
use wijkradar_domain::derived::{self, Derived};
use wijkradar_domain::{AreaCode, BuurtCode, GemeenteCode, Month, SignalTypeName, WijkCode};
use wijkradar_proto::v1 as pb;
use wijkradar_release::{Period, Released};

use crate::convert::alerts_query_from_proto;
use crate::error::ApiError;
use crate::query::Query;
use crate::tables::{Measure, Tables};

/// A table's release version and its cells by area.
type ReleasedCells = (u32, HashMap<AreaCode, Released>);

/// The false discovery rate controlled over each level's tests.
pub const FALSE_DISCOVERY_RATE: f64 = 0.05;

/// Months of history a test looks at, the tested month included.
pub const HISTORY_MONTHS: i32 = 36;

fn round1(x: f64) -> f64 {
    if x.is_finite() {
        (x * 10.0).round() / 10.0
    } else {
        -1.0
    }
}

impl Query {
    pub(crate) fn alerts(
        &self,
        req: pb::GetAlertsRequest,
    ) -> Result<pb::GetAlertsResponse, ApiError> {
        let started = std::time::Instant::now();
        let answer = self.alerts_run(req);
        self.state.metrics.alerts_run(started.elapsed());
        answer
    }

    fn alerts_run(&self, req: pb::GetAlertsRequest) -> Result<pb::GetAlertsResponse, ApiError> {
        let state = &self.state;
        let now = state.month();
        let q = alerts_query_from_proto(req, &state.hierarchy, &state.catalogue, now)?;
        let mut answer = pb::GetAlertsResponse {
            month: q.month.to_string(),
            false_discovery_rate: FALSE_DISCOVERY_RATE,
            k: state.policy.k(),
            max_noise: state.policy.max_noise(),
            ..Default::default()
        };
        let Some((first, _)) = state.store.month_range_of(q.gemeente)? else {
            return Ok(answer);
        };
        if q.month < first {
            return Ok(answer);
        }
        let start = first.max(q.month.plus(1 - HISTORY_MONTHS));
        let months: Vec<Month> = start.through(q.month).collect();
        // The month's run, done before with the same data: its answer.
        let asked: Vec<String> = q
            .signal_types
            .iter()
            .map(|t| t.to_string())
            .chain(q.derived.iter().map(|d| d.name().to_owned()))
            .collect();
        let key = (q.gemeente, q.month, state.closed_before(), asked);
        if let Some(fingerprint) = self.alerts_fingerprint(&q, &months)?
            && let Some(answer) = state.alerts.get(&key, &fingerprint)
        {
            return Ok(answer);
        }
        let buurten: Vec<BuurtCode> = state.hierarchy.buurten_of(q.gemeente).collect();
        let wijken: Vec<WijkCode> = state.hierarchy.wijken_of(q.gemeente).collect();
        let tables = Tables::new(self, q.gemeente, true, None)?;
        // Every read of households here (the derived indicators, the
        // windows' releases, their households-per-count ratios) falls in
        // these months: read them once.
        tables
            .household_months
            .set(Some((first_read(months[0]), q.month)));
        // Per measure: the monthly count of households per buurt.
        let mut sources: Vec<(Measure<'_>, HashMap<BuurtCode, Vec<u64>>)> = Vec::new();
        for signal_type in &q.signal_types {
            let per_buurt = self.buurt_series(signal_type, &months, q.gemeente)?;
            sources.push((Measure::Type(signal_type), per_buurt));
        }
        // The derived indicators, counted from the linked households.
        if !q.derived.is_empty() {
            let series = self.derived_series(&tables, &q.derived, &months, q.gemeente)?;
            for (&d, per_buurt) in q.derived.iter().zip(series) {
                sources.push((Measure::Derived(d), per_buurt));
            }
        }

        let mut groups = Vec::with_capacity(sources.len());
        let mut areas: Vec<AreaCode> = wijken.iter().map(|&w| AreaCode::Wijk(w)).collect();
        areas.extend(buurten.iter().map(|&b| AreaCode::Buurt(b)));
        for (measure, per_buurt) in &sources {
            let mut group = self.group_of(q.gemeente, per_buurt, months.len());
            group.shared = self.shared(*measure, &months)?;
            groups.push(group);
        }
        let findings = monitor::run_month(&groups, FALSE_DISCOVERY_RATE);
        answer.series_tested = findings.len() as u32;
        let level_of = |f: &monitor::GroupFinding| groups[f.group].series[f.finding.series].level;
        // Per level, the largest p-value the run found: a window whose own
        // (corrected) p-value is at most this would have been found alone.
        let cutoff = |level: Level| {
            findings
                .iter()
                .filter(|f| f.finding.discovery && level_of(f) == level)
                .filter_map(|f| f.finding.test.p_value)
                .fold(0.0, f64::max)
        };
        let (wijk_cutoff, buurt_cutoff) = (cutoff(Level::Wijk), cutoff(Level::Buurt));
        // Per measure and window length, the window's release.
        let mut releases: HashMap<(usize, usize), Option<ReleasedCells>> = HashMap::new();
        let mut ratios: HashMap<(usize, usize), f64> = HashMap::new();
        let mut alerts = Vec::new();
        for f in findings.iter().filter(|f| f.finding.discovery) {
            let measure = sources[f.group].0;
            let area = areas[f.finding.series];
            let cutoff = match level_of(f) {
                Level::Wijk => wijk_cutoff,
                Level::Buurt => buurt_cutoff,
            };
            // Only what an audited release shows: the strongest window that
            // raised the alert and whose cell of this area is released.
            for window in f.finding.test.windows_within(cutoff) {
                let Some(covered) = months
                    .len()
                    .checked_sub(window.months)
                    .map(|i| &months[i..])
                else {
                    continue;
                };
                let release = match releases.get(&(f.group, window.months)) {
                    Some(r) => r,
                    None => {
                        let period = Period::new(covered[0], covered.len() as u32);
                        let r = tables
                            .release(measure, period)?
                            .ok()
                            .map(|(v, cells)| (v, cells.into_iter().collect()));
                        releases.entry((f.group, window.months)).or_insert(r)
                    }
                };
                let Some((version, released)) = release else {
                    continue;
                };
                let Some(Released::Value(value)) = released.get(&area) else {
                    continue;
                };
                let key = (f.group, window.months);
                let per_count = match ratios.get(&key) {
                    Some(&r) => r,
                    None => {
                        let total = &groups[f.group].total;
                        let r =
                            households_per_count(&tables, measure, &months, total, window.months)?;
                        *ratios.entry(key).or_insert(r)
                    }
                };
                alerts.push(pb::Alert {
                    area_code: area.to_string(),
                    level: crate::convert::level_to_proto(area.level()).into(),
                    signal_type: measure.name().to_owned(),
                    month: q.month.to_string(),
                    method: f.finding.method.name().to_owned(),
                    window_months: window.months as u32,
                    window_first_month: covered[0].to_string(),
                    expected: round1(window.expected * per_count),
                    threshold: round1(window.threshold * per_count),
                    released_value: *value,
                    q_value: f.finding.q_value,
                    release_version: *version,
                    crosses_key_change: tables
                        .crosses_key_change(measure, Period::new(months[0], months.len() as u32))?,
                });
                break;
            }
        }
        // Wijken first, then by strength of evidence.
        alerts.sort_by(|a, b| {
            (a.level != i32::from(pb::AreaLevel::Wijk))
                .cmp(&(b.level != i32::from(pb::AreaLevel::Wijk)))
                .then(a.q_value.total_cmp(&b.q_value))
        });
        answer.alerts = alerts;
        // The run computed the shared baselines it used, if they were
        // missing: the fingerprint after it names them.
        if let Some(fingerprint) = self.alerts_fingerprint(&q, &months)? {
            state.alerts.put(key, fingerprint, answer.clone());
        }
        Ok(answer)
    }

    /// What a month's alerts answer of `q` was computed from: the change
    /// counts of the gemeente's tables, and per signal type the store's
    /// size when the shared baseline used was computed. `None` when a
    /// baseline the run needs is missing or would be computed again.
    fn alerts_fingerprint(
        &self,
        q: &crate::convert::AlertsQuery,
        months: &[Month],
    ) -> Result<Option<Fingerprint>, ApiError> {
        let state = &self.state;
        let states = state.store.table_states_of(q.gemeente)?;
        let mut shared = Vec::new();
        let pooled =
            monitor::Chosen::for_history(months.len() - 1) == Some(monitor::Chosen::Pooled);
        if pooled {
            let (first, last) = (months[0], months[months.len() - 1]);
            let signals = state.store.signal_count()?;
            let measures = q.signal_types.iter().map(Measure::Type);
            let measures = measures.chain(q.derived.iter().map(|&d| Measure::Derived(d)));
            for m in measures {
                match state.shared.get(&(shared_name(m), first, last)) {
                    Some((at, _)) if signals <= at + at / 100 => shared.push(at),
                    _ => return Ok(None),
                }
            }
        }
        Ok(Some(Fingerprint {
            tables: states.len(),
            changes: states.values().sum(),
            shared,
        }))
    }

    /// Computes what the pooled method borrows from every gemeente for the
    /// last ended month and every signal type, ahead of the first alerts
    /// query that would otherwise pay for it (about 0.6 s per type for the
    /// whole country; the scheduler calls this after materialising). A
    /// gemeente whose history is shorter than 36 months asks for a shorter
    /// history and computes its own on its first query.
    pub(crate) fn prepare_alerts(&self) -> Result<(), ApiError> {
        let last = self.state.month().plus(-1);
        let months: Vec<Month> = last.plus(1 - HISTORY_MONTHS).through(last).collect();
        for t in self.state.catalogue.types() {
            self.shared(Measure::Type(&t.name), &months)?;
        }
        // One call computes every derived indicator's.
        self.shared(Measure::Derived(Derived::SeveralProblems), &months)?;
        Ok(())
    }

    /// Runs the last ended month's alerts of every gemeente with signals,
    /// as the dashboard and `query alerts` ask them (every measure), so that
    /// their queries read the answer; a gemeente whose answer is current
    /// costs one read of its table states. Returns the gemeenten run.
    pub(crate) fn prepare_alert_answers(&self) -> Result<usize, ApiError> {
        let mut run = 0;
        let gemeenten: Vec<GemeenteCode> = self.state.hierarchy.gemeenten().collect();
        for g in gemeenten {
            if self.state.store.month_range_of(g)?.is_none() {
                continue;
            }
            self.alerts(pb::GetAlertsRequest {
                gemeente_code: g.to_string(),
                ..Default::default()
            })?;
            run += 1;
        }
        Ok(run)
    }

    /// The monthly count of households per buurt of gemeente `g` with a
    /// signal of this type, over `months`.
    fn buurt_series(
        &self,
        signal_type: &SignalTypeName,
        months: &[Month],
        g: GemeenteCode,
    ) -> Result<HashMap<BuurtCode, Vec<u64>>, ApiError> {
        let mut per_buurt = zeros(self.state.hierarchy.buurten_of(g), months.len());
        for (j, &m) in months.iter().enumerate() {
            for (b, total) in self.state.store.buurt_counts(signal_type, m, g)? {
                if let Some(row) = per_buurt.get_mut(&b) {
                    row[j] = total.households;
                }
            }
        }
        Ok(per_buurt)
    }

    /// Per derived indicator of `which`: the monthly count of households per
    /// buurt of gemeente `g` over `months`, from its linked households.
    fn derived_series(
        &self,
        tables: &Tables<'_>,
        which: &[Derived],
        months: &[Month],
        g: GemeenteCode,
    ) -> Result<Vec<HashMap<BuurtCode, Vec<u64>>>, ApiError> {
        let households = tables.linked(first_read(months[0]), months[months.len() - 1])?;
        let joins = self.state.joins();
        let mut out = Vec::with_capacity(which.len());
        for &d in which {
            let signals = households.iter().map(|(_, s)| s.as_slice());
            let mut per_buurt = zeros(self.state.hierarchy.buurten_of(g), months.len());
            for ((m, b), n) in derived::tested_counts(d, signals, months, &joins) {
                if let (Some(row), Some(j)) =
                    (per_buurt.get_mut(&b), months.iter().position(|x| *x == m))
                {
                    row[j] = n;
                }
            }
            out.push(per_buurt);
        }
        Ok(out)
    }

    /// Gemeente `g`'s series for the detection run: its wijken (each the
    /// sum of its buurten), then its buurten, with their household bases;
    /// the gemeente's total beside them.
    fn group_of(
        &self,
        g: GemeenteCode,
        per_buurt: &HashMap<BuurtCode, Vec<u64>>,
        months: usize,
    ) -> Group {
        let state = &self.state;
        let base = |a: AreaCode| state.bases.per_area.get(&a).map_or(1.0, |&b| b as f64);
        let buurten: Vec<BuurtCode> = state.hierarchy.buurten_of(g).collect();
        let mut series: Vec<Series> = Vec::new();
        for w in state.hierarchy.wijken_of(g) {
            let mut counts = vec![0; months];
            for b in buurten.iter().filter(|b| b.wijk() == w) {
                for (c, x) in counts.iter_mut().zip(&per_buurt[b]) {
                    *c += x;
                }
            }
            series.push(Series {
                level: Level::Wijk,
                counts,
                households: base(AreaCode::Wijk(w)),
            });
        }
        let mut total = vec![0; months];
        for &b in &buurten {
            for (c, x) in total.iter_mut().zip(&per_buurt[&b]) {
                *c += x;
            }
            series.push(Series {
                level: Level::Buurt,
                counts: per_buurt[&b].clone(),
                households: base(AreaCode::Buurt(b)),
            });
        }
        Group {
            series,
            total,
            households: base(AreaCode::Gemeente(g)),
            shared: None,
        }
    }

    /// What the pooled method of this measure borrows from every gemeente
    /// the store holds over all of `months` (a gemeente whose history
    /// starts later is left out: its start would read as a rise): the
    /// summed series for the seasonal curve and the overdispersion all
    /// their areas share. None where the history is too short for the
    /// pooled method. Kept in memory and reused until the store holds 1%
    /// more signals than when it was computed. A derived indicator's series
    /// come from every gemeente's linked households (seconds for the
    /// country; the scheduled job computes it once a month).
    fn shared(&self, measure: Measure<'_>, months: &[Month]) -> Result<Option<Shared>, ApiError> {
        let state = &self.state;
        let (Some(&first), Some(&last)) = (months.first(), months.last()) else {
            return Ok(None);
        };
        if monitor::Chosen::for_history(months.len() - 1) != Some(monitor::Chosen::Pooled) {
            return Ok(None);
        }
        let signals = state.store.signal_count()?;
        if let Some((at, shared)) = state.shared.get(&(shared_name(measure), first, last))
            && signals <= at + at / 100
        {
            return Ok(Some(shared));
        }
        // The derived indicators come from the same households: all of
        // them in one read of each gemeente.
        let measures: Vec<Measure<'_>> = match measure {
            Measure::Type(_) => vec![measure],
            Measure::Derived(_) => Derived::ALL.map(Measure::Derived).to_vec(),
        };
        let mut groups: Vec<Vec<Group>> = vec![Vec::new(); measures.len()];
        for g in state.hierarchy.gemeenten() {
            match state.store.month_range_of(g)? {
                Some((from, _)) if from <= first => {}
                _ => continue,
            }
            let series = match measure {
                Measure::Type(t) => vec![self.buurt_series(t, months, g)?],
                Measure::Derived(_) => {
                    let tables = Tables::new(self, g, false, None)?;
                    self.derived_series(&tables, &Derived::ALL, months, g)?
                }
            };
            for (per_buurt, groups) in series.iter().zip(&mut groups) {
                let group = self.group_of(g, per_buurt, months.len());
                // A partner sending this type may have joined later than
                // the gemeente's others: only a gemeente with signals of
                // this measure in the first month (and a small one without
                // any then is missed, which costs nothing).
                if group.total.first().is_some_and(|&n| n > 0) {
                    groups.push(group);
                }
            }
        }
        let mut asked = None;
        for (m, groups) in measures.into_iter().zip(&groups) {
            let shared = Shared::of(groups);
            let name = shared_name(m);
            if name == shared_name(measure) {
                asked = Some(shared.clone());
            }
            state.shared.put((name, first, last), signals, shared);
        }
        Ok(asked)
    }
}

/// A measure's name in the cache of shared baselines: a derived
/// indicator's is marked, so that no signal type's name can be the same.
fn shared_name(measure: Measure<'_>) -> String {
    match measure {
        Measure::Type(t) => t.to_string(),
        Measure::Derived(d) => format!("derived:{}", d.name()),
    }
}

/// The first month whose signals a derived series from `first` on needs:
/// its window looks back six months, and a stock's entry one more.
fn first_read(first: Month) -> Month {
    first.plus(-(derived::WINDOW_MONTHS as i32) - 1)
}

/// Months before the tested one that the baseline leaves out of its fit
/// (the longest window and one more).
const HELD_OUT: usize = {
    use wijkradar_detect::farrington::WINDOWS;
    WINDOWS[WINDOWS.len() - 1] + 1
};

/// Distinct households over a window of `w` months per household-month of
/// the gemeente's monthly counts (`total`, over `months`), in the windows
/// before the held-out months, at most two years of them. A household
/// signalled in two months of a window counts twice in the sum the
/// detection tests but once in the window's released cell: this ratio puts
/// the window's expected sum and bound in households, as its cell counts.
/// For a stock (several problems) the detection tests the households that
/// come to count, and the cell holds every household that counts: the same
/// ratio puts them on the cell's scale, for a single month too.
fn households_per_count(
    tables: &Tables<'_>,
    measure: Measure<'_>,
    months: &[Month],
    total: &[u64],
    w: usize,
) -> Result<f64, ApiError> {
    let stock = matches!(measure, Measure::Derived(d) if d.is_stock());
    if w == 1 && !stock {
        return Ok(1.0);
    }
    let end = months.len().saturating_sub(HELD_OUT);
    let (mut distinct, mut sum) = (0u64, 0u64);
    let mut stop = end;
    while stop >= w && end - stop < 24 {
        let window = &months[stop - w..stop];
        sum += total[stop - w..stop].iter().sum::<u64>();
        distinct += tables
            .totals(measure, Period::new(window[0], w as u32))?
            .iter()
            .map(|(_, t)| t.households)
            .sum::<u64>();
        stop -= w;
    }
    Ok(if sum == 0 {
        1.0
    } else {
        distinct as f64 / sum as f64
    })
}

/// A series of zeros over `months` months per buurt.
fn zeros(buurten: impl Iterator<Item = BuurtCode>, months: usize) -> HashMap<BuurtCode, Vec<u64>> {
    buurten.map(|b| (b, vec![0; months])).collect()
}

/// What an alerts answer was computed from ([`Query::alerts_fingerprint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    tables: usize,
    /// The sum of the gemeente's table change counts: each only grows, so
    /// a late signal changes it (a purge clears the cache).
    changes: u64,
    shared: Vec<u64>,
}

/// A gemeente, the month tested, the first month not yet closed for
/// release (a window may be pending), and the measures tested.
type AlertsKey = (GemeenteCode, Month, Month, Vec<String>);

/// The month's alerts answers, kept while what they were computed from is
/// unchanged: the scheduled job computes them after the month's releases,
/// so that an analyst's query reads them. A purge clears them.
#[derive(Debug, Default)]
pub(crate) struct AlertsCache {
    map: Mutex<HashMap<AlertsKey, (Fingerprint, pb::GetAlertsResponse)>>,
}

impl AlertsCache {
    fn get(&self, key: &AlertsKey, fingerprint: &Fingerprint) -> Option<pb::GetAlertsResponse> {
        let map = self.map.lock().expect("alerts cache lock");
        map.get(key)
            .filter(|(f, _)| f == fingerprint)
            .map(|(_, answer)| answer.clone())
    }

    fn put(&self, key: AlertsKey, fingerprint: Fingerprint, answer: pb::GetAlertsResponse) {
        let mut map = self.map.lock().expect("alerts cache lock");
        // One entry per gemeente, month and set of measures asked.
        if map.len() >= 4096 {
            map.clear();
        }
        map.insert(key, (fingerprint, answer));
    }

    pub(crate) fn clear(&self) {
        self.map.lock().expect("alerts cache lock").clear();
    }
}

/// The [`Shared`] baselines computed, per signal type and months, with the
/// store's signal count when computed. A purge clears them.
#[derive(Debug, Default)]
pub(crate) struct SharedCache {
    map: Mutex<HashMap<SharedKey, (u64, Shared)>>,
}

/// A measure ([`shared_name`]) and the first and last month of the history.
type SharedKey = (String, Month, Month);

impl SharedCache {
    fn get(&self, key: &SharedKey) -> Option<(u64, Shared)> {
        self.map
            .lock()
            .expect("shared cache lock")
            .get(key)
            .cloned()
    }

    fn put(&self, key: SharedKey, signals: u64, shared: Shared) {
        let mut map = self.map.lock().expect("shared cache lock");
        // A few entries per signal type and month queried; start afresh
        // rather than grow without end.
        if map.len() >= 1024 {
            map.clear();
        }
        map.insert(key, (signals, shared));
    }

    pub(crate) fn clear(&self) {
        self.map.lock().expect("shared cache lock").clear();
    }
}
