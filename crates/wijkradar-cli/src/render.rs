//! Rendering released tables for people: one block per signal type, areas
//! as rows and months as columns, suppressed cells as `<k`; or CSV.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use wijkradar_proto::v1 as pb;

/// Area code → name, from the catalogue.
pub type Names = HashMap<String, String>;

/// One signal type's cells: its name, its months in order, and per area
/// what is shown per month.
struct Block {
    signal_type: String,
    months: Vec<String>,
    rows: BTreeMap<String, BTreeMap<String, Shown>>,
}

/// One cell as shown: a count, or a rate per 1,000 (`rolled_up` when it is
/// the wijk's); `None` when suppressed or without a rate.
#[derive(Debug, Clone, Copy)]
struct Shown {
    number: Option<f64>,
    suppressed: bool,
    rolled_up: bool,
    /// Its months span a key change the aggregator could not link.
    crosses: bool,
}

/// What a table shows in its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Households,
    Per1000,
}

fn shown(cell: &pb::Cell, measure: Measure) -> Shown {
    let released = match pb::CellStatus::try_from(cell.status) {
        Ok(pb::CellStatus::Released) => cell.value,
        // The month has not ended, or is past retention: nothing to show,
        // and nothing suppressed.
        Ok(pb::CellStatus::Pending | pb::CellStatus::Purged) => {
            return Shown {
                number: None,
                suppressed: false,
                rolled_up: false,
                crosses: false,
            };
        }
        _ => None,
    };
    match measure {
        Measure::Households => Shown {
            number: released.map(|v| v as f64),
            suppressed: released.is_none(),
            rolled_up: false,
            crosses: cell.crosses_key_change,
        },
        Measure::Per1000 => Shown {
            number: cell.rate_per_1000,
            suppressed: released.is_none() && cell.rate_per_1000.is_none(),
            rolled_up: cell.rate_per_1000.is_some() && cell.rate_area_code != cell.area_code,
            crosses: cell.crosses_key_change,
        },
    }
}

