//! Test support: a real aggregator on `127.0.0.1:0` with a development PKI,
//! keys and a redb store in a temporary directory, and clients that connect
//! to it over mutual TLS with a chosen certificate.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use tonic::transport::Channel;
use wijkradar_agent::ClientTls;
use wijkradar_dev::DevSetup;
use wijkradar_proto::v1::{
    ingest_service_client::IngestServiceClient, query_service_client::QueryServiceClient,
};
use wijkradar_server::access::Role;
use wijkradar_server::{RunningServer, ServerConfig};

pub const PARTNER_A: &str = "partner-a";
pub const PARTNER_B: &str = "partner-b";
pub const ANALYST: &str = "analyst";

#[derive(Debug)]
pub struct TestServer {
    pub setup: DevSetup,
    server: Option<RunningServer>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` changed its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        Self::start_for(
            &[
                (PARTNER_A, "Corporatie A", Role::Partner),
                (PARTNER_B, "Energie B", Role::Partner),
                (ANALYST, "Gemeente", Role::Analyst),
            ],
            |_| None,
            adjust,
        )
        .await
    }

    /// Starts a server whose clients are `organisations` (certificate name,
    /// organisation, role; the `i`-th gets OIN `dev_oin(i)`), granted for
    /// Almere unless `access` writes the access file's text itself (given the
    /// OINs in order).
    pub async fn start_for(
        organisations: &[(&str, &str, Role)],
        access: impl FnOnce(&[wijkradar_pki::Oin]) -> Option<String>,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut setup = DevSetup::create(dir.path(), organisations).expect("development setup");
        let oins: Vec<_> = (0..organisations.len())
            .map(wijkradar_dev::dev_oin)
            .collect();
        if let Some(text) = access(&oins) {
            std::fs::write(&setup.config.access, text).expect("write the access file");
        }
        // Tests ask for releases themselves; the schedule would race them
        // (a test that wants it turns it on).
        setup.config.release.materialise_every_seconds = 0;
        // The tests' fixtures use fixed months (2024): kept whatever today
        // is, unless a test sets retention itself.
        setup.config.retention.default_months = 1200;
        setup.config.retention.purge_every_seconds = 0;
        setup.config.clock = TEST_CLOCK;
        adjust(&mut setup.config);
        let server = wijkradar_server::start(&setup.config)
            .await
            .expect("server starts");
        TestServer {
            setup,
            server: Some(server),
            _dir: dir,
        }
    }

    fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.running().addr)
    }

    /// Stops the server, closing the store, and starts it again on the same data.
    pub async fn restart(&mut self) {
        self.restart_after(|_| async {}).await;
    }

    /// Stops the server, runs `between` on its configuration (the data
    /// directory is free then), and starts it again.
    pub async fn restart_after<F: std::future::Future<Output = ()>>(
        &mut self,
        between: impl FnOnce(ServerConfig) -> F,
    ) {
        self.server
            .take()
            .expect("server running")
            .shutdown()
            .await
            .expect("clean shutdown");
        between(self.setup.config.clone()).await;
        self.server = Some(
            wijkradar_server::start(&self.setup.config)
                .await
                .expect("server restarts"),
        );
    }

    /// The running dashboard, when the config turned it on.
    pub fn dashboard(&self) -> Option<&wijkradar_server::DashboardHandle> {
        self.running().dashboard.as_ref()
    }

    /// Reads the access file again, as SIGHUP does; how many organisations
    /// it names.
    pub fn reload_access(&self) -> usize {
        self.running()
            .reload_access()
            .expect("the access file loads")
    }

    /// The running metrics listener, when the config turned it on.
    pub fn metrics(&self) -> Option<&wijkradar_server::MetricsHandle> {
        self.running().metrics.as_ref()
    }

    /// The running server's store, for checks without the API.
    pub fn store(&self) -> &wijkradar_store::Store {
        self.running().store()
    }

    /// A checksum over every key and value in the store.
    pub fn store_checksum(&self) -> u32 {
        self.running().store().checksum().expect("checksum")
    }

    pub fn tls(&self, name: &str) -> ClientTls {
        let files = self.setup.client(name);
        ClientTls {
            ca: self.setup.pki_dir.join("ca.pem"),
            cert: files.cert,
            key: files.key,
            domain: "localhost".into(),
        }
    }

    pub async fn channel(&self, name: &str) -> Channel {
        wijkradar_agent::connect(&self.url(), &self.tls(name))
            .await
            .expect("mutual TLS connection")
    }

    pub async fn ingest(&self, name: &str) -> IngestServiceClient<Channel> {
        IngestServiceClient::new(self.channel(name).await)
    }

    pub async fn query(&self, name: &str) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(self.channel(name).await)
    }
}

/// The partner configuration of the tests' simple export layout:
/// `postcode,huisnummer,toevoeging,signaaltype,maand`, one rule per
/// catalogue type on the `signaaltype` column. Paths are placeholders: the
/// tests read exports with [`read_simple_export`] and send them themselves.
pub fn simple_partner_config() -> wijkradar_agent::PartnerConfig {
    let mut text = String::from(
        r#"
[partner]
name = "Testpartner"
kind = "test"
municipalities = ["GM0034"]

[export]
delimiter = ","
encoding = "utf-8"
date_format = "jjjj-mm"
identifier = "address"

[export.columns]
postcode = "postcode"
house_number = "huisnummer"
addition = "toevoeging"
date = "maand"

[agent]
pseudonym_key = "unused.key"
postcode_table = "unused.csv"
outbox = "unused-outbox"

[aggregator]
url = "https://127.0.0.1:1"
server_name = "localhost"
ca = "ca.pem"
cert = "partner.pem"
key = "partner.key"
"#,
    );
    for t in wijkradar_domain::Catalogue::dutch_defaults().types() {
        text.push_str(&format!(
            "\n[[signals]]\ntype = \"{0}\"\nwhen = {{ column = \"signaaltype\", equals = [\"{0}\"] }}\n",
            t.name
        ));
    }
    wijkradar_agent::PartnerConfig::parse(&text, std::path::Path::new("test.toml"))
        .expect("the simple layout parses")
}

/// Reads an export in the simple layout: its summary and its signals.
pub fn read_simple_export(
    export: &str,
    pc6: &wijkradar_agent::Pc6Table,
    key: &wijkradar_pseudonym::PartnerKey,
) -> (
    wijkradar_agent::ExportSummary,
    Vec<wijkradar_proto::v1::Signal>,
) {
    let config = simple_partner_config();
    let rules = config.rules(
        pc6,
        key,
        wijkradar_domain::Month::new(2026, 1).expect("valid month"),
    );
    let mut signals = Vec::new();
    let summary = wijkradar_agent::read_export(export.as_bytes(), &rules, |s| signals.push(s))
        .expect("the export reads");
    (summary, signals)
}

/// The date every test server runs at, whatever the day the tests run:
/// 2026-11-15 12:00 UTC.
pub const TEST_CLOCK: wijkradar_domain::Clock = wijkradar_domain::Clock::Fixed(1_794_744_000);

/// The current month by the test servers' clock.
pub fn current_month() -> wijkradar_domain::Month {
    TEST_CLOCK.month()
}

/// Every byte of every file under `dir`: what someone with a copy of a
/// data directory has.
pub fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).expect("readable file"));
        }
    }
    out
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
