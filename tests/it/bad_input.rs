//! Every kind of bad input gets its precise status, with the field at fault
//! in google.rpc.BadRequest, stores nothing, and the server keeps serving.

use tokio_stream::StreamExt;
use tonic::Code;
use wijkradar_proto::v1 as pb;
use wijkradar_tests::{PARTNER_A, TestServer};

const MAX_SIGNALS: usize = 50;
const MAX_BYTES: usize = 64 * 1024;

fn good(i: u8) -> pb::Signal {
    pb::Signal {
        pseudonym: vec![i; 32],
        buurt_code: "BU00340101".into(),
        signal_type: "huurachterstand".into(),
        month: "2024-03".into(),
        severity: Some(2),
        household_pseudonym: Vec::new(),
        previous_epoch_pseudonym: Vec::new(),
    }
}

fn batch(id: &str, signals: Vec<pb::Signal>) -> pb::Batch {
    pb::Batch {
        batch_id: id.into(),
        key_id: "GM0034.2026.0011223344556677".into(),
        previous_key_id: String::new(),
        signals,
    }
}

/// Three signals with the middle one changed by `f`.
fn with_bad(f: impl FnOnce(&mut pb::Signal)) -> pb::Batch {
    let mut bad = good(2);
    f(&mut bad);
    batch("bad", vec![good(1), bad, good(3)])
}

/// Sends requests on one stream; returns the acknowledgements and the
/// status that ended the stream, if any.
async fn send(
    server: &TestServer,
    requests: Vec<pb::SubmitRequest>,
) -> (Vec<pb::SubmitResponse>, Option<tonic::Status>) {
    let mut client = server.ingest(PARTNER_A).await;
    let mut acks = Vec::new();
    let mut stream = match client.submit(tokio_stream::iter(requests)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return (acks, Some(status)),
    };
    while let Some(answer) = stream.next().await {
        match answer {
            Ok(ack) => acks.push(ack),
            Err(status) => return (acks, Some(status)),
        }
    }
    (acks, None)
}