/// A sparkline of the released values, scaled per row; `·` where a month
/// was suppressed, so the line shows nothing the numbers do not.
fn sparkline(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    let lo = known.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = known.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if known.is_empty() {
        return "·".repeat(values.len());
    }
    values
        .iter()
        .map(|v| match v {
            None => '·',
            Some(_) if hi == lo => BARS[3],
            Some(v) => BARS[(((v - lo) * 7.0 / (hi - lo)).round() as usize).min(7)],
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
    measure: Measure,
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
            .insert(cell.month.clone(), shown(cell, measure));
    }
    let mut out = String::new();
    for block in blocks {
        let label = descriptions
            .get(&block.signal_type)
            .cloned()
            .unwrap_or_default();
        let what = match measure {
            Measure::Households => "huishoudens per maand",
            Measure::Per1000 => "per 1.000 huishoudens per maand",
        };
        if resp.open_data_epsilon > 0.0 {
            let scale = (2.0 / resp.open_data_epsilon).round() as u64;
            let _ = writeln!(
                out,
                "{label} ({}), {what}; open data met differentiële privacy (ε {} per tabel):\n  elk getal heeft toevallige ruis, gemiddeld {:.0} huishoudens ernaast; onder 0 wordt 0",
                block.signal_type,
                resp.open_data_epsilon,
                wijkradar_release::open::variance(scale).sqrt()
            );
        } else {
            let _ = writeln!(
                out,
                "{label} ({}), {what}; <{k} = minder dan {k} huishoudens, niet getoond;\n  ter bescherming wijkt elk aantal hooguit {} af van de werkelijke telling",
                block.signal_type, resp.max_noise
            );
        }
        if measure == Measure::Per1000 {
            let _ = writeln!(
                out,
                "  * = cijfer van de wijk (buurt kleiner dan {} huishoudens of onbekend); - = geen cijfer; basis: {}",
                resp.rate_floor, resp.household_base_measure
            );
        }
        let width = block
            .rows
            .keys()
            .map(|c| names.get(c).map_or(0, |n| n.chars().count()))
            .max()
            .unwrap_or(0)
            .clamp(12, 32);
        let shown = &block.months[block.months.len().saturating_sub(numbers)..];
        let trend_width = block.months.len().max(5);
        let monthly = block
            .months
            .iter()
            .all(|m| m.len() == 7 && !m.contains('Q'));
        let trend = format!(
            "verloop {} {}",
            block.months.len(),
            if monthly { "mnd" } else { "perioden" }
        );
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
                    Some(Shown {
                        number: Some(v),
                        rolled_up,
                        crosses,
                        ..
                    }) => {
                        let mark = if *crosses { "†" } else { "" };
                        match measure {
                            Measure::Households => format!("{v:.0}{mark}"),
                            Measure::Per1000 => {
                                format!("{v:.1}{}{mark}", if *rolled_up { "*" } else { "" })
                            }
                        }
                    }
                    Some(Shown {
                        suppressed: true, ..
                    }) => format!("<{k}"),
                    Some(_) => "-".to_owned(),
                    None => String::new(),
                };
                let _ = write!(out, " {text:>8}");
            }
            let values: Vec<Option<f64>> = block
                .months
                .iter()
                .map(|m| cells.get(m).and_then(|c| c.number))
                .collect();
            let _ = writeln!(out, "  {:<trend_width$}", sparkline(&values));
        }
        if block
            .rows
            .values()
            .flat_map(|c| c.values())
            .any(|c| c.crosses)
        {
            let _ = writeln!(out, "{KEY_CHANGE}");
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
        "per_1000_huishoudens",
        "per_1000_van_gebied",
        "huishoudens_basis",
        "over_sleutelwissel",
    ])?;
    for cell in &resp.cells {
        let released = matches!(
            pb::CellStatus::try_from(cell.status),
            Ok(pb::CellStatus::Released)
        );
        let name = names.get(&cell.area_code).map(String::as_str).unwrap_or("");
        let status = match pb::CellStatus::try_from(cell.status) {
            Ok(pb::CellStatus::Released) => "vrijgegeven",
            Ok(pb::CellStatus::Pending) => "maand_nog_niet_voorbij",
            Ok(pb::CellStatus::Purged) => "verwijderd_bewaartermijn",
            _ => "onderdrukt",
        };
        let value = if released {
            cell.value.map(|v| v.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let rate = cell
            .rate_per_1000
            .map(|r| format!("{r:.2}"))
            .unwrap_or_default();
        let rate_area = if cell.rate_per_1000.is_some() {
            cell.rate_area_code.as_str()
        } else {
            ""
        };
        let base = cell
            .household_base
            .map(|b| b.to_string())
            .unwrap_or_default();
        w.write_record([
            cell.area_code.as_str(),
            name,
            &cell.signal_type,
            &cell.month,
            status,
            &value,
            &rate,
            rate_area,
            &base,
            if cell.crosses_key_change { "ja" } else { "nee" },
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// The month's alerts as a ranked table (Dutch).
pub fn alerts(
    a: &pb::GetAlertsResponse,
    names: &Names,
    descriptions: &HashMap<String, String>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Signalen van stijging in {}: {} reeksen getoetst, {} opvallend (false discovery rate {:.0}% per niveau)",
        a.month,
        a.series_tested,
        a.alerts.len(),
        a.false_discovery_rate * 100.0
    );
    if a.alerts.is_empty() {
        let _ = writeln!(out, "Geen gebied valt deze maand op.");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<3} {:<11} {:<24} {:<28} {:<17} {:>8} {:>8} {:>9} {:>7}  methode",
        "#", "code", "gebied", "signaal", "periode", "gemeten", "verwacht", "grens", "q"
    );
    for (i, alert) in a.alerts.iter().enumerate() {
        let name: String = names
            .get(&alert.area_code)
            .map_or("?", String::as_str)
            .chars()
            .take(24)
            .collect();
        let what: String = descriptions
            .get(&alert.signal_type)
            .map_or(alert.signal_type.as_str(), String::as_str)
            .chars()
            .take(28)
            .collect();
        let _ = writeln!(
            out,
            "{:<3} {:<11} {:<24} {:<28} {:<17} {:>8} {:>8.1} {:>9.1} {:>7.4}  {}",
            i + 1,
            alert.area_code,
            name,
            what,
            window_text(&alert.window_first_month, &alert.month),
            alert.released_value,
            alert.expected,
            alert.threshold,
            alert.q_value,
            alert.method
        );
        if alert.crosses_key_change {
            let _ = writeln!(out, "    † {KEY_CHANGE_ALERT}");
        }
    }
    let _ = writeln!(
        out,
        "periode = de maanden die samen zijn geteld (een stijging van kleine aantallen valt vaak pas over enkele maanden op).\ngemeten = vrijgegeven aantal verschillende huishoudens in die periode (wijkt hooguit {} af van de werkelijke telling); alleen gebieden waarvan de cel is vrijgegeven (k = {}).",
        a.max_noise, a.k
    );
    out
}

/// Below a table with a cell over a key change that was not linked.
const KEY_CHANGE: &str = "† = deze periode valt over een wissel van pseudonimiseringssleutel die niet is gekoppeld: een huishouden kan dubbel of juist niet samen zijn geteld, het cijfer kan te hoog of te laag zijn.";

/// Under an alert whose series spans such a change.
const KEY_CHANGE_ALERT: &str = "de vergeleken maanden vallen over een sleutelwissel die niet is gekoppeld: de stijging kan daardoor komen.";

/// The months of an alert's window: `2026-07` for one month, else
/// `2026-02 t/m 2026-07`.
fn window_text(first: &str, last: &str) -> String {
    if first == last || first.is_empty() {
        last.to_owned()
    } else {
        format!("{first} t/m {last}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_shows_released_values_only() {
        assert_eq!(
            sparkline(&[Some(10.0), None, Some(20.0), Some(80.0)]),
            "▁·▂█"
        );
        assert_eq!(sparkline(&[None, None]), "··");
        assert_eq!(sparkline(&[Some(12.0), Some(12.0)]), "▄▄");
    }

    #[test]
    fn a_figure_over_an_unlinked_key_change_is_marked_and_explained() {
        let cell = |month: &str, crosses: bool| pb::Cell {
            area_code: "WK003401".into(),
            signal_type: "meerdere_signaaltypen_6m".into(),
            month: month.into(),
            status: pb::CellStatus::Released.into(),
            value: Some(24),
            rate_area_code: "WK003401".into(),
            crosses_key_change: crosses,
            ..Default::default()
        };
        let table = |cells| {
            let resp = pb::GetTableResponse {
                cells,
                k: 10,
                max_noise: 4,
                ..Default::default()
            };
            table(
                &resp,
                &Names::new(),
                &HashMap::new(),
                6,
                Measure::Households,
            )
        };
        let marked = table(vec![cell("2026-01", false), cell("2026-02", true)]);
        assert!(
            marked.contains("      24 ") && marked.contains("     24†"),
            "{marked}"
        );
        assert!(marked.contains(KEY_CHANGE), "{marked}");
        let plain = table(vec![cell("2026-01", false)]);
        assert!(!plain.contains('†'), "{plain}");
    }
}
