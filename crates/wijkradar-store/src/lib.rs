//! Durable storage of Wijkradar on redb.
//!
//! Everything lives in one redb table under one-byte key prefixes, so that a
//! whole batch (its signals, the counts it changes, its batch id) is written
//! in one transaction: after a crash a batch is either all there or absent.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `S` | gemeente (4) · type id (u16) · month (u32) · household tag (16) | buurt (8) · severity (1) · sealed server pseudonym (48) [· for a person, its household's sealed pseudonym (48)] [· `E` · the household's sealed pseudonym under the previous key epoch (48)] |
//! | `E` | gemeente (4) · type id (u16) · month (u32) · partner key id | signals stored under that key (u64) · of which linked to the previous epoch (u64) |
//! | `O` | as `R` | an open-data release: per cell in node order, 1 byte present · value (u64) |
//! | `L` | gemeente (4) · measure (u16) · year (u32) | the differential-privacy budget spent, in millionths of ε (u64) |
//! | `C` | type id (u16) · month (u32) · buurt (8) | distinct households (u64) · cell key (u32) |
//! | `B` | partner name length (u8) · partner name · batch id | content digest (32) |
//! | `T` | signal type name | type id (u16) |
//! | `K` | (none) | id of the server key the store was written with |
//! | `N` | (none) | number of stored signals (u64) |
//! | `V` | gemeente (4) · type id (u16) · month (u32) | changes to that table so far (u64) |
//! | `R` | gemeente (4) · measure (u16) · period length in months (u8) · first month (u32) | the materialised release: see [`Snapshot`] and [`TableRef`] |
//! | `P` | partner key id (domain · epoch · digest) | signals stored under that key (u64) |
//!
//! Integers are big-endian so keys sort in order; `C` keys of one gemeente are
//! one prefix range (type · month · 4 gemeente digits), and so are the `S`
//! records of one gemeente: what its derived indicators and period tables
//! read. A household is kept once per (gemeente, type, month).
//!
//! The server pseudonym is never stored in the clear: the household tag is an
//! HMAC of it under a secret of the (type, month), and the value holds it
//! sealed under that secret (see `shred.rs`). Retention erases a period by
//! removing its records and then its secret, which lives outside the store
//! file, so what its freed pages still hold of them cannot be read or linked.
//!
//! Files in the data directory: `store.redb` and `period-keys`. Formats 1
//! and 2 were sled stores in a directory `store/`; [`upgrade`] copies one
//! into redb.
//!
//! Queries read the store directly (the server keeps the releases it has read
//! in memory). The writer keeps a Bloom filter of stored
//! signal keys and the counts it has touched in memory, so that most writes
//! need no read first (see `writer.rs`).
//!
//! Architecture invariant: the store only ever sees server pseudonyms, never a
//! partner pseudonym. Only one writer thread writes; readers run concurrently.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod alert_status;
pub mod backup;
mod interventions;
mod kv;
mod legacy;
mod shred;
mod unaudited;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use wijkradar_domain::{
    BatchId, BuurtCode, CellTotal, GemeenteCode, Month, PseudonymKeyId, ServerPseudonym, Severity,
    SignalTypeName, derived::HouseholdSignal,
};
use wijkradar_release::Snapshot;

pub use alert_status::{AlertRef, AlertStatus, AlertStatusRecord};
pub use legacy::MOVED_ASIDE as SLED_MOVED_ASIDE;
pub use unaudited::Unaudited;
pub use writer::{IngestQueue, Outcome, Pending, Purged, WriterThread};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Engine(#[from] redb::Error),
    #[error("storage of an earlier Wijkradar (sled): {0}")]
    Sled(#[from] sled::Error),
    #[error("batch id `{0}` was stored earlier with other content")]
    BatchConflict(String),
    #[error(
        "the store was written with server key {stored}, not with the configured key {configured}"
    )]
    KeyMismatch { stored: String, configured: String },
    #[error("the store is unavailable after a failed write; restart the server")]
    Unavailable,
    #[error("that version was stored meanwhile")]
    VersionTaken,
    #[error(
        "the data directory has on-disk format {found}, newer than the {supported} this Wijkradar reads: run the version that wrote it, or restore a backup made with this one"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error(
        "the data directory has on-disk format {found}, older than the {supported} this Wijkradar writes: stop the server, make a backup, then run `wijkradar admin upgrade --data-dir <data_dir>`; an older Wijkradar will no longer read it"
    )]
    OlderFormat { found: u32, supported: u32 },
    #[error(
        "the data directory holds the sled store of an earlier Wijkradar (on-disk format 1 or 2): stop the server, make a backup, then run `wijkradar admin upgrade --data-dir <data_dir>` to copy it into this version's store"
    )]
    SledStore,
    #[error("the store holds a malformed record")]
    Corrupt,
    #[error("{path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("period keys {path}: {source}")]
    Keys {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("backup {path}: {source}")]
    Backup {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("backup: {0}")]
    BackupFormat(String),
}

/// One signal as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSignal {
    pub pseudonym: ServerPseudonym,
    pub buurt: BuurtCode,
    pub signal_type: SignalTypeName,
    pub month: Month,
    pub severity: Option<Severity>,
    /// The household's secret record key (cell-key perturbation); added to
    /// the cell's key, never stored on its own.
    pub record_key: u32,
    /// For a signal about a person: its household's server pseudonym,
    /// sealed beside the person's. The derived indicators link by it.
    pub household: Option<ServerPseudonym>,
    /// During a key change's overlap: the household's server pseudonym
    /// under the previous epoch's key (the household's, or for a person its
    /// household's). Links the household across the change.
    pub previous: Option<ServerPseudonym>,
}

