//! The CBS area hierarchy (gemeente → wijk → buurt) with names, parsed from
//! the code lists CBS publishes: tab-separated, CRLF, Latin-1 bytes.
//!
//! The 2023 lists of all of the Netherlands are embedded (Bron: CBS, CC BY 4.0),
//! so a fresh clone needs no download. Latin-1 maps every byte to one char, so
//! decoding never fails. One byte is wrong at the source: BU00341807 reads
//! `Lumi\u{de}repark` (Þ for è); [`CORRECTED`] names it as users know it.

use std::collections::BTreeMap;

use crate::area::{AreaCode, AreaError, AreaLevel, BuurtCode, GemeenteCode, WijkCode};

/// Names CBS published with a wrong byte, as the area is known: code, the
/// name as published (decoded as Latin-1), the name.
pub const CORRECTED: &[(&str, &str, &str)] =
    &[("BU00341807", "Lumi\u{de}repark", "Lumi\u{e8}repark")];

/// The embedded CBS files, byte for byte as published.
pub mod cbs {
    pub const GEMEENTEN_2023: &[u8] = include_bytes!("../../../data/cbs/gemeenten_2023.csv");
    pub const WIJKEN_2023: &[u8] = include_bytes!("../../../data/cbs/wijk_2023.csv");
    pub const BUURTEN_2023: &[u8] = include_bytes!("../../../data/cbs/buurt_2023.csv");
    /// Kerncijfers wijken en buurten 2024 (table 85984NED), gemeente and wijk level.
    pub const KWB_2024_GEMEENTE_WIJK: &[u8] =
        include_bytes!("../../../data/cbs/kwb_2024_gemeente_wijk.json");
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HierarchyError {
    #[error("{file} line {line}: expected header `{expected}`")]
    Header {
        file: &'static str,
        line: usize,
        expected: &'static str,
    },
    #[error("{file} line {line}: expected 2 tab-separated columns")]
    Columns { file: &'static str, line: usize },
    #[error("{file} line {line}: area code: {source}")]
    Code {
        file: &'static str,
        line: usize,
        source: AreaError,
    },
    #[error("{file} line {line}: {code} appears twice")]
    Duplicate {
        file: &'static str,
        line: usize,
        code: String,
    },
    #[error("{file} line {line}: {code} lies in {parent}, which is not in the list")]
    Orphan {
        file: &'static str,
        line: usize,
        code: String,
        parent: String,
    },
    #[error("kerncijfers: {0}")]
    Kwb(String),
}

/// One area with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    pub code: AreaCode,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct Hierarchy {
    gemeenten: BTreeMap<GemeenteCode, String>,
    wijken: BTreeMap<WijkCode, String>,
    buurten: BTreeMap<BuurtCode, String>,
    outside: Vec<Area>,
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// Rows of a two-column CBS code list, header checked, line numbers 1-based.
fn rows<'a>(
    file: &'static str,
    bytes: &'a [u8],
    header: &'static str,
) -> impl Iterator<Item = Result<(usize, String, String), HierarchyError>> + 'a {
    let mut lines = bytes.split(|&b| b == b'\n').enumerate();
    let header_ok = lines
        .next()
        .map(|(_, l)| latin1(l.strip_suffix(b"\r").unwrap_or(l)) == header)
        .unwrap_or(false);
    let head = (!header_ok).then_some(Err(HierarchyError::Header {
        file,
        line: 1,
        expected: header,
    }));
    head.into_iter().chain(lines.filter_map(move |(i, raw)| {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            return None;
        }
        let line = i + 1;
        let text = latin1(raw);
        let mut cols = text.splitn(2, '\t');
        match (cols.next(), cols.next()) {
            (Some(code), Some(name)) => Some(Ok((line, code.to_owned(), name.to_owned()))),
            _ => Some(Err(HierarchyError::Columns { file, line })),
        }
    }))
}

impl Hierarchy {
    /// The 2023 classification of all of the Netherlands (342 gemeenten,
    /// 3,433 wijken, 14,514 buurten, plus "Buitenland" set apart).
    pub fn netherlands_2023() -> Self {
        Self::parse(cbs::GEMEENTEN_2023, cbs::WIJKEN_2023, cbs::BUURTEN_2023)
            .expect("the embedded CBS 2023 code lists are consistent")
    }

