//! `wijkradar agent`: the partner's side, from export file to acknowledged
//! batches, through the outbox, with progress bars, a summary, a reject
//! report and a dry run. Text for the data officer is Dutch.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wijkradar_agent::client::IngestPolicy;
use wijkradar_agent::export::ExportSummary;
use wijkradar_agent::outbox::Import;
use wijkradar_agent::run::{Prepared, SendReport, prepare, send_pending};
use wijkradar_agent::{ExportRules, Outbox, PartnerConfig, Pc6Table};
use wijkradar_domain::Month;
use wijkradar_pseudonym::PartnerKey;

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Read an export, pseudonymise it into the outbox, and send everything
    /// the outbox holds.
    Run(RunArgs),
    /// Send what the outbox still holds (after the aggregator was down or a
    /// run was interrupted).
    Send {
        /// The partner configuration (see deploy/partners/).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show what the outbox holds, which exports were imported, and the
    /// batches the aggregator refused for good (set aside).
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Discard batches the aggregator refused for good, after reading why
    /// (`agent status`): each is written first to the trail file beside
    /// the outbox (`<outbox>.weggegooid.jsonl`), without pseudonyms.
    Discard {
        #[arg(long, short)]
        config: PathBuf,
        /// The batch's number as `agent status` shows it; repeatable.
        #[arg(long = "batch", required_unless_present = "all")]
        batches: Vec<u64>,
        /// Every batch set aside.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The partner configuration (see deploy/partners/).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The export file.
    #[arg(long)]
    pub export: PathBuf,
    /// Do everything but keep or send: show the counts per buurt and type
    /// that would go out, and a sample of the exact payload.
    #[arg(long)]
    pub dry_run: bool,
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

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// What one run did, for the summary.
#[derive(Debug)]
pub struct Outcome {
    pub export: ExportSummary,
    /// False when the same file was imported before.
    pub imported: bool,
    pub earlier: Option<Import>,
    pub sent: SendReport,
    pub still_pending: u64,
    pub reject_report: Option<PathBuf>,
}

fn write_reject_report(path: &Path, export: &ExportSummary) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("{}", path.display()))?;
    w.write_record(["regel", "reden"])?;
    for r in &export.rejects {
        w.write_record([r.line.to_string(), r.reason.to_string()])?;
    }
    w.flush()?;
    Ok(())
}

/// The partner's key and postcode table, loaded once per run.
pub struct Partner {
    pub config: PartnerConfig,
    pub key: PartnerKey,
    pub pc6: Pc6Table,
}

impl Partner {
    pub fn load(config: PartnerConfig) -> anyhow::Result<Partner> {
        let key = PartnerKey::load(&config.agent.pseudonym_key)?;
        let pc6 = load_postcode_table(&config.agent.postcode_table)?;
        Ok(Partner { config, key, pc6 })
    }

    /// The rows' rules, with what the aggregator accepts when it told.
    fn rules(&self, policy: Option<&IngestPolicy>) -> ExportRules<'_> {
        let mut rules = self.config.rules(&self.pc6, &self.key, current_month());
        if let Some(p) = policy {
            rules.first_kept = p.first_kept.clone();
        }
        rules
    }

    /// Asks the aggregator what it accepts, so that rows past its
    /// retention are rejected here. Without an answer the rows are kept,
    /// and the aggregator refuses their batches later (set aside).
    async fn policy(&self) -> Option<IngestPolicy> {
        let ask = async {
            let channel = wijkradar_agent::connect(
                &self.config.aggregator.url,
                &self.config.aggregator.tls(),
            )
            .await?;
            wijkradar_agent::client::ingest_policy(channel).await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(15), ask).await {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                eprintln!(
                    "let op: het beleid van de aggregator is niet op te halen ({e}); regels van vóór de bewaartermijn worden pas bij het versturen geweigerd"
                );
                None
            }
            Err(_) => {
                eprintln!(
                    "let op: de aggregator antwoordt niet binnen 15 s; regels van vóór de bewaartermijn worden pas bij het versturen geweigerd"
                );
                None
            }
        }
    }

    fn prepare(&self, export: &Path, policy: Option<&IngestPolicy>) -> anyhow::Result<Prepared> {
        let size = std::fs::metadata(export)
            .with_context(|| format!("{}", export.display()))?
            .len();
        let reading = bar(
            size,
            "lezen en pseudonimiseren [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
        );
        let prepared = prepare(
            export,
            &self.rules(policy),
            self.config.agent.batch_size,
            |n| reading.set_position(n),
        );
        reading.finish_and_clear();
        Ok(prepared?)
    }
}

