//! The aggregator: gRPC services for partners (ingest) and the municipality
//! (query) over mutual TLS, plus gRPC health and reflection (v1 and v1alpha).
//!
//! Requests are converted into domain values at the boundary
//! ([`convert`]); errors become a gRPC status in one place ([`error`]).
//! Partner pseudonyms are re-keyed under the server key here, before they
//! reach the store.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod access;
pub mod alerts;
mod answer;
mod auth;
pub mod backup;
pub mod config;
mod conns;
pub mod convert;
mod dashboard;

pub mod error;
mod governance;
mod ingest;
mod intervention_text;
pub(crate) mod interventions;
mod limits;
mod metrics;
mod query;
mod refusals;
mod tables;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use wijkradar_audit::{AuditLog, Event};
use wijkradar_domain::hierarchy::Dwellings;
use wijkradar_domain::{Catalogue, Hierarchy};
use wijkradar_proto::v1::{
    admin_service_server::AdminServiceServer, audit_service_server::AuditServiceServer,
    ingest_service_server::IngestServiceServer,
    intervention_service_server::InterventionServiceServer,
    query_service_server::QueryServiceServer,
};
use wijkradar_pseudonym::{KeyError, ServerKey};
use wijkradar_release::{Bases, PtableError, ReleasePolicy};
use wijkradar_store::{IngestQueue, Store, StoreError, WriterThread};

