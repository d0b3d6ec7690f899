//! Who may do what, on the real system: a matrix of organisations ×
//! operations × municipalities over mutual TLS; the audit log as the privacy
//! officer fetches it; retention that leaves a purged period unrecoverable
//! from the data directory; per-partner rate limits.

use std::collections::BTreeMap;

use tonic::Code;
use tonic::transport::Channel;
use wijkradar_audit::{Count, Event};
use wijkradar_domain::{Month, PartnerPseudonym};
use wijkradar_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, audit_service_client::AuditServiceClient,
    query_service_client::QueryServiceClient,
};
use wijkradar_pseudonym::ServerKey;
use wijkradar_server::access::Role;
use wijkradar_tests::{TestServer, all_bytes, contains};

use crate::{KEY_ID, batch, pseudonym, submit};

const ALMERE_BUURT: &str = "BU00340101";
const LELYSTAD_BUURT: &str = "BU09950110";
const ZEEWOLDE_BUURT: &str = "BU00500000";

/// The organisations of the matrix: certificate name, organisation, the
/// role its certificate is issued for (the access file below decides).
const ORGANISATIONS: [(&str, &str, Role); 7] = [
    ("corporatie", "Woningcorporatie", Role::Partner),
    ("energie", "Energieleverancier", Role::Partner),
    ("almere", "Gemeente Almere", Role::Analyst),
    ("lelystad", "Gemeente Lelystad", Role::Analyst),
    (
        "fg",
        "Functionaris gegevensbescherming",
        Role::PrivacyOfficer,
    ),
    ("beheer", "Beheer", Role::Operator),
    // Issued by the CA, but not in the access configuration.
    ("onbekend", "Onbekend", Role::Analyst),
];

