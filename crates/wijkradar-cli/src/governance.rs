//! The privacy officer's and the operator's commands: fetch, verify and
//! export the audit log; purge by retention and materialise releases.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use wijkradar_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, audit_service_client::AuditServiceClient,
};

use crate::connection::Connection;
use crate::query::status_error;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Download the audit log from the aggregator (privacy officer) into
    /// FILE, and verify it.
    Fetch {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an audit log file: every entry chained to the one before.
    /// Names any entry deleted, altered, inserted or reordered.
    Verify {
        /// The log: `audit.log` in the aggregator's data directory, or a
        /// fetched copy.
        #[arg(long)]
        file: PathBuf,
        /// The head of an earlier verification (`SEQ:HASH`, as printed):
        /// it must still be in the log, which shows truncation and rewriting.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Write an audit log file as a readable table (tab-separated).
    Export {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Purge every signal past its type's retention now (operator).
    Purge {
        #[command(flatten)]
        connection: Connection,
    },
    /// Materialise the releases of every ended period (month, quarter,
    /// year) that is new or changed, or of one month (operator).
    Materialise {
        /// Only this month's tables (YYYY-MM): every signal type and derived
        /// indicator of every gemeente.
        #[arg(long)]
        month: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Back up the store, its period keys and the audit log while the
    /// server runs (operator): a new directory under the server's backup
    /// directory, on the server's machine.
    Backup {
        #[command(flatten)]
        connection: Connection,
    },
    /// Upgrade a data directory to this version's on-disk format, with the
    /// server stopped and after a backup: an older version no longer reads
    /// it afterwards.
    Upgrade {
        /// The server configuration's `data_dir`.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Restore a backup into a new data directory (on the machine that
    /// will run the server; the server is not running there yet). Every
    /// file is checked against the backup's manifest and the audit log's
    /// chain first.
    Restore {
        /// The backup directory (`wijkradar-20261202T194105Z`).
        #[arg(long)]
        from: PathBuf,
        /// The new data directory: the server configuration's `data_dir`.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Verifies `bytes` and prints the outcome; an error if it is not intact.
fn report(bytes: &[u8], anchor: Option<&str>) -> anyhow::Result<()> {
    let anchor = anchor
        .map(|a| {
            let (seq, hash) = a
                .split_once(':')
                .context("--anchor: expected SEQ:HASH as printed by an earlier verification")?;
            Ok::<_, anyhow::Error>((
                seq.parse::<u64>().context("--anchor: SEQ is a number")?,
                hash,
            ))
        })
        .transpose()?;
    let report = wijkradar_audit::verify(bytes, anchor);
    println!("{} auditregels gelezen.", report.entries);
    if let Some((seq, hash)) = &report.head {
        println!("Laatste regel (bewaar dit als ankerpunt): {seq}:{hash}");
    }
    if report.is_intact() {
        println!("De keten is intact.");
        Ok(())
    } else {
        println!("De keten is NIET intact:");
        for p in &report.problems {
            println!("  - {p}");
        }
        anyhow::bail!(
            "the audit log failed verification ({} problems)",
            report.problems.len()
        )
    }
}

/// The audit log as the aggregator stores it (privacy officer only).
pub async fn fetch_audit(connection: &Connection) -> anyhow::Result<Vec<u8>> {
    let mut client =
        AuditServiceClient::new(connection.connect().await?).max_decoding_message_size(4 << 20);
    let mut stream = client
        .export_audit(pb::ExportAuditRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(part) = stream.message().await.map_err(status_error)? {
        bytes.extend_from_slice(&part.chunk);
    }
    Ok(bytes)
}

pub async fn audit(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Fetch { connection, out } => {
            let bytes = fetch_audit(&connection).await?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "Auditlog opgehaald: {} ({} bytes).",
                out.display(),
                bytes.len()
            );
            report(&bytes, None)
        }
        AuditCommand::Verify { file, anchor } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            report(&bytes, anchor.as_deref())
        }
        AuditCommand::Export { file, out } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let report = wijkradar_audit::verify(&bytes, None);
            std::fs::write(&out, wijkradar_audit::export_text(&report.parsed))
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{} regels geschreven naar {}.",
                report.parsed.len(),
                out.display()
            );
            if !report.is_intact() {
                println!("Let op: de keten is niet intact; zie `wijkradar audit verify`.");
            }
            Ok(())
        }
    }
}

pub async fn admin(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Purge { connection } => {
            let mut client = AdminServiceClient::new(connection.connect().await?);
            let answer = client
                .purge(pb::PurgeRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            println!("Verwijderd: {} signalen.", answer.signals_purged);
            for c in answer.cutoffs {
                println!(
                    "  {:<28} bewaard vanaf {}",
                    c.signal_type, c.first_month_kept
                );
            }
        }
        AdminCommand::Materialise { month, connection } => {
            let mut client = AdminServiceClient::new(connection.connect().await?);
            let answer = client
                .materialise_releases(pb::MaterialiseReleasesRequest {
                    month: month.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{} tabellen gepubliceerd.", answer.tables_released);
        }
        AdminCommand::Backup { connection } => {
            let mut client = AdminServiceClient::new(connection.connect().await?);
            let answer = client
                .backup(pb::BackupRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "Reservekopie gemaakt op de server: {}\n  {} records ({:.1} MB), manifest SHA-256 {}",
                answer.directory,
                answer.records,
                answer.bytes as f64 / 1e6,
                answer.manifest_sha256
            );
            println!(
                "Kopieer de map naar een andere plek; bewaar haar niet langer dan de bewaartermijn toelaat."
            );
        }
        AdminCommand::Upgrade { data_dir } => {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("bijwerken {spinner} {pos} records")
                    .expect("valid template"),
            );
            let was = wijkradar_store::upgrade(&data_dir, |n| bar.set_position(n))
                .with_context(|| format!("upgrading {}", data_dir.display()))?;
            bar.finish_and_clear();
            let now = wijkradar_store::FORMAT;
            if was == now {
                println!(
                    "{} heeft al opslagformaat {now}: niets te doen.",
                    data_dir.display()
                );
            } else {
                println!(
                    "{} bijgewerkt van opslagformaat {was} naar {now}. Een oudere versie van Wijkradar leest deze map niet meer; ga terug met de reservekopie van vóór het bijwerken.",
                    data_dir.display()
                );
                let aside = data_dir.join(wijkradar_store::SLED_MOVED_ASIDE);
                if aside.is_dir() {
                    println!(
                        "De oude opslag staat nog in {}: verwijder die map zodra de server weer draait.",
                        aside.display()
                    );
                }
            }
        }
        AdminCommand::Restore { from, data_dir } => {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "terugzetten [{bar:30}] {bytes}/{total_bytes} {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            let restored = tokio::task::spawn_blocking(move || {
                wijkradar_server::backup::restore(&from, &data_dir, |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .map(|r| (r, data_dir))
            })
            .await?;
            let (restored, data_dir) = restored?;
            println!(
                "Teruggezet: {} records van de reservekopie van {} in {}.\nStart de server met data_dir = {} en de serversleutel met id {}.",
                restored.records,
                restored.created,
                data_dir.display(),
                data_dir.display(),
                restored.server_key_id
            );
        }
    }
    Ok(())
}
