//! Online backup and verified restore (issue 19, point 5): a backup made
//! while the server runs, restored into a new data directory, answers
//! every table exactly as before; what came in after the backup is not in
//! it; the restored audit log verifies. A damaged copy and a data directory
//! that holds a store are refused.

use wijkradar_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use wijkradar_tests::current_month;

use crate::{batch, submit};

/// Every released cell of Almere, buurten, wijken and the gemeente, for
/// the last three months and their quarters (pending ones too), with
/// versions.
async fn almere_tables(server: &wijkradar_tests::TestServer) -> Vec<pb::Cell> {
    let mut q = server.query("almere").await;
    let (from, to) = (current_month().plus(-3), current_month().plus(-1));
    let mut all = Vec::new();
    for level in [
        pb::AreaLevel::Buurt,
        pb::AreaLevel::Wijk,
        pb::AreaLevel::Gemeente,
    ] {
        for period in [pb::Period::Month, pb::Period::Quarter] {
            let answer = q
                .get_table(pb::GetTableRequest {
                    gemeente_code: "GM0034".into(),
                    level: level.into(),
                    from_month: from.to_string(),
                    to_month: to.to_string(),
                    period: period.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            all.extend(answer.cells);
        }
    }
    all
}

#[tokio::test]
async fn a_backup_made_while_serving_restores_every_table_exactly() {
    let mut server = crate::governance::start(|_| {}).await;
    let months: Vec<String> = (1..=3)
        .map(|n| current_month().plus(-n).to_string())
        .collect();
    for (i, month) in months.iter().enumerate() {
        let stored = submit(
            server.channel("corporatie").await,
            vec![batch(
                &format!("b-{i}"),
                "huurachterstand",
                "BU00340101",
                month,
                i as u64,
                25 + i as u64,
            )],
        )
        .await;
        assert!(stored.iter().all(|r| r.is_ok()), "{stored:?}");
    }
    let before = almere_tables(&server).await;
    assert!(
        before.iter().any(|c| c.value.is_some()),
        "some cells released"
    );
    let signals = server.store().signal_count().unwrap();

    let answer = AdminServiceClient::new(server.channel("beheer").await)
        .backup(pb::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let backup = std::path::PathBuf::from(&answer.directory);
    assert!(
        backup.starts_with(server.setup.config.data_dir.join("backups")),
        "{backup:?}"
    );
    assert!(answer.records > signals, "{answer:?}");
    assert_eq!(answer.manifest_sha256.len(), 64);
    assert!(crate::audit_log(&server).contains("\"Backup\""));

    // More comes in after the backup: not in it.
    let late = submit(
        server.channel("corporatie").await,
        vec![batch(
            "late",
            "huurachterstand",
            "BU00340102",
            &months[0],
            99,
            30,
        )],
    )
    .await;
    assert!(late[0].is_ok());
    assert_ne!(almere_tables(&server).await, before);

    // The machine is lost; the backup is restored into a new data
    // directory at the same place, and the server starts on it.
    let data_dir = server.setup.config.data_dir.clone();
    let saved = data_dir.with_extension("lost");
    server
        .restart_after(|_| async {
            std::fs::rename(&data_dir, &saved).unwrap();
            let copy = saved.join(backup.strip_prefix(&data_dir).unwrap());
            // A damaged copy is refused before anything is written.
            let damaged = saved.join("damaged");
            std::fs::create_dir(&damaged).unwrap();
            for f in std::fs::read_dir(&copy).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, damaged.join(f.file_name().unwrap())).unwrap();
            }
            let records = damaged.join(wijkradar_store::backup::RECORDS_FILE);
            let mut bytes = std::fs::read(&records).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(&records, bytes).unwrap();
            let err =
                wijkradar_server::backup::restore(&damaged, &data_dir, |_, _| {}).unwrap_err();
            assert!(err.to_string().contains("SHA-256"), "{err}");
            assert!(!data_dir.join("store").exists());

            let restored = wijkradar_server::backup::restore(&copy, &data_dir, |_, _| {}).unwrap();
            assert_eq!(restored.records, answer.records);
            // Into a data directory that holds a store: refused.
            let err = wijkradar_server::backup::restore(&copy, &data_dir, |_, _| {}).unwrap_err();
            assert!(err.to_string().contains("new data directory"), "{err}");
        })
        .await;
    assert_eq!(server.store().signal_count().unwrap(), signals);
    assert_eq!(almere_tables(&server).await, before);
    let log = std::fs::read(data_dir.join("audit.log")).unwrap();
    let report = wijkradar_audit::verify(&log, None);
    assert!(report.is_intact(), "{:?}", report.problems);
}
