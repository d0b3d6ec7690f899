//! A table's lifecycle: when a period may be released, when a new version
//! is made, and which earlier releases its audit takes in.
//!
//! A release is materialised once and read back from then on. Its state is
//! what the signals it counts looked like when it was made (the server sums
//! change counts). A later state makes a new version, up to a cap; after
//! that the last version stays. A period is pending until it has ended and
//! its late signals have had time to come in ("closed"), and purged once
//! part of it is past retention: a partial count would read as a fall.
//!
//! The audit of a new release is tied to what was released before (see
//! [`crate::linked`]): a period's parts (a quarter's months, a year's
//! quarters with their months, a window's months), every earlier version
//! of the table, and every earlier version of its parts.
//!
//! The code here is plain: the caller reads and writes through
//! [`Releases`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wijkradar_domain::{BuurtCode, CellTotal, Month, derived};

use crate::{GemeenteTable, Link, Period, PeriodKind, ReleasePolicy, Released};

/// One stored version of a table: its released cells in the table's node
/// order (`None` where suppressed), the cells of every version before it,
/// oldest first, and the state of the signals it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u32,
    pub state: u64,
    pub cells: Vec<Option<u64>>,
    pub earlier: Vec<Vec<Option<u64>>>,
}

impl Snapshot {
    /// This version's cells as the audit reads them.
    pub fn released(&self) -> Vec<Released> {
        released(&self.cells)
    }
}

/// What a table counts, as far as its lifecycle goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// Households with a signal of one type. A (type, month) table only
    /// gains households, per cell.
    Type,
    /// A derived indicator: it looks back over a window of months before
    /// each month, and a late signal can move a household between buurten.
    Derived,
}

impl Counts {
    /// Months before a period that its count looks at.
    fn looks_back(self) -> i32 {
        match self {
            Counts::Type => 0,
            Counts::Derived => derived::WINDOW_MONTHS as i32,
        }
    }
}

/// Why a period has no release (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReleased {
    /// Part of it is past retention.
    Purged,
    /// It has not ended, or not closed and nothing was released before.
    Pending,
}

/// A release, and whether it counts the signals stored now (not when an
/// earlier version is kept by the version cap or while the period closes).
#[derive(Debug, Clone)]
pub struct Release {
    pub snapshot: Arc<Snapshot>,
    pub current: bool,
}

impl Release {
    pub fn version(&self) -> u32 {
        self.snapshot.version
    }
}

/// A release the audit of a new one took in, as the audit log names it:
/// `2024-01 v1`; `stale` when it was made before the last signals came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named {
    pub period: Period,
    pub version: u32,
    pub stale: bool,
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.period, self.version)
    }
}

/// A new version, to be stored.
#[derive(Debug)]
pub struct NewRelease {
    pub snapshot: Snapshot,
    /// The releases its audit took in.
    pub audited_with: Vec<Named>,
    /// How long counting and auditing it took.
    pub took: Duration,
}

/// Where one measure's releases of one gemeente are read and written.
pub trait Releases {
    type Error;

    /// The stored release of `period`, if any.
    fn stored(&self, period: Period) -> Result<Option<Arc<Snapshot>>, Self::Error>;

    /// The state of the signals `period` counts now.
    fn state(&self, period: Period) -> u64;

    /// The true totals per buurt over `period`.
    fn totals(&self, period: Period) -> Result<Vec<(BuurtCode, CellTotal)>, Self::Error>;

    /// Stores `new` in place of `previous` and returns what is stored.
    fn store(
        &self,
        period: Period,
        previous: Option<&Snapshot>,
        new: NewRelease,
    ) -> Result<Arc<Snapshot>, Self::Error>;
}

