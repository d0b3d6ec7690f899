//! The audit log: who did what and when, for the privacy officer.
//!
//! One JSON object per line, `{"hash":"…","entry":{…}}`. `entry` holds a
//! sequence number, the time, the actor (an organisation's name from the
//! access configuration, or `aggregator`), the event, and `prev`: the hash of
//! the entry before it. `hash` is SHA-256 over the entry's exact bytes as
//! written. So every entry commits to the whole history before it:
//! [`verify`] reports an entry whose bytes no longer match its hash
//! (altered), a sequence number that is absent (deleted), one that appears
//! twice (inserted), one that appears after a later one (reordered), and a
//! link whose `prev` is not its predecessor's hash (altered and re-hashed, or
//! forged).
//!
//! A chain without a secret cannot tell a rewritten tail from a real one: the
//! head (last sequence number and hash) of a verified log is the anchor the
//! privacy officer keeps, and [`verify`] checks a later log still holds it.
//!
//! The log holds no pseudonym and no count of signals below k ([`Count`]).

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The log's file name inside the aggregator's data directory.
pub const FILE_NAME: &str = "audit.log";

/// How much of the log's end is read at start to find its last entry.
const TAIL_BYTES: u64 = 1 << 20;

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path}: its last line is not an entry; run `wijkradar audit verify`")]
    Unreadable { path: PathBuf },
}

/// A number of signals as the log may hold it: exact from k up (and 0),
/// otherwise only that it was below k.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Exact(u64),
    Below(String),
}

impl Count {
    pub fn new(n: u64, k: u64) -> Count {
        if n == 0 || n >= k {
            Count::Exact(n)
        } else {
            Count::Below(format!("<{k}"))
        }
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Exact(n) => write!(f, "{n}"),
            Count::Below(s) => f.write_str(s),
        }
    }
}

/// After the name of a release in a release entry's `audited_with`: a part
/// kept at its version cap, counting fewer households than the period does
/// now.
pub const STALE: &str = " (stale)";

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The aggregator started with this access configuration (its SHA-256).
    Start { access_sha256: String },
    /// An ingest batch: stored, already stored, or refused and why, with the
    /// number of signals per type it held.
    Batch {
        batch_id: String,
        outcome: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        signals: BTreeMap<String, Count>,
    },
    /// A call that reads or manages: what was asked, and the outcome.
    Call {
        call: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        gemeente: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        request: String,
        outcome: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A release was materialised (a new version of a table).
    Release {
        gemeente: String,
        signal_type: String,
        month: String,
        version: u32,
        /// The releases this one was audited together with (`2024-01 v1`):
        /// the months of a quarter, the quarters of a year, the version
        /// before. A part kept at its version cap, which counts fewer
        /// households than the period does now, ends in [`STALE`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        audited_with: Vec<String>,
    },
    /// Signals past their retention were purged: per type, the first month
    /// kept, and how many signals went.
    Purge {
        first_month_kept: BTreeMap<String, String>,
        signals: Count,
    },
}

impl Event {
    /// What the BIO asks of a log line besides who and when: what was done,
    /// to what, with what result. No count: those stay in the audit log.
    pub fn bio(&self) -> (&str, String, &str) {
        match self {
            Event::Start { .. } => ("Start", String::new(), "ok"),
            Event::Batch {
                batch_id, outcome, ..
            } => ("Submit", format!("batch {batch_id}"), outcome),
            Event::Call {
                call,
                gemeente,
                outcome,
                ..
            } => (call, gemeente.clone(), outcome),
            Event::Release {
                gemeente,
                signal_type,
                month,
                version,
                ..
            } => (
                "Release",
                format!("{gemeente} {signal_type} {month} v{version}"),
                "ok",
            ),
            Event::Purge { .. } => ("Purge", String::new(), "ok"),
        }
    }
}

/// One entry, as chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// UTC, RFC 3339.
    pub time: String,
    pub actor: String,
    #[serde(flatten)]
    pub event: Event,
    pub prev: String,
}