#[tokio::test]
async fn each_bad_input_gets_its_status_and_field_and_stores_nothing() {
    let server = TestServer::start_with(|c| {
        c.limits.max_batch_signals = MAX_SIGNALS;
        c.limits.max_message_bytes = MAX_BYTES;
    })
    .await;
    let (acks, end) = send(
        &server,
        vec![pb::SubmitRequest {
            batch: Some(batch("first", vec![good(9)])),
        }],
    )
    .await;
    assert_eq!((acks.len(), end.map(|s| s.code())), (1, None));
    let checksum = server.store_checksum();

    let field = |name: &str| format!("batch.signals[1].{name}");
    let cases: Vec<(&str, Option<pb::Batch>, Code, String)> = vec![
        (
            "malformed buurt code",
            Some(with_bad(|s| s.buurt_code = "BU0034010".into())),
            Code::InvalidArgument,
            field("buurt_code"),
        ),
        (
            "wijk code as buurt",
            Some(with_bad(|s| s.buurt_code = "WK003401".into())),
            Code::InvalidArgument,
            field("buurt_code"),
        ),
        (
            "unknown buurt code",
            Some(with_bad(|s| s.buurt_code = "BU00349998".into())),
            Code::InvalidArgument,
            field("buurt_code"),
        ),
        (
            "unknown signal type",
            Some(with_bad(|s| s.signal_type = "onbekend".into())),
            Code::InvalidArgument,
            field("signal_type"),
        ),
        (
            "malformed month",
            Some(with_bad(|s| s.month = "2024-13".into())),
            Code::InvalidArgument,
            field("month"),
        ),
        (
            "month in the future",
            Some(with_bad(|s| s.month = "2099-01".into())),
            Code::InvalidArgument,
            field("month"),
        ),
        (
            "short pseudonym",
            Some(with_bad(|s| s.pseudonym = vec![1; 31])),
            Code::InvalidArgument,
            field("pseudonym"),
        ),
        (
            "long pseudonym",
            Some(with_bad(|s| s.pseudonym = vec![1; 33])),
            Code::InvalidArgument,
            field("pseudonym"),
        ),
        (
            "severity out of range",
            Some(with_bad(|s| s.severity = Some(7))),
            Code::InvalidArgument,
            field("severity"),
        ),
        (
            // 2^32 + 1: cut to 32 bits it would read as 1, a valid severity.
            "severity past 32 bits",
            Some(with_bad(|s| s.severity = Some((1 << 32) + 1))),
            Code::InvalidArgument,
            field("severity"),
        ),
        (
            "empty batch",
            Some(batch("empty", vec![])),
            Code::InvalidArgument,
            "batch.signals".into(),
        ),
        (
            "empty batch id",
            Some(batch("", vec![good(1)])),
            Code::InvalidArgument,
            "batch.batch_id".into(),
        ),
        ("no batch", None, Code::InvalidArgument, "batch".into()),
        (
            "batch over the size limit",
            Some(batch("big", (0..=MAX_SIGNALS as u8).map(good).collect())),
            Code::ResourceExhausted,
            "batch.signals".into(),
        ),
        (
            "oversized message",
            Some(batch(
                "huge",
                (0..40)
                    .map(|i| pb::Signal {
                        pseudonym: vec![i; 2048],
                        ..good(i)
                    })
                    .collect(),
            )),
            Code::ResourceExhausted,
            "batch".into(),
        ),
    ];
    for (name, b, code, want_field) in cases {
        let (acks, end) = send(&server, vec![pb::SubmitRequest { batch: b }]).await;
        let status = end.unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(acks.is_empty(), "{name}");
        assert_eq!(status.code(), code, "{name}: {}", status.message());
        assert_eq!(
            crate::bad_fields(&status).first(),
            Some(&want_field),
            "{name}: {}",
            status.message()
        );
        assert!(
            status.message().contains(&want_field),
            "{name}: the message names the field: {}",
            status.message()
        );
        assert_eq!(server.store_checksum(), checksum, "{name}: nothing stored");
    }

    // Every fault of a batch is reported, not just the first.
    let mut b = with_bad(|s| s.month = "2099-01".into());
    b.signals[2].signal_type = "onbekend".into();
    let (_, end) = send(&server, vec![pb::SubmitRequest { batch: Some(b) }]).await;
    assert_eq!(
        crate::bad_fields(&end.unwrap()),
        ["batch.signals[1].month", "batch.signals[2].signal_type"]
    );

    // The server keeps serving.
    let (acks, end) = send(
        &server,
        vec![pb::SubmitRequest {
            batch: Some(batch("after", vec![good(5)])),
        }],
    )
    .await;
    assert_eq!((acks.len(), end.map(|s| s.code())), (1, None));
}

#[tokio::test]
async fn batch_id_reused_with_other_content_is_refused() {
    let server = TestServer::start().await;
    let (acks, _) = send(
        &server,
        vec![pb::SubmitRequest {
            batch: Some(batch("b-1", vec![good(1)])),
        }],
    )
    .await;
    assert_eq!(acks[0].outcome, pb::BatchOutcome::Stored as i32);
    let checksum = server.store_checksum();
    let (acks, end) = send(
        &server,
        vec![pb::SubmitRequest {
            batch: Some(batch("b-1", vec![good(2)])),
        }],
    )
    .await;
    let status = end.expect("refused");
    assert!(acks.is_empty());
    assert_eq!(status.code(), Code::AlreadyExists, "{}", status.message());
    assert!(status.message().contains("b-1"), "{}", status.message());
    assert_eq!(server.store_checksum(), checksum);
    // The same id with the same content is acknowledged again.
    let (acks, end) = send(
        &server,
        vec![pb::SubmitRequest {
            batch: Some(batch("b-1", vec![good(1)])),
        }],
    )
    .await;
    assert!(end.is_none());
    assert_eq!(acks[0].outcome, pb::BatchOutcome::AlreadyStored as i32);
}

