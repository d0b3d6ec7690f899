//! Materialised, versioned releases of one gemeente's tables (docs/privacy.md
//! "What leaves the aggregator", points 5 and 6): every measure (a signal type or a derived
//! indicator) over every period (month, quarter, year) is computed once,
//! audited, stored with its version and the state it was computed from, and
//! read back from then on. A table's state is the sum of the change counts
//! of the (type, month) tables it counts from, which the writer bumps in the
//! same atomic batch as the signals: a late signal changes it, and the next
//! release stores a new version, up to `max_versions`, after which the last
//! version stays.
//!
//! The audit of a new release takes in what was released before: a
//! quarter's cells are tied to its months' released cells, a year's to its
//! quarters' and their months', and a new version's to every version
//! before (see `wijkradar_release::linked`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use wijkradar_domain::derived::{self, Derived, HouseholdSignal};
use wijkradar_domain::{
    AreaCode, BuurtCode, CellTotal, GemeenteCode, Month, ServerPseudonym, SignalTypeName,
};
use wijkradar_proto::v1 as pb;
use wijkradar_release::{GemeenteTable, Link, Released};
use wijkradar_store::{ReleaseSnapshot, Store, TableRef};

use crate::convert::Period;
use crate::error::ApiError;
use crate::query::{Query, VersionedRelease};

/// Materialised releases read or stored since the server started, so that
/// answering a table reads each release from sled once, not per query.
/// Only this process writes releases; a purge clears it.
#[derive(Debug, Default)]
pub(crate) struct ReleaseCache {
    map: RwLock<HashMap<TableRef, Arc<ReleaseSnapshot>>>,
}

/// Releases kept in memory at most (each a few bytes per area); past this
/// the cache starts afresh.
const CACHED_RELEASES: usize = 400_000;

impl ReleaseCache {
    fn get(&self, store: &Store, key: &TableRef) -> Result<Option<Arc<ReleaseSnapshot>>, ApiError> {
        if let Some(s) = self.map.read().expect("release cache lock").get(key) {
            return Ok(Some(s.clone()));
        }
        Ok(store.release_snapshot(key)?.map(|s| self.put(*key, s)))
    }

