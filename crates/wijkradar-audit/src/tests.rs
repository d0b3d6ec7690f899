use super::*;

fn log_of(n: u64) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join(FILE_NAME)).unwrap();
    for i in 0..n {
        let mut signals = BTreeMap::new();
        signals.insert("huurachterstand".to_owned(), Count::new(i * 7, 10));
        log.append(
            "woningcorporatie",
            Event::Batch {
                batch_id: format!("b{i}"),
                outcome: "stored".into(),
                reason: None,
                signals,
            },
            i % 2 == 0,
        )
        .unwrap();
    }
    let bytes = std::fs::read(log.path()).unwrap();
    (dir, bytes)
}

/// The privacy officer's export call, as appended after a reopening.
fn export_call() -> Event {
    Event::Call {
        call: "ExportAudit".into(),
        gemeente: String::new(),
        request: String::new(),
        outcome: "ok".into(),
        reason: None,
    }
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn join(lines: &[String]) -> Vec<u8> {
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

#[test]
fn an_untouched_log_verifies_and_reopening_continues_the_chain() {
    let (dir, bytes) = log_of(5);
    let report = verify(&bytes, None);
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.entries, 5);
    let (seq, hash) = report.head.clone().unwrap();
    assert_eq!(seq, 5);

    let log = AuditLog::open(&dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(log.head(), (5, hash.clone()));
    log.append("fg", export_call(), true).unwrap();
    let report = verify(&std::fs::read(log.path()).unwrap(), Some((5, &hash)));
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.entries, 6);
}

#[test]
fn small_counts_are_not_written() {
    let (_dir, bytes) = log_of(3);
    let text = String::from_utf8(bytes).unwrap();
    // 0 and 14 are written; 7 is below k = 10.
    assert!(text.contains(r#""huurachterstand":0"#), "{text}");
    assert!(text.contains(r#""huurachterstand":"<10""#), "{text}");
    assert!(text.contains(r#""huurachterstand":14"#), "{text}");
    assert!(!text.contains(":7"), "{text}");
}

#[test]
fn each_kind_of_tampering_is_named() {
    let (_dir, bytes) = log_of(6);
    let original = lines(&bytes);

    // Deleted: entry 3.
    let mut l = original.clone();
    l.remove(2);
    assert_eq!(
        verify(&join(&l), None).problems,
        vec![Problem::Missing { from: 3, to: 3 }]
    );

    // Altered in place (the hash left as it was).
    let mut l = original.clone();
    l[3] = l[3].replace("\"b3\"", "\"b9\"");
    assert_eq!(
        verify(&join(&l), None).problems,
        vec![Problem::Altered { seq: 4, line: 4 }]
    );

    // Altered and re-hashed: the next entry no longer follows on.
    let mut l = original.clone();
    let parsed: LineIn<'_> = serde_json::from_str(&original[3]).unwrap();
    let body = parsed.entry.get().replace("\"b3\"", "\"b9\"");
    l[3] = format!(
        r#"{{"hash":"{}","entry":{}}}"#,
        sha256_hex(body.as_bytes()),
        body
    );
    assert_eq!(
        verify(&join(&l), None).problems,
        vec![Problem::Unlinked { seq: 5, line: 5 }]
    );

    // Inserted: a copy of entry 2 after entry 4.
    let mut l = original.clone();
    l.insert(4, original[1].clone());
    assert_eq!(
        verify(&join(&l), None).problems,
        vec![Problem::Inserted { seq: 2, line: 5 }]
    );

    // Reordered: entries 3 and 4 swapped.
    let mut l = original.clone();
    l.swap(2, 3);
    assert_eq!(
        verify(&join(&l), None).problems,
        vec![Problem::Reordered { seq: 3, line: 4 }]
    );

    // Not an entry at all.
    let mut l = original.clone();
    l[1] = "{\"hash\":".into();
    assert!(
        verify(&join(&l), None)
            .problems
            .contains(&Problem::Malformed { line: 2 })
    );

    // Truncated: only the kept anchor shows it.
    let full = verify(&bytes, None);
    let (seq, hash) = full.head.unwrap();
    let l = original[..4].to_vec();
    assert!(verify(&join(&l), None).is_intact());
    assert_eq!(
        verify(&join(&l), Some((seq, &hash))).problems,
        vec![Problem::AnchorLost { seq: 6 }]
    );
}

#[test]
fn the_export_is_readable_and_names_every_entry() {
    let (_dir, bytes) = log_of(3);
    let report = verify(&bytes, None);
    let text = export_text(&report.parsed);
    assert_eq!(text.lines().count(), 4);
    assert!(text.contains("woningcorporatie\tlevering\tbatch b1: stored; huurachterstand <10"));
}

#[test]
fn a_release_entry_names_what_it_was_audited_with_in_dutch() {
    let entry = |audited_with: Vec<String>| Entry {
        seq: 1,
        time: "2026-11-22T00:00:00Z".into(),
        actor: "aggregator".into(),
        event: Event::Release {
            gemeente: "GM0034".into(),
            signal_type: "huurachterstand".into(),
            month: "2024-Q1".into(),
            version: 2,
            audited_with,
        },
        prev: String::new(),
    };
    let text = export_text(&[
        entry(vec!["2024-01 v1".into(), format!("2024-02 v1{STALE}")]),
        entry(Vec::new()),
    ]);
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert!(lines[0].ends_with(
        "publicatie\tGM0034 huurachterstand 2024-Q1 versie 2, getoetst met 2024-01 v1, 2024-02 v1 (verouderd)"
    ), "{}", lines[0]);
    assert!(lines[1].ends_with("versie 2"), "{}", lines[1]);
    // An entry written before the field existed reads as audited with nothing.
    let old = r#"{"seq":1,"time":"t","actor":"a","kind":"release","gemeente":"GM0034","signal_type":"x","month":"2024-01","version":1,"prev":""}"#;
    let parsed: Entry = serde_json::from_str(old).unwrap();
    assert!(matches!(parsed.event, Event::Release { audited_with, .. } if audited_with.is_empty()));
}

proptest::proptest! {
    /// Removing any one entry but the last, or changing any one byte of an
    /// entry, is always reported.
    #[test]
    fn any_single_deletion_or_byte_change_is_detected(n in 2u64..12, pick in 0usize..1000, byte in 0usize..10_000, to in 0u8..128) {
        let (_dir, bytes) = log_of(n);
        let l = lines(&bytes);
        let i = pick % (l.len() - 1);
        let mut deleted = l.clone();
        deleted.remove(i);
        proptest::prop_assert!(!verify(&join(&deleted), None).is_intact());

        let mut changed = join(&l);
        let at = byte % changed.len();
        proptest::prop_assume!(changed[at] != b'\n' && changed[at] != to && to != b'\n');
        changed[at] = to;
        proptest::prop_assert!(!verify(&changed, None).is_intact());
    }
}

#[test]
fn an_entry_cut_short_by_a_crash_is_dropped_and_the_chain_goes_on() {
    let (dir, bytes) = log_of(3);
    let path = dir.path().join(FILE_NAME);
    let mut cut = bytes.clone();
    cut.extend_from_slice(br#"{"hash":"ab","entry":{"seq":4,"#);
    std::fs::write(&path, &cut).unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.head().0, 3);
    log.append("fg", export_call(), true).unwrap();
    let report = verify(&std::fs::read(&path).unwrap(), None);
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.entries, 4);
}
