//! Reading a partner's export as its configuration describes it: delimiter,
//! encoding, header names, date format, identifier and signal rules. Each
//! row that yields a signal is normalised, placed in its buurt and
//! pseudonymised; each bad row becomes a reject with its line number and a
//! reason that holds no identifier. Reasons are in Dutch: the reject report
//! is read by the partner's data officer.
//!
//! The export is streamed: only the columns the configuration names are
//! decoded, and a line longer than [`MAX_LINE_BYTES`] stops the run with a
//! clear error instead of filling memory. A file-level error (encoding,
//! missing column, broken quoting) ends the whole run: the caller sends
//! nothing of a file that did not read to its end.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;
use std::rc::Rc;

use wijkradar_domain::{GemeenteCode, Month};
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::PartnerKey;

use crate::config::{Condition, DateFormat, Encoding, ExportLayout, Identifier, SignalRule};
use crate::csv_input::Lines;
use crate::normalise;
use crate::pc6::Pc6Table;

/// The longest physical line an export may have.
pub const MAX_LINE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the export is empty: it has no header line")]
    Empty,
    #[error(
        "the export is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8 or Windows-1252"
    )]
    Utf16,
    #[error("line 1: the header has no column `{column}` ({what}); it has {found}{hint}")]
    MissingColumn {
        column: String,
        what: &'static str,
        found: String,
        hint: String,
    },
    #[error(
        "line {line}: not valid UTF-8; if the export is Windows-1252 or Latin-1, set export.encoding = \"windows-1252\""
    )]
    Encoding { line: u64 },
    #[error(
        "line {line} is longer than {} bytes; is this the right file?",
        MAX_LINE_BYTES
    )]
    LineTooLong { line: u64 },
    #[error("line {line}: {source}")]
    Csv { line: u64, source: csv::Error },
}

/// A row that was not sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    pub reason: Cow<'static, str>,
}

/// What an export turned into. Counts only: the signals went to the sink.
#[derive(Debug, Default, Clone)]
pub struct ExportSummary {
    /// Data rows read (the header not included).
    pub rows: u64,
    /// Rows that matched no signal rule: not a signal, not an error.
    pub without_signal: u64,
    /// Signals produced, per type.
    pub per_type: BTreeMap<String, u64>,
    /// Rejected rows, per reason.
    pub rejected_by_reason: BTreeMap<Cow<'static, str>, u64>,
    /// Every rejected row, in file order.
    pub rejects: Vec<Reject>,
}

impl ExportSummary {
    pub fn signals(&self) -> u64 {
        self.per_type.values().sum()
    }
    pub fn rejected(&self) -> u64 {
        self.rejects.len() as u64
    }
}

/// Everything a row is checked against.
#[derive(Debug)]
pub struct ExportRules<'a> {
    pub layout: &'a ExportLayout,
    pub signals: &'a [SignalRule],
    pub municipalities: &'a [GemeenteCode],
    pub pc6: &'a Pc6Table,
    pub key: &'a PartnerKey,
    /// During a key change's overlap: the previous epoch's key.
    pub previous_key: Option<&'a PartnerKey>,
    /// The current month: later months are rejected.
    pub now: Month,
    /// Per signal type, the first month the aggregator keeps (its
    /// retention, from `GetIngestPolicy`): a signal of an earlier month is
    /// rejected here, not refused there. Empty when not known.
    pub first_kept: BTreeMap<String, Month>,
}

/// A row's pseudonym, its household's (a person's row only), its
/// household's under the previous key (in a key change's overlap), buurt
/// and month.
type Pseudonymised = (Vec<u8>, Vec<u8>, Vec<u8>, String, Month);

/// Column positions, resolved from the header once.
struct Positions {
    postcode: usize,
    house_number: usize,
    addition: Option<usize>,
    date: usize,
    bsn: Option<usize>,
    /// Per signal rule: the column of its condition.
    rules: Vec<Option<usize>>,
}

fn decode(encoding: Encoding, bytes: &[u8]) -> Cow<'_, str> {
    match encoding {
        // Checked per record before any field is read.
        Encoding::Utf8 => String::from_utf8_lossy(bytes),
        Encoding::Windows1252 => {
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
        }
    }
}

