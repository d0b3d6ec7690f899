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
    #[error(transparent)]
    Key(#[from] wijkradar_pseudonym::KeyError),
    #[error("{path}: {source}")]
    Pc6 {
        path: PathBuf,
        source: crate::pc6::Pc6Error,
    },
    #[error(
        "agent.previous_pseudonym_key: {previous} is not an earlier key of the domain of agent.pseudonym_key ({current})"
    )]
    PreviousKey { previous: String, current: String },
    #[error("reject report {path}: {source}")]
    Report { path: PathBuf, source: csv::Error },
    #[error(
        "sending to {url}: {pending} signals stay in the outbox; `wijkradar agent send` sends them later"
    )]
    Send {
        url: String,
        pending: u64,
        source: Box<RunError>,
    },
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
    let previous_key_id = rules.previous_key.map(|k| k.id().to_string());
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
            previous_key_id: previous_key_id.clone().unwrap_or_default(),
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
    /// Batches the aggregator refused for good, set aside in the outbox.
    pub set_aside: usize,
}

/// Longest wait the agent accepts when the aggregator says the partner is
/// over its rate limit; a longer one ends the run (the outbox keeps the rest).
const MAX_RATE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Sends every pending batch of the outbox. `on_ack` is told the signals
/// acknowledged so far, before the batch is removed from the outbox. When
/// the aggregator refuses a batch because the partner is over its rate
/// limit, waits as long as it says and sends the rest. A batch refused for
/// good ([`client::refuses_the_batch`]: a field of it at fault) is set
/// aside with the reason, and the rest is sent. On another error (an
/// outage, a certificate refused), whatever was not acknowledged stays in
/// the outbox for the next run.
pub async fn send_pending(
    outbox: &Outbox,
    channel: Channel,
    mut on_ack: impl FnMut(u64),
) -> Result<SendReport, RunError> {
    let mut total = SendReport::default();
    loop {
        let done = total.signals;
        let result = send_pending_once(outbox, channel.clone(), |n| on_ack(done + n)).await;
        let (report, error, failed) = match result {
            Ok(report) => return Ok(total.add(report)),
            Err(e) => e,
        };
        total = total.add(report);
        match (&error, failed) {
            (RunError::Client(ClientError::Refused(status)), Some(seq))
                if client::refuses_the_batch(status) =>
            {
                tracing::warn!(code = ?status.code(), "a batch was refused for good; set aside");
                outbox.set_aside(seq, &client::describe_status(status), unix_now())?;
                total.set_aside += 1;
            }
            (RunError::Client(ClientError::Refused(status)), _) => {
                match client::retry_after(status) {
                    Some(wait) if wait <= MAX_RATE_WAIT => {
                        tracing::info!(
                            wait_ms = wait.as_millis() as u64,
                            "over the rate limit; waiting"
                        );
                        tokio::time::sleep(wait).await;
                    }
                    _ => return Err(error),
                }
            }
            _ => return Err(error),
        }
    }
}

impl SendReport {
    fn add(self, other: SendReport) -> SendReport {
        SendReport {
            batches: self.batches + other.batches,
            signals: self.signals + other.signals,
            stored: self.stored + other.stored,
            already_stored: self.already_stored + other.already_stored,
            set_aside: self.set_aside + other.set_aside,
        }
    }
}

/// Seconds since 1970 (UTC).
pub fn unix_now() -> u64 {
    wijkradar_domain::Clock::System.unix_seconds().max(0) as u64
}

/// One stream of [`send_pending`]; on an error, also what it acknowledged
/// and the sequence number of the batch it failed on, if any.
async fn send_pending_once(
    outbox: &Outbox,
    channel: Channel,
    mut on_ack: impl FnMut(u64),
) -> Result<SendReport, (SendReport, RunError, Option<u64>)> {
    let fail = |e: RunError| (SendReport::default(), e, None);
    let pending = outbox.pending().map_err(|e| fail(e.into()))?;
    if pending.is_empty() {
        return Ok(SendReport::default());
    }
    let seqs: Vec<(u64, u64)> = pending
        .iter()
        .map(|(seq, b)| (*seq, b.signals.len() as u64))
        .collect();
    let batches = pending.into_iter().map(|(_, b)| b).collect();
    let mut signals = 0;
    let (mut stored, mut already_stored) = (0, 0);
    let mut remove_error = None;
    let result = client::send(channel, batches, |i, outcome| {
        match outcome {
            wijkradar_proto::v1::BatchOutcome::AlreadyStored => already_stored += 1,
            _ => stored += 1,
        }
        let (seq, n) = seqs[i];
        signals += n;
        on_ack(signals);
        if let Err(e) = outbox.remove(seq) {
            remove_error.get_or_insert(e);
        }
    })
    .await;
    // What was acknowledged is forgotten durably, even after an error.
    outbox.flush().map_err(|e| fail(e.into()))?;
    if let Some(e) = remove_error {
        return Err(fail(e.into()));
    }
    match result {
        Ok(SubmitReport {
            batches,
            stored,
            already_stored,
        }) => Ok(SendReport {
            batches,
            signals,
            stored,
            already_stored,
            set_aside: 0,
        }),
        Err(e) => Err((
            SendReport {
                batches: stored + already_stored,
                signals,
                stored,
                already_stored,
                set_aside: 0,
            },
            e.into(),
            // Batches are answered in order: the first unanswered failed.
            seqs.get(stored + already_stored).map(|&(seq, _)| seq),
        )),
    }
}
