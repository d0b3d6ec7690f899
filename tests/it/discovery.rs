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

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let server = TestServer::start().await;
    let want = ["wijkradar.v1.IngestService", "wijkradar.v1.QueryService"];

    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel(ANALYST).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        want.iter().all(|w| names.iter().any(|n| n == w)),
        "{names:?}"
    );

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(
        server.channel(ANALYST).await,
    );
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        want.iter().all(|w| names.iter().any(|n| n == w)),
        "{names:?}"
    );
}
