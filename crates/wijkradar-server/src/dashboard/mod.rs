//! The web dashboard: the municipality's analysts see their wijken on a
//! map, trends per wijk and the figures as tables and CSV, in Dutch.
//!
//! It runs on its own HTTPS listener (`[dashboard]` in the server config)
//! and reads figures only through [`Query`]'s own calls, with the same
//! grant check and the same audit entry as gRPC: it never sees a true
//! count. Pages are rendered on the server (askama templates); every asset
//! is in the binary, and the Content-Security-Policy allows nothing from
//! elsewhere.
//!
//! Login: a one-time link printed at start signs in as the organisation
//! `local_login` names (development and the demo). A session lasts
//! `session_minutes` after its last page view; its cookie is `Secure`,
//! `HttpOnly` and `SameSite=Strict`, and a form that changes anything
//! carries the session's CSRF token.

mod alerts;
mod chart;
pub(crate) mod format;
mod interventions;
mod oidc;
mod pages;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

use crate::config::{DashboardConfig, TlsConfig};
use crate::query::Query;
use crate::{ServerError, State};

pub(crate) use session::Sessions;

/// What the pages share.
#[derive(Debug)]
pub(crate) struct Dashboard {
    query: Query,
    sessions: Sessions,
    oidc: Option<oidc::Oidc>,
}

/// A running dashboard: where it listens and, for development, the
/// one-time login link.
#[derive(Debug)]
pub struct DashboardHandle {
    pub addr: SocketAddr,
    /// `https://…/inloggen?code=…`, once, when `local_login` is set.
    pub login_url: Option<String>,
    pub(crate) task: JoinHandle<()>,
}

/// How long a client may take to send a request's head (a connection that
/// sends nothing is closed after it).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Content-Security-Policy of every answer: nothing from elsewhere,
/// no inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Binds the listener and serves the dashboard until the task is aborted.
pub(crate) async fn start(
    state: Arc<State>,
    config: &DashboardConfig,
    tls: &TlsConfig,
) -> Result<DashboardHandle, ServerError> {
    let tls_config = tls_config(tls)?;
    let sessions = Sessions::new(Duration::from_secs(config.session_minutes * 60));
    if let Some(org) = &config.local_login {
        let known = state
            .access()
            .organisations()
            .iter()
            .any(|o| &o.name == org && o.analyst.is_some());
        if !known {
            return Err(ServerError::Dashboard(format!(
                "dashboard.local_login: `{org}` is no analyst organisation of the access file"
            )));
        }
    }
    let oidc = match &config.oidc {
        Some(o) => {
            for m in &o.groups {
                let known = state
                    .access()
                    .organisations()
                    .iter()
                    .any(|org| org.name == m.organisation && org.analyst.is_some());
                if !known {
                    return Err(ServerError::Dashboard(format!(
                        "dashboard.oidc.groups: `{}` is no analyst organisation of the access file",
                        m.organisation
                    )));
                }
            }
            Some(oidc::Oidc::new(o).map_err(ServerError::Dashboard)?)
        }
        None => None,
    };
    let dashboard = Arc::new(Dashboard {
        query: Query {
            state: state.clone(),
        },
        sessions,
        oidc,
    });
    let app = router(dashboard.clone());
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
    let login_url = config.local_login.as_ref().map(|org| {
        let code = dashboard.sessions.one_time_login(org);
        format!("https://{}/inloggen?code={code}", display_addr(addr))
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(Ok(stream)) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let service = TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    tracing::info!(%addr, "dashboard listening (HTTPS)");
    Ok(DashboardHandle {
        addr,
        login_url,
        task,
    })
}

/// `127.0.0.1:8443`, or `localhost:…` where the server listens on every
/// address (the certificate names localhost).
fn display_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn tls_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, ServerError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        ServerError::Dashboard(format!("dashboard TLS: {what}: {e}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| bad("tls.cert", &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("tls.cert", &e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| bad("tls.key", &e))?;
    // ring, as everywhere in Wijkradar (not whichever provider another
    // crate of the build enables).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate and key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/inloggen", get(pages::login))
        .route("/uitloggen", post(pages::logout))
        .route("/oidc/inloggen", get(pages::oidc_start))
        .route("/oidc/terug", get(pages::oidc_back))
        .route("/uitleg", get(pages::explanation))
        .route("/gemeente/{code}", get(pages::gemeente))
        .route("/wijk/{code}", get(pages::wijk))
        .route("/meldingen/{code}", get(alerts::page))
        .route("/meldingen/{code}/status", post(alerts::set_status))
        .route(
            "/interventies/{code}",
            get(interventions::list).post(interventions::register),
        )
        .route("/interventie/{code}/{id}", get(interventions::report))
        .route("/export/{file}", get(pages::export))
        .route("/static/{file}", get(pages::asset))
        .fallback(pages::not_found)
        .layer(middleware::from_fn(headers))
        .with_state(dashboard)
}

/// Headers on every answer: the CSP and friends, and no caching of
/// anything but the fixed assets.
async fn headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if is_asset {
            "public, max-age=3600"
        } else {
            "no-store"
        }),
    );
    response
}
