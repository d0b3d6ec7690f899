//! The `wijkradar` binary: one entry point for the aggregator, the partner
//! agent, the analyst's queries, the development PKI and keys, the demo and
//! the evaluation harness (the benchmarks are `wijkradar-bench`).
//! User-facing text is Dutch; logs and errors are English.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod agent;
mod connection;
mod demo;
mod eval;
mod eval_alerts;
mod eval_interventions;
mod governance;
mod interventions;
mod query;
mod render;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wijkradar_pseudonym::{PartnerKey, RootKey, ServerKey};
use wijkradar_server::ServerConfig;

// Ingest allocates and frees many small buffers per signal; glibc's
// allocator showed as a fifth of the ingest profile (on sled), mimalloc as
// much less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "wijkradar",
    version,
    about = "Privacy-preserving early warning for Dutch neighbourhoods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the aggregator.
    Serve {
        /// Configuration file (see deploy/server.example.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ask a running aggregator whether it serves (gRPC health, over mutual
    /// TLS): exit 0 when it does, 1 otherwise. For container and systemd
    /// health checks (the image has no curl).
    Healthcheck {
        /// A service name (for example wijkradar.v1.IngestService); empty
        /// for the server as a whole.
        #[arg(long, default_value = "")]
        service: String,
        #[command(flatten)]
        connection: connection::Connection,
    },
    /// Partner agent: pseudonymise an export and submit it.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Query released figures as an analyst.
    #[command(subcommand)]
    Query(query::QueryCommand),
    /// Interventions: register one, and see whether it works.
    #[command(subcommand)]
    Intervention(interventions::InterventionCommand),
    /// Run the whole chain on a real municipality (Almere) with simulated partners.
    Demo(demo::DemoArgs),
    /// The audit log: fetch (privacy officer), verify, export.
    #[command(subcommand)]
    Audit(governance::AuditCommand),
    /// Retention and releases (operator).
    #[command(subcommand)]
    Admin(governance::AdminCommand),
    /// Development certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Pseudonymisation keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Measure the detection methods on simulated outbreaks over the real
    /// wijken of the Netherlands, against a near-oracle; `eval
    /// interventions` measures the intervention report.
    Eval(eval::EvalArgs),
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a development CA, a server certificate and a client
    /// certificate for every organisation of deploy/access.example.toml
    /// (partners, analysts, privacy officer, operator), each with a
    /// fictitious OIN in its subject serial number.
    Init {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Extra DNS names or IP addresses for the server certificate.
        #[arg(long = "server-name")]
        server_names: Vec<String>,
    },
    /// Print a certificate's SHA-256 fingerprint, for `revoked_certificates`
    /// in the access file.
    Fingerprint {
        #[arg(long)]
        cert: PathBuf,
    },
    /// Issue a client certificate signed by the CA in DIR.
    Issue {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Certificate name, also its file name: a-z, 0-9 and -.
        #[arg(long)]
        name: String,
        /// The organisation (subject O).
        #[arg(long)]
        organisation: String,
        /// The OIN (20 digits) for the subject serial number, as
        /// PKIoverheid certificates carry it.
        #[arg(long)]
        oin: Option<wijkradar_pki::Oin>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create the aggregator's own re-keying key (owner-only file). It never
    /// leaves the aggregator.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_parser = ["server"], default_value = "server")]
        kind: String,
    },
    /// Create a pseudonymisation root key for the partners' key holder
    /// (owner-only file). Partner keys are derived from it; it never goes to
    /// the aggregator.
    Root {
        #[arg(long)]
        out: PathBuf,
    },
    /// Derive the partner key of a domain (municipality or region) and an
    /// epoch (for example the year) with HKDF-SHA256, into a key file for
    /// that domain's partners.
    Export {
        #[arg(long)]
        root: PathBuf,
        /// For example GM0034 (a municipality) or a region's name.
        #[arg(long)]
        domain: String,
        /// For example 2026.
        #[arg(long)]
        epoch: String,
        /// Default: DOMAIN.EPOCH.key in the current directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rotate a domain to its next epoch: derive the key after CURRENT's
    /// epoch (or --epoch) from the same root. Pseudonyms do not link across
    /// epochs.
    Rotate {
        #[arg(long)]
        root: PathBuf,
        /// The domain's current partner key file.
        #[arg(long)]
        current: PathBuf,
        /// The new epoch; default: the current epoch plus one (a year).
        #[arg(long)]
        epoch: Option<String>,
        /// Default: DOMAIN.EPOCH.key next to CURRENT.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a key file's id (never the key).
    Show {
        #[arg(long)]
        key: PathBuf,
    },
}

fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    let written = |id: &dyn std::fmt::Display, path: &std::path::Path| {
        println!(
            "Sleutel {id} aangemaakt in {} (alleen leesbaar voor de eigenaar)",
            path.display()
        )
    };
    match cmd {
        KeysCommand::Generate { out, kind: _ } => {
            written(ServerKey::generate(&out)?.id(), &out);
        }
        KeysCommand::Root { out } => {
            written(RootKey::generate(&out)?.id(), &out);
            println!(
                "Bewaar deze sleutel bij de sleutelbeheerder van de partners, nooit bij de aggregator."
            );
        }
        KeysCommand::Export {
            root,
            domain,
            epoch,
            out,
        } => {
            let root = RootKey::load(&root)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{domain}.{epoch}.key")));
            written(root.export(&domain, &epoch, &out)?.id(), &out);
        }
        KeysCommand::Rotate {
            root,
            current,
            epoch,
            out,
        } => {
            let root = RootKey::load(&root)?;
            let key = PartnerKey::load(&current)?;
            let (domain, old_epoch) = key.domain_and_epoch().with_context(|| {
                format!(
                    "{} is not a derived partner key (it names no domain and epoch)",
                    current.display()
                )
            })?;
            anyhow::ensure!(
                root.derive(domain, old_epoch)?.id() == key.id(),
                "{} was not derived from this root key",
                current.display()
            );
            let epoch = match epoch {
                Some(e) => e,
                None => RootKey::next_epoch(old_epoch).with_context(|| {
                    format!("epoch `{old_epoch}` is not a year: name the new one with --epoch")
                })?,
            };
            anyhow::ensure!(epoch != old_epoch, "the new epoch is the current one");
            let out =
                out.unwrap_or_else(|| current.with_file_name(format!("{domain}.{epoch}.key")));
            let new = root.export(domain, &epoch, &out)?;
            written(new.id(), &out);
            println!(
                "Epoch {old_epoch} → {epoch}: geef de partners van {domain} het nieuwe sleutelbestand. Signalen van de twee epochs worden niet aan elkaar gekoppeld."
            );
        }
        KeysCommand::Show { key } => {
            let key = PartnerKey::load(&key)?;
            match key.domain_and_epoch() {
                Some((domain, epoch)) => {
                    println!("{} (domein {domain}, epoch {epoch})", key.id())
                }
                None => println!("{}", key.id()),
            }
        }
    }
    Ok(())
}

/// Logs to standard error: readable text on a terminal; JSON lines, one
/// object per event with its time, level, message and fields, when it goes
/// to a file, journald or a log collector (`WIJKRADAR_LOG_FORMAT=json` or
/// `text` decides otherwise). Levels from `WIJKRADAR_LOG`.
fn init_logging(default: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WIJKRADAR_LOG")
        .unwrap_or_else(|_| default.into());
    let json = match std::env::var("WIJKRADAR_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wijkradar: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // A user error is a message, not a backtrace, whatever RUST_BACKTRACE says.
    let code = match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wijkradar: {}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    };
    // A stopped server may leave a query's audit running on a blocking
    // thread: nothing of it is stored, and the process does not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// An error and its causes on one line, each cause once: most errors here
/// already name their cause in their own message.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Healthcheck {
            service,
            connection,
        } => {
            init_logging("warn");
            let channel =
                tokio::time::timeout(std::time::Duration::from_secs(10), connection.connect())
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("geen antwoord van {} binnen 10 s", connection.server)
                    })??;
            let answer = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest { service })
                .await
                .map_err(crate::query::status_error)?
                .into_inner();
            let status = answer.status();
            println!("{}", status.as_str_name());
            anyhow::ensure!(
                status == tonic_health::pb::health_check_response::ServingStatus::Serving,
                "de aggregator dient niet ({})",
                status.as_str_name()
            );
        }
        Command::Serve { config } => {
            init_logging("info");
            let config = ServerConfig::load(&config)?;
            let mut signals = Signals::listen()?;
            let server = wijkradar_server::start(&config).await?;
            eprintln!(
                "Wijkradar luistert op {} (mutual TLS). Stoppen met Ctrl-C.",
                server.addr
            );
            if let Some(d) = &server.dashboard {
                eprintln!("Dashboard op https://{} (HTTPS).", d.addr);
                // The one-time login goes to the terminal only, never to
                // the log.
                if let Some(url) = &d.login_url {
                    eprintln!("Eenmalige inloglink (ontwikkeling): {url}");
                }
            }
            let signal = loop {
                match signals.next().await? {
                    Signal::Reload => match server.reload_access() {
                        Ok(n) => eprintln!(
                            "SIGHUP: het toegangsbestand is opnieuw gelezen ({n} organisaties)."
                        ),
                        Err(e) => eprintln!(
                            "SIGHUP: het toegangsbestand is NIET overgenomen, het vorige blijft gelden: {e}"
                        ),
                    },
                    Signal::Stop(name) => break name,
                }
            };
            eprintln!("{signal} ontvangen: Wijkradar stopt (lopende aanvragen worden afgemaakt).");
            // Open calls finish, the writer drains and flushes, the store
            // closes; within a bound, so that systemd or Kubernetes need
            // not kill it.
            match tokio::time::timeout(SHUTDOWN_WITHIN, server.shutdown()).await {
                Ok(done) => done?,
                Err(_) => anyhow::bail!(
                    "not stopped within {} s; what was acknowledged is on disk",
                    SHUTDOWN_WITHIN.as_secs()
                ),
            }
            eprintln!("Wijkradar is gestopt.");
        }
        Command::Agent(cmd) => {
            init_logging("warn");
            agent::run(cmd).await?;
        }
        Command::Query(cmd) => {
            init_logging("warn");
            query::run(cmd).await?;
        }
        Command::Intervention(cmd) => {
            init_logging("warn");
            interventions::run(cmd).await?;
        }
        Command::Audit(cmd) => {
            init_logging("warn");
            governance::audit(cmd).await?;
        }
        Command::Admin(cmd) => {
            init_logging("warn");
            governance::admin(cmd).await?;
        }
        Command::Demo(args) => {
            // The demo narrates what happens; the server's own warnings
            // (such as the refusal it shows on purpose) would interrupt it.
            init_logging("error");
            demo::run(args).await?;
        }
        Command::Pki(PkiCommand::Init { dir, server_names }) => {
            wijkradar_pki::init(&dir, &server_names)?;
            println!(
                "CA (ca.pem, ca.key) en servercertificaat (server.pem, server.key) aangemaakt in {}",
                dir.display()
            );
            for (name, organisation, oin) in wijkradar_pki::DEV_ORGANISATIONS {
                let oin: wijkradar_pki::Oin = oin.parse()?;
                let files = wijkradar_pki::issue(&dir, name, organisation, Some(&oin))?;
                println!(
                    "  {name} ({organisation}, OIN {oin}): {}, {}",
                    files.cert.display(),
                    files.key.display()
                );
            }
            println!("Rechten per organisatie: deploy/access.example.toml");
        }
        Command::Pki(PkiCommand::Fingerprint { cert }) => {
            println!("{}", wijkradar_pki::fingerprint(&cert)?);
        }
        Command::Pki(PkiCommand::Issue {
            dir,
            name,
            organisation,
            oin,
        }) => {
            let files = wijkradar_pki::issue(&dir, &name, &organisation, oin.as_ref())?;
            println!(
                "Certificaat {} en sleutel {} aangemaakt",
                files.cert.display(),
                files.key.display()
            );
        }
        Command::Keys(cmd) => keys(cmd)?,
        Command::Eval(eval::EvalArgs {
            what: Some(eval::EvalWhat::Alerts(a)),
            ..
        }) => eval_alerts::run(a).await?,
        Command::Eval(args) => eval::run(args)?,
    }
    Ok(())
}

/// How long a graceful stop may take before the server gives up waiting.
const SHUTDOWN_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// What the operator asked by a signal.
enum Signal {
    /// SIGHUP: read the access file again.
    Reload,
    /// Ctrl-C (SIGINT) or SIGTERM (what systemd, Docker and Kubernetes
    /// send): stop gracefully.
    Stop(&'static str),
}

/// The signals the server acts on, listened for from before it starts:
/// one that arrives while it starts, or between two signals, is not lost
/// (and does not kill the process by its default action).
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                hup: signal(SignalKind::hangup()).context("listening for SIGHUP")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal.
    async fn next(&mut self) -> anyhow::Result<Signal> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => Ok(Signal::Stop("SIGINT")),
                _ = self.term.recv() => Ok(Signal::Stop("SIGTERM")),
                _ = self.hup.recv() => Ok(Signal::Reload),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            Ok(Signal::Stop("Ctrl-C"))
        }
    }
}
