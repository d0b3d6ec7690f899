//! Pseudonyms as opaque 32-byte values. Computing them is the pseudonym
//! crate's job; here they only exist so that nothing can print them.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PseudonymError {
    #[error("must be 32 bytes, got {0}")]
    Length(usize),
}

macro_rules! pseudonym {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                $name(bytes)
            }
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = PseudonymError;
            fn try_from(b: &[u8]) -> Result<Self, PseudonymError> {
                b.try_into().map($name).map_err(|_| PseudonymError::Length(b.len()))
            }
        }

        /// Never prints the value: pseudonyms must not reach logs.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

pseudonym!(
    /// HMAC-SHA256 of a normalised identifier under the domain's partner key,
    /// as computed by the agent.
    PartnerPseudonym
);
pseudonym!(
    /// The partner pseudonym keyed once more under the aggregator's own key;
    /// the only form the store ever holds.
    ServerPseudonym
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let p = PartnerPseudonym::from_bytes([0xab; 32]);
        assert_eq!(format!("{p:?}"), "PartnerPseudonym(..)");
        assert_eq!(
            PartnerPseudonym::try_from(&[1u8; 31][..]),
            Err(PseudonymError::Length(31))
        );
    }
}
