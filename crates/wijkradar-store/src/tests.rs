use super::*;
use std::path::Path;

fn signal(p: u8, buurt: &str, t: &str, month: &str) -> StoredSignal {
    StoredSignal {
        pseudonym: ServerPseudonym::from_bytes([p; 32]),
        buurt: buurt.parse().unwrap(),
        signal_type: t.parse().unwrap(),
        month: month.parse().unwrap(),
        severity: None,
        record_key: u32::from(p) * 1000,
        household: None,
        previous: None,
    }
}

fn batch(id: &str, signals: Vec<StoredSignal>) -> IncomingBatch {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    signals
        .iter()
        .for_each(|s| ctx.update(s.pseudonym.as_bytes()));
    let digest = ctx.finish().as_ref().try_into().unwrap();
    IncomingBatch {
        partner: "corporatie".into(),
        id: BatchId::new(id).unwrap(),
        key_id: PseudonymKeyId::new("GM0034.2026.0011223344556677").unwrap(),
        digest,
        signals,
    }
}

fn counts(store: &Store, t: &str, m: &str) -> Vec<(String, u64)> {
    store
        .buurt_counts(
            &t.parse().unwrap(),
            m.parse().unwrap(),
            "GM0034".parse().unwrap(),
        )
        .unwrap()
        .into_iter()
        .map(|(b, t)| (b.to_string(), t.households))
        .collect()
}

/// The cell key of one buurt's cell.
fn cell_key(store: &Store, t: &str, m: &str, buurt: &str) -> u32 {
    let all = store
        .buurt_counts(
            &t.parse().unwrap(),
            m.parse().unwrap(),
            "GM0034".parse().unwrap(),
        )
        .unwrap();
    all.into_iter()
        .find(|(b, _)| b.to_string() == buurt)
        .map(|(_, t)| t.cell_key)
        .unwrap()
}

#[tokio::test]
async fn counts_distinct_households_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), "k1").unwrap();
        let (queue, writer) = IngestQueue::start(store.clone(), 8);
        let b = batch(
            "b1",
            vec![
                signal(1, "BU00340101", "huurachterstand", "2024-01"),
                signal(1, "BU00340101", "huurachterstand", "2024-01"), // repeat in batch
                signal(2, "BU00340101", "huurachterstand", "2024-01"),
                signal(3, "BU00340102", "huurachterstand", "2024-01"),
                signal(3, "BU00340102", "huurachterstand", "2024-02"),
                signal(4, "BU03630000", "huurachterstand", "2024-01"), // other gemeente
            ],
        );
        assert_eq!(queue.submit(b.clone()).await.unwrap(), Outcome::Stored);
        assert_eq!(queue.submit(b).await.unwrap(), Outcome::AlreadyStored);
        // A second partner sending the same household: counted once.
        let mut other = batch(
            "x",
            vec![signal(2, "BU00340101", "huurachterstand", "2024-01")],
        );
        other.partner = "energie".into();
        assert_eq!(queue.submit(other).await.unwrap(), Outcome::Stored);
        drop(queue);
        drop(store);
        writer.join();
    }
    let store = Store::open(dir.path(), "k1").unwrap();
    assert_eq!(
        counts(&store, "huurachterstand", "2024-01"),
        [("BU00340101".into(), 2), ("BU00340102".into(), 1)]
    );
    assert_eq!(
        counts(&store, "huurachterstand", "2024-02"),
        [("BU00340102".into(), 1)]
    );
    assert!(counts(&store, "schoolverzuim", "2024-01").is_empty());
    // I5: households 1 and 2, each once in the key though both were sent twice.
    assert_eq!(
        cell_key(&store, "huurachterstand", "2024-01", "BU00340101"),
        1000 + 2000
    );
    let (first, last) = store
        .month_range_of("GM0034".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        store.month_range_of("GM0995".parse().unwrap()).unwrap(),
        None
    );
    assert_eq!(
        (first.to_string(), last.to_string()),
        ("2024-01".into(), "2024-02".into())
    );
    assert_eq!(store.signal_count().unwrap(), 5);
    // One batch changed January's table; the second partner's duplicate did
    // not, so a materialised release of it stays current.
    let state = |m: &str| {
        store
            .table_state(
                &"huurachterstand".parse().unwrap(),
                m.parse().unwrap(),
                "GM0034".parse().unwrap(),
            )
            .unwrap()
    };
    assert_eq!(
        (state("2024-01"), state("2024-02"), state("2024-03")),
        (Some(1), Some(1), Some(0))
    );

    // After the restart the writer rebuilds its memory from disk: a known
    // household still counts once, a new one is added to the stored count.
    let (queue, writer) = IngestQueue::start(store.clone(), 8);
    let later = batch(
        "b2",
        vec![
            signal(1, "BU00340101", "huurachterstand", "2024-01"),
            signal(5, "BU00340101", "huurachterstand", "2024-01"),
        ],
    );
    assert_eq!(queue.submit(later).await.unwrap(), Outcome::Stored);
    drop(queue);
    writer.join();
    assert_eq!(
        counts(&store, "huurachterstand", "2024-01"),
        [("BU00340101".into(), 3), ("BU00340102".into(), 1)]
    );
    assert_eq!(
        cell_key(&store, "huurachterstand", "2024-01", "BU00340101"),
        1000 + 2000 + 5000
    );
    assert_eq!(store.signal_count().unwrap(), 6);
    assert_eq!(
        store
            .table_state(
                &"huurachterstand".parse().unwrap(),
                "2024-01".parse().unwrap(),
                "GM0034".parse().unwrap()
            )
            .unwrap(),
        Some(2)
    );
}

