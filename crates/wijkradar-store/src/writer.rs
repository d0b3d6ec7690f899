//! The single writer: one thread takes batches from a bounded queue, applies
//! everything it took in one redb transaction, commits it durably once, and
//! only then answers. Grouping concurrent batches into one commit is what
//! keeps durable acknowledgements fast; one writer makes read-then-write of
//! the counts safe. (Queries write only the releases they materialise, each
//! in a short transaction of its own.)
//!
//! Because it is the only writer of signals, the thread can keep two things
//! in memory that the store would otherwise answer with a random read per
//! signal: a Bloom filter of the stored signal keys (a key it has never seen
//! is certainly new; a possible match is looked up), and the counts it has
//! read or written. Both are updated only after a batch is applied, so they
//! never run ahead of the store.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fastbloom::BloomFilter;

use tokio::sync::{mpsc, oneshot};

use wijkradar_domain::intervention::Intervention;
use wijkradar_domain::{CellTotal, Month, SignalTypeName};

use crate::alert_status::{ALERT_STATUS, AlertRef, AlertStatusRecord};
use crate::kv::{self, WriteTable};
use crate::{
    COUNT, EPOCH, IncomingBatch, Measure, PREVIOUS_MARK, PSEUDONYM_KEY, RELEASE, SIGNAL,
    SIGNAL_KEY, SIGNAL_TOTAL, SIGNAL_VALUE, Store, StoreError, TABLE_STATE, TYPE, TableRef,
    UnderKey, batch_key, count_key, decode_total, decode_under_key, encode_total, encode_under_key,
    epoch_key, signal_key, signal_period, table_key, table_of_state_key,
};

/// Signal keys the Bloom filter is sized for at least; it is sized for twice
/// the stored signals at start-up. Past that it answers "maybe" more often,
/// which costs reads, never correctness.
const MIN_FILTER_ITEMS: usize = 4_000_000;

