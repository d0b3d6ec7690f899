//! The outbox at the partner (redb, `outbox.redb` in the outbox
//! directory): a run first pseudonymises a whole
//! export into it, in one atomic write, then sends; a batch leaves the
//! outbox only after the aggregator acknowledged it as durably stored. If the
//! aggregator is down or the agent is killed, the next run sends what is
//! left; batch ids are derived from content, so a batch that was stored but
//! whose acknowledgement was lost is answered "already stored" and counts
//! once.
//!
//! The outbox holds pseudonyms, buurten, types and months: what is sent,
//! never an address or BSN. An export is remembered by the SHA-256 of its
//! bytes, so running the same file twice imports it once.
//!
//! | key | value |
//! |---|---|
//! | `Q` · sequence (u64) | a pending batch (protobuf `wijkradar.v1.Batch`) |
//! | `R` · sequence (u64) | a batch the aggregator refused for good, set aside: see [`SetAside`] |
//! | `I` · SHA-256 of the export file | the import record, see [`Import`] |
//! | `N` | the next sequence number (u64) |
//!
//! An outbox of an earlier agent (sled, in the same directory) is copied
//! into redb when the agent first opens it, and its files removed.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use redb::{ReadableDatabase as _, ReadableTable as _};
use wijkradar_proto::v1 as pb;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Open { path: String, source: redb::Error },
    #[error("outbox: {0}")]
    Engine(#[from] redb::Error),
    #[error("outbox of an earlier agent (sled): {0}")]
    Sled(#[from] sled::Error),
    #[error("outbox: a record is damaged ({0})")]
    Corrupt(&'static str),
    #[error("no batch number {0} is set aside (`wijkradar agent status` lists them)")]
    NotSetAside(u64),
    #[error("{path}: {source}")]
    Trail {
        path: String,
        source: std::io::Error,
    },
}

/// One export as it was imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// When, in seconds since 1970 (UTC).
    pub at: u64,
    /// The export's file name, without its directory.
    pub file_name: String,
    pub rows: u64,
    pub signals: u64,
    pub batches: u64,
    pub key_id: String,
}

impl Import {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for n in [self.at, self.rows, self.signals, self.batches] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        for s in [&self.file_name, &self.key_id] {
            v.extend_from_slice(&(s.len() as u32).to_be_bytes());
            v.extend_from_slice(s.as_bytes());
        }
        v
    }

    fn decode(v: &[u8]) -> Option<Import> {
        let n = |i: usize| {
            Some(u64::from_be_bytes(
                v.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let mut at = 32;
        let mut text = || -> Option<String> {
            let len = u32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?) as usize;
            let s = String::from_utf8(v.get(at + 4..at + 4 + len)?.to_vec()).ok()?;
            at += 4 + len;
            Some(s)
        };
        let file_name = text()?;
        let key_id = text()?;
        Some(Import {
            at: n(0)?,
            rows: n(1)?,
            signals: n(2)?,
            batches: n(3)?,
            file_name,
            key_id,
        })
    }
}

/// What is waiting to be sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub batches: u64,
    pub signals: u64,
    pub per_type: BTreeMap<String, u64>,
    pub per_month: BTreeMap<String, u64>,
    /// Every export imported so far, oldest first.
    pub imports: Vec<Import>,
    /// Batches the aggregator refused for good, not sent again.
    pub set_aside: Vec<SetAside>,
}

/// A batch the aggregator refused for good (a field of it at fault, not an
/// outage): kept apart so that it blocks nothing and is not sent again,
/// until someone discards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub seq: u64,
    pub batch_id: String,
    pub key_id: String,
    pub signals: u64,
    pub per_type: BTreeMap<String, u64>,
    pub months: Vec<String>,
    /// The aggregator's answer, as a person reads it.
    pub reason: String,
    /// When, in seconds since 1970 (UTC).
    pub at: u64,
}

impl SetAside {
    fn of(seq: u64, batch: &pb::Batch, reason: String, at: u64) -> SetAside {
        let mut per_type = BTreeMap::new();
        let mut months = std::collections::BTreeSet::new();
        for s in &batch.signals {
            *per_type.entry(s.signal_type.clone()).or_default() += 1;
            months.insert(s.month.clone());
        }
        SetAside {
            seq,
            batch_id: batch.batch_id.clone(),
            key_id: batch.key_id.clone(),
            signals: batch.signals.len() as u64,
            per_type,
            months: months.into_iter().collect(),
            reason,
            at,
        }
    }
}

