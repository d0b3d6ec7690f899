//! The store's one ordered key-value table, on redb.
//!
//! redb is a copy-on-write B-tree in one file. A write transaction is
//! atomic; committed with [`Durability::Immediate`] it is on disk when the
//! commit returns. Readers see the last commit and never wait for a writer.
//! Its page cache has a fixed size ([`CACHE_BYTES`]): what keeps the
//! server's memory bounded (sled's was not; see ARCHITECTURE.md).
//!
//! Everything here copies keys and values out, so that an iterator holds no
//! borrow of a transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    TableError,
};

use crate::StoreError;

/// The store's file in the data directory.
pub(crate) const FILE: &str = "store.redb";

/// The one table: keys under one-byte prefixes (see the crate's docs).
const RECORDS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("records");

/// redb's page cache. Enough for the upper levels of the tree of tens of
/// millions of signals; the rest is read from the page cache of the OS.
pub(crate) const CACHE_BYTES: usize = 256 << 20;

/// A key and its value.
pub(crate) type Record = (Vec<u8>, Vec<u8>);

/// The table open in a write transaction.
pub(crate) type WriteTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

macro_rules! engine_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Engine(redb::Error::from(e))
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

#[derive(Clone)]
pub(crate) struct Kv {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").field("path", &self.path).finish()
    }
}

impl Kv {
    /// Opens (or creates) the store file. When the same process closed it a
    /// moment ago (a restart in place), a thread may still be letting go of
    /// it: a file still open is tried again for up to two seconds. Another
    /// process holding it still gets the error.
    pub(crate) fn open(path: &Path) -> Result<Kv, StoreError> {
        let mut tries = 0;
        let db = loop {
            match Database::builder().set_cache_size(CACHE_BYTES).create(path) {
                Err(DatabaseError::DatabaseAlreadyOpen) if tries < 40 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                opened => break opened.map_err(redb::Error::from)?,
            }
        };
        let kv = Kv {
            db: Arc::new(db),
            path: path.to_owned(),
        };
        // The table exists from the start, so that readers can open it.
        kv.write(true, |_| Ok(()))?;
        Ok(kv)
    }

    /// Runs `f` in one write transaction and commits it, durably when
    /// `durable` (otherwise it reaches the disk with the next durable
    /// commit). An error from `f` aborts it: nothing of it is written.
    pub(crate) fn write<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut WriteTable<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.db.begin_write()?;
        if durable {
            // Saves the allocator state with the commit: a start after a
            // crash need not rebuild it by reading the whole tree (2.9 s
            // at 10 million signals; 0.05 s with it, at no measured cost).
            tx.set_quick_repair(true);
        } else {
            tx.set_durability(Durability::None)?;
        }
        let out = {
            let mut table = tx.open_table(RECORDS)?;
            f(&mut table)
        };
        match out {
            Ok(v) => {
                tx.commit()?;
                Ok(v)
            }
            Err(e) => {
                tx.abort()?;
                Err(e)
            }
        }
    }

    /// Writes every earlier commit made without durability to disk.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.write(true, |_| Ok(()))
    }

    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(RECORDS)?;
        Ok(table.get(key.as_ref())?.map(|v| v.value().to_vec()))
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub(crate) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        let prefix = prefix.as_ref();
        match successor(prefix) {
            Some(end) => self.scan(prefix.to_vec(), Some(end)),
            None => self.scan(prefix.to_vec(), None),
        }
    }

    /// Every record with a key in `start..=end`, in key order.
    pub(crate) fn range(&self, start: &[u8], end: &[u8]) -> Scan {
        let mut end = end.to_vec();
        end.push(0);
        self.scan(start.to_vec(), Some(end))
    }

    /// Every record, in key order.
    pub(crate) fn iter(&self) -> Scan {
        self.scan(Vec::new(), None)
    }

    /// Records from `start` up to, not including, `end`.
    fn scan(&self, start: Vec<u8>, end: Option<Vec<u8>>) -> Scan {
        let opened = (|| {
            let tx = self.db.begin_read()?;
            let table = match tx.open_table(RECORDS) {
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                t => t?,
            };
            let range = match &end {
                Some(end) => table.range_owned::<&[u8]>(start.as_slice()..end.as_slice())?,
                None => table.range_owned::<&[u8]>(start.as_slice()..)?,
            };
            Ok(Some(range))
        })();
        Scan(match opened {
            Ok(range) => Ok(range),
            Err(e) => Err(Some(e)),
        })
    }

    /// The store file's size in bytes: what it takes on disk, freed pages
    /// included.
    pub(crate) fn size_on_disk(&self) -> Result<u64, StoreError> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|source| StoreError::File {
                path: self.path.clone(),
                source,
            })
    }
}