/// The Bloom filter of stored signal keys: being built from the store by a
/// thread of its own, or ready.
enum KeyFilter {
    /// Until it is ready every signal is looked up in the store (correct,
    /// only slower); the keys written meanwhile go into it when it comes.
    Loading {
        ready: std::sync::mpsc::Receiver<Result<BloomFilter, StoreError>>,
        written: Vec<[u8; SIGNAL_KEY]>,
        /// Tells the thread to stop (the writer ends before it is done).
        cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    Ready(BloomFilter),
    /// Building it failed: every signal is looked up in the store.
    Absent,
}

impl Drop for KeyFilter {
    /// The thread building the filter holds the store open: it stops, and
    /// is waited for, before the writer ends.
    fn drop(&mut self) {
        if let KeyFilter::Loading { cancel, thread, .. } = self {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The writer's memory of the store.
struct WriterState {
    store: Store,
    stored_keys: KeyFilter,
    counts: HashMap<[u8; 15], CellTotal>,
    signal_total: u64,
}

impl WriterState {
    /// Ready at once, whatever the store holds: the key filter is built in
    /// the background (it reads every stored signal, seconds for millions).
    fn load(store: Store) -> Result<WriterState, StoreError> {
        let signal_total = store.signal_count()?;
        let capacity = usize::try_from(signal_total.saturating_mul(2))
            .unwrap_or(usize::MAX)
            .max(MIN_FILTER_ITEMS);
        let (tx, ready) = std::sync::mpsc::channel();
        let reader = store.clone();
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cancelled = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("wijkradar-key-filter".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let mut filter = BloomFilter::with_false_pos(0.01).expected_items(capacity);
                let built = reader
                    .db
                    .scan_prefix([SIGNAL])
                    .keys()
                    .take_while(|_| !cancelled.load(std::sync::atomic::Ordering::Relaxed))
                    .try_for_each(|key| {
                        filter.insert(key?.as_slice());
                        Ok::<(), StoreError>(())
                    })
                    .map(|()| filter);
                tracing::debug!(elapsed = ?started.elapsed(), "writer's key filter built");
                let _ = tx.send(built);
            })
            .map_err(|source| StoreError::Keys {
                path: std::path::PathBuf::from("(key filter thread)"),
                source,
            })?;
        Ok(WriterState {
            store,
            stored_keys: KeyFilter::Loading {
                ready,
                written: Vec::new(),
                cancel,
                thread: Some(thread),
            },
            counts: HashMap::new(),
            signal_total,
        })
    }

    /// Takes the key filter in once it is built, with the keys written
    /// since it started.
    fn poll_filter(&mut self) {
        let KeyFilter::Loading { ready, written, .. } = &mut self.stored_keys else {
            return;
        };
        let next = match ready.try_recv() {
            Ok(Ok(mut filter)) => {
                for key in written.drain(..) {
                    filter.insert(&key[..]);
                }
                KeyFilter::Ready(filter)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the key filter could not be built; every signal is looked up");
                KeyFilter::Absent
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => return,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => KeyFilter::Absent,
        };
        self.stored_keys = next;
    }

    fn is_stored(&self, t: &WriteTable<'_>, key: &[u8; SIGNAL_KEY]) -> Result<bool, StoreError> {
        let maybe = match &self.stored_keys {
            KeyFilter::Ready(filter) => filter.contains(&key[..]),
            KeyFilter::Loading { .. } | KeyFilter::Absent => true,
        };
        Ok(maybe && kv::contains_in(t, key)?)
    }

    fn remember(&mut self, key: [u8; SIGNAL_KEY]) {
        match &mut self.stored_keys {
            KeyFilter::Ready(filter) => {
                filter.insert(&key[..]);
            }
            KeyFilter::Loading { written, .. } => written.push(key),
            KeyFilter::Absent => {}
        }
    }

    fn total(&self, t: &WriteTable<'_>, key: &[u8; 15]) -> Result<CellTotal, StoreError> {
        if let Some(&total) = self.counts.get(key) {
            return Ok(total);
        }
        match kv::get_in(t, key)? {
            Some(v) => decode_total(&v),
            None => Ok(CellTotal::default()),
        }
    }
}

/// How many queued batches one flush may cover.
const MAX_GROUP: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and flushed to disk.
    Stored,
    /// The same batch id with the same content was stored before.
    AlreadyStored,
}

enum Request {
    Batch {
        batch: IncomingBatch,
        reply: oneshot::Sender<Result<Outcome, StoreError>>,
    },
    Purge {
        first_kept: HashMap<SignalTypeName, Month>,
        reply: oneshot::Sender<Result<Purged, StoreError>>,
    },
    /// A record removed without a flush of its own (a batch's `U` record
    /// once audited): it does not end a group, and rides on the next flush.
    Forget { key: Vec<u8> },
    /// One record written (or with `value` None removed), flushed with
    /// `flush`; with `if_absent`, only if its key is still free.
    Put {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        if_absent: bool,
        flush: bool,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A copy of the store into a directory ([`crate::backup`]).
    Backup {
        dir: std::path::PathBuf,
        reply: oneshot::Sender<Result<crate::backup::Copied, StoreError>>,
    },
    /// Wakes the writer to end ([`WriterThread::join`]).
    Stop,
}

/// What a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// Signals removed.
    pub signals: u64,
    /// (type, month) periods erased.
    pub periods: usize,
}

/// The queue in front of the writer thread. Cloning shares the one writer.
#[derive(Debug, Clone)]
pub struct IngestQueue {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Batch { batch, .. } => write!(f, "Batch({})", batch.id),
            Request::Purge { .. } => f.write_str("Purge"),
            Request::Put { .. } => f.write_str("Put"),
            Request::Forget { .. } => f.write_str("Forget"),
            Request::Backup { .. } => f.write_str("Backup"),
            Request::Stop => f.write_str("Stop"),
        }
    }
}

impl IngestQueue {
    /// Requests waiting for the writer now (for the queue-depth metric).
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Starts the writer thread. It ends when every queue handle is
    /// dropped, or when [`WriterThread::join`] asks it to.
    pub fn start(store: Store, depth: usize) -> (IngestQueue, WriterThread) {
        let (tx, rx) = mpsc::channel(depth.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wijkradar-writer".into())
            .spawn(move || run(store, rx, &stopping))
            .expect("spawn the writer thread");
        let writer = WriterThread {
            thread,
            stop,
            wake: tx.clone(),
        };
        (IngestQueue { tx }, writer)
    }

    /// Places a batch in the writer's queue, in call order, and returns what
    /// to wait on. A stream enqueues its next batch while earlier ones are
    /// still being flushed, so one flush can cover several of them.
    pub async fn enqueue(&self, batch: IncomingBatch) -> Result<Pending, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Batch { batch, reply })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        Ok(Pending(answer))
    }