macro_rules! engine_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for OutboxError {
            fn from(e: $t) -> OutboxError {
                OutboxError::Engine(redb::Error::from(e))
            }
        }
    )*};
}
engine_errors!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[derive(Debug, Clone)]
pub struct Outbox {
    db: std::sync::Arc<redb::Database>,
}

/// A key and its value.
type Record = (Vec<u8>, Vec<u8>);

/// The outbox's one table.
const RECORDS: redb::TableDefinition<'static, &'static [u8], &'static [u8]> =
    redb::TableDefinition::new("outbox");
/// The outbox's file in its directory.
const FILE: &str = "outbox.redb";
/// redb's page cache: an outbox holds a few exports at most.
const CACHE_BYTES: usize = 16 << 20;

const QUEUE: u8 = b'Q';
const SET_ASIDE: u8 = b'R';
const IMPORT: u8 = b'I';
const NEXT: &[u8] = b"N";

impl Outbox {
    /// Opens (or creates) the outbox. Only one agent run can hold it.
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        let open_error = |source: redb::Error| OutboxError::Open {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(path).map_err(|e| open_error(e.into()))?;
        let file = path.join(FILE);
        if !file.exists() && path.join("conf").exists() {
            copy_from_sled(path, &file)?;
        }
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&file)
            .map_err(|e| open_error(e.into()))?;
        let outbox = Outbox {
            db: std::sync::Arc::new(db),
        };
        outbox.write(true, |_| Ok(()))?;
        Ok(outbox)
    }

    /// One write transaction, committed durably when `durable`.
    fn write<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut redb::Table<'_, &'static [u8], &'static [u8]>) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        let mut tx = self.db.begin_write()?;
        if !durable {
            tx.set_durability(redb::Durability::None)?;
        }
        let out = {
            let mut table = tx.open_table(RECORDS)?;
            f(&mut table)?
        };
        tx.commit()?;
        Ok(out)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, OutboxError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(RECORDS)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Every record under the one-byte `prefix`, in key order.
    fn scan(&self, prefix: u8) -> Result<Vec<Record>, OutboxError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(RECORDS)?;
        let (from, to) = ([prefix], [prefix + 1]);
        let mut out = Vec::new();
        for kv in table.range::<&[u8]>(&from[..]..&to[..])? {
            let (k, v) = kv?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The import record of an export with this digest, if it was imported.
    pub fn imported(&self, digest: &[u8; 32]) -> Result<Option<Import>, OutboxError> {
        let key = [&[IMPORT][..], digest].concat();
        match self.get(&key)? {
            Some(v) => Ok(Some(
                Import::decode(&v).ok_or(OutboxError::Corrupt("import record"))?,
            )),
            None => Ok(None),
        }
    }

    /// Adds an export's batches and its import record in one atomic write,
    /// flushed before returning: either the whole export is in the outbox or
    /// none of it.
    pub fn import(
        &self,
        digest: &[u8; 32],
        record: &Import,
        batches: &[Vec<u8>],
    ) -> Result<(), OutboxError> {
        self.write(true, |t| {
            let mut next = match t.get(NEXT)? {
                Some(v) => u64::from_be_bytes(
                    v.value()
                        .try_into()
                        .map_err(|_| OutboxError::Corrupt("sequence"))?,
                ),
                None => 0,
            };
            for b in batches {
                t.insert(&queue_key(next)[..], &b[..])?;
                next += 1;
            }
            t.insert(NEXT, &next.to_be_bytes()[..])?;
            let key = [&[IMPORT][..], digest].concat();
            t.insert(key.as_slice(), record.encode().as_slice())?;
            Ok(())
        })
    }

    /// Every pending batch with its sequence number, oldest first.
    pub fn pending(&self) -> Result<Vec<(u64, pb::Batch)>, OutboxError> {
        let mut out = Vec::new();
        for (k, v) in self.scan(QUEUE)? {
            let seq = u64::from_be_bytes(
                k.get(1..9)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(OutboxError::Corrupt("queue key"))?,
            );
            let batch =
                pb::Batch::decode(v.as_slice()).map_err(|_| OutboxError::Corrupt("batch"))?;
            out.push((seq, batch));
        }
        Ok(out)
    }

    /// Forgets an acknowledged batch. Not flushed on its own: if the agent
    /// dies before [`Outbox::flush`], the batch is sent again and answered
    /// "already stored".
    pub fn remove(&self, seq: u64) -> Result<(), OutboxError> {
        self.write(false, |t| {
            t.remove(&queue_key(seq)[..])?;
            Ok(())
        })
    }

    pub fn flush(&self) -> Result<(), OutboxError> {
        self.write(true, |_| Ok(()))
    }

    /// Moves pending batch `seq` aside, with the aggregator's reason, and
    /// flushes: it is not sent again.
    pub fn set_aside(&self, seq: u64, reason: &str, at: u64) -> Result<(), OutboxError> {
        self.write(true, |t| {
            let Some(batch) = t.remove(&queue_key(seq)[..])?.map(|b| b.value().to_vec()) else {
                return Ok(());
            };
            let mut value = Vec::with_capacity(12 + reason.len() + batch.len());
            value.extend_from_slice(&at.to_be_bytes());
            value.extend_from_slice(&(reason.len() as u32).to_be_bytes());
            value.extend_from_slice(reason.as_bytes());
            value.extend_from_slice(&batch);
            t.insert(&set_aside_key(seq)[..], value.as_slice())?;
            Ok(())
        })
    }

    /// Every batch set aside, oldest first.
    pub fn set_aside_batches(&self) -> Result<Vec<SetAside>, OutboxError> {
        let corrupt = || OutboxError::Corrupt("set-aside batch");
        let mut out = Vec::new();
        for (k, v) in self.scan(SET_ASIDE)? {
            let seq = u64::from_be_bytes(
                k.get(1..9)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(corrupt)?,
            );
            let at = u64::from_be_bytes(
                v.get(..8)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(corrupt)?,
            );
            let len = u32::from_be_bytes(
                v.get(8..12)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(corrupt)?,
            ) as usize;
            let reason = String::from_utf8(v.get(12..12 + len).ok_or_else(corrupt)?.to_vec())
                .map_err(|_| corrupt())?;
            let batch =
                pb::Batch::decode(v.get(12 + len..).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
            out.push(SetAside::of(seq, &batch, reason, at));
        }
        Ok(out)
    }

    /// Discards a batch set aside: first a line in the trail file `trail`
    /// (JSON: when, who, the batch's id, key, signals per type, months and
    /// the aggregator's reason; no pseudonym), flushed, then the batch.
    pub fn discard(
        &self,
        seq: u64,
        trail: &Path,
        by: &str,
        at: u64,
    ) -> Result<SetAside, OutboxError> {
        let Some(found) = self.set_aside_batches()?.into_iter().find(|b| b.seq == seq) else {
            return Err(OutboxError::NotSetAside(seq));
        };
        let line = serde_json::json!({
            "discarded_at": at,
            "by": by,
            "batch_id": found.batch_id,
            "key_id": found.key_id,
            "signals": found.signals,
            "per_type": found.per_type,
            "months": found.months,
            "set_aside_at": found.at,
            "reason": found.reason,
        });
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let trail_error = |source| OutboxError::Trail {
            path: trail.display().to_string(),
            source,
        };
        let mut file = options.open(trail).map_err(trail_error)?;
        use std::io::Write as _;
        writeln!(file, "{line}")
            .and_then(|()| file.sync_all())
            .map_err(trail_error)?;
        self.write(true, |t| {
            t.remove(&set_aside_key(seq)[..])?;
            Ok(())
        })?;
        Ok(found)
    }

    pub fn status(&self) -> Result<Status, OutboxError> {
        let mut s = Status::default();
        for (_, batch) in self.pending()? {
            s.batches += 1;
            for signal in batch.signals {
                s.signals += 1;
                *s.per_type.entry(signal.signal_type).or_default() += 1;
                *s.per_month.entry(signal.month).or_default() += 1;
            }
        }
        for (_, v) in self.scan(IMPORT)? {
            s.imports
                .push(Import::decode(&v).ok_or(OutboxError::Corrupt("import record"))?);
        }
        s.imports.sort_by_key(|i| i.at);
        s.set_aside = self.set_aside_batches()?;
        Ok(s)
    }
}

/// Copies the sled outbox of an earlier agent in `dir` into `file`, then
/// removes sled's files: what was pending is sent by this agent.
fn copy_from_sled(dir: &Path, file: &Path) -> Result<(), OutboxError> {
    let partial = file.with_extension("redb.partial");
    let _ = std::fs::remove_file(&partial);
    let old = sled::Config::new().path(dir).open()?;
    let copy = redb::Database::create(&partial).map_err(redb::Error::from)?;
    let tx = copy.begin_write()?;
    {
        let mut table = tx.open_table(RECORDS)?;
        for kv in old.iter() {
            let (k, v) = kv?;
            table.insert(k.as_ref(), v.as_ref())?;
        }
    }
    tx.commit()?;
    drop(copy);
    drop(old);
    let io = |e: std::io::Error| OutboxError::Engine(e.into());
    std::fs::rename(&partial, file).map_err(io)?;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "conf" || name == "db" || name.starts_with("snap.") {
            std::fs::remove_file(entry.path()).map_err(io)?;
        } else if name == "blobs" {
            std::fs::remove_dir_all(entry.path()).map_err(io)?;
        }
    }
    Ok(())
}