#[tokio::test]
async fn same_batch_id_other_content_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "k1").unwrap();
    let (queue, _writer) = IngestQueue::start(store.clone(), 8);
    queue
        .submit(batch(
            "b1",
            vec![signal(1, "BU00340101", "huurachterstand", "2024-01")],
        ))
        .await
        .unwrap();
    let before = store.checksum().unwrap();
    let err = queue
        .submit(batch(
            "b1",
            vec![signal(9, "BU00340101", "huurachterstand", "2024-01")],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::BatchConflict(ref id) if id == "b1"),
        "{err}"
    );
    assert_eq!(store.checksum().unwrap(), before);
}

#[tokio::test]
async fn signals_are_counted_per_partner_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "k1").unwrap();
    let (queue, _writer) = IngestQueue::start(store.clone(), 8);
    let in_epoch = |id: &str, epoch: &str, signals| {
        let mut b = batch(id, signals);
        b.key_id = PseudonymKeyId::new(&format!("GM0034.{epoch}.0011223344556677")).unwrap();
        b
    };
    let s = |p| signal(p, "BU00340101", "huurachterstand", "2024-01");
    queue
        .submit(in_epoch("a", "2025", vec![s(1), s(2)]))
        .await
        .unwrap();
    // A repeat adds nothing; a new epoch's signals are counted apart.
    queue
        .submit(in_epoch("b", "2025", vec![s(2)]))
        .await
        .unwrap();
    queue
        .submit(in_epoch("c", "2026", vec![s(3)]))
        .await
        .unwrap();
    let keys: Vec<(String, u64)> = store
        .pseudonym_keys()
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    assert_eq!(
        keys,
        [
            ("GM0034.2025.0011223344556677".to_owned(), 2),
            ("GM0034.2026.0011223344556677".to_owned(), 1)
        ]
    );
}

#[tokio::test]
async fn households_in_a_gemeente_come_with_all_their_signals() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "k1").unwrap();
    let (queue, _writer) = IngestQueue::start(store.clone(), 8);
    queue
        .submit(batch(
            "a",
            vec![
                signal(1, "BU00340101", "huurachterstand", "2024-01"),
                signal(1, "BU00340102", "energieachterstand", "2024-03"),
                signal(2, "BU00340101", "huurachterstand", "2024-02"),
                signal(3, "BU03630000", "huurachterstand", "2024-02"),
            ],
        ))
        .await
        .unwrap();
    let households = store.households_in("GM0034".parse().unwrap()).unwrap();
    assert_eq!(households.len(), 2, "Amsterdam's household is not Almere's");
    let (p, signals) = &households[0];
    assert_eq!(*p, ServerPseudonym::from_bytes([1; 32]));
    assert_eq!(signals.len(), 2);
    assert_ne!(signals[0].signal_type, signals[1].signal_type);
    assert_eq!(signals[1].buurt.to_string(), "BU00340102");
    assert_eq!(signals[1].month.to_string(), "2024-03");
}