    /// Removes every signal of a (type, month) before `first_kept` of its
    /// type (types not named are kept), with the counts, table states and
    /// releases of those periods, and then erases the periods' secrets.
    /// In the writer's order: batches queued before it are stored first.
    pub async fn purge(
        &self,
        first_kept: HashMap<SignalTypeName, Month>,
    ) -> Result<Purged, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Purge { first_kept, reply })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Stores an analyst's status of an alert; returns once it is flushed.
    pub async fn set_alert_status(
        &self,
        alert: AlertRef,
        record: AlertStatusRecord,
    ) -> Result<(), StoreError> {
        self.put(alert.key(), Some(record.encode()), false, true)
            .await
    }

    /// Marks a stored batch as written to the audit log: its `U` record
    /// goes. Not flushed: if the removal is lost in a crash, the start-up
    /// finds the entry in the log and removes the record then.
    pub async fn audited(&self, partner: &str, id: &str) {
        let key = crate::unaudited::key(partner, id);
        let _ = self.tx.send(Request::Forget { key }).await;
    }

    /// Removes the `U` records of `batches` (partner, batch id), then
    /// flushes, with every removal before it: after the start-up recovered
    /// their audit entries. With none, only the flush.
    pub async fn forget_unaudited(&self, batches: &[(String, String)]) -> Result<(), StoreError> {
        for (partner, id) in batches {
            self.audited(partner, id).await;
        }
        // The flush rides on a removal of a key no batch has (an empty
        // partner name cannot come from a certificate).
        self.put(crate::unaudited::key("", ""), None, false, true)
            .await
    }

    /// Copies the store into the existing, empty directory `dir` between
    /// two of the writer's rounds: whole batches only. Writes wait
    /// meanwhile (about a second per million signals).
    pub async fn backup(
        &self,
        dir: std::path::PathBuf,
    ) -> Result<crate::backup::Copied, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Backup { dir, reply })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Stores a new version of an intervention; returns once it is
    /// flushed. [`StoreError::VersionTaken`] when that version exists.
    pub async fn put_intervention(&self, i: &Intervention) -> Result<(), StoreError> {
        let key = crate::interventions::key(i.plan.gemeente, i.id, i.version);
        self.put(key, Some(crate::interventions::encode(i)), true, true)
            .await
    }

    async fn put(
        &self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        if_absent: bool,
        flush: bool,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Put {
                key,
                value,
                if_absent,
                flush,
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Stores a batch; returns once it is flushed to disk.
    pub async fn submit(&self, batch: IncomingBatch) -> Result<Outcome, StoreError> {
        self.enqueue(batch).await?.durable().await
    }
}

/// A batch in the writer's queue.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Outcome, StoreError>>);

impl Pending {
    /// Waits until the batch is flushed to disk (or refused).
    pub async fn durable(self) -> Result<Outcome, StoreError> {
        self.0.await.map_err(|_| StoreError::Unavailable)?
    }
}

/// The writer thread; join it after dropping every [`IngestQueue`] to know
/// the store is closed.
#[derive(Debug)]
pub struct WriterThread {
    thread: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    /// To wake an idle writer to end.
    wake: mpsc::Sender<Request>,
}

impl WriterThread {
    /// Asks the writer to end and waits for it: it takes what is already
    /// queued, then ends; later requests are refused as unavailable. It does
    /// not wait for the queue's other handles to go (a query still auditing
    /// holds one).
    pub fn join(self) {
        self.stop.store(true, Ordering::Relaxed);
        // When the queue is full the writer is busy, and sees the flag
        // after its round.
        let _ = self.wake.try_send(Request::Stop);
        drop(self.wake);
        let _ = self.thread.join();
    }
}

type PutArgs = (
    Vec<u8>,
    Option<Vec<u8>>,
    bool,
    bool,
    oneshot::Sender<Result<(), StoreError>>,
);

type PurgeArgs = (
    HashMap<SignalTypeName, Month>,
    oneshot::Sender<Result<Purged, StoreError>>,
);

/// What the writer takes in one round: batches up to a purge or a put that
/// needs its own flush.
#[derive(Default)]
struct Next {
    group: Vec<(IncomingBatch, Reply)>,
    purge: Option<PurgeArgs>,
    put: Option<PutArgs>,
    /// [`Request::Forget`]s: they do not end a group.
    removals: Vec<Vec<u8>>,
    backup: Option<BackupArgs>,
}

type BackupArgs = (
    std::path::PathBuf,
    oneshot::Sender<Result<crate::backup::Copied, StoreError>>,
);

impl Next {
    fn open(&self) -> bool {
        self.purge.is_none()
            && self.put.is_none()
            && self.backup.is_none()
            && self.group.len() < MAX_GROUP
    }

    fn take(&mut self, request: Request) {
        match request {
            Request::Batch { batch, reply } => self.group.push((batch, reply)),
            Request::Purge { first_kept, reply } => self.purge = Some((first_kept, reply)),
            Request::Forget { key } => self.removals.push(key),
            Request::Backup { dir, reply } => self.backup = Some((dir, reply)),
            Request::Stop => {}
            Request::Put {
                key,
                value,
                if_absent,
                flush,
                reply,
            } => self.put = Some((key, value, if_absent, flush, reply)),
        }
    }
}

fn run(store: Store, mut rx: mpsc::Receiver<Request>, stop: &AtomicBool) {
    let mut state = match WriterState::load(store.clone()) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::error!(error = %e, "the writer could not read the store; refusing writes");
            None
        }
    };
    let mut poisoned = state.is_none();
    while let Some(first) = rx.blocking_recv() {
        if stop.load(Ordering::Relaxed) {
            // Nothing more comes in; what is queued is still taken.
            rx.close();
        }
        let mut next = Next::default();
        next.take(first);
        while next.open() {
            match rx.try_recv() {
                Ok(request) => next.take(request),
                Err(_) => break,
            }
        }
        let Next {
            group,
            purge,
            put,
            removals,
            backup,
        } = next;
        if !group.is_empty() {
            poisoned = write_group(&store, &mut state, group, poisoned);
        }
        if !poisoned && !removals.is_empty() {
            let removed = store.db.write(false, |t| {
                for key in removals {
                    t.remove(key.as_slice())?;
                }
                Ok(())
            });
            if let Err(e) = removed {
                tracing::warn!(error = %e, "could not remove records; the next start retries");
            }
        }
        if let Some((first_kept, reply)) = purge {
            let result = match state.as_mut() {
                Some(s) if !poisoned => self::purge(s, &first_kept),
                _ => Err(StoreError::Unavailable),
            };
            let _ = reply.send(result);
        }
        if let Some((key, value, if_absent, flush, reply)) = put {
            let result = if poisoned {
                Err(StoreError::Unavailable)
            } else {
                put_record(&store, key, value, if_absent, flush)
            };
            let _ = reply.send(result);
        }
        if let Some((dir, reply)) = backup {
            let result = if poisoned {
                Err(StoreError::Unavailable)
            } else {
                crate::backup::dump(&store, &dir)
            };
            let _ = reply.send(result);
        }
    }
}

