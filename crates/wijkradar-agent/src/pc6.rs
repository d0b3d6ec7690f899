//! The postcode + house number → buurt table in CBS's published layout
//! (`PC6,Huisnummer,Buurt20xx,Wijk20xx,Gem20xx`, comma or semicolon, codes
//! without their `BU`/`WK`/`GM` prefix and sometimes without leading zeros).

use std::collections::HashMap;
use std::io::Read;

use wijkradar_domain::BuurtCode;

use crate::normalise;

#[derive(Debug, thiserror::Error)]
pub enum Pc6Error {
    #[error("postcode table: {0}")]
    Csv(#[from] csv::Error),
    #[error(
        "postcode table: the header must start with PC6, Huisnummer and a Buurt20xx column, got `{0}`"
    )]
    Header(String),
    #[error("postcode table line {line}: {reason}")]
    Row { line: u64, reason: String },
}

/// Address → buurt, loaded once, looked up in constant time.
#[derive(Debug, Default)]
pub struct Pc6Table {
    map: HashMap<([u8; 6], u32), BuurtCode>,
}

fn pad_code(raw: &str, width: usize) -> String {
    let raw = raw.trim();
    format!("{}{raw}", "0".repeat(width.saturating_sub(raw.len())))
}

impl Pc6Table {
    pub fn from_reader(reader: impl Read) -> Result<Pc6Table, Pc6Error> {
        let mut csv = crate::csv_input::reader(reader).map_err(csv::Error::from)?;
        let header = csv.headers()?.clone();
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim().trim_matches('"').to_ascii_lowercase())
            .collect();
        if names.len() < 3
            || names[0] != "pc6"
            || names[1] != "huisnummer"
            || !names[2].starts_with("buurt")
        {
            return Err(Pc6Error::Header(
                header.iter().collect::<Vec<_>>().join(","),
            ));
        }
        let mut table = Pc6Table::default();
        for record in csv.records() {
            let record = record?;
            let line = record.position().map_or(0, |p| p.line());
            let row = |reason: String| Pc6Error::Row { line, reason };
            let pc = normalise::postcode(&record[0]).map_err(|e| row(e.to_string()))?;
            let number = normalise::house_number(&record[1]).map_err(|e| row(e.to_string()))?;
            let buurt: BuurtCode = format!("BU{}", pad_code(&record[2], 8))
                .parse()
                .map_err(|e| row(format!("buurt code: {e}")))?;
            table.map.insert((pc, number), buurt);
        }
        Ok(table)
    }

    pub fn buurt(&self, pc: &[u8; 6], number: u32) -> Option<BuurtCode> {
        self.map.get(&(*pc, number)).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_published_layouts() {
        let comma = "PC6,Huisnummer,Buurt2024,Wijk2024,Gem2024\n1315AB,12,00340101,003401,0034\n1315AB,14,340102,3401,34\n";
        let t = Pc6Table::from_reader(comma.as_bytes()).unwrap();
        assert_eq!(t.buurt(b"1315AB", 12).unwrap().to_string(), "BU00340101");
        assert_eq!(t.buurt(b"1315AB", 14).unwrap().to_string(), "BU00340102");
        assert!(t.buurt(b"1315AB", 16).is_none());
        let semi = "PC6;Huisnummer;Buurt2022;Wijk2022;Gem2022\r\n1011AB;1;0363AF09;0363AF;0363\r\n";
        let t = Pc6Table::from_reader(semi.as_bytes()).unwrap();
        assert_eq!(t.buurt(b"1011AB", 1).unwrap().to_string(), "BU0363AF09");
    }

    #[test]
    fn a_bad_row_names_its_line() {
        for bad in [
            "PC6,Huisnummer,Buurt2024\n1315AB,12,00340101\n13X5AB,1,00340101\n",
            "PC6,Huisnummer,Buurt2024\r\n1315AB,12,00340101\r\n13X5AB,1,00340101\r\n",
        ] {
            let err = Pc6Table::from_reader(bad.as_bytes()).unwrap_err();
            assert!(matches!(err, Pc6Error::Row { line: 3, .. }), "{err}");
        }
        assert!(matches!(
            Pc6Table::from_reader("a,b,c\n".as_bytes()),
            Err(Pc6Error::Header(_))
        ));
    }
}