    fn put(&self, key: TableRef, s: ReleaseSnapshot) -> Arc<ReleaseSnapshot> {
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
            households: RefCell::new(None),
            household_months: Cell::new(None),
            durable,
            new_versions: Cell::new(0),
        })
    }

    /// The release of `measure` over the period of `months` (consecutive: a
    /// month, quarter or year, or an alert's window of 2, 3 or 6 months
    /// ending anywhere, tied to its months like a quarter): pending until the period has ended, purged
    /// when part of it is past retention (a partial count would read as a
    /// fall), else the materialised release, made or renewed here when
    /// needed.
    pub(crate) fn release(
        &self,
        measure: Measure<'_>,
        months: &[Month],
    ) -> Result<Result<VersionedRelease, pb::CellStatus>, ApiError> {
        Ok(self.release_tracked(measure, months)?.map(|(r, _)| r))
    }

    /// [`Tables::release`], and whether the release counts the signals
    /// stored now (not when it is an earlier version kept by the version cap
    /// or the waiting days).
    fn release_tracked(
        &self,
        measure: Measure<'_>,
        months: &[Month],
    ) -> Result<Result<(VersionedRelease, bool), pb::CellStatus>, ApiError> {
        let state = &self.query.state;
        let (first, last) = (months[0], months[months.len() - 1]);
        let first_kept = match measure {
            Measure::Type(t) => state.retention.first_kept(t, self.now),
            // A derived indicator counts every type: it is purged from the
            // month the type kept longest is.
            Measure::Derived(_) => self.query.first_kept_of_all(self.now),
        };
        if first < first_kept {
            return Ok(Err(pb::CellStatus::Purged));
        }
        if last >= self.now {
            return Ok(Err(pb::CellStatus::Pending));
        }
        let Some(stored_measure) = self.stored_measure(measure) else {
            // No signal of this type was ever stored: nothing to keep.
            return Ok(Ok(((1, self.table.release(&state.policy, &[], &[])), true)));
        };
        let state_of: u64 = match stored_measure {
            wijkradar_store::Measure::Type(id) => months
                .iter()
                .map(|&m| self.states.get(&(id, m)).copied().unwrap_or(0))
                .sum(),
            // Its households count by their signals of every type over the
            // window before each month.
            wijkradar_store::Measure::Derived(_) => {
                let from = first.plus(-(derived::WINDOW_MONTHS as i32));
                self.states
                    .iter()
                    .filter(|((_, m), _)| *m >= from && *m <= last)
                    .map(|(_, c)| c)
                    .sum()
            }
        };
        let key = TableRef {
            gemeente: self.gemeente,
            measure: stored_measure,
            months: months.len() as u8,
            first,
        };
        let previous = state.releases.get(&state.store, &key)?;
        let fits = |s: &ReleaseSnapshot| s.cells.len() == self.table.codes().len();
        if let Some(s) = previous.as_ref().filter(|s| fits(s))
            && (s.state == state_of
                || s.version >= state.max_versions
                || last >= self.closed_before)
        {
            return Ok(Ok(((s.version, self.cells_of(s)), s.state == state_of)));
        }
        // Ended, but not closed yet: late exports may still come in, and a
        // version spent on half a month would stay.
        if last >= self.closed_before {
            return Ok(Err(pb::CellStatus::Pending));
        }
        let started = std::time::Instant::now();
        let totals = self.totals(measure, months)?;
        // Households only come in, except when retention erases a month: a
        // derived table whose window reaches an erased month may have lost
        // some, and the relations that rest on gaining hold no longer.
        let only_gains = match measure {
            Measure::Type(_) => true,
            Measure::Derived(_) => {
                let window_start = first.plus(-(derived::WINDOW_MONTHS as i32));
                state
                    .catalogue
                    .types()
                    .iter()
                    .all(|t| state.retention.first_kept(&t.name, self.now) <= window_start)
            }
        };
        // What was released before and is tied to this table: the parts of
        // a longer period, and the earlier versions.
        let mut links = Vec::new();
        // The same, named for the audit log: `2024-01 v1`.
        let mut audited_with = Vec::new();
        if months.len() > 1 {
            // A quarter is tied to its months, a year to its quarters (each
            // quarter was audited against its months).
            let length = if months.len() == 12 { 3 } else { 1 };
            let Parts {
                cells: parts,
                mut names,
                current,
            } = self.parts_of(measure, months, length)?;
            // Every part of an ended, kept period is released.
            if parts.len() == months.len() / length {
                // The linked tables by the number the audit gives them (this
                // table is 0), for their earlier versions.
                let mut linked: Vec<(&[Month], usize)> = months.chunks(length).zip(1..).collect();
                if current && length == 3 {
                    // A year is audited with its quarters and their months
                    // in one system: together they can narrow a cell that
                    // neither the year with its quarters nor a quarter with
                    // its months narrows. A quarter with a month kept at its
                    // version cap gets none of its months (their sum no
                    // longer bounds it).
                    let mut theirs = Vec::with_capacity(parts.len());
                    // The audit numbers the months after the quarters.
                    let mut next = 1 + parts.len();
                    for quarter in months.chunks(3) {
                        let months = self.parts_of(measure, quarter, 1)?;
                        if months.cells.len() == 3 && months.current {
                            linked.extend(quarter.chunks(1).zip(next..));
                            next += 3;
                            names.extend(months.names);
                            theirs.push(months.cells);
                        } else {
                            theirs.push(Vec::new());
                        }
                    }
                    links.push(Link::NestedParts { parts, theirs });
                    audited_with = names;
                } else if current {
                    links.push(Link::Parts(parts));
                    audited_with = names;
                } else if only_gains {
                    // A part kept at its version cap counts fewer households
                    // than it holds now. Per cell only a (type, month) table
                    // only gains (in a quarter a late signal can move one).
                    links.push(Link::StaleParts {
                        parts,
                        per_cell: matches!(measure, Measure::Type(_)) && length == 1,
                    });
                    audited_with = names
                        .into_iter()
                        .map(|n| n + wijkradar_audit::STALE)
                        .collect();
                }
                // Each part's earlier versions count at most what it counts,
                // stale or not.
                if !links.is_empty() {
                    self.link_earlier_versions(measure, &linked, &mut links, &mut audited_with)?;
                }
            }
        }
        // Every version released before, oldest first: an analyst may hold
        // them all, and the first can narrow the last through the ones
        // between.
        let earlier: Vec<Vec<Option<u64>>> = previous
            .as_ref()
            .filter(|s| fits(s))
            .map(|s| s.earlier.iter().chain([&s.cells]).cloned().collect())
            .unwrap_or_default();
        if let Some(s) = previous.as_ref().filter(|s| fits(s) && only_gains) {
            let (link, names) = earlier_versions(measure, months, 0, s.version + 1, &earlier);
            links.push(link);
            audited_with.extend(names);
        }
        let released = self.table.release(&state.policy, &totals, &links);
        let snapshot = ReleaseSnapshot {
            version: previous.as_ref().map_or(1, |s| s.version + 1),
            state: state_of,
            cells: released
                .iter()
                .map(|(_, r)| match r {
                    Released::Value(v) => Some(*v),
                    Released::Suppressed => None,
                })
                .collect(),
            earlier,
        };
        let stored = state.releases.put(
            key,
            state.store.store_release_snapshot(
                &key,
                previous.as_deref(),
                snapshot,
                self.durable,
            )?,
        );
        let period = Period::label_of(months);
        tracing::debug!(gemeente = %self.gemeente, measure = measure.name(), %period, version = stored.version, "release materialised");
        state.audit.record(
            "aggregator",
            wijkradar_audit::Event::Release {
                gemeente: self.gemeente.to_string(),
                signal_type: measure.name().to_owned(),
                month: period,
                version: stored.version,
                audited_with,
            },
            self.durable,
        );
        self.new_versions.set(self.new_versions.get() + 1);
        state.metrics.release(started.elapsed());
        Ok(Ok((
            (stored.version, self.cells_of(&stored)),
            stored.state == state_of,
        )))
    }

    /// Ties each of the `linked` tables (a period's parts, current, each
    /// with the number the audit gives it) to its earlier versions, and
    /// names them for the audit log: a part's first version can narrow the
    /// period through the part's current one.
    fn link_earlier_versions(
        &self,
        measure: Measure<'_>,
        linked: &[(&[Month], usize)],
        links: &mut Vec<Link>,
        audited_with: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let state = &self.query.state;
        let Some(stored_measure) = self.stored_measure(measure) else {
            return Ok(());
        };
        let cells = self.table.codes().len();
        for &(part, of) in linked {
            let key = TableRef {
                gemeente: self.gemeente,
                measure: stored_measure,
                months: part.len() as u8,
                first: part[0],
            };
            let Some(s) = state.releases.get(&state.store, &key)? else {
                continue;
            };
            // Every version stored with a table has its cells.
            if s.earlier.is_empty() || s.earlier.iter().any(|e| e.len() != cells) {
                continue;
            }
            let (link, names) = earlier_versions(measure, part, of, s.version, &s.earlier);
            links.push(link);
            audited_with.extend(names);
        }
        Ok(())
    }

    /// The released parts of the period of `months`, `length` months each,
    /// in time order (only those released).
    fn parts_of(
        &self,
        measure: Measure<'_>,
        months: &[Month],
        length: usize,
    ) -> Result<Parts, ApiError> {
        let mut parts = Vec::with_capacity(months.len() / length);
        let mut names = Vec::with_capacity(months.len() / length);
        let mut current = true;
        for part in months.chunks(length) {
            if let Ok(((version, cells), now)) = self.release_tracked(measure, part)? {
                parts.push(cells.into_iter().map(|(_, r)| r).collect());
                names.push(release_name(part, version));
                current &= now;
            }
        }
        Ok(Parts {
            cells: parts,
            names,
            current,
        })
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

    fn cells_of(&self, s: &ReleaseSnapshot) -> Vec<(AreaCode, Released)> {
        let codes = self.table.codes().iter().copied();
        codes.zip(released(&s.cells)).collect()
    }

    /// The true totals per buurt: a (type, month) table's from the counts
    /// kept at write time; every other one's from the households, each
    /// counted once in the buurt of its latest month that counts.
    pub(crate) fn totals(
        &self,
        measure: Measure<'_>,
        months: &[Month],
    ) -> Result<Vec<(BuurtCode, CellTotal)>, ApiError> {
        let state = &self.query.state;
        if let (Measure::Type(t), [month]) = (measure, months) {
            return Ok(state.store.buurt_counts(t, *month, self.gemeente)?);
        }
        // A derived indicator looks back over its window.
        let from = match measure {
            Measure::Type(_) => months[0],
            Measure::Derived(_) => months[0].plus(-(derived::WINDOW_MONTHS as i32)),
        };
        let to = months[months.len() - 1];
        let households = match measure {
            Measure::Type(_) => self.households(from, to)?,
            Measure::Derived(_) => self.linked(from, to)?,
        };
        let keyed = households.iter().map(|(k, s)| (*k, s.as_slice()));
        let totals = match measure {
            Measure::Type(t) => {
                let id = state.store.type_id(t).unwrap_or(u16::MAX);
                derived::period_totals(keyed, months, derived::of_type(id))
            }
            Measure::Derived(d) => {
                let joins = state.joins();
                derived::period_totals(keyed, months, |s: &[HouseholdSignal], m| {
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
        let (own, links) = state.store.signals_between(self.gemeente, from, to)?;
        let mut joined: HashMap<ServerPseudonym, Vec<HouseholdSignal>> = HashMap::new();
        if !links.is_empty() {
            for (p, signals) in &own {
                let household = links.get(p).unwrap_or(p);
                joined.entry(*household).or_default().extend(signals);
            }
        }
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
            let mut groups: Vec<_> = joined.into_iter().collect();
            groups.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (_, signals) in &mut groups {
                signals.sort_unstable_by_key(|s| (s.month, s.signal_type));
            }
            keyed(groups)
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

/// The released parts of a period: their cells, their names for the audit
/// log, and whether all of them count the signals stored now.
struct Parts {
    cells: Vec<Vec<Released>>,
    names: Vec<String>,
    current: bool,
}

/// The link of table `of` (over `months`, now at `version`) to the cells of
/// its earlier versions, oldest first, and their names for the audit log.
fn earlier_versions(
    measure: Measure<'_>,
    months: &[Month],
    of: usize,
    version: u32,
    earlier: &[Vec<Option<u64>>],
) -> (Link, Vec<String>) {
    let link = Link::EarlierVersions {
        of,
        versions: earlier.iter().map(|e| released(e)).collect(),
        // A (type, month) table only gains households: each cell of a
        // version is at least its truth in the one before. Elsewhere a late
        // signal can move a household to another buurt: only the whole
        // gemeente only gains.
        per_cell: matches!(measure, Measure::Type(_)) && months.len() == 1,
    };
    // Stored before earlier versions were kept, a snapshot has only its
    // own: the versions known are the last ones.
    let oldest = version.saturating_sub(earlier.len() as u32).max(1);
    let names = (oldest..version).map(|v| release_name(months, v)).collect();
    (link, names)
}

/// Stored cells as the audit reads them.
fn released(cells: &[Option<u64>]) -> Vec<Released> {
    cells
        .iter()
        .map(|c| c.map_or(Released::Suppressed, Released::Value))
        .collect()
}

/// A release as the audit log names it: its period and version
/// (`2024-01 v1`, `2024-Q1 v2`).
fn release_name(months: &[Month], version: u32) -> String {
    format!("{} v{version}", Period::label_of(months))
}
