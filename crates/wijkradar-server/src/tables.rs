//! Materialised, versioned releases of one gemeente's tables (docs/privacy.md
//! "What leaves the aggregator", points 5 and 6). When a period is released,
//! when it gets a new version and what its audit takes in is
//! `wijkradar_release::lifecycle`; this module reads and writes for it.
//!
//! A table's state is the sum of the change counts of the (type, month)
//! tables it counts from, which the writer bumps in the same atomic batch
//! as the signals. A release is stored with its state and read back from
//! then on; every new version is written to the audit log with the
//! releases its audit took in.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use wijkradar_domain::derived::{self, Derived, HouseholdSignal};
use wijkradar_domain::{
    AreaCode, AreaLevel, BuurtCode, CellTotal, GemeenteCode, Month, PseudonymKeyId,
    ServerPseudonym, SignalTypeName, SignalUnit,
};
use wijkradar_release::lifecycle::{
    Counts, Lifecycle, NewRelease, NotReleased, Releases, Snapshot,
};
use wijkradar_release::{GemeenteTable, Period, Released};
use wijkradar_store::{Store, TableRef, UnderKey};

use crate::error::ApiError;
use crate::query::{Query, VersionedRelease};

/// Materialised releases read or stored since the server started, so that
/// answering a table reads each release from the store once, not per query.
/// Only this process writes releases; a purge clears it.
#[derive(Debug, Default)]
pub(crate) struct ReleaseCache {
    map: RwLock<HashMap<TableRef, Arc<Snapshot>>>,
}

/// Releases kept in memory at most (each a few bytes per area); past this
/// the cache starts afresh.
const CACHED_RELEASES: usize = 400_000;

impl ReleaseCache {
    fn get(&self, store: &Store, key: &TableRef) -> Result<Option<Arc<Snapshot>>, ApiError> {
        if let Some(s) = self.map.read().expect("release cache lock").get(key) {
            return Ok(Some(s.clone()));
        }
        Ok(store.release_snapshot(key)?.map(|s| self.put(*key, s)))
    }

    fn put(&self, key: TableRef, s: Snapshot) -> Arc<Snapshot> {
        let s = Arc::new(s);
        let mut map = self.map.write().expect("release cache lock");
        if map.len() >= CACHED_RELEASES {
            map.clear();
        }
        map.insert(key, s.clone());
        s
    }

    pub(crate) fn clear(&self) {
        self.map.write().expect("release cache lock").clear();
    }
}

/// Households, each with its record key and its signals.
pub(crate) type Households = std::rc::Rc<Vec<(u32, Vec<HouseholdSignal>)>>;

/// Households with their signals of the months `from..=to`: grouped by
/// each signal's own pseudonym (a person's signals apart), and linked
/// (a person's signals with its household's).
struct HouseholdsRead {
    from: Month,
    to: Month,
    households: Households,
    linked: Households,
}

/// What a table counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Measure<'a> {
    Type(&'a SignalTypeName),
    Derived(Derived),
}

impl Measure<'_> {
    pub(crate) fn name(&self) -> &str {
        match self {
            Measure::Type(t) => t.as_str(),
            Measure::Derived(d) => d.name(),
        }
    }
}

/// One request's view of a gemeente's releases: the table's shape, the
/// change counts of its (type, month) tables (read once), and its
/// households with their signals (read only when a table has to be
/// computed, and then once).
pub(crate) struct Tables<'q> {
    query: &'q Query,
    pub(crate) table: GemeenteTable,
    gemeente: GemeenteCode,
    pub(crate) now: Month,
    /// Periods ending before this month may get a new release here; a later
    /// one shows what was released before, or is pending.
    closed_before: Month,
    states: HashMap<(u16, Month), u64>,
    /// Signals per partner key, per (type id, month): where the key epochs
    /// change, and whether each change was linked. Read when first asked:
    /// a release run never asks.
    epochs: std::cell::OnceCell<Epochs>,
    /// The households read so far, with the months their signals cover.
    households: RefCell<Option<HouseholdsRead>>,
    /// The months the caller will want households for, read in one go.
    pub(crate) household_months: Cell<Option<(Month, Month)>>,
    /// Make each new version durable before it is returned (a query), or
    /// leave that to the caller (a bulk materialisation).
    durable: bool,
    pub(crate) new_versions: Cell<usize>,
}

