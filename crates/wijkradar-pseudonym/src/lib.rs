//! Keyed pseudonymisation (docs/privacy.md, "Pseudonyms").
//!
//! Two keys, never in one place: the partner key turns a normalised
//! identifier into a [`PartnerPseudonym`] at the partner; the aggregator's
//! server key turns that into a [`ServerPseudonym`] before anything is stored.
//! A database dump plus either key alone does not reverse a pseudonym.
//!
//! Key files hold 32 random bytes from the system CSPRNG as hex, are created
//! owner-only and refused when others can read them. Key material is zeroised
//! on drop and has no `Debug` that shows it; a key is named by its id, a short
//! digest that reveals nothing of the key.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::{digest, hmac, rand::SecureRandom};
use wijkradar_domain::{PartnerPseudonym, ServerPseudonym};
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} does not hold a key (64 hex characters, or `key_id = ...` and `key = ...` lines)"
    )]
    Format { path: PathBuf },
    #[error("the system random generator failed")]
    Random,
    #[error(
        "{what} `{value}` must be 1 to 16 characters of A-Z, a-z, 0-9, `-` and `_` (for example GM0034 or 2026)"
    )]
    Label { what: &'static str, value: String },
    #[error("key file {path}: the key id `{id}` does not belong to the key in the file")]
    IdMismatch { path: PathBuf, id: String },
}

/// 32 bytes of key material, zeroised on drop.
#[derive(Clone, Zeroize)]
#[zeroize(drop)]
struct KeyBytes([u8; 32]);

impl KeyBytes {
    fn generate() -> Result<KeyBytes, KeyError> {
        let mut k = KeyBytes([0; 32]);
        ring::rand::SystemRandom::new()
            .fill(&mut k.0)
            .map_err(|_| KeyError::Random)?;
        Ok(k)
    }

    fn id(&self) -> KeyId {
        let d = digest::digest(
            &digest::SHA256,
            &[b"wijkradar key id\0".as_slice(), &self.0].concat(),
        );
        KeyId(hex::encode(&d.as_ref()[..8]))
    }

    /// The id of a derived key, `domain.epoch.digest`: the digest covers the
    /// domain and epoch too, so a relabelled key file is refused.
    fn derived_id(&self, domain: &str, epoch: &str) -> KeyId {
        let label = format!("{domain}.{epoch}");
        let d = digest::digest(
            &digest::SHA256,
            &[
                b"wijkradar key id\0".as_slice(),
                label.as_bytes(),
                b"\0",
                &self.0,
            ]
            .concat(),
        );
        KeyId(format!("{label}.{}", hex::encode(&d.as_ref()[..8])))
    }

    fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        write_owner_only(path, &Zeroizing::new(format!("{}\n", hex::encode(self.0))))
    }

    /// Writes the key with a stated id, for derived keys whose id names
    /// their domain and epoch.
    fn write_new_with_id(&self, path: &Path, id: &KeyId) -> Result<(), KeyError> {
        let text = Zeroizing::new(format!(
            "# Wijkradar partner key. Secret: keep it owner-only, never send it to the aggregator.\n\
             key_id = {id}\nkey = {}\n",
            hex::encode(self.0)
        ));
        write_owner_only(path, &text)
    }

    /// Reads a key file: 64 hex characters, or `key_id = ...` and
    /// `key = ...` lines (a derived key). Returns the stated id, if any.
    fn read_with_id(path: &Path) -> Result<(KeyBytes, Option<KeyId>), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let format = || KeyError::Format {
            path: path.to_owned(),
        };
        let mut key_hex = None;
        let mut id = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((name, value)) if name.trim() == "key_id" => {
                    id = Some(KeyId(value.trim().to_owned()));
                }
                Some((name, value)) if name.trim() == "key" => key_hex = Some(value.trim()),
                None if key_hex.is_none() => key_hex = Some(line),
                _ => return Err(format()),
            }
        }
        let mut k = KeyBytes([0; 32]);
        hex::decode_to_slice(key_hex.ok_or_else(format)?, &mut k.0).map_err(|_| format())?;
        Ok((k, id))
    }

    fn read(path: &Path) -> Result<KeyBytes, KeyError> {
        Ok(Self::read_with_id(path)?.0)
    }
}

