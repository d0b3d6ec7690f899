//! Who may do what: the access configuration, a TOML file the privacy officer
//! can read (`deploy/access.example.toml`). Every organisation is matched on
//! its client certificate (OIN, organisation, common name); what it may do is
//! granted here, never taken from the certificate:
//!
//! - partner: which signal types it may submit, for which municipalities;
//! - analyst: which municipalities it may query;
//! - privacy officer: may read and verify the audit log, sees no figures;
//! - operator: may manage releases and retention, sees no figures.
//!
//! A certificate that matches no entry is unknown (UNAUTHENTICATED); an entry
//! without the grant a call needs gets PERMISSION_DENIED.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wijkradar_domain::{
    AreaCode, Catalogue, GemeenteCode, Hierarchy, PseudonymKeyId, SignalTypeName,
};
use wijkradar_pki::{Identity, Oin};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: organisation[{index}] ({name}): {message}")]
    Invalid {
        path: PathBuf,
        index: usize,
        name: String,
        message: String,
    },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    /// SHA-256 fingerprints (hex, colons allowed) of certificates that are
    /// refused whatever they match: a stolen or replaced certificate.
    #[serde(default)]
    revoked_certificates: Vec<String>,
    #[serde(default)]
    organisation: Vec<EntryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    name: String,
    #[serde(default)]
    description: String,
    oin: Option<Oin>,
    subject_organisation: Option<String>,
    subject_common_name: Option<String>,
    partner: Option<PartnerFile>,
    analyst: Option<AnalystFile>,
    #[serde(default)]
    privacy_officer: bool,
    #[serde(default)]
    operator: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnerFile {
    signal_types: Vec<String>,
    municipalities: Vec<String>,
    /// Pseudonymisation key ids (epochs) no longer accepted from this
    /// partner, after a key rotation's overlap has ended.
    #[serde(default)]
    retired_key_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalystFile {
    municipalities: Vec<String>,
}

/// A role a development setup grants (and the operations of the API need).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Partner,
    Analyst,
    PrivacyOfficer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Partner => "partner",
            Role::Analyst => "analyst",
            Role::PrivacyOfficer => "privacy officer",
            Role::Operator => "operator",
        }
    }

    /// What the role allows, for an error message.
    pub(crate) fn action(self) -> &'static str {
        match self {
            Role::Partner => "submit signals",
            Role::Analyst => "query figures",
            Role::PrivacyOfficer => "read the audit log",
            Role::Operator => "manage releases and retention",
        }
    }
}

/// One organisation's certificate match and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organisation {
    /// Short name: how the audit log and the batch ids name it.
    pub name: String,
    pub description: String,
    pub oin: Option<Oin>,
    pub subject_organisation: Option<String>,
    pub subject_common_name: Option<String>,
    pub partner: Option<PartnerGrant>,
    pub analyst: Option<BTreeSet<GemeenteCode>>,
    pub privacy_officer: bool,
    pub operator: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerGrant {
    pub signal_types: BTreeSet<SignalTypeName>,
    pub municipalities: BTreeSet<GemeenteCode>,
    /// Key ids whose batches are refused.
    pub retired_key_ids: BTreeSet<PseudonymKeyId>,
}

impl Organisation {
    /// A certificate with an OIN is known by it: it matches only entries
    /// with that OIN. One without matches entries without an OIN.
    fn matches(&self, id: &Identity) -> bool {
        self.oin == id.oin
            && self
                .subject_organisation
                .as_ref()
                .is_none_or(|o| *o == id.organisation)
            && self
                .subject_common_name
                .as_ref()
                .is_none_or(|c| *c == id.name)
    }

    /// Whether one certificate could match both entries.
    fn overlaps(&self, other: &Organisation) -> bool {
        fn may_equal<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        }
        self.oin == other.oin
            && may_equal(&self.subject_organisation, &other.subject_organisation)
            && may_equal(&self.subject_common_name, &other.subject_common_name)
    }

    pub fn has(&self, role: Role) -> bool {
        match role {
            Role::Partner => self.partner.is_some(),
            Role::Analyst => self.analyst.is_some(),
            Role::PrivacyOfficer => self.privacy_officer,
            Role::Operator => self.operator,
        }
    }

    /// Whether the organisation may query figures of gemeente `g`.
    pub fn may_query(&self, g: GemeenteCode) -> bool {
        self.analyst.as_ref().is_some_and(|a| a.contains(&g))
    }
}

/// The checked access configuration.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    organisations: Vec<Organisation>,
    revoked: HashSet<[u8; 32]>,
}