fn resolve_header(
    header: &[String],
    layout: &ExportLayout,
    rules: &[SignalRule],
) -> Result<Positions, ExportError> {
    let find = |name: &str, what: &'static str| -> Result<usize, ExportError> {
        let wanted = name.trim().to_lowercase();
        header.iter().position(|h| *h == wanted).ok_or_else(|| {
            let found = if header.len() == 1 {
                "one column".to_owned()
            } else {
                format!("{} columns", header.len())
            };
            let d = layout.delimiter_byte() as char;
            let hint = if header.len() == 1 {
                let line = &header[0];
                match [',', ';', '\t', '|'].into_iter().find(|&c| c != d && line.contains(c)) {
                    Some(other) => format!(
                        ": the delimiter is set to `{}` but the header looks separated by `{}` (export.delimiter)",
                        d.escape_default(),
                        other.escape_default()
                    ),
                    None => format!(": is the delimiter `{}` right?", d.escape_default()),
                }
            } else {
                String::new()
            };
            ExportError::MissingColumn {
                column: name.to_owned(),
                what,
                found,
                hint,
            }
        })
    };
    let c = &layout.columns;
    let postcode = find(&c.postcode, "export.columns.postcode")?;
    let house_number = find(&c.house_number, "export.columns.house_number")?;
    let addition = match &c.addition {
        Some(name) => Some(find(name, "export.columns.addition")?),
        None => None,
    };
    let date = find(&c.date, "export.columns.date")?;
    let bsn = match (layout.identifier, &c.bsn) {
        (Identifier::Bsn, Some(name)) => Some(find(name, "export.columns.bsn")?),
        _ => None,
    };
    let mut rule_columns = Vec::with_capacity(rules.len());
    for rule in rules {
        rule_columns.push(match &rule.when {
            Some(cond) => Some(find(&cond.column, "a signals rule")?),
            None => None,
        });
    }
    Ok(Positions {
        postcode,
        house_number,
        addition,
        date,
        bsn,
        rules: rule_columns,
    })
}

