//! Batches stored but not yet in the audit log: `U` · partner length ·
//! partner · batch id → its signals per type, as JSON. Written in the same
//! atomic step as the batch, removed once the batch's audit entry is on
//! disk ([`crate::IngestQueue::audited`]). A crash in between leaves the
//! record; the server's start-up then writes the missing entry.

use std::collections::BTreeMap;

use crate::{Store, StoreError, StoredSignal};

pub(crate) const UNAUDITED: u8 = b'U';

pub(crate) fn key(partner: &str, id: &str) -> Vec<u8> {
    let name = &partner.as_bytes()[..partner.len().min(255)];
    let mut k = Vec::with_capacity(2 + name.len() + id.len());
    k.push(UNAUDITED);
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k.extend_from_slice(id.as_bytes());
    k
}

pub(crate) fn encode(signals: &[StoredSignal]) -> Vec<u8> {
    let mut per_type: BTreeMap<&str, u64> = BTreeMap::new();
    for s in signals {
        *per_type.entry(s.signal_type.as_str()).or_default() += 1;
    }
    serde_json::to_vec(&per_type).expect("a map serialises")
}

/// A stored batch without its audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unaudited {
    pub partner: String,
    pub batch_id: String,
    /// Signals per type, as the batch held them.
    pub signals: BTreeMap<String, u64>,
}

impl Store {
    /// Stored batches whose audit entry may be missing.
    pub fn unaudited(&self) -> Result<Vec<Unaudited>, StoreError> {
        let corrupt = || StoreError::Corrupt;
        self.db
            .scan_prefix([UNAUDITED])
            .map(|kv| {
                let (k, v) = kv?;
                let n = usize::from(*k.get(1).ok_or_else(corrupt)?);
                let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt());
                Ok(Unaudited {
                    partner: text(k.get(2..2 + n).ok_or_else(corrupt)?)?,
                    batch_id: text(k.get(2 + n..).ok_or_else(corrupt)?)?,
                    signals: serde_json::from_slice(&v).map_err(|_| corrupt())?,
                })
            })
            .collect()
    }
}
