//! Online backup of the store, and its restore into a new data directory.
//!
//! The writer thread makes the copy ([`crate::IngestQueue::backup`]). No
//! batch, purge or put is written meanwhile, so the copy holds whole
//! batches only. A release snapshot written by a query at the same moment
//! may be in it or not: a restored server computes a missing one again,
//! with the same cell keys, so it answers the same.
//!
//! A backup directory holds `store.records` (every key and value of the
//! store) and `period-keys` (the secrets the records are sealed with). The
//! server adds the audit log and a manifest with their SHA-256.
//!
//! `store.records`: the line `WIJKRADAR-STORE-RECORDS 1`, then per record
//! the key's length (u32, big-endian), the key, the value's length, the
//! value.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::{Store, StoreError};

pub const RECORDS_FILE: &str = "store.records";
pub const KEYS_FILE: &str = "period-keys";
const MAGIC: &[u8] = b"WIJKRADAR-STORE-RECORDS 1\n";
/// No key or value of the store is near this long.
const MAX_PART: usize = 64 << 20;
/// Records written in one transaction on restore.
const RESTORE_BATCH: usize = 10_000;

/// What a backup copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub records: u64,
    /// Bytes of `store.records`.
    pub bytes: u64,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Backup {
        path: path.to_owned(),
        source,
    }
}

/// A new file only the owner can read: the records hold sealed pseudonyms
/// and the keys file their secrets.
fn create_private(path: &Path) -> Result<File, StoreError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io_error(path))
}

/// Copies the store into the existing directory `dir`. Runs on the writer
/// thread.
pub(crate) fn dump(store: &Store, dir: &Path) -> Result<Copied, StoreError> {
    let path = dir.join(RECORDS_FILE);
    let file = create_private(&path)?;
    let mut out = BufWriter::new(file);
    let io = io_error(&path);
    out.write_all(MAGIC).map_err(&io)?;
    let mut copied = Copied {
        records: 0,
        bytes: MAGIC.len() as u64,
    };
    for kv in store.db.iter() {
        let (k, v) = kv?;
        for part in [&k[..], &v[..]] {
            out.write_all(&(part.len() as u32).to_be_bytes())
                .map_err(&io)?;
            out.write_all(part).map_err(&io)?;
            copied.bytes += 4 + part.len() as u64;
        }
        copied.records += 1;
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(&io)?;
    // The secrets after the records: every secret a copied record was
    // sealed with was flushed before the record was written.
    let keys = dir.join(KEYS_FILE);
    let mut to = create_private(&keys)?;
    let bytes = std::fs::read(store.keys.path()).map_err(io_error(store.keys.path()))?;
    to.write_all(&bytes).map_err(io_error(&keys))?;
    to.sync_all().map_err(io_error(&keys))?;
    Ok(copied)
}

/// Restores the store of backup `dir` into `data_dir`, which must not hold
/// a store yet. `progress` is told the bytes of `store.records` read so
/// far. Returns the records restored.
pub fn restore(
    dir: &Path,
    data_dir: &Path,
    mut progress: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let store_file = data_dir.join(crate::kv::FILE);
    let keys = data_dir.join(KEYS_FILE);
    if store_file.exists() || data_dir.join(crate::SLED_DIR).exists() || keys.exists() {
        return Err(StoreError::BackupFormat(format!(
            "{} already holds a store: restore into a new data directory",
            data_dir.display()
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
    let path = dir.join(RECORDS_FILE);
    let io = io_error(&path);
    let mut input = BufReader::new(File::open(&path).map_err(&io)?);
    let mut magic = vec![0; MAGIC.len()];
    input.read_exact(&mut magic).map_err(&io)?;
    if magic != MAGIC {
        return Err(StoreError::BackupFormat(format!(
            "{} is not a Wijkradar store backup of format 1",
            path.display()
        )));
    }
    let db = crate::kv::Kv::open(&store_file)?;
    let mut batch = crate::kv::Batch::default();
    let (mut records, mut in_batch, mut read) = (0u64, 0usize, MAGIC.len() as u64);
    loop {
        let Some(key) = read_part(&mut input, &path, true)? else {
            break;
        };
        let value = read_part(&mut input, &path, false)?.expect("a value after a key");
        read += 8 + (key.len() + value.len()) as u64;
        batch.insert(key, value);
        records += 1;
        in_batch += 1;
        if in_batch == RESTORE_BATCH {
            let full = std::mem::take(&mut batch);
            db.write(false, |t| full.apply(t))?;
            in_batch = 0;
            progress(read);
        }
    }
    db.write(true, |t| batch.apply(t))?;
    progress(read);
    drop(db);
    let mut to = create_private(&keys)?;
    let bytes = std::fs::read(dir.join(KEYS_FILE)).map_err(io_error(&dir.join(KEYS_FILE)))?;
    to.write_all(&bytes).map_err(io_error(&keys))?;
    to.sync_all().map_err(io_error(&keys))?;
    Ok(records)
}

/// One length-prefixed part; `None` at a clean end of the file where a key
/// may start (`at_key`), an error where the file is cut short.
fn read_part(
    input: &mut impl Read,
    path: &Path,
    at_key: bool,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 && at_key => return Ok(None),
            Ok(0) => return Err(cut_short(path)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(path)(e)),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PART {
        return Err(StoreError::BackupFormat(format!(
            "{} holds a record of {len} bytes: not a store backup",
            path.display()
        )));
    }
    let mut part = vec![0; len];
    input.read_exact(&mut part).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            cut_short(path)
        } else {
            io_error(path)(e)
        }
    })?;
    Ok(Some(part))
}

fn cut_short(path: &Path) -> StoreError {
    StoreError::BackupFormat(format!("{} is cut short", path.display()))
}
