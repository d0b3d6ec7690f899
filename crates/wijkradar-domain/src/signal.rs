//! Signals and batches as the aggregator accepts them, after validation.

use std::fmt;

use crate::{BuurtCode, Month, PartnerPseudonym, SignalTypeName};

/// A small severity bucket, 1 (low) to 3 (high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Severity(u8);

impl Severity {
    pub fn new(v: u32) -> Option<Severity> {
        (1..=3).contains(&v).then_some(Severity(v as u8))
    }
    pub fn get(self) -> u8 {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub pseudonym: PartnerPseudonym,
    pub buurt: BuurtCode,
    pub signal_type: SignalTypeName,
    pub month: Month,
    pub severity: Option<Severity>,
    /// For a signal about a person: the pseudonym of its household, through
    /// which the derived indicators link.
    pub household: Option<PartnerPseudonym>,
    /// During a key change's overlap: the household's pseudonym (a
    /// person's household's) under the previous epoch's key.
    pub previous: Option<PartnerPseudonym>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchIdError {
    #[error("must be 1 to 128 printable ASCII characters")]
    Invalid,
}

/// A partner-chosen batch id: 1 to 128 printable ASCII characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BatchId(String);

impl BatchId {
    pub fn new(s: &str) -> Result<BatchId, BatchIdError> {
        let ok = (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(BatchId(s.to_owned()))
        } else {
            Err(BatchIdError::Invalid)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchId({})", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyIdError {
    #[error("must be 1 to 64 characters of A-Z, a-z, 0-9, `.`, `-` and `_`")]
    Invalid,
}

/// The public id of the partner key a batch was pseudonymised with (domain,
/// epoch and a digest, for example `GM0034.2026.1f0c2a9b3d4e5f60`). It tells
/// epochs apart and reveals nothing of the key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PseudonymKeyId(String);

impl PseudonymKeyId {
    pub fn new(s: &str) -> Result<PseudonymKeyId, KeyIdError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if ok {
            Ok(PseudonymKeyId(s.to_owned()))
        } else {
            Err(KeyIdError::Invalid)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its pseudonymisation domain: the part before the first `.`. Keys of
    /// one domain link; keys of different domains never do.
    pub fn domain(&self) -> &str {
        self.0.split('.').next().unwrap_or("")
    }
}

impl fmt::Display for PseudonymKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PseudonymKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PseudonymKeyId({})", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub key_id: PseudonymKeyId,
    /// During a key change's overlap: the previous epoch's key.
    pub previous_key_id: Option<PseudonymKeyId>,
    pub signals: Vec<Signal>,
}

/// The distinct households of one cell (type × month × area) and the cell's
/// key: the wrapping sum of those households' secret record keys. Both add
/// up exactly from buurten to wijk and gemeente, because a household is in
/// one buurt per type and month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CellTotal {
    pub households: u64,
    pub cell_key: u32,
}

impl CellTotal {
    /// One household with this record key.
    pub fn one(record_key: u32) -> CellTotal {
        CellTotal {
            households: 1,
            cell_key: record_key,
        }
    }
}

impl std::ops::Add for CellTotal {
    type Output = CellTotal;

    fn add(self, other: CellTotal) -> CellTotal {
        CellTotal {
            households: self.households + other.households,
            cell_key: self.cell_key.wrapping_add(other.cell_key),
        }
    }
}

impl std::ops::AddAssign for CellTotal {
    fn add_assign(&mut self, other: CellTotal) {
        *self = *self + other;
    }
}