/// Domain and epoch names: short, printable, safe in a key id and a file name.
fn valid_label(s: &str) -> bool {
    (1..=16).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The pseudonymisation root key of the partners' key holder. It never
/// pseudonymises anything itself: partner keys are derived from it per
/// domain (a municipality or region) and epoch (for example a year) with
/// HKDF-SHA256, so that all partners of one domain link within an epoch and
/// nothing links across epochs.
pub struct RootKey {
    prk: ring::hkdf::Prk,
    id: KeyId,
}

/// HKDF salt: fixes the derivation to this scheme and version.
const HKDF_SALT: &[u8] = b"wijkradar pseudonymisation v1";

impl RootKey {
    /// Creates a new random root key in a new owner-only file.
    pub fn generate(path: &Path) -> Result<RootKey, KeyError> {
        let bytes = KeyBytes::generate()?;
        bytes.write_new(path)?;
        Ok(RootKey::from_bytes(&bytes))
    }

    /// Loads a root key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<RootKey, KeyError> {
        Ok(RootKey::from_bytes(&KeyBytes::read(path)?))
    }

    fn from_bytes(bytes: &KeyBytes) -> RootKey {
        RootKey {
            prk: ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, HKDF_SALT).extract(&bytes.0),
            id: bytes.id(),
        }
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The partner key of `domain` in `epoch`. Its id is
    /// `domain.epoch.digest`, for example `GM0034.2026.1f0c2a9b3d4e5f60`.
    pub fn derive(&self, domain: &str, epoch: &str) -> Result<PartnerKey, KeyError> {
        let (bytes, id) = self.derive_bytes(domain, epoch)?;
        let mut key = PartnerKey::from_bytes(&bytes);
        key.id = id;
        Ok(key)
    }

    /// Derives the partner key of `domain` in `epoch` into a new owner-only
    /// key file for the partners of that domain.
    pub fn export(&self, domain: &str, epoch: &str, path: &Path) -> Result<PartnerKey, KeyError> {
        let (bytes, id) = self.derive_bytes(domain, epoch)?;
        bytes.write_new_with_id(path, &id)?;
        let mut key = PartnerKey::from_bytes(&bytes);
        key.id = id;
        Ok(key)
    }

    fn derive_bytes(&self, domain: &str, epoch: &str) -> Result<(KeyBytes, KeyId), KeyError> {
        for (what, value) in [("domain", domain), ("epoch", epoch)] {
            if !valid_label(value) {
                return Err(KeyError::Label {
                    what,
                    value: value.chars().take(32).collect(),
                });
            }
        }
        let info = [
            b"wijkradar partner key\0".as_slice(),
            domain.as_bytes(),
            b"\0",
            epoch.as_bytes(),
        ]
        .concat();
        let info = [info.as_slice()];
        let okm = self
            .prk
            .expand(&info, ring::hkdf::HKDF_SHA256)
            .map_err(|_| KeyError::Random)?;
        let mut bytes = KeyBytes([0; 32]);
        okm.fill(&mut bytes.0).map_err(|_| KeyError::Random)?;
        let id = bytes.derived_id(domain, epoch);
        Ok((bytes, id))
    }

    /// The epoch after `epoch` when it is a number (a year): `2026` → `2027`.
    pub fn next_epoch(epoch: &str) -> Option<String> {
        epoch
            .parse::<u32>()
            .ok()
            .and_then(|y| y.checked_add(1))
            .map(|y| y.to_string())
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey(id {})", self.id)
    }
}