/// A validated batch, ready to store.
#[derive(Debug, Clone)]
pub struct IncomingBatch {
    /// The partner's identity, from its certificate.
    pub partner: String,
    pub id: BatchId,
    /// The partner key the batch's pseudonyms were made with.
    pub key_id: PseudonymKeyId,
    /// A digest (SHA-256) over the batch's content as the partner sent it.
    pub digest: [u8; 32],
    pub signals: Vec<StoredSignal>,
}

const SIGNAL: u8 = b'S';
const COUNT: u8 = b'C';
const BATCH: u8 = b'B';
const TYPE: u8 = b'T';
const KEY_ID: &[u8] = b"K";
/// The on-disk format of the store: its key layout and record encodings.
const FORMAT_KEY: &[u8] = b"F";
/// The format this code reads and writes. A change of layout raises it,
/// with an explicit upgrade of older stores ([`upgrade`]).
///
/// - 1: the first recorded layout.
/// - 2: adds `E` records and the previous-epoch link in `S` values (key
///   changes). Format 1 records are format 2 records as they are.
/// - 3: the records in redb (`store.redb`) instead of sled (`store/`);
///   household tags of 16 bytes instead of 32 in `S` keys, and the seals'
///   nonces and associated data made from them ([`upgrade`] converts).
pub const FORMAT: u32 = 3;

/// The format of an open store: its record, or for a store without one,
/// 1 when it holds anything (written before formats were recorded) and
/// none when it is new.
fn format_of(db: &kv::Kv) -> Result<Option<u32>, StoreError> {
    match db.get(FORMAT_KEY)? {
        Some(v) => Ok(Some(u32::from_be_bytes(
            v.as_slice().try_into().map_err(|_| StoreError::Corrupt)?,
        ))),
        None if db
            .iter()
            .keys()
            .any(|k| k.is_ok_and(|k| k.as_slice() != KEY_ID)) =>
        {
            Ok(Some(1))
        }
        None => Ok(None),
    }
}

/// Refuses a store of another format with what to do; marks a new store
/// with this format.
fn check_format(db: &kv::Kv) -> Result<(), StoreError> {
    match format_of(db)? {
        Some(found) if found > FORMAT => Err(StoreError::NewerFormat {
            found,
            supported: FORMAT,
        }),
        Some(found) if found < FORMAT => Err(StoreError::OlderFormat {
            found,
            supported: FORMAT,
        }),
        Some(_) => Ok(()),
        None => write_format(db, FORMAT),
    }
}

fn write_format(db: &kv::Kv, format: u32) -> Result<(), StoreError> {
    db.write(true, |t| {
        t.insert(FORMAT_KEY, &format.to_be_bytes()[..])?;
        Ok(())
    })
}

/// Upgrades the store in data directory `dir` to this code's format, with
/// the server stopped and a backup made: an older Wijkradar then no longer
/// reads it. Returns the format it had. A sled store (formats 1 and 2) is
/// copied record by record into `store.redb` (`progress` is told the
/// records copied) and then moved aside to `store.sled-before-upgrade`; a
/// redb store of an older format (a restored backup of one) is converted
/// the same way into a new file that then replaces it.
pub fn upgrade(dir: &Path, progress: impl FnMut(u64)) -> Result<u32, StoreError> {
    let sled_dir = dir.join(SLED_DIR);
    if sled_dir.is_dir() {
        return legacy::copy_from_sled(dir, progress);
    }
    let path = dir.join(kv::FILE);
    if !path.is_file() {
        return Err(StoreError::File {
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no store here"),
        });
    }
    let db = kv::Kv::open(&path)?;
    let found = format_of(&db)?.unwrap_or(FORMAT);
    if found > FORMAT {
        return Err(StoreError::NewerFormat {
            found,
            supported: FORMAT,
        });
    }
    drop(db);
    if found < FORMAT {
        legacy::convert_in_place(dir, progress)?;
    }
    Ok(found)
}

/// Where formats 1 and 2 kept their sled store.
const SLED_DIR: &str = "store";

const SIGNAL_TOTAL: &[u8] = b"N";
const TABLE_STATE: u8 = b'V';
const RELEASE: u8 = b'R';
const PSEUDONYM_KEY: u8 = b'P';
/// Signals per (gemeente, type, month) and partner key id: where the key
/// epochs change, and whether the change was linked.
const EPOCH: u8 = b'E';
/// An open-data release (differential privacy): keyed like `R`.
const OPEN_RELEASE: u8 = b'O';
/// The differential-privacy budget spent per gemeente, measure and year.
const OPEN_BUDGET: u8 = b'L';

/// A u64 counter stored at `key`; 0 when it was never written.
fn read_counter(db: &kv::Kv, key: &[u8]) -> Result<u64, StoreError> {
    db.get(key)?.map_or(Ok(0), |v| decode_counter(&v))
}

fn decode_counter(v: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        v.try_into().map_err(|_| StoreError::Corrupt)?,
    ))
}

