//! Erasure that holds for the bytes on disk: a secret per (signal type,
//! month), kept outside the store file in a small file of fixed-size slots.
//!
//! redb copies a page on write and frees the old one without clearing it: a
//! removed key stays in freed pages until they happen to be reused, so
//! deleting a signal does not remove its bytes. The stored signal therefore never holds the server pseudonym in the
//! clear: its key holds an HMAC of the pseudonym under the period's secret
//! (unique per household, type and month, for de-duplication), and its value
//! the pseudonym sealed with ChaCha20-Poly1305 under the same secret (to link
//! a household's signals across months). Purging a period removes its records
//! from the store and then overwrites the period's slot in this file with
//! zeros in place: whatever the store file still holds of it can no longer be
//! opened or linked.
//!
//! File: records of 38 bytes, type id (u16) · month index (u32) · secret (32),
//! appended and flushed (fsync) before any record under the secret is
//! written. A zeroed secret is an erased period.
//!
//! The overwrite is in place on file systems that write in place (ext4, xfs);
//! on copy-on-write file systems (btrfs, zfs) and below the file system (SSD
//! wear levelling) old blocks may survive: run the data directory on
//! encrypted storage as well (see docs/operations.md).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use ring::aead::{self, CHACHA20_POLY1305, LessSafeKey, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use wijkradar_domain::{Month, ServerPseudonym};

use crate::StoreError;

const RECORD: usize = 38;
/// A sealed pseudonym: 32 bytes and the AEAD tag.
pub(crate) const SEALED: usize = 32 + 16;

/// The secret of one (type, month), as the two keys made from it.
pub(crate) struct PeriodKey {
    tag: hmac::Key,
    seal: LessSafeKey,
}

impl std::fmt::Debug for PeriodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeriodKey(..)")
    }
}

impl PeriodKey {
    fn from_secret(secret: &[u8; 32]) -> PeriodKey {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let sub = |label: &[u8]| hmac::sign(&root, label);
        let tag = hmac::Key::new(hmac::HMAC_SHA256, sub(b"wijkradar period tag").as_ref());
        let seal = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, sub(b"wijkradar period seal").as_ref())
                .expect("32-byte key"),
        );
        PeriodKey { tag, seal }
    }

    /// The household's id within the period: unique, not linkable across
    /// periods without the secrets. The first 16 bytes of an HMAC-SHA256:
    /// a collision among the households of one period is as likely as
    /// guessing a 128-bit key.
    pub(crate) fn tag(&self, p: &ServerPseudonym) -> Tag {
        hmac::sign(&self.tag, p.as_bytes()).as_ref()[..TAG]
            .try_into()
            .expect("16 bytes")
    }

    /// The pseudonym sealed; the tag (unique per pseudonym under this key)
    /// gives the nonce.
    pub(crate) fn seal(&self, tag: &Tag, p: &ServerPseudonym) -> [u8; SEALED] {
        self.seal_as(Seal::Own, tag, p)
    }

    /// A linked pseudonym sealed beside the signal's own.
    pub(crate) fn seal_link(&self, link: Link, tag: &Tag, p: &ServerPseudonym) -> [u8; SEALED] {
        self.seal_as(Seal::Link(link), tag, p)
    }

    pub(crate) fn open(&self, tag: &Tag, sealed: &[u8]) -> Option<ServerPseudonym> {
        self.open_as(Seal::Own, tag, sealed)
    }

    pub(crate) fn open_link(
        &self,
        link: Link,
        tag: &Tag,
        sealed: &[u8],
    ) -> Option<ServerPseudonym> {
        self.open_as(Seal::Link(link), tag, sealed)
    }

    /// Nonce: 11 bytes of the tag and the seal's kind, so that the seals
    /// of one record never share a nonce, and those of two records do so
    /// only if 88 bits of their tags agree. Associated data: the whole tag
    /// and the kind.
    fn seal_as(&self, kind: Seal, tag: &Tag, p: &ServerPseudonym) -> [u8; SEALED] {
        let mut buf = p.as_bytes().to_vec();
        let aad = kind.aad(tag);
        self.seal
            .seal_in_place_append_tag(kind.nonce(tag), aead::Aad::from(&aad[..]), &mut buf)
            .expect("sealing 32 bytes");
        buf.try_into().expect("48 bytes")
    }

    fn open_as(&self, kind: Seal, tag: &Tag, sealed: &[u8]) -> Option<ServerPseudonym> {
        let mut buf = sealed.to_vec();
        let aad = kind.aad(tag);
        let plain = self
            .seal
            .open_in_place(kind.nonce(tag), aead::Aad::from(&aad[..]), &mut buf)
            .ok()?;
        Some(ServerPseudonym::from_bytes(plain.try_into().ok()?))
    }

    /// Format 2's tag: the whole HMAC, in the key and in the seals.
    #[cfg(test)]
    pub(crate) fn tag_v2(&self, p: &ServerPseudonym) -> [u8; 32] {
        hmac::sign(&self.tag, p.as_bytes())
            .as_ref()
            .try_into()
            .expect("32 bytes")
    }

    /// Opens a seal of format 2 (`link` None for the signal's own).
    pub(crate) fn open_v2(
        &self,
        link: Option<Link>,
        tag: &[u8; 32],
        sealed: &[u8],
    ) -> Option<ServerPseudonym> {
        let (nonce, aad) = v2::nonce_and_aad(link, tag);
        let mut buf = sealed.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, aead::Aad::from(&aad[..]), &mut buf)
            .ok()?;
        Some(ServerPseudonym::from_bytes(plain.try_into().ok()?))
    }

    /// Seals as format 2 did: test fixtures of stores to upgrade.
    #[cfg(test)]
    pub(crate) fn seal_v2(
        &self,
        link: Option<Link>,
        tag: &[u8; 32],
        p: &ServerPseudonym,
    ) -> [u8; SEALED] {
        let (nonce, aad) = v2::nonce_and_aad(link, tag);
        let mut buf = p.as_bytes().to_vec();
        self.seal
            .seal_in_place_append_tag(nonce, aead::Aad::from(&aad[..]), &mut buf)
            .expect("sealing 32 bytes");
        buf.try_into().expect("48 bytes")
    }
}

