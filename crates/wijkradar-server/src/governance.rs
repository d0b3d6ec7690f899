//! The privacy officer's audit log export and the operator's management
//! calls; and retention, which the schedule and the operator both run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use wijkradar_audit::{Count, Event};
use wijkradar_proto::v1::{
    self as pb, admin_service_server::AdminService, audit_service_server::AuditService,
};

use crate::State;
use crate::access::Role;
use crate::auth::authorize;
use crate::error::{ApiError, Violation};
use wijkradar_domain::Month;

/// Largest piece of the audit log sent in one message.
const EXPORT_CHUNK: usize = 1 << 20;

/// Purges every signal past its type's retention, erasing the periods'
/// secrets, and records it in the audit log (a scheduled purge only when it
/// removed something). Returns the number purged and the first month kept
/// per type.
pub(crate) async fn purge(
    state: &State,
    actor: &str,
    scheduled: bool,
) -> Result<(u64, BTreeMap<String, String>), ApiError> {
    let now = state.month();
    let first_kept: HashMap<_, _> = state
        .catalogue
        .types()
        .iter()
        .map(|t| (t.name.clone(), state.retention.first_kept(&t.name, now)))
        .collect();
    let shown: BTreeMap<String, String> = first_kept
        .iter()
        .map(|(t, m)| (t.to_string(), m.to_string()))
        .collect();
    let purged = state.queue.purge(first_kept).await?;
    if purged.periods > 0 {
        // The store dropped the releases of the erased periods.
        state.releases.clear();
        state.shared.clear();
        state.alerts.clear();
    }
    let k = u64::from(state.policy.k());
    if purged.periods > 0 {
        tracing::info!(periods = purged.periods, signals = %Count::new(purged.signals, k), "retention purge");
    }
    if scheduled && purged.periods == 0 {
        return Ok((0, shown));
    }
    state.audit.record(
        actor,
        Event::Purge {
            first_month_kept: shown.clone(),
            signals: Count::new(purged.signals, k),
        },
        true,
    );
    Ok((purged.signals, shown))
}

/// The audit log as stored, cut into whole lines of at most `EXPORT_CHUNK`.
fn chunks(bytes: &[u8]) -> Vec<Vec<u8>> {
    // An entry being appended right now is left for the next export.
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < end {
        let limit = (start + EXPORT_CHUNK).min(end);
        let cut = if limit == end {
            end
        } else {
            bytes[start..limit]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(limit, |i| start + i + 1)
        };
        out.push(bytes[start..cut].to_vec());
        start = cut;
    }
    out
}

#[derive(Debug)]
pub struct Audit {
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl AuditService for Audit {
    type ExportAuditStream = ReceiverStream<Result<pb::ExportAuditResponse, Status>>;

    async fn export_audit(
        &self,
        request: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let state = &self.state;
        let officer = authorize(state, &request, Role::PrivacyOfficer, "ExportAudit")?;
        // Recorded first, so the export holds its own entry.
        state
            .audit
            .append(
                &officer.name,
                crate::call_event("ExportAudit", "", "", None),
                true,
            )
            .map_err(|e| {
                tracing::error!(error = %e, "audit log");
                Status::from(ApiError::Internal)
            })?;
        let bytes = std::fs::read(state.audit.path()).map_err(|e| {
            tracing::error!(error = %e, "reading the audit log");
            Status::from(ApiError::Internal)
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for chunk in chunks(&bytes) {
                if tx
                    .send(Ok(pb::ExportAuditResponse { chunk }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[derive(Debug)]
pub struct Admin {
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        let state = &self.state;
        let operator = authorize(state, &request, Role::Operator, "Purge")?;
        let (signals, cutoffs) = purge(state, &operator.name, false).await?;
        Ok(Response::new(pb::PurgeResponse {
            signals_purged: Count::new(signals, u64::from(state.policy.k())).to_string(),
            cutoffs: cutoffs
                .into_iter()
                .map(|(signal_type, first_month_kept)| pb::RetentionCutoff {
                    signal_type,
                    first_month_kept,
                })
                .collect(),
        }))
    }

    async fn materialise_releases(
        &self,
        request: Request<pb::MaterialiseReleasesRequest>,
    ) -> Result<Response<pb::MaterialiseReleasesResponse>, Status> {
        let state = &self.state;
        let operator = authorize(state, &request, Role::Operator, "MaterialiseReleases")?;
        let query = crate::query::Query {
            state: state.clone(),
        };
        let now = state.month();
        let month = &request.get_ref().month;
        let only = if month.is_empty() {
            None
        } else {
            let m: Month = month.parse().map_err(|_| {
                Status::from(ApiError::InvalidArgument(vec![Violation::new(
                    "month",
                    format!(
                        "`{}` is not a month (YYYY-MM)",
                        crate::convert::printable(month)
                    ),
                )]))
            })?;
            if m >= now {
                return Err(Status::from(ApiError::InvalidArgument(vec![
                    Violation::new("month", format!("{m} has not ended")),
                ])));
            }
            Some(m)
        };
        let stored = tokio::task::spawn_blocking(move || query.materialise_ended(now, only))
            .await
            .map_err(|_| Status::from(ApiError::Internal))??;
        state.audit.record(
            &operator.name,
            crate::call_event(
                "MaterialiseReleases",
                "",
                &only.map(|m| format!("month={m}")).unwrap_or_default(),
                None,
            ),
            true,
        );
        Ok(Response::new(pb::MaterialiseReleasesResponse {
            tables_released: stored as u64,
        }))
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let state = &self.state;
        let operator = authorize(state, &request, Role::Operator, "Backup")?;
        let made = crate::backup::make(state, &state.backup_dir).await;
        let refusal = made.as_ref().err().map(|e| e.to_string());
        if let Some(e) = &refusal {
            tracing::error!(error = %e, "backup failed");
        }
        state.audit.record(
            &operator.name,
            crate::call_event("Backup", "", "", refusal),
            true,
        );
        let made = made.map_err(|_| Status::from(ApiError::Internal))?;
        tracing::info!(directory = %made.dir.display(), records = made.copied.records, "backup made");
        Ok(Response::new(pb::BackupResponse {
            directory: made.dir.display().to_string(),
            records: made.copied.records,
            bytes: made.copied.bytes,
            manifest_sha256: made.manifest_sha256,
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_are_whole_lines_and_leave_a_partial_last_line() {
        let line = vec![b'x'; 300_000];
        let mut log = Vec::new();
        for _ in 0..10 {
            log.extend_from_slice(&line);
            log.push(b'\n');
        }
        log.extend_from_slice(b"{\"half");
        let parts = super::chunks(&log);
        assert!(
            parts
                .iter()
                .all(|p| p.ends_with(b"\n") && p.len() <= super::EXPORT_CHUNK)
        );
        assert_eq!(parts.concat(), log[..log.len() - 6]);
    }
}
