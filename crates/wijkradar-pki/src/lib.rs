//! Certificates: a development CA, the aggregator's server certificate and
//! client certificates per organisation and role; and reading an
//! organisation's identity back from a presented certificate.
//!
//! Identity convention (first version): subject O = organisation, CN = the
//! certificate's name, OU = the role (`partner` or `analyst`). The server
//! takes the role from the certificate its own CA signed; fine-grained roles
//! per municipality move to configuration later.
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
    #[error("unknown role `{0}` in the certificate: expected partner or analyst")]
    UnknownRole(String),
    #[error("names are 1 to 64 characters of a-z, 0-9 and -")]
    Name,
}

/// What a certificate's holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Submits signals; cannot query.
    Partner,
    /// Queries released figures; cannot submit.
    Analyst,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Partner => "partner",
            Role::Analyst => "analyst",
        }
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Role, PkiError> {
        match s {
            "partner" => Ok(Role::Partner),
            "analyst" => Ok(Role::Analyst),
            other => Err(PkiError::UnknownRole(other.chars().take(32).collect())),
        }
    }
}

/// The organisation behind a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub organisation: String,
    pub name: String,
    pub role: Role,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ({})",
            self.organisation,
            self.name,
            self.role.as_str()
        )
    }
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
        role: first(&mut subject.iter_organizational_unit(), "role (OU)")?.parse()?,
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
/// the CA there.
pub fn issue(
    dir: &Path,
    name: &str,
    organisation: &str,
    role: Role,
) -> Result<CertFiles, PkiError> {
    issue_valid_for(dir, name, organisation, role, 825)
}

/// As [`issue`], with a validity in days from now; negative makes a
/// certificate that has already expired (for tests of refusal).
pub fn issue_valid_for(
    dir: &Path,
    name: &str,
    organisation: &str,
    role: Role,
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
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name.push(DnType::CommonName, name);
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
        let files = issue(dir.path(), "corporatie", "Woonstede", Role::Partner).unwrap();
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
                role: Role::Partner
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
        assert!(matches!(
            issue(dir.path(), "Bad Name", "X", Role::Analyst),
            Err(PkiError::Name)
        ));
    }
}