pub use config::{ConfigError, Limits, RetentionConfig, ServerConfig};
pub use dashboard::DashboardHandle;
pub use metrics::MetricsHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("release: {0}")]
    Release(#[from] PtableError),
    #[error("release.household_base {path}: {source}")]
    HouseholdBase {
        path: std::path::PathBuf,
        source: wijkradar_domain::HierarchyError,
    },
    #[error(transparent)]
    Access(#[from] access::AccessError),
    #[error(transparent)]
    Audit(#[from] wijkradar_audit::AuditError),
    #[error("signal_types: {0}")]
    Catalogue(#[from] wijkradar_domain::CatalogueError),
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("{0}")]
    Dashboard(String),
    #[error("backup: {0}")]
    Backup(String),
}

/// Writes the audit entries of batches stored just before a crash, whose
/// entries never made it to the log (the store keeps a `U` record per
/// batch until its entry is on disk). Reads the whole log only when there
/// are such records: after a crash, not at a normal start.
async fn recover_audit(
    store: &Store,
    queue: &IngestQueue,
    audit: &AuditLog,
    k: u64,
) -> Result<usize, ServerError> {
    let pending = store.unaudited().map_err(ServerError::Store)?;
    if pending.is_empty() {
        return Ok(0);
    }
    let log = std::fs::read(audit.path()).map_err(|source| ServerError::Read {
        path: audit.path().to_owned(),
        source,
    })?;
    let logged: std::collections::HashSet<(String, String)> = wijkradar_audit::verify(&log, None)
        .parsed
        .into_iter()
        .filter_map(|e| match e.event {
            Event::Batch {
                batch_id, outcome, ..
            } if outcome == "stored" => Some((e.actor, batch_id)),
            _ => None,
        })
        .collect();
    let mut recovered = 0;
    for p in &pending {
        if logged.contains(&(p.partner.clone(), p.batch_id.clone())) {
            continue;
        }
        let signals = p
            .signals
            .iter()
            .map(|(t, &n)| (t.clone(), wijkradar_audit::Count::new(n, k)))
            .collect();
        let event = Event::Batch {
            batch_id: p.batch_id.clone(),
            outcome: "stored".into(),
            reason: Some("entry recovered at start-up: the aggregator stopped between storing the batch and logging it".into()),
            signals,
        };
        audit.append(&p.partner, event, true)?;
        recovered += 1;
    }
    let done: Vec<(String, String)> = pending
        .into_iter()
        .map(|p| (p.partner, p.batch_id))
        .collect();
    queue
        .forget_unaudited(&done)
        .await
        .map_err(ServerError::Store)?;
    if recovered > 0 {
        tracing::warn!(
            batches = recovered,
            "audit entries of stored batches recovered after a crash"
        );
    }
    Ok(recovered)
}

/// Largest query answer sent.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Everything the services share.
#[derive(Debug)]
pub(crate) struct State {
    hierarchy: Hierarchy,
    catalogue: Catalogue,
    store: Store,
    queue: IngestQueue,
    server_key: ServerKey,
    policy: ReleasePolicy,
    bases: Bases,
    /// What the household bases are (a CBS column name).
    base_measure: String,
    max_versions: u32,
    limits: Limits,
    /// Open data with differential privacy, when configured.
    open_data: Option<config::OpenDataConfig>,
    /// Set when the server stops: a release run ends at its next table
    /// instead of holding the stop up.
    stopping: std::sync::atomic::AtomicBool,
    /// The access file as last read (at start, and on every reload).
    access: std::sync::RwLock<Arc<access::AccessPolicy>>,
    /// Where the access file is, to read it again.
    access_path: std::path::PathBuf,
    retention: RetentionConfig,
    audit: AuditLog,
    limiter: limits::Limiter,
    /// Refusals written once per window and kind, then summed up.
    refusals: refusals::Refusals,
    releases: tables::ReleaseCache,
    /// The detection's baselines shared by every gemeente.
    shared: alerts::SharedCache,
    /// The month's alerts answers per gemeente.
    alerts: alerts::AlertsCache,
    /// Days after its end a period is released (`release.materialise_after_days`).
    materialise_after_days: u32,
    metrics: metrics::Metrics,
    /// The audit log's file, for its size and for backups.
    audit_path: std::path::PathBuf,
    /// Where backups go.
    backup_dir: std::path::PathBuf,
    clock: wijkradar_domain::Clock,
}

impl State {
    /// The access file as last read.
    pub(crate) fn access(&self) -> Arc<access::AccessPolicy> {
        self.access.read().expect("not poisoned").clone()
    }

    /// Reads the access file again and uses it from the next call on. A
    /// file that does not load is refused, and the one in use stays. Both
    /// are audited, with the file's SHA-256.
    fn reload_access(&self) -> Result<usize, ServerError> {
        let text = read(&self.access_path)?;
        let digest = wijkradar_audit::sha256_hex(&text);
        match access::AccessPolicy::load(&self.access_path, &self.catalogue, &self.hierarchy) {
            Ok(policy) => {
                let n = policy.organisations().len();
                *self.access.write().expect("not poisoned") = Arc::new(policy);
                self.audit.append(
                    "aggregator",
                    call_event("ReloadAccess", "", &format!("access_sha256={digest}"), None),
                    true,
                )?;
                tracing::info!(organisations = n, "access configuration reloaded");
                Ok(n)
            }
            Err(e) => {
                self.audit.record(
                    "aggregator",
                    call_event(
                        "ReloadAccess",
                        "",
                        &format!("access_sha256={digest}"),
                        Some(e.to_string()),
                    ),
                    true,
                );
                Err(e.into())
            }
        }
    }

    /// The store's ids of the types each derived indicator joins, as the
    /// catalogue marks them (types never stored have no id yet).
    pub(crate) fn joins(&self) -> wijkradar_domain::derived::Joins {
        wijkradar_domain::derived::Joins {
            payment_arrears: self
                .catalogue
                .types()
                .iter()
                .filter(|t| t.payment_arrears)
                .filter_map(|t| self.store.type_id(&t.name))
                .collect(),
        }
    }

    /// Periods ending before this month are closed: released by the
    /// schedule or the first query. A month ended fewer than
    /// `materialise_after_days` ago is not, so that its exports are in.
    pub(crate) fn closed_before(&self) -> wijkradar_domain::Month {
        self.clock.closed_before(self.materialise_after_days)
    }

    /// Whether the server is stopping: long runs end early.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current month, by the server's clock.
    pub(crate) fn month(&self) -> wijkradar_domain::Month {
        self.clock.month()
    }
}

/// An audit entry for a call: what was asked (never a count) and, if it was
/// refused, why.
pub(crate) fn call_event(
    call: &str,
    gemeente: &str,
    request: &str,
    refused: Option<String>,
) -> Event {
    Event::Call {
        call: call.to_owned(),
        gemeente: gemeente.to_owned(),
        request: request.to_owned(),
        outcome: if refused.is_some() { "refused" } else { "ok" }.to_owned(),
        reason: refused,
    }
}

/// A server that is accepting connections.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    store: Store,
    state: Arc<State>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    writer: WriterThread,
    /// The scheduled materialisation of releases and retention purges.
    schedules: Vec<JoinHandle<()>>,
    /// The web dashboard, when configured.
    pub dashboard: Option<dashboard::DashboardHandle>,
    /// The metrics listener, when configured.
    pub metrics: Option<MetricsHandle>,
}

impl RunningServer {
    /// The open store, for in-process checks (tests, benchmarks).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads the access file again (what `serve` does on SIGHUP): the
    /// organisations and grants of the new file apply from the next call on.
    /// A file that does not load leaves the one in use; both are audited.
    /// Returns how many organisations the file names.
    pub fn reload_access(&self) -> Result<usize, ServerError> {
        self.state.reload_access()
    }

    /// Stops accepting, lets open calls finish, and closes the store.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let RunningServer {
            stop,
            task,
            writer,
            store,
            schedules,
            dashboard,
            metrics,
            state,
            ..
        } = self;
        if let Some(d) = dashboard {
            d.task.abort();
        }
        if let Some(m) = metrics {
            m.task.abort();
        }
        // A release run in progress ends at its next table.
        state
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // The state holds the ingest queue: the writer ends only once every
        // handle of it is gone.
        drop(state);
        drop(store);
        // The schedules hold the state (and with it the ingest queue): they
        // end before the writer is waited for.
        for s in schedules {
            s.abort();
            let _ = s.await;
        }
        let _ = stop.send(());
        finish(task, writer).await
    }
}

