//! The ingest service: batches in, durable acknowledgements out, in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::access::{Organisation, Role};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use wijkradar_audit::{Count, Event};
use wijkradar_domain::Month;
use wijkradar_proto::v1::{self as pb, ingest_service_server::IngestService};
use wijkradar_store::{IncomingBatch, Outcome, Pending, StoredSignal};

use crate::State;
use crate::auth::authorize;
use crate::convert::{IngestRules, batch_from_proto};
use crate::error::{ApiError, Violation};

/// Batches of one stream that may wait for their flush at once.
const IN_FLIGHT_PER_STREAM: usize = 16;

#[derive(Debug)]
pub struct Ingest {
    pub(crate) state: Arc<State>,
}

enum Step {
    Queued {
        batch_id: String,
        signals: Tally,
        pending: Pending,
        received: Instant,
    },
    Refused {
        batch_id: String,
        signals: Tally,
        status: Status,
        received: Instant,
    },
}

/// Signals per type name in a batch as sent, for the audit log.
type Tally = BTreeMap<String, u64>;

/// What the audit log says of a batch as sent: its id (printable, cut
/// short) and its signals per catalogue type.
fn describe(req: &pb::SubmitRequest, catalogue: &wijkradar_domain::Catalogue) -> (String, Tally) {
    let Some(batch) = &req.batch else {
        return (String::new(), Tally::new());
    };
    let batch_id = crate::convert::printable(&batch.batch_id);
    let mut tally = Tally::new();
    for s in &batch.signals {
        let name = match catalogue.get(&s.signal_type) {
            Some(def) => def.name.to_string(),
            None => "(unknown type)".to_owned(),
        };
        *tally.entry(name).or_default() += 1;
    }
    (batch_id, tally)
}

impl Ingest {
    async fn enqueue(
        &self,
        partner: &Organisation,
        req: pb::SubmitRequest,
    ) -> Result<Pending, ApiError> {
        let state = &self.state;
        let rules = IngestRules {
            hierarchy: &state.hierarchy,
            catalogue: &state.catalogue,
            max_batch_signals: state.limits.max_batch_signals,
            now: state.month(),
        };
        let checked = batch_from_proto(req, &rules)?;
        check_grant(partner, &checked.batch.key_id, &checked.batch.signals)?;
        check_retention(&checked.batch.signals, &state.retention, rules.now)?;
        state
            .limiter
            .admit(&partner.name, checked.batch.signals.len())?;
        let id = checked.batch.id.clone();
        let key_id = checked.batch.key_id.clone();
        tracing::debug!(batch_id = %id, %key_id, "batch checked");
        let signals = checked
            .batch
            .signals
            .into_iter()
            .map(|s| {
                let pseudonym = state.server_key.rekey(&s.pseudonym);
                StoredSignal {
                    record_key: state.server_key.record_key(&pseudonym),
                    pseudonym,
                    buurt: s.buurt,
                    signal_type: s.signal_type,
                    month: s.month,
                    severity: s.severity,
                    household: s.household.as_ref().map(|h| state.server_key.rekey(h)),
                    previous: s.previous.as_ref().map(|p| state.server_key.rekey(p)),
                }
            })
            .collect();
        let incoming = IncomingBatch {
            partner: partner.name.clone(),
            id: id.clone(),
            key_id,
            digest: checked.digest,
            signals,
        };
        Ok(state.queue.enqueue(incoming).await?)
    }
}

