//! Stores of older formats, read only to bring them to this one
//! ([`crate::upgrade`]). Formats 1 and 2 were sled, in a directory `store/`
//! of the data directory; a backup of one restores into redb with its
//! records as they were. Either way every record is copied into a new file,
//! `S` records converted (format 3's 16-byte tag, sealed again), and the new
//! file takes the store's name only when complete: a copy cut short is
//! started again from the beginning.

use std::path::Path;

use wijkradar_domain::Month;

use crate::shred::{Link, PeriodKeys, Tag};
use crate::{
    FORMAT, FORMAT_KEY, PREVIOUS_MARK, SIGNAL, SIGNAL_VALUE, SLED_DIR, StoreError, kv, signal_key,
    signal_links, write_format,
};

/// Records copied per transaction.
const COPY_BATCH: usize = 10_000;

/// Length of an `S` key of formats 1 and 2 (a 32-byte tag).
const SIGNAL_KEY_V2: usize = 43;

/// Where the sled store goes once copied: kept until the operator has seen
/// the server run on the copy, then deleted by hand (its pseudonyms are
/// sealed under the period secrets, which retention erases either way).
pub const MOVED_ASIDE: &str = "store.sled-before-upgrade";

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::File {
        path: path.to_owned(),
        source,
    }
}

/// Copies the sled store of data directory `dir` into a new `store.redb`
/// of this format, and moves the sled directory aside. Returns the sled
/// store's format.
pub(crate) fn copy_from_sled(dir: &Path, progress: impl FnMut(u64)) -> Result<u32, StoreError> {
    let target = dir.join(kv::FILE);
    if target.exists() {
        return Err(StoreError::File {
            path: target,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the data directory holds a sled store (store/) as well: move one of them away first",
            ),
        });
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
    let records = db.iter().map(|kv| {
        let (k, v) = kv?;
        Ok((k.to_vec(), v.to_vec()))
    });
    let partial = copy_converted(dir, records, progress)?;
    drop(db);
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    std::fs::rename(&sled_dir, dir.join(MOVED_ASIDE)).map_err(io(&sled_dir))?;
    Ok(found)
}

/// Converts the redb store of data directory `dir`, of format `found`
/// (a restored backup of formats 1 or 2), to this format.
pub(crate) fn convert_in_place(dir: &Path, progress: impl FnMut(u64)) -> Result<(), StoreError> {
    let target = dir.join(kv::FILE);
    let old = kv::Kv::open(&target)?;
    let partial = copy_converted(dir, old.iter(), progress)?;
    drop(old);
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    Ok(())
}

/// Writes `records`, converted, into `store.redb.partial` in `dir`,
/// marked with this format and committed durably; returns its path.
fn copy_converted(
    dir: &Path,
    records: impl Iterator<Item = Result<kv::Record, StoreError>>,
    mut progress: impl FnMut(u64),
) -> Result<std::path::PathBuf, StoreError> {
    let keys = PeriodKeys::open(&dir.join(crate::backup::KEYS_FILE))?;
    let partial = dir.join(format!("{}.partial", kv::FILE));
    if partial.exists() {
        std::fs::remove_file(&partial).map_err(io(&partial))?;
    }
    let copy = kv::Kv::open(&partial)?;
    let mut batch = kv::Batch::default();
    let (mut copied, mut in_batch) = (0u64, 0usize);
    for kv in records {
        let (k, v) = kv?;
        if let Some((k, v)) = convert(&keys, k, v)? {
            batch.insert(k, v);
        }
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
    progress(copied);
    Ok(partial)
}

/// A record of format 1 or 2 as this format has it. An `S` record gets the
/// first 16 bytes of its tag and is sealed again under the nonces made from
/// them; every other record stays as it is. None for an `S` record whose
/// period's secret is erased: retention already took it.
fn convert(keys: &PeriodKeys, k: Vec<u8>, v: Vec<u8>) -> Result<Option<kv::Record>, StoreError> {
    if k.first() != Some(&SIGNAL) {
        return Ok(Some((k, v)));
    }
    if k.len() != SIGNAL_KEY_V2 || v.len() < SIGNAL_VALUE {
        return Err(StoreError::Corrupt);
    }
    let type_id = u16::from_be_bytes([k[5], k[6]]);
    let month = Month::from_index(u32::from_be_bytes(k[7..11].try_into().expect("4")))
        .ok_or(StoreError::Corrupt)?;
    let Some(key) = keys.get(type_id, month) else {
        return Ok(None);
    };
    let old: [u8; 32] = k[11..].try_into().expect("32 bytes");
    let tag: Tag = old[..crate::shred::TAG].try_into().expect("16 bytes");
    let open = |link, sealed| key.open_v2(link, &old, sealed).ok_or(StoreError::Corrupt);
    let (household, earlier) = signal_links(&v)?;
    let mut value = v[..9].to_vec();
    value.extend_from_slice(&key.seal(&tag, &open(None, &v[9..SIGNAL_VALUE])?));
    if let Some(sealed) = household {
        let h = open(Some(Link::Household), sealed)?;
        value.extend_from_slice(&key.seal_link(Link::Household, &tag, &h));
    }
    if let Some(sealed) = earlier {
        let before = open(Some(Link::PreviousEpoch), sealed)?;
        value.push(PREVIOUS_MARK);
        value.extend_from_slice(&key.seal_link(Link::PreviousEpoch, &tag, &before));
    }
    let g: [u8; 4] = k[1..5].try_into().expect("4 bytes");
    Ok(Some((signal_key(&g, &tag, type_id, month).to_vec(), value)))
}