/// The gemeente, type id and month of a `V` key (see [`table_key`]).
fn table_of_state_key(k: &[u8]) -> Result<(GemeenteCode, u16, Month), StoreError> {
    let k: &[u8; 11] = k.try_into().map_err(|_| StoreError::Corrupt)?;
    let g = GemeenteCode::from_body(k[1..5].try_into().expect("4 of 11"))
        .map_err(|_| StoreError::Corrupt)?;
    let month = Month::from_index(u32::from_be_bytes(k[7..11].try_into().expect("4 of 11")))
        .ok_or(StoreError::Corrupt)?;
    Ok((g, u16::from_be_bytes([k[5], k[6]]), month))
}

/// The key of one table (gemeente × type × month) under `prefix`.
fn table_key(prefix: u8, g: &[u8; 4], type_id: u16, month: Month) -> [u8; 11] {
    let mut k = [0u8; 11];
    k[0] = prefix;
    k[1..5].copy_from_slice(g);
    k[5..7].copy_from_slice(&type_id.to_be_bytes());
    k[7..11].copy_from_slice(&month.index().to_be_bytes());
    k
}

/// What a table counts: households with a signal of a type (by the store's
/// type id), or a derived indicator (by its index in `Derived::ALL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    Type(u16),
    Derived(u8),
}

/// Derived indicators are kept above every type id.
const DERIVED_MEASURE: u16 = 0xff00;

impl Measure {
    fn encode(self) -> u16 {
        match self {
            Measure::Type(t) => t,
            Measure::Derived(d) => DERIVED_MEASURE | u16::from(d),
        }
    }

    fn decode(v: u16) -> Measure {
        if v >= DERIVED_MEASURE {
            Measure::Derived((v & 0xff) as u8)
        } else {
            Measure::Type(v)
        }
    }
}

/// One released table: a gemeente's cells of one measure over one period
/// (a month, a quarter or a year: `months` long from `first`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub gemeente: GemeenteCode,
    pub measure: Measure,
    pub months: u8,
    pub first: Month,
}

impl TableRef {
    fn key(&self) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[0] = RELEASE;
        k[1..5].copy_from_slice(self.gemeente.body());
        k[5..7].copy_from_slice(&self.measure.encode().to_be_bytes());
        k[7] = self.months;
        k[8..12].copy_from_slice(&self.first.index().to_be_bytes());
        k
    }

    /// The measure, length and first month of an `R` or `O` key.
    fn parse(k: &[u8]) -> Result<(Measure, u8, Month), StoreError> {
        if k.len() != 12 || !(k[0] == RELEASE || k[0] == OPEN_RELEASE) {
            return Err(StoreError::Corrupt);
        }
        let first = Month::from_index(u32::from_be_bytes(k[8..12].try_into().expect("4 bytes")))
            .ok_or(StoreError::Corrupt)?;
        Ok((
            Measure::decode(u16::from_be_bytes([k[5], k[6]])),
            k[7],
            first,
        ))
    }
}

/// A materialised release is stored as the release crate's [`Snapshot`]:
/// every cell of the gemeente's table in the release crate's node order,
/// with the cells of every earlier version.
mod snapshot {
    use super::*;

    /// The head (version, state, cells per version), then the cells of
    /// this version and of the earlier ones, oldest first, nine bytes each.
    /// A snapshot stored before earlier versions were kept has only its own.
    pub(super) fn encode(s: &Snapshot) -> Vec<u8> {
        let n = s.cells.len();
        let mut v = Vec::with_capacity(16 + 9 * n * (1 + s.earlier.len()));
        v.extend_from_slice(&s.version.to_be_bytes());
        v.extend_from_slice(&s.state.to_be_bytes());
        v.extend_from_slice(&(n as u32).to_be_bytes());
        for c in std::iter::once(&s.cells).chain(&s.earlier).flatten() {
            v.push(u8::from(c.is_some()));
            v.extend_from_slice(&c.unwrap_or(0).to_be_bytes());
        }
        v
    }

    pub(super) fn decode(v: &[u8]) -> Result<Snapshot, StoreError> {
        let corrupt = || StoreError::Corrupt;
        let head: &[u8; 16] = v
            .get(..16)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(corrupt)?;
        let n = u32::from_be_bytes(head[12..16].try_into().expect("4")) as usize;
        let body = &v[16..];
        let whole = if n == 0 {
            body.is_empty()
        } else {
            !body.is_empty() && body.len().is_multiple_of(9 * n)
        };
        if !whole {
            return Err(corrupt());
        }
        // This version's cells, then the earlier ones'.
        let mut versions: Vec<Vec<Option<u64>>> = if n == 0 {
            vec![Vec::new()]
        } else {
            body.chunks_exact(9 * n)
                .map(|version| {
                    version
                        .chunks_exact(9)
                        .map(|c| {
                            (c[0] == 1).then(|| u64::from_be_bytes(c[1..9].try_into().expect("8")))
                        })
                        .collect()
                })
                .collect()
        };
        let cells = versions.remove(0);
        Ok(Snapshot {
            version: u32::from_be_bytes(head[..4].try_into().expect("4")),
            state: u64::from_be_bytes(head[4..12].try_into().expect("8")),
            cells,
            earlier: versions,
        })
    }
}

/// Length of an `S` key (format 2: 43, with 32-byte tags).
const SIGNAL_KEY: usize = 11 + shred::TAG;