    /// Parses the three code lists. Every buurt must lie in a listed wijk.
    /// Wijken and buurten of a gemeente that is not listed (CBS's pseudo-area
    /// `WK099899` "Buitenland") are set apart in [`Hierarchy::outside`].
    pub fn parse(gemeenten: &[u8], wijken: &[u8], buurten: &[u8]) -> Result<Self, HierarchyError> {
        let mut h = Hierarchy::default();
        for row in rows("gemeenten", gemeenten, "GM_CODE\tGM_NAAM") {
            let (line, code, name) = row?;
            let c: GemeenteCode = code.parse().map_err(|source| HierarchyError::Code {
                file: "gemeenten",
                line,
                source,
            })?;
            if h.gemeenten.insert(c, name).is_some() {
                return Err(HierarchyError::Duplicate {
                    file: "gemeenten",
                    line,
                    code,
                });
            }
        }
        for row in rows("wijken", wijken, "WK_CODE\tWK_NAAM") {
            let (line, code, name) = row?;
            let c: WijkCode = code.parse().map_err(|source| HierarchyError::Code {
                file: "wijken",
                line,
                source,
            })?;
            if !h.gemeenten.contains_key(&c.gemeente()) {
                h.outside.push(Area {
                    code: AreaCode::Wijk(c),
                    name,
                });
                continue;
            }
            if h.wijken.insert(c, name).is_some() {
                return Err(HierarchyError::Duplicate {
                    file: "wijken",
                    line,
                    code,
                });
            }
        }
        for row in rows("buurten", buurten, "BU_CODE\tBU_NAAM") {
            let (line, code, mut name) = row?;
            if let Some((_, _, right)) = CORRECTED
                .iter()
                .find(|(c, wrong, _)| *c == code && *wrong == name)
            {
                name = (*right).to_owned();
            }
            let c: BuurtCode = code.parse().map_err(|source| HierarchyError::Code {
                file: "buurten",
                line,
                source,
            })?;
            if !h.gemeenten.contains_key(&c.gemeente()) {
                h.outside.push(Area {
                    code: AreaCode::Buurt(c),
                    name,
                });
                continue;
            }
            if !h.wijken.contains_key(&c.wijk()) {
                return Err(HierarchyError::Orphan {
                    file: "buurten",
                    line,
                    code,
                    parent: c.wijk().to_string(),
                });
            }
            if h.buurten.insert(c, name).is_some() {
                return Err(HierarchyError::Duplicate {
                    file: "buurten",
                    line,
                    code,
                });
            }
        }
        Ok(h)
    }

    /// Areas in the lists whose gemeente is not listed; not part of the hierarchy.
    pub fn outside(&self) -> &[Area] {
        &self.outside
    }

    pub fn len(&self, level: AreaLevel) -> usize {
        match level {
            AreaLevel::Gemeente => self.gemeenten.len(),
            AreaLevel::Wijk => self.wijken.len(),
            AreaLevel::Buurt => self.buurten.len(),
        }
    }

    pub fn contains(&self, code: AreaCode) -> bool {
        self.name(code).is_some()
    }

    pub fn name(&self, code: AreaCode) -> Option<&str> {
        match code {
            AreaCode::Gemeente(c) => self.gemeenten.get(&c),
            AreaCode::Wijk(c) => self.wijken.get(&c),
            AreaCode::Buurt(c) => self.buurten.get(&c),
        }
        .map(String::as_str)
    }

    pub fn wijken_of(&self, g: GemeenteCode) -> impl Iterator<Item = WijkCode> + '_ {
        self.wijken
            .keys()
            .copied()
            .filter(move |w| w.gemeente() == g)
    }

    pub fn buurten_of_wijk(&self, w: WijkCode) -> impl Iterator<Item = BuurtCode> + '_ {
        self.buurten.keys().copied().filter(move |b| b.wijk() == w)
    }

    pub fn buurten_of(&self, g: GemeenteCode) -> impl Iterator<Item = BuurtCode> + '_ {
        self.buurten
            .keys()
            .copied()
            .filter(move |b| b.gemeente() == g)
    }

    /// The areas of one level inside a gemeente, in code order.
    pub fn areas_of(&self, g: GemeenteCode, level: AreaLevel) -> Vec<AreaCode> {
        match level {
            AreaLevel::Gemeente => self
                .gemeenten
                .contains_key(&g)
                .then_some(AreaCode::Gemeente(g))
                .into_iter()
                .collect(),
            AreaLevel::Wijk => self.wijken_of(g).map(AreaCode::Wijk).collect(),
            AreaLevel::Buurt => self.buurten_of(g).map(AreaCode::Buurt).collect(),
        }
    }

    /// Every gemeente of the country, in code order.
    pub fn gemeenten(&self) -> impl Iterator<Item = GemeenteCode> + '_ {
        self.gemeenten.keys().copied()
    }

    /// Every buurt of the country, in code order.
    pub fn buurten(&self) -> impl Iterator<Item = BuurtCode> + '_ {
        self.buurten.keys().copied()
    }

    /// Every area of the country: gemeenten, wijken, then buurten.
    pub fn all_of_country(&self) -> impl Iterator<Item = AreaCode> + '_ {
        let g = self.gemeenten().map(AreaCode::Gemeente);
        let w = self.wijken.keys().copied().map(AreaCode::Wijk);
        g.chain(w).chain(self.buurten().map(AreaCode::Buurt))
    }

    /// Every area of a gemeente, gemeente first, then wijken, then buurten.
    pub fn all_of(&self, g: GemeenteCode) -> Vec<Area> {
        [AreaLevel::Gemeente, AreaLevel::Wijk, AreaLevel::Buurt]
            .into_iter()
            .flat_map(|level| self.areas_of(g, level))
            .map(|code| Area {
                code,
                name: self.name(code).unwrap_or_default().to_owned(),
            })
            .collect()
    }
}

