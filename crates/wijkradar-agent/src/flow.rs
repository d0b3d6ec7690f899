//! A whole agent run, as `wijkradar agent run` and the demo make it: ask
//! the aggregator what it accepts, read and pseudonymise the export, write
//! the reject report, keep the export in the outbox (once per file), send
//! what the outbox holds. The command line only renders it: progress
//! through [`Progress`], the result as an [`Outcome`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use wijkradar_domain::Month;
use wijkradar_pseudonym::PartnerKey;

use crate::client::IngestPolicy;
use crate::export::{ExportRules, ExportSummary};
use crate::outbox::{Import, Outbox};
use crate::run::{Prepared, RunError, SendReport, prepare, send_pending, unix_now};
use crate::{PartnerConfig, Pc6Table};

/// How long the agent waits for the aggregator's policy before it reads
/// the export without it.
const POLICY_WAIT: Duration = Duration::from_secs(15);

/// What a run reports while it works. Every method has a default that
/// does nothing.
pub trait Progress {
    /// Reading the export starts: its size in bytes.
    fn reading(&mut self, _bytes: u64) {}
    /// Bytes of the export read so far.
    fn read(&mut self, _bytes: u64) {}
    /// Sending starts: the signals the outbox holds.
    fn sending(&mut self, _signals: u64) {}
    /// Signals acknowledged so far.
    fn sent(&mut self, _signals: u64) {}
    /// A phase ended (clear a bar).
    fn done(&mut self) {}
    /// Something the officer should know, in Dutch.
    fn warn(&mut self, _message: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {}

/// What one run did.
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

/// A previous key must be another key of the same domain, of an earlier
/// epoch where both name theirs.
fn check_previous_key(key: &PartnerKey, previous: &PartnerKey) -> Result<(), RunError> {
    let fits = match (key.domain_and_epoch(), previous.domain_and_epoch()) {
        (Some((d, e)), Some((pd, pe))) => d == pd && pe < e,
        _ => false,
    };
    if fits && key.id() != previous.id() {
        return Ok(());
    }
    Err(RunError::PreviousKey {
        previous: previous.id().to_string(),
        current: key.id().to_string(),
    })
}

/// The partner's configuration, key and postcode table, loaded once.
#[derive(Debug)]
pub struct Partner {
    pub config: PartnerConfig,
    pub key: PartnerKey,
    /// During a key change's overlap: the previous epoch's key.
    pub previous_key: Option<PartnerKey>,
    pub pc6: Pc6Table,
}

impl Partner {
    pub fn load(config: PartnerConfig) -> Result<Partner, RunError> {
        let key = PartnerKey::load(&config.agent.pseudonym_key)?;
        let previous_key = match &config.agent.previous_pseudonym_key {
            Some(path) => Some(PartnerKey::load(path)?),
            None => None,
        };
        if let Some(previous) = &previous_key {
            check_previous_key(&key, previous)?;
        }
        let pc6 = load_postcode_table(&config.agent.postcode_table)?;
        Ok(Partner {
            config,
            key,
            previous_key,
            pc6,
        })
    }

    /// The rows' rules in month `now`, with what the aggregator accepts
    /// when it told.
    pub fn rules(&self, now: Month, policy: Option<&IngestPolicy>) -> ExportRules<'_> {
        let mut rules = self.config.rules(&self.pc6, &self.key, now);
        rules.previous_key = self.previous_key.as_ref();
        if let Some(p) = policy {
            rules.first_kept = p.first_kept.clone();
        }
        rules
    }

    /// Asks the aggregator what it accepts, so that rows past its
    /// retention are rejected here. Without an answer the rows are kept,
    /// and the aggregator refuses their batches later (they are set aside).
    pub async fn policy(&self, progress: &mut impl Progress) -> Option<IngestPolicy> {
        let ask = async {
            let channel =
                crate::connect(&self.config.aggregator.url, &self.config.aggregator.tls()).await?;
            crate::client::ingest_policy(channel).await
        };
        let later = "regels van vóór de bewaartermijn worden pas bij het versturen geweigerd";
        match tokio::time::timeout(POLICY_WAIT, ask).await {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                progress.warn(&format!(
                    "let op: het beleid van de aggregator is niet op te halen ({e}); {later}"
                ));
                None
            }
            Err(_) => {
                progress.warn(&format!(
                    "let op: de aggregator antwoordt niet binnen {} s; {later}",
                    POLICY_WAIT.as_secs()
                ));
                None
            }
        }
    }