fn signal_key(g: &[u8; 4], tag: &shred::Tag, type_id: u16, month: Month) -> [u8; SIGNAL_KEY] {
    let mut k = [0u8; SIGNAL_KEY];
    k[..5].copy_from_slice(&signal_prefix(g));
    k[5..7].copy_from_slice(&type_id.to_be_bytes());
    k[7..11].copy_from_slice(&month.index().to_be_bytes());
    k[11..].copy_from_slice(tag);
    k
}

/// The `S` keys of one gemeente.
fn signal_prefix(g: &[u8; 4]) -> [u8; 5] {
    let mut k = [SIGNAL; 5];
    k[1..].copy_from_slice(g);
    k
}

/// The type id and month of an `S` key.
fn signal_period(k: &[u8]) -> Result<(u16, Month), StoreError> {
    if k.len() != SIGNAL_KEY {
        return Err(StoreError::Corrupt);
    }
    let month = Month::from_index(u32::from_be_bytes(k[7..11].try_into().expect("4 bytes")))
        .ok_or(StoreError::Corrupt)?;
    Ok((u16::from_be_bytes([k[5], k[6]]), month))
}

/// Length of an `S` value: buurt · severity · sealed pseudonym; a person's
/// signal with its household has the household's sealed pseudonym after it.
const SIGNAL_VALUE: usize = 9 + shred::SEALED;

/// The sealed links after an `S` value's own pseudonym: its household's
/// (a person's), and its household's under the previous key epoch.
type SealedLinks<'v> = (Option<&'v [u8]>, Option<&'v [u8]>);

fn signal_links(v: &[u8]) -> Result<SealedLinks<'_>, StoreError> {
    const S: usize = shred::SEALED;
    let rest = v.get(SIGNAL_VALUE..).ok_or(StoreError::Corrupt)?;
    let previous = |r: &'_ [u8]| -> Result<(), StoreError> {
        if r.len() == 1 + S && r[0] == PREVIOUS_MARK {
            Ok(())
        } else {
            Err(StoreError::Corrupt)
        }
    };
    Ok(match rest.len() {
        0 => (None, None),
        n if n == S => (Some(rest), None),
        n if n == 1 + S => {
            previous(rest)?;
            (None, Some(&rest[1..]))
        }
        n if n == 2 * S + 1 => {
            previous(&rest[S..])?;
            (Some(&rest[..S]), Some(&rest[S + 1..]))
        }
        _ => return Err(StoreError::Corrupt),
    })
}

/// The marker before a previous-epoch link in an `S` value.
const PREVIOUS_MARK: u8 = b'E';

/// A person's household, by the person's server pseudonym; or a
/// household's identity under the previous key epoch, by its identity
/// under the next.
pub type Links = HashMap<ServerPseudonym, ServerPseudonym>;

/// What [`Store::signals_between`] reads.
#[derive(Debug, Default)]
pub struct SignalsRead {
    /// Signals grouped by their own server pseudonym.
    pub grouped: Grouped,
    /// A person's household (of the person's latest month in the range).
    pub households: Links,
    /// A household's identity under the previous key epoch, by its
    /// identity under the next one.
    pub previous: Links,
}

/// What [`Store::store_open_release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenRelease {
    /// The release now stored (this one, or another query's).
    Stored(Vec<Option<u64>>),
    /// Refused: the budget would be exceeded; what is spent (millionths).
    BudgetSpent { spent: u64 },
}

fn encode_cells(cells: &[Option<u64>]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 * cells.len());
    for c in cells {
        v.push(u8::from(c.is_some()));
        v.extend_from_slice(&c.unwrap_or(0).to_be_bytes());
    }
    v
}

fn decode_cells(v: &[u8]) -> Result<Vec<Option<u64>>, StoreError> {
    if !v.len().is_multiple_of(9) {
        return Err(StoreError::Corrupt);
    }
    Ok(v.chunks_exact(9)
        .map(|c| (c[0] == 1).then(|| u64::from_be_bytes(c[1..].try_into().expect("8"))))
        .collect())
}

/// Signals under one partner key in one (gemeente, type, month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnderKey {
    pub signals: u64,
    /// Of which sent with their identity under the previous epoch.
    pub linked: u64,
}

/// The `E` key of (gemeente, type, month, key id).
fn epoch_key(g: &[u8; 4], type_id: u16, month: Month, key_id: &PseudonymKeyId) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + key_id.as_str().len());
    k.push(EPOCH);
    k.extend_from_slice(g);
    k.extend_from_slice(&type_id.to_be_bytes());
    k.extend_from_slice(&month.index().to_be_bytes());
    k.extend_from_slice(key_id.as_str().as_bytes());
    k
}

fn encode_under_key(u: UnderKey) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&u.signals.to_be_bytes());
    v[8..].copy_from_slice(&u.linked.to_be_bytes());
    v
}

fn decode_under_key(v: &[u8]) -> Result<UnderKey, StoreError> {
    if v.len() != 16 {
        return Err(StoreError::Corrupt);
    }
    Ok(UnderKey {
        signals: u64::from_be_bytes(v[..8].try_into().expect("8")),
        linked: u64::from_be_bytes(v[8..].try_into().expect("8")),
    })
}

/// Signals grouped by their own server pseudonym.
pub type Grouped = Vec<(ServerPseudonym, Vec<HouseholdSignal>)>;

fn encode_total(t: CellTotal) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&t.households.to_be_bytes());
    v[8..].copy_from_slice(&t.cell_key.to_be_bytes());
    v
}