/// The rules one measure of one gemeente is released by.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle<'a> {
    pub table: &'a GemeenteTable,
    pub policy: &'a ReleasePolicy,
    pub counts: Counts,
    /// The current month: a period ending in it or later is pending.
    pub now: Month,
    /// Periods ending before this month may get a new release; a later one
    /// shows what was released before, or is pending.
    pub closed_before: Month,
    pub max_versions: u32,
    /// The first month retention keeps of what it counts: a period that
    /// starts before it is purged.
    pub first_kept: Month,
    /// The first month from which everything it counts is still kept. A
    /// table that looks back before it may have lost households, and the
    /// relations that rest on gaining hold no longer.
    pub all_kept_from: Month,
}

impl Lifecycle<'_> {
    /// Whether `period` can have a release at all now.
    pub fn status(&self, period: Period) -> Result<(), NotReleased> {
        if period.first() < self.first_kept {
            return Err(NotReleased::Purged);
        }
        if period.last() >= self.now {
            return Err(NotReleased::Pending);
        }
        Ok(())
    }

    /// The release of `period`: the stored one while it still holds, else
    /// a new version, made, audited and stored here.
    pub fn release<R: Releases>(
        &self,
        releases: &R,
        period: Period,
    ) -> Result<Result<Release, NotReleased>, R::Error> {
        if let Err(not) = self.status(period) {
            return Ok(Err(not));
        }
        let state = releases.state(period);
        let previous = releases.stored(period)?;
        // A stored release of another shape (the CBS areas changed) is
        // only a version number.
        let fitting = previous.as_ref().filter(|s| self.fits(s));
        if let Some(s) = fitting
            && (s.state == state
                || s.version >= self.max_versions
                || period.last() >= self.closed_before)
        {
            return Ok(Ok(Release {
                snapshot: s.clone(),
                current: s.state == state,
            }));
        }
        // Ended, but not closed yet: late exports may still come in, and a
        // version spent on half a month would stay.
        if period.last() >= self.closed_before {
            return Ok(Err(NotReleased::Pending));
        }
        let started = Instant::now();
        let totals = releases.totals(period)?;
        // Households only come in, except when retention erases a month.
        let only_gains = self.all_kept_from <= period.first().plus(-self.counts.looks_back());
        let (mut links, mut audited_with) = self.parts_links(releases, period, only_gains)?;
        // Every version released before, oldest first: an analyst may hold
        // them all, and the first can narrow the last through the ones
        // between.
        let earlier: Vec<Vec<Option<u64>>> = fitting
            .map(|s| s.earlier.iter().chain([&s.cells]).cloned().collect())
            .unwrap_or_default();
        if let Some(s) = fitting.filter(|_| only_gains) {
            let (link, names) = self.earlier_versions(period, 0, s.version + 1, &earlier);
            links.push(link);
            audited_with.extend(names);
        }
        let released = self.table.release(self.policy, &totals, &links);
        let snapshot = Snapshot {
            version: previous.as_ref().map_or(1, |s| s.version + 1),
            state,
            cells: released
                .iter()
                .map(|(_, r)| match r {
                    Released::Value(v) => Some(*v),
                    Released::Suppressed => None,
                })
                .collect(),
            earlier,
        };
        let new = NewRelease {
            snapshot,
            audited_with,
            took: started.elapsed(),
        };
        let stored = releases.store(period, previous.as_deref(), new)?;
        Ok(Ok(Release {
            current: stored.state == state,
            snapshot: stored,
        }))
    }

    fn fits(&self, s: &Snapshot) -> bool {
        s.cells.len() == self.table.codes().len()
    }

    /// The links of a period to its parts and their earlier versions, with
    /// their names; none when a part is not released.
    fn parts_links<R: Releases>(
        &self,
        releases: &R,
        period: Period,
        only_gains: bool,
    ) -> Result<(Vec<Link>, Vec<Named>), R::Error> {
        let parts = period.parts();
        if parts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let Parts {
            cells,
            mut names,
            current,
        } = self.parts_of(releases, &parts)?;
        if cells.len() < parts.len() {
            return Ok((Vec::new(), Vec::new()));
        }
        // The linked tables by the number the audit gives them (this table
        // is 0), for their earlier versions.
        let mut linked: Vec<(Period, usize)> = parts.iter().copied().zip(1..).collect();
        let link = if current && period.kind() == PeriodKind::Year {
            // A year is audited with its quarters and their months in one
            // system: together they can narrow a cell that neither the year
            // with its quarters nor a quarter with its months narrows. A
            // quarter with a month kept at its version cap gets none of its
            // months (their sum no longer bounds it).
            let mut theirs = Vec::with_capacity(parts.len());
            // The audit numbers the months after the quarters.
            let mut next = 1 + parts.len();
            for quarter in &parts {
                let months = quarter.parts();
                let of_quarter = self.parts_of(releases, &months)?;
                if of_quarter.cells.len() == months.len() && of_quarter.current {
                    linked.extend(months.iter().copied().zip(next..));
                    next += months.len();
                    names.extend(of_quarter.names);
                    theirs.push(of_quarter.cells);
                } else {
                    theirs.push(Vec::new());
                }
            }
            Link::NestedParts {
                parts: cells,
                theirs,
            }
        } else if current {
            Link::Parts(cells)
        } else if only_gains {
            // A part kept at its version cap counts fewer households than
            // it holds now. Per cell only a (type, month) table only gains
            // (in a quarter a late signal can move one).
            for n in &mut names {
                n.stale = true;
            }
            Link::StaleParts {
                parts: cells,
                per_cell: self.counts == Counts::Type && parts[0].len() == 1,
            }
        } else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut links = vec![link];
        // Each part's earlier versions count at most what it counts, stale
        // or not: a part's first version can narrow the period through the
        // part's current one.
        for (part, of) in linked {
            let Some(s) = releases.stored(part)? else {
                continue;
            };
            // Every version stored with a table has its cells.
            if !self.fits(&s)
                || s.earlier.is_empty()
                || s.earlier.iter().any(|e| e.len() != s.cells.len())
            {
                continue;
            }
            let (link, more) = self.earlier_versions(part, of, s.version, &s.earlier);
            links.push(link);
            names.extend(more);
        }
        Ok((links, names))
    }

    /// The released parts of a period, in time order (only those released).
    fn parts_of<R: Releases>(&self, releases: &R, parts: &[Period]) -> Result<Parts, R::Error> {
        let mut out = Parts {
            cells: Vec::with_capacity(parts.len()),
            names: Vec::with_capacity(parts.len()),
            current: true,
        };
        for &part in parts {
            if let Ok(r) = self.release(releases, part)? {
                out.cells.push(r.snapshot.released());
                out.names.push(Named {
                    period: part,
                    version: r.version(),
                    stale: false,
                });
                out.current &= r.current;
            }
        }
        Ok(out)
    }

    /// The link of table `of` (over `period`, now at `version`) to the cells
    /// of its earlier versions, oldest first, and their names.
    fn earlier_versions(
        &self,
        period: Period,
        of: usize,
        version: u32,
        earlier: &[Vec<Option<u64>>],
    ) -> (Link, Vec<Named>) {
        let link = Link::EarlierVersions {
            of,
            versions: earlier.iter().map(|e| released(e)).collect(),
            // A (type, month) table only gains households: each cell of a
            // version is at least its truth in the one before. Elsewhere a
            // late signal can move a household to another buurt: only the
            // whole gemeente only gains.
            per_cell: self.counts == Counts::Type && period.len() == 1,
        };
        // Stored before earlier versions were kept, a snapshot has only its
        // own: the versions known are the last ones.
        let oldest = version.saturating_sub(earlier.len() as u32).max(1);
        let names = (oldest..version)
            .map(|version| Named {
                period,
                version,
                stale: false,
            })
            .collect();
        (link, names)
    }
}

/// The released parts of a period: their cells, their names, and whether
/// all of them count the signals stored now.
struct Parts {
    cells: Vec<Vec<Released>>,
    names: Vec<Named>,
    current: bool,
}

/// Stored cells as the audit reads them.
fn released(cells: &[Option<u64>]) -> Vec<Released> {
    cells.iter().copied().map(Released::stored).collect()
}

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod tests;
