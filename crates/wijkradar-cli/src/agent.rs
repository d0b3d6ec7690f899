//! `wijkradar agent`: the partner's side, from export file to acknowledged
//! batches, with a progress bar and a reject report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wijkradar_agent::{Export, Pc6Table, SubmitReport};
use wijkradar_domain::Month;
use wijkradar_pseudonym::PartnerKey;

use crate::connection::Connection;

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Pseudonymise an export and submit it to the aggregator.
    Submit(SubmitArgs),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The export: postcode, huisnummer, toevoeging, signaaltype, maand.
    #[arg(long)]
    pub export: PathBuf,
    /// CBS postcode + house number → buurt table (PC6,Huisnummer,Buurt20xx,...).
    #[arg(long)]
    pub postcode_table: PathBuf,
    /// The domain's pseudonymisation key (never sent anywhere).
    #[arg(long)]
    pub pseudonym_key: PathBuf,
    /// Signals per batch.
    #[arg(long, default_value_t = 5000)]
    pub batch_size: usize,
    /// Where to write rejected rows (line and reason); default: next to the export.
    #[arg(long)]
    pub reject_report: Option<PathBuf>,
    #[command(flatten)]
    pub connection: Connection,
}

/// What one run did, for the summary.
#[derive(Debug)]
pub struct Summary {
    pub rows: u64,
    pub sent: usize,
    pub rejected: usize,
    pub report: SubmitReport,
    pub reject_report: Option<PathBuf>,
}

pub fn current_month() -> Month {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Month::from_unix_seconds(secs as i64)
}

pub fn load_postcode_table(path: &Path) -> anyhow::Result<Pc6Table> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    Pc6Table::from_reader(file).with_context(|| format!("{}", path.display()))
}

fn write_reject_report(path: &Path, export: &Export) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("{}", path.display()))?;
    w.write_record(["regel", "reden"])?;
    for r in &export.rejects {
        w.write_record([r.line.to_string(), r.reason.clone()])?;
    }
    w.flush()?;
    Ok(())
}

/// Reads, pseudonymises and submits one export; the demo runs partners
/// through this same path.
pub async fn submit_export(
    channel: tonic::transport::Channel,
    export_path: &Path,
    table: &Pc6Table,
    key: &PartnerKey,
    batch_size: usize,
    reject_report: Option<PathBuf>,
    label: &str,
) -> anyhow::Result<Summary> {
    let file =
        std::fs::File::open(export_path).with_context(|| format!("{}", export_path.display()))?;
    let export = wijkradar_agent::read_export(file, table, key, current_month())
        .with_context(|| format!("{}", export_path.display()))?;
    let reject_report = if export.rejects.is_empty() {
        None
    } else {
        let path = reject_report.unwrap_or_else(|| export_path.with_extension("afgewezen.csv"));
        write_reject_report(&path, &export)?;
        Some(path)
    };
    let (rows, rejected, sent) = (export.rows, export.rejects.len(), export.signals.len());
    let bar = ProgressBar::new(sent as u64).with_message(label.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{msg:20} [{bar:30}] {pos}/{len} signalen ({per_sec})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let report = wijkradar_agent::submit(channel, export.signals, batch_size, |n| {
        bar.set_position(n as u64)
    })
    .await;
    bar.finish();
    Ok(Summary {
        rows,
        sent,
        rejected,
        report: report?,
        reject_report,
    })
}

pub fn print_summary(s: &Summary) {
    println!(
        "  regels gelezen: {}, verstuurd: {} in {} batches ({} nieuw opgeslagen, {} al eerder ontvangen), afgewezen: {}",
        s.rows, s.sent, s.report.batches, s.report.stored, s.report.already_stored, s.rejected
    );
    if let Some(path) = &s.reject_report {
        println!(
            "  afgewezen regels (regelnummer en reden, zonder adres): {}",
            path.display()
        );
    }
}

pub async fn run(cmd: AgentCommand) -> anyhow::Result<()> {
    let AgentCommand::Submit(args) = cmd;
    let table = load_postcode_table(&args.postcode_table)?;
    let key = PartnerKey::load(&args.pseudonym_key)?;
    let channel = args.connection.connect().await?;
    let summary = submit_export(
        channel,
        &args.export,
        &table,
        &key,
        args.batch_size,
        args.reject_report,
        "versturen",
    )
    .await?;
    print_summary(&summary);
    Ok(())
}