/// Refuses the whole batch if its key is retired for the partner, or if any signal is of a type or municipality the
/// partner is not granted; the partner learns which of its own signals.
fn check_grant(
    partner: &Organisation,
    key_id: &wijkradar_domain::PseudonymKeyId,
    signals: &[wijkradar_domain::Signal],
) -> Result<(), ApiError> {
    let Some(grant) = &partner.partner else {
        return Err(ApiError::Internal);
    };
    if grant.retired_key_ids.contains(key_id) {
        return Err(ApiError::Forbidden(Violation::new(
            "batch.key_id",
            format!(
                "pseudonymisation key {key_id} is retired for organisation `{}`: pseudonymise with the current key (`wijkradar keys rotate` derives it) and send again",
                partner.name
            ),
        )));
    }
    for (i, s) in signals.iter().enumerate() {
        if !grant.signal_types.contains(&s.signal_type) {
            return Err(ApiError::Forbidden(Violation::new(
                format!("batch.signals[{i}].signal_type"),
                format!(
                    "organisation `{}` may not submit signal type {}",
                    partner.name, s.signal_type
                ),
            )));
        }
        let g = s.buurt.gemeente();
        if !grant.municipalities.contains(&g) {
            return Err(ApiError::Forbidden(Violation::new(
                format!("batch.signals[{i}].buurt_code"),
                format!(
                    "organisation `{}` may not submit signals for municipality {g}",
                    partner.name
                ),
            )));
        }
    }
    Ok(())
}

/// Refuses a batch with a signal of a month its type no longer keeps: it
/// would be purged at once.
fn check_retention(
    signals: &[wijkradar_domain::Signal],
    retention: &crate::RetentionConfig,
    now: Month,
) -> Result<(), ApiError> {
    let violations: Vec<Violation> = signals
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let first_kept = retention.first_kept(&s.signal_type, now);
            (s.month < first_kept).then(|| {
                Violation::new(
                    format!("batch.signals[{i}].month"),
                    format!(
                        "{} is before the retention of {} ({} months: kept from {first_kept})",
                        s.month,
                        s.signal_type,
                        retention.months_for(&s.signal_type)
                    ),
                )
            })
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(violations))
    }
}

/// A transport error while reading the stream, as the client should see it.
fn receive_error(status: Status, limit: usize) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("too large") {
        ApiError::TooLarge(Violation::new(
            "batch",
            format!("the message exceeds the limit of {limit} bytes; send smaller batches"),
        ))
        .into()
    } else {
        status
    }
}

#[tonic::async_trait]
impl IngestService for Ingest {
    type SubmitStream = ReceiverStream<Result<pb::SubmitResponse, Status>>;

    async fn get_ingest_policy(
        &self,
        request: Request<pb::GetIngestPolicyRequest>,
    ) -> Result<Response<pb::GetIngestPolicyResponse>, Status> {
        let state = &self.state;
        let partner = authorize(state, &request, Role::Partner, "GetIngestPolicy")?;
        let Some(grant) = &partner.partner else {
            return Err(ApiError::Internal.into());
        };
        let now = state.month();
        Ok(Response::new(pb::GetIngestPolicyResponse {
            signal_types: grant
                .signal_types
                .iter()
                .map(|t| pb::SignalTypePolicy {
                    signal_type: t.to_string(),
                    first_month: state.retention.first_kept(t, now).to_string(),
                    retention_months: state.retention.months_for(t),
                })
                .collect(),
            municipalities: grant.municipalities.iter().map(|g| g.to_string()).collect(),
            current_month: now.to_string(),
            max_batch_signals: state.limits.max_batch_signals as u32,
        }))
    }