#[test]
fn refuses_a_store_written_with_another_server_key() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), "aaaa").unwrap());
    let err = Store::open(dir.path(), "bbbb").unwrap_err();
    assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
}

/// Every file under `dir`, as bytes.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn pseudonyms_are_never_stored_in_the_clear_and_a_purge_leaves_the_rest_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "k1").unwrap();
    let (queue, writer) = IngestQueue::start(store.clone(), 8);
    let old = |p| signal(p, "BU00340101", "huurachterstand", "2024-01");
    queue
        .submit(batch(
            "b1",
            vec![
                old(1),
                old(2),
                signal(1, "BU00340101", "huurachterstand", "2024-02"),
                signal(3, "BU00340101", "schoolverzuim", "2024-01"),
            ],
        ))
        .await
        .unwrap();
    let g = "GM0034".parse().unwrap();
    let households = store.households_in(g).unwrap();
    assert_eq!(households.len(), 3);
    assert_eq!(households[0].1.len(), 2, "household 1 linked across months");
    // A range of months reads only their signals, of every type.
    let month = |m: &str| -> Month { m.parse().unwrap() };
    let january = store
        .households_between(g, month("2024-01"), month("2024-01"))
        .unwrap();
    let signals: Vec<_> = january.iter().flat_map(|(_, s)| s).collect();
    assert_eq!(signals.len(), 3, "{signals:?}");
    assert!(signals.iter().all(|s| s.month == month("2024-01")));
    let both = store
        .households_between(g, month("2023-12"), month("2024-02"))
        .unwrap();
    assert_eq!(both, households);
    assert!(!contains(&all_bytes(dir.path()), &[1u8; 32]));

    // Keep huurachterstand from 2024-02, schoolverzuim from 2023-01.
    let first_kept = [
        (
            "huurachterstand".parse().unwrap(),
            "2024-02".parse().unwrap(),
        ),
        ("schoolverzuim".parse().unwrap(), "2023-01".parse().unwrap()),
    ]
    .into_iter()
    .collect();
    // An analyst's status of an alert of the month to be purged, and of one
    // kept: written through the writer, read back.
    let alert = |m: &str| AlertRef {
        gemeente: g,
        month: month(m),
        area: "WK003401".into(),
        measure: "huurachterstand".into(),
    };
    let record = AlertStatusRecord {
        status: AlertStatus::TakenUp,
        by: "gemeente".into(),
        at: 1_700_000_000,
    };
    for m in ["2024-01", "2024-02"] {
        queue
            .set_alert_status(alert(m), record.clone())
            .await
            .unwrap();
    }
    assert_eq!(
        store.alert_statuses(g, month("2024-02")).unwrap(),
        vec![(alert("2024-02"), record.clone())]
    );
    let purged = queue.purge(first_kept).await.unwrap();
    assert!(
        store
            .alert_statuses(g, month("2024-01"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.alert_statuses(g, month("2024-02")).unwrap().len(), 1);
    assert_eq!(
        purged,
        Purged {
            signals: 2,
            periods: 1
        }
    );
    assert_eq!(store.signal_count().unwrap(), 2);
    assert!(counts(&store, "huurachterstand", "2024-01").is_empty());
    assert_eq!(
        counts(&store, "huurachterstand", "2024-02"),
        vec![("BU00340101".into(), 1)]
    );
    assert_eq!(
        counts(&store, "schoolverzuim", "2024-01"),
        vec![("BU00340101".into(), 1)]
    );
    let households = store.households_in(g).unwrap();
    assert_eq!(households.len(), 2);
    // A late signal for the purged period counts from zero again.
    queue.submit(batch("b2", vec![old(4)])).await.unwrap();
    assert_eq!(
        counts(&store, "huurachterstand", "2024-01"),
        vec![("BU00340101".into(), 1)]
    );
    drop(queue);
    writer.join();
    drop(store);
    let store = Store::open(dir.path(), "k1").unwrap();
    assert_eq!(store.signal_count().unwrap(), 3);
    assert_eq!(store.households_in(g).unwrap().len(), 3);
    assert_eq!(
        store.alert_statuses(g, month("2024-02")).unwrap().len(),
        1,
        "durable"
    );
}

#[tokio::test]
async fn a_gemeente_reads_only_its_own_signals() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "k1").unwrap();
    let (queue, writer) = IngestQueue::start(store.clone(), 8);
    queue
        .submit(batch(
            "b1",
            vec![
                signal(1, "BU00340101", "huurachterstand", "2024-01"),
                signal(2, "BU09950110", "huurachterstand", "2024-01"),
                // The same household reported in both in one month counts in each.
                signal(3, "BU00340101", "schoolverzuim", "2024-01"),
                signal(3, "BU09950110", "schoolverzuim", "2024-01"),
            ],
        ))
        .await
        .unwrap();
    let of = |g: &str| {
        store
            .households_in(g.parse().unwrap())
            .unwrap()
            .into_iter()
            .map(|(p, signals)| {
                let buurten: Vec<String> = signals.iter().map(|s| s.buurt.to_string()).collect();
                (p.as_bytes()[0], buurten)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("GM0034"),
        vec![
            (1, vec!["BU00340101".to_owned()]),
            (3, vec!["BU00340101".to_owned()])
        ]
    );
    assert_eq!(
        of("GM0995"),
        vec![
            (2, vec!["BU09950110".to_owned()]),
            (3, vec!["BU09950110".to_owned()])
        ]
    );
    assert_eq!(store.signal_count().unwrap(), 4);
    drop(queue);
    writer.join();
}

#[test]
fn a_release_keeps_its_earlier_versions_and_reads_the_old_layout() {
    let s = Snapshot {
        version: 3,
        state: 17,
        cells: vec![Some(40), None, Some(12)],
        earlier: vec![vec![Some(31), None, None], vec![Some(35), None, Some(11)]],
    };
    assert_eq!(snapshot::decode(&snapshot::encode(&s)).unwrap(), s);
    // Stored before earlier versions were kept: only its own cells.
    let old = Snapshot {
        version: 1,
        earlier: Vec::new(),
        ..s.clone()
    };
    let bytes = snapshot::encode(&old);
    assert_eq!(bytes.len(), 16 + 9 * 3);
    assert_eq!(snapshot::decode(&bytes).unwrap(), old);
    // A version cut short is corrupt, not a shorter table.
    let mut cut = snapshot::encode(&s);
    cut.truncate(cut.len() - 9);
    assert!(matches!(snapshot::decode(&cut), Err(StoreError::Corrupt)));
}

/// A writer started on a store that holds many signals takes its first
/// batch at once (the key filter is built in the background), and still
/// knows a stored signal when it is sent again: counted once.
#[tokio::test]
async fn a_writer_on_a_full_store_takes_batches_at_once_and_still_deduplicates() {
    let dir = tempfile::tempdir().unwrap();
    let many = |i: u32| StoredSignal {
        pseudonym: ServerPseudonym::from_bytes({
            let mut p = [0u8; 32];
            p[..4].copy_from_slice(&i.to_be_bytes());
            p
        }),
        buurt: "BU00340101".parse().unwrap(),
        signal_type: "huurachterstand".parse().unwrap(),
        month: "2024-01".parse().unwrap(),
        severity: None,
        record_key: i,
        household: None,
        previous: None,
    };
    let n: u32 = std::env::var("WIJKRADAR_STORE_SIGNALS").map_or(50_000, |v| v.parse().unwrap());
    {
        let store = Store::open(dir.path(), "k1").unwrap();
        let (queue, writer) = IngestQueue::start(store.clone(), 8);
        for (b, chunk) in (0..n).collect::<Vec<_>>().chunks(10_000).enumerate() {
            let signals = chunk.iter().map(|&i| many(i)).collect();
            queue
                .submit(batch(&format!("fill-{b}"), signals))
                .await
                .unwrap();
        }
        drop(queue);
        writer.join();
    }
    let started = std::time::Instant::now();
    let store = Store::open(dir.path(), "k1").unwrap();
    let opened = started.elapsed();
    let (queue, writer) = IngestQueue::start(store.clone(), 8);
    // Signal 7 again, and one new.
    queue
        .submit(batch("again", vec![many(7), many(n + 1)]))
        .await
        .unwrap();
    eprintln!(
        "{n} signals stored: reopened in {opened:?}, the first batch acknowledged after {:?}",
        started.elapsed()
    );
    assert_eq!(
        counts(&store, "huurachterstand", "2024-01"),
        vec![("BU00340101".into(), u64::from(n) + 1)]
    );
    assert_eq!(store.signal_count().unwrap(), u64::from(n) + 1);
    drop(queue);
    writer.join();
}

#[tokio::test]
async fn interventions_keep_every_version_and_never_overwrite_one() {
    use wijkradar_domain::intervention::{Goal, Intervention, Plan};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "k1").unwrap();
    let (queue, writer) = IngestQueue::start(store.clone(), 8);
    let g: wijkradar_domain::GemeenteCode = "GM0034".parse().unwrap();
    let version = |id: u32, version: u32, name: &str| Intervention {
        id,
        version,
        plan: Plan {
            gemeente: g,
            name: name.into(),
            wijken: vec!["WK003403".parse().unwrap()],
            start: "2026-01".parse().unwrap(),
            measures: vec!["betalingsachterstand".into()],
            reach: 0.3,
            goal: Goal {
                change: -0.2,
                horizon_months: 24,
            },
        },
        changed_by: "gemeente".into(),
        changed_at: 1_700_000_000,
    };
    queue
        .put_intervention(&version(1, 1, "eerste"))
        .await
        .unwrap();
    queue
        .put_intervention(&version(1, 2, "tweede"))
        .await
        .unwrap();
    queue
        .put_intervention(&version(2, 1, "ander"))
        .await
        .unwrap();
    // A second writer of version 2 finds it taken; the first one stays.
    let taken = queue.put_intervention(&version(1, 2, "verloren")).await;
    assert!(matches!(taken, Err(StoreError::VersionTaken)), "{taken:?}");
    drop(queue);
    writer.join();
    drop(store);
    let store = Store::open(dir.path(), "k1").unwrap();
    let latest = store.interventions(g).unwrap();
    let names: Vec<(u32, u32, &str)> = latest
        .iter()
        .map(|i| (i.id, i.version, i.plan.name.as_str()))
        .collect();
    assert_eq!(names, [(1, 2, "tweede"), (2, 1, "ander")]);
    assert_eq!(store.intervention_versions(g).unwrap().len(), 3);
    assert_eq!(
        store.intervention(g, 1).unwrap().unwrap().plan.name,
        "tweede"
    );
    assert!(store.intervention(g, 3).unwrap().is_none());
    assert!(
        store
            .interventions("GM0363".parse().unwrap())
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_stored_batch_keeps_a_trace_until_its_audit_entry_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "k1").unwrap();
    let (queue, writer) = IngestQueue::start(store.clone(), 8);
    let signals = vec![
        signal(1, "BU00340101", "huurachterstand", "2024-01"),
        signal(2, "BU00340101", "huurachterstand", "2024-01"),
        signal(3, "BU00340101", "schoolverzuim", "2024-01"),
    ];
    queue.submit(batch("b1", signals.clone())).await.unwrap();
    queue
        .submit(batch("b2", signals[..1].to_vec()))
        .await
        .unwrap();
    // Stored and flushed together with the batch: a crash now keeps them.
    let pending = store.unaudited().unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(
        (pending[0].partner.as_str(), pending[0].batch_id.as_str()),
        ("corporatie", "b1")
    );
    let counts: Vec<(&str, u64)> = pending[0]
        .signals
        .iter()
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    assert_eq!(counts, [("huurachterstand", 2), ("schoolverzuim", 1)]);
    // Its entry written, b1's trace goes; b2's stays.
    queue.audited("corporatie", "b1").await;
    queue.forget_unaudited(&[]).await.unwrap();
    drop(queue);
    writer.join();
    drop(store);
    let store = Store::open(dir.path(), "k1").unwrap();
    let left: Vec<String> = store
        .unaudited()
        .unwrap()
        .into_iter()
        .map(|u| u.batch_id)
        .collect();
    assert_eq!(left, ["b2"]);
}

