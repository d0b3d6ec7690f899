//! Who may connect: mutual TLS with the aggregator's CA, a certificate that
//! has not expired, and an organisation the access configuration knows.

use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use wijkradar_proto::v1::{self as pb, query_service_client::QueryServiceClient};
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer};

use crate::table_request;

#[tokio::test]
async fn a_partner_cannot_query_and_an_analyst_cannot_submit() {
    let server = TestServer::start().await;
    let mut as_partner = server.query(PARTNER_A).await;
    let status = as_partner
        .get_table(table_request(
            pb::AreaLevel::Wijk,
            &[],
            "2024-01",
            "2024-02",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    let status = as_partner
        .get_catalogue(pb::GetCatalogueRequest {
            gemeente_code: "GM0034".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let mut as_analyst = server.ingest(ANALYST).await;
    let batch = pb::Batch {
        batch_id: "x".into(),
        key_id: "GM0034.2026.0011223344556677".into(),
        previous_key_id: String::new(),
        signals: vec![pb::Signal {
            pseudonym: vec![1; 32],
            buurt_code: "BU00340101".into(),
            signal_type: "huurachterstand".into(),
            month: "2024-01".into(),
            severity: None,
            household_pseudonym: Vec::new(),
            previous_epoch_pseudonym: Vec::new(),
        }],
    };
    let checksum = server.store_checksum();
    let status = match as_analyst
        .submit(tokio_stream::iter(vec![pb::SubmitRequest {
            batch: Some(batch),
        }]))
        .await
    {
        Err(status) => status,
        Ok(mut stream) => stream
            .get_mut()
            .message()
            .await
            .expect_err("an analyst's batch must be refused"),
    };
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert_eq!(server.store_checksum(), checksum);
}

/// Connects and calls GetCatalogue with `tls`; the error, if any.
async fn call_with(server: &TestServer, tls: ClientTlsConfig) -> Result<(), String> {
    let channel = Endpoint::from_shared(server.url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    QueryServiceClient::new(channel)
        .get_catalogue(pb::GetCatalogueRequest {
            gemeente_code: "GM0034".into(),
        })
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

fn ca(server: &TestServer) -> Certificate {
    Certificate::from_pem(std::fs::read(server.setup.pki_dir.join("ca.pem")).unwrap())
}

fn identity(files: &wijkradar_pki::CertFiles) -> Identity {
    Identity::from_pem(
        std::fs::read(&files.cert).unwrap(),
        std::fs::read(&files.key).unwrap(),
    )
}

#[tokio::test]
async fn clients_without_a_valid_certificate_from_the_ca_are_refused() {
    let server = TestServer::start().await;
    let base = || {
        ClientTlsConfig::new()
            .ca_certificate(ca(&server))
            .domain_name("localhost")
    };

    // The analyst's own certificate works: the refusals below are the certificate's doing.
    assert_eq!(
        call_with(
            &server,
            base().identity(identity(&server.setup.client(ANALYST)))
        )
        .await,
        Ok(())
    );

    assert!(
        call_with(&server, base()).await.is_err(),
        "no client certificate"
    );

    let other = tempfile::tempdir().unwrap();
    wijkradar_pki::init(other.path(), &[]).unwrap();
    // The analyst's own name, organisation and OIN, from another CA.
    let analyst_oin = wijkradar_dev::dev_oin(2);
    let foreign =
        wijkradar_pki::issue(other.path(), ANALYST, "Gemeente", Some(&analyst_oin)).unwrap();
    assert!(
        call_with(&server, base().identity(identity(&foreign)))
            .await
            .is_err(),
        "a certificate from another CA"
    );

    // The analyst's identity from the right CA, expired.
    let own_ca = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(server.setup.pki_dir.join(f), own_ca.path().join(f)).unwrap();
    }
    let expired =
        wijkradar_pki::issue_valid_for(own_ca.path(), ANALYST, "Gemeente", Some(&analyst_oin), -1)
            .unwrap();
    assert!(
        call_with(&server, base().identity(identity(&expired)))
            .await
            .is_err(),
        "an expired certificate"
    );
}

/// After a key rotation's overlap, the operator retires the old key id for
/// a partner in the access file and reloads it (SIGHUP): batches under that
/// key are refused, naming `batch.key_id`, and nothing of them is stored;
/// the partner's batches under its current key are still taken.
#[tokio::test]
async fn batches_under_a_retired_key_are_refused_after_a_reload() {
    let server = TestServer::start().await;
    let month = wijkradar_tests::current_month().plus(-1).to_string();
    let old_key = crate::KEY_ID;
    let accepted = crate::submit(
        server.channel(PARTNER_A).await,
        vec![crate::batch(
            "before",
            "huurachterstand",
            "BU00340101",
            &month,
            1,
            3,
        )],
    )
    .await;
    assert!(accepted[0].is_ok(), "{accepted:?}");

    let path = &server.setup.config.access;
    let text = std::fs::read_to_string(path).unwrap();
    // partner-a is the file's first organisation, and its only partner
    // grant before partner-b's.
    let retired = text.replacen(
        "partner = { ",
        &format!("partner = {{ retired_key_ids = [\"{old_key}\"], "),
        1,
    );
    assert_ne!(retired, text);
    std::fs::write(path, &retired).unwrap();
    server.reload_access();

    let stored = server.store().signal_count().unwrap();
    let refused = crate::submit(
        server.channel(PARTNER_A).await,
        vec![crate::batch(
            "after",
            "huurachterstand",
            "BU00340101",
            &month,
            2,
            3,
        )],
    )
    .await;
    let status = refused[0].as_ref().unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(crate::bad_fields(status), vec!["batch.key_id"]);
    assert!(status.message().contains("retired"), "{}", status.message());
    assert_eq!(server.store().signal_count().unwrap(), stored);

    // Under the current key the same signals are taken.
    let mut current = crate::batch("current", "huurachterstand", "BU00340101", &month, 2, 3);
    current.key_id = "GM0034.2027.0011223344556677".into();
    let accepted = crate::submit(server.channel(PARTNER_A).await, vec![current]).await;
    assert!(accepted[0].is_ok(), "{accepted:?}");
}
