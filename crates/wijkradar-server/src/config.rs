//! The aggregator's configuration: typed TOML with `deny_unknown_fields`,
//! documented by `deploy/server.example.toml`, checked before anything starts
//! with errors that name the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wijkradar_domain::{Catalogue, CatalogueError, Month, SignalTypeDef, SignalTypeName};
use wijkradar_release::{ReleasePolicy, Threshold};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The data directory: the store (`store.redb`) and the period secrets.
    pub data_dir: PathBuf,
    pub tls: TlsConfig,
    pub keys: KeysConfig,
    /// Who may do what: the access configuration (see
    /// `deploy/access.example.toml`).
    pub access: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub release: ReleaseConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The signal-type catalogue; the Dutch defaults when absent.
    #[serde(default)]
    pub signal_types: Option<Vec<SignalTypeDef>>,
    /// The web dashboard; off when absent.
    #[serde(default)]
    pub dashboard: Option<DashboardConfig>,
    /// Metrics in the Prometheus format; off when absent.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub backup: BackupConfig,
    /// Open data with differential privacy; off when absent.
    #[serde(default)]
    pub open_data: Option<OpenDataConfig>,
    /// The clock the server reads the date from: the system's, or for tests
    /// a fixed moment. Not in the configuration file.
    #[serde(skip)]
    pub clock: wijkradar_domain::Clock,
}

/// Open data: quarterly and yearly tables at wijk and gemeente level with
/// differential privacy, for figures a municipality publishes openly
/// (`GetTableRequest.open_data`; docs/privacy.md "Open data").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenDataConfig {
    /// The ε of one release (one measure over one quarter or year). The
    /// noise's scale is 2/ε, a whole number: ε = 2, 1, 0.5, 0.4, 0.25 …
    pub epsilon_per_release: f64,
    /// The ε a gemeente may spend per measure and calendar year, over its
    /// quarters and the year. A release that would spend more is refused.
    pub budget_per_year: f64,
}

impl OpenDataConfig {
    /// The scale of the discrete Laplace noise on each cell.
    pub fn scale(&self) -> u64 {
        (wijkradar_release::open::SENSITIVITY as f64 / self.epsilon_per_release).round() as u64
    }

    /// ε of one release, in millionths.
    pub fn epsilon_micro(&self) -> u64 {
        (self.epsilon_per_release * 1e6).round() as u64
    }

    /// The yearly budget, in millionths.
    pub fn budget_micro(&self) -> u64 {
        (self.budget_per_year * 1e6).round() as u64
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let e = self.epsilon_per_release;
        let scale = wijkradar_release::open::SENSITIVITY as f64 / e;
        if !(e > 0.0 && e.is_finite()) || (scale - scale.round()).abs() > 1e-9 || scale > 1000.0 {
            return Err((
                "open_data.epsilon_per_release",
                "must be 2 divided by a whole number from 1 to 1000 (2, 1, 0.5, 0.25 …)".into(),
            ));
        }
        if !self.budget_per_year.is_finite() || self.budget_per_year < e {
            return Err((
                "open_data.budget_per_year",
                "must be at least open_data.epsilon_per_release".into(),
            ));
        }
        Ok(())
    }
}

/// Where `wijkradar admin backup` writes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Each backup is a new directory in here; default `data_dir/backups`.
    /// Copy backups off the machine: a disk that fails takes both along.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

impl ServerConfig {
    /// The directory backups go into.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }
}

/// The metrics listener: plain HTTP, `GET /metrics`. Bind it to an address
/// only the scraper reaches (localhost, or the cluster network behind a
/// NetworkPolicy): the figures are aggregator-wide, but not for everyone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
}

/// The web dashboard: its own HTTPS listener, with the server's
/// certificate and key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Address to listen on (HTTPS); port 0 picks a free port.
    pub listen: SocketAddr,
    /// For development and the demo: the organisation of the access file
    /// (an analyst) that a one-time login link signs in as. The link is
    /// printed at start and works once. Leave out in production.
    #[serde(default)]
    pub local_login: Option<String>,
    /// Minutes a session lasts after its last page view.
    #[serde(default = "DashboardConfig::default_session_minutes")]
    pub session_minutes: u64,
    /// Login through the municipality's identity provider.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

