//! CBS area codes: `GM` + 4 digits, `WK` + 6, `BU` + 8 characters.
//!
//! The wijk and buurt parts may hold upper-case letters (Amsterdam uses
//! `WK0363AA`, `BU0363AA01`); the gemeente part is always digits. Codes are
//! kept as fixed-width ASCII arrays without the prefix, so they are `Copy` and
//! make short, ordered storage keys.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AreaError {
    #[error("expected {expected}, got {len} characters")]
    Length { expected: &'static str, len: usize },
    #[error("must start with {0}")]
    Prefix(&'static str),
    #[error("the gemeente part must be 4 digits")]
    GemeenteDigits,
    #[error("the wijk and buurt parts may hold only digits and upper-case letters")]
    Characters,
}

/// Level of an area in the CBS hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AreaLevel {
    Buurt,
    Wijk,
    Gemeente,
}

impl AreaLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AreaLevel::Buurt => "buurt",
            AreaLevel::Wijk => "wijk",
            AreaLevel::Gemeente => "gemeente",
        }
    }
}

impl FromStr for AreaLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "buurt" => Ok(AreaLevel::Buurt),
            "wijk" => Ok(AreaLevel::Wijk),
            "gemeente" => Ok(AreaLevel::Gemeente),
            other => Err(format!(
                "unknown area level `{other}`: expected buurt, wijk or gemeente"
            )),
        }
    }
}

fn parse_fixed<const N: usize>(
    s: &str,
    prefix: &'static str,
    expected: &'static str,
) -> Result<[u8; N], AreaError> {
    let body = s.strip_prefix(prefix).ok_or(AreaError::Prefix(prefix))?;
    if body.len() != N {
        return Err(AreaError::Length {
            expected,
            len: s.len(),
        });
    }
    let bytes: [u8; N] = body.as_bytes().try_into().map_err(|_| AreaError::Length {
        expected,
        len: s.len(),
    })?;
    if !bytes[..4].iter().all(u8::is_ascii_digit) {
        return Err(AreaError::GemeenteDigits);
    }
    if !bytes[4..]
        .iter()
        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return Err(AreaError::Characters);
    }
    Ok(bytes)
}

macro_rules! area_code {
    ($name:ident, $n:literal, $prefix:literal, $expected:literal) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $n]);

        impl $name {
            /// The code without its prefix, as stored.
            pub fn body(&self) -> &[u8; $n] {
                &self.0
            }

            pub fn from_body(body: [u8; $n]) -> Result<Self, AreaError> {
                let s = std::str::from_utf8(&body).map_err(|_| AreaError::Characters)?;
                format!("{}{}", $prefix, s).parse()
            }

            fn body_str(&self) -> &str {
                // Validated ASCII at construction.
                std::str::from_utf8(&self.0).unwrap_or("?")
            }
        }

        impl FromStr for $name {
            type Err = AreaError;
            fn from_str(s: &str) -> Result<Self, AreaError> {
                parse_fixed::<$n>(s, $prefix, $expected).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.body_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

area_code!(GemeenteCode, 4, "GM", "GM + 4 digits");
area_code!(WijkCode, 6, "WK", "WK + 6 characters");
area_code!(BuurtCode, 8, "BU", "BU + 8 characters");

impl WijkCode {
    pub fn gemeente(&self) -> GemeenteCode {
        GemeenteCode(self.0[..4].try_into().expect("4 of 6"))
    }
}

impl BuurtCode {
    pub fn wijk(&self) -> WijkCode {
        WijkCode(self.0[..6].try_into().expect("6 of 8"))
    }
    pub fn gemeente(&self) -> GemeenteCode {
        GemeenteCode(self.0[..4].try_into().expect("4 of 8"))
    }
}

/// Any area code, of any level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AreaCode {
    Gemeente(GemeenteCode),
    Wijk(WijkCode),
    Buurt(BuurtCode),
}

impl AreaCode {
    pub fn level(&self) -> AreaLevel {
        match self {
            AreaCode::Gemeente(_) => AreaLevel::Gemeente,
            AreaCode::Wijk(_) => AreaLevel::Wijk,
            AreaCode::Buurt(_) => AreaLevel::Buurt,
        }
    }

    pub fn gemeente(&self) -> GemeenteCode {
        match self {
            AreaCode::Gemeente(g) => *g,
            AreaCode::Wijk(w) => w.gemeente(),
            AreaCode::Buurt(b) => b.gemeente(),
        }
    }

    /// The enclosing area, `None` for a gemeente.
    pub fn parent(&self) -> Option<AreaCode> {
        match self {
            AreaCode::Gemeente(_) => None,
            AreaCode::Wijk(w) => Some(AreaCode::Gemeente(w.gemeente())),
            AreaCode::Buurt(b) => Some(AreaCode::Wijk(b.wijk())),
        }
    }
}

impl FromStr for AreaCode {
    type Err = AreaError;
    fn from_str(s: &str) -> Result<Self, AreaError> {
        match s.get(..2) {
            Some("GM") => s.parse().map(AreaCode::Gemeente),
            Some("WK") => s.parse().map(AreaCode::Wijk),
            Some("BU") => s.parse().map(AreaCode::Buurt),
            _ => Err(AreaError::Prefix("GM, WK or BU")),
        }
    }
}

impl fmt::Display for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AreaCode::Gemeente(c) => c.fmt(f),
            AreaCode::Wijk(c) => c.fmt(f),
            AreaCode::Buurt(c) => c.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes_of_every_level() {
        let b: BuurtCode = "BU00340101".parse().unwrap();
        assert_eq!(b.wijk().to_string(), "WK003401");
        assert_eq!(b.gemeente().to_string(), "GM0034");
        let a: BuurtCode = "BU0363AA01".parse().unwrap();
        assert_eq!(a.wijk().to_string(), "WK0363AA");
        assert_eq!(
            "WK0363AA"
                .parse::<AreaCode>()
                .unwrap()
                .parent()
                .unwrap()
                .to_string(),
            "GM0363"
        );
    }

    #[test]
    fn rejects_malformed_codes_with_a_reason() {
        assert_eq!(
            "BU0034010".parse::<BuurtCode>(),
            Err(AreaError::Length {
                expected: "BU + 8 characters",
                len: 9
            })
        );
        assert_eq!(
            "WK003401".parse::<BuurtCode>(),
            Err(AreaError::Prefix("BU"))
        );
        assert_eq!(
            "GM03A4".parse::<GemeenteCode>(),
            Err(AreaError::GemeenteDigits)
        );
        assert_eq!("WK0363aa".parse::<WijkCode>(), Err(AreaError::Characters));
        assert!("BU0034010é".parse::<BuurtCode>().is_err());
        assert!("XX1234".parse::<AreaCode>().is_err());
    }

    proptest::proptest! {
        #[test]
        fn display_round_trips(body in "[0-9]{4}[0-9A-Z]{4}") {
            let code: BuurtCode = format!("BU{body}").parse().unwrap();
            proptest::prop_assert_eq!(code.to_string().parse::<BuurtCode>().unwrap(), code);
            proptest::prop_assert_eq!(BuurtCode::from_body(*code.body()).unwrap(), code);
        }
    }
}
