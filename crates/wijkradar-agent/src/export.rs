//! Reading a partner's export (first version): a CSV with the columns
//! `postcode`, `huisnummer`, `toevoeging`, `signaaltype`, `maand`, comma or
//! semicolon separated. Each good row becomes a pseudonymised signal; each bad
//! row a reject with its line number and a reason that holds no identifier.
//! Reasons are in Dutch: the reject report is read by the partner's data officer.

use std::io::Read;

use wijkradar_domain::{Month, SignalTypeName};
use wijkradar_proto::v1 as pb;
use wijkradar_pseudonym::PartnerKey;

use crate::normalise;
use crate::pc6::Pc6Table;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export: {0}")]
    Csv(#[from] csv::Error),
    #[error(
        "export line 1: missing column `{0}`; expected postcode, huisnummer, toevoeging, signaaltype, maand"
    )]
    MissingColumn(&'static str),
}

/// A row that was not sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    pub reason: String,
}

/// What an export turned into.
#[derive(Debug, Default)]
pub struct Export {
    pub rows: u64,
    pub signals: Vec<pb::Signal>,
    pub rejects: Vec<Reject>,
}

const COLUMNS: [&str; 5] = [
    "postcode",
    "huisnummer",
    "toevoeging",
    "signaaltype",
    "maand",
];

pub fn read_export(
    reader: impl Read,
    pc6: &Pc6Table,
    key: &PartnerKey,
    now: Month,
) -> Result<Export, ExportError> {
    let mut csv = crate::csv_input::reader(reader).map_err(csv::Error::from)?;
    let header: Vec<String> = csv
        .headers()?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let mut index = [0usize; 5];
    for (i, name) in COLUMNS.iter().enumerate() {
        index[i] = header
            .iter()
            .position(|h| h == name)
            .ok_or(ExportError::MissingColumn(name))?;
    }

    let mut out = Export::default();
    for record in csv.records() {
        let record = record?;
        out.rows += 1;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(index[i]).unwrap_or("");
        let signal = (|| -> Result<pb::Signal, String> {
            let pc = normalise::postcode(field(0)).map_err(|e| e.to_string())?;
            let number = normalise::house_number(field(1)).map_err(|e| e.to_string())?;
            let addition = normalise::addition(field(2)).map_err(|e| e.to_string())?;
            let signal_type: SignalTypeName = field(3).trim().parse().map_err(|_| {
                "signaaltype: alleen a-z, 0-9 en _, beginnend met een letter".to_owned()
            })?;
            let month: Month = field(4)
                .trim()
                .parse()
                .map_err(|_| "maand: verwacht JJJJ-MM".to_owned())?;
            month
                .not_after(now)
                .map_err(|_| "maand: ligt in de toekomst".to_owned())?;
            let buurt = pc6
                .buurt(&pc, number)
                .ok_or("adres staat niet in de postcodetabel")?;
            let pseudonym =
                key.pseudonymise(normalise::household_key(&pc, number, &addition).as_bytes());
            Ok(pb::Signal {
                pseudonym: pseudonym.as_bytes().to_vec(),
                buurt_code: buurt.to_string(),
                signal_type: signal_type.to_string(),
                month: month.to_string(),
                severity: None,
            })
        })();
        match signal {
            Ok(s) => out.signals.push(s),
            Err(reason) => out.rejects.push(Reject { line, reason }),
        }
    }
    Ok(out)
}