impl AccessPolicy {
    /// Reads and checks the file against the catalogue and the CBS areas.
    pub fn load(
        path: &Path,
        catalogue: &Catalogue,
        hierarchy: &Hierarchy,
    ) -> Result<AccessPolicy, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, catalogue, hierarchy).map_err(|e| match e {
            Problem::Parse(message) => AccessError::Parse {
                path: path.to_owned(),
                message,
            },
            Problem::Entry {
                index,
                name,
                message,
            } => AccessError::Invalid {
                path: path.to_owned(),
                index,
                name,
                message,
            },
        })
    }

    fn parse(
        text: &str,
        catalogue: &Catalogue,
        hierarchy: &Hierarchy,
    ) -> Result<AccessPolicy, Problem> {
        let file: AccessFile = toml::from_str(text).map_err(|e| Problem::Parse(e.to_string()))?;
        let mut revoked = HashSet::new();
        for f in &file.revoked_certificates {
            let digits: String = f.chars().filter(|c| *c != ':').collect();
            let bytes = hex::decode(&digits)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| {
                    Problem::Parse(format!(
                        "revoked_certificates: `{f}` is not a SHA-256 fingerprint (64 hex digits)"
                    ))
                })?;
            revoked.insert(bytes);
        }
        let mut organisations: Vec<Organisation> = Vec::new();
        let mut names = HashSet::new();
        for (index, e) in file.organisation.into_iter().enumerate() {
            let name = e.name.clone();
            let problem = |message: String| Problem::Entry {
                index,
                name: name.clone(),
                message,
            };
            let name_ok = (1..=64).contains(&e.name.len())
                && e.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(problem("name: 1 to 64 characters of a-z, 0-9 and -".into()));
            }
            if !names.insert(e.name.clone()) {
                return Err(problem("name: used by an earlier organisation".into()));
            }
            if e.oin.is_none() && e.subject_organisation.is_none() {
                return Err(problem(
                    "give an oin or a subject_organisation to match the certificate on".into(),
                ));
            }
            let gemeenten = |field: &str, codes: Vec<String>| {
                codes
                    .into_iter()
                    .map(|c| {
                        c.parse::<GemeenteCode>()
                            .ok()
                            .filter(|g| hierarchy.contains(AreaCode::Gemeente(*g)))
                            .ok_or_else(|| {
                                problem(format!("{field}: `{c}` is not a CBS gemeente code"))
                            })
                    })
                    .collect::<Result<BTreeSet<_>, _>>()
            };
            let partner = match e.partner {
                None => None,
                Some(p) => {
                    let signal_types = p
                        .signal_types
                        .into_iter()
                        .map(|t| {
                            catalogue.get(&t).map(|d| d.name.clone()).ok_or_else(|| {
                                problem(format!(
                                    "partner.signal_types: `{t}` is not in the catalogue"
                                ))
                            })
                        })
                        .collect::<Result<BTreeSet<_>, _>>()?;
                    let municipalities = gemeenten("partner.municipalities", p.municipalities)?;
                    if signal_types.is_empty() || municipalities.is_empty() {
                        return Err(problem(
                            "partner: name at least one signal type and municipality".into(),
                        ));
                    }
                    let retired_key_ids = p
                        .retired_key_ids
                        .iter()
                        .map(|k| {
                            PseudonymKeyId::new(k).map_err(|e| {
                                problem(format!("partner.retired_key_ids: `{k}`: {e}"))
                            })
                        })
                        .collect::<Result<BTreeSet<_>, _>>()?;
                    Some(PartnerGrant {
                        signal_types,
                        municipalities,
                        retired_key_ids,
                    })
                }
            };
            let analyst = match e.analyst {
                None => None,
                Some(a) => {
                    let m = gemeenten("analyst.municipalities", a.municipalities)?;
                    if m.is_empty() {
                        return Err(problem("analyst: name at least one municipality".into()));
                    }
                    Some(m)
                }
            };
            let org = Organisation {
                name: e.name,
                description: e.description,
                oin: e.oin,
                subject_organisation: e.subject_organisation,
                subject_common_name: e.subject_common_name,
                partner,
                analyst,
                privacy_officer: e.privacy_officer,
                operator: e.operator,
            };
            if ![
                Role::Partner,
                Role::Analyst,
                Role::PrivacyOfficer,
                Role::Operator,
            ]
            .iter()
            .any(|&r| org.has(r))
            {
                return Err(problem(
                    "grants nothing: give partner, analyst, privacy_officer or operator".into(),
                ));
            }
            if let Some(other) = organisations.iter().find(|o| o.overlaps(&org)) {
                return Err(problem(format!(
                    "one certificate could match both this and `{}`: tell them apart by oin, subject_organisation or subject_common_name",
                    other.name
                )));
            }
            organisations.push(org);
        }
        Ok(AccessPolicy {
            organisations,
            revoked,
        })
    }

    /// Whether the certificate (DER) is on the revocation list.
    pub fn is_revoked(&self, der: &[u8]) -> bool {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        self.revoked.contains(digest.as_ref())
    }

    /// The organisation a verified certificate belongs to, if any.
    pub fn find(&self, id: &Identity) -> Option<&Organisation> {
        self.organisations.iter().find(|o| o.matches(id))
    }

    pub fn organisations(&self) -> &[Organisation] {
        &self.organisations
    }
}