#[test]
fn a_store_of_a_newer_format_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "k1").unwrap();
    assert_eq!(
        store.db.get(b"F").unwrap().unwrap(),
        crate::FORMAT.to_be_bytes()
    );
    crate::write_format(&store.db, crate::FORMAT + 1).unwrap();
    drop(store);
    let refused = Store::open(dir.path(), "k1").expect_err("refused");
    assert!(
        matches!(
            refused,
            StoreError::NewerFormat {
                found: 4,
                supported: 3
            }
        ),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains("run the version that wrote it"),
        "{refused}"
    );
}

/// A data directory with three stored signals (a household's, a person's
/// with its household, one sent with its identity under the previous key),
/// and its store's records.
fn three_signal_store(dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let store = Store::open(dir, "k1").unwrap();
    let (queue, writer) = IngestQueue::start(store.clone(), 4);
    let person = StoredSignal {
        household: Some(ServerPseudonym::from_bytes([9; 32])),
        ..signal(2, "BU00340101", "schoolverzuim", "2026-01")
    };
    let moved = StoredSignal {
        previous: Some(ServerPseudonym::from_bytes([8; 32])),
        ..signal(3, "BU00340102", "huurachterstand", "2026-02")
    };
    let three = batch(
        "b1",
        vec![
            signal(1, "BU00340101", "huurachterstand", "2026-01"),
            person,
            moved,
        ],
    );
    let stored = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(queue.submit(three))
        .unwrap();
    assert_eq!(stored, Outcome::Stored);
    drop(queue);
    writer.join();
    store.db.iter().map(Result::unwrap).collect()
}

