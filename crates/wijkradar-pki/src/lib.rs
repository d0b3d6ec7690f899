//! Certificates: a development CA, the aggregator's server certificate and
//! client certificates per organisation and role; and reading an
//! organisation's identity back from a presented certificate.
//!
//! Identity: subject O = organisation, CN = the certificate's name, and the
//! OIN (Organisatie Identificatie Nummer, 20 digits) in the subject serial
//! number where the certificate carries one, as PKIoverheid certificates do.
//! What an identity may do is not in the certificate: the aggregator's
//! access configuration decides.
//!
//! Private keys are written owner-only. This is a development PKI: production
//! uses certificates from the municipality's own CA or PKIoverheid.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate does not parse as X.509")]
    Parse,
    #[error("the certificate has no {0} in its subject")]
    Missing(&'static str),
    #[error("names are 1 to 64 characters of a-z, 0-9 and -")]
    Name,
    #[error("an OIN is 20 digits")]
    Oin,
}

/// An Organisatie Identificatie Nummer: 20 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oin(String);

impl Oin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Oin {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Oin, PkiError> {
        if s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Oin(s.to_owned()))
        } else {
            Err(PkiError::Oin)
        }
    }
}

impl fmt::Display for Oin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Oin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Oin, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The development organisations of `wijkradar pki init`: certificate name,
/// organisation (subject O) and a fictitious OIN (prefix 9999), matching
/// `deploy/access.example.toml`. Departments of one municipality share its OIN.
pub const DEV_ORGANISATIONS: &[(&str, &str, &str)] = &[
    (
        "woningcorporatie",
        "Woningcorporatie De Vaart",
        "99990003000000000001",
    ),
    (
        "energieleverancier",
        "Energieleverancier Flevostroom",
        "99990003000000000002",
    ),
    (
        "drinkwaterbedrijf",
        "Drinkwaterbedrijf Flevowater",
        "99990003000000000003",
    ),
    (
        "zorgverzekeraar",
        "Zorgverzekeraar Zilverhart",
        "99990003000000000004",
    ),
    ("leerplicht", "Gemeente Almere", "99990001000000000034"),
    (
        "gemeente-stadsbeheer",
        "Gemeente Almere",
        "99990001000000000034",
    ),
    ("gemeente", "Gemeente Almere", "99990001000000000034"),
    (
        "gemeente-lelystad",
        "Gemeente Lelystad",
        "99990001000000000995",
    ),
    ("fg", "Gemeente Almere", "99990001000000000034"),
    ("beheer", "Wijkradar beheer", "99990004000000000001"),
];

/// The organisation behind a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub organisation: String,
    pub name: String,
    /// The OIN from the subject serial number, where it holds 20 digits.
    pub oin: Option<Oin>,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.organisation, self.name)?;
        match &self.oin {
            Some(oin) => write!(f, " (OIN {oin})"),
            None => Ok(()),
        }
    }
}

/// The SHA-256 fingerprint of a PEM certificate file, as hex with colons:
/// what an access file's `revoked_certificates` lists.
pub fn fingerprint(path: &Path) -> Result<String, PkiError> {
    let pem = read(path)?;
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| PkiError::Parse)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &block.contents);
    Ok(digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Reads the identity from a DER certificate the TLS layer already verified.
pub fn identity_from_der(der: &[u8]) -> Result<Identity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| PkiError::Parse)?;
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>,
                 what| {
        it.next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned)
            .ok_or(PkiError::Missing(what))
    };
    Ok(Identity {
        organisation: first(&mut subject.iter_organization(), "organisation (O)")?,
        name: first(&mut subject.iter_common_name(), "common name (CN)")?,
        oin: subject
            .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
            .next()
            .and_then(|a| a.as_str().ok())
            .and_then(|s| s.parse().ok()),
    })
}

/// File names of one certificate and its key inside a PKI directory.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn in_dir(dir: &Path, name: &str) -> CertFiles {
        CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(PkiError::Name) }
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(io)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Creates `ca.pem`/`ca.key` and `server.pem`/`server.key` (valid for
/// `localhost` and `127.0.0.1`, plus `server_names`) in `dir`.
pub fn init(dir: &Path, server_names: &[String]) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::OrganizationName, "Wijkradar development CA");
    ca.distinguished_name
        .push(DnType::CommonName, "Wijkradar development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, 3650);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_files = CertFiles::in_dir(dir, "ca");
    write(&ca_files.cert, &ca_cert.pem(), false)?;
    write(&ca_files.key, &ca_key.serialize_pem(), true)?;

    let issuer = Issuer::new(ca, ca_key);
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    names.extend(server_names.iter().cloned());
    let mut server = CertificateParams::new(names)?;
    server.distinguished_name = DistinguishedName::new();
    server
        .distinguished_name
        .push(DnType::OrganizationName, "Wijkradar");
    server
        .distinguished_name
        .push(DnType::CommonName, "wijkradar aggregator");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut server, 825);
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &issuer)?;
    let files = CertFiles::in_dir(dir, "server");
    write(&files.cert, &cert.pem(), false)?;
    write(&files.key, &key.serialize_pem(), true)
}

/// Issues a client certificate `<name>.pem`/`<name>.key` in `dir`, signed by
/// the CA there, with the OIN (if any) in the subject serial number.
pub fn issue(
    dir: &Path,
    name: &str,
    organisation: &str,
    oin: Option<&Oin>,
) -> Result<CertFiles, PkiError> {
    issue_valid_for(dir, name, organisation, oin, 825)
}

/// As [`issue`], with a validity in days from now; negative makes a
/// certificate that has already expired (for tests of refusal).
pub fn issue_valid_for(
    dir: &Path,
    name: &str,
    organisation: &str,
    oin: Option<&Oin>,
    days: i64,
) -> Result<CertFiles, PkiError> {
    check_name(name)?;
    let ca_files = CertFiles::in_dir(dir, "ca");
    let ca_key = KeyPair::from_pem(&read(&ca_files.key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&ca_files.cert)?, ca_key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::OrganizationName,
        DnValue::Utf8String(organisation.to_owned()),
    );
    params.distinguished_name.push(DnType::CommonName, name);
    if let Some(oin) = oin {
        let printable = rcgen::string::PrintableString::try_from(oin.as_str())?;
        params.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString(printable),
        );
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    if days < 0 {
        params.not_before = now - time::Duration::days(30);
        params.not_after = now + time::Duration::days(days);
    } else {
        validity(&mut params, days);
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let files = CertFiles::in_dir(dir, name);
    write(&files.cert, &cert.pem(), false)?;
    write(&files.key, &key.serialize_pem(), true)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[]).unwrap();
        let oin: Oin = "00000003123456780000".parse().unwrap();
        let files = issue(dir.path(), "corporatie", "Woonstede", Some(&oin)).unwrap();
        let pem = std::fs::read_to_string(&files.cert).unwrap();
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let id = identity_from_der(&der).unwrap();
        assert_eq!(
            id,
            Identity {
                organisation: "Woonstede".into(),
                name: "corporatie".into(),
                oin: Some(oin),
            }
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let files = issue(dir.path(), "zonder-oin", "Gemeente", None).unwrap();
        let pem = std::fs::read_to_string(&files.cert).unwrap();
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents;
        assert_eq!(identity_from_der(&der).unwrap().oin, None);
        assert!(matches!(
            issue(dir.path(), "Bad Name", "X", None),
            Err(PkiError::Name)
        ));
        assert!("1234".parse::<Oin>().is_err());
    }
}