#[tokio::test]
async fn batches_before_a_bad_one_stay_acknowledged_and_stored() {
    let server = TestServer::start().await;
    let empty = server.store_checksum();
    let requests = vec![
        pb::SubmitRequest {
            batch: Some(batch("ok-1", vec![good(1)])),
        },
        pb::SubmitRequest {
            batch: Some(batch("ok-2", vec![good(2)])),
        },
        pb::SubmitRequest {
            batch: Some(with_bad(|s| s.month = "nooit".into())),
        },
        pb::SubmitRequest {
            batch: Some(batch("never-read", vec![good(4)])),
        },
    ];
    let (acks, end) = send(&server, requests).await;
    let ids: Vec<_> = acks.iter().map(|a| a.batch_id.as_str()).collect();
    assert_eq!(ids, ["ok-1", "ok-2"]);
    assert_eq!(end.map(|s| s.code()), Some(Code::InvalidArgument));
    assert_ne!(server.store_checksum(), empty);
}

/// Sends raw bytes as a message: what a broken or hostile client may send.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Clone, Default)]
struct RawEncoder;

#[derive(Debug, Clone, Default)]
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

#[tokio::test]
async fn a_message_that_is_not_protobuf_or_not_utf8_is_an_invalid_argument() {
    let server = TestServer::start().await;
    let mut grpc = tonic::client::Grpc::new(server.channel(wijkradar_tests::ANALYST).await);
    // Field 1 (gemeente_code, a string) as bytes that are not UTF-8; then a
    // length that runs past the end.
    for (what, bytes) in [
        ("invalid UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("truncated", vec![0x0a, 0x10, b'G']),
    ] {
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                tonic::Request::new(bytes),
                "/wijkradar.v1.QueryService/GetCatalogue".parse().unwrap(),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{what}: {}",
            status.message()
        );
        assert!(
            status.message().contains("not valid protobuf"),
            "{what}: {}",
            status.message()
        );
    }
}

/// Refusals are no way to flood the audit log: 100 batches with a reused
/// id are each refused, but logged once, and then as one summary once the
/// window has passed; the server keeps answering meanwhile.
#[tokio::test]
async fn refusals_are_logged_once_per_window_and_then_summed_up() {
    let server = TestServer::start_with(|c| c.limits.refusal_log_window_seconds = 1).await;
    let (acks, _) = send(
        &server,
        vec![pb::SubmitRequest {
            batch: Some(batch("b-1", vec![good(1)])),
        }],
    )
    .await;
    assert_eq!(acks.len(), 1);
    let log = || crate::audit_log(&server);
    let refused = |text: &str| {
        text.lines()
            .filter(|l| l.contains("\"outcome\":\"refused\"") && l.contains("b-1"))
            .count()
    };
    for _ in 0..100 {
        let (_, end) = send(
            &server,
            vec![pb::SubmitRequest {
                batch: Some(batch("b-1", vec![good(2)])),
            }],
        )
        .await;
        assert_eq!(end.expect("refused").code(), Code::AlreadyExists);
    }
    assert_eq!(refused(&log()), 1, "one entry for the first refusal");
    // The window passes; the schedule writes the summary.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let text = log();
    let summary: Vec<&str> = text.lines().filter(|l| l.contains("Refusals")).collect();
    assert_eq!(summary.len(), 1, "{text}");
    assert!(summary[0].contains("99 more refusals"), "{}", summary[0]);
    assert!(summary[0].contains(PARTNER_A));
    // The log still verifies as one chain.
    let report = wijkradar_audit::verify(text.as_bytes(), None);
    assert!(report.is_intact(), "{report:?}");
}

