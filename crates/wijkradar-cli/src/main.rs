//! The `wijkradar` binary: one entry point for the aggregator, the partner
//! agent, the analyst's queries, the development PKI and keys, the demo and
//! the benchmarks. User-facing text is Dutch; logs and errors are English.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod agent;
mod bench;
mod connection;
mod demo;
mod query;
mod render;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wijkradar_pki::Role;
use wijkradar_pseudonym::{PartnerKey, ServerKey};
use wijkradar_server::ServerConfig;

// sled allocates and frees a node copy per write; glibc's allocator showed as
// a fifth of the ingest profile, mimalloc as much less.
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
    /// Partner agent: pseudonymise an export and submit it.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Query released figures as an analyst.
    #[command(subcommand)]
    Query(query::QueryCommand),
    /// Run the whole chain on a real municipality (Almere) with simulated partners.
    Demo(demo::DemoArgs),
    /// Development certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Pseudonymisation keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a development CA, a server certificate and client
    /// certificates for partners and analysts in DIR.
    Init {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Extra DNS names or IP addresses for the server certificate.
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        /// Partner certificates to issue (name, also the organisation).
        #[arg(long = "partner", default_values = ["woningcorporatie", "energieleverancier", "school"])]
        partners: Vec<String>,
        /// Analyst certificates to issue (name, also the organisation).
        #[arg(long = "analyst", default_values = ["gemeente"])]
        analysts: Vec<String>,
    },
    /// Issue a client certificate signed by the CA in DIR.
    Issue {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Certificate name, also its file name: a-z, 0-9 and -.
        #[arg(long)]
        name: String,
        /// The organisation, as it appears in the audit trail.
        #[arg(long)]
        organisation: String,
        #[arg(long, value_parser = ["partner", "analyst"])]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a new random key file (owner-only): the aggregator's server key
    /// or a partner domain key.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_parser = ["server", "partner"])]
        kind: String,
    },
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WIJKRADAR_LOG")
        .unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wijkradar: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            init_logging("info");
            let config = ServerConfig::load(&config)?;
            let server = wijkradar_server::start(&config).await?;
            eprintln!(
                "Wijkradar luistert op {} (mutual TLS). Stoppen met Ctrl-C.",
                server.addr
            );
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            server.shutdown().await?;
        }
        Command::Agent(cmd) => {
            init_logging("warn");
            agent::run(cmd).await?;
        }
        Command::Query(cmd) => {
            init_logging("warn");
            query::run(cmd).await?;
        }
        Command::Demo(args) => {
            init_logging("warn");
            demo::run(args).await?;
        }
        Command::Pki(PkiCommand::Init {
            dir,
            server_names,
            partners,
            analysts,
        }) => {
            wijkradar_pki::init(&dir, &server_names)?;
            println!(
                "CA (ca.pem, ca.key) en servercertificaat (server.pem, server.key) aangemaakt in {}",
                dir.display()
            );
            let clients = partners
                .iter()
                .map(|p| (p, Role::Partner))
                .chain(analysts.iter().map(|a| (a, Role::Analyst)));
            for (name, role) in clients {
                let files = wijkradar_pki::issue(&dir, name, name, role)?;
                println!(
                    "  {} ({}): {}, {}",
                    name,
                    role.as_str(),
                    files.cert.display(),
                    files.key.display()
                );
            }
        }
        Command::Pki(PkiCommand::Issue {
            dir,
            name,
            organisation,
            role,
        }) => {
            let role: Role = role.parse()?;
            let files = wijkradar_pki::issue(&dir, &name, &organisation, role)?;
            println!(
                "Certificaat {} en sleutel {} aangemaakt",
                files.cert.display(),
                files.key.display()
            );
        }
        Command::Keys(KeysCommand::Generate { out, kind }) => {
            let id = match kind.as_str() {
                "server" => ServerKey::generate(&out)?.id().clone(),
                _ => PartnerKey::generate(&out)?.id().clone(),
            };
            println!(
                "Sleutel {id} aangemaakt in {} (alleen leesbaar voor de eigenaar)",
                out.display()
            );
        }
        Command::Bench(cmd) => {
            init_logging("warn");
            bench::run(cmd).await?;
        }
    }
    Ok(())
}