fn decode_total(v: &[u8]) -> Result<CellTotal, StoreError> {
    let v: &[u8; 12] = v.try_into().map_err(|_| StoreError::Corrupt)?;
    Ok(CellTotal {
        households: u64::from_be_bytes(v[..8].try_into().expect("8 of 12")),
        cell_key: u32::from_be_bytes(v[8..].try_into().expect("4 of 12")),
    })
}

fn count_key(type_id: u16, month: Month, buurt: &BuurtCode) -> [u8; 15] {
    let mut k = [0u8; 15];
    k[0] = COUNT;
    k[1..3].copy_from_slice(&type_id.to_be_bytes());
    k[3..7].copy_from_slice(&month.index().to_be_bytes());
    k[7..15].copy_from_slice(buurt.body());
    k
}

/// The `C` keys of one gemeente for one type and month.
fn count_prefix(type_id: u16, month: Month, g: &GemeenteCode) -> [u8; 11] {
    let mut k = [0u8; 11];
    k[0] = COUNT;
    k[1..3].copy_from_slice(&type_id.to_be_bytes());
    k[3..7].copy_from_slice(&month.index().to_be_bytes());
    k[7..11].copy_from_slice(g.body());
    k
}

fn batch_key(partner: &str, id: &BatchId) -> Vec<u8> {
    let name = &partner.as_bytes()[..partner.len().min(255)];
    let mut k = Vec::with_capacity(2 + name.len() + id.as_str().len());
    k.push(BATCH);
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// Read access to the store, shared by queries and the ingest queue.
#[derive(Debug, Clone)]
pub struct Store {
    db: kv::Kv,
    types: Arc<RwLock<HashMap<SignalTypeName, u16>>>,
    keys: Arc<shred::PeriodKeys>,
}

impl Store {
    /// Opens (or creates) the store in data directory `dir`, checking it was
    /// written with the same server key: a store keyed under another key
    /// would silently stop linking households.
    pub fn open(dir: &Path, server_key_id: &str) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::File {
            path: dir.to_owned(),
            source,
        })?;
        if dir.join(SLED_DIR).is_dir() {
            // A store of format 1 or 2 (sled): refused with what to do.
            return Err(StoreError::SledStore);
        }
        let keys = shred::PeriodKeys::open(&dir.join("period-keys"))?;
        let db = kv::Kv::open(&dir.join(kv::FILE))?;
        match db.get(KEY_ID)? {
            Some(stored) if stored != server_key_id.as_bytes() => {
                return Err(StoreError::KeyMismatch {
                    stored: String::from_utf8_lossy(&stored).into_owned(),
                    configured: server_key_id.to_owned(),
                });
            }
            Some(_) => {}
            None => db.write(true, |t| {
                t.insert(KEY_ID, server_key_id.as_bytes())?;
                Ok(())
            })?,
        }
        check_format(&db)?;
        let mut types = HashMap::new();
        for kv in db.scan_prefix([TYPE]) {
            let (k, v) = kv?;
            let name = std::str::from_utf8(&k[1..])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(StoreError::Corrupt)?;
            let id = u16::from_be_bytes(v.as_slice().try_into().map_err(|_| StoreError::Corrupt)?);
            types.insert(name, id);
        }
        Ok(Store {
            db,
            types: Arc::new(RwLock::new(types)),
            keys: Arc::new(keys),
        })
    }

    /// Every stored signal type by its id.
    fn type_names(&self) -> HashMap<u16, SignalTypeName> {
        self.types
            .read()
            .expect("type map lock")
            .iter()
            .map(|(name, &id)| (id, name.clone()))
            .collect()
    }

    /// The id a signal type has in this store, if any signal of it was stored.
    pub fn type_id(&self, t: &SignalTypeName) -> Option<u16> {
        self.types.read().expect("type map lock").get(t).copied()
    }

    /// Distinct households per buurt of a gemeente with a signal of this
    /// type in this month, with their cell keys, from the totals kept at
    /// write time.
    pub fn buurt_counts(
        &self,
        t: &SignalTypeName,
        month: Month,
        g: GemeenteCode,
    ) -> Result<Vec<(BuurtCode, CellTotal)>, StoreError> {
        let Some(type_id) = self.type_id(t) else {
            return Ok(Vec::new());
        };
        let prefix = count_prefix(type_id, month, &g);
        self.db
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let buurt =
                    BuurtCode::from_body(k[7..15].try_into().map_err(|_| StoreError::Corrupt)?)
                        .map_err(|_| StoreError::Corrupt)?;
                Ok((buurt, decode_total(&v)?))
            })
            .collect()
    }

    /// How often the table (gemeente × type × month) has changed: bumped by
    /// the writer in the same atomic batch as the counts. `None` for a type
    /// never stored.
    pub fn table_state(
        &self,
        t: &SignalTypeName,
        month: Month,
        g: GemeenteCode,
    ) -> Result<Option<u64>, StoreError> {
        let Some(type_id) = self.type_id(t) else {
            return Ok(None);
        };
        Ok(Some(read_counter(
            &self.db,
            &table_key(TABLE_STATE, g.body(), type_id, month),
        )?))
    }

    /// The materialised release of a table, if one was stored.
    pub fn release_snapshot(&self, t: &TableRef) -> Result<Option<Snapshot>, StoreError> {
        self.db
            .get(t.key())?
            .map(|v| snapshot::decode(&v))
            .transpose()
    }

    /// Stores a release in place of `previous` (compare and swap, so two
    /// queries racing to materialise the same table store it once) and, with
    /// `flush`, flushes it: a release that was served must survive a restart
    /// (a bulk materialisation flushes once at its end, [`Store::flush`]).
    /// Returns the snapshot now stored, which is the other query's if it won.
    pub fn store_release_snapshot(
        &self,
        t: &TableRef,
        previous: Option<&Snapshot>,
        new: Snapshot,
        flush: bool,
    ) -> Result<Snapshot, StoreError> {
        let key = t.key();
        let expected = previous.map(snapshot::encode);
        let current = self.db.write(flush, |table| {
            let current = kv::get_in(table, &key)?;
            if current == expected {
                table.insert(&key[..], snapshot::encode(&new).as_slice())?;
                return Ok(None);
            }
            Ok(Some(current))
        })?;
        match current {
            None => Ok(new),
            Some(Some(v)) => snapshot::decode(&v),
            // A purge removed the release meanwhile: its period is
            // erased, and what was computed before is answered once.
            Some(None) => Ok(new),
        }
    }

    /// The open-data release of a table, if one was made.
    pub fn open_release(&self, t: &TableRef) -> Result<Option<Vec<Option<u64>>>, StoreError> {
        let mut key = t.key();
        key[0] = OPEN_RELEASE;
        self.db.get(key)?.map(|v| decode_cells(&v)).transpose()
    }

    /// Stores an open-data release made under `epsilon` (millionths) in one
    /// step with the budget of its gemeente, measure and `year`, unless
    /// that would spend more than `budget`; flushed. Returns what is
    /// stored: another query's release if it came first.
    pub fn store_open_release(
        &self,
        t: &TableRef,
        year: u32,
        cells: Vec<Option<u64>>,
        epsilon: u64,
        budget: u64,
    ) -> Result<OpenRelease, StoreError> {
        let mut key = t.key();
        key[0] = OPEN_RELEASE;
        let mut ledger = Vec::with_capacity(11);
        ledger.push(OPEN_BUDGET);
        ledger.extend_from_slice(t.gemeente.body());
        ledger.extend_from_slice(&t.measure.encode().to_be_bytes());
        ledger.extend_from_slice(&year.to_be_bytes());
        let encoded = encode_cells(&cells);
        let outcome = self.db.write(true, |tx| {
            if let Some(v) = kv::get_in(tx, &key)? {
                return Ok(Ok(v));
            }
            let spent = match kv::get_in(tx, &ledger)? {
                Some(v) => u64::from_be_bytes(v.as_slice().try_into().unwrap_or([0xff; 8])),
                None => 0,
            };
            if spent.saturating_add(epsilon) > budget {
                return Ok(Err(spent));
            }
            tx.insert(ledger.as_slice(), &(spent + epsilon).to_be_bytes()[..])?;
            tx.insert(&key[..], encoded.as_slice())?;
            Ok(Ok(encoded.clone()))
        })?;
        match outcome {
            Ok(v) => Ok(OpenRelease::Stored(decode_cells(&v)?)),
            Err(spent) => Ok(OpenRelease::BudgetSpent { spent }),
        }
    }

    /// Every table state of gemeente `g`: how often each (type id, month)
    /// table has changed. One range read, from which a query derives the
    /// state of every table it answers (a quarter's is the sum of its
    /// months').
    pub fn table_states_of(
        &self,
        g: GemeenteCode,
    ) -> Result<HashMap<(u16, Month), u64>, StoreError> {
        let mut prefix = vec![TABLE_STATE];
        prefix.extend_from_slice(g.body());
        let mut out = HashMap::new();
        for kv in self.db.scan_prefix(prefix) {
            let (k, v) = kv?;
            let (_, type_id, month) = table_of_state_key(&k)?;
            out.insert((type_id, month), decode_counter(&v)?);
        }
        Ok(out)
    }

    /// The statuses analysts set on the alerts of gemeente `g`'s month.
    pub fn alert_statuses(
        &self,
        g: GemeenteCode,
        month: Month,
    ) -> Result<Vec<(AlertRef, AlertStatusRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(AlertRef::prefix(g, month)) {
            let (k, v) = kv?;
            out.push((
                AlertRef::parse(g, month, &k)?,
                AlertStatusRecord::decode(&v)?,
            ));
        }
        Ok(out)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.sync()
    }

    /// First and last month with stored signals in gemeente `g`, from the
    /// tables' change counts: what one municipality may learn, without a
    /// word about the others.
    pub fn month_range_of(&self, g: GemeenteCode) -> Result<Option<(Month, Month)>, StoreError> {
        let months = self.table_states_of(g)?.into_keys().map(|(_, m)| m);
        Ok(months.fold(None, |range, m| match range {
            None => Some((m, m)),
            Some((a, b)) => Some((a.min(m), b.max(m))),
        }))
    }

    /// The store's file on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk()
    }

    /// Number of distinct stored signals, kept at write time.
    pub fn signal_count(&self) -> Result<u64, StoreError> {
        read_counter(&self.db, SIGNAL_TOTAL)
    }

    /// Every table (gemeente × type × month) that holds stored signals, with
    /// its change count: what a scheduled materialisation walks.
    pub fn tables(&self) -> Result<Vec<(GemeenteCode, SignalTypeName, Month, u64)>, StoreError> {
        let names = self.type_names();
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([TABLE_STATE]) {
            let (k, v) = kv?;
            let (g, type_id, month) = table_of_state_key(&k)?;
            let name = names.get(&type_id).ok_or(StoreError::Corrupt)?.clone();
            let changes = decode_counter(&v)?;
            out.push((g, name, month, changes));
        }
        Ok(out)
    }

    /// Every household with a signal in gemeente `g`, with all its signals
    /// there (type as the store's type id), ordered by pseudonym: what the
    /// derived indicators are counted from. One scan over the stored
    /// signals, opening each one's sealed pseudonym to link the household's
    /// periods.
    pub fn households_in(
        &self,
        g: GemeenteCode,
    ) -> Result<Vec<(ServerPseudonym, Vec<HouseholdSignal>)>, StoreError> {
        let (first, last) = (
            Month::new(1900, 1).expect("a valid month"),
            Month::new(9999, 12).expect("a valid month"),
        );
        self.households_between(g, first, last)
    }

    /// [`Store::households_in`] with only the signals of months `from..=to`:
    /// one range read per signal type.
    pub fn households_between(
        &self,
        g: GemeenteCode,
        from: Month,
        to: Month,
    ) -> Result<Vec<(ServerPseudonym, Vec<HouseholdSignal>)>, StoreError> {
        Ok(self.signals_between(g, from, to)?.grouped)
    }

    /// [`Store::households_between`], and for every person whose signals
    /// carry a household pseudonym, that household (of its latest month in
    /// the range): through it the derived indicators link a person's
    /// signals with its household's. And every household's identity under
    /// the previous key epoch, where a key change's overlap sent it.
    pub fn signals_between(
        &self,
        g: GemeenteCode,
        from: Month,
        to: Month,
    ) -> Result<SignalsRead, StoreError> {
        let mut by_household: HashMap<ServerPseudonym, Vec<HouseholdSignal>> = HashMap::new();
        let mut links: HashMap<ServerPseudonym, (Month, ServerPseudonym)> = HashMap::new();
        let mut previous: Links = HashMap::new();
        let digits = g.body();
        // The key of the (type, month) being read: records come per period.
        type Period = ((u16, Month), Option<Arc<shred::PeriodKey>>);
        let mut period: Option<Period> = None;
        let mut type_ids: Vec<u16> = self
            .types
            .read()
            .expect("type map lock")
            .values()
            .copied()
            .collect();
        type_ids.sort_unstable();
        let range_of = |t: u16| {
            let start = signal_key(digits, &[0; shred::TAG], t, from);
            let end = signal_key(digits, &[0xff; shred::TAG], t, to);
            self.db.range(&start, &end)
        };
        for kv in type_ids.into_iter().flat_map(range_of) {
            let (k, v) = kv?;
            let (household, earlier) = signal_links(&v)?;
            if &v[..4] != digits {
                return Err(StoreError::Corrupt);
            }
            let (type_id, month) = signal_period(&k)?;
            if period.as_ref().is_none_or(|(p, _)| *p != (type_id, month)) {
                period = Some(((type_id, month), self.keys.get(type_id, month)));
            }
            // A period being erased: its records are going.
            let Some(key) = period.as_ref().and_then(|(_, k)| k.as_ref()) else {
                continue;
            };
            let tag: &shred::Tag = k[11..].try_into().map_err(|_| StoreError::Corrupt)?;
            let pseudonym = key
                .open(tag, &v[9..SIGNAL_VALUE])
                .ok_or(StoreError::Corrupt)?;
            let household = household
                .map(|sealed| key.open_link(shred::Link::Household, tag, sealed))
                .map(|h| h.ok_or(StoreError::Corrupt))
                .transpose()?;
            if let Some(sealed) = earlier {
                let before = key
                    .open_link(shred::Link::PreviousEpoch, tag, sealed)
                    .ok_or(StoreError::Corrupt)?;
                // The identity it links is the household's.
                previous.insert(household.unwrap_or(pseudonym), before);
            }
            if let Some(household) = household {
                match links.get_mut(&pseudonym) {
                    Some((m, h)) if *m <= month => (*m, *h) = (month, household),
                    Some(_) => {}
                    None => {
                        links.insert(pseudonym, (month, household));
                    }
                }
            }
            let signal = HouseholdSignal {
                signal_type: type_id,
                month,
                buurt: BuurtCode::from_body(v[..8].try_into().map_err(|_| StoreError::Corrupt)?)
                    .map_err(|_| StoreError::Corrupt)?,
            };
            by_household.entry(pseudonym).or_default().push(signal);
        }
        let mut out: Vec<_> = by_household.into_iter().collect();
        out.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (_, signals) in &mut out {
            signals.sort_unstable_by_key(|s| (s.month, s.signal_type));
        }
        Ok(SignalsRead {
            grouped: out,
            households: links.into_iter().map(|(p, (_, h))| (p, h)).collect(),
            previous,
        })
    }

    /// Signals per partner key of every (type id, month) of gemeente `g`:
    /// where its key epochs change, and whether each change was linked.
    pub fn epochs_of(
        &self,
        g: GemeenteCode,
    ) -> Result<Vec<(u16, Month, PseudonymKeyId, UnderKey)>, StoreError> {
        let mut prefix = vec![EPOCH];
        prefix.extend_from_slice(g.body());
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv?;
            if k.len() <= 11 {
                return Err(StoreError::Corrupt);
            }
            let type_id = u16::from_be_bytes([k[5], k[6]]);
            let month = Month::from_index(u32::from_be_bytes(k[7..11].try_into().expect("4")))
                .ok_or(StoreError::Corrupt)?;
            let id = std::str::from_utf8(&k[11..])
                .ok()
                .and_then(|s| PseudonymKeyId::new(s).ok())
                .ok_or(StoreError::Corrupt)?;
            out.push((type_id, month, id, decode_under_key(&v)?));
        }
        Ok(out)
    }

    /// Every partner key id signals were stored under, with how many new
    /// signals each brought: how the epochs of pseudonymisation are told apart.
    pub fn pseudonym_keys(&self) -> Result<Vec<(PseudonymKeyId, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.db.scan_prefix([PSEUDONYM_KEY]) {
            let (k, v) = entry?;
            let id = std::str::from_utf8(&k[1..])
                .ok()
                .and_then(|s| PseudonymKeyId::new(s).ok())
                .ok_or(StoreError::Corrupt)?;
            let n = u64::from_be_bytes(v.as_slice().try_into().map_err(|_| StoreError::Corrupt)?);
            out.push((id, n));
        }
        Ok(out)
    }

    /// A checksum over every key and value, to prove a rejected request
    /// changed nothing. The `U` record of a batch is left out: it goes
    /// after the batch is acknowledged, when the writer gets to it.
    pub fn checksum(&self) -> Result<u32, StoreError> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        for kv in self.db.iter() {
            let (k, v) = kv?;
            if k.first() != Some(&unaudited::UNAUDITED) {
                (&*k, &*v).hash(&mut hasher);
            }
        }
        Ok(hasher.finish() as u32)
    }
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;

