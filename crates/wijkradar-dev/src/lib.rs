//! A complete development setup in one directory: CA, server and client
//! certificates, the server key, a partner domain key and a server config
//! listening on `127.0.0.1:0`. Used by the demo, the benchmarks and the
//! tests, so all three run the same real parts. Not part of a production
//! install: the aggregator and the agent do not depend on it.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject as _;
use tonic::transport::Channel;
use wijkradar_agent::{ClientError, ClientTls};
use wijkradar_pki::{CertFiles, Oin, PkiError};
use wijkradar_proto::v1::query_service_client::QueryServiceClient;

use wijkradar_pseudonym::{KeyError, RootKey, ServerKey};
use wijkradar_server::access::Role;

use wijkradar_server::config::{
    DashboardConfig, KeysConfig, Limits, ReleaseConfig, RetentionConfig, ServerConfig, TlsConfig,
};

/// A client of a development setup's server, over mutual TLS.
#[derive(Debug, Clone)]
pub struct DevClient {
    pub server: String,
    pub tls: ClientTls,
}

impl DevClient {
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        wijkradar_agent::connect(&self.server, &self.tls).await
    }

    /// A query client that accepts whole-municipality answers.
    pub async fn query_client(&self) -> Result<QueryServiceClient<Channel>, ClientError> {
        let client = QueryServiceClient::new(self.connect().await?);
        Ok(client.max_decoding_message_size(wijkradar_server::MAX_ANSWER_BYTES))
    }
}

/// Months a development setup keeps signals: the demo simulates 36 months
/// of history for the early warning (the production default is 18).
pub const DEV_RETENTION_MONTHS: u32 = 48;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The pseudonymisation domain of a development setup: Almere, the demo's
/// municipality.
pub const DEV_DOMAIN: &str = "GM0034";

/// What [`DevSetup::create`] made.
#[derive(Debug, Clone)]
pub struct DevSetup {
    pub dir: PathBuf,
    pub pki_dir: PathBuf,
    pub config: ServerConfig,
    /// The partners' key holder's root key (never at the aggregator).
    pub root_key: PathBuf,
    /// The partner key of [`DEV_DOMAIN`] in the current year, derived from
    /// the root key (stays with the partners).
    pub partner_key: PathBuf,
}

