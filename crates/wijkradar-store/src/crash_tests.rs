//! kill -9 while batches are being stored: every acknowledged batch is
//! there after a restart, nothing is counted twice, and the counts agree
//! with the signals. The test runs its own binary again as the writing
//! child (`WIJKRADAR_CRASH_CHILD`), and kills it at a different moment in
//! each round.

use std::collections::{BTreeSet, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use wijkradar_domain::{BatchId, PseudonymKeyId, ServerPseudonym};

use crate::{IncomingBatch, IngestQueue, Outcome, Store, StoredSignal, batch_key};

const TEST: &str = "crash_tests::acknowledged_batches_survive_kill_9_and_count_once";
const BUURTEN: [&str; 3] = ["BU00340101", "BU00340102", "BU00340203"];
const SIGNALS_PER_BATCH: u64 = 150;
/// Households: fewer than the signals sent, so batches overlap.
const HOUSEHOLDS: u64 = 4_000;

/// Batch `n`: the same content every time it is made, so a batch sent again
/// after a crash has the same digest.
fn batch(n: u64) -> IncomingBatch {
    let signals: Vec<StoredSignal> = (0..SIGNALS_PER_BATCH)
        .map(|j| {
            let h = (n * 97 + j * 31) % HOUSEHOLDS;
            let mut p = [0u8; 32];
            p[..8].copy_from_slice(&h.to_be_bytes());
            StoredSignal {
                pseudonym: ServerPseudonym::from_bytes(p),
                buurt: BUURTEN[(h % 3) as usize].parse().unwrap(),
                signal_type: "huurachterstand".parse().unwrap(),
                month: format!("2026-0{}", 1 + (n + j) % 3).parse().unwrap(),
                severity: None,
                record_key: h as u32,
                household: None,
                previous: None,
            }
        })
        .collect();
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&n.to_be_bytes());
    IncomingBatch {
        partner: "corporatie".into(),
        id: BatchId::new(&format!("b{n}")).unwrap(),
        key_id: PseudonymKeyId::new("GM0034.2026.0011223344556677").unwrap(),
        digest,
        signals,
    }
}

/// The child: sends batches `from..` four at a time, printing each one's
/// number once it is acknowledged, until it is killed.
fn child(dir: &Path, from: u64) {
    let store = Store::open(dir, "k1").unwrap();
    let (queue, _writer) = IngestQueue::start(store, 16);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for lane in 0..4u64 {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = from + lane;
                // Until it is killed; the bound only ends the loop's type.
                while n < u64::MAX - 4 {
                    let outcome = queue.submit(batch(n)).await.unwrap();
                    assert!(matches!(outcome, Outcome::Stored | Outcome::AlreadyStored));
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {n}").unwrap();
                    out.flush().unwrap();
                    n += 4;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_batches_survive_kill_9_and_count_once() {
    if let Ok(dir) = std::env::var("WIJKRADAR_CRASH_CHILD") {
        let from = std::env::var("WIJKRADAR_CRASH_FROM")
            .unwrap()
            .parse()
            .unwrap();
        child(Path::new(&dir), from);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked = BTreeSet::new();
    for round in 0..12u64 {
        // Start a little before the last acknowledged batch: some batches
        // are sent again, as an agent does after a lost answer.
        let from = acked.last().map_or(0, |&n: &u64| n.saturating_sub(6));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env("WIJKRADAR_CRASH_CHILD", dir.path())
            .env("WIJKRADAR_CRASH_FROM", from.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("acked ")?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        });
        // A different moment each round, some before the first batch.
        std::thread::sleep(std::time::Duration::from_millis(40 + (round * 137) % 600));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());
    }
    assert!(
        acked.len() > 50,
        "too few batches acknowledged: {}",
        acked.len()
    );

    let store = Store::open(dir.path(), "k1").unwrap();
    // Every acknowledged batch is stored; so may be some that were not
    // acknowledged yet when the child died.
    let last = *acked.last().unwrap() + 8;
    let stored: Vec<u64> = (0..=last)
        .filter(|&n| {
            let b = batch(n);
            store
                .db
                .get(batch_key(&b.partner, &b.id))
                .unwrap()
                .is_some()
        })
        .collect();
    let stored_set: HashSet<u64> = stored.iter().copied().collect();
    let lost: Vec<_> = acked.iter().filter(|n| !stored_set.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged batches not stored, the first {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // Each distinct (household, month) once, in the signal total, in the
    // stored signals and in the counts per buurt.
    let distinct: HashSet<(ServerPseudonym, String)> = stored
        .iter()
        .flat_map(|&n| batch(n).signals)
        .map(|s| (s.pseudonym, s.month.to_string()))
        .collect();
    let expected = distinct.len() as u64;
    assert_eq!(store.signal_count().unwrap(), expected);
    assert_eq!(
        store.db.scan_prefix([crate::SIGNAL]).count() as u64,
        expected
    );
    let g = "GM0034".parse().unwrap();
    let t = "huurachterstand".parse().unwrap();
    let counted: u64 = ["2026-01", "2026-02", "2026-03"]
        .iter()
        .flat_map(|m| store.buurt_counts(&t, m.parse().unwrap(), g).unwrap())
        .map(|(_, total)| total.households)
        .sum();
    assert_eq!(counted, expected);
    // Every stored batch left its trace for the audit log.
    assert_eq!(store.unaudited().unwrap().len(), stored.len());
}