/// What someone holding a copy of a data directory could do with it: read
/// every period secret still in `period-keys`, and compute a household's
/// tag under one. The retention test uses it to show that a purged period
/// can no longer be linked to a known pseudonym, while one that is kept can.
/// Test support: mark the store in data directory `dir` as of on-disk
/// format `format`, as an older or newer Wijkradar would have left it.
#[cfg(feature = "dev")]
pub fn mark_format(dir: &Path, format: u32) -> Result<(), StoreError> {
    let db = kv::Kv::open(&dir.join(kv::FILE))?;
    write_format(&db, format)
}

#[cfg(feature = "dev")]
pub mod forensic {
    use std::path::Path;

    use wijkradar_domain::{Month, ServerPseudonym};

    /// Every (type id, month, secret) in the data directory's key file,
    /// erased ones included (all zeros).
    pub fn period_secrets(dir: &Path) -> std::io::Result<Vec<(u16, Month, [u8; 32])>> {
        let bytes = std::fs::read(dir.join("period-keys"))?;
        Ok(bytes
            .chunks_exact(38)
            .filter_map(|r| {
                let month = Month::from_index(u32::from_be_bytes(r[2..6].try_into().ok()?))?;
                Some((
                    u16::from_be_bytes([r[0], r[1]]),
                    month,
                    r[6..].try_into().ok()?,
                ))
            })
            .collect())
    }