impl<'q> Tables<'q> {
    /// A query's view (`durable`, periods closed by the release schedule's
    /// rule) or a bulk materialisation's (up to `closed_before`).
    pub(crate) fn new(
        query: &'q Query,
        gemeente: GemeenteCode,
        durable: bool,
        closed_before: Option<Month>,
    ) -> Result<Tables<'q>, ApiError> {
        let state = &query.state;
        let now = state.month();
        Ok(Tables {
            query,
            table: GemeenteTable::new(&state.hierarchy, gemeente),
            gemeente,
            now,
            closed_before: closed_before
                .unwrap_or_else(|| state.closed_before())
                .min(now),
            states: state.store.table_states_of(gemeente)?,
            epochs: std::cell::OnceCell::new(),
            households: RefCell::new(None),
            household_months: Cell::new(None),
            durable,
            new_versions: Cell::new(0),
        })
    }

    /// The release of `measure` over `period` (see
    /// [`wijkradar_release::lifecycle`]): pending, purged, or the
    /// materialised release, made or renewed here when needed.
    pub(crate) fn release(
        &self,
        measure: Measure<'_>,
        period: Period,
    ) -> Result<Result<VersionedRelease, NotReleased>, ApiError> {
        let lifecycle = self.lifecycle(measure);
        let Some(stored) = self.stored_measure(measure) else {
            // No signal of this type was ever stored: nothing to keep.
            let empty = self.table.release(&self.query.state.policy, &[], &[]);
            return Ok(lifecycle.status(period).map(|()| (1, empty)));
        };
        let releases = StoredReleases {
            tables: self,
            measure,
            stored,
        };
        Ok(lifecycle
            .release(&releases, period)?
            .map(|r| (r.version(), self.cells_of(&r.snapshot.cells))))
    }

    /// Whether the release of `measure` over `period` spans a key change
    /// it could not link: a derived indicator with the months it looks back
    /// over, a signal type with its own months.
    pub(crate) fn crosses_key_change(
        &self,
        measure: Measure<'_>,
        period: Period,
    ) -> Result<bool, ApiError> {
        let state = &self.query.state;
        let epochs = match self.epochs.get() {
            Some(e) => e,
            None => {
                let read = Epochs::new(state.store.epochs_of(self.gemeente)?);
                self.epochs.get_or_init(|| read)
            }
        };
        Ok(match measure {
            Measure::Type(t) => {
                let Some(id) = state.store.type_id(t) else {
                    return Ok(false);
                };
                let per_person = state
                    .catalogue
                    .get(t.as_str())
                    .is_some_and(|d| d.unit == SignalUnit::Person);
                epochs.unlinked(period.first(), period.last(), Some(id), per_person)
            }
            Measure::Derived(_) => {
                let from = period.first().plus(-(derived::WINDOW_MONTHS as i32));
                epochs.unlinked(from, period.last(), None, false)
            }
        })
    }

    /// The open-data release of `measure` over `period` (differential
    /// privacy, `open`): made once when the period is closed, on the
    /// gemeente's budget for the measure and year, then read back.
    pub(crate) fn open_release(
        &self,
        measure: Measure<'_>,
        period: Period,
        open: &crate::config::OpenDataConfig,
    ) -> Result<Result<VersionedRelease, NotReleased>, ApiError> {
        let lifecycle = self.lifecycle(measure);
        if let Err(not) = lifecycle.status(period) {
            return Ok(Err(not));
        }
        let state = &self.query.state;
        let stored = self.stored_measure(measure);
        let key = stored.map(|stored| table_ref(self.gemeente, stored, period));
        if let Some(key) = &key
            && let Some(cells) = state.store.open_release(key)?
        {
            return Ok(Ok((1, self.cells_of(&cells))));
        }
        if period.last() >= self.closed_before {
            return Ok(Err(NotReleased::Pending));
        }
        let Some(key) = key else {
            // No signal of this type was ever stored: no household is in
            // it, so its zeros carry nothing of anyone, and fresh noise per
            // query would only invite averaging.
            let zeros: Vec<Option<u64>> = (self.table.codes().iter())
                .map(|a| (a.level() != AreaLevel::Buurt).then_some(0))
                .collect();
            return Ok(Ok((1, self.cells_of(&zeros))));
        };
        let totals = self.totals(measure, period)?;
        let cells = wijkradar_release::open::release(
            &self.table,
            &totals,
            open.scale(),
            &mut SystemEntropy::default(),
        );
        let year = period.first().year();
        let outcome = state.store.store_open_release(
            &key,
            year,
            cells,
            open.epsilon_micro(),
            open.budget_micro(),
        )?;
        let cells = match outcome {
            wijkradar_store::OpenRelease::Stored(cells) => cells,
            wijkradar_store::OpenRelease::BudgetSpent { spent } => {
                return Err(ApiError::BudgetSpent(crate::error::Violation::new(
                    "open_data",
                    format!(
                        "the open-data budget of {} for {} in {year} is spent (ε {} of {}): the releases made so far stay available",
                        measure.name(),
                        self.gemeente,
                        spent as f64 / 1e6,
                        open.budget_per_year
                    ),
                )));
            }
        };
        state.audit.record(
            "aggregator",
            wijkradar_audit::Event::Release {
                gemeente: self.gemeente.to_string(),
                signal_type: measure.name().to_owned(),
                month: format!("{period} open data (ε {})", open.epsilon_per_release),
                version: 1,
                audited_with: Vec::new(),
            },
            true,
        );
        Ok(Ok((1, self.cells_of(&cells))))
    }

    /// The release rules of `measure` in this gemeente now.
    fn lifecycle(&self, measure: Measure<'_>) -> Lifecycle<'_> {
        let state = &self.query.state;
        let (counts, first_kept, all_kept_from) = match measure {
            Measure::Type(t) => {
                let first_kept = state.retention.first_kept(t, self.now);
                (Counts::Type, first_kept, first_kept)
            }
            // A derived indicator counts every type: it is purged from the
            // month the type kept longest is, and whole from the month the
            // type kept shortest is.
            Measure::Derived(_) => {
                let first_kept = self.query.first_kept_of_all(self.now);
                let all_kept_from = state
                    .catalogue
                    .types()
                    .iter()
                    .map(|t| state.retention.first_kept(&t.name, self.now))
                    .max()
                    .unwrap_or(first_kept);
                (Counts::Derived, first_kept, all_kept_from)
            }
        };
        Lifecycle {
            table: &self.table,
            policy: &state.policy,
            counts,
            now: self.now,
            closed_before: self.closed_before,
            max_versions: state.max_versions,
            first_kept,
            all_kept_from,
        }
    }

    /// How the store names a measure; `None` for a signal type of which
    /// no signal was ever stored.
    fn stored_measure(&self, measure: Measure<'_>) -> Option<wijkradar_store::Measure> {
        match measure {
            Measure::Type(t) => self
                .query
                .state
                .store
                .type_id(t)
                .map(wijkradar_store::Measure::Type),
            Measure::Derived(d) => {
                let index = Derived::ALL.iter().position(|&x| x == d).expect("listed");
                Some(wijkradar_store::Measure::Derived(index as u8))
            }
        }
    }

    /// Stored cells with their areas, in node order.
    fn cells_of(&self, cells: &[Option<u64>]) -> Vec<(AreaCode, Released)> {
        let codes = self.table.codes().iter().copied();
        codes
            .zip(cells.iter().copied().map(Released::stored))
            .collect()
    }

    /// The true totals per buurt: a (type, month) table's from the counts
    /// kept at write time; every other one's from the households, each
    /// counted once in the buurt of its latest month that counts.
    pub(crate) fn totals(
        &self,
        measure: Measure<'_>,
        period: Period,
    ) -> Result<Vec<(BuurtCode, CellTotal)>, ApiError> {
        let state = &self.query.state;
        if let (Measure::Type(t), 1) = (measure, period.len()) {
            return Ok(state.store.buurt_counts(t, period.first(), self.gemeente)?);
        }
        // A derived indicator looks back over its window.
        let households = match measure {
            Measure::Type(_) => self.households(period.first(), period.last())?,
            Measure::Derived(_) => {
                let from = period.first().plus(-(derived::WINDOW_MONTHS as i32));
                self.linked(from, period.last())?
            }
        };
        let keyed = households.iter().map(|(k, s)| (*k, s.as_slice()));
        let months: Vec<Month> = period.months().collect();
        let totals = match measure {
            Measure::Type(t) => {
                let id = state.store.type_id(t).unwrap_or(u16::MAX);
                derived::period_totals(keyed, &months, derived::of_type(id))
            }
            Measure::Derived(d) => {
                let joins = state.joins();
                derived::period_totals(keyed, &months, |s: &[HouseholdSignal], m| {
                    derived::counts_in(d, s, m, &joins)
                })
            }
        };
        Ok(totals.into_iter().collect())
    }

    /// The gemeente's households with their record keys and their signals
    /// of at least the months `from..=to` (and of `household_months`, read
    /// at the same time, in place of what was read before): every count
    /// here looks only at months it names, so more months change nothing.
    pub(crate) fn households(&self, from: Month, to: Month) -> Result<Households, ApiError> {
        Ok(self.read(from, to)?.0)
    }

    /// [`Tables::households`] with each person's signals joined to its
    /// household's, where the partner sent the household's pseudonym: what
    /// the derived indicators count.
    pub(crate) fn linked(&self, from: Month, to: Month) -> Result<Households, ApiError> {
        Ok(self.read(from, to)?.1)
    }

    fn read(&self, from: Month, to: Month) -> Result<(Households, Households), ApiError> {
        if let Some(read) = self.households.borrow().as_ref()
            && read.from <= from
            && to <= read.to
        {
            return Ok((read.households.clone(), read.linked.clone()));
        }
        // What was read before goes: memory holds one range at a time.
        let (mut from, mut to) = (from, to);
        if let Some((a, b)) = self.household_months.get() {
            (from, to) = (from.min(a), to.max(b));
        }
        let state = &self.query.state;
        let read = state.store.signals_between(self.gemeente, from, to)?;
        // A household's identity before a key change, where the overlap
        // sent it: its signals under both keys are one household's.
        let oldest = |p: &ServerPseudonym| {
            let mut p = *p;
            // A chain of key changes, at most one per epoch.
            for _ in 0..32 {
                match read.previous.get(&p) {
                    Some(q) if *q != p => p = *q,
                    _ => break,
                }
            }
            p
        };
        let own = if read.previous.is_empty() {
            read.grouped
        } else {
            regroup(read.grouped.iter().map(|(p, s)| (oldest(p), s)))
        };
        let joined = if read.households.is_empty() {
            Vec::new()
        } else {
            regroup(own.iter().map(|(p, signals)| {
                let household = read.households.get(p).map_or(*p, oldest);
                (household, signals)
            }))
        };
        let keyed = |groups: Vec<(ServerPseudonym, Vec<HouseholdSignal>)>| {
            std::rc::Rc::new(
                groups
                    .into_iter()
                    .map(|(p, signals)| (state.server_key.record_key(&p), signals))
                    .collect::<Vec<_>>(),
            )
        };
        let households = keyed(own);
        let linked = if joined.is_empty() {
            households.clone()
        } else {
            keyed(joined)
        };
        *self.households.borrow_mut() = Some(HouseholdsRead {
            from,
            to,
            households: households.clone(),
            linked: linked.clone(),
        });
        Ok((households, linked))
    }
}