/// A household base per area from the CBS Kerncijfers wijken en buurten:
/// dwellings (`Woningvoorraad_35`), or private households
/// (`HuishoudensTotaal_29`) where the file has them. Codes that do not parse
/// or values CBS left out (`null`, `.`) are returned apart, so a caller can
/// report them instead of dropping them.
#[derive(Debug, Clone, Default)]
pub struct Dwellings {
    pub per_area: BTreeMap<AreaCode, u64>,
    pub unusable: Vec<String>,
    /// The column the figures came from.
    pub measure: String,
}

impl Dwellings {
    pub fn kwb_2024() -> Self {
        Self::parse_kwb_json(cbs::KWB_2024_GEMEENTE_WIJK)
            .expect("the embedded CBS 2024 figures parse")
    }

    pub fn parse_kwb_json(bytes: &[u8]) -> Result<Self, HierarchyError> {
        let map: BTreeMap<String, BTreeMap<String, Option<f64>>> =
            serde_json::from_slice(bytes).map_err(|e| HierarchyError::Kwb(e.to_string()))?;
        let mut out = Dwellings {
            measure: "Woningvoorraad_35".into(),
            ..Dwellings::default()
        };
        for (code, figures) in map {
            match (
                code.parse::<AreaCode>(),
                figures.get("Woningvoorraad_35").copied().flatten(),
            ) {
                (Ok(c), Some(v)) if v >= 0.0 => {
                    out.per_area.insert(c, v as u64);
                }
                _ => out.unusable.push(code),
            }
        }
        Ok(out)
    }
}

