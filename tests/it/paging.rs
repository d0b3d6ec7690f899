//! Large tables over gRPC: a whole cells answer over the 4 MiB that gRPC
//! clients take by default is refused with what to do instead; pages of it
//! each fit, follow each other by token, and together are the table.

use tonic::Code;
use wijkradar_proto::v1 as pb;
use wijkradar_proto::v1::query_service_client::QueryServiceClient;
use wijkradar_tests::{ANALYST, PARTNER_A, TestServer, current_month};

use crate::{batch, submit, table_request};

#[tokio::test]
async fn a_large_cells_table_comes_in_pages_of_at_most_four_mib() {
    let server = TestServer::start().await;
    let last = current_month().plus(-1);
    let first = last.plus(-35);
    let sent = submit(
        server.channel(PARTNER_A).await,
        vec![batch(
            "p-1",
            "huurachterstand",
            "BU00340101",
            &last.to_string(),
            1,
            30,
        )],
    )
    .await;
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    // Every buurt of Almere, every type and derived indicator, 36 months.
    let request = || {
        table_request(
            pb::AreaLevel::Buurt,
            &[],
            &first.to_string(),
            &last.to_string(),
        )
    };
    // A client with gRPC's default limit of 4 MiB.
    let mut client = QueryServiceClient::new(server.channel(ANALYST).await);
    let whole = client.get_table(request()).await.unwrap_err();
    assert_eq!(whole.code(), Code::ResourceExhausted, "{whole:?}");
    assert_eq!(crate::bad_fields(&whole), ["page_size"]);
    assert!(
        whole.message().contains("TABLE_LAYOUT_COLUMNS"),
        "{}",
        whole.message()
    );
    // Pages, each under the default limit, in order, until the token ends.
    let (cells, pages) = crate::all_pages(&mut client, request()).await;
    assert!(pages >= 3, "{pages} pages");
    // Together they are the table, as the columns layout gives it whole.
    let mut columns = request();
    columns.layout = pb::TableLayout::Columns.into();
    let compact = client.get_table(columns).await.unwrap().into_inner();
    let expected = compact.columns.expect("columns").cells();
    assert_eq!(cells, expected);
    // A token is bound to its request.
    let mut other = request();
    other.signal_types = vec!["huurachterstand".into()];
    other.page_size = 20_000;
    other.page_token = token_of(&mut client, request()).await;
    let refused = client.get_table(other).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("page_token"),
        "{}",
        refused.message()
    );
}

async fn token_of(
    client: &mut QueryServiceClient<tonic::transport::Channel>,
    mut r: pb::GetTableRequest,
) -> String {
    r.page_size = 20_000;
    client
        .get_table(r)
        .await
        .unwrap()
        .into_inner()
        .next_page_token
}
