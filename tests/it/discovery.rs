//! gRPC health and reflection (v1 and v1alpha), so that grpcurl and other
//! clients can find the services.

use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};
use wijkradar_tests::{ANALYST, TestServer};

#[tokio::test]
async fn health_reports_both_services_serving() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel(ANALYST).await);
    for service in ["wijkradar.v1.IngestService", "wijkradar.v1.QueryService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service}");
    }
}

/// The service names a reflection client of version `$v` lists; the two
/// versions' generated types differ only in their module.
macro_rules! listed_services {
    ($v:ident, $channel:expr) => {{
        let mut client = $v::server_reflection_client::ServerReflectionClient::new($channel);
        let request = $v::ServerReflectionRequest {
            host: String::new(),
            message_request: Some($v::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match answers.next().await.unwrap().unwrap().message_response {
            Some($v::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("not a service list: {other:?}"),
        }
    }};
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let server = TestServer::start().await;
    let want = [
        "wijkradar.v1.IngestService",
        "wijkradar.v1.QueryService",
        "grpc.health.v1.Health",
    ];
    let v1_names = listed_services!(v1, server.channel(ANALYST).await);
    let v1alpha_names = listed_services!(v1alpha, server.channel(ANALYST).await);
    for names in [v1_names, v1alpha_names] {
        assert!(
            want.iter().all(|w| names.iter().any(|n| n == w)),
            "{names:?}"
        );
    }
}