/// Reads an export into the outbox (once per file) and sends everything
/// pending. The demo runs its partners through this same path.
pub async fn run_export(partner: &Partner, export: &Path) -> anyhow::Result<Outcome> {
    let config = &partner.config;
    let outbox = Outbox::open(&config.agent.outbox)?;
    let policy = partner.policy().await;
    let prepared = partner.prepare(export, policy.as_ref())?;
    let earlier = outbox.imported(&prepared.digest)?;
    let mut outcome = Outcome {
        export: ExportSummary::default(),
        imported: false,
        earlier: earlier.clone(),
        sent: SendReport::default(),
        still_pending: 0,
        reject_report: None,
    };
    if earlier.is_none() {
        outcome.reject_report = reject_report(config, export, &prepared.summary)?;
        let record = Import {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            file_name: export
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            rows: prepared.summary.rows,
            signals: prepared.summary.signals(),
            batches: prepared.batches.len() as u64,
            key_id: partner.key.id().to_string(),
        };
        outbox.import(&prepared.digest, &record, &prepared.batches)?;
        outcome.export = prepared.summary;
        outcome.imported = true;
    }
    let (sent, pending) = send(&outbox, config).await;
    outcome.still_pending = pending;
    outcome.sent = sent.with_context(|| {
        format!(
            "sending to {}: {pending} signals stay in the outbox; `wijkradar agent send` sends them later",
            config.aggregator.url
        )
    })?;
    Ok(outcome)
}

fn reject_report(
    config: &PartnerConfig,
    export: &Path,
    summary: &ExportSummary,
) -> anyhow::Result<Option<PathBuf>> {
    if summary.rejects.is_empty() {
        return Ok(None);
    }
    let name = export.with_extension("afgewezen.csv");
    let path = match &config.agent.reject_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
            dir.join(name.file_name().unwrap_or_default())
        }
        None => name,
    };
    write_reject_report(&path, summary)?;
    Ok(Some(path))
}

/// Sends what the outbox holds; returns the result and what is still pending.
async fn send(outbox: &Outbox, config: &PartnerConfig) -> (anyhow::Result<SendReport>, u64) {
    let total = match outbox.status() {
        Ok(s) => s.signals,
        Err(e) => return (Err(e.into()), 0),
    };
    if total == 0 {
        return (Ok(SendReport::default()), 0);
    }
    let result = async {
        let channel =
            wijkradar_agent::connect(&config.aggregator.url, &config.aggregator.tls()).await?;
        let sending = bar(
            total,
            "versturen [{bar:30}] {pos}/{len} signalen ({per_sec})",
        );
        let report = send_pending(outbox, channel, |n| sending.set_position(n)).await;
        sending.finish_and_clear();
        Ok(report?)
    }
    .await;
    let pending = outbox.status().map_or(total, |s| s.signals);
    (result, pending)
}

/// Thousands with a dot, as Dutch readers expect.
pub fn dutch(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    out
}

pub fn summary_text(o: &Outcome) -> String {
    let mut s = String::new();
    let e = &o.export;
    if o.imported {
        let _ = writeln!(
            s,
            "  regels gelezen: {}, signalen: {}, zonder signaal: {}, afgewezen: {}",
            dutch(e.rows),
            dutch(e.signals()),
            dutch(e.without_signal),
            dutch(e.rejected())
        );
        for (t, n) in &e.per_type {
            let _ = writeln!(s, "    {t}: {}", dutch(*n));
        }
        for (reason, n) in &e.rejected_by_reason {
            let _ = writeln!(s, "    afgewezen, {reason}: {}", dutch(*n));
        }
    } else if let Some(earlier) = &o.earlier {
        let _ = writeln!(
            s,
            "  deze export ({}, {} signalen) is eerder ingelezen; alleen wat nog in de outbox stond is verstuurd",
            earlier.file_name,
            dutch(earlier.signals)
        );
    }
    let _ = writeln!(
        s,
        "  verstuurd: {} signalen in {} batches ({} nieuw opgeslagen, {} al eerder ontvangen); nog in de outbox: {}",
        dutch(o.sent.signals),
        o.sent.batches,
        o.sent.stored,
        o.sent.already_stored,
        dutch(o.still_pending)
    );
    if o.sent.set_aside > 0 {
        let _ = writeln!(
            s,
            "  apart gezet: {} batches die de aggregator blijvend weigert; `wijkradar agent status` zegt waarom",
            o.sent.set_aside
        );
    }
    if let Some(path) = &o.reject_report {
        let _ = writeln!(
            s,
            "  afgewezen regels (regelnummer en reden, zonder adres of BSN): {}",
            path.display()
        );
    }
    s
}

fn dry_run_text(partner: &Partner, p: &Prepared) -> String {
    let mut s = String::new();
    let e = &p.summary;
    let _ = writeln!(
        s,
        "Proefrun (--dry-run): niets opgeslagen in de outbox, niets verstuurd.\n\
         Regels gelezen: {}, signalen: {}, zonder signaal: {}, afgewezen: {}",
        dutch(e.rows),
        dutch(e.signals()),
        dutch(e.without_signal),
        dutch(e.rejected())
    );
    for (reason, n) in &e.rejected_by_reason {
        let _ = writeln!(s, "  afgewezen, {reason}: {}", dutch(*n));
    }
    let _ = writeln!(s, "\nWat verstuurd zou worden, per buurt en signaaltype:");
    let _ = writeln!(s, "  {:<12} {:<28} {:>8}", "buurt", "signaaltype", "aantal");
    for ((buurt, t), n) in &p.per_buurt {
        let _ = writeln!(s, "  {buurt:<12} {t:<28} {:>8}", dutch(*n));
    }
    let _ = writeln!(
        s,
        "\nZo ziet een verzending er precies uit (de eerste {} signalen van {} batches, sleutel {}):",
        p.sample.len(),
        p.batches.len(),
        partner.key.id()
    );
    for signal in &p.sample {
        let _ = writeln!(
            s,
            "  {{ pseudonym: {}, buurt_code: {}, signal_type: {}, month: {} }}",
            hex::encode(&signal.pseudonym),
            signal.buurt_code,
            signal.signal_type,
            signal.month
        );
    }
    let _ = writeln!(
        s,
        "Een pseudoniem is een HMAC-SHA256 met de sleutel van het domein: zonder die sleutel is er geen adres of BSN uit terug te rekenen."
    );
    s
}