#[derive(Debug)]
enum Problem {
    Parse(String),
    Entry {
        index: usize,
        name: String,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AccessPolicy, Problem> {
        AccessPolicy::parse(
            text,
            &Catalogue::dutch_defaults(),
            &Hierarchy::netherlands_2023(),
        )
    }

    fn message(r: Result<AccessPolicy, Problem>) -> String {
        match r.unwrap_err() {
            Problem::Parse(m) => m,
            Problem::Entry { message, .. } => message,
        }
    }

    fn id(org: &str, cn: &str, oin: Option<&str>) -> Identity {
        Identity {
            organisation: org.into(),
            name: cn.into(),
            oin: oin.map(|o| o.parse().unwrap()),
        }
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/access.example.toml");
        let policy = AccessPolicy::load(
            &path,
            &Catalogue::dutch_defaults(),
            &Hierarchy::netherlands_2023(),
        )
        .unwrap();
        assert!(policy.organisations().len() >= 8);
        for role in [
            Role::Partner,
            Role::Analyst,
            Role::PrivacyOfficer,
            Role::Operator,
        ] {
            assert!(policy.organisations().iter().any(|o| o.has(role)));
        }
    }

    #[test]
    fn certificates_match_on_oin_organisation_and_common_name() {
        let p = parse(
            r#"
            [[organisation]]
            name = "almere-sociaal"
            oin = "99990001000000000034"
            subject_common_name = "sociaal-domein"
            analyst = { municipalities = ["GM0034"] }

            [[organisation]]
            name = "almere-stadsbeheer"
            oin = "99990001000000000034"
            subject_common_name = "stadsbeheer"
            partner = { signal_types = ["overlastmelding"], municipalities = ["GM0034"] }

            [[organisation]]
            name = "corporatie"
            subject_organisation = "Woonstede"
            partner = { signal_types = ["huurachterstand"], municipalities = ["GM0034", "GM0995"] }
            "#,
        )
        .unwrap();
        let found = |i: &Identity| p.find(i).map(|o| o.name.as_str());
        assert_eq!(
            found(&id(
                "Gemeente Almere",
                "sociaal-domein",
                Some("99990001000000000034")
            )),
            Some("almere-sociaal")
        );
        assert_eq!(
            found(&id(
                "Gemeente Almere",
                "stadsbeheer",
                Some("99990001000000000034")
            )),
            Some("almere-stadsbeheer")
        );
        // The right common name under another OIN, or none, is unknown.
        assert_eq!(
            found(&id(
                "Gemeente Almere",
                "stadsbeheer",
                Some("99990001000000000999")
            )),
            None
        );
        assert_eq!(found(&id("Gemeente Almere", "stadsbeheer", None)), None);
        assert_eq!(found(&id("Woonstede", "any", None)), Some("corporatie"));
        let a = p.find(&id(
            "Gemeente Almere",
            "sociaal-domein",
            Some("99990001000000000034"),
        ));
        assert!(a.unwrap().may_query("GM0034".parse().unwrap()));
        assert!(!a.unwrap().may_query("GM0995".parse().unwrap()));
        assert!(!a.unwrap().has(Role::Partner));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                "[[organisation]]\nname = \"a\"\noin = \"123\"\noperator = true\n",
                "OIN is 20 digits",
            ),
            (
                "[[organisation]]\nname = \"a\"\noperator = true\n",
                "give an oin or a subject_organisation",
            ),
            (
                "[[organisation]]\nname = \"a\"\nsubject_organisation = \"A\"\n",
                "grants nothing",
            ),
            (
                "[[organisation]]\nname = \"a\"\nsubject_organisation = \"A\"\nanalyst = { municipalities = [\"GM9999\"] }\n",
                "analyst.municipalities: `GM9999` is not a CBS gemeente code",
            ),
            (
                "[[organisation]]\nname = \"a\"\nsubject_organisation = \"A\"\npartner = { signal_types = [\"huur\"], municipalities = [\"GM0034\"] }\n",
                "partner.signal_types: `huur` is not in the catalogue",
            ),
            (
                "[[organisation]]\nname = \"a\"\nsubject_organisation = \"A\"\noperator = true\n[[organisation]]\nname = \"b\"\nsubject_organisation = \"A\"\nsubject_common_name = \"x\"\nprivacy_officer = true\n",
                "one certificate could match both this and `a`",
            ),
            (
                "[[organisation]]\nname = \"a\"\nsubject_organisation = \"A\"\noperator = true\nrole = \"admin\"\n",
                "unknown field `role`",
            ),
            (
                "[[organisation]]\nname = \"A b\"\nsubject_organisation = \"A\"\noperator = true\n",
                "name: 1 to 64 characters",
            ),
        ];
        for (text, expected) in cases {
            let m = message(parse(text));
            assert!(m.contains(expected), "{text}\n=> {m}");
        }
    }
}
