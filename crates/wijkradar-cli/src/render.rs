//! Rendering released tables for people: one block per signal type, areas
//! as rows and months as columns, suppressed cells as `<k`; or CSV.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use wijkradar_proto::v1 as pb;

/// Area code → name, from the catalogue.
pub type Names = HashMap<String, String>;

/// One signal type's cells: its name, its months in order, and per area the
/// released value per month (`None`: suppressed).
struct Block {
    signal_type: String,
    months: Vec<String>,
    rows: BTreeMap<String, BTreeMap<String, Option<u64>>>,
}

fn released(cell: &pb::Cell) -> Option<u64> {
    match pb::CellStatus::try_from(cell.status) {
        Ok(pb::CellStatus::Released) => cell.value,
        _ => None,
    }
}

/// A sparkline of the released values, scaled per row; `·` where a month
/// was suppressed, so the line shows nothing the numbers do not.
fn sparkline(values: &[Option<u64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let known: Vec<u64> = values.iter().flatten().copied().collect();
    let (Some(&lo), Some(&hi)) = (known.iter().min(), known.iter().max()) else {
        return "·".repeat(values.len());
    };
    values
        .iter()
        .map(|v| match v {
            None => '·',
            Some(_) if hi == lo => BARS[3],
            Some(v) => BARS[((v - lo) * 7 / (hi - lo)) as usize],
        })
        .collect()
}

/// Areas as rows, the last `numbers` months as numbers and every month of
/// the answer as a sparkline, one block per signal type.
pub fn table(
    resp: &pb::GetTableResponse,
    names: &Names,
    descriptions: &HashMap<String, String>,
    numbers: usize,
) -> String {
    let k = resp.k;
    let mut blocks: Vec<Block> = Vec::new();
    for cell in &resp.cells {
        if blocks.last().map(|b| &b.signal_type) != Some(&cell.signal_type) {
            blocks.push(Block {
                signal_type: cell.signal_type.clone(),
                months: Vec::new(),
                rows: BTreeMap::new(),
            });
        }
        let block = blocks.last_mut().expect("just pushed");
        if !block.months.contains(&cell.month) {
            block.months.push(cell.month.clone());
        }
        block
            .rows
            .entry(cell.area_code.clone())
            .or_default()
            .insert(cell.month.clone(), released(cell));
    }
    let mut out = String::new();
    for block in blocks {
        let label = descriptions
            .get(&block.signal_type)
            .cloned()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{label} ({}), huishoudens per maand; <{k} = minder dan {k}, niet getoond;\n  ter bescherming wijkt elk getal hooguit {} af van de werkelijke telling",
            block.signal_type, resp.max_noise
        );
        let width = block
            .rows
            .keys()
            .map(|c| names.get(c).map_or(0, |n| n.chars().count()))
            .max()
            .unwrap_or(0)
            .clamp(12, 32);
        let shown = &block.months[block.months.len().saturating_sub(numbers)..];
        let trend_width = block.months.len().max(5);
        let trend = format!("verloop {} mnd", block.months.len());
        let _ = write!(out, "{:<10} {:<width$}", "code", "gebied");
        for m in shown {
            let _ = write!(out, " {m:>8}");
        }
        let _ = writeln!(out, "  {trend}");
        for (code, cells) in &block.rows {
            let name: String = names
                .get(code)
                .map(String::as_str)
                .unwrap_or("")
                .chars()
                .take(width)
                .collect();
            let _ = write!(out, "{code:<10} {name:<width$}");
            for m in shown {
                let text = match cells.get(m) {
                    Some(Some(v)) => v.to_string(),
                    Some(None) => format!("<{k}"),
                    None => String::new(),
                };
                let _ = write!(out, " {text:>8}");
            }
            let values: Vec<Option<u64>> = block
                .months
                .iter()
                .map(|m| cells.get(m).copied().flatten())
                .collect();
            let _ = writeln!(out, "  {:<trend_width$}", sparkline(&values));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_shows_released_values_only() {
        assert_eq!(sparkline(&[Some(10), None, Some(20), Some(80)]), "▁·▂█");
        assert_eq!(sparkline(&[None, None]), "··");
        assert_eq!(sparkline(&[Some(12), Some(12)]), "▄▄");
    }
}