/// The month of a date as the layout writes it.
pub fn parse_month(raw: &str, format: DateFormat) -> Option<Month> {
    // A time part, as spreadsheets add it, is ignored.
    let date = raw.trim().split([' ', 'T']).next().unwrap_or("");
    let num = |s: &str, len: std::ops::RangeInclusive<usize>| -> Option<u32> {
        (len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = match format {
        DateFormat::Iso => {
            let mut p = date.split('-');
            let y = num(p.next()?, 4..=4)?;
            let m = num(p.next()?, 2..=2)?;
            let d = num(p.next()?, 2..=2)?;
            if p.next().is_some() {
                return None;
            }
            (y, m, Some(d))
        }
        DateFormat::Dutch => {
            let sep = date.chars().find(|c| matches!(c, '-' | '/' | '.'))?;
            let mut p = date.split(sep);
            let d = num(p.next()?, 1..=2)?;
            let m = num(p.next()?, 1..=2)?;
            let y = num(p.next()?, 4..=4)?;
            if p.next().is_some() {
                return None;
            }
            (y, m, Some(d))
        }
        DateFormat::Month => {
            let mut p = date.split('-');
            let y = num(p.next()?, 4..=4)?;
            let m = num(p.next()?, 2..=2)?;
            if p.next().is_some() {
                return None;
            }
            (y, m, None)
        }
    };
    let month = Month::new(year, month)?;
    if let Some(d) = day {
        let days = match month.month() {
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if !(1..=days).contains(&d) {
            return None;
        }
    }
    Some(month)
}

fn matches(cond: &Condition, value: &str) -> Result<bool, Cow<'static, str>> {
    let value = value.trim();
    if let Some(options) = &cond.equals {
        return Ok(options
            .iter()
            .any(|o| o.trim().to_lowercase() == value.to_lowercase()));
    }
    let threshold = cond.at_least.unwrap_or(f64::INFINITY);
    if value.is_empty() {
        return Ok(false);
    }
    let n: f64 = value
        .replace(',', ".")
        .parse()
        .map_err(|_| Cow::Owned(format!("kolom `{}` is geen getal", cond.column)))?;
    Ok(n >= threshold)
}

const DATE_REASON: [&str; 3] = [
    "datum ontbreekt of bestaat niet (verwacht jjjj-mm-dd)",
    "datum ontbreekt of bestaat niet (verwacht dd-mm-jjjj)",
    "maand ontbreekt of bestaat niet (verwacht jjjj-mm)",
];

/// Reads an export, sending every signal to `sink` in file order.
pub fn read_export(
    input: impl Read,
    rules: &ExportRules<'_>,
    mut sink: impl FnMut(pb::Signal),
) -> Result<ExportSummary, ExportError> {
    let layout = rules.layout;
    let exceeded = Rc::new(Cell::new(None));
    let mut input =
        std::io::BufReader::with_capacity(64 * 1024, Lines::new(input, exceeded.clone()));
    // The byte order mark, if any.
    let head = std::io::BufRead::fill_buf(&mut input).map_err(|e| io_error(e, 1, &exceeded))?;
    if head.is_empty() {
        return Err(ExportError::Empty);
    }
    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        return Err(ExportError::Utf16);
    }
    if head.starts_with(b"\xEF\xBB\xBF") {
        std::io::BufRead::consume(&mut input, 3);
    }
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(layout.delimiter_byte())
        .flexible(true)
        .has_headers(false)
        .from_reader(input);

    let mut record = csv::ByteRecord::new();
    let read = |csv: &mut csv::Reader<_>, record: &mut csv::ByteRecord| {
        let line = csv.position().line();
        csv.read_byte_record(record).map_err(|e| match e.kind() {
            csv::ErrorKind::Io(_) => match exceeded.get() {
                Some(line) => ExportError::LineTooLong { line },
                None => ExportError::Csv { line, source: e },
            },
            _ => ExportError::Csv { line, source: e },
        })
    };
    if !read(&mut csv, &mut record)? {
        return Err(ExportError::Empty);
    }
    if layout.encoding == Encoding::Utf8 && std::str::from_utf8(record.as_slice()).is_err() {
        return Err(ExportError::Encoding { line: 1 });
    }
    let header: Vec<String> = record
        .iter()
        .map(|h| {
            decode(layout.encoding, h)
                .trim()
                .trim_matches('"')
                .to_lowercase()
        })
        .collect();
    let at = resolve_header(&header, layout, rules.signals)?;

    let mut out = ExportSummary::default();
    // Per rule: signals it produced. Two rules naming one type give one
    // signal per row.
    let mut per_rule = vec![0u64; rules.signals.len()];
    let mut types: Vec<usize> = Vec::with_capacity(rules.signals.len());
    while read(&mut csv, &mut record)? {
        let line = record.position().map_or(0, |p| p.line());
        if layout.encoding == Encoding::Utf8 && std::str::from_utf8(record.as_slice()).is_err() {
            return Err(ExportError::Encoding { line });
        }
        // A blank line is no row.
        if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.rows += 1;
        let field = |i: usize| decode(layout.encoding, record.get(i).unwrap_or(b""));
        let mut reject = |reason: Cow<'static, str>| {
            *out.rejected_by_reason.entry(reason.clone()).or_default() += 1;
            out.rejects.push(Reject { line, reason });
        };

        types.clear();
        let mut bad_rule = None;
        for (r, (rule, column)) in rules.signals.iter().zip(&at.rules).enumerate() {
            let hit = match (&rule.when, column) {
                (Some(cond), Some(i)) => matches(cond, &field(*i)),
                _ => Ok(true),
            };
            match hit {
                Ok(true)
                    if !types
                        .iter()
                        .any(|&t| rules.signals[t].signal_type == rule.signal_type) =>
                {
                    types.push(r)
                }
                Ok(true) => {}
                Ok(false) => {}
                Err(reason) => bad_rule = Some(reason),
            }
        }
        if let Some(reason) = bad_rule {
            reject(reason);
            continue;
        }
        if types.is_empty() {
            out.without_signal += 1;
            continue;
        }

        let signal = (|| -> Result<Pseudonymised, Cow<'static, str>> {
            let err = |e: normalise::AddressError| Cow::Owned(e.to_string());
            let pc = normalise::postcode(&field(at.postcode)).map_err(err)?;
            let number = normalise::house_number(&field(at.house_number)).map_err(err)?;
            let addition = match at.addition {
                Some(i) => normalise::addition(&field(i)).map_err(err)?,
                None => String::new(),
            };
            let buurt = rules
                .pc6
                .buurt(&pc, number)
                .ok_or("adres staat niet in de postcodetabel")?;
            if !rules.municipalities.contains(&buurt.gemeente()) {
                return Err(Cow::Owned(format!(
                    "gemeente {} hoort niet bij deze partner (partner.municipalities)",
                    buurt.gemeente()
                )));
            }
            let month = parse_month(&field(at.date), layout.date_format).ok_or(
                match layout.date_format {
                    DateFormat::Iso => DATE_REASON[0],
                    DateFormat::Dutch => DATE_REASON[1],
                    DateFormat::Month => DATE_REASON[2],
                },
            )?;
            month
                .not_after(rules.now)
                .map_err(|_| "datum ligt in een toekomstige maand")?;
            let household = rules
                .key
                .pseudonymise(normalise::household_key(&pc, number, &addition).as_bytes());
            // A person's signal carries its household's pseudonym too, so
            // that the derived indicators link it with the household's
            // other signals; a household's signal is the household's.
            // In a key change's overlap, the identity the aggregator links
            // by (the household's, or a BSN-only signal's own) under the
            // previous key too.
            let address = normalise::household_key(&pc, number, &addition);
            let before = |identity: &str| match rules.previous_key {
                Some(k) => k.pseudonymise(identity.as_bytes()).as_bytes().to_vec(),
                None => Vec::new(),
            };
            let (pseudonym, household, previous) = match at.bsn {
                Some(i) => {
                    let bsn = normalise::bsn(&field(i)).map_err(err)?;
                    let person_key = normalise::person_key(&bsn);
                    let person = rules.key.pseudonymise(person_key.as_bytes());
                    if rules.layout.link_households {
                        let h = household.as_bytes().to_vec();
                        (person.as_bytes().to_vec(), h, before(&address))
                    } else {
                        (person.as_bytes().to_vec(), Vec::new(), before(&person_key))
                    }
                }
                None => (household.as_bytes().to_vec(), Vec::new(), before(&address)),
            };
            Ok((pseudonym, household, previous, buurt.to_string(), month))
        })();
        match signal {
            Ok((pseudonym, household, previous, buurt, month)) => {
                let label = month.to_string();
                for &r in &types {
                    let signal_type = rules.signals[r].signal_type.as_str();
                    if let Some(first) = rules.first_kept.get(signal_type).filter(|&&f| month < f) {
                        reject(Cow::Owned(format!(
                            "{signal_type}: maand valt buiten de bewaartermijn van de aggregator (bewaard vanaf {first})"
                        )));
                        continue;
                    }
                    per_rule[r] += 1;
                    sink(pb::Signal {
                        pseudonym: pseudonym.clone(),
                        buurt_code: buurt.clone(),
                        signal_type: signal_type.to_owned(),
                        month: label.clone(),
                        severity: None,
                        household_pseudonym: household.clone(),
                        previous_epoch_pseudonym: previous.clone(),
                    });
                }
            }
            Err(reason) => reject(reason),
        }
    }
    for (rule, n) in rules.signals.iter().zip(per_rule) {
        *out.per_type
            .entry(rule.signal_type.to_string())
            .or_default() += n;
    }
    Ok(out)
}

