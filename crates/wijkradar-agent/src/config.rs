//! A partner's configuration (TOML): who the partner is, how its export is
//! laid out, which signal types it produces from which rule, and where its
//! key, postcode table, outbox and aggregator are. Complete examples per kind
//! of partner are in `deploy/partners/`.
//!
//! Relative paths are relative to the configuration file's directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use wijkradar_domain::{GemeenteCode, SignalTypeName};

use crate::client::ClientTls;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    pub partner: PartnerSection,
    pub export: ExportLayout,
    /// Rules: which rows are which signal type. A row may produce several
    /// types, or none (then it is counted as "no signal", not rejected).
    pub signals: Vec<SignalRule>,
    pub agent: AgentSection,
    pub aggregator: AggregatorSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSection {
    /// The organisation's name, for the officer's summary.
    pub name: String,
    /// What kind of partner, for the reader: woningcorporatie,
    /// energieleverancier, drinkwaterbedrijf, zorgverzekeraar,
    /// leerplicht, gemeente.
    pub kind: String,
    /// The municipalities this partner may report on (CBS codes such as
    /// `GM0034`); rows in any other municipality are rejected.
    pub municipalities: Vec<String>,
    /// The same, parsed.
    #[serde(skip)]
    pub gemeenten: Vec<GemeenteCode>,
}

/// The character encoding of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    /// UTF-8, with or without a byte order mark.
    #[serde(rename = "utf-8")]
    Utf8,
    /// Windows-1252, the superset of Latin-1 that Dutch Windows systems
    /// write; `latin-1` and `iso-8859-1` mean the same here.
    #[serde(rename = "windows-1252", alias = "latin-1", alias = "iso-8859-1")]
    Windows1252,
}

/// How the month of a row is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DateFormat {
    /// ISO 8601 date, `2026-03-31`.
    #[serde(rename = "jjjj-mm-dd")]
    Iso,
    /// Dutch date, `31-03-2026` (also `31/03/2026` and `31.03.2026`).
    #[serde(rename = "dd-mm-jjjj")]
    Dutch,
    /// A month, `2026-03`.
    #[serde(rename = "jjjj-mm")]
    Month,
}

/// What the pseudonym is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Identifier {
    /// The household: postcode, house number and addition.
    Address,
    /// The person: a BSN that passes the eleven-test. The address columns
    /// still place the row in its buurt.
    Bsn,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportLayout {
    /// The field separator: `,`, `;`, `|` or a tab (`"\t"`).
    pub delimiter: String,
    pub encoding: Encoding,
    pub date_format: DateFormat,
    pub identifier: Identifier,
    /// With `identifier = "bsn"`: send each person's household pseudonym
    /// (of the address) beside it, so that the derived indicators link the
    /// person's signals with its household's (default). `false` sends the
    /// BSN pseudonym only: those signals link with the same person's only.
    #[serde(default = "yes")]
    pub link_households: bool,
    pub columns: Columns,
}

fn yes() -> bool {
    true
}

/// Header names of the columns the agent needs, as they appear in the
/// export's first line (compared without regard to case and surrounding
/// spaces). Other columns are never looked at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub postcode: String,
    pub house_number: String,
    /// The addition (toevoeging), if the export has a separate column.
    pub addition: Option<String>,
    /// The date or month the signal applies to.
    pub date: String,
    /// Required when `identifier = "bsn"`.
    pub bsn: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRule {
    /// The signal type this rule produces, as in the aggregator's catalogue.
    #[serde(rename = "type")]
    pub signal_type: SignalTypeName,
    /// When the row is this signal; without it, every row is.
    pub when: Option<Condition>,
}