/// The first key after every key that starts with `prefix`; none when
/// there is no such key (a prefix of only 0xff bytes).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

type Range = redb::OwnedRange<&'static [u8], &'static [u8]>;

/// The records of a read, key and value copied out. Reads a snapshot: what
/// was committed when it began.
pub(crate) struct Scan(Result<Option<Range>, Option<StoreError>>);

type Entry = (
    redb::OwnedAccessGuard<&'static [u8]>,
    redb::OwnedAccessGuard<&'static [u8]>,
);

impl Scan {
    /// The next record from one end of the range, copied out.
    fn step(
        &mut self,
        next: impl FnOnce(&mut Range) -> Option<Result<Entry, redb::StorageError>>,
    ) -> Option<Result<Record, StoreError>> {
        match &mut self.0 {
            Ok(Some(range)) => next(range).map(|kv| {
                kv.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                    .map_err(StoreError::from)
            }),
            Ok(None) => None,
            Err(e) => e.take().map(Err),
        }
    }

    pub(crate) fn keys(self) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> {
        self.map(|kv| kv.map(|(k, _)| k))
    }
}

impl Iterator for Scan {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(Range::next)
    }
}

impl DoubleEndedIterator for Scan {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(Range::next_back)
    }
}

/// Whether `key` is in a write transaction's table (what it wrote too),
/// without copying its value.
pub(crate) fn contains_in(table: &WriteTable<'_>, key: &[u8]) -> Result<bool, StoreError> {
    Ok(table.get(key)?.is_some())
}

/// Reads `key` in a write transaction: sees what the transaction wrote.
pub(crate) fn get_in(table: &WriteTable<'_>, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(table.get(key)?.map(|v| v.value().to_vec()))
}

/// The keys under `prefix` for which `pick` says yes, read in a write
/// transaction (so that nothing written meanwhile escapes them).
pub(crate) fn keys_where(
    table: &WriteTable<'_>,
    prefix: &[u8],
    mut pick: impl FnMut(&[u8]) -> Result<bool, StoreError>,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let range = match successor(prefix) {
        Some(end) => table.range::<&[u8]>(prefix..end.as_slice())?,
        None => table.range::<&[u8]>(prefix..)?,
    };
    let mut out = Vec::new();
    for kv in range {
        let (k, _) = kv?;
        if pick(k.value())? {
            out.push(k.value().to_vec());
        }
    }
    Ok(out)
}

/// Records collected first and written in one go, like an atomic batch.
#[derive(Default)]
pub(crate) struct Batch(Vec<Record>);

impl Batch {
    pub(crate) fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0.push((key.into(), value.into()));
    }

    pub(crate) fn apply(self, table: &mut WriteTable<'_>) -> Result<(), StoreError> {
        for (k, v) in self.0 {
            table.insert(k.as_slice(), v.as_slice())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_of_a_prefix() {
        assert_eq!(successor(b"S"), Some(b"T".to_vec()));
        assert_eq!(successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(successor(&[0xff, 0xff]), None);
    }

    #[test]
    fn prefix_and_range_reads_take_exactly_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::open(&dir.path().join(FILE)).unwrap();
        kv.write(true, |t| {
            for k in [
                &b"R"[..],
                b"S",
                b"S\x00",
                b"S\xff\xff",
                b"T",
                b"Sa",
                b"Sb",
                b"Sc",
            ] {
                t.insert(k, &b"v"[..])?;
            }
            Ok(())
        })
        .unwrap();
        let keys = |s: Scan| s.keys().map(Result::unwrap).collect::<Vec<_>>();
        assert_eq!(
            keys(kv.scan_prefix(b"S")),
            vec![
                b"S".to_vec(),
                b"S\x00".to_vec(),
                b"Sa".to_vec(),
                b"Sb".to_vec(),
                b"Sc".to_vec(),
                b"S\xff\xff".to_vec()
            ]
        );
        assert_eq!(
            keys(kv.range(b"Sa", b"Sb")),
            vec![b"Sa".to_vec(), b"Sb".to_vec()]
        );
        assert_eq!(kv.iter().count(), 8);
        assert_eq!(
            kv.scan_prefix(b"S").next_back().unwrap().unwrap().0,
            b"S\xff\xff"
        );
    }

    #[test]
    fn an_error_in_a_write_leaves_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::open(&dir.path().join(FILE)).unwrap();
        let failed: Result<(), StoreError> = kv.write(true, |t| {
            t.insert(&b"a"[..], &b"1"[..])?;
            Err(StoreError::Corrupt)
        });
        assert!(failed.is_err());
        assert_eq!(kv.get(b"a").unwrap(), None);
        kv.write(false, |t| {
            t.insert(&b"a"[..], &b"2"[..])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(kv.get(b"a").unwrap(), Some(b"2".to_vec()));
    }
}
