//! `wijkradar-bench`: benchmarks anyone can rerun, each against a baseline
//! measured in the same run (`cargo run --release -p wijkradar-bench --
//! <benchmark>`; BENCHMARKS.md has the figures). They run the real parts: a
//! development setup with its PKI, a real server on `127.0.0.1:0`, real
//! stores in temporary directories.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod agent;
mod alerts;
mod dashboard;
mod detect;
mod intervention;
mod memory;
mod release;
mod soak;
mod store;

use clap::Parser;

// The allocator of the `wijkradar` binary, so that the figures are the
// production's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Wijkradar's benchmarks.
#[derive(Debug, Parser)]
#[command(name = "wijkradar-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: store::BenchCommand,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WIJKRADAR_LOG")
        .unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    store::run(Cli::parse().command).await
}

/// The current month, by the system's clock.
fn current_month() -> wijkradar_domain::Month {
    wijkradar_domain::Clock::System.month()
}