/// A condition on one column: either the value is one of `equals`
/// (without regard to case and surrounding spaces), or it is a number of
/// at least `at_least` (a decimal comma is read as a point).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub column: String,
    pub equals: Option<Vec<String>>,
    pub at_least: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// The partner key file of the domain and epoch (`wijkradar keys export`).
    pub pseudonym_key: PathBuf,
    /// During a key change's overlap: the previous epoch's partner key. Each
    /// signal then also carries its household's pseudonym under it, so
    /// that the aggregator links households across the change (seven months:
    /// what a derived indicator looks back over). Remove it afterwards.
    pub previous_pseudonym_key: Option<PathBuf>,
    /// CBS's postcode + house number → buurt table.
    pub postcode_table: PathBuf,
    /// The outbox directory (redb, `outbox.redb` in it): what is pseudonymised and not yet
    /// acknowledged by the aggregator.
    pub outbox: PathBuf,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Where reject reports go; default: next to the export.
    pub reject_dir: Option<PathBuf>,
}

fn default_batch_size() -> usize {
    5000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorSection {
    /// For example `https://wijkradar.example.nl:50051`.
    pub url: String,
    /// The name the aggregator's certificate carries.
    pub server_name: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AggregatorSection {
    pub fn tls(&self) -> ClientTls {
        ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            domain: self.server_name.clone(),
        }
    }
}

impl ExportLayout {
    /// The delimiter as one byte.
    pub fn delimiter_byte(&self) -> u8 {
        match self.delimiter.as_str() {
            "\\t" | "tab" => b'\t',
            d => d.as_bytes()[0],
        }
    }
}

impl PartnerConfig {
    pub fn parse(text: &str, path: &Path) -> Result<PartnerConfig, ConfigError> {
        let mut config: PartnerConfig =
            toml::from_str(text).map_err(|source| ConfigError::Toml {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let e = &config.export;
        if !matches!(e.delimiter.as_str(), "," | ";" | "|" | "\t" | "\\t" | "tab") {
            return Err(invalid(format!(
                "export.delimiter `{}` must be `,`, `;`, `|` or a tab",
                e.delimiter
            )));
        }
        if e.identifier == Identifier::Bsn && e.columns.bsn.is_none() {
            return Err(invalid(
                "export.identifier is \"bsn\": name the BSN column in export.columns.bsn".into(),
            ));
        }
        if config.signals.is_empty() {
            return Err(invalid(
                "no [[signals]] rule: name at least one signal type".into(),
            ));
        }
        for (i, rule) in config.signals.iter().enumerate() {
            if let Some(c) = &rule.when
                && c.equals.is_some() == c.at_least.is_some()
            {
                return Err(invalid(format!(
                    "signals[{i}].when: give exactly one of `equals` and `at_least`"
                )));
            }
        }
        for m in &config.partner.municipalities {
            let g = m
                .trim()
                .parse::<GemeenteCode>()
                .map_err(|e| invalid(format!("partner.municipalities: `{m}`: {e}")))?;
            config.partner.gemeenten.push(g);
        }
        if config.partner.municipalities.is_empty() {
            return Err(invalid(
                "partner.municipalities is empty: name the municipalities this partner reports on"
                    .into(),
            ));
        }
        if !(1..=50_000).contains(&config.agent.batch_size) {
            return Err(invalid("agent.batch_size must be 1 to 50000".into()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let a = &mut config.agent;
        resolve(&mut a.pseudonym_key);
        if let Some(k) = &mut a.previous_pseudonym_key {
            resolve(k);
        }
        resolve(&mut a.postcode_table);
        resolve(&mut a.outbox);
        if let Some(d) = &mut a.reject_dir {
            resolve(d);
        }
        let g = &mut config.aggregator;
        resolve(&mut g.ca);
        resolve(&mut g.cert);
        resolve(&mut g.key);
        Ok(config)
    }

    /// What every row of an export is checked against, with this
    /// partner's postcode table and key, in the month `now`.
    pub fn rules<'a>(
        &'a self,
        pc6: &'a crate::Pc6Table,
        key: &'a wijkradar_pseudonym::PartnerKey,
        now: wijkradar_domain::Month,
    ) -> crate::ExportRules<'a> {
        crate::ExportRules {
            layout: &self.export,
            signals: &self.signals,
            municipalities: &self.partner.gemeenten,
            pc6,
            key,
            previous_key: None,
            now,
            first_kept: Default::default(),
        }
    }

    pub fn load(path: &Path) -> Result<PartnerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        PartnerConfig::parse(&text, path)
    }
}