/// Materialises the releases of ended months at start and then every
/// `every`: a month is released `after_days` after it ends, not when first
/// asked for. Then prepares the detection's shared curves of the last
/// ended month (`Query::prepare_alerts`).
async fn materialise_on_schedule(query: query::Query, every: std::time::Duration, after_days: u32) {
    let query = Arc::new(query);
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let q = query.clone();
        let closed_before = query.state.clock.closed_before(after_days);
        let done =
            tokio::task::spawn_blocking(move || q.materialise_ended(closed_before, None)).await;
        match done {
            Ok(Ok(0)) => {}
            Ok(Ok(stored)) => tracing::info!(tables = stored, "scheduled materialisation"),
            Ok(Err(e)) => tracing::warn!(error = %e, "scheduled materialisation failed"),
            Err(_) => return,
        }
        // The detection's shared curves, so that the month's first alerts
        // query does not wait for them (kept until the store grows 1%).
        let q = query.clone();
        match tokio::task::spawn_blocking(move || q.prepare_alerts()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "preparing the detection failed"),
            Err(_) => return,
        }
        // Then the month's alerts of every gemeente, so that a query reads
        // the answer (only those whose data changed are run again).
        let q = query.clone();
        match tokio::task::spawn_blocking(move || q.prepare_alert_answers()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "preparing the month's alerts failed"),
            Err(_) => return,
        }
    }
}

/// Purges by retention at start and then every `every`.
async fn purge_on_schedule(state: Arc<State>, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        if let Err(e) = governance::purge(&state, "aggregator", true).await {
            tracing::warn!(error = %e, "scheduled retention purge failed");
        }
    }
}

/// How long calls still running at a stop may take to finish. A query
/// whose release is being audited can take minutes; it is cut off (nothing
/// of it is stored), and an ingest call cut off is resent by its agent and
/// answered "already stored" if its batch was stored.
const CALLS_FINISH_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