fn put_record(
    store: &Store,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    if_absent: bool,
    flush: bool,
) -> Result<(), StoreError> {
    store.db.write(flush, |t| {
        match value {
            Some(_) if if_absent && kv::contains_in(t, &key)? => {
                return Err(StoreError::VersionTaken);
            }
            Some(value) => {
                t.insert(key.as_slice(), value.as_slice())?;
            }
            None => {
                t.remove(key.as_slice())?;
            }
        }
        Ok(())
    })
}

type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

/// Applies a group of batches in one transaction, commits it durably,
/// answers each; returns whether the writer is poisoned afterwards.
fn write_group(
    store: &Store,
    state: &mut Option<WriterState>,
    group: Vec<(IncomingBatch, Reply)>,
    poisoned: bool,
) -> bool {
    if poisoned {
        group
            .into_iter()
            .for_each(|r| drop(r.1.send(Err(StoreError::Unavailable))));
        return true;
    }
    let started = std::time::Instant::now();
    let state = state.as_mut().expect("not poisoned");
    state.poll_filter();
    let mut applied = started.elapsed();
    // A batch refused on its own (a conflicting batch id) wrote nothing; a
    // failure of the store itself ends the whole transaction.
    let written = store.db.write(true, |t| {
        let mut results: Vec<_> = group.iter().map(|r| apply(state, t, &r.0)).collect();
        if let Some(i) = results
            .iter()
            .position(|r| matches!(r, Err(StoreError::Engine(_))))
        {
            return Err(results.swap_remove(i).expect_err("an engine error"));
        }
        applied = started.elapsed();
        Ok(results)
    });
    let results = match written {
        Ok(results) => results,
        Err(e) => {
            tracing::error!(error = %e, "write failed; refusing further writes until restart");
            group
                .into_iter()
                .for_each(|r| drop(r.1.send(Err(StoreError::Unavailable))));
            return true;
        }
    };
    tracing::debug!(batches = group.len(), ?applied, committed = ?(started.elapsed() - applied), "write group");
    for (r, result) in group.into_iter().zip(results) {
        let _ = r.1.send(result);
    }
    false
}