fn io_error(e: std::io::Error, line: u64, exceeded: &Cell<Option<u64>>) -> ExportError {
    match exceeded.get() {
        Some(line) => ExportError::LineTooLong { line },
        None => ExportError::Csv {
            line,
            source: csv::Error::from(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PartnerConfig;
    use std::path::Path;

    const CONFIG: &str = r#"
[partner]
name = "Test"
kind = "woningcorporatie"
municipalities = ["GM0034"]
[export]
delimiter = ";"
encoding = "windows-1252"
date_format = "dd-mm-jjjj"
identifier = "address"
[export.columns]
postcode = "Postcode"
house_number = "Huisnummer"
addition = "Toevoeging"
date = "Peildatum"
[[signals]]
type = "huurachterstand"
when = { column = "Achterstand maanden", at_least = 2 }
[agent]
pseudonym_key = "k"
postcode_table = "t"
outbox = "o"
[aggregator]
url = "https://127.0.0.1:1"
server_name = "localhost"
ca = "c"
cert = "c"
key = "k"
"#;

    fn key() -> PartnerKey {
        let dir = tempfile::tempdir().unwrap();
        PartnerKey::generate(&dir.path().join("k")).unwrap()
    }

    fn table() -> Pc6Table {
        Pc6Table::from_reader(
            "PC6,Huisnummer,Buurt2023\n1315AB,12,00340101\n1315AB,14,00340101\n1011AB,1,03630000\n"
                .as_bytes(),
        )
        .unwrap()
    }

    fn read(config: &str, input: &[u8]) -> Result<(ExportSummary, Vec<pb::Signal>), ExportError> {
        read_with(config, input, &key())
    }

    /// [`read`] under a given key, to compare two exports' pseudonyms.
    fn read_with(
        config: &str,
        input: &[u8],
        key: &PartnerKey,
    ) -> Result<(ExportSummary, Vec<pb::Signal>), ExportError> {
        let config = PartnerConfig::parse(config, Path::new("t.toml")).unwrap();
        let pc6 = table();
        let rules = config.rules(&pc6, key, Month::new(2026, 6).unwrap());
        let mut signals = Vec::new();
        let summary = read_export(input, &rules, |s| signals.push(s))?;
        Ok((summary, signals))
    }

    fn reasons(s: &ExportSummary) -> Vec<(u64, &str)> {
        s.rejects.iter().map(|r| (r.line, &*r.reason)).collect()
    }

    #[test]
    fn reads_a_windows_1252_export_with_rules_and_rejects() {
        // Header and one unread column carry Windows-1252 bytes (€ = 0x80, ë = 0xEB).
        let mut input = b"Huurcontract;Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden;Bedrag (\x80);Complex\r\n".to_vec();
        input.extend_from_slice(b"1;1315 ab;12;-a;31-03-2026;3;1.845,20;Pr\xEBsidentlaan\r\n");
        input.extend_from_slice(b"2;1315AB;14;;1-3-2026;1;200,00;x\r\n"); // no signal
        input.extend_from_slice(b"3;1315AB;14;;01/03/2026;2,5;x;x\r\n");
        input.extend_from_slice(b"4;1315AB;99;;01-03-2026;4;x;x\r\n"); // not in the table
        input.extend_from_slice(b"5;1011AB;1;;01-03-2026;4;x;x\r\n"); // Amsterdam
        input.extend_from_slice(b"6;1315AB;12;;31-02-2026;4;x;x\r\n"); // no such date
        input.extend_from_slice(b"7;1315AB;12;;01-07-2026;4;x;x\r\n"); // future month
        input.extend_from_slice(b"8;1315AB;12;;01-03-2026;veel;x;x\r\n");
        input.extend_from_slice(b"\r\n"); // a blank line is no row
        let (summary, signals) = read(CONFIG, &input).unwrap();
        assert_eq!(summary.rows, 8);
        assert_eq!(summary.without_signal, 1);
        assert_eq!(summary.per_type["huurachterstand"], 2);
        assert_eq!(
            reasons(&summary),
            [
                (5, "adres staat niet in de postcodetabel"),
                (
                    6,
                    "gemeente GM0363 hoort niet bij deze partner (partner.municipalities)"
                ),
                (7, "datum ontbreekt of bestaat niet (verwacht dd-mm-jjjj)"),
                (8, "datum ligt in een toekomstige maand"),
                (9, "kolom `Achterstand maanden` is geen getal"),
            ]
        );
        assert_eq!(signals.len(), 2);
        assert!(signals.iter().all(|s| s.buurt_code == "BU00340101"
            && s.month == "2026-03"
            && s.pseudonym.len() == 32));
        assert_ne!(
            signals[0].pseudonym, signals[1].pseudonym,
            "12-A and 14 differ"
        );
        // Rejects carry no identifier.
        for r in &summary.rejects {
            assert!(!r.reason.contains("1315") && !r.reason.contains("1011"));
        }
    }

    #[test]
    fn a_bsn_export_pseudonymises_the_person_after_the_eleven_test() {
        let config = CONFIG
            .replace("encoding = \"windows-1252\"", "encoding = \"utf-8\"")
            .replace("identifier = \"address\"", "identifier = \"bsn\"")
            .replace(
                "date = \"Peildatum\"",
                "date = \"Peildatum\"\nbsn = \"BSN\"",
            );
        let input = "\u{feff}BSN;Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden\n\
                     123456782;1315AB;12;;01-03-2026;2\n\
                     12345678;1315AB;12;;01-03-2026;2\n\
                     123456789;1315AB;14;;01-03-2026;2\n\
                     1234 56 782;1315AB;14;;01-03-2026;2\n";
        let key = key();
        let (summary, signals) = read_with(&config, input.as_bytes(), &key).unwrap();
        assert_eq!(
            reasons(&summary),
            [
                (3, "BSN voldoet niet aan de elfproef"),
                (4, "BSN voldoet niet aan de elfproef")
            ]
        );
        // One person at two addresses: one pseudonym.
        assert_eq!(signals.len(), 2);
        assert_eq!(signals[0].pseudonym, signals[1].pseudonym);
        // Each carries its household's pseudonym: the address's, as an
        // address export makes it.
        let (_, by_address) = read_with(
            CONFIG,
            b"Huurcontract;Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden\n\
              1;1315AB;12;;01-03-2026;2\n1;1315AB;14;;01-03-2026;2\n",
            &key,
        )
        .unwrap();
        assert_eq!(by_address.len(), 2);
        assert!(by_address.iter().all(|s| s.household_pseudonym.is_empty()));
        assert_eq!(signals[0].household_pseudonym, by_address[0].pseudonym);
        assert_eq!(signals[1].household_pseudonym, by_address[1].pseudonym);
        // Without the link: the BSN's pseudonym only.
        let bsn_only = config.replace(
            "identifier = \"bsn\"",
            "identifier = \"bsn\"\nlink_households = false",
        );
        let (_, alone) = read_with(&bsn_only, input.as_bytes(), &key).unwrap();
        assert_eq!(alone.len(), 2);
        assert!(alone.iter().all(|s| s.household_pseudonym.is_empty()));
        assert_eq!(alone[0].pseudonym, signals[0].pseudonym);
    }

    /// In a key change's overlap each signal carries its household's
    /// pseudonym under the previous key: the address's for an address or
    /// a linked person, the BSN's for a BSN-only signal.
    #[test]
    fn an_overlap_sends_the_household_under_the_previous_key_too() {
        let dir = tempfile::tempdir().unwrap();
        let root = wijkradar_pseudonym::RootKey::generate(&dir.path().join("root")).unwrap();
        let (old, new) = (
            root.derive("GM0034", "2025").unwrap(),
            root.derive("GM0034", "2026").unwrap(),
        );
        let input = b"Huurcontract;Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden\n\
              1;1315AB;12;;01-03-2026;2\n";
        let config = PartnerConfig::parse(CONFIG, Path::new("t.toml")).unwrap();
        let pc6 = table();
        let mut rules = config.rules(&pc6, &new, Month::new(2026, 6).unwrap());
        let mut plain = Vec::new();
        read_export(&input[..], &rules, |s| plain.push(s)).unwrap();
        assert!(plain[0].previous_epoch_pseudonym.is_empty());
        rules.previous_key = Some(&old);
        let mut overlap = Vec::new();
        read_export(&input[..], &rules, |s| overlap.push(s)).unwrap();
        // The same signal under the new key, with the old key's pseudonym:
        // what the old key's export made.
        let (_, under_old) = read_with(CONFIG, input, &old).unwrap();
        assert_eq!(overlap[0].pseudonym, plain[0].pseudonym);
        assert_eq!(overlap[0].previous_epoch_pseudonym, under_old[0].pseudonym);
        assert_ne!(overlap[0].pseudonym, under_old[0].pseudonym);
    }

    #[test]
    fn dates_in_each_format() {
        let m = |raw, f| parse_month(raw, f).map(|m| m.to_string());
        assert_eq!(m("2026-03-31", DateFormat::Iso).as_deref(), Some("2026-03"));
        assert_eq!(
            m("2026-03-31 00:00:00", DateFormat::Iso).as_deref(),
            Some("2026-03")
        );
        assert_eq!(
            m("2026-03-31T12:00", DateFormat::Iso).as_deref(),
            Some("2026-03")
        );
        assert_eq!(m("2024-02-29", DateFormat::Iso).as_deref(), Some("2024-02"));
        assert_eq!(m("2026-02-29", DateFormat::Iso), None);
        assert_eq!(m("2026-3-31", DateFormat::Iso), None);
        assert_eq!(
            m("31-03-2026", DateFormat::Dutch).as_deref(),
            Some("2026-03")
        );
        assert_eq!(m("1.3.2026", DateFormat::Dutch).as_deref(), Some("2026-03"));
        assert_eq!(m("31/04/2026", DateFormat::Dutch), None);
        assert_eq!(m("2026-03-31", DateFormat::Dutch), None);
        assert_eq!(m("2026-03", DateFormat::Month).as_deref(), Some("2026-03"));
        assert_eq!(m("2026-13", DateFormat::Month), None);
        assert_eq!(m("", DateFormat::Month), None);
    }

    #[test]
    fn malformed_files_stop_with_a_clear_message() {
        let header = "Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden\r\n";
        // Wrong delimiter: the header is one column, and the message says so.
        let err = read(CONFIG, header.replace(';', ",").as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no column `Postcode`")
                && text.contains("set to `;`")
                && text.contains("separated by `,`"),
            "{text}"
        );
        // A missing column.
        let err = read(CONFIG, header.replace(";Peildatum", "").as_bytes()).unwrap_err();
        assert!(
            matches!(&err, ExportError::MissingColumn { column, .. } if column == "Peildatum"),
            "{err}"
        );
        // Empty, and UTF-16.
        assert!(matches!(read(CONFIG, b""), Err(ExportError::Empty)));
        assert!(matches!(
            read(CONFIG, b"\xFF\xFEP\0o\0"),
            Err(ExportError::Utf16)
        ));
        // Latin-1 bytes in a file declared UTF-8: the line is named.
        let utf8 = CONFIG.replace("encoding = \"windows-1252\"", "encoding = \"utf-8\"");
        let input =
            format!("{header}1315AB;12;;01-03-2026;2\r\n1315AB;14;;01-03-2026;2;Pr\u{00eb}s\r\n")
                .replace('\u{00eb}', "\u{fffd}");
        let mut bytes = input.into_bytes();
        let at = bytes
            .windows(3)
            .position(|w| w == "\u{fffd}".as_bytes())
            .unwrap();
        bytes.splice(at..at + 3, [0xEB]);
        let err = read(&utf8, &bytes).unwrap_err();
        assert!(matches!(err, ExportError::Encoding { line: 3 }), "{err}");
        assert!(err.to_string().contains("windows-1252"));
    }

    /// A 2 GB line, streamed: the reader stops after a megabyte instead of
    /// reading it into memory.
    #[test]
    fn an_endless_line_stops_at_the_limit() {
        struct Endless {
            header: &'static [u8],
            sent: u64,
        }
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if !self.header.is_empty() {
                    let n = self.header.len().min(buf.len());
                    buf[..n].copy_from_slice(&self.header[..n]);
                    self.header = &self.header[n..];
                    return Ok(n);
                }
                if self.sent >= 2 << 30 {
                    return Ok(0);
                }
                buf.fill(b'a');
                self.sent += buf.len() as u64;
                Ok(buf.len())
            }
        }
        let config = PartnerConfig::parse(CONFIG, Path::new("t.toml")).unwrap();
        let (key, pc6) = (key(), table());
        let rules = config.rules(&pc6, &key, Month::new(2026, 6).unwrap());
        let mut input = Endless {
            header: b"Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden\n1315AB;12;;01-03-2026;2\n",
            sent: 0,
        };
        let mut sent = 0;
        let err = read_export(&mut input, &rules, |_| sent += 1).unwrap_err();
        assert!(matches!(err, ExportError::LineTooLong { line: 3 }), "{err}");
        assert!(
            input.sent < 4 * MAX_LINE_BYTES as u64,
            "read {} bytes",
            input.sent
        );
    }

    #[test]
    fn every_example_configuration_in_deploy_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/partners");
        let mut kinds = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let config = PartnerConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            kinds.push(config.partner.kind);
        }
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "drinkwaterbedrijf",
                "energieleverancier",
                "gemeente",
                "leerplicht",
                "woningcorporatie",
                "zorgverzekeraar"
            ]
        );
    }
}
