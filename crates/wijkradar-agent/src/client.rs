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
    #[error("the aggregator ended the stream before acknowledging every batch")]
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

/// A batch id derived from the batch's content, stable across runs.
pub fn batch_id(signals: &[pb::Signal]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for s in signals {
        ctx.update(&s.encode_length_delimited_to_vec());
    }
    hex::encode(&ctx.finish().as_ref()[..16])
}

/// Submits `signals` in batches of `batch_size`, keeping several batches in
/// flight; `progress` is told how many signals are acknowledged so far.
pub async fn submit(
    channel: Channel,
    signals: Vec<pb::Signal>,
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<SubmitReport, ClientError> {
    let mut client = IngestServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let batches: Vec<Vec<pb::Signal>> = signals
        .chunks(batch_size.max(1))
        .map(<[_]>::to_vec)
        .collect();
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        for signals in batches {
            let batch = pb::Batch {
                batch_id: batch_id(&signals),
                signals,
            };
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
    let mut acknowledged = 0;
    while let Some(ack) = responses.message().await.map_err(ClientError::Refused)? {
        match pb::BatchOutcome::try_from(ack.outcome) {
            Ok(pb::BatchOutcome::AlreadyStored) => report.already_stored += 1,
            _ => report.stored += 1,
        }
        acknowledged += sizes.get(report.batches).copied().unwrap_or(0);
        report.batches += 1;
        progress(acknowledged);
    }
    if report.batches < sizes.len() {
        return Err(ClientError::Incomplete);
    }
    Ok(report)
}