/// Bytes of a household tag in an `S` key (format 3; format 2 kept 32).
pub(crate) const TAG: usize = 16;
pub(crate) type Tag = [u8; TAG];

/// What a pseudonym sealed beside a signal's own is to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// A person's household.
    Household,
    /// The household under the previous key epoch (sent during a key
    /// change's overlap).
    PreviousEpoch,
}

/// Which of a record's seals.
#[derive(Debug, Clone, Copy)]
enum Seal {
    Own,
    Link(Link),
}

impl Seal {
    fn mark(self) -> u8 {
        match self {
            Seal::Own => b'S',
            Seal::Link(Link::Household) => b'H',
            Seal::Link(Link::PreviousEpoch) => b'E',
        }
    }

    fn nonce(self, tag: &Tag) -> aead::Nonce {
        let mut n = [self.mark(); 12];
        n[..11].copy_from_slice(&tag[..11]);
        aead::Nonce::assume_unique_for_key(n)
    }

    fn aad(self, tag: &Tag) -> [u8; TAG + 1] {
        let mut aad = [self.mark(); TAG + 1];
        aad[..TAG].copy_from_slice(tag);
        aad
    }
}

/// Format 2's nonces and associated data, read only to upgrade.
mod v2 {
    use super::{Link, aead};

    pub(super) fn nonce_and_aad(link: Option<Link>, tag: &[u8; 32]) -> (aead::Nonce, Vec<u8>) {
        let at = match link {
            None => 0,
            Some(Link::Household) => 12,
            Some(Link::PreviousEpoch) => 20,
        };
        let nonce = aead::Nonce::assume_unique_for_key(tag[at..at + 12].try_into().expect("12"));
        let mut aad = tag.to_vec();
        match link {
            None => {}
            Some(Link::Household) => aad.push(b'H'),
            Some(Link::PreviousEpoch) => aad.push(b'E'),
        }
        (nonce, aad)
    }
}