    /// The household's tag in a period's signal keys, from the secret.
    pub fn tag(secret: &[u8; 32], p: &ServerPseudonym) -> [u8; 16] {
        crate::shred::tag_with_secret(secret, p)
    }
}

/// The baseline for the ingest benchmarks: the raw speed of writing the
/// same signal records into a fresh redb file in batches, one durable
/// transaction per batch, with none of the ingest work (no de-duplication
/// lookups, no counts, no batch ids, no network).
#[cfg(feature = "dev")]
#[derive(Debug)]
pub struct RawWriter {
    db: kv::Kv,
    type_ids: HashMap<SignalTypeName, u16>,
}

#[cfg(feature = "dev")]
impl RawWriter {
    /// A new redb file at `path`.
    pub fn open(path: &Path) -> Result<RawWriter, StoreError> {
        Ok(RawWriter {
            db: kv::Kv::open(path)?,
            type_ids: HashMap::new(),
        })
    }

    /// Writes `signals` in batches of `batch_size`; the time it took.
    pub fn write(
        &mut self,
        signals: &[StoredSignal],
        batch_size: usize,
    ) -> Result<std::time::Duration, StoreError> {
        let started = std::time::Instant::now();
        for chunk in signals.chunks(batch_size.max(1)) {
            let mut batch = kv::Batch::default();
            for s in chunk {
                let next = self.type_ids.len() as u16;
                let type_id = *self.type_ids.entry(s.signal_type.clone()).or_insert(next);
                // Records of the stored size, without the tag and seal.
                let mut value = [0u8; SIGNAL_VALUE];
                value[..8].copy_from_slice(s.buurt.body());
                value[9..41].copy_from_slice(s.pseudonym.as_bytes());
                let tag = s.pseudonym.as_bytes()[..shred::TAG]
                    .try_into()
                    .expect("16 of 32 bytes");
                let key = signal_key(s.buurt.gemeente().body(), &tag, type_id, s.month);
                batch.insert(&key[..], &value[..]);
            }
            self.db.write(true, |t| batch.apply(t))?;
        }
        Ok(started.elapsed())
    }
}

/// [`RawWriter`] over all of `signals` in a new file at `path`.
#[cfg(feature = "dev")]
pub fn raw_write_baseline(
    path: &Path,
    signals: &[StoredSignal],
    batch_size: usize,
) -> Result<std::time::Duration, StoreError> {
    RawWriter::open(path)?.write(signals, batch_size)
}