#[derive(Serialize)]
struct LineOut<'a> {
    hash: &'a str,
    entry: &'a RawValue,
}

#[derive(Deserialize)]
struct LineIn<'a> {
    hash: String,
    #[serde(borrow)]
    entry: &'a RawValue,
}

/// SHA-256 of `bytes` as lowercase hex, as the log writes hashes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The appending end, shared by every service of the aggregator.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Appender>,
}

#[derive(Debug)]
struct Appender {
    file: File,
    next_seq: u64,
    last_hash: String,
}

impl AuditLog {
    /// Opens (or creates) the log at `path` and continues its chain from the
    /// last line. What came before is not checked here: see [`verify`].
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // Only the end is read: the last entry is what the chain goes on from.
        let len = file.metadata().map_err(io)?.len();
        let start = len.saturating_sub(TAIL_BYTES);
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_to_end(&mut tail))
            .map_err(io)?;
        let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < tail.len() && (whole > 0 || start == 0) {
            // An entry cut short by a crash while it was appended was never
            // acknowledged: it goes, so the next one starts on its own line.
            tracing::warn!("the audit log ended in a partial entry; it was cut off");
            file.set_len(start + whole as u64).map_err(io)?;
        }
        let unreadable = || AuditError::Unreadable {
            path: path.to_owned(),
        };
        let (next_seq, last_hash) = match tail[..whole]
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| !l.is_empty())
        {
            None if start == 0 => (1, GENESIS.to_owned()),
            None => return Err(unreadable()),
            Some(line) => {
                let parsed: LineIn<'_> = serde_json::from_slice(line).map_err(|_| unreadable())?;
                let entry: Entry =
                    serde_json::from_str(parsed.entry.get()).map_err(|_| unreadable())?;
                (entry.seq + 1, parsed.hash)
            }
        };
        Ok(AuditLog {
            path: path.to_owned(),
            inner: Mutex::new(Appender {
                file,
                next_seq,
                last_hash,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry. With `durable` it is on disk (fsync) before this
    /// returns; otherwise it is with the operating system, which keeps it
    /// through a crash of the aggregator but not of the machine.
    pub fn append(&self, actor: &str, event: Event, durable: bool) -> Result<(), AuditError> {
        let mut a = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = Entry {
            seq: a.next_seq,
            time: now_rfc3339(),
            actor: actor.to_owned(),
            event,
            prev: a.last_hash.clone(),
        };
        let body = serde_json::to_string(&entry).expect("an entry serialises");
        let hash = sha256_hex(body.as_bytes());
        let raw = RawValue::from_string(body).expect("valid JSON");
        let mut line = serde_json::to_vec(&LineOut {
            hash: &hash,
            entry: &raw,
        })
        .expect("a line serialises");
        line.push(b'\n');
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        a.file.write_all(&line).map_err(io)?;
        if durable {
            a.file.sync_data().map_err(io)?;
        }
        a.next_seq += 1;
        a.last_hash = hash;
        // The same event in the server's log, with the fields the BIO
        // expects (who, what, object, result; the line has the time).
        let (what, object, result) = entry.event.bio();
        tracing::info!(
            target: "wijkradar::audit",
            who = %entry.actor,
            what,
            object = %object,
            result,
            seq = entry.seq,
            "audited"
        );
        Ok(())
    }

    /// Makes every entry appended so far durable (after a run of entries
    /// appended without `durable`).
    pub fn sync(&self) -> Result<(), AuditError> {
        let a = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        a.file.sync_data().map_err(|source| AuditError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Appends, and reports a failure in the server's log instead of to the
    /// caller (for events after the fact, such as an answered query).
    pub fn record(&self, actor: &str, event: Event, durable: bool) {
        if let Err(e) = self.append(actor, event, durable) {
            tracing::error!(error = %e, "could not append to the audit log");
        }
    }

    /// The last sequence number and hash written (0 and [`GENESIS`] when empty).
    pub fn head(&self) -> (u64, String) {
        let a = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (a.next_seq - 1, a.last_hash.clone())
    }
}

/// What [`verify`] found wrong, naming the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Line `line` is not an audit entry.
    Malformed { line: usize },
    /// The entry's bytes do not match its hash: it was changed.
    Altered { seq: u64, line: usize },
    /// Entries `from..=to` are not in the log: deleted.
    Missing { from: u64, to: u64 },
    /// The sequence number appears again at `line`: an inserted entry.
    Inserted { seq: u64, line: usize },
    /// The entry comes after a later one: the log was reordered.
    Reordered { seq: u64, line: usize },
    /// The entry's `prev` is not the hash of the entry before it: that one
    /// was altered and re-hashed, or this one was forged.
    Unlinked { seq: u64, line: usize },
    /// The anchor the privacy officer kept is not in the log (truncated or
    /// rewritten).
    AnchorLost { seq: u64 },
}

/// In Dutch: the privacy officer reads these.
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Malformed { line } => write!(f, "regel {line} is geen auditregel"),
            Problem::Altered { seq, line } => write!(
                f,
                "regel {seq} (regel {line} van het bestand) is gewijzigd: de inhoud past niet meer bij de hash"
            ),
            Problem::Missing { from, to } if from == to => {
                write!(f, "regel {from} ontbreekt: verwijderd")
            }
            Problem::Missing { from, to } => {
                write!(f, "regels {from} tot en met {to} ontbreken: verwijderd")
            }
            Problem::Inserted { seq, line } => write!(
                f,
                "regel {seq} komt nogmaals voor op regel {line} van het bestand: ingevoegd"
            ),
            Problem::Reordered { seq, line } => write!(
                f,
                "regel {seq} (regel {line} van het bestand) staat na een latere regel: volgorde veranderd"
            ),
            Problem::Unlinked { seq, line } => write!(
                f,
                "regel {seq} (regel {line} van het bestand) sluit niet aan op regel {}: een van beide is gewijzigd en opnieuw gehasht, of ingevoegd",
                seq.saturating_sub(1)
            ),
            Problem::AnchorLost { seq } => write!(
                f,
                "het bewaarde ankerpunt, regel {seq} met zijn hash, staat niet meer in het log: ingekort of herschreven"
            ),
        }
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub entries: u64,
    /// The last entry's sequence number and hash: the anchor to keep.
    pub head: Option<(u64, String)>,
    pub problems: Vec<Problem>,
    /// Every entry that parsed, in file order.
    pub parsed: Vec<Entry>,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks a whole log; `anchor` is a (sequence number, hash) kept from an
/// earlier verification that must still be there.
pub fn verify(log: &[u8], anchor: Option<(u64, &str)>) -> Report {
    let mut report = Report::default();
    let mut seen: HashMap<u64, String> = HashMap::new();
    let mut max_seq: Option<u64> = None;
    // (seq, hash) of the line before, when it parsed.
    let mut before: Option<(u64, String)> = None;
    for (i, line) in log.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        if line.is_empty() {
            continue;
        }
        let Some((stated_hash, raw)) = serde_json::from_slice::<LineIn<'_>>(line)
            .ok()
            .map(|l| (l.hash, l.entry.get().to_owned()))
        else {
            report.problems.push(Problem::Malformed { line: line_no });
            before = None;
            continue;
        };
        let Ok(entry) = serde_json::from_str::<Entry>(&raw) else {
            report.problems.push(Problem::Malformed { line: line_no });
            before = None;
            continue;
        };
        report.entries += 1;
        let seq = entry.seq;
        if sha256_hex(raw.as_bytes()) != stated_hash {
            report
                .problems
                .push(Problem::Altered { seq, line: line_no });
        }
        if seen.contains_key(&seq) {
            report
                .problems
                .push(Problem::Inserted { seq, line: line_no });
        } else if max_seq.is_some_and(|m| seq < m) {
            report
                .problems
                .push(Problem::Reordered { seq, line: line_no });
        }
        // The link is checked between neighbours in sequence; a gap or a
        // reordering is reported above instead.
        let expected_prev = match &before {
            Some((s, h)) if *s + 1 == seq => Some(h.as_str()),
            None if seq == 1 && line_no == 1 => Some(GENESIS),
            _ => None,
        };
        if expected_prev.is_some_and(|p| p != entry.prev) {
            report
                .problems
                .push(Problem::Unlinked { seq, line: line_no });
        }
        seen.entry(seq).or_insert_with(|| stated_hash.clone());
        max_seq = Some(max_seq.map_or(seq, |m| m.max(seq)));
        report.head = Some((seq, stated_hash.clone()));
        before = Some((seq, stated_hash));
        report.parsed.push(entry);
    }
    if let Some(max) = max_seq {
        let present: BTreeSet<u64> = seen.keys().copied().collect();
        let mut gap_start: Option<u64> = None;
        for s in 1..=max {
            match (present.contains(&s), gap_start) {
                (false, None) => gap_start = Some(s),
                (true, Some(from)) => {
                    report.problems.push(Problem::Missing { from, to: s - 1 });
                    gap_start = None;
                }
                _ => {}
            }
        }
        report.head = report
            .head
            .filter(|(s, _)| *s == max)
            .or_else(|| seen.get(&max).map(|h| (max, h.clone())));
    }
    if let Some((seq, hash)) = anchor
        && seen.get(&seq).map(String::as_str) != Some(hash)
    {
        report.problems.push(Problem::AnchorLost { seq });
    }
    report
}

/// The log as a readable table for the privacy officer: one line per entry,
/// tab-separated (sequence, time, actor, kind, details).
pub fn export_text(entries: &[Entry]) -> String {
    let mut out = String::from("volgnummer\ttijd (UTC)\twie\tsoort\tdetails\n");
    for e in entries {
        let (kind, details) = describe(&e.event);
        out.push_str(&format!(
            "{}\t{}\t{}\t{kind}\t{details}\n",
            e.seq, e.time, e.actor
        ));
    }
    out
}

fn describe(event: &Event) -> (&'static str, String) {
    match event {
        Event::Start { access_sha256 } => (
            "start",
            format!("toegangsconfiguratie sha256 {access_sha256}"),
        ),
        Event::Batch {
            batch_id,
            outcome,
            reason,
            signals,
        } => {
            let per_type: Vec<String> = signals.iter().map(|(t, n)| format!("{t} {n}")).collect();
            let mut d = format!("batch {batch_id}: {outcome}; {}", per_type.join(", "));
            if let Some(r) = reason {
                d.push_str(&format!("; reden: {r}"));
            }
            ("levering", d)
        }
        Event::Call {
            call,
            gemeente,
            request,
            outcome,
            reason,
        } => {
            let mut d = format!("{call} {gemeente} {request}: {outcome}");
            if let Some(r) = reason {
                d.push_str(&format!("; reden: {r}"));
            }
            ("opvraging", d)
        }
        Event::Release {
            gemeente,
            signal_type,
            month,
            version,
            audited_with,
        } => {
            let mut d = format!("{gemeente} {signal_type} {month} versie {version}");
            if !audited_with.is_empty() {
                let names: Vec<String> = audited_with
                    .iter()
                    .map(|w| match w.strip_suffix(STALE) {
                        Some(part) => format!("{part} (verouderd)"),
                        None => w.clone(),
                    })
                    .collect();
                d.push_str(&format!(", getoetst met {}", names.join(", ")));
            }
            ("publicatie", d)
        }
        Event::Purge {
            first_month_kept,
            signals,
        } => {
            let kept: Vec<String> = first_month_kept
                .iter()
                .map(|(t, m)| format!("{t} vanaf {m}"))
                .collect();
            (
                "bewaartermijn",
                format!(
                    "{signals} signalen verwijderd; bewaard: {}",
                    kept.join(", ")
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests;
