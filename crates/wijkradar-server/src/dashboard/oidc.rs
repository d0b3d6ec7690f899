//! Login through the municipality's identity provider (OpenID Connect:
//! Entra ID, ADFS, Keycloak): the authorization code flow with PKCE, a
//! state and a nonce; the ID token's signature, issuer, audience, expiry
//! and nonce checked by the `openidconnect` crate. The provider's groups
//! (a claim of the ID token, `groups` unless configured otherwise) map to
//! organisations of the access file; the first group that maps, in the
//! order of the configuration, decides.
//!
//! The provider is found (discovery) at the first login, not at start, so
//! the aggregator starts while the provider is away. Its HTTPS is checked
//! against the public roots (webpki-roots) and, when given, the
//! municipality's own CA.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AsyncHttpClient, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    HttpRequest, HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    Scope,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::config::OidcConfig;

/// A client made from the provider's metadata: its authorization endpoint
/// set, its token and user-info endpoints as the metadata has them.
type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// How long a login may take at the provider.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// Logins under way at most (older ones are dropped first).
const MAX_PENDING: usize = 10_000;
/// How long a call to the provider may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read from the provider.
const MAX_ANSWER: usize = 1 << 20;

/// A login under way: what the callback must match.
struct Pending {
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    started: Instant,
}

pub(crate) struct Oidc {
    config: OidcConfig,
    secret: String,
    http: HttpClient,
    metadata: tokio::sync::Mutex<Option<CoreProviderMetadata>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// Why a login failed: said to the user in general terms, logged in full.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    #[error("the identity provider could not be reached or answered wrongly: {0}")]
    Provider(String),
    #[error("the login was not started here, or took too long")]
    UnknownState,
    #[error("the ID token was refused: {0}")]
    Token(String),
    #[error("no group of the account maps to an organisation")]
    NoGroup,
}

impl Oidc {
    pub(crate) fn new(config: &OidcConfig) -> Result<Oidc, String> {
        let secret = std::fs::read_to_string(&config.client_secret_file)
            .map_err(|e| format!("dashboard.oidc.client_secret_file: {e}"))?
            .trim()
            .to_owned();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&config.client_secret_file)
                .map_err(|e| format!("dashboard.oidc.client_secret_file: {e}"))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(
                    "dashboard.oidc.client_secret_file: others may read it (chmod 600)".into(),
                );
            }
        }
        IssuerUrl::new(config.issuer.clone()).map_err(|e| format!("dashboard.oidc.issuer: {e}"))?;
        RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| format!("dashboard.oidc.redirect_url: {e}"))?;
        Ok(Oidc {
            http: HttpClient::new(config.ca.as_deref())?,
            config: config.clone(),
            secret,
            metadata: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    async fn metadata(&self) -> Result<CoreProviderMetadata, LoginError> {
        let mut cached = self.metadata.lock().await;
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| LoginError::Provider(e.to_string()))?;
        let found = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| LoginError::Provider(chain(&e)))?;
        *cached = Some(found.clone());
        Ok(found)
    }

    /// This dashboard as a client of the provider.
    async fn client(&self) -> Result<Client, LoginError> {
        let metadata = self.metadata().await?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.secret.clone())),
        )
        .set_redirect_uri(
            RedirectUrl::new(self.config.redirect_url.clone())
                .map_err(|e| LoginError::Provider(e.to_string()))?,
        ))
    }

    /// Where to send the browser: the provider's authorization URL for a
    /// new login.
    pub(crate) async fn start(&self) -> Result<String, LoginError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let mut pending = self.pending.lock().expect("not poisoned");
        pending.retain(|_, p| p.started.elapsed() < PENDING_FOR);
        if pending.len() >= MAX_PENDING {
            // The oldest go first.
            let mut ages: Vec<(Instant, String)> = pending
                .iter()
                .map(|(k, p)| (p.started, k.clone()))
                .collect();
            ages.sort();
            for (_, k) in ages.into_iter().take(MAX_PENDING / 10) {
                pending.remove(&k);
            }
        }
        pending.insert(
            state.secret().clone(),
            Pending {
                nonce,
                verifier,
                started: Instant::now(),
            },
        );
        Ok(url.to_string())
    }

    /// The provider's answer: the organisation the account's groups map
    /// to, and the account's subject (for the audit log).
    pub(crate) async fn finish(
        &self,
        code: &str,
        state: &str,
    ) -> Result<(String, String), LoginError> {
        let pending = self
            .pending
            .lock()
            .expect("not poisoned")
            .remove(state)
            .filter(|p| p.started.elapsed() < PENDING_FOR)
            .ok_or(LoginError::UnknownState)?;
        let client = self.client().await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| LoginError::Provider(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::Provider(chain(&e)))?;
        let id_token = openidconnect::TokenResponse::id_token(&token)
            .ok_or_else(|| LoginError::Token("no ID token".into()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &pending.nonce)
            .map_err(|e| LoginError::Token(chain(&e)))?;
        let subject = claims.subject().as_str().to_owned();
        // The signature is checked: the payload's own claims can be read.
        let groups = self.groups_of(&id_token.to_string());
        let organisation = self
            .config
            .groups
            .iter()
            .find(|m| groups.contains(&m.group))
            .map(|m| m.organisation.clone())
            .ok_or(LoginError::NoGroup)?;
        Ok((organisation, subject))
    }

    /// The groups claim of a (verified) ID token.
    fn groups_of(&self, jwt: &str) -> Vec<String> {
        let Some(payload) = jwt.split('.').nth(1) else {
            return Vec::new();
        };
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
            return Vec::new();
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Vec::new();
        };
        match json.get(&self.config.groups_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        }
    }
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// HTTPS to the provider, one connection per call: hyper over rustls.
#[derive(Clone)]
pub(crate) struct HttpClient {
    tls: tokio_rustls::TlsConnector,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HttpError(String);

impl HttpClient {
    fn new(ca: Option<&std::path::Path>) -> Result<HttpClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("dashboard.oidc.ca: {e}"))?
            {
                let cert = cert.map_err(|e| format!("dashboard.oidc.ca: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("dashboard.oidc.ca: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let bad = |e: &dyn std::fmt::Display| HttpError(e.to_string());
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("https") {
            return Err(HttpError(format!("only HTTPS to the provider: {uri}")));
        }
        let host = uri
            .host()
            .ok_or_else(|| HttpError("no host".into()))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| bad(&e))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| bad(&e))?;
        let stream = self.tls.connect(name, tcp).await.map_err(|e| bad(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| bad(&e))?;
        tokio::spawn(conn);
        let (parts, body) = request.into_parts();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = hyper::Request::builder()
            .method(parts.method)
            .uri(path)
            .header(
                hyper::header::HOST,
                uri.authority().map_or(host.clone(), |a| a.to_string()),
            );
        for (k, v) in &parts.headers {
            out = out.header(k, v);
        }
        let answer = sender
            .send_request(
                out.body(Full::new(hyper::body::Bytes::from(body)))
                    .map_err(|e| bad(&e))?,
            )
            .await
            .map_err(|e| bad(&e))?;
        let (parts, body) = answer.into_parts();
        let bytes = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| HttpError(e.to_string()))?
            .to_bytes();
        let mut response = hyper::Response::builder().status(parts.status);
        for (k, v) in &parts.headers {
            response = response.header(k, v);
        }
        response.body(bytes.to_vec()).map_err(|e| bad(&e))
    }
}

impl<'c> AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            tokio::time::timeout(CALL_TIMEOUT, self.send(request))
                .await
                .map_err(|_| HttpError("the identity provider took too long".into()))?
        })
    }
}
