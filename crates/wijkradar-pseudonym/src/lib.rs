//! Keyed pseudonymisation (PRIVACY.md, "Pseudonyms").
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
    #[error("key file {path} does not hold 64 hex characters")]
    Format { path: PathBuf },
    #[error("the system random generator failed")]
    Random,
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

    fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(self.0)));
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    fn read(path: &Path) -> Result<KeyBytes, KeyError> {
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
        let mut k = KeyBytes([0; 32]);
        hex::decode_to_slice(text.trim(), &mut k.0).map_err(|_| KeyError::Format {
            path: path.to_owned(),
        })?;
        Ok(k)
    }
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

            /// Loads a key file, refusing one that others can read.
            pub fn load(path: &Path) -> Result<Self, KeyError> {
                Ok(Self::from_bytes(&KeyBytes::read(path)?))
            }

            fn from_bytes(bytes: &KeyBytes) -> Self {
                $name { hmac: hmac::Key::new(hmac::HMAC_SHA256, &bytes.0), id: bytes.id() }
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
    /// The pseudonym of a normalised identifier (for example `1234AB|12|A`).
    pub fn pseudonymise(&self, normalised_identifier: &[u8]) -> PartnerPseudonym {
        PartnerPseudonym::from_bytes(self.tag(normalised_identifier))
    }
}

impl ServerKey {
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
}
