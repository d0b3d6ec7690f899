//! Connecting to the aggregator over mutual TLS, and submitting signals as
//! a stream of batches with stable, content-derived batch ids: resending the
//! same export is acknowledged again and changes no count.

use std::path::PathBuf;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use wijkradar_proto::v1::{self as pb, ingest_service_client::IngestServiceClient};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connect to {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("the aggregator refused: {}", describe_status(.0))]
    Refused(tonic::Status),
    #[error("the aggregator ended the stream before acknowledging every batch, or out of order")]
    Incomplete,
}

/// A status as a person reads it: code, message and every field violation.
pub fn describe_status(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let mut s = format!("{:?}: {}", status.code(), status.message());
    for v in status
        .get_details_bad_request()
        .map(|b| b.field_violations)
        .unwrap_or_default()
    {
        s.push_str(&format!("\n  {}: {}", v.field, v.description));
    }
    s
}

/// Certificates for a mutual-TLS connection.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The name the server certificate must carry.
    pub domain: String,
}

/// Largest message sent or accepted by the client, as the server's default.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

fn read(path: &PathBuf) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.clone(),
        source,
    })
}

pub async fn connect(url: &str, tls: &ClientTls) -> Result<Channel, ClientError> {
    let err = |source| ClientError::Connect {
        url: url.to_owned(),
        source,
    };
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
        .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
        .domain_name(tls.domain.clone());
    Endpoint::from_shared(url.to_owned())
        .map_err(err)?
        .tls_config(config)
        .map_err(err)?
        .connect()
        .await
        .map_err(err)
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SubmitReport {
    pub batches: usize,
    pub stored: usize,
    pub already_stored: usize,
}

/// A batch id derived from the batch's content and key id, stable across
/// runs: resending the same batch is recognised by the aggregator.
pub fn batch_id(key_id: &str, signals: &[pb::Signal]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(key_id.as_bytes());
    ctx.update(b"\0");
    for s in signals {
        ctx.update(&s.encode_length_delimited_to_vec());
    }
    hex::encode(&ctx.finish().as_ref()[..16])
}

/// Cuts signals into batches of `batch_size` with content-derived ids.
pub fn make_batches(signals: Vec<pb::Signal>, key_id: &str, batch_size: usize) -> Vec<pb::Batch> {
    let mut batches = Vec::new();
    let mut rest = signals.into_iter().peekable();
    while rest.peek().is_some() {
        let signals: Vec<pb::Signal> = rest.by_ref().take(batch_size.max(1)).collect();
        batches.push(pb::Batch {
            batch_id: batch_id(key_id, &signals),
            key_id: key_id.to_owned(),
            previous_key_id: String::new(),
            signals,
        });
    }
    batches
}

/// Sends `batches` on one stream, keeping several in flight. `on_ack` is
/// called once per acknowledged batch, in order, with the batch's index and
/// whether it was new; only then may the caller forget the batch.
/// What the aggregator accepts from this partner (`GetIngestPolicy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestPolicy {
    /// Per granted signal type, the first month kept.
    pub first_kept: std::collections::BTreeMap<String, wijkradar_domain::Month>,
    pub current_month: Option<wijkradar_domain::Month>,
}

/// Asks the aggregator what it accepts from this partner.
pub async fn ingest_policy(channel: Channel) -> Result<IngestPolicy, ClientError> {
    let answer = IngestServiceClient::new(channel)
        .get_ingest_policy(pb::GetIngestPolicyRequest {})
        .await
        .map_err(ClientError::Refused)?
        .into_inner();
    Ok(IngestPolicy {
        first_kept: answer
            .signal_types
            .into_iter()
            .filter_map(|t| Some((t.signal_type, t.first_month.parse().ok()?)))
            .collect(),
        current_month: answer.current_month.parse().ok(),
    })
}

/// Whether a refusal concerns the batch itself, so that sending it again
/// would be refused again: a field of the batch at fault, a batch id
/// reused with other content, a batch too large. Not: an outage, the rate
/// limit, or a certificate or grant that refuses every batch.
pub fn refuses_the_batch(status: &tonic::Status) -> bool {
    use tonic::Code;
    use tonic_types::StatusExt;
    let names_the_batch = status.get_details_bad_request().is_some_and(|b| {
        b.field_violations
            .iter()
            .any(|v| v.field.starts_with("batch"))
    });
    match status.code() {
        Code::AlreadyExists => true,
        Code::InvalidArgument | Code::PermissionDenied | Code::FailedPrecondition => {
            names_the_batch
        }
        Code::ResourceExhausted => retry_after(status).is_none() && names_the_batch,
        _ => false,
    }
}

/// How long the aggregator asks to wait, when it refused a batch because
/// the partner is over its rate limit ("… retry in N ms").
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let rest = status.message().split("retry in ").nth(1)?;
    let ms: u64 = rest.split(' ').next()?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms))
}

pub async fn send(
    channel: Channel,
    batches: Vec<pb::Batch>,
    mut on_ack: impl FnMut(usize, pb::BatchOutcome),
) -> Result<SubmitReport, ClientError> {
    let mut client = IngestServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let ids: Vec<String> = batches.iter().map(|b| b.batch_id.clone()).collect();
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        for batch in batches {
            if tx
                .send(pb::SubmitRequest { batch: Some(batch) })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut responses = client
        .submit(ReceiverStream::new(rx))
        .await
        .map_err(ClientError::Refused)?
        .into_inner();
    let mut report = SubmitReport::default();
    while let Some(ack) = responses.message().await.map_err(ClientError::Refused)? {
        if ids.get(report.batches) != Some(&ack.batch_id) {
            return Err(ClientError::Incomplete);
        }
        let outcome = pb::BatchOutcome::try_from(ack.outcome).unwrap_or_default();
        match outcome {
            pb::BatchOutcome::AlreadyStored => report.already_stored += 1,
            _ => report.stored += 1,
        }
        on_ack(report.batches, outcome);
        report.batches += 1;
    }
    if report.batches < ids.len() {
        return Err(ClientError::Incomplete);
    }
    Ok(report)
}

/// Submits `signals` in batches of `batch_size` without an outbox (tests
/// and benchmarks); `progress` is told how many signals are acknowledged.
pub async fn submit(
    channel: Channel,
    signals: Vec<pb::Signal>,
    key_id: &str,
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<SubmitReport, ClientError> {
    let batches = make_batches(signals, key_id, batch_size);
    let sizes: Vec<usize> = batches.iter().map(|b| b.signals.len()).collect();
    let mut acknowledged = 0;
    send(channel, batches, |i, _| {
        acknowledged += sizes[i];
        progress(acknowledged);
    })
    .await
}