fn access_file(oins: &[wijkradar_pki::Oin]) -> String {
    let entry = |i: usize, grant: &str| {
        format!(
            "[[organisation]]\nname = \"{0}\"\noin = \"{1}\"\nsubject_common_name = \"{0}\"\n{grant}\n\n",
            ORGANISATIONS[i].0, oins[i]
        )
    };
    [
        entry(
            0,
            r#"partner = { signal_types = ["huurachterstand"], municipalities = ["GM0034"] }"#,
        ),
        entry(
            1,
            r#"partner = { signal_types = ["energieachterstand"], municipalities = ["GM0034", "GM0995"] }"#,
        ),
        entry(2, r#"analyst = { municipalities = ["GM0034"] }"#),
        entry(3, r#"analyst = { municipalities = ["GM0995"] }"#),
        entry(4, "privacy_officer = true"),
        entry(5, "operator = true"),
    ]
    .concat()
}

pub(crate) async fn start(adjust: impl FnOnce(&mut wijkradar_server::ServerConfig)) -> TestServer {
    TestServer::start_for(&ORGANISATIONS, |oins| Some(access_file(oins)), adjust).await
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Submit(&'static str, &'static str),
    Table(&'static str),
    Alerts(&'static str),
    Catalogue(&'static str),
    ExportAudit,
    Purge,
    Materialise,
    Backup,
}

fn month_ago(n: i32) -> String {
    wijkradar_tests::current_month().plus(-n).to_string()
}

async fn call(channel: Channel, op: Op, seq: usize) -> Result<(), tonic::Status> {
    let month = month_ago(2);
    let table = |g: &str| pb::GetTableRequest {
        gemeente_code: g.into(),
        level: pb::AreaLevel::Buurt.into(),
        signal_types: vec![],
        from_month: month.clone(),
        to_month: month.clone(),
        period: pb::Period::Month.into(),
        layout: pb::TableLayout::Cells.into(),
        ..Default::default()
    };
    match op {
        Op::Submit(t, buurt) => {
            let id = format!("matrix-{seq}");
            submit(channel, vec![batch(&id, t, buurt, &month, seq as u64, 3)])
                .await
                .remove(0)
        }
        Op::Table(g) => QueryServiceClient::new(channel)
            .get_table(table(g))
            .await
            .map(|_| ()),
        Op::Alerts(g) => QueryServiceClient::new(channel)
            .get_alerts(pb::GetAlertsRequest {
                gemeente_code: g.into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Op::Catalogue(g) => QueryServiceClient::new(channel)
            .get_catalogue(pb::GetCatalogueRequest {
                gemeente_code: g.into(),
            })
            .await
            .map(|_| ()),
        Op::ExportAudit => {
            let mut stream = AuditServiceClient::new(channel)
                .export_audit(pb::ExportAuditRequest {})
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
            Ok(())
        }
        Op::Purge => AdminServiceClient::new(channel)
            .purge(pb::PurgeRequest {})
            .await
            .map(|_| ()),
        Op::Materialise => AdminServiceClient::new(channel)
            .materialise_releases(pb::MaterialiseReleasesRequest {
                month: String::new(),
            })
            .await
            .map(|_| ()),
        Op::Backup => AdminServiceClient::new(channel)
            .backup(pb::BackupRequest {})
            .await
            .map(|_| ()),
    }
}

/// What the access file above allows.
fn expected(org: &str, op: Op) -> Code {
    use Op::*;
    let allowed = match (org, op) {
        ("onbekend", _) => return Code::Unauthenticated,
        ("corporatie", Submit("huurachterstand", ALMERE_BUURT)) => true,
        ("energie", Submit("energieachterstand", ALMERE_BUURT | LELYSTAD_BUURT)) => true,
        ("almere", Table("GM0034") | Alerts("GM0034") | Catalogue("GM0034")) => true,
        ("lelystad", Table("GM0995") | Alerts("GM0995") | Catalogue("GM0995")) => true,
        ("fg", ExportAudit) => true,
        ("beheer", Purge | Materialise | Backup) => true,
        _ => false,
    };
    if allowed {
        Code::Ok
    } else {
        Code::PermissionDenied
    }
}

const OPS: [Op; 18] = [
    Op::Submit("huurachterstand", ALMERE_BUURT),
    Op::Submit("huurachterstand", LELYSTAD_BUURT),
    Op::Submit("energieachterstand", ALMERE_BUURT),
    Op::Submit("energieachterstand", LELYSTAD_BUURT),
    Op::Submit("energieachterstand", ZEEWOLDE_BUURT),
    Op::Table("GM0034"),
    Op::Table("GM0995"),
    Op::Table("GM0050"),
    Op::Alerts("GM0034"),
    Op::Alerts("GM0995"),
    Op::Alerts("GM0050"),
    Op::Catalogue("GM0034"),
    Op::Catalogue("GM0995"),
    Op::Catalogue("GM0050"),
    Op::ExportAudit,
    Op::Purge,
    Op::Materialise,
    Op::Backup,
];

#[tokio::test]
async fn every_organisation_may_do_exactly_what_the_access_file_grants() {
    let server = start(|_| {}).await;
    let mut seq = 0;
    let mut wrong = Vec::new();
    let mut refusals: BTreeMap<(&str, String), String> = BTreeMap::new();
    for (org, _, _) in ORGANISATIONS {
        let channel = server.channel(org).await;
        for op in OPS {
            seq += 1;
            let stored_before = server.store().signal_count().unwrap();
            let result = call(channel.clone(), op, seq).await;
            let code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
            if code != expected(org, op) {
                wrong.push(format!(
                    "{org} {op:?}: got {code:?} ({}), expected {:?}",
                    result
                        .as_ref()
                        .err()
                        .map(|s| s.message().to_owned())
                        .unwrap_or_default(),
                    expected(org, op)
                ));
            }
            if let (Op::Submit(..), Err(status)) = (op, &result) {
                // A refused batch leaves nothing stored.
                assert_eq!(
                    server.store().signal_count().unwrap(),
                    stored_before,
                    "{org} {op:?}: {}",
                    status.message()
                );
            }
            if let (Op::Table(g), Err(status)) = (op, &result) {
                refusals.insert((org, g.to_owned()), status.message().to_owned());
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The matrix stored the allowed submissions: 3 batches of 3.
    assert_eq!(server.store().signal_count().unwrap(), 9);

    // Lelystad holds data (from the energy supplier), Zeewolde none: to
    // Almere's analyst the refusals read the same but for the code.
    let with_data = &refusals[&("almere", "GM0995".to_owned())];
    let without = &refusals[&("almere", "GM0050".to_owned())];
    assert_eq!(
        with_data.replace("GM0995", "GMxxxx"),
        without.replace("GM0050", "GMxxxx")
    );
    assert!(
        with_data.contains("may not query figures of GM0995"),
        "{with_data}"
    );
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_while_its_organisation_stays() {
    let server = start(|config| {
        let pki = config.tls.client_ca.parent().unwrap().to_owned();
        let fingerprint = wijkradar_pki::fingerprint(&pki.join("corporatie.pem")).unwrap();
        let text = std::fs::read_to_string(&config.access).unwrap();
        std::fs::write(
            &config.access,
            format!("revoked_certificates = [\"{fingerprint}\"]\n\n{text}"),
        )
        .unwrap();
    })
    .await;
    let month = month_ago(2);
    let status = submit(
        server.channel("corporatie").await,
        vec![batch("b", "huurachterstand", ALMERE_BUURT, &month, 1, 3)],
    )
    .await
    .remove(0)
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    // It has a certificate of the right CA: it is told that it is not
    // authorised, not that it lacks a certificate.
    assert!(
        status.message().contains("not authorised"),
        "{}",
        status.message()
    );
    // The others are unaffected.
    call(server.channel("almere").await, Op::Table("GM0034"), 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_partner_batch_outside_its_grant_is_refused_whole_with_the_field() {
    let server = start(|_| {}).await;
    let month = month_ago(2);
    let mut mixed = batch("mixed", "huurachterstand", ALMERE_BUURT, &month, 1, 5);
    mixed.signals[3].buurt_code = LELYSTAD_BUURT.into();
    let checksum = server.store_checksum();
    let status = submit(server.channel("corporatie").await, vec![mixed])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("batch.signals[3].buurt_code")
            && status.message().contains("GM0995"),
        "{}",
        status.message()
    );
    let mut other_type = batch("type", "schoolverzuim", ALMERE_BUURT, &month, 1, 2);
    other_type.signals[0].signal_type = "huurachterstand".into();
    let status = submit(server.channel("corporatie").await, vec![other_type])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("batch.signals[1].signal_type"),
        "{}",
        status.message()
    );
    assert_eq!(
        server.store_checksum(),
        checksum,
        "nothing of either batch is stored"
    );
}

#[tokio::test]
async fn the_privacy_officer_fetches_an_intact_log_without_pseudonyms_or_small_counts() {
    let server = start(|_| {}).await;
    let month = month_ago(2);
    let corporatie = server.channel("corporatie").await;
    // Three batches: 3 signals (below k), 12, and a refused one.
    let answers = submit(
        corporatie.clone(),
        vec![
            batch("klein", "huurachterstand", ALMERE_BUURT, &month, 1, 3),
            batch("groot", "huurachterstand", ALMERE_BUURT, &month, 2, 12),
            batch("fout", "huurachterstand", "BU99999999", &month, 3, 2),
        ],
    )
    .await;
    assert!(answers[0].is_ok() && answers[1].is_ok() && answers[2].is_err());
    let almere = server.channel("almere").await;
    call(almere.clone(), Op::Table("GM0034"), 0).await.unwrap();
    call(almere, Op::Table("GM0995"), 0).await.unwrap_err();
    call(server.channel("onbekend").await, Op::Table("GM0034"), 0)
        .await
        .unwrap_err();

    let mut stream = AuditServiceClient::new(server.channel("fg").await)
        .export_audit(pb::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut log = Vec::new();
    while let Some(part) = stream.message().await.unwrap() {
        log.extend_from_slice(&part.chunk);
    }
    let report = wijkradar_audit::verify(&log, None);
    assert!(report.is_intact(), "{:?}", report.problems);

    let batches: Vec<(&str, &str, &BTreeMap<String, Count>)> = report
        .parsed
        .iter()
        .filter_map(|e| match &e.event {
            Event::Batch {
                batch_id,
                outcome,
                signals,
                ..
            } => Some((batch_id.as_str(), outcome.as_str(), signals)),
            _ => None,
        })
        .collect();
    let below = Count::Below("<10".into());
    assert_eq!(
        batches,
        vec![
            (
                "klein",
                "stored",
                &BTreeMap::from([("huurachterstand".to_owned(), below.clone())])
            ),
            (
                "groot",
                "stored",
                &BTreeMap::from([("huurachterstand".to_owned(), Count::Exact(12))])
            ),
            (
                "fout",
                "refused",
                &BTreeMap::from([("huurachterstand".to_owned(), below)])
            ),
        ]
    );
    assert!(
        report
            .parsed
            .iter()
            .all(|e| e.actor != "corporatie" || matches!(e.event, Event::Batch { .. }))
    );
    let calls: Vec<(String, String, String)> = report
        .parsed
        .iter()
        .filter_map(|e| match &e.event {
            Event::Call {
                call,
                gemeente,
                outcome,
                ..
            } => Some((
                e.actor.clone(),
                format!("{call} {gemeente}"),
                outcome.clone(),
            )),
            _ => None,
        })
        .collect();
    for expected in [
        ("almere", "GetTable GM0034", "ok"),
        ("almere", "GetTable GM0995", "refused"),
        ("unknown", "GetTable ", "refused"),
        ("fg", "ExportAudit ", "ok"),
    ] {
        assert!(
            calls
                .iter()
                .any(|(a, c, o)| (a.as_str(), c.as_str(), o.as_str()) == expected),
            "{expected:?} not in {calls:?}"
        );
    }
    // No pseudonym in any form, and no count of 3.
    let text = String::from_utf8(log).unwrap();
    for i in 0..12 {
        for seed in 1..=3 {
            let p = pseudonym(seed, i);
            assert!(!text.contains(&hex::encode(&p)));
        }
    }
    assert!(!text.contains("\"huurachterstand\":3"), "{text}");
}

/// The periods (months) in which someone with only the data directory can
/// find the given households: every secret still in the key file, tried on
/// every pseudonym, searched for in every byte.
fn linkable_months(
    dir: &std::path::Path,
    households: &[wijkradar_domain::ServerPseudonym],
) -> Vec<Month> {
    let bytes = all_bytes(dir);
    let mut months = Vec::new();
    for (_, month, secret) in wijkradar_store::forensic::period_secrets(dir).unwrap() {
        if households
            .iter()
            .any(|p| contains(&bytes, &wijkradar_store::forensic::tag(&secret, p)))
        {
            months.push(month);
        }
    }
    months.sort();
    months
}

#[tokio::test]
async fn purged_signals_cannot_be_recovered_from_the_data_directory() {
    let mut server = start(|_| {}).await;
    let old = month_ago(24);
    let recent = month_ago(2);
    let corporatie = server.channel("corporatie").await;
    for (id, month) in [("oud", &old), ("recent", &recent)] {
        let answers = submit(
            corporatie.clone(),
            vec![batch(id, "huurachterstand", ALMERE_BUURT, month, 7, 20)],
        )
        .await;
        assert!(answers[0].is_ok(), "{answers:?}");
    }
    let server_key = ServerKey::load(&server.setup.config.keys.server_key).unwrap();
    let households: Vec<_> = (0..20)
        .map(|i| server_key.rekey(&PartnerPseudonym::try_from(pseudonym(7, i).as_slice()).unwrap()))
        .collect();
    let data = server.setup.config.data_dir.clone();
    let old_month: Month = old.parse().unwrap();
    let recent_month: Month = recent.parse().unwrap();
    // Before: a copy of the data directory links the households to both months.
    assert_eq!(
        linkable_months(&data, &households),
        vec![old_month, recent_month]
    );
    let old_secret = wijkradar_store::forensic::period_secrets(&data)
        .unwrap()
        .into_iter()
        .find(|(_, m, _)| *m == old_month)
        .unwrap()
        .2;

    let table = |month: &str| pb::GetTableRequest {
        gemeente_code: "GM0034".into(),
        level: pb::AreaLevel::Gemeente.into(),
        signal_types: vec!["huurachterstand".into()],
        from_month: month.into(),
        to_month: month.into(),
        period: pb::Period::Month.into(),
        layout: pb::TableLayout::Cells.into(),
        ..Default::default()
    };
    let mut q = server.query("almere").await;
    let recent_before = q.get_table(table(&recent)).await.unwrap().into_inner();

    // Retention of 18 months from now on; the operator purges.
    server.setup.config.retention.default_months = 18;
    server.restart().await;
    let answer = AdminServiceClient::new(server.channel("beheer").await)
        .purge(pb::PurgeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.signals_purged, "20");
    assert_eq!(server.store().signal_count().unwrap(), 20);

    // After: only the recent month links, the old secret is nowhere, and no
    // server pseudonym is in the clear.
    assert_eq!(linkable_months(&data, &households), vec![recent_month]);
    let bytes = all_bytes(&data);
    assert!(!contains(&bytes, &old_secret));
    for p in &households {
        assert!(!contains(&bytes, p.as_bytes()));
    }
    // The kept month answers as before; the purged one says so.
    let mut q = server.query("almere").await;
    assert_eq!(
        q.get_table(table(&recent)).await.unwrap().into_inner(),
        recent_before
    );
    let purged = q.get_table(table(&old)).await.unwrap().into_inner();
    assert!(
        purged
            .cells
            .iter()
            .all(|c| c.status == pb::CellStatus::Purged as i32 && c.value.is_none())
    );
    // A late signal for the purged month is refused with the field.
    let late = submit(
        server.channel("corporatie").await,
        vec![batch("laat", "huurachterstand", ALMERE_BUURT, &old, 8, 1)],
    )
    .await
    .remove(0)
    .unwrap_err();
    assert_eq!(late.code(), Code::InvalidArgument);
    assert!(
        late.message().contains("batch.signals[0].month") && late.message().contains("retention"),
        "{}",
        late.message()
    );
}

#[tokio::test]
async fn a_partner_over_its_rate_is_refused_and_the_others_are_not_slowed() {
    let server = start(|c| {
        c.limits.max_batch_signals = 100;
        // One signal a second: the bucket cannot refill during the test,
        // however slow the machine.
        c.limits.partner_signals_per_second = 1;
        c.limits.partner_burst_signals = 200;
    })
    .await;
    let month = month_ago(2);
    let flood: Vec<_> = (0..4)
        .map(|i| {
            batch(
                &format!("vloed-{i}"),
                "huurachterstand",
                ALMERE_BUURT,
                &month,
                100 + i,
                100,
            )
        })
        .collect();
    let answers = submit(server.channel("corporatie").await, flood).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers[0].is_ok() && answers[1].is_ok());
    let status = answers[2].as_ref().unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("retry in"),
        "{}",
        status.message()
    );

    let started = std::time::Instant::now();
    let other = submit(
        server.channel("energie").await,
        vec![batch(
            "ander",
            "energieachterstand",
            ALMERE_BUURT,
            &month,
            200,
            100,
        )],
    )
    .await;
    assert!(other[0].is_ok(), "{other:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(server.store().signal_count().unwrap(), 300);
}

#[tokio::test]
async fn the_agent_waits_out_the_rate_limit_and_sends_the_rest() {
    use wijkradar_agent::{Outbox, outbox::Import};
    let server = start(|c| {
        c.limits.max_batch_signals = 100;
        c.limits.partner_signals_per_second = 400;
        c.limits.partner_burst_signals = 200;
    })
    .await;
    let month = month_ago(2);
    let batches: Vec<_> = (0..5)
        .map(|i| {
            batch(
                &format!("golf-{i}"),
                "huurachterstand",
                ALMERE_BUURT,
                &month,
                300 + i,
                100,
            )
        })
        .collect();
    let work = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&work.path().join("outbox")).unwrap();
    let record = Import {
        at: 0,
        file_name: "golf.csv".into(),
        rows: 500,
        signals: 500,
        batches: 5,
        key_id: KEY_ID.into(),
    };
    let encoded: Vec<Vec<u8>> = batches.iter().map(prost::Message::encode_to_vec).collect();
    outbox.import(&[7; 32], &record, &encoded).unwrap();
    let started = std::time::Instant::now();
    let sent =
        wijkradar_agent::run::send_pending(&outbox, server.channel("corporatie").await, |_| {})
            .await
            .unwrap();
    // The burst takes two batches; each further one waits a quarter second.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((sent.signals, sent.stored, sent.batches), (500, 5, 5));
    assert!(outbox.pending().unwrap().is_empty());
    assert_eq!(server.store().signal_count().unwrap(), 500);
}

/// The operator can release one month; a month that is not one, or has not
/// ended, is refused with the field.
#[tokio::test]
async fn the_operator_materialises_one_month_and_a_bad_month_is_refused() {
    use tonic_types::StatusExt;
    let server = start(|_| {}).await;
    let month = month_ago(2);
    submit(
        server.channel("corporatie").await,
        vec![batch("een", "huurachterstand", ALMERE_BUURT, &month, 1, 12)],
    )
    .await;
    let mut admin = AdminServiceClient::new(server.channel("beheer").await);
    let materialise = |month: &str| pb::MaterialiseReleasesRequest {
        month: month.to_owned(),
    };
    for (bad, why) in [
        ("2024-13", "is not a month"),
        (
            &*wijkradar_tests::current_month().to_string(),
            "has not ended",
        ),
    ] {
        let status = admin
            .materialise_releases(materialise(bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "month");
        assert!(violations[0].description.contains(why), "{violations:?}");
    }
    // The month: each signal type with signals that month (here one) and
    // every derived indicator, of every gemeente with signals (here one).
    let answer = admin
        .materialise_releases(materialise(&month))
        .await
        .unwrap()
        .into_inner();
    let derived = wijkradar_domain::derived::Derived::ALL.len() as u64;
    assert_eq!(answer.tables_released, 1 + derived, "{answer:?}");
    // Asked again, nothing changed: nothing new.
    let again = admin
        .materialise_releases(materialise(&month))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.tables_released, 0);
}

/// A month that ended fewer than `materialise_after_days` ago is pending to
/// a query: no version is spent on half its exports. The operator can
/// release it anyway; from then on the query shows that release, and a late
/// signal in the waiting time makes no new version.
#[tokio::test]
async fn a_month_within_the_waiting_days_is_pending_until_released() {
    // 40 days: last month has always ended fewer than 40 days ago.
    let server = start(|c| c.release.materialise_after_days = 40).await;
    let month = month_ago(1);
    let corporatie = server.channel("corporatie").await;
    submit(
        corporatie.clone(),
        vec![batch("een", "huurachterstand", ALMERE_BUURT, &month, 1, 30)],
    )
    .await;
    let table = pb::GetTableRequest {
        gemeente_code: "GM0034".into(),
        level: pb::AreaLevel::Buurt.into(),
        signal_types: vec!["huurachterstand".into()],
        from_month: month.clone(),
        to_month: month.clone(),
        period: pb::Period::Month.into(),
        layout: pb::TableLayout::Cells.into(),
        ..Default::default()
    };
    let mut q = server.query("almere").await;
    let pending = q.get_table(table.clone()).await.unwrap().into_inner();
    assert!(
        pending
            .cells
            .iter()
            .all(|c| c.status == pb::CellStatus::Pending as i32 && c.value.is_none())
    );
    AdminServiceClient::new(server.channel("beheer").await)
        .materialise_releases(pb::MaterialiseReleasesRequest {
            month: month.clone(),
        })
        .await
        .unwrap();
    let released = q.get_table(table.clone()).await.unwrap().into_inner();
    let cell = released
        .cells
        .iter()
        .find(|c| c.area_code == ALMERE_BUURT)
        .unwrap();
    assert_eq!(cell.status, pb::CellStatus::Released as i32);
    assert_eq!(cell.release_version, 1);
    // A late batch: stored, but the release stays until the month is closed.
    submit(
        corporatie,
        vec![batch(
            "laat",
            "huurachterstand",
            ALMERE_BUURT,
            &month,
            2,
            15,
        )],
    )
    .await;
    assert_eq!(q.get_table(table).await.unwrap().into_inner(), released);
}

/// The aggregator stops (crash, power) after a batch is stored and flushed
/// but before its audit entry is written: the next start writes the entry,
/// once, so the log accounts for every stored batch.
#[tokio::test]
async fn a_batch_stored_just_before_a_crash_gets_its_audit_entry_at_the_next_start() {
    let mut server = TestServer::start().await;
    let month = month_ago(2);
    let sent = submit(
        server.channel(wijkradar_tests::PARTNER_A).await,
        vec![batch(
            "ok-1",
            "huurachterstand",
            ALMERE_BUURT,
            &month,
            1,
            12,
        )],
    )
    .await;
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    // Stored by the writer as the ingest service would, but the process
    // "dies" before the audit entry.
    server
        .restart_after(|config| async move {
            let key = ServerKey::load(&config.keys.server_key).unwrap();
            let store = wijkradar_store::Store::open(&config.data_dir, key.id().as_str()).unwrap();
            let (queue, writer) = wijkradar_store::IngestQueue::start(store.clone(), 4);
            let signals = (0..3u8)
                .map(|i| wijkradar_store::StoredSignal {
                    pseudonym: wijkradar_domain::ServerPseudonym::from_bytes([i + 100; 32]),
                    buurt: ALMERE_BUURT.parse().unwrap(),
                    signal_type: "huurachterstand".parse().unwrap(),
                    month: month.parse().unwrap(),
                    severity: None,
                    record_key: u32::from(i),
                    household: None,
                    previous: None,
                })
                .collect();
            let outcome = queue
                .submit(wijkradar_store::IncomingBatch {
                    partner: wijkradar_tests::PARTNER_A.into(),
                    id: wijkradar_domain::BatchId::new("crashed-1").unwrap(),
                    key_id: wijkradar_domain::PseudonymKeyId::new(KEY_ID).unwrap(),
                    digest: [7; 32],
                    signals,
                })
                .await;
            assert!(outcome.is_ok(), "{outcome:?}");
            drop(queue);
            writer.join();
        })
        .await;
    server.restart().await;
    let log = crate::audit_log(&server);
    let report = wijkradar_audit::verify(log.as_bytes(), None);
    assert!(report.is_intact(), "{report:?}");
    let entries = |id: &str| -> Vec<(String, Option<String>)> {
        report
            .parsed
            .iter()
            .filter_map(|e| match &e.event {
                Event::Batch {
                    batch_id,
                    outcome,
                    reason,
                    ..
                } if batch_id == id => Some((outcome.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    };
    let crashed = entries("crashed-1");
    assert_eq!(crashed.len(), 1, "one entry over two starts: {crashed:?}");
    assert_eq!(crashed[0].0, "stored");
    assert!(
        crashed[0]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("recovered at start-up")
    );
    assert_eq!(
        entries("ok-1"),
        [("stored".to_owned(), None)],
        "logged once, not recovered"
    );
    assert!(server.store().unaudited().unwrap().is_empty());
}