/// The operating system's random generator, for the open-data noise.
struct SystemEntropy(ring::rand::SystemRandom);

impl Default for SystemEntropy {
    fn default() -> SystemEntropy {
        SystemEntropy(ring::rand::SystemRandom::new())
    }
}

impl wijkradar_release::open::Entropy for SystemEntropy {
    fn next_u64(&mut self) -> u64 {
        let mut word = [0u8; 8];
        ring::rand::SecureRandom::fill(&self.0, &mut word).expect("the system's random generator");
        u64::from_be_bytes(word)
    }
}

/// Signals regrouped under new keys; each group's signals in time order.
fn regroup<'s>(
    groups: impl Iterator<Item = (ServerPseudonym, &'s Vec<HouseholdSignal>)>,
) -> Vec<(ServerPseudonym, Vec<HouseholdSignal>)> {
    let mut joined: HashMap<ServerPseudonym, Vec<HouseholdSignal>> = HashMap::new();
    for (p, signals) in groups {
        joined.entry(p).or_default().extend(signals);
    }
    let mut out: Vec<_> = joined.into_iter().collect();
    out.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (_, signals) in &mut out {
        signals.sort_unstable_by_key(|s| (s.month, s.signal_type));
    }
    out
}

/// Where a gemeente's pseudonymisation keys change: the signals stored
/// under each partner key, per (type id, month).
#[derive(Debug, Default)]
struct Epochs {
    by_month: BTreeMap<Month, Vec<(u16, PseudonymKeyId, UnderKey)>>,
    /// Each key's first month in the gemeente: the older key of a change.
    first_month: HashMap<PseudonymKeyId, Month>,
}

