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
    #[error("BSN is geen 8 of 9 cijfers")]
    BsnFormat,
    #[error("BSN voldoet niet aan de elfproef")]
    BsnElevenTest,
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

/// A BSN as its 9 digits, after the eleven-test: spaces, dots and dashes
/// are dropped, and an 8-digit BSN (a leading zero lost by a spreadsheet)
/// gets its zero back. The test: 9·d1 + 8·d2 + … + 2·d8 − 1·d9 is a
/// multiple of 11, and the number is not zero.
pub fn bsn(raw: &str) -> Result<[u8; 9], AddressError> {
    let digits: Vec<u8> = raw
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'.' | b'-'))
        .collect();
    if !(8..=9).contains(&digits.len()) || !digits.iter().all(u8::is_ascii_digit) {
        return Err(AddressError::BsnFormat);
    }
    let mut out = [b'0'; 9];
    out[9 - digits.len()..].copy_from_slice(&digits);
    if eleven_test(&out) {
        Ok(out)
    } else {
        Err(AddressError::BsnElevenTest)
    }
}

fn eleven_test(d: &[u8; 9]) -> bool {
    let mut sum: i64 = 0;
    for (i, &c) in d.iter().enumerate() {
        let weight = if i == 8 { -1 } else { 9 - i as i64 };
        sum += weight * i64::from(c - b'0');
    }
    sum % 11 == 0 && d.iter().any(|&c| c != b'0')
}

/// The normalised person key that is hashed: `bsn|123456782`. The prefix
/// keeps person keys apart from household keys.
pub fn person_key(bsn: &[u8; 9]) -> String {
    format!("bsn|{}", std::str::from_utf8(bsn).expect("ASCII digits"))
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

    #[test]
    fn the_eleven_test_by_hand() {
        // 9·1 + 8·1 + 7·1 + 6·1 + 5·1 + 4·1 + 3·1 + 2·0 − 1·2 = 42 − 2 = 40: no.
        assert_eq!(bsn("111111102"), Err(AddressError::BsnElevenTest));
        // 9·1 + 8·1 + 7·1 + 6·1 + 5·1 + 4·1 + 3·1 + 2·1 − 0 = 44 = 4·11: yes.
        assert_eq!(&bsn("111111110").unwrap(), b"111111110");
        // The standard test number: 9·1+8·2+7·3+6·4+5·5+4·6+3·7+2·8 − 2 = 176 − 2 = 174? no:
        // 9+16+21+24+25+24+21+16 = 156, 156 − 2 = 154 = 14·11: yes.
        assert_eq!(&bsn("123456782").unwrap(), b"123456782");
        assert_eq!(&bsn(" 1234.56.782 ").unwrap(), b"123456782");
        // 8 digits: a lost leading zero. 0·9+1·8+1·7+...: 8+7+6+5+4+3+2·1=35, 35 − 3 = 32: no.
        assert_eq!(bsn("11111113"), Err(AddressError::BsnElevenTest));
        assert_eq!(bsn("000000000"), Err(AddressError::BsnElevenTest));
        assert_eq!(bsn("12345678a"), Err(AddressError::BsnFormat));
        assert_eq!(bsn("1234567"), Err(AddressError::BsnFormat));
        assert_eq!(bsn("1234567890"), Err(AddressError::BsnFormat));
        assert_ne!(person_key(b"123456782"), household_key(b"1234AB", 1, ""));
    }

    /// The eleven-test by its definition, on integers.
    fn passes(n: u64) -> bool {
        let digits: Vec<i64> = format!("{n:09}")
            .bytes()
            .map(|b| i64::from(b - b'0'))
            .collect();
        let sum: i64 = (0..8).map(|i| (9 - i as i64) * digits[i]).sum::<i64>() - digits[8];
        n != 0 && sum.rem_euclid(11) == 0
    }

    proptest! {
        #[test]
        fn bsn_accepts_exactly_the_numbers_that_pass(n in 0u64..1_000_000_000) {
            let raw = format!("{n:09}");
            prop_assert_eq!(bsn(&raw).is_ok(), passes(n));
        }

        #[test]
        fn one_changed_digit_fails_the_eleven_test(n in 1u64..1_000_000_000, pos in 0usize..9, delta in 1u8..10) {
            // Make a passing number: fix the last digit where possible.
            let mut d: Vec<u8> = format!("{n:09}").into_bytes();
            let valid = (0..10u8).find(|&last| { d[8] = b'0' + last; passes(std::str::from_utf8(&d).unwrap().parse().unwrap()) });
            prop_assume!(valid.is_some());
            let good = d.clone();
            d[pos] = b'0' + (d[pos] - b'0' + delta) % 10;
            prop_assume!(d.iter().any(|&c| c != b'0'));
            prop_assert!(bsn(std::str::from_utf8(&good).unwrap()).is_ok());
            prop_assert!(bsn(std::str::from_utf8(&d).unwrap()).is_err(), "{}", std::str::from_utf8(&d).unwrap());
        }

        #[test]
        fn spellings_of_an_address_give_one_key(d in "[1-9][0-9]{3}", l in "[A-Z]{2}", n in 1u32..99_999, add in "[A-Z0-9]{0,3}", lower in any::<bool>(), space in any::<bool>(), sep in "[-/ ]?") {
            let canonical = household_key(&postcode(&format!("{d}{l}")).unwrap(), n, &addition(&add).unwrap());
            let pc = format!("{d}{}{}", if space { " " } else { "" }, if lower { l.to_lowercase() } else { l.clone() });
            let a = format!("{sep}{}", if lower { add.to_lowercase() } else { add.clone() });
            let spelled = household_key(&postcode(&pc).unwrap(), house_number(&format!(" {n} ")).unwrap(), &addition(&a).unwrap());
            prop_assert_eq!(spelled, canonical);
        }

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
