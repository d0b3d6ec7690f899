//! One agent run, as steps the command line (and the tests) put together:
//! [`prepare`] reads and pseudonymises an export into encoded batches,
//! [`Outbox::import`] keeps them, [`send_pending`] sends what the outbox
//! holds and forgets each batch once it is acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use prost::Message;
use tonic::transport::Channel;
use wijkradar_proto::v1 as pb;

use crate::client::{self, ClientError, SubmitReport};
use crate::export::{ExportError, ExportRules, ExportSummary, read_export};
use crate::outbox::{Outbox, OutboxError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Export { path: PathBuf, source: ExportError },
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// An export read and pseudonymised, not yet in the outbox.
#[derive(Debug)]
pub struct Prepared {
    /// SHA-256 of the export file's bytes.
    pub digest: [u8; 32],
    pub summary: ExportSummary,
    /// The batches, encoded as they are kept and sent.
    pub batches: Vec<Vec<u8>>,
    /// Signals per (buurt, type): what would go out.
    pub per_buurt: BTreeMap<(String, String), u64>,
    /// The first signals, exactly as they would be sent.
    pub sample: Vec<pb::Signal>,
}

/// Counts the bytes read, for a progress bar, and hashes them, so that
/// the file is read once.
struct Counting<R, F> {
    inner: R,
    progress: F,
    read: u64,
    digest: ring::digest::Context,
}

impl<R: Read, F: FnMut(u64)> Read for Counting<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.digest.update(&buf[..n]);
        (self.progress)(self.read);
        Ok(n)
    }
}

/// How many signals of a prepared run are shown as a sample.
pub const SAMPLE_SIGNALS: usize = 3;

/// Reads, normalises, maps and pseudonymises an export into batches of
/// `batch_size` under `key_id`. `progress` is told the bytes read so far.
/// Any file-level error returns before anything could be kept or sent.
pub fn prepare(
    path: &Path,
    rules: &ExportRules<'_>,
    batch_size: usize,
    progress: impl FnMut(u64),
) -> Result<Prepared, RunError> {
    let file = std::fs::File::open(path).map_err(|source| RunError::Io {
        path: path.to_owned(),
        source,
    })?;
    let key_id = rules.key.id().to_string();
    let mut batches = Vec::new();
    let mut current: Vec<pb::Signal> = Vec::with_capacity(batch_size);
    // Buurt → type → signals; looked up by reference, so a signal costs no
    // allocation here.
    let mut counts: HashMap<String, HashMap<String, u64>> = HashMap::new();
    let mut sample = Vec::new();
    let finish = |signals: &mut Vec<pb::Signal>, batches: &mut Vec<Vec<u8>>| {
        let signals = std::mem::replace(signals, Vec::with_capacity(batch_size));
        let batch = pb::Batch {
            batch_id: client::batch_id(&key_id, &signals),
            key_id: key_id.clone(),
            signals,
        };
        batches.push(batch.encode_to_vec());
    };
    let mut input = Counting {
        inner: file,
        progress,
        read: 0,
        digest: ring::digest::Context::new(&ring::digest::SHA256),
    };
    let summary = read_export(&mut input, rules, |signal| {
        if sample.len() < SAMPLE_SIGNALS {
            sample.push(signal.clone());
        }
        let per_type = match counts.get_mut(&signal.buurt_code) {
            Some(m) => m,
            None => counts.entry(signal.buurt_code.clone()).or_default(),
        };
        match per_type.get_mut(&signal.signal_type) {
            Some(n) => *n += 1,
            None => {
                per_type.insert(signal.signal_type.clone(), 1);
            }
        }
        current.push(signal);
        if current.len() == batch_size {
            finish(&mut current, &mut batches);
        }
    })
    .map_err(|source| RunError::Export {
        path: path.to_owned(),
        source,
    })?;
    if !current.is_empty() {
        finish(&mut current, &mut batches);
    }
    // The parser stops at the last record; hash whatever follows it too.
    std::io::copy(&mut input, &mut std::io::sink()).map_err(|source| RunError::Io {
        path: path.to_owned(),
        source,
    })?;
    let digest = input
        .digest
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes");
    let per_buurt = counts
        .into_iter()
        .flat_map(|(buurt, types)| types.into_iter().map(move |(t, n)| ((buurt.clone(), t), n)))
        .collect();
    Ok(Prepared {
        digest,
        summary,
        batches,
        per_buurt,
        sample,
    })
}

/// What [`send_pending`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SendReport {
    pub batches: usize,
    pub signals: u64,
    pub stored: usize,
    pub already_stored: usize,
}

/// Sends every pending batch of the outbox on one stream. `on_ack` is told
/// the signals acknowledged so far, before the batch is removed from the
/// outbox. On an error, whatever was not acknowledged stays in the outbox.
pub async fn send_pending(
    outbox: &Outbox,
    channel: Channel,
    mut on_ack: impl FnMut(u64),
) -> Result<SendReport, RunError> {
    let pending = outbox.pending()?;
    if pending.is_empty() {
        return Ok(SendReport::default());
    }
    let seqs: Vec<(u64, u64)> = pending
        .iter()
        .map(|(seq, b)| (*seq, b.signals.len() as u64))
        .collect();
    let batches = pending.into_iter().map(|(_, b)| b).collect();
    let mut signals = 0;
    let mut remove_error = None;
    let result = client::send(channel, batches, |i, _| {
        let (seq, n) = seqs[i];
        signals += n;
        on_ack(signals);
        if let Err(e) = outbox.remove(seq) {
            remove_error.get_or_insert(e);
        }
    })
    .await;
    // What was acknowledged is forgotten durably, even after an error.
    outbox.flush()?;
    if let Some(e) = remove_error {
        return Err(e.into());
    }
    let SubmitReport {
        batches,
        stored,
        already_stored,
    } = result?;
    Ok(SendReport {
        batches,
        signals,
        stored,
        already_stored,
    })
}
