//! Normalising a household address before hashing, so that one address is
//! one pseudonym however a partner's system wrote it: postcode `1234AB`,
//! house number as a number, addition upper case without separators
//! (`12-A`, `12 a` and `12A` are one address).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("postcode is niet 4 cijfers en 2 letters")]
    Postcode,
    #[error("huisnummer is geen getal van 1 tot en met 99999")]
    HouseNumber,
    #[error("toevoeging is langer dan 6 letters of cijfers")]
    Addition,
}

/// A Dutch postcode as 6 ASCII bytes, `1234AB`.
pub fn postcode(raw: &str) -> Result<[u8; 6], AddressError> {
    let compact: Vec<u8> = raw
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| b.to_ascii_uppercase())
        .collect();
    let pc: [u8; 6] = compact.try_into().map_err(|_| AddressError::Postcode)?;
    let ok = pc[0] != b'0'
        && pc[..4].iter().all(u8::is_ascii_digit)
        && pc[4..].iter().all(u8::is_ascii_uppercase);
    if ok {
        Ok(pc)
    } else {
        Err(AddressError::Postcode)
    }
}

pub fn house_number(raw: &str) -> Result<u32, AddressError> {
    let n: u32 = raw.trim().parse().map_err(|_| AddressError::HouseNumber)?;
    if (1..=99_999).contains(&n) {
        Ok(n)
    } else {
        Err(AddressError::HouseNumber)
    }
}

/// The addition without separators, upper case: `-a`, ` A`, `a` → `A`.
pub fn addition(raw: &str) -> Result<String, AddressError> {
    let out: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '/' | '_' | '.'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if out.len() <= 6 && out.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(out)
    } else {
        Err(AddressError::Addition)
    }
}

/// The normalised household key that is hashed: `1234AB|12|A`.
pub fn household_key(pc: &[u8; 6], number: u32, addition: &str) -> String {
    format!(
        "{}|{number}|{addition}",
        std::str::from_utf8(pc).expect("ASCII postcode")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spellings_of_one_address_agree() {
        let key = |p: &str, n: &str, a: &str| {
            household_key(
                &postcode(p).unwrap(),
                house_number(n).unwrap(),
                &addition(a).unwrap(),
            )
        };
        let k = key("1234AB", "12", "A");
        assert_eq!(key("1234 ab", " 12", "-a"), k);
        assert_eq!(key(" 1234ab ", "12", " a "), k);
        assert_ne!(key("1234AB", "12", ""), k);
        assert_eq!(postcode("0123AB"), Err(AddressError::Postcode));
        assert_eq!(postcode("1234A"), Err(AddressError::Postcode));
        assert_eq!(house_number("0"), Err(AddressError::HouseNumber));
        assert_eq!(house_number("12a"), Err(AddressError::HouseNumber));
        assert_eq!(addition("toolonga"), Err(AddressError::Addition));
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(d in "[1-9][0-9]{3}", l in "[a-zA-Z]{2}", sep in "[ ]{0,2}", add in "[a-zA-Z0-9]{0,3}") {
            let pc = postcode(&format!("{d}{sep}{l}")).unwrap();
            let again = postcode(std::str::from_utf8(&pc).unwrap()).unwrap();
            prop_assert_eq!(pc, again);
            let a = addition(&format!("-{add}")).unwrap();
            prop_assert_eq!(addition(&a).unwrap(), a);
        }
    }
}