async fn finish(
    mut task: JoinHandle<Result<(), tonic::transport::Error>>,
    writer: WriterThread,
) -> Result<(), ServerError> {
    let served = match tokio::time::timeout(CALLS_FINISH_WITHIN, &mut task).await {
        Ok(done) => done.unwrap_or(Ok(())),
        Err(_) => {
            task.abort();
            tracing::warn!(
                within_seconds = CALLS_FINISH_WITHIN.as_secs(),
                "calls still running at the stop were cut off"
            );
            Ok(())
        }
    };
    // The writer takes what is queued, commits it, and ends, without
    // waiting for a query that still holds a queue handle.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    Ok(served?)
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Opens the store, binds the listener and starts serving.
pub async fn start(config: &ServerConfig) -> Result<RunningServer, ServerError> {
    let server_key = ServerKey::load(&config.keys.server_key)?;
    let store = Store::open(&config.data_dir, server_key.id().as_str())?;
    let (queue, writer) = IngestQueue::start(store.clone(), config.limits.ingest_queue_depth);
    let hierarchy = Hierarchy::netherlands_2023();
    let dwellings = match &config.release.household_base {
        Some(path) => {
            Dwellings::parse_kwb_csv(&read(path)?).map_err(|e| ServerError::HouseholdBase {
                path: path.clone(),
                source: e,
            })?
        }
        None => Dwellings::kwb_2024(),
    };
    let missing = hierarchy
        .all_of_country()
        .filter(|a| !dwellings.per_area.contains_key(a))
        .count();
    tracing::info!(measure = %dwellings.measure, areas = dwellings.per_area.len(), without_base = missing, "household bases loaded");
    if !dwellings.unusable.is_empty() {
        // Codes CBS published without a figure (`.`, null) or that are not
        // areas: reported, not silently dropped.
        let sample: Vec<&str> = dwellings
            .unusable
            .iter()
            .take(10)
            .map(String::as_str)
            .collect();
        tracing::info!(codes = dwellings.unusable.len(), first = ?sample, "household base figures without a usable value");
    }
    let base_measure = dwellings.measure.clone();
    let bases = Bases {
        per_area: dwellings.per_area,
        floor: config.release.rate_floor,
    };
    let catalogue = config.catalogue()?;
    let access = access::AccessPolicy::load(&config.access, &catalogue, &hierarchy)?;
    let audit = AuditLog::open(&config.data_dir.join(wijkradar_audit::FILE_NAME))?;
    audit.append(
        "aggregator",
        Event::Start {
            access_sha256: wijkradar_audit::sha256_hex(&read(&config.access)?),
        },
        true,
    )?;
    recover_audit(&store, &queue, &audit, u64::from(config.release.k.k())).await?;
    tracing::info!(
        organisations = access.organisations().len(),
        "access configuration loaded"
    );
    let state = Arc::new(State {
        hierarchy,
        catalogue,
        access: std::sync::RwLock::new(Arc::new(access)),
        access_path: config.access.clone(),
        retention: config.retention.clone(),
        audit,
        limiter: limits::Limiter::new(&config.limits),
        refusals: refusals::Refusals::new(std::time::Duration::from_secs(
            config.limits.refusal_log_window_seconds,
        )),
        store,
        queue,
        server_key,
        policy: config.release.policy()?,
        bases,
        base_measure,
        max_versions: config.release.max_versions,
        limits: config.limits.clone(),
        open_data: config.open_data.clone(),
        stopping: Default::default(),
        releases: tables::ReleaseCache::default(),
        shared: alerts::SharedCache::default(),
        alerts: alerts::AlertsCache::default(),
        materialise_after_days: config.release.materialise_after_days,
        metrics: metrics::Metrics::default(),
        audit_path: config.data_dir.join(wijkradar_audit::FILE_NAME),
        backup_dir: config.backup_dir(),
        clock: config.clock,
    });

    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(&config.tls.cert)?,
            read(&config.tls.key)?,
        ))
        .client_ca_root(Certificate::from_pem(read(&config.tls.client_ca)?))
        // A connection that sends nothing, or no TLS, is closed after this.
        .timeout(std::time::Duration::from_secs(
            config.limits.tls_handshake_seconds,
        ));

    let limit = config.limits.max_message_bytes;
    let ingest = IngestServiceServer::new(ingest::Ingest {
        state: state.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    // A whole-municipality table is large (Almere, all buurten × types × 24
    // months: about 3 MB); answers are made here, so their limit is higher.
    let query = QueryServiceServer::new(query::Query {
        state: state.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(MAX_ANSWER_BYTES);

    let audit_service = AuditServiceServer::new(governance::Audit {
        state: state.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit.max(2 << 20));
    let admin_service = AdminServiceServer::new(governance::Admin {
        state: state.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);

    let interventions = InterventionServiceServer::new(interventions::Interventions {
        query: query::Query {
            state: state.clone(),
        },
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit.max(2 << 20));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IngestServiceServer<ingest::Ingest>>()
        .await;
    health_reporter
        .set_serving::<QueryServiceServer<query::Query>>()
        .await;
    health_reporter
        .set_serving::<AuditServiceServer<governance::Audit>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<governance::Admin>>()
        .await;
    health_reporter
        .set_serving::<InterventionServiceServer<interventions::Interventions>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(wijkradar_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(wijkradar_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let seconds @ 1.. = config.limits.max_connection_age_seconds {
        // An idle connection that answers pings would stay open for ever.
        builder = builder
            .max_connection_age(std::time::Duration::from_secs(seconds))
            .max_connection_age_grace(std::time::Duration::from_secs(
                config.limits.request_timeout_seconds,
            ));
    }
    let router = builder
        .timeout(std::time::Duration::from_secs(
            config.limits.request_timeout_seconds,
        ))
        .concurrency_limit_per_connection(config.limits.max_streams_per_connection as usize)
        // A peer that no longer answers pings is dropped.
        .http2_keepalive_interval(
            (config.limits.keepalive_seconds > 0)
                .then(|| std::time::Duration::from_secs(config.limits.keepalive_seconds)),
        )
        .http2_keepalive_timeout(
            (config.limits.keepalive_seconds > 0)
                .then(|| std::time::Duration::from_secs(config.limits.keepalive_seconds)),
        )
        .max_concurrent_streams(config.limits.max_streams_per_connection)
        .tls_config(tls)?
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ingest)
        .add_service(query)
        .add_service(audit_service)
        .add_service(admin_service)
        .add_service(interventions);
    // Answers go out at once: without TCP_NODELAY, Nagle's algorithm and
    // delayed acknowledgements held some answers back by 40 ms (measured
    // with `wijkradar-bench query`). tonic sets it only on listeners it binds.
    let per_client = conns::PerClient::new(config.limits.max_connections_per_client);
    let incoming =
        tokio_stream::StreamExt::filter_map(TcpListenerStream::new(listener), move |conn| {
            let stream = match conn {
                Ok(stream) => stream,
                Err(e) => return Some(Err(e)),
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
            match per_client.admit(stream) {
                Some(counted) => Some(Ok(counted)),
                None => {
                    tracing::warn!("closed a connection over the per-client limit");
                    None
                }
            }
        });
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, k = config.release.k.k(), max_noise = config.release.max_noise, "aggregator listening (mutual TLS)");
    let mut schedules = Vec::new();
    if let seconds @ 1.. = config.release.materialise_every_seconds {
        schedules.push(tokio::spawn(materialise_on_schedule(
            query::Query {
                state: state.clone(),
            },
            std::time::Duration::from_secs(seconds),
            config.release.materialise_after_days,
        )));
    }
    // Summaries of refusals whose window passed without another refusal.
    schedules.push(tokio::spawn({
        let state = state.clone();
        let every = std::time::Duration::from_secs(config.limits.refusal_log_window_seconds.max(1));
        async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                state.refusals.write_due(&state.audit);
            }
        }
    }));
    if let seconds @ 1.. = config.retention.purge_every_seconds {
        schedules.push(tokio::spawn(purge_on_schedule(
            state.clone(),
            std::time::Duration::from_secs(seconds),
        )));
    }
    let dashboard = match &config.dashboard {
        Some(d) => Some(dashboard::start(state.clone(), d, &config.tls).await?),
        None => None,
    };
    let metrics = match &config.metrics {
        Some(m) => Some(metrics::start(state.clone(), m.listen).await?),
        None => None,
    };
    Ok(RunningServer {
        addr,
        store: state.store.clone(),
        state: state.clone(),
        stop,
        task,
        writer,
        schedules,
        dashboard,
        metrics,
    })
}