impl DevSetup {
    /// Creates everything in `dir`; `clients` are (certificate name,
    /// organisation, role).
    pub fn create(dir: &Path, clients: &[(&str, &str, Role)]) -> Result<DevSetup, DevError> {
        let pki_dir = dir.join("pki");
        let keys = dir.join("keys");
        for d in [&pki_dir, &keys] {
            std::fs::create_dir_all(d).map_err(|source| DevError::Io {
                path: d.clone(),
                source,
            })?;
        }
        wijkradar_pki::init(&pki_dir, &[])?;
        let mut access = String::from(
            "# Development access: every client of the setup, granted for the dev domain.\n",
        );
        for (i, (name, organisation, role)) in clients.iter().enumerate() {
            let oin: Oin = dev_oin(i);
            wijkradar_pki::issue(&pki_dir, name, organisation, Some(&oin))?;
            access.push_str(&access_entry(name, &oin, &[*role], &[DEV_DOMAIN]));
        }
        let access_path = dir.join("access.toml");
        std::fs::write(&access_path, access).map_err(|source| DevError::Io {
            path: access_path.clone(),
            source,
        })?;
        let server_key = keys.join("server.key");
        ServerKey::generate(&server_key)?;
        let root_key = keys.join("root.key");
        let root = RootKey::generate(&root_key)?;
        let epoch = wijkradar_domain::Clock::System.month().year().to_string();
        let partner_key = keys.join(format!("{DEV_DOMAIN}.{epoch}.key"));
        root.export(DEV_DOMAIN, &epoch, &partner_key)?;
        let server = CertFiles::in_dir(&pki_dir, "server");
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            data_dir: dir.join("data"),
            tls: TlsConfig {
                client_ca: pki_dir.join("ca.pem"),
                cert: server.cert,
                key: server.key,
            },
            keys: KeysConfig { server_key },
            access: access_path,
            limits: Limits::default(),
            // A month is released as soon as it has ended: development and
            // the demo do not wait for late exports.
            release: ReleaseConfig {
                materialise_after_days: 0,
                ..ReleaseConfig::default()
            },
            retention: RetentionConfig {
                default_months: DEV_RETENTION_MONTHS,
                ..RetentionConfig::default()
            },
            signal_types: None,
            dashboard: None,
            metrics: None,
            backup: Default::default(),
            open_data: None,
            clock: Default::default(),
        };
        Ok(DevSetup {
            dir: dir.to_owned(),
            pki_dir,
            config,
            root_key,
            partner_key,
        })
    }

    /// Turns the dashboard on at `listen`, with a one-time login as the
    /// organisation `login`.
    pub fn with_dashboard(mut self, listen: &str, login: &str) -> DevSetup {
        self.config.dashboard = Some(DashboardConfig {
            listen: listen.parse().expect("a socket address"),
            local_login: Some(login.to_owned()),
            session_minutes: 30,
            oidc: None,
        });
        self
    }

    /// Lifts the per-partner rate limit: a benchmark measures how fast the
    /// aggregator can store, not the policy that protects it.
    pub fn without_rate_limits(mut self) -> DevSetup {
        self.config.limits.partner_signals_per_second = u32::MAX;
        self.config.limits.partner_burst_signals = u32::MAX;
        self
    }

    pub fn client(&self, name: &str) -> CertFiles {
        CertFiles::in_dir(&self.pki_dir, name)
    }

    /// Client `name` of this setup, for its server on `addr`.
    pub fn client_at(&self, addr: std::net::SocketAddr, name: &str) -> DevClient {
        let files = self.client(name);
        DevClient {
            server: format!("https://{addr}"),
            tls: ClientTls {
                ca: self.pki_dir.join("ca.pem"),
                cert: files.cert,
                key: files.key,
                domain: "localhost".into(),
            },
        }
    }

    /// Writes the config as TOML (absolute paths), for `wijkradar serve`.
    pub fn write_config(&self, listen: &str) -> Result<PathBuf, DevError> {
        let c = &self.config;
        // toml's own string rendering quotes and escapes any path.
        let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        let text = format!(
            "listen = {}\ndata_dir = {}\naccess = {}\n\n[tls]\nclient_ca = {}\ncert = {}\nkey = {}\n\n[keys]\nserver_key = {}\n\n[release]\nk = {}\nmax_noise = {}\nvariance = {:?}\nrate_floor = {}\nmaterialise_after_days = {}\n\n[retention]\ndefault_months = {}\npurge_every_seconds = {}\n",
            toml::Value::String(listen.to_owned()),
            q(&c.data_dir),
            q(&c.access),
            q(&c.tls.client_ca),
            q(&c.tls.cert),
            q(&c.tls.key),
            q(&c.keys.server_key),
            c.release.k.k(),
            c.release.max_noise,
            c.release.variance,
            c.release.rate_floor,
            c.release.materialise_after_days,
            c.retention.default_months,
            c.retention.purge_every_seconds,
        );
        let mut text = text;
        if let Some(d) = &c.dashboard {
            text.push_str(&format!(
                "\n[dashboard]\nlisten = {}\nsession_minutes = {}\n",
                toml::Value::String(d.listen.to_string()),
                d.session_minutes
            ));
            if let Some(org) = &d.local_login {
                text.push_str(&format!(
                    "local_login = {}\n",
                    toml::Value::String(org.clone())
                ));
            }
        }
        let path = self.dir.join("server.toml");
        std::fs::write(&path, text).map_err(|source| DevError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// The fictitious OIN of a development setup's `i`-th client.
pub fn dev_oin(i: usize) -> Oin {
    format!("9999{:016}", i + 1).parse().expect("20 digits")
}

/// One `[[organisation]]` entry of an access file: the certificate `name`
/// under `oin`, with `roles` for `municipalities` (a partner may submit
/// every catalogue type).
pub fn access_entry(name: &str, oin: &Oin, roles: &[Role], municipalities: &[&str]) -> String {
    // toml's own string rendering quotes and escapes.
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let list = |items: Vec<&str>| items.into_iter().map(quoted).collect::<Vec<_>>().join(", ");
    let gemeenten = list(municipalities.to_vec());
    let name = quoted(name);
    let mut s = format!(
        "\n[[organisation]]\nname = {name}\noin = \"{oin}\"\nsubject_common_name = {name}\n"
    );
    for role in roles {
        match role {
            Role::Partner => {
                let catalogue = wijkradar_domain::Catalogue::dutch_defaults();
                let types = list(catalogue.types().iter().map(|t| t.name.as_str()).collect());
                s.push_str(&format!(
                    "partner = {{ signal_types = [{types}], municipalities = [{gemeenten}] }}\n"
                ));
            }
            Role::Analyst => {
                s.push_str(&format!("analyst = {{ municipalities = [{gemeenten}] }}\n"))
            }
            Role::PrivacyOfficer => s.push_str("privacy_officer = true\n"),
            Role::Operator => s.push_str("operator = true\n"),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_config_loads_back_even_with_awkward_paths() {
        let dir = tempfile::tempdir().unwrap();
        let awkward = dir.path().join("map met \"aanhalingstekens\" en \\");
        std::fs::create_dir(&awkward).unwrap();
        let setup = DevSetup::create(&awkward, &[("p", "P", Role::Partner)]).unwrap();
        let loaded = ServerConfig::load(&setup.write_config("127.0.0.1:0").unwrap()).unwrap();
        assert_eq!(loaded.data_dir, setup.config.data_dir);
        assert_eq!(loaded.keys.server_key, setup.config.keys.server_key);
    }
}

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Page {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().expect("ASCII header"))
    }
}

/// A browser's part, for tests and benchmarks: HTTPS/1.1 to one server,
/// trusting one CA, with a session cookie once logged in. Panics on
/// transport errors (it is test support).
pub struct HttpsClient {
    pub addr: std::net::SocketAddr,
    tls: tokio_rustls::TlsConnector,
    pub cookie: Option<String>,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client of the HTTPS server at `addr`, trusting the CA in `ca`.
    pub fn to(addr: std::net::SocketAddr, ca: &std::path::Path) -> HttpsClient {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        HttpsClient {
            addr,
            tls: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            cookie: None,
        }
    }

    pub async fn request(&self, method: &str, path: &str, form: Option<&str>) -> Page {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let stream = self
            .tls
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .expect("TLS with the server's certificate");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let body = match form {
            Some(f) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                http_body_util::Full::new(hyper::body::Bytes::from(f.to_owned()))
            }
            None => http_body_util::Full::new(hyper::body::Bytes::new()),
        };
        let answer = sender.send_request(req.body(body).unwrap()).await.unwrap();
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let body = http_body_util::BodyExt::collect(answer.into_body())
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.request("GET", path, None).await
    }

    /// Follows a one-time login link; keeps the session cookie.
    pub async fn log_in(&mut self, url: &str) -> Page {
        let path = &url[url.find("/inloggen").expect("a login link")..];
        let page = self.get(path).await;
        if let Some(set) = page.headers.get("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair);
        }
        page
    }
}
