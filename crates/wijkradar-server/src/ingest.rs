//! The ingest service: batches in, durable acknowledgements out, in order.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use wijkradar_domain::Month;
use wijkradar_pki::{Identity, Role};
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
    Queued(String, Pending),
    Refused(Status),
}

impl Ingest {
    async fn enqueue(&self, partner: &Identity, req: pb::SubmitRequest) -> Result<Step, ApiError> {
        let state = &self.state;
        let rules = IngestRules {
            hierarchy: &state.hierarchy,
            catalogue: &state.catalogue,
            max_batch_signals: state.limits.max_batch_signals,
            now: current_month(),
        };
        let checked = batch_from_proto(req, &rules)?;
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
                }
            })
            .collect();
        let incoming = IncomingBatch {
            partner: partner.to_string(),
            id: id.clone(),
            key_id,
            digest: checked.digest,
            signals,
        };
        Ok(Step::Queued(
            id.to_string(),
            state.queue.enqueue(incoming).await?,
        ))
    }
}

pub(crate) fn current_month() -> Month {
    Month::from_unix_seconds(unix_seconds())
}

/// The clock, read in one place: seconds since 1970 (UTC).
pub(crate) fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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

    async fn submit(
        &self,
        request: Request<Streaming<pb::SubmitRequest>>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let partner = authorize(&request, Role::Partner)?;
        let mut inbound = request.into_inner();
        let (steps_tx, mut steps_rx) = mpsc::channel::<Step>(IN_FLIGHT_PER_STREAM);
        let (out_tx, out_rx) = mpsc::channel(IN_FLIGHT_PER_STREAM);
        let limit = self.state.limits.max_message_bytes;

        // Reader: checks each batch and queues it for the writer, in order.
        let this = Ingest {
            state: self.state.clone(),
        };
        tokio::spawn(async move {
            loop {
                let step = match inbound.message().await {
                    Ok(Some(req)) => this
                        .enqueue(&partner, req)
                        .await
                        .unwrap_or_else(|e| Step::Refused(e.into())),
                    Ok(None) => break,
                    Err(status) => Step::Refused(receive_error(status, limit)),
                };
                let refused = matches!(step, Step::Refused(_));
                if steps_tx.send(step).await.is_err() || refused {
                    break;
                }
            }
        });

        // Responder: answers each batch once it is durable, in the order sent.
        tokio::spawn(async move {
            while let Some(step) = steps_rx.recv().await {
                let answer = match step {
                    Step::Queued(batch_id, pending) => match pending.durable().await {
                        Ok(outcome) => {
                            tracing::info!(batch_id, ?outcome, "batch acknowledged");
                            let outcome = match outcome {
                                Outcome::Stored => pb::BatchOutcome::Stored,
                                Outcome::AlreadyStored => pb::BatchOutcome::AlreadyStored,
                            };
                            Ok(pb::SubmitResponse {
                                batch_id,
                                outcome: outcome.into(),
                            })
                        }
                        Err(e) => Err(Status::from(ApiError::from(e))),
                    },
                    Step::Refused(status) => Err(status),
                };
                let failed = answer.is_err();
                if let Err(status) = &answer {
                    tracing::info!(code = ?status.code(), reason = status.message(), "batch refused");
                }
                if out_tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}