impl Dwellings {
    /// Reads a Kerncijfers CSV as CBS publishes it: the OData download
    /// (`Codering_3`, `Woningvoorraad_35`, `HuishoudensTotaal_29`) or the
    /// StatLine "CSV met statistische symbolen" (Dutch column titles,
    /// semicolons, codes padded with spaces, `.` for a figure CBS does not
    /// publish). Households are used where present, else dwellings.
    pub fn parse_kwb_csv(bytes: &[u8]) -> Result<Self, HierarchyError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let header_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let delimiter = if header_line.contains(&b';') {
            b';'
        } else {
            b','
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .from_reader(bytes);
        let err = |e: csv::Error| HierarchyError::Kwb(e.to_string());
        let headers: Vec<String> = reader
            .headers()
            .map_err(err)?
            .iter()
            .map(|h| h.trim().to_lowercase())
            .collect();
        let find = |needles: &[&str]| {
            headers
                .iter()
                .position(|h| needles.iter().any(|n| h.contains(n)))
        };
        let code = find(&["codering", "regiocode"])
            .or_else(|| find(&["wijkenenbuurten", "wijken en buurten"]));
        let households = find(&[
            "huishoudenstotaal",
            "particuliere huishoudens",
            "huishoudens totaal",
        ]);
        let base = households.or_else(|| find(&["woningvoorraad"]));
        let (Some(code), Some(base)) = (code, base) else {
            return Err(HierarchyError::Kwb(
                "line 1: expected a code column (Codering_3) and Woningvoorraad_35 or HuishoudensTotaal_29".into(),
            ));
        };
        let raw_headers = reader.headers().map_err(err)?.clone();
        let mut out = Dwellings {
            measure: raw_headers.get(base).unwrap_or("").trim().to_owned(),
            ..Dwellings::default()
        };
        for record in reader.records() {
            let record = record.map_err(err)?;
            let code_text = record.get(code).unwrap_or("").trim().to_owned();
            let value = record.get(base).unwrap_or("").trim().replace(' ', "");
            match (code_text.parse::<AreaCode>(), value.parse::<f64>()) {
                (Ok(c), Ok(v)) if v >= 0.0 && v.fract() == 0.0 => {
                    out.per_area.insert(c, v as u64);
                }
                _ => out.unusable.push(code_text),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_kerncijfers_csv_with_its_statistical_symbols() {
        // The StatLine layout: quoted Dutch titles, semicolons, padded codes, `.`.
        let statline = "\"ID\";\"Wijken en buurten\";\"Regioaanduiding/Codering (code)\";\"Huishoudens/Particuliere huishoudens (aantal)\"\r\n\
            \"1\";\"Almere\";\"GM0034    \";\"98765\"\r\n\
            \"2\";\"Haven\";\"BU00340101\";\"   .\"\r\n\
            \"3\";\"Centrum\";\"BU00340102\";\"  405\"\r\n\
            \"4\";\"Nederland\";\"NL01      \";\"8000000\"\r\n";
        let d = Dwellings::parse_kwb_csv(statline.as_bytes()).unwrap();
        assert_eq!(d.measure, "Huishoudens/Particuliere huishoudens (aantal)");
        assert_eq!(d.per_area.get(&"GM0034".parse().unwrap()), Some(&98_765));
        assert_eq!(d.per_area.get(&"BU00340102".parse().unwrap()), Some(&405));
        assert_eq!(d.unusable, ["BU00340101", "NL01"]);
        // The OData layout, dwellings only.
        let odata = "ID,WijkenEnBuurten,Codering_3,Woningvoorraad_35\n0,WK003401,WK003401,1035\n";
        let d = Dwellings::parse_kwb_csv(odata.as_bytes()).unwrap();
        assert_eq!(
            (d.measure.as_str(), d.per_area.len()),
            ("Woningvoorraad_35", 1)
        );
        assert!(Dwellings::parse_kwb_csv(b"a;b\n1;2\n").is_err());
    }

    #[test]
    fn loads_the_whole_country_as_published() {
        let h = Hierarchy::netherlands_2023();
        assert_eq!(h.len(AreaLevel::Gemeente), 342);
        assert_eq!(h.len(AreaLevel::Wijk), 3433);
        assert_eq!(h.len(AreaLevel::Buurt), 14514);
        let outside: Vec<String> = h
            .outside()
            .iter()
            .map(|a| format!("{} {}", a.code, a.name))
            .collect();
        assert_eq!(outside, ["WK099899 Buitenland", "BU09989999 Buitenland"]);
        let almere: GemeenteCode = "GM0034".parse().unwrap();
        assert_eq!(h.name(AreaCode::Gemeente(almere)), Some("Almere"));
        assert!(h.wijken_of(almere).count() > 10);
        // The byte CBS got wrong is corrected.
        let lumiere = AreaCode::Buurt("BU00341807".parse().unwrap());
        assert_eq!(h.name(lumiere), Some("Lumièrepark"));
        let amsterdam_wijk = AreaCode::Wijk("WK0363AA".parse().unwrap());
        assert_eq!(h.name(amsterdam_wijk), Some("Haarlemmerbuurt"));
    }

    #[test]
    fn reports_the_line_of_a_bad_row() {
        let err = Hierarchy::parse(
            b"GM_CODE\tGM_NAAM\r\nGM0034\tAlmere\r\n",
            b"WK_CODE\tWK_NAAM\r\nWK003401\tStad\r\nWK0035\tX\r\n",
            b"BU_CODE\tBU_NAAM\r\n",
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                HierarchyError::Code {
                    file: "wijken",
                    line: 3,
                    ..
                }
            ),
            "{err}"
        );
        let err = Hierarchy::parse(
            b"GM_CODE\tGM_NAAM\r\nGM0034\tAlmere\r\n",
            b"WK_CODE\tWK_NAAM\r\n",
            b"BU_CODE\tBU_NAAM\r\nBU00340101\tX\r\n",
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                HierarchyError::Orphan {
                    file: "buurten",
                    line: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = Hierarchy::parse(b"code\tnaam\r\n", b"", b"").unwrap_err();
        assert!(
            matches!(
                err,
                HierarchyError::Header {
                    file: "gemeenten",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn dwellings_cover_the_country() {
        let d = Dwellings::kwb_2024();
        let almere = AreaCode::Gemeente("GM0034".parse().unwrap());
        assert_eq!(d.per_area.get(&almere), Some(&92_353));
        let total: u64 = d
            .per_area
            .iter()
            .filter(|(c, _)| c.level() == AreaLevel::Gemeente)
            .map(|(_, v)| v)
            .sum();
        assert!((8_000_000..8_500_000).contains(&total), "{total}");
    }
}