/// Creates a new file readable by its owner only (never overwriting one),
/// writes `text` and syncs it to disk.
fn write_owner_only(path: &Path, text: &str) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// A key's public name: the first 8 bytes of a SHA-256 over the key, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! hmac_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            hmac: hmac::Key,
            id: KeyId,
        }

        impl $name {
            /// Creates a new random key in a new owner-only file.
            pub fn generate(path: &Path) -> Result<Self, KeyError> {
                let bytes = KeyBytes::generate()?;
                bytes.write_new(path)?;
                Ok(Self::from_bytes(&bytes))
            }

            fn from_bytes(bytes: &KeyBytes) -> Self {
                $name {
                    hmac: hmac::Key::new(hmac::HMAC_SHA256, &bytes.0),
                    id: bytes.id(),
                }
            }

            pub fn id(&self) -> &KeyId {
                &self.id
            }

            fn tag(&self, data: &[u8]) -> [u8; 32] {
                hmac::sign(&self.hmac, data).as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(id {})"), self.id)
            }
        }
    };
}

hmac_key!(
    /// The key a partner's agent pseudonymises with; never at the aggregator.
    PartnerKey
);
hmac_key!(
    /// The aggregator's own re-keying key, kept apart from its database.
    ServerKey
);

impl PartnerKey {
    /// Loads a partner key file, refusing one that others can read. A
    /// derived key file states its id (domain, epoch, digest); the digest
    /// part must match the key in the file.
    pub fn load(path: &Path) -> Result<PartnerKey, KeyError> {
        let (bytes, stated) = KeyBytes::read_with_id(path)?;
        let mut key = PartnerKey::from_bytes(&bytes);
        if let Some(stated) = stated {
            let parts: Vec<&str> = stated.0.split('.').collect();
            let ok = parts.len() == 3
                && valid_label(parts[0])
                && valid_label(parts[1])
                && bytes.derived_id(parts[0], parts[1]) == stated;
            if !ok {
                return Err(KeyError::IdMismatch {
                    path: path.to_owned(),
                    id: stated.0,
                });
            }
            key.id = stated;
        }
        Ok(key)
    }

    /// The domain and epoch this key was derived for, if it was.
    pub fn domain_and_epoch(&self) -> Option<(&str, &str)> {
        let mut parts = self.id.0.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(e), Some(_)) => Some((d, e)),
            _ => None,
        }
    }

    /// The pseudonym of a normalised identifier (for example `1234AB|12|A`).
    pub fn pseudonymise(&self, normalised_identifier: &[u8]) -> PartnerPseudonym {
        PartnerPseudonym::from_bytes(self.tag(normalised_identifier))
    }
}

