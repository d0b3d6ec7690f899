//! The signal-type catalogue: which signal types exist, what they count and
//! whether they are a risk or a protective factor. Configuration, not code:
//! the defaults mirror Dutch practice (docs/product.md).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("signal type names are 1 to 48 characters of a-z, 0-9 and _, starting with a letter")]
    Name,
    #[error("signal type `{0}` is listed twice")]
    Duplicate(String),
    #[error("the catalogue lists no signal types")]
    Empty,
}

/// A validated signal-type name such as `huurachterstand`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct SignalTypeName(String);

impl SignalTypeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SignalTypeName {
    type Err = CatalogueError;
    fn from_str(s: &str) -> Result<Self, CatalogueError> {
        let ok = (1..=48).contains(&s.len())
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(SignalTypeName(s.to_owned()))
        } else {
            Err(CatalogueError::Name)
        }
    }
}

impl TryFrom<String> for SignalTypeName {
    type Error = CatalogueError;
    fn try_from(s: String) -> Result<Self, CatalogueError> {
        s.parse()
    }
}

impl fmt::Display for SignalTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SignalTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one signal counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalUnit {
    Household,
    Person,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Risk,
    Protective,
}

/// One entry of the catalogue, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalTypeDef {
    pub name: SignalTypeName,
    /// Dutch label shown to users.
    pub description: String,
    pub unit: SignalUnit,
    pub kind: SignalKind,
    /// Whether the type is a payment arrear (rent, energy, drinking water,
    /// health premium): it joins the derived indicator of households with
    /// any payment arrear.
    #[serde(default)]
    pub payment_arrears: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    types: Vec<SignalTypeDef>,
}

impl Catalogue {
    pub fn new(types: Vec<SignalTypeDef>) -> Result<Self, CatalogueError> {
        if types.is_empty() {
            return Err(CatalogueError::Empty);
        }
        for (i, t) in types.iter().enumerate() {
            if types[..i].iter().any(|u| u.name == t.name) {
                return Err(CatalogueError::Duplicate(t.name.to_string()));
            }
        }
        Ok(Catalogue { types })
    }

    /// The default types (docs/product.md).
    pub fn dutch_defaults() -> Self {
        use SignalKind::*;
        use SignalUnit::*;
        let def = |name: &str, description: &str, unit, kind| SignalTypeDef {
            name: name.parse().expect("valid default name"),
            description: description.to_owned(),
            unit,
            kind,
            payment_arrears: [
                "huurachterstand",
                "energieachterstand",
                "drinkwaterachterstand",
                "zorgpremieachterstand",
            ]
            .contains(&name),
        };
        Catalogue::new(vec![
            def("huurachterstand", "Huurachterstand", Household, Risk),
            def(
                "energieachterstand",
                "Betalingsachterstand energie",
                Household,
                Risk,
            ),
            def(
                "eindelevering_energie",
                "Aangekondigde beëindiging energielevering",
                Household,
                Risk,
            ),
            def(
                "drinkwaterachterstand",
                "Betalingsachterstand drinkwater",
                Household,
                Risk,
            ),
            def(
                "zorgpremieachterstand",
                "Achterstand zorgpremie",
                Person,
                Risk,
            ),
            def("schoolverzuim", "Schoolverzuim", Person, Risk),
            def(
                "leerprestatie_daling",
                "Dalende leerprestaties",
                Person,
                Risk,
            ),
            def("overlastmelding", "Overlastmelding", Household, Risk),
            def(
                "verwaarlozing_woonomgeving",
                "Verwaarlozing woonomgeving",
                Household,
                Risk,
            ),
            def(
                "deelname_jeugdactiviteit",
                "Deelname aan jeugdactiviteit (kans)",
                Person,
                Protective,
            ),
        ])
        .expect("valid defaults")
    }

    pub fn types(&self) -> &[SignalTypeDef] {
        &self.types
    }

    pub fn get(&self, name: &str) -> Option<&SignalTypeDef> {
        self.types.iter().find(|t| t.name.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!("huurachterstand".parse::<SignalTypeName>().is_ok());
        for bad in [
            "",
            "Huur",
            "1abc",
            "huur-achterstand",
            "huur achterstand",
            &"a".repeat(49),
        ] {
            assert!(bad.parse::<SignalTypeName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_duplicates() {
        let c = Catalogue::dutch_defaults();
        assert_eq!(c.types().len(), 10);
        assert!(c.get("schoolverzuim").is_some());
        let dup = vec![c.types()[0].clone(), c.types()[0].clone()];
        assert_eq!(
            Catalogue::new(dup),
            Err(CatalogueError::Duplicate("huurachterstand".into()))
        );
        assert_eq!(Catalogue::new(vec![]), Err(CatalogueError::Empty));
    }
}
