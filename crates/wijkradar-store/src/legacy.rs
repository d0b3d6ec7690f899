//! Stores of formats 1 and 2: sled, in a directory `store/` of the data
//! directory. Read only, to copy them into redb ([`crate::upgrade`]).

use std::path::Path;

use crate::{FORMAT, FORMAT_KEY, SLED_DIR, StoreError, format_of, kv, write_format};

/// Records copied per transaction.
const COPY_BATCH: usize = 10_000;

/// Where the sled store goes once copied: kept until the operator has seen
/// the server run on the copy, then deleted by hand (its pseudonyms are
/// sealed under the period secrets, which retention erases either way).
pub const MOVED_ASIDE: &str = "store.sled-before-upgrade";

/// Copies the sled store of data directory `dir` into a new `store.redb`,
/// marks it with this format, and moves the sled directory aside. Returns
/// the sled store's format. A copy cut short is started again from the
/// beginning: the redb file only takes its name when complete.
pub(crate) fn copy_into_redb(dir: &Path, mut progress: impl FnMut(u64)) -> Result<u32, StoreError> {
    let target = dir.join(kv::FILE);
    if target.exists() {
        return Err(StoreError::BackupFormat(format!(
            "{} holds both a sled store (store/) and {}: move one away first",
            dir.display(),
            kv::FILE
        )));
    }
    let sled_dir = dir.join(SLED_DIR);
    let db = sled::Config::new().path(&sled_dir).open()?;
    let found = match db.get(FORMAT_KEY)? {
        Some(v) => u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt)?),
        None => 1,
    };
    if found >= FORMAT {
        return Err(StoreError::Corrupt);
    }
    let partial = dir.join(format!("{}.partial", kv::FILE));
    if partial.exists() {
        std::fs::remove_file(&partial).map_err(|source| StoreError::Keys {
            path: partial.clone(),
            source,
        })?;
    }
    let copy = kv::Kv::open(&partial)?;
    let mut batch = kv::Batch::default();
    let (mut copied, mut in_batch) = (0u64, 0usize);
    for kv in db.iter() {
        let (k, v) = kv?;
        batch.insert(k.as_ref(), v.as_ref());
        copied += 1;
        in_batch += 1;
        if in_batch == COPY_BATCH {
            let full = std::mem::take(&mut batch);
            copy.write(false, |t| full.apply(t))?;
            in_batch = 0;
            progress(copied);
        }
    }
    copy.write(false, |t| batch.apply(t))?;
    write_format(&copy, FORMAT)?;
    debug_assert_eq!(format_of(&copy)?, Some(FORMAT));
    progress(copied);
    drop(copy);
    drop(db);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Keys { path, source }
    };
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    std::fs::rename(&sled_dir, dir.join(MOVED_ASIDE)).map_err(io(&sled_dir))?;
    Ok(found)
}