/// See [`IngestQueue::purge`]. Records and counts go in one atomic batch,
/// flushed, before the secrets are erased: after a crash in between the
/// next purge erases them.
fn purge(
    state: &mut WriterState,
    first_kept: &HashMap<SignalTypeName, Month>,
) -> Result<Purged, StoreError> {
    let types = state.store.types.read().expect("type map lock").clone();
    let cutoff: HashMap<u16, Month> = types
        .iter()
        .filter_map(|(name, &id)| Some((id, *first_kept.get(name)?)))
        .collect();
    let periods: Vec<(u16, Month)> = state
        .store
        .keys
        .periods()
        .into_iter()
        .filter(|(t, m)| cutoff.get(t).is_some_and(|c| m < c))
        .collect();
    if periods.is_empty() {
        return Ok(Purged::default());
    }
    let gone: HashSet<(u16, Month)> = periods.iter().copied().collect();
    let kept_by_all = cutoff.values().copied().min();
    let signal_total = state.signal_total;
    let counts = &mut state.counts;
    // Records and counts are read and removed in one durable transaction.
    let signals = state.store.db.write(true, |t| {
        let mut doomed = Vec::new();
        // Signals are kept per gemeente first: one pass over all of them.
        let signals = kv::keys_where(t, &[SIGNAL], |k| Ok(gone.contains(&signal_period(k)?)))?;
        for &(type_id, month) in &periods {
            let mut count_prefix = vec![COUNT];
            count_prefix.extend_from_slice(&type_id.to_be_bytes());
            count_prefix.extend_from_slice(&month.index().to_be_bytes());
            doomed.extend(kv::keys_where(t, &count_prefix, |_| Ok(true))?);
        }
        // Signals per key of the erased periods (keyed by gemeente first).
        doomed.extend(kv::keys_where(t, &[EPOCH], |k| {
            let period = k.get(5..11).and_then(|k| {
                let month = Month::from_index(u32::from_be_bytes(k[2..6].try_into().ok()?))?;
                Some((u16::from_be_bytes([k[0], k[1]]), month))
            });
            Ok(period.is_some_and(|p| gone.contains(&p)))
        })?);
        // Table states of the erased periods (keyed by gemeente first).
        doomed.extend(kv::keys_where(t, &[TABLE_STATE], |k| {
            let (_, type_id, month) = table_of_state_key(k)?;
            Ok(gone.contains(&(type_id, month)))
        })?);
        // Releases of erased periods: a type's tables over one of its erased
        // months (answered as purged whole), and a derived indicator's from
        // before the month every type still keeps. A later derived table whose
        // window reached an erased month stays; its state changed, so it gets a
        // new version when next released.
        let erased_release = |k: &[u8]| {
            let (measure, months, first) = TableRef::parse(k)?;
            let last = first.plus(i32::from(months) - 1);
            Ok(match measure {
                Measure::Type(t) => first.through(last).any(|m| gone.contains(&(t, m))),
                Measure::Derived(_) => kept_by_all.is_some_and(|k| first < k),
            })
        };
        doomed.extend(kv::keys_where(t, &[RELEASE], erased_release)?);
        doomed.extend(kv::keys_where(t, &[crate::OPEN_RELEASE], erased_release)?);
        // Statuses of alerts of erased months: a type's by its own cutoff, a
        // derived indicator's before the month every type still keeps.
        doomed.extend(kv::keys_where(t, &[ALERT_STATUS], |k| {
            Ok(
                AlertRef::month_and_measure(k).is_some_and(|(month, measure)| {
                    match measure
                        .parse::<SignalTypeName>()
                        .ok()
                        .and_then(|t| first_kept.get(&t))
                    {
                        Some(&first) => month < first,
                        None => kept_by_all.is_some_and(|k| month < k),
                    }
                }),
            )
        })?);
        for key in signals.iter().chain(&doomed) {
            t.remove(key.as_slice())?;
            if let Ok(k) = <[u8; 15]>::try_from(key.as_slice()) {
                counts.remove(&k);
            }
        }
        let left = signal_total.saturating_sub(signals.len() as u64);
        t.insert(SIGNAL_TOTAL, &left.to_be_bytes()[..])?;
        Ok(signals.len() as u64)
    })?;
    state.signal_total = signal_total.saturating_sub(signals);
    for &(type_id, month) in &periods {
        state.store.keys.erase(type_id, month)?;
    }
    Ok(Purged {
        signals,
        periods: periods.len(),
    })
}