/// What the derived indicators read of a store: every signal by household,
/// a person's household, a household's previous identity.
fn as_read(dir: &std::path::Path) -> (Grouped, Vec<(ServerPseudonym, ServerPseudonym)>) {
    let store = Store::open(dir, "k1").unwrap();
    let read = store
        .signals_between(
            "GM0034".parse().unwrap(),
            "2025-01".parse().unwrap(),
            "2027-01".parse().unwrap(),
        )
        .unwrap();
    let mut links: Vec<_> = read.households.into_iter().chain(read.previous).collect();
    links.sort_by_key(|(a, b)| (*a.as_bytes(), *b.as_bytes()));
    (read.grouped, links)
}

/// The records as format 2 kept them: `S` keys with the whole 32-byte tag,
/// and every seal made from it.
fn as_format_2(dir: &std::path::Path, records: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    use crate::shred::Link;
    let keys = crate::shred::PeriodKeys::open(&dir.join("period-keys")).unwrap();
    records
        .into_iter()
        .map(|(k, v)| {
            if k[0] != crate::SIGNAL {
                return (k, v);
            }
            let (type_id, month) = crate::signal_period(&k).unwrap();
            let key = keys.get(type_id, month).unwrap();
            let tag: crate::shred::Tag = k[11..].try_into().unwrap();
            let own = key.open(&tag, &v[9..crate::SIGNAL_VALUE]).unwrap();
            let old = key.tag_v2(&own);
            assert_eq!(old[..16], tag);
            let (household, earlier) = crate::signal_links(&v).unwrap();
            let mut value = v[..9].to_vec();
            value.extend_from_slice(&key.seal_v2(None, &old, &own));
            if let Some(h) = household {
                let h = key.open_link(Link::Household, &tag, h).unwrap();
                value.extend_from_slice(&key.seal_v2(Some(Link::Household), &old, &h));
            }
            if let Some(e) = earlier {
                let e = key.open_link(Link::PreviousEpoch, &tag, e).unwrap();
                value.push(crate::PREVIOUS_MARK);
                value.extend_from_slice(&key.seal_v2(Some(Link::PreviousEpoch), &old, &e));
            }
            let mut key = k[..11].to_vec();
            key.extend_from_slice(&old);
            (key, value)
        })
        .collect()
}