pub async fn run(cmd: AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Run(args) => {
            let config = PartnerConfig::load(&args.config)?;
            let partner = Partner::load(config)?;
            if args.dry_run {
                let policy = partner.policy().await;
                let prepared = partner.prepare(&args.export, policy.as_ref())?;
                if let Some(path) = reject_report(&partner.config, &args.export, &prepared.summary)?
                {
                    println!("Afgewezen regels: {}", path.display());
                }
                print!("{}", dry_run_text(&partner, &prepared));
                return Ok(());
            }
            println!("{}: {}", partner.config.partner.name, args.export.display());
            let outcome = run_export(&partner, &args.export).await?;
            print!("{}", summary_text(&outcome));
        }
        AgentCommand::Send { config } => {
            let config = PartnerConfig::load(&config)?;
            let outbox = Outbox::open(&config.agent.outbox)?;
            let (sent, pending) = send(&outbox, &config).await;
            let sent = sent?;
            println!(
                "verstuurd: {} signalen in {} batches ({} nieuw opgeslagen, {} al eerder ontvangen); nog in de outbox: {}",
                dutch(sent.signals),
                sent.batches,
                sent.stored,
                sent.already_stored,
                dutch(pending)
            );
            if sent.set_aside > 0 {
                println!(
                    "apart gezet: {} batches die de aggregator blijvend weigert; `wijkradar agent status` zegt waarom",
                    sent.set_aside
                );
            }
        }
        AgentCommand::Status { config } => {
            let config = PartnerConfig::load(&config)?;
            let outbox = Outbox::open(&config.agent.outbox)?;
            let status = outbox.status()?;
            println!(
                "Outbox {}: {} signalen in {} batches nog te versturen",
                config.agent.outbox.display(),
                dutch(status.signals),
                status.batches
            );
            for (t, n) in &status.per_type {
                println!("  {t}: {}", dutch(*n));
            }
            for (m, n) in &status.per_month {
                println!("  maand {m}: {}", dutch(*n));
            }
            if !status.set_aside.is_empty() {
                println!(
                    "Apart gezet (de aggregator weigert ze blijvend; niet opnieuw verstuurd):"
                );
                for b in &status.set_aside {
                    println!(
                        "  batch {}: {} signalen ({}), maanden {}, sleutel {}, apart gezet {}\n    {}",
                        b.seq,
                        dutch(b.signals),
                        b.per_type
                            .iter()
                            .map(|(t, n)| format!("{t} {n}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        b.months.join(" "),
                        b.key_id,
                        time_text(b.at),
                        b.reason.replace('\n', "\n    ")
                    );
                }
                println!(
                    "  Herstel de oorzaak en lees de export opnieuw in, of gooi ze weg: wijkradar agent discard --config … --batch N"
                );
            }
            if !status.imports.is_empty() {
                println!("Ingelezen exports:");
                for i in &status.imports {
                    println!(
                        "  {} ({} regels, {} signalen, sleutel {}, ingelezen {})",
                        i.file_name,
                        dutch(i.rows),
                        dutch(i.signals),
                        i.key_id,
                        time_text(i.at)
                    );
                }
            }
        }
        AgentCommand::Discard {
            config,
            batches,
            all,
        } => {
            let config = PartnerConfig::load(&config)?;
            let outbox = Outbox::open(&config.agent.outbox)?;
            let trail = discard_trail(&config);
            let seqs: Vec<u64> = if all {
                outbox.set_aside_batches()?.iter().map(|b| b.seq).collect()
            } else {
                batches
            };
            let by = std::env::var("USER").unwrap_or_else(|_| "onbekend".into());
            for seq in seqs {
                let b = outbox.discard(seq, &trail, &by, wijkradar_agent::run::unix_now())?;
                println!(
                    "batch {seq} weggegooid: {} signalen ({})",
                    dutch(b.signals),
                    b.batch_id
                );
            }
            println!("Vastgelegd in {}", trail.display());
        }
    }
    Ok(())
}

/// The trail of discarded batches, beside the outbox.
pub fn discard_trail(config: &PartnerConfig) -> PathBuf {
    let outbox = &config.agent.outbox;
    let name = outbox
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "outbox".into());
    outbox.with_file_name(format!("{name}.weggegooid.jsonl"))
}

fn time_text(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_else(|_| unix.to_string())
}
