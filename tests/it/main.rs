//! End-to-end tests of Wijkradar through its real parts: gRPC over mutual
//! TLS on 127.0.0.1:0, sled in temporary directories, the agent library.

mod access;
mod alerts;
mod bad_input;
mod discovery;
mod governance;
mod pipeline;
mod privacy;

use std::collections::BTreeMap;

use wijkradar_proto::v1 as pb;

/// A table as (area, signal type, month) → released value, `None` when suppressed.
pub type Cells = BTreeMap<(String, String, String), Option<u64>>;

pub fn cells(resp: &pb::GetTableResponse) -> Cells {
    resp.cells
        .iter()
        .map(|c| {
            let value = match pb::CellStatus::try_from(c.status).expect("known status") {
                pb::CellStatus::Released => Some(c.value.expect("a released cell has a value")),
                pb::CellStatus::Suppressed => {
                    assert_eq!(c.value, None, "a suppressed cell must carry no value");
                    None
                }
                pb::CellStatus::Unspecified => panic!("unspecified cell status"),
                pb::CellStatus::Pending => panic!("these tests ask for ended months only"),
                pb::CellStatus::Purged => panic!("these tests ask for months within retention"),
            };
            (
                (c.area_code.clone(), c.signal_type.clone(), c.month.clone()),
                value,
            )
        })
        .collect()
}

pub fn table_request(
    level: pb::AreaLevel,
    types: &[&str],
    from: &str,
    to: &str,
) -> pb::GetTableRequest {
    pb::GetTableRequest {
        gemeente_code: "GM0034".into(),
        level: level.into(),
        signal_types: types.iter().map(|t| t.to_string()).collect(),
        from_month: from.into(),
        to_month: to.into(),
        period: pb::Period::Month.into(),
        layout: pb::TableLayout::Cells.into(),
    }
}
