//! End-to-end tests of Wijkradar through its real parts: gRPC over mutual
//! TLS on 127.0.0.1:0, redb stores in temporary directories, the agent library.

mod access;
pub(crate) mod alerts;
mod answers;
mod attacks;
mod backup;
mod bad_input;
mod browser;
mod dashboard;
mod discovery;
mod epochs;
mod governance;
mod interventions;
mod linking;
mod metrics;
mod oidc;
mod open_data;
mod paging;
mod pipeline;
mod privacy;
mod releases;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tonic::transport::Channel;
use wijkradar_proto::v1::ingest_service_client::IngestServiceClient;

use wijkradar_proto::v1 as pb;

/// A table as (area, signal type, month) → released value, `None` when suppressed.
pub type Cells = BTreeMap<(String, String, String), Option<u64>>;

pub fn cells(resp: &pb::GetTableResponse) -> Cells {
    resp.cells
        .iter()
        .map(|c| {
            let value = match pb::CellStatus::try_from(c.status).expect("known status") {
                pb::CellStatus::Released => Some(c.value.expect("a released cell has a value")),
                pb::CellStatus::Suppressed => {
                    assert_eq!(c.value, None, "a suppressed cell must carry no value");
                    None
                }
                pb::CellStatus::Unspecified => panic!("unspecified cell status"),
                pb::CellStatus::Pending => panic!("these tests ask for ended months only"),
                pb::CellStatus::Purged => panic!("these tests ask for months within retention"),
            };
            (
                (c.area_code.clone(), c.signal_type.clone(), c.month.clone()),
                value,
            )
        })
        .collect()
}

/// The server's audit log as it is on disk.
pub(crate) fn audit_log(server: &wijkradar_tests::TestServer) -> String {
    std::fs::read_to_string(
        server
            .setup
            .config
            .data_dir
            .join(wijkradar_audit::FILE_NAME),
    )
    .unwrap()
}

/// The fields a refusal names in its `google.rpc.BadRequest` details.
pub(crate) fn bad_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The dashboard on `127.0.0.1:0` with a one-time login for the analyst.
pub(crate) fn local_dashboard(c: &mut wijkradar_server::ServerConfig) {
    c.dashboard = Some(wijkradar_server::config::DashboardConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        local_login: Some(wijkradar_tests::ANALYST.into()),
        session_minutes: 30,
        oidc: None,
    });
}

/// Every cell of a cells-layout table, page by page (20,000 cells each);
/// also how many pages it took.
pub(crate) async fn all_pages(
    client: &mut wijkradar_proto::v1::query_service_client::QueryServiceClient<Channel>,
    mut request: pb::GetTableRequest,
) -> (Vec<pb::Cell>, usize) {
    request.page_size = 20_000;
    let mut cells = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .get_table(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(page.cells.len() <= 20_000);
        pages += 1;
        cells.extend(page.cells);
        if page.next_page_token.is_empty() {
            return (cells, pages);
        }
        request.page_token = page.next_page_token;
    }
}

pub fn table_request(
    level: pb::AreaLevel,
    types: &[&str],
    from: &str,
    to: &str,
) -> pb::GetTableRequest {
    pb::GetTableRequest {
        gemeente_code: "GM0034".into(),
        level: level.into(),
        signal_types: types.iter().map(|t| t.to_string()).collect(),
        from_month: from.into(),
        to_month: to.into(),
        period: pb::Period::Month.into(),
        layout: pb::TableLayout::Cells.into(),
        ..Default::default()
    }
}

/// The partner key id the direct-submit tests send.
pub(crate) const KEY_ID: &str = "GM0034.2026.0011223344556677";

pub(crate) fn pseudonym(seed: u64, i: u64) -> Vec<u8> {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("household {seed} {i}").as_bytes(),
    );
    d.as_ref().to_vec()
}

pub(crate) fn batch(
    id: &str,
    signal_type: &str,
    buurt: &str,
    month: &str,
    seed: u64,
    n: u64,
) -> pb::Batch {
    pb::Batch {
        batch_id: id.into(),
        key_id: KEY_ID.into(),
        previous_key_id: String::new(),
        signals: (0..n)
            .map(|i| pb::Signal {
                pseudonym: pseudonym(seed, i),
                buurt_code: buurt.into(),
                signal_type: signal_type.into(),
                month: month.into(),
                severity: None,
                household_pseudonym: Vec::new(),
                previous_epoch_pseudonym: Vec::new(),
            })
            .collect(),
    }
}

/// Sends batches on one stream; the outcome of each until the first refusal.
pub(crate) async fn submit(
    channel: Channel,
    batches: Vec<pb::Batch>,
) -> Vec<Result<(), tonic::Status>> {
    let n = batches.len();
    let requests = batches
        .into_iter()
        .map(|b| pb::SubmitRequest { batch: Some(b) });
    let mut out = Vec::new();
    match IngestServiceClient::new(channel)
        .submit(tokio_stream::iter(requests))
        .await
    {
        Err(status) => out.push(Err(status)),
        Ok(answer) => {
            let mut stream = answer.into_inner();
            while out.len() < n {
                match stream.message().await {
                    Ok(Some(_)) => out.push(Ok(())),
                    Ok(None) => break,
                    Err(status) => {
                        out.push(Err(status));
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Every log line of this test process: Wijkradar's at trace level.
pub(crate) fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        // Wijkradar's own crates at every level; the libraries under them
        // (h2, hyper, tonic trace every frame) from warnings up, or the
        // buffer grows with every test of the process.
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("wijkradar=trace,warn"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("first subscriber of this process");
        logs
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