fn apply(
    state: &mut WriterState,
    t: &mut WriteTable<'_>,
    batch: &IncomingBatch,
) -> Result<Outcome, StoreError> {
    let bkey = batch_key(&batch.partner, &batch.id);
    if let Some(digest) = kv::get_in(t, &bkey)? {
        return if digest == batch.digest {
            Ok(Outcome::AlreadyStored)
        } else {
            Err(StoreError::BatchConflict(batch.id.to_string()))
        };
    }

    let mut types = state.store.types.read().expect("type map lock").clone();
    let mut new_types = Vec::new();
    let mut writes = kv::Batch::default();
    let mut deltas: HashMap<[u8; 15], CellTotal> = HashMap::new();

    // Keys in order: the existence checks then walk the tree in order, and
    // a repeat inside the batch sits next to its twin.
    let mut records = Vec::with_capacity(batch.signals.len());
    for s in &batch.signals {
        let type_id = match types.get(&s.signal_type) {
            Some(&id) => id,
            None => {
                let id = u16::try_from(types.len()).map_err(|_| StoreError::Corrupt)?;
                types.insert(s.signal_type.clone(), id);
                new_types.push((s.signal_type.clone(), id));
                id
            }
        };
        let key = state.store.keys.get_or_create(type_id, s.month)?;
        let tag = key.tag(&s.pseudonym);
        let skey = signal_key(s.buurt.gemeente().body(), &tag, type_id, s.month);
        records.push((skey, type_id, s, key, tag));
    }
    records.sort_unstable_by_key(|r| r.0);
    let mut new_keys = Vec::with_capacity(records.len());
    records.dedup_by(|a, b| a.0 == b.0);
    // New signals per (gemeente, type, month) under the batch's key.
    let mut per_period: HashMap<([u8; 4], u16, Month), UnderKey> = HashMap::new();
    for (key, type_id, s, period_key, tag) in records {
        // Kept once per (pseudonym, type, month): a retry, a second partner
        // or a repeat inside this batch counts once.
        if state.is_stored(t, &key)? {
            continue;
        }
        // A household signal sent again after a key change, with its
        // identity under the previous epoch: kept once too.
        if let (None, Some(before)) = (&s.household, &s.previous) {
            let g = s.buurt.gemeente();
            let earlier = signal_key(g.body(), &period_key.tag(before), type_id, s.month);
            if state.is_stored(t, &earlier)? {
                continue;
            }
        }
        let mut value = Vec::with_capacity(SIGNAL_VALUE + 2 * crate::shred::SEALED + 1);
        value.extend_from_slice(s.buurt.body());
        value.push(s.severity.map_or(0, |v| v.get()));
        value.extend_from_slice(&period_key.seal(&tag, &s.pseudonym));
        if let Some(h) = &s.household {
            value.extend_from_slice(&period_key.seal_link(crate::shred::Link::Household, &tag, h));
        }
        if let Some(before) = &s.previous {
            value.push(PREVIOUS_MARK);
            let link = crate::shred::Link::PreviousEpoch;
            value.extend_from_slice(&period_key.seal_link(link, &tag, before));
        }
        writes.insert(&key[..], value);
        new_keys.push(key);
        let g = *s.buurt.gemeente().body();
        let under = per_period.entry((g, type_id, s.month)).or_default();
        under.signals += 1;
        under.linked += u64::from(s.previous.is_some());
        let delta = deltas
            .entry(count_key(type_id, s.month, &s.buurt))
            .or_default();
        *delta += CellTotal::one(s.record_key);
    }
    let mut new_counts = Vec::with_capacity(deltas.len());
    for (key, delta) in deltas {
        let total = state.total(t, &key)? + delta;
        writes.insert(&key[..], &encode_total(total)[..]);
        new_counts.push((key, total));
    }
    // Every table this batch changes gets its change count bumped, so a
    // materialised release of it is known to be out of date.
    let mut tables = BTreeSet::new();
    for (key, _) in &new_counts {
        let type_id = u16::from_be_bytes([key[1], key[2]]);
        let month = Month::from_index(u32::from_be_bytes([key[3], key[4], key[5], key[6]]))
            .ok_or(StoreError::Corrupt)?;
        tables.insert(table_key(
            TABLE_STATE,
            key[7..11].try_into().expect("4 gemeente digits"),
            type_id,
            month,
        ));
    }
    for key in tables {
        let changes = read_counter_in(t, &key)?;
        writes.insert(&key[..], &(changes + 1).to_be_bytes()[..]);
    }
    for (name, id) in &new_types {
        let mut key = vec![TYPE];
        key.extend_from_slice(name.as_str().as_bytes());
        writes.insert(key, &id.to_be_bytes()[..]);
    }
    for ((g, type_id, month), added) in per_period {
        let key = epoch_key(&g, type_id, month, &batch.key_id);
        let before = match kv::get_in(t, &key)? {
            Some(v) => decode_under_key(&v)?,
            None => UnderKey::default(),
        };
        let after = UnderKey {
            signals: before.signals + added.signals,
            linked: before.linked + added.linked,
        };
        writes.insert(key, &encode_under_key(after)[..]);
    }
    let signal_total = state.signal_total + new_keys.len() as u64;
    let key_id_key = [&[PSEUDONYM_KEY][..], batch.key_id.as_str().as_bytes()].concat();
    let under_key = read_counter_in(t, &key_id_key)? + new_keys.len() as u64;
    writes.insert(key_id_key, &under_key.to_be_bytes()[..]);
    writes.insert(SIGNAL_TOTAL, &signal_total.to_be_bytes()[..]);
    writes.insert(bkey, &batch.digest[..]);
    // Until its audit entry is written: so that a crash in between leaves a
    // trace the start-up can finish.
    writes.insert(
        crate::unaudited::key(&batch.partner, batch.id.as_str()),
        crate::unaudited::encode(&batch.signals),
    );
    writes.apply(t)?;
    for key in new_keys {
        state.remember(key);
    }
    state.counts.extend(new_counts);
    state.signal_total = signal_total;
    if !new_types.is_empty() {
        state
            .store
            .types
            .write()
            .expect("type map lock")
            .extend(new_types);
    }
    Ok(Outcome::Stored)
}

/// A u64 counter at `key` in the writer's transaction; 0 when never written.
fn read_counter_in(t: &WriteTable<'_>, key: &[u8]) -> Result<u64, StoreError> {
    kv::get_in(t, key)?.map_or(Ok(0), |v| crate::decode_counter(&v))
}