/// A connection that never starts TLS, or stops halfway through the
/// handshake, is closed after `limits.tls_handshake_seconds`; the server
/// keeps answering others meanwhile.
#[tokio::test]
async fn a_connection_without_tls_is_closed_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| c.limits.tls_handshake_seconds = 1).await;
    let addr = server.url().trim_start_matches("https://").to_owned();
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // The first bytes of a TLS ClientHello, and then nothing.
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // Others are served meanwhile.
    let (acks, _) = send(
        &server,
        vec![pb::SubmitRequest {
            batch: Some(batch("while-idle", vec![good(1)])),
        }],
    )
    .await;
    assert_eq!(acks.len(), 1);
    for (what, conn) in [("silent", &mut silent), ("half a handshake", &mut half)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: still open after 10 s"));
        assert!(matches!(read, Ok(0) | Err(_)), "{what}: {read:?}");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A client may hold at most `limits.max_connections_per_client`
/// connections: one more is closed at once; once one closes, the client is
/// served again.
#[tokio::test]
async fn connections_per_client_are_capped() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start_with(|c| c.limits.max_connections_per_client = 3).await;
    let addr = server.url().trim_start_matches("https://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The fourth is closed before TLS.
    let mut fourth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), fourth.read(&mut buf))
        .await
        .expect("closed at once, not left open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // One of the three closes: a real call gets through again.
    drop(held.pop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (acks, end) = send(
        &server,
        vec![pb::SubmitRequest {
            batch: Some(batch("after-cap", vec![good(1)])),
        }],
    )
    .await;
    assert_eq!((acks.len(), end.map(|s| s.code())), (1, None));
}

/// The server reads the date from one clock (`ServerConfig::clock`): fixed
/// at 15 July 2025, it refuses August 2025 as a future month and December
/// 2023 as past its 18 months' retention (kept from January 2024), takes
/// June 2025, and tells the agent so, whatever day the test runs.
#[tokio::test]
async fn the_servers_clock_decides_which_months_are_taken() {
    let server = TestServer::start_with(|c| {
        c.clock = wijkradar_domain::Clock::Fixed(1_752_537_600);
        c.retention.default_months = 18;
    })
    .await;
    let at = |month: &str, i: u8| pb::Signal {
        month: month.into(),
        ..good(i)
    };
    for (month, field) in [("2025-08", "month"), ("2023-12", "month")] {
        let refused = crate::submit(
            server.channel(PARTNER_A).await,
            vec![batch(&format!("b-{month}"), vec![at(month, 1)])],
        )
        .await;
        let status = refused[0]
            .as_ref()
            .expect_err(&format!("{month} is refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{month}: {status:?}");
        assert_eq!(
            crate::bad_fields(status),
            vec![format!("batch.signals[0].{field}")],
            "{month}"
        );
    }
    let taken = crate::submit(
        server.channel(PARTNER_A).await,
        vec![batch("b-2025-06", vec![at("2025-06", 2)])],
    )
    .await;
    assert!(taken[0].is_ok(), "{taken:?}");
    let policy = wijkradar_agent::client::ingest_policy(server.channel(PARTNER_A).await)
        .await
        .unwrap();
    assert_eq!(policy.current_month.unwrap().to_string(), "2025-07");
    assert_eq!(policy.first_kept["huurachterstand"].to_string(), "2024-01");
}

/// A connection that stays open, answering pings, is still closed once it
/// is `limits.max_connection_age_seconds` old (and the grace of
/// `request_timeout_seconds` has passed). With one connection allowed
/// per client, a second one is closed at once while the first lives, and
/// kept (waiting for its TLS handshake) once the first has aged out.
#[tokio::test]
async fn an_idle_connection_is_closed_when_it_is_old() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start_with(|c| {
        c.limits.max_connections_per_client = 1;
        c.limits.max_connection_age_seconds = 2;
        c.limits.keepalive_seconds = 1;
        // The grace after the server asks to close: the client keeps an
        // idle connection open until the server cuts it then.
        c.limits.request_timeout_seconds = 1;
    })
    .await;
    let addr = server.url().trim_start_matches("https://").to_owned();
    let channel = server.channel(PARTNER_A).await;
    let ok = crate::submit(channel.clone(), vec![batch("young", vec![good(1)])]).await;
    assert!(ok[0].is_ok(), "{ok:?}");
    // Closed at once: the client's one connection is in use.
    let closed_at_once = |mut tcp: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(1), tcp.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    };
    let second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(closed_at_once(second).await, "one connection per client");
    // Idle but answering pings, the first connection ages out.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(
        !closed_at_once(third).await,
        "the old connection was closed"
    );
    drop(channel);
}