impl ServerKey {
    /// Loads the server key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<ServerKey, KeyError> {
        Ok(ServerKey::from_bytes(&KeyBytes::read(path)?))
    }

    /// Keys a partner pseudonym once more; the store holds only this form.
    pub fn rekey(&self, p: &PartnerPseudonym) -> ServerPseudonym {
        ServerPseudonym::from_bytes(self.tag(p.as_bytes()))
    }

    /// The household's secret record key for cell-key perturbation: 32 bits
    /// of a keyed HMAC of its server pseudonym, stable for as long as the
    /// server key is. The prefix keeps it apart from [`ServerKey::rekey`],
    /// whose input is always exactly 32 bytes.
    pub fn record_key(&self, p: &ServerPseudonym) -> u32 {
        let mut input = [0u8; 46];
        input[..14].copy_from_slice(b"wijkradar rk1\0");
        input[14..].copy_from_slice(p.as_bytes());
        let tag = self.tag(&input);
        u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_back_and_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partner.key");
        let k = PartnerKey::generate(&path).unwrap();
        let again = PartnerKey::load(&path).unwrap();
        assert_eq!(k.id(), again.id());
        assert_eq!(
            k.pseudonymise(b"1234AB|1|"),
            again.pseudonymise(b"1234AB|1|")
        );
        assert_ne!(k.pseudonymise(b"1234AB|1|"), k.pseudonymise(b"1234AB|2|"));
        assert!(!format!("{k:?}").contains(&hex::encode(k.pseudonymise(b"x").as_bytes())));
        // A second generate never overwrites a key.
        assert!(matches!(
            PartnerKey::generate(&path),
            Err(KeyError::Io { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        ServerKey::generate(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ServerKey::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
    }

    #[test]
    fn server_pseudonym_differs_from_partner_pseudonym() {
        let dir = tempfile::tempdir().unwrap();
        let pk = PartnerKey::generate(&dir.path().join("p")).unwrap();
        let sk = ServerKey::generate(&dir.path().join("s")).unwrap();
        let p = pk.pseudonymise(b"1234AB|1|");
        assert_ne!(sk.rekey(&p).as_bytes(), p.as_bytes());
        assert_eq!(sk.rekey(&p), sk.rekey(&p));
    }

    #[test]
    fn derived_keys_link_within_a_domain_and_epoch_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootKey::generate(&dir.path().join("root.key")).unwrap();
        let again = RootKey::load(&dir.path().join("root.key")).unwrap();
        let a = root.derive("GM0034", "2026").unwrap();
        let b = again.derive("GM0034", "2026").unwrap();
        let id = a.pseudonymise(b"1234AB|12|A");
        assert_eq!(b.pseudonymise(b"1234AB|12|A"), id);
        assert_eq!(a.id(), b.id());
        assert!(a.id().as_str().starts_with("GM0034.2026."), "{}", a.id());
        assert_eq!(a.domain_and_epoch(), Some(("GM0034", "2026")));
        for (domain, epoch) in [("GM0034", "2027"), ("GM0363", "2026")] {
            let other = root.derive(domain, epoch).unwrap();
            assert_ne!(other.pseudonymise(b"1234AB|12|A"), id);
            assert_ne!(other.id(), a.id());
        }
        // Another root gives other pseudonyms for the same domain and epoch.
        let other_root = RootKey::generate(&dir.path().join("other.key")).unwrap();
        assert_ne!(
            other_root
                .derive("GM0034", "2026")
                .unwrap()
                .pseudonymise(b"1234AB|12|A"),
            id
        );
        assert!(matches!(
            root.derive("GM 0034", "2026"),
            Err(KeyError::Label { what: "domain", .. })
        ));
        assert!(matches!(
            root.derive("GM0034", ""),
            Err(KeyError::Label { what: "epoch", .. })
        ));
        assert_eq!(RootKey::next_epoch("2026").as_deref(), Some("2027"));
        assert_eq!(RootKey::next_epoch("2026-H1"), None);
    }

    #[test]
    fn an_exported_key_file_carries_its_id_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootKey::generate(&dir.path().join("root.key")).unwrap();
        let path = dir.path().join("GM0034-2026.key");
        let exported = root.export("GM0034", "2026", &path).unwrap();
        let loaded = PartnerKey::load(&path).unwrap();
        assert_eq!(loaded.id(), exported.id());
        assert_eq!(loaded.pseudonymise(b"x"), exported.pseudonymise(b"x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // The file never holds the root key.
        let text = std::fs::read_to_string(&path).unwrap();
        let root_text = std::fs::read_to_string(dir.path().join("root.key")).unwrap();
        assert!(!text.contains(root_text.trim()));
        // An id that does not belong to the key is refused.
        let relabelled = text.replace("GM0034.2026.", "GM0034.2027.");
        let digest = exported.id().as_str().rsplit('.').next().unwrap();
        let forged_digest = text.replace(digest, "0000000000000000");
        for (name, content) in [("a.key", relabelled), ("b.key", forged_digest)] {
            let p = dir.path().join(name);
            write_owner_only(&p, &content);
            assert!(
                matches!(PartnerKey::load(&p), Err(KeyError::IdMismatch { .. })),
                "{name}"
            );
        }
        let p = dir.path().join("garbage.key");
        write_owner_only(&p, "key_id = x\nnot a key line\n");
        assert!(matches!(PartnerKey::load(&p), Err(KeyError::Format { .. })));
    }

    fn write_owner_only(path: &Path, content: &str) {
        std::fs::write(path, content).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}