/// A store of formats 1 and 2 (sled, with its format record or written
/// before formats were recorded) is refused until the operator upgrades it
/// explicitly; then it opens with every signal and link as before, in redb.
#[test]
fn a_sled_store_opens_only_after_an_explicit_upgrade() {
    for format in [None, Some(2u32)] {
        let dir = tempfile::tempdir().unwrap();
        let records = three_signal_store(dir.path());
        let before = as_read(dir.path());
        assert_eq!(before.0.len(), 3);
        assert_eq!(before.1.len(), 2);
        let old_records = as_format_2(dir.path(), records);
        std::fs::remove_file(dir.path().join(crate::kv::FILE)).unwrap();
        // The same records in sled, as Wijkradar of format 1 or 2 kept them.
        let old = sled::open(dir.path().join("store")).unwrap();
        for (k, v) in old_records {
            match (k.as_slice(), format) {
                (b"F", None) => {}
                (b"F", Some(f)) => drop(old.insert(k, &f.to_be_bytes()[..]).unwrap()),
                _ => drop(old.insert(k, v).unwrap()),
            }
        }
        old.flush().unwrap();
        drop(old);
        let refused = Store::open(dir.path(), "k1").expect_err("refused");
        assert!(matches!(refused, StoreError::SledStore), "{refused:?}");
        assert!(
            refused.to_string().contains("wijkradar admin upgrade"),
            "{refused}"
        );
        let mut progress = 0;
        let found = crate::upgrade(dir.path(), |n| progress = n).unwrap();
        assert_eq!(found, format.unwrap_or(1));
        assert!(progress > 5, "records copied: {progress}");
        assert!(!dir.path().join("store").exists());
        assert!(dir.path().join(crate::SLED_MOVED_ASIDE).is_dir());
        assert_eq!(as_read(dir.path()), before);
        let store = Store::open(dir.path(), "k1").unwrap();
        assert_eq!(store.signal_count().unwrap(), 3);
        drop(store);
        // Upgrading again changes nothing.
        assert_eq!(crate::upgrade(dir.path(), |_| {}).unwrap(), 3);
        assert_eq!(as_read(dir.path()), before);
    }
}