    async fn submit(
        &self,
        request: Request<Streaming<pb::SubmitRequest>>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let partner = authorize(&self.state, &request, Role::Partner, "Submit")?;
        let mut inbound = request.into_inner();
        let (steps_tx, mut steps_rx) = mpsc::channel::<Step>(IN_FLIGHT_PER_STREAM);
        let (out_tx, out_rx) = mpsc::channel(IN_FLIGHT_PER_STREAM);
        let limit = self.state.limits.max_message_bytes;

        // Reader: checks each batch and queues it for the writer, in order.
        let this = Ingest {
            state: self.state.clone(),
        };
        let name = partner.name.clone();
        tokio::spawn(async move {
            loop {
                let message = inbound.message().await;
                let received = Instant::now();
                let step = match message {
                    Ok(Some(req)) => {
                        let (batch_id, signals) = describe(&req, &this.state.catalogue);
                        match this.enqueue(&partner, req).await {
                            Ok(pending) => Step::Queued {
                                batch_id,
                                signals,
                                pending,
                                received,
                            },
                            Err(e) => Step::Refused {
                                batch_id,
                                signals,
                                status: e.into(),
                                received,
                            },
                        }
                    }
                    Ok(None) => break,
                    Err(status) => Step::Refused {
                        batch_id: String::new(),
                        signals: Tally::new(),
                        status: receive_error(status, limit),
                        received,
                    },
                };
                let refused = matches!(step, Step::Refused { .. });
                if steps_tx.send(step).await.is_err() || refused {
                    break;
                }
            }
        });

        // Responder: answers each batch once it is durable and audited, in
        // the order sent.
        let state = self.state.clone();
        tokio::spawn(async move {
            let k = u64::from(state.policy.k());
            while let Some(step) = steps_rx.recv().await {
                let (batch_id, signals, answer, received) = match step {
                    Step::Queued {
                        batch_id,
                        signals,
                        pending,
                        received,
                    } => {
                        let answer = match pending.durable().await {
                            Ok(outcome) => {
                                tracing::info!(batch_id, ?outcome, "batch acknowledged");
                                let outcome = match outcome {
                                    Outcome::Stored => pb::BatchOutcome::Stored,
                                    Outcome::AlreadyStored => pb::BatchOutcome::AlreadyStored,
                                };
                                Ok(pb::SubmitResponse {
                                    batch_id: batch_id.clone(),
                                    outcome: outcome.into(),
                                })
                            }
                            Err(e) => Err(Status::from(ApiError::from(e))),
                        };
                        (batch_id, signals, answer, received)
                    }
                    Step::Refused {
                        batch_id,
                        signals,
                        status,
                        received,
                    } => (batch_id, signals, Err(status), received),
                };
                let failed = answer.is_err();
                if let Err(status) = &answer {
                    tracing::info!(code = ?status.code(), reason = status.message(), "batch refused");
                }
                let (outcome, reason) = match &answer {
                    Ok(r) if r.outcome == pb::BatchOutcome::AlreadyStored as i32 => {
                        ("already_stored", None)
                    }
                    Ok(_) => ("stored", None),
                    Err(s) => ("refused", Some(format!("{:?}: {}", s.code(), s.message()))),
                };
                let logged_id = batch_id.clone();
                let signal_total: u64 = signals.values().sum();
                let event = Event::Batch {
                    batch_id,
                    outcome: outcome.to_owned(),
                    reason,
                    signals: signals
                        .into_iter()
                        .map(|(t, n)| (t, Count::new(n, k)))
                        .collect(),
                };
                if let Err(status) = &answer {
                    // Refusals are summed up per kind, not fsynced one by one.
                    let kind = format!("Submit {:?}", status.code());
                    state.refusals.record(&state.audit, &name, &kind, event);
                } else {
                    let started = Instant::now();
                    let appended = state.audit.append(&name, event, true);
                    state.metrics.audit_append(started.elapsed());
                    if let Err(e) = appended {
                        // Acknowledged means durable, in the store and in the log.
                        tracing::error!(error = %e, "could not append to the audit log");
                        let _ = out_tx.send(Err(Status::from(ApiError::Unavailable))).await;
                        break;
                    }
                    if outcome == "stored" {
                        // The entry is on disk: the batch's trace can go.
                        state.queue.audited(&name, &logged_id).await;
                    }
                }
                state.metrics.batch(
                    crate::metrics::Outcome {
                        outcome,
                        code: match &answer {
                            Err(s) => format!("{:?}", s.code()),
                            Ok(_) => String::new(),
                        },
                    },
                    signal_total,
                    received.elapsed(),
                );
                if out_tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}