    /// Reads and pseudonymises `export` in month `now`.
    pub fn prepare(
        &self,
        export: &Path,
        now: Month,
        policy: Option<&IngestPolicy>,
        progress: &mut impl Progress,
    ) -> Result<Prepared, RunError> {
        let size = std::fs::metadata(export)
            .map_err(|source| RunError::Io {
                path: export.to_owned(),
                source,
            })?
            .len();
        progress.reading(size);
        let prepared = prepare(
            export,
            &self.rules(now, policy),
            self.config.agent.batch_size,
            |n| progress.read(n),
        );
        progress.done();
        prepared
    }
}

pub fn load_postcode_table(path: &Path) -> Result<Pc6Table, RunError> {
    let file = std::fs::File::open(path).map_err(|source| RunError::Io {
        path: path.to_owned(),
        source,
    })?;
    Pc6Table::from_reader(file).map_err(|source| RunError::Pc6 {
        path: path.to_owned(),
        source,
    })
}

/// Reads an export into the outbox (once per file) and sends everything
/// pending, in month `now`.
pub async fn run_export(
    partner: &Partner,
    export: &Path,
    now: Month,
    progress: &mut impl Progress,
) -> Result<Outcome, RunError> {
    let config = &partner.config;
    let outbox = Outbox::open(&config.agent.outbox)?;
    let policy = partner.policy(progress).await;
    let prepared = partner.prepare(export, now, policy.as_ref(), progress)?;
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
            at: unix_now(),
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
    let (sent, pending) = send_outbox(&outbox, config, progress).await;
    outcome.still_pending = pending;
    outcome.sent = sent?;
    Ok(outcome)
}

/// Writes the rejected rows (line number and reason, never an address or
/// BSN) beside the export, or in `agent.reject_dir`; `None` when there are
/// none.
pub fn reject_report(
    config: &PartnerConfig,
    export: &Path,
    summary: &ExportSummary,
) -> Result<Option<PathBuf>, RunError> {
    if summary.rejects.is_empty() {
        return Ok(None);
    }
    let name = export.with_extension("afgewezen.csv");
    let path = match &config.agent.reject_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| RunError::Io {
                path: dir.clone(),
                source,
            })?;
            dir.join(name.file_name().unwrap_or_default())
        }
        None => name,
    };
    let report = |source| RunError::Report {
        path: path.clone(),
        source,
    };
    let mut w = csv::Writer::from_path(&path).map_err(report)?;
    w.write_record(["regel", "reden"]).map_err(report)?;
    for r in &summary.rejects {
        w.write_record([r.line.to_string(), r.reason.to_string()])
            .map_err(report)?;
    }
    w.flush().map_err(|e| report(e.into()))?;
    Ok(Some(path))
}

/// Sends what the outbox holds; the result, and the signals still pending
/// after it (also after an error, which then names them).
pub async fn send_outbox(
    outbox: &Outbox,
    config: &PartnerConfig,
    progress: &mut impl Progress,
) -> (Result<SendReport, RunError>, u64) {
    let total = match outbox.status() {
        Ok(s) => s.signals,
        Err(e) => return (Err(e.into()), 0),
    };
    if total == 0 {
        return (Ok(SendReport::default()), 0);
    }
    let result = async {
        let channel = crate::connect(&config.aggregator.url, &config.aggregator.tls()).await?;
        progress.sending(total);
        let report = send_pending(outbox, channel, |n| progress.sent(n)).await;
        progress.done();
        report
    }
    .await;
    let pending = outbox.status().map_or(total, |s| s.signals);
    let result = result.map_err(|source| RunError::Send {
        url: config.aggregator.url.clone(),
        pending,
        source: Box::new(source),
    });
    (result, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_previous_key_is_an_earlier_key_of_the_same_domain() {
        let dir = tempfile::tempdir().unwrap();
        let root = wijkradar_pseudonym::RootKey::generate(&dir.path().join("root")).unwrap();
        let key = |domain: &str, epoch: &str| root.derive(domain, epoch).unwrap();
        let now = key("GM0034", "2026");
        assert!(check_previous_key(&now, &key("GM0034", "2025")).is_ok());
        for wrong in [
            key("GM0034", "2026"),
            key("GM0034", "2027"),
            key("GM0363", "2025"),
        ] {
            let e = check_previous_key(&now, &wrong).unwrap_err();
            assert!(
                e.to_string().contains("agent.previous_pseudonym_key"),
                "{e}"
            );
        }
    }
}