/// OpenID Connect: the provider, this client, and which of the provider's
/// groups are which organisation of the access file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its `/.well-known/openid-configuration` is read.
    pub issuer: String,
    pub client_id: String,
    /// A file holding the client secret (owner-only).
    pub client_secret_file: PathBuf,
    /// This dashboard's callback, `https://…/oidc/terug`, as registered at
    /// the provider.
    pub redirect_url: String,
    /// Scopes asked for besides `openid`.
    #[serde(default = "OidcConfig::default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token's claim that lists the account's groups.
    #[serde(default = "OidcConfig::default_groups_claim")]
    pub groups_claim: String,
    /// The municipality's own CA for the provider's HTTPS, besides the
    /// public roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Group → organisation, in order: the first group of the account that
    /// is listed decides.
    pub groups: Vec<GroupMapping>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    pub group: String,
    pub organisation: String,
}

impl OidcConfig {
    fn default_scopes() -> Vec<String> {
        vec!["profile".into()]
    }

    fn default_groups_claim() -> String {
        "groups".into()
    }
}

impl DashboardConfig {
    fn default_session_minutes() -> u64 {
        30
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA whose client certificates are accepted (PEM).
    pub client_ca: PathBuf,
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The aggregator's re-keying key, kept apart from `data_dir`.
    pub server_key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most signals one batch may hold.
    pub max_batch_signals: usize,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Batches waiting for the writer before senders wait.
    pub ingest_queue_depth: usize,
    /// Signals per second one partner organisation may send, on average.
    pub partner_signals_per_second: u32,
    /// Signals one partner may send at once above that rate (at least
    /// `max_batch_signals`).
    pub partner_burst_signals: u32,
    /// Seconds a call may take before it is ended with DEADLINE_EXCEEDED (a
    /// client's own shorter deadline wins).
    pub request_timeout_seconds: u64,
    /// Calls (HTTP/2 streams) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Seconds in which refusals of one kind by one organisation are
    /// logged once, and then as one summary.
    pub refusal_log_window_seconds: u64,
    /// Seconds a client may take for the TLS handshake; a connection that
    /// sends nothing, or no TLS, is closed after it.
    pub tls_handshake_seconds: u64,
    /// Seconds between HTTP/2 pings on a quiet connection; one not answered
    /// within as many seconds again closes it (0: no pings).
    pub keepalive_seconds: u64,
    /// Connections one client address may hold open at once; one more is
    /// closed before TLS.
    pub max_connections_per_client: usize,
    /// Seconds a connection may live, busy or idle (answering pings keeps
    /// an idle one alive otherwise); then it is asked to close, and its
    /// open calls get `request_timeout_seconds` to finish, after which it
    /// is cut (0: no limit). Clients reconnect on their next call.
    pub max_connection_age_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_signals: 10_000,
            max_message_bytes: 4 * 1024 * 1024,
            ingest_queue_depth: 256,
            partner_signals_per_second: 50_000,
            partner_burst_signals: 200_000,
            request_timeout_seconds: 300,
            max_streams_per_connection: 16,
            refusal_log_window_seconds: 60,
            tls_handshake_seconds: 10,
            keepalive_seconds: 60,
            max_connections_per_client: 64,
            max_connection_age_seconds: 1800,
        }
    }
}

/// How long signals are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Months a signal is kept after its month, for types not named in
    /// `months`: a signal of month m is purged once m is more than this many
    /// months before the current month.
    pub default_months: u32,
    /// Per signal type, months kept.
    pub months: BTreeMap<String, u32>,
    /// How often, in seconds, the server purges (also at start); 0: only on
    /// demand (`wijkradar admin purge`).
    pub purge_every_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default_months: 18,
            months: BTreeMap::new(),
            purge_every_seconds: 3600,
        }
    }
}

impl RetentionConfig {
    pub fn months_for(&self, t: &SignalTypeName) -> u32 {
        self.months
            .get(t.as_str())
            .copied()
            .unwrap_or(self.default_months)
    }