/// [`PeriodKey::tag`] from the secret itself (for [`crate::forensic`]).
#[cfg(feature = "dev")]
pub(crate) fn tag_with_secret(secret: &[u8; 32], p: &ServerPseudonym) -> Tag {
    PeriodKey::from_secret(secret).tag(p)
}

#[derive(Debug)]
struct Slot {
    offset: u64,
    key: Arc<PeriodKey>,
}

/// The period secrets of a store.
#[derive(Debug)]
pub(crate) struct PeriodKeys {
    path: PathBuf,
    file: Mutex<File>,
    slots: RwLock<HashMap<(u16, Month), Slot>>,
}

impl PeriodKeys {
    /// The file of the secrets.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn open(path: &Path) -> Result<PeriodKeys, StoreError> {
        let io = |source| StoreError::Keys {
            path: path.to_owned(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        // A record cut short by a crash while it was appended was never
        // used: nothing is written under a secret before it is flushed.
        let whole = bytes.len() - bytes.len() % RECORD;
        if whole != bytes.len() {
            file.set_len(whole as u64).map_err(io)?;
        }
        let mut slots = HashMap::new();
        for (i, r) in bytes[..whole].chunks_exact(RECORD).enumerate() {
            let secret: [u8; 32] = r[6..].try_into().expect("32 bytes");
            if secret == [0; 32] {
                continue;
            }
            let type_id = u16::from_be_bytes([r[0], r[1]]);
            let month = Month::from_index(u32::from_be_bytes(r[2..6].try_into().expect("4")))
                .ok_or(StoreError::Corrupt)?;
            slots.insert(
                (type_id, month),
                Slot {
                    offset: (i * RECORD) as u64,
                    key: Arc::new(PeriodKey::from_secret(&secret)),
                },
            );
        }
        Ok(PeriodKeys {
            path: path.to_owned(),
            file: Mutex::new(file),
            slots: RwLock::new(slots),
        })
    }

    fn io(&self) -> impl Fn(std::io::Error) -> StoreError + '_ {
        |source| StoreError::Keys {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn get(&self, type_id: u16, month: Month) -> Option<Arc<PeriodKey>> {
        self.slots
            .read()
            .expect("period keys lock")
            .get(&(type_id, month))
            .map(|s| s.key.clone())
    }

    /// The period's key, made and flushed to the file first if it is new
    /// (by the writer only).
    pub(crate) fn get_or_create(
        &self,
        type_id: u16,
        month: Month,
    ) -> Result<Arc<PeriodKey>, StoreError> {
        if let Some(k) = self.get(type_id, month) {
            return Ok(k);
        }
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| StoreError::Corrupt)?;
        let mut record = [0u8; RECORD];
        record[..2].copy_from_slice(&type_id.to_be_bytes());
        record[2..6].copy_from_slice(&month.index().to_be_bytes());
        record[6..].copy_from_slice(&secret);
        let mut file = self.file.lock().expect("period key file lock");
        let offset = file.seek(SeekFrom::End(0)).map_err(self.io())?;
        file.write_all(&record).map_err(self.io())?;
        file.sync_data().map_err(self.io())?;
        let key = Arc::new(PeriodKey::from_secret(&secret));
        record.fill(0);
        secret.fill(0);
        self.slots.write().expect("period keys lock").insert(
            (type_id, month),
            Slot {
                offset,
                key: key.clone(),
            },
        );
        Ok(key)
    }

    /// Overwrites the period's secret with zeros, in place, and flushes.
    pub(crate) fn erase(&self, type_id: u16, month: Month) -> Result<(), StoreError> {
        let Some(slot) = self
            .slots
            .write()
            .expect("period keys lock")
            .remove(&(type_id, month))
        else {
            return Ok(());
        };
        let mut file = self.file.lock().expect("period key file lock");
        file.seek(SeekFrom::Start(slot.offset + 6))
            .map_err(self.io())?;
        file.write_all(&[0u8; 32]).map_err(self.io())?;
        file.sync_data().map_err(self.io())
    }

    /// Every period with a live secret.
    pub(crate) fn periods(&self) -> Vec<(u16, Month)> {
        let mut v: Vec<_> = self
            .slots
            .read()
            .expect("period keys lock")
            .keys()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }
}
