//! `wijkradar agent`: the partner's side, from export file to acknowledged
//! batches, through the outbox, with progress bars, a summary, a reject
//! report and a dry run. Text for the data officer is Dutch.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wijkradar_agent::flow::{self, Outcome, Partner, Progress};
use wijkradar_agent::run::Prepared;
use wijkradar_agent::{Outbox, PartnerConfig, Pc6Table};
use wijkradar_domain::Month;

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

/// The current month, by the system's clock.
pub fn current_month() -> Month {
    wijkradar_domain::Clock::System.month()
}

pub fn load_postcode_table(path: &Path) -> anyhow::Result<Pc6Table> {
    Ok(flow::load_postcode_table(path)?)
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

/// A run's progress as bars on the terminal, warnings on standard error.
#[derive(Default)]
struct Bars {
    bar: Option<ProgressBar>,
}

impl Progress for Bars {
    fn reading(&mut self, bytes: u64) {
        self.bar = Some(bar(
            bytes,
            "lezen en pseudonimiseren [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
        ));
    }
    fn read(&mut self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
        }
    }
    fn sending(&mut self, signals: u64) {
        self.bar = Some(bar(
            signals,
            "versturen [{bar:30}] {pos}/{len} signalen ({per_sec})",
        ));
    }
    fn sent(&mut self, signals: u64) {
        self.read(signals);
    }
    fn done(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
    fn warn(&mut self, message: &str) {
        eprintln!("{message}");
    }
}

/// Reads an export into the outbox (once per file) and sends everything
/// pending, with progress bars. The demo runs its partners through this
/// same path.
pub async fn run_export(partner: &Partner, export: &Path) -> anyhow::Result<Outcome> {
    Ok(flow::run_export(partner, export, current_month(), &mut Bars::default()).await?)
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
                let mut bars = Bars::default();
                let policy = partner.policy(&mut bars).await;
                let prepared =
                    partner.prepare(&args.export, current_month(), policy.as_ref(), &mut bars)?;
                if let Some(path) =
                    flow::reject_report(&partner.config, &args.export, &prepared.summary)?
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
            let (sent, pending) = flow::send_outbox(&outbox, &config, &mut Bars::default()).await;
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