fn queue_key(seq: u64) -> [u8; 9] {
    let mut k = [QUEUE; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn set_aside_key(seq: u64) -> [u8; 9] {
    let mut k = [SET_ASIDE; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str) -> pb::Batch {
        pb::Batch {
            batch_id: id.into(),
            key_id: "GM0034.2026.0011223344556677".into(),
            previous_key_id: String::new(),
            signals: vec![pb::Signal {
                pseudonym: vec![7; 32],
                buurt_code: "BU00340101".into(),
                signal_type: "huurachterstand".into(),
                month: "2026-01".into(),
                severity: None,
                household_pseudonym: Vec::new(),
                previous_epoch_pseudonym: Vec::new(),
            }],
        }
    }

    #[test]
    fn an_import_survives_reopening_and_leaves_only_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let record = Import {
            at: 1_790_000_000,
            file_name: "export.csv".into(),
            rows: 2,
            signals: 2,
            batches: 2,
            key_id: "GM0034.2026.0011223344556677".into(),
        };
        {
            let o = Outbox::open(dir.path()).unwrap();
            assert_eq!(o.imported(&[1; 32]).unwrap(), None);
            let encoded: Vec<Vec<u8>> = ["a", "b"].map(|id| batch(id).encode_to_vec()).to_vec();
            o.import(&[1; 32], &record, &encoded).unwrap();
        }
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.imported(&[1; 32]).unwrap(), Some(record.clone()));
        let pending = o.pending().unwrap();
        assert_eq!(
            pending
                .iter()
                .map(|(s, b)| (*s, b.batch_id.as_str()))
                .collect::<Vec<_>>(),
            [(0, "a"), (1, "b")]
        );
        o.remove(0).unwrap();
        o.flush().unwrap();
        let status = o.status().unwrap();
        assert_eq!((status.batches, status.signals), (1, 1));
        assert_eq!(status.per_type["huurachterstand"], 1);
        assert_eq!(status.imports, [record]);
        // A later import continues the sequence after the removed ones.
        o.import(
            &[2; 32],
            &Import {
                file_name: "b.csv".into(),
                ..status.imports[0].clone()
            },
            &[batch("c").encode_to_vec()],
        )
        .unwrap();
        assert_eq!(o.pending().unwrap().last().unwrap().0, 2);
    }

    /// An outbox an earlier agent left in sled is copied on first open:
    /// what was pending and imported is still there, and sled's files go.
    #[test]
    fn an_outbox_of_an_earlier_agent_is_copied_into_redb() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = sled::open(dir.path()).unwrap();
            old.insert(queue_key(4), batch("a").encode_to_vec())
                .unwrap();
            old.insert(NEXT, &5u64.to_be_bytes()[..]).unwrap();
            old.flush().unwrap();
        }
        assert!(dir.path().join("conf").exists());
        let o = Outbox::open(dir.path()).unwrap();
        let pending = o.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].0, pending[0].1.batch_id.as_str()), (4, "a"));
        assert!(!dir.path().join("conf").exists());
        assert!(!dir.path().join("db").exists());
        drop(o);
        // Opened again: the copy, not a second one.
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.pending().unwrap().len(), 1);
    }
}