impl Epochs {
    fn new(records: Vec<(u16, Month, PseudonymKeyId, UnderKey)>) -> Epochs {
        let mut epochs = Epochs::default();
        for (type_id, month, key, under) in records {
            let first = epochs.first_month.entry(key.clone()).or_insert(month);
            *first = (*first).min(month);
            epochs
                .by_month
                .entry(month)
                .or_default()
                .push((type_id, key, under));
        }
        epochs
    }

    /// Whether months `from..=to` of type `only` (else of every type) span
    /// a key change that was not linked. A change is linked when every
    /// signal there under the later key came with its household's
    /// identity under the earlier one; for a type counted per person
    /// (`per_person`) it never is. Keys of different domains never link
    /// and do not count as a change.
    fn unlinked(&self, from: Month, to: Month, only: Option<u16>, per_person: bool) -> bool {
        if self.first_month.len() < 2 || from > to {
            return false;
        }
        let mut per_domain: HashMap<&str, Vec<(&PseudonymKeyId, UnderKey)>> = HashMap::new();
        for records in self.by_month.range(from..=to).map(|(_, r)| r) {
            for (type_id, key, under) in records {
                if only.is_none_or(|t| t == *type_id) {
                    per_domain
                        .entry(key.domain())
                        .or_default()
                        .push((key, *under));
                }
            }
        }
        per_domain.values().any(|records| {
            let oldest = records
                .iter()
                .map(|(k, _)| *k)
                .min_by(|a, b| (self.first_month[*a], *a).cmp(&(self.first_month[*b], *b)));
            let Some(oldest) = oldest else {
                return false;
            };
            let later: Vec<&UnderKey> = records
                .iter()
                .filter(|(k, _)| *k != oldest)
                .map(|(_, u)| u)
                .collect();
            !later.is_empty() && (per_person || later.iter().any(|u| u.linked < u.signals))
        })
    }
}

