//! Metrics in the Prometheus text format, on their own plain-HTTP listener
//! (`[metrics] listen`), for a scraper on the host or the cluster network.
//!
//! Every figure sums over the whole aggregator. Labels name only kinds:
//! an outcome, a gRPC status code, a call. Never an organisation, a
//! pseudonym, an area or a signal type, so no label can single out a
//! small group.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use tokio::task::JoinHandle;

use crate::ServerError;

/// Seconds from a batch's arrival to its answer: explicit buckets from
/// 1 ms (a small batch on a fast disk) to 30 s (a writer far behind).
const INGEST_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Seconds of a release (audit included) or an alerts run: from 10 ms to
/// 10 minutes (a national year).
const WORK_BUCKETS: [f64; 11] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0,
];
/// Seconds of one fsynced audit-log append.
const AUDIT_BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0];

/// A batch's or signal's outcome and, when refused, the gRPC code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    /// `stored`, `already_stored` or `refused`.
    pub outcome: &'static str,
    /// The gRPC status code of a refusal (`InvalidArgument`, …); empty else.
    pub code: String,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    batches: Family<Outcome, Counter>,
    signals: Family<Outcome, Counter>,
    ingest_seconds: Histogram,
    audit_append_seconds: Histogram,
    releases: Counter,
    release_seconds: Histogram,
    alerts_runs: Counter,
    alerts_seconds: Histogram,
    queue_depth: Gauge,
    store_bytes: Gauge,
    signals_stored: Gauge,
    audit_log_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("wijkradar");
        Metrics {
            batches: add(
                &mut r,
                "batches",
                "Batches answered, by outcome and refusal code",
                Family::default(),
            ),
            signals: add(
                &mut r,
                "signals",
                "Signals in the batches answered, by outcome and refusal code",
                Family::default(),
            ),
            ingest_seconds: add(
                &mut r,
                "ingest_seconds",
                "Seconds from a batch's arrival to its answer (stored, fsynced and audited, or refused)",
                Histogram::new(INGEST_BUCKETS),
            ),
            audit_append_seconds: add(
                &mut r,
                "audit_append_seconds",
                "Seconds of an fsynced audit-log append of a stored batch",
                Histogram::new(AUDIT_BUCKETS),
            ),
            releases: add(
                &mut r,
                "releases",
                "Table releases made (new versions), audit included",
                Counter::default(),
            ),
            release_seconds: add(
                &mut r,
                "release_seconds",
                "Seconds to compute, audit and store one table release",
                Histogram::new(WORK_BUCKETS),
            ),
            alerts_runs: add(
                &mut r,
                "alerts_runs",
                "Early-warning answers given, to queries and to the scheduled job",
                Counter::default(),
            ),
            alerts_seconds: add(
                &mut r,
                "alerts_seconds",
                "Seconds of an early-warning answer",
                Histogram::new(WORK_BUCKETS),
            ),
            queue_depth: add(
                &mut r,
                "ingest_queue_depth",
                "Requests waiting for the store's writer",
                Gauge::default(),
            ),
            store_bytes: add(
                &mut r,
                "store_bytes",
                "The store's size on disk",
                Gauge::default(),
            ),
            signals_stored: add(
                &mut r,
                "signals_stored",
                "Distinct signals in the store",
                Gauge::default(),
            ),
            audit_log_bytes: add(
                &mut r,
                "audit_log_bytes",
                "The audit log's size on disk",
                Gauge::default(),
            ),
            registry: r,
        }
    }
}

/// Registers `metric` under `name` and returns it: the registry keeps a
/// handle that reads the same values.
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// A batch answered after `took`, with its signals.
    pub(crate) fn batch(&self, outcome: Outcome, signals: u64, took: Duration) {
        self.signals.get_or_create(&outcome).inc_by(signals);
        self.batches.get_or_create(&outcome).inc();
        self.ingest_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn audit_append(&self, took: Duration) {
        self.audit_append_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn release(&self, took: Duration) {
        self.releases.inc();
        self.release_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn alerts_run(&self, took: Duration) {
        self.alerts_runs.inc();
        self.alerts_seconds.observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges read now.
    fn render(&self, state: &crate::State) -> String {
        self.queue_depth.set(state.queue.depth() as i64);
        if let Ok(bytes) = state.store.size_on_disk() {
            self.store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Ok(n) = state.store.signal_count() {
            self.signals_stored
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Ok(m) = std::fs::metadata(&state.audit_path) {
            self.audit_log_bytes
                .set(i64::try_from(m.len()).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// The metrics listener, while the server runs.
#[derive(Debug)]
pub struct MetricsHandle {
    pub addr: SocketAddr,
    pub(crate) task: JoinHandle<()>,
}

/// Serves `GET /metrics` on `listen` (plain HTTP).
pub(crate) async fn start(
    state: Arc<crate::State>,
    listen: SocketAddr,
) -> Result<MetricsHandle, ServerError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tracing::info!(%addr, "metrics listening (HTTP, /metrics)");
    Ok(MetricsHandle { addr, task })
}

async fn scrape(AxumState(state): AxumState<Arc<crate::State>>) -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(move || state.metrics.render(&state))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