    /// The first month of type `t` that is kept when the current month is `now`.
    pub fn first_kept(&self, t: &SignalTypeName, now: Month) -> Month {
        now.plus(-(self.months_for(t).min(i32::MAX as u32) as i32))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReleaseConfig {
    /// Cells whose released value is below k are suppressed; at least 5.
    pub k: Threshold,
    /// D: the largest noise the cell key method adds or takes away.
    pub max_noise: u32,
    /// V: the variance of that noise; above 0 and below D.
    pub variance: f64,
    /// Rates per 1,000 households only for areas with at least this base.
    pub rate_floor: u64,
    /// How many versions a month's release may have: late signals for a
    /// released month make a new version until this many exist.
    pub max_versions: u32,
    /// How often, in seconds, the server materialises the releases of ended
    /// months that changed (a month that has just ended, or late signals),
    /// so that they exist before anyone asks; 0: only at the first query.
    pub materialise_every_seconds: u64,
    /// Days after a month's end before the schedule releases it: partners
    /// send a month's export in the first days of the next one, and a
    /// release made before then would spend its versions on them.
    pub materialise_after_days: u32,
    /// A Kerncijfers wijken en buurten CSV from CBS with household bases
    /// (for example with buurt figures); the shipped 2024 dwellings of
    /// gemeenten and wijken when absent.
    pub household_base: Option<PathBuf>,
}

impl Default for ReleaseConfig {
    fn default() -> Self {
        ReleaseConfig {
            k: Threshold::default(),
            max_noise: 4,
            variance: 2.0,
            rate_floor: wijkradar_release::rates::DEFAULT_FLOOR,
            max_versions: 3,
            materialise_every_seconds: 600,
            materialise_after_days: 7,
            household_base: None,
        }
    }
}

impl ReleaseConfig {
    /// The release policy, with its perturbation table built and checked.
    pub fn policy(&self) -> Result<ReleasePolicy, wijkradar_release::PtableError> {
        ReleasePolicy::new(self.k, self.max_noise, self.variance)
    }
}

impl ServerConfig {
    /// Reads a config file; relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let oidc = config.dashboard.as_mut().and_then(|d| d.oidc.as_mut());
        let oidc_files: Vec<&mut PathBuf> = match oidc {
            Some(o) => std::iter::once(&mut o.client_secret_file)
                .chain(o.ca.as_mut())
                .collect(),
            None => Vec::new(),
        };
        let base_file = config.release.household_base.as_mut();
        let backup_dir = config.backup.dir.as_mut();
        for p in [
            &mut config.data_dir,
            &mut config.tls.client_ca,
            &mut config.tls.cert,
            &mut config.tls.key,
            &mut config.keys.server_key,
            &mut config.access,
        ]
        .into_iter()
        .chain(base_file)
        .chain(backup_dir)
        .chain(oidc_files)
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config
            .check()
            .map_err(|(field, message)| ConfigError::Invalid {
                path: path.to_owned(),
                field,
                message,
            })?;
        Ok(config)
    }

    /// Parses TOML text; the message names the field at fault.
    pub fn parse(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks what the types alone cannot.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(d) = &self.dashboard
            && !(1..=480).contains(&d.session_minutes)
        {
            return Err((
                "dashboard.session_minutes",
                "must be between 1 and 480".into(),
            ));
        }
        if self.limits.max_batch_signals == 0 {
            return Err(("limits.max_batch_signals", "must be at least 1".into()));
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(("limits.max_message_bytes", "must be at least 1024".into()));
        }
        if self.limits.partner_signals_per_second == 0 {
            return Err((
                "limits.partner_signals_per_second",
                "must be at least 1".into(),
            ));
        }
        if (self.limits.partner_burst_signals as usize) < self.limits.max_batch_signals {
            return Err((
                "limits.partner_burst_signals",
                "must be at least limits.max_batch_signals, or no batch could pass".into(),
            ));
        }
        if self.limits.max_connections_per_client == 0 {
            return Err((
                "limits.max_connections_per_client",
                "must be at least 1".into(),
            ));
        }
        if self.limits.tls_handshake_seconds == 0 {
            return Err(("limits.tls_handshake_seconds", "must be at least 1".into()));
        }
        if self.limits.request_timeout_seconds == 0 || self.limits.max_streams_per_connection == 0 {
            return Err((
                "limits",
                "request_timeout_seconds and max_streams_per_connection must be at least 1".into(),
            ));
        }
        if let Some(open) = &self.open_data {
            open.check()?;
        }
        let catalogue = self
            .catalogue()
            .map_err(|e| ("signal_types", e.to_string()))?;
        self.release
            .policy()
            .map_err(|e| ("release", e.to_string()))?;
        if self.release.max_versions == 0 {
            return Err(("release.max_versions", "must be at least 1".into()));
        }
        if self.retention.default_months == 0 {
            return Err(("retention.default_months", "must be at least 1".into()));
        }
        for (name, &months) in &self.retention.months {
            if catalogue.get(name).is_none() {
                return Err((
                    "retention.months",
                    format!("`{name}` is not in the signal catalogue"),
                ));
            }
            if months == 0 {
                return Err(("retention.months", format!("{name}: must be at least 1")));
            }
        }
        Ok(())
    }

    pub fn catalogue(&self) -> Result<Catalogue, CatalogueError> {
        match &self.signal_types {
            Some(types) => Catalogue::new(types.clone()),
            None => Ok(Catalogue::dutch_defaults()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/server.example.toml");
        let config = ServerConfig::load(&path).unwrap();
        assert_eq!(config.release.k.k(), 10);
        // The example spells out the defaults, payment-arrears marks included.
        assert_eq!(
            config.catalogue().unwrap(),
            wijkradar_domain::Catalogue::dutch_defaults()
        );
        assert!(
            config.tls.cert.is_absolute() || config.tls.cert.starts_with(path.parent().unwrap())
        );
    }

    #[test]
    fn errors_name_the_field() {
        let base = r#"
            listen = "127.0.0.1:0"
            data_dir = "d"
            access = "access.toml"
            [tls]
            client_ca = "a"
            cert = "b"
            key = "c"
            [keys]
            server_key = "s"
        "#;
        assert!(ServerConfig::parse(base).is_ok());
        let err = ServerConfig::parse(&format!("{base}\n[release]\nk = 4\n")).unwrap_err();
        assert!(
            err.contains("k") && err.contains("below the minimum of 5"),
            "{err}"
        );
        let err = ServerConfig::parse(&format!("{base}\n[limits]\nmax_batch = 5\n")).unwrap_err();
        assert!(err.contains("unknown field `max_batch`"), "{err}");
        let err =
            ServerConfig::parse(&base.replace("listen = \"127.0.0.1:0\"", "listen = \"nowhere\""))
                .unwrap_err();
        assert!(err.contains("listen"), "{err}");
        let mut c = ServerConfig::parse(base).unwrap();
        c.limits.max_batch_signals = 0;
        assert_eq!(c.check().unwrap_err().0, "limits.max_batch_signals");
        // Open data: 2/ε a whole number, a budget of one release at least.
        let open = |e: f64, b: f64| {
            let text = format!(
                "{base}\n[open_data]\nepsilon_per_release = {e:?}\nbudget_per_year = {b:?}\n"
            );
            ServerConfig::parse(&text)
                .unwrap()
                .check()
                .err()
                .map(|e| e.0)
        };
        assert_eq!(open(0.5, 2.5), None);
        assert_eq!(open(0.3, 2.5), Some("open_data.epsilon_per_release"));
        assert_eq!(open(0.0, 2.5), Some("open_data.epsilon_per_release"));
        assert_eq!(open(0.5, 0.25), Some("open_data.budget_per_year"));
        let c = ServerConfig::parse(&format!(
            "{base}\n[release]\nmax_noise = 2\nvariance = 3.0\n"
        ))
        .unwrap();
        let (field, message) = c.check().unwrap_err();
        assert_eq!(field, "release");
        assert!(
            message.contains("variance (V) must be above 0 and below max_noise"),
            "{message}"
        );
    }
}