/// How the store names gemeente `g`'s table of `measure` over `period`.
fn table_ref(g: GemeenteCode, measure: wijkradar_store::Measure, period: Period) -> TableRef {
    TableRef {
        gemeente: g,
        measure,
        months: period.len() as u8,
        first: period.first(),
    }
}

/// One measure's releases of one gemeente, as the store and the audit log
/// keep them.
struct StoredReleases<'t, 'q> {
    tables: &'t Tables<'q>,
    measure: Measure<'t>,
    stored: wijkradar_store::Measure,
}

impl StoredReleases<'_, '_> {
    fn key(&self, period: Period) -> TableRef {
        table_ref(self.tables.gemeente, self.stored, period)
    }
}

impl Releases for StoredReleases<'_, '_> {
    type Error = ApiError;

    fn stored(&self, period: Period) -> Result<Option<Arc<Snapshot>>, ApiError> {
        let state = &self.tables.query.state;
        state.releases.get(&state.store, &self.key(period))
    }

    /// The sum of the change counts of the (type, month) tables it counts
    /// from: a derived indicator's households count by their signals of
    /// every type over the window before each month.
    fn state(&self, period: Period) -> u64 {
        let states = &self.tables.states;
        match self.stored {
            wijkradar_store::Measure::Type(id) => period
                .months()
                .map(|m| states.get(&(id, m)).copied().unwrap_or(0))
                .sum(),
            wijkradar_store::Measure::Derived(_) => {
                let from = period.first().plus(-(derived::WINDOW_MONTHS as i32));
                states
                    .iter()
                    .filter(|((_, m), _)| *m >= from && *m <= period.last())
                    .map(|(_, c)| c)
                    .sum()
            }
        }
    }

    fn totals(&self, period: Period) -> Result<Vec<(BuurtCode, CellTotal)>, ApiError> {
        self.tables.totals(self.measure, period)
    }

    fn store(
        &self,
        period: Period,
        previous: Option<&Snapshot>,
        new: NewRelease,
    ) -> Result<Arc<Snapshot>, ApiError> {
        let tables = self.tables;
        let state = &tables.query.state;
        let key = self.key(period);
        let snapshot =
            state
                .store
                .store_release_snapshot(&key, previous, new.snapshot, tables.durable)?;
        let stored = state.releases.put(key, snapshot);
        tracing::debug!(gemeente = %tables.gemeente, measure = self.measure.name(), %period, version = stored.version, "release materialised");
        let audited_with = new
            .audited_with
            .iter()
            .map(|n| match n.stale {
                true => format!("{n}{}", wijkradar_audit::STALE),
                false => n.to_string(),
            })
            .collect();
        state.audit.record(
            "aggregator",
            wijkradar_audit::Event::Release {
                gemeente: tables.gemeente.to_string(),
                signal_type: self.measure.name().to_owned(),
                month: period.to_string(),
                version: stored.version,
                audited_with,
            },
            tables.durable,
        );
        tables.new_versions.set(tables.new_versions.get() + 1);
        state.metrics.release(new.took);
        Ok(stored)
    }
}
