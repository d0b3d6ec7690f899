//! Rendering released tables for people: one block per signal type, areas
//! as rows and months as columns, suppressed cells as `<k`; or CSV.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use wijkradar_proto::v1 as pb;

/// Area code → name, from the catalogue.
pub type Names = HashMap<String, String>;

/// One signal type's cells: its name, its months in order, area → month → text.
type Block = (
    String,
    Vec<String>,
    BTreeMap<String, BTreeMap<String, String>>,
);

fn cell_text(cell: &pb::Cell, k: u32) -> String {
    match (pb::CellStatus::try_from(cell.status), cell.value) {
        (Ok(pb::CellStatus::Released), Some(v)) => v.to_string(),
        _ => format!("<{k}"),
    }
}

pub fn table(
    resp: &pb::GetTableResponse,
    names: &Names,
    descriptions: &HashMap<String, String>,
) -> String {
    let k = resp.k;
    // signal type → area → month → text, in the order the server sent.
    let mut blocks: Vec<Block> = Vec::new();
    for cell in &resp.cells {
        if blocks.last().map(|b| &b.0) != Some(&cell.signal_type) {
            blocks.push((cell.signal_type.clone(), Vec::new(), BTreeMap::new()));
        }
        let block = blocks.last_mut().expect("just pushed");
        if !block.1.contains(&cell.month) {
            block.1.push(cell.month.clone());
        }
        block
            .2
            .entry(cell.area_code.clone())
            .or_default()
            .insert(cell.month.clone(), cell_text(cell, k));
    }
    let mut out = String::new();
    for (signal_type, months, rows) in blocks {
        let label = descriptions.get(&signal_type).cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "{label} ({signal_type}), huishoudens per maand; <{k} = minder dan {k}, niet getoond"
        );
        let width = rows
            .keys()
            .map(|c| names.get(c).map_or(0, |n| n.chars().count()))
            .max()
            .unwrap_or(0)
            .clamp(12, 32);
        let _ = write!(out, "{:<10} {:<width$}", "code", "gebied");
        for m in &months {
            let _ = write!(out, " {m:>8}");
        }
        out.push('\n');
        for (code, cells) in rows {
            let name: String = names
                .get(&code)
                .map(String::as_str)
                .unwrap_or("")
                .chars()
                .take(width)
                .collect();
            let _ = write!(out, "{code:<10} {name:<width$}");
            for m in &months {
                let _ = write!(
                    out,
                    " {:>8}",
                    cells.get(m).map(String::as_str).unwrap_or("")
                );
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

pub fn csv(resp: &pb::GetTableResponse, names: &Names) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "gebied_code",
        "gebied_naam",
        "signaaltype",
        "maand",
        "status",
        "waarde",
    ])?;
    for cell in &resp.cells {
        let released = matches!(
            pb::CellStatus::try_from(cell.status),
            Ok(pb::CellStatus::Released)
        );
        let name = names.get(&cell.area_code).map(String::as_str).unwrap_or("");
        let status = if released {
            "vrijgegeven"
        } else {
            "onderdrukt"
        };
        let value = if released {
            cell.value.map(|v| v.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        w.write_record([
            cell.area_code.as_str(),
            name,
            &cell.signal_type,
            &cell.month,
            status,
            &value,
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