/// A backup of format 2 restored into redb keeps its records and format:
/// it is refused until upgraded, which converts it in place.
#[test]
fn a_redb_store_of_an_older_format_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let records = three_signal_store(dir.path());
    let before = as_read(dir.path());
    let old_records = as_format_2(dir.path(), records.clone());
    assert_ne!(old_records, records);
    let store = Store::open(dir.path(), "k1").unwrap();
    store
        .db
        .write(true, |t| {
            for (k, _) in &records {
                t.remove(k.as_slice())?;
            }
            for (k, v) in &old_records {
                t.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(())
        })
        .unwrap();
    crate::write_format(&store.db, 2).unwrap();
    drop(store);
    let refused = Store::open(dir.path(), "k1").expect_err("refused");
    assert!(
        matches!(
            refused,
            StoreError::OlderFormat {
                found: 2,
                supported: 3
            }
        ),
        "{refused:?}"
    );
    assert_eq!(crate::upgrade(dir.path(), |_| {}).unwrap(), 2);
    let store = Store::open(dir.path(), "k1").unwrap();
    let after: Vec<_> = store.db.iter().map(Result::unwrap).collect();
    drop(store);
    assert_eq!(after, records);
    assert_eq!(as_read(dir.path()), before);
}

/// A stop does not wait for every handle of the queue to go: a query still
/// auditing holds one. What was queued is stored; what comes later is
/// refused as unavailable.
#[test]
fn the_writer_ends_when_asked_though_a_queue_handle_is_still_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "k1").unwrap();
    let (queue, writer) = IngestQueue::start(store.clone(), 4);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let one = batch(
        "b1",
        vec![signal(1, "BU00340101", "huurachterstand", "2026-01")],
    );
    let pending = runtime.block_on(queue.enqueue(one)).unwrap();
    let (done, joined) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        writer.join();
        done.send(()).unwrap();
    });
    joined
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the writer ended while the queue was still held");
    assert_eq!(
        runtime.block_on(pending.durable()).unwrap(),
        Outcome::Stored
    );
    assert_eq!(store.signal_count().unwrap(), 1);
    let two = batch(
        "b2",
        vec![signal(2, "BU00340101", "huurachterstand", "2026-01")],
    );
    let refused = runtime.block_on(queue.submit(two)).expect_err("refused");
    assert!(matches!(refused, StoreError::Unavailable), "{refused:?}");
}
