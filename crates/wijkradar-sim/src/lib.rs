//! A synthetic municipality for the demo, the tests and the benchmarks:
//! households spread over the real CBS wijken and buurten of a gemeente in
//! proportion to the real 2024 dwelling counts, with synthetic addresses, a
//! postcode table in CBS's layout, and monthly signals from three simulated
//! partners, with a rise built into chosen wijken.
//!
//! Nothing here is real personal data: addresses are generated, and only the
//! area codes, names and dwelling counts come from CBS (Bron: CBS).
//! Deterministic for a given seed.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wijkradar_domain::hierarchy::Dwellings;
use wijkradar_domain::{AreaCode, BuurtCode, GemeenteCode, Hierarchy, Month, WijkCode};

/// One synthetic household at a synthetic address.
#[derive(Debug, Clone)]
pub struct Household {
    pub postcode: [u8; 6],
    pub number: u32,
    pub addition: &'static str,
    pub buurt: BuurtCode,
    /// Carries most of the risk: problems cluster in few households.
    pub at_risk: bool,
    pub social_rent: bool,
    pub children: bool,
}

/// How a simulated partner's own system writes its export: the layouts of
/// the example configurations in `deploy/partners/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Windows-1252, `;`, Dutch dates, months of arrears (deploy/partners/woningcorporatie.toml).
    Woningcorporatie,
    /// UTF-8 with byte order mark, `,`, ISO dates, a `soort` column (energieleverancier.toml).
    Energieleverancier,
    /// UTF-8, `;`, Dutch dates, the pupil's BSN (leerplicht.toml).
    Leerplicht,
}

/// A simulated partner organisation and the signal types it exports.
#[derive(Debug, Clone, Copy)]
pub struct Partner {
    /// Certificate name.
    pub name: &'static str,
    pub organisation: &'static str,
    pub types: &'static [&'static str],
    pub layout: Layout,
    /// Its agent configuration, the example of its kind in deploy/partners/.
    pub config: &'static str,
}

/// The three partners of the demo.
pub const PARTNERS: [Partner; 3] = [
    Partner {
        name: "woningcorporatie",
        organisation: "Woningcorporatie De Vaart",
        types: &["huurachterstand"],
        layout: Layout::Woningcorporatie,
        config: include_str!("../../../deploy/partners/woningcorporatie.toml"),
    },
    Partner {
        name: "energieleverancier",
        organisation: "Energieleverancier Flevostroom",
        types: &["energieachterstand", "eindelevering_energie"],
        layout: Layout::Energieleverancier,
        config: include_str!("../../../deploy/partners/energieleverancier.toml"),
    },
    Partner {
        name: "leerplicht",
        organisation: "Leerplicht Almere",
        types: &["schoolverzuim"],
        layout: Layout::Leerplicht,
        config: include_str!("../../../deploy/partners/leerplicht.toml"),
    },
];

/// One generated signal: which household, which type, which month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimSignal {
    pub household: usize,
    pub signal_type: &'static str,
    pub month: Month,
}

#[derive(Debug, Clone)]
pub struct Municipality {
    pub gemeente: GemeenteCode,
    pub households: Vec<Household>,
    /// What the generator had to decide about the CBS data, for the user (Dutch).
    pub notes: Vec<String>,
}

/// Builds the households of a gemeente: each wijk gets its 2024 dwelling
/// count (CBS KWB), spread evenly over its 2023 buurten, scaled by `scale`.
pub fn municipality(
    hierarchy: &Hierarchy,
    dwellings: &Dwellings,
    gemeente: GemeenteCode,
    scale: f64,
    seed: u64,
) -> Municipality {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut notes = Vec::new();
    let mut households = Vec::new();
    let mut pc6_counter = 0u32;
    let mut missing = Vec::new();
    for wijk in hierarchy.wijken_of(gemeente) {
        let Some(&n) = dwellings.per_area.get(&AreaCode::Wijk(wijk)) else {
            missing.push(wijk.to_string());
            continue;
        };
        let buurten: Vec<BuurtCode> = hierarchy.buurten_of_wijk(wijk).collect();
        if buurten.is_empty() {
            continue;
        }
        let per_buurt = ((n as f64 * scale) / buurten.len() as f64).round() as u32;
        for buurt in buurten {
            for i in 0..per_buurt {
                // About 16 addresses per 6-position postcode, as in practice.
                if i % 16 == 0 {
                    pc6_counter += 1;
                }
                let digits = 1300 + pc6_counter / 676;
                let letters = [
                    b'A' + (pc6_counter % 676 / 26) as u8,
                    b'A' + (pc6_counter % 26) as u8,
                ];
                let mut postcode = [0u8; 6];
                postcode[..4].copy_from_slice(digits.to_string().as_bytes());
                postcode[4..].copy_from_slice(&letters);
                households.push(Household {
                    postcode,
                    number: i % 16 + 1,
                    addition: ["", "", "", "A", "B"][rng.random_range(0..5)],
                    buurt,
                    at_risk: rng.random_bool(0.07),
                    social_rent: rng.random_bool(0.35),
                    children: rng.random_bool(0.30),
                });
            }
        }
    }
    // House numbers repeat per postcode only with different additions; make
    // every address unique by numbering within the postcode.
    dedupe_addresses(&mut households);
    if !missing.is_empty() {
        notes.push(format!(
            "{} wijk(en) uit de indeling van 2023 zonder woningaantal in 2024, daarom zonder huishoudens: {}",
            missing.len(),
            missing.join(", ")
        ));
    }
    notes.push("de woningen van een wijk zijn gelijk over haar buurten verdeeld (buurtcijfers zitten niet in de meegeleverde CBS-data)".into());
    Municipality {
        gemeente,
        households,
        notes,
    }
}

fn dedupe_addresses(households: &mut [Household]) {
    let mut last: Option<[u8; 6]> = None;
    let mut number = 0;
    for h in households.iter_mut() {
        if last != Some(h.postcode) {
            last = Some(h.postcode);
            number = 0;
        }
        number += 1;
        h.number = number;
    }
}

/// An intervention's built-in effect: in `wijk`, from month `from` on, the
/// payment-arrears types (rent and energy) happen `factor` times as often.
#[derive(Debug, Clone, Copy)]
pub struct Effect {
    pub wijk: WijkCode,
    pub from: Month,
    pub factor: f64,
}

/// The monthly signal model: base rates per type, eight times higher for
/// at-risk households, in `rising` wijken a rise that doubles the rates
/// over the last `rise_months` months, and an intervention's `effect`.
pub fn signals(
    m: &Municipality,
    from: Month,
    to: Month,
    rising: &[WijkCode],
    rise_months: u32,
    effect: Option<Effect>,
    seed: u64,
) -> Vec<SimSignal> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5157_4e41);
    let total = to.index().saturating_sub(from.index()) + 1;
    let mut out = Vec::new();
    for month in from.through(to) {
        let t = month.index() - from.index();
        // Months into the rise: 1 in its first month, rise_months in the last.
        let into_rise = f64::from((t + rise_months + 1).saturating_sub(total));
        for (i, h) in m.households.iter().enumerate() {
            let rise = if rising.contains(&h.buurt.wijk()) {
                1.0 + into_rise / f64::from(rise_months.max(1))
            } else {
                1.0
            };
            let f = if h.at_risk { 8.0 } else { 0.35 } * rise;
            let treated = effect
                .filter(|e| e.wijk == h.buurt.wijk() && month >= e.from)
                .map_or(1.0, |e| e.factor);
            let mut hit = |p: f64| rng.random_bool((p * f).min(1.0));
            let rent = h.social_rent && hit(0.025 * treated);
            let energy = hit(0.015 * treated);
            let school = h.children && hit(0.015);
            let cut_off = energy && rng.random_bool(0.2);
            for (signal_type, happened) in [
                ("huurachterstand", rent),
                ("energieachterstand", energy),
                ("eindelevering_energie", cut_off),
                ("schoolverzuim", school),
            ] {
                if happened {
                    out.push(SimSignal {
                        household: i,
                        signal_type,
                        month,
                    });
                }
            }
        }
    }
    out
}

/// The postcode table in CBS's layout (`PC6,Huisnummer,Buurt2023,...`,
/// codes without prefix).
pub fn postcode_table_csv(m: &Municipality) -> String {
    let mut out = String::from("PC6,Huisnummer,Buurt2023,Wijk2023,Gem2023\n");
    for h in &m.households {
        let b = h.buurt.to_string();
        let _ = writeln!(
            out,
            "{},{},{},{},{}",
            std::str::from_utf8(&h.postcode).expect("ASCII"),
            h.number,
            &b[2..],
            &b[2..8],
            &b[2..6]
        );
    }
    out
}

/// A synthetic BSN for the child of household `i` (below 1,000,000): eight
/// digits from the index, the ninth chosen so that the number passes the
/// eleven-test. Not a real person's number: real BSNs are issued from
/// 1,000,000 upwards in other ranges, and these are made up.
pub fn child_bsn(i: usize) -> String {
    let mut base = 200_000_000 + (i as u64) * 100;
    loop {
        let digits: Vec<i64> = format!("{base:09}")
            .bytes()
            .map(|b| i64::from(b - b'0'))
            .collect();
        let sum: i64 = (0..8).map(|k| (9 - k as i64) * digits[k]).sum();
        // sum − d9 ≡ 0 (mod 11), so d9 = sum mod 11, which must be a digit.
        let d9 = sum.rem_euclid(11);
        if d9 < 10 {
            return format!("{}{d9}", &format!("{base:09}")[..8]);
        }
        base += 10;
    }
}

/// A partner's export of its signals, written the way its own system would
/// (see [`Layout`]): postcodes with or without a space, additions with
/// separators, columns the agent never reads, and rows that are no signal.
/// Bytes, because some systems write Windows-1252.
pub fn export_csv(
    m: &Municipality,
    partner: &Partner,
    signals: &[SimSignal],
    seed: u64,
) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = String::new();
    let header = match partner.layout {
        Layout::Woningcorporatie => {
            "Huurcontract;Postcode;Huisnummer;Toevoeging;Peildatum;Achterstand maanden;Achterstand bedrag (\u{20ac})\r\n"
        }
        Layout::Energieleverancier => {
            "\u{feff}klantnummer,postcode,huisnr,toev,datum_signaal,soort\r\n"
        }
        Layout::Leerplicht => {
            "BSN leerling;Postcode;Huisnummer;Toevoeging;Datum melding;Soort verzuim;School\n"
        }
    };
    out.push_str(header);
    for s in signals
        .iter()
        .filter(|s| partner.types.contains(&s.signal_type))
    {
        let h = &m.households[s.household];
        let pc = std::str::from_utf8(&h.postcode).expect("ASCII");
        let pc = if rng.random_bool(0.3) {
            format!("{} {}", &pc[..4], pc[4..].to_lowercase())
        } else {
            pc.to_owned()
        };
        let addition = match (h.addition, rng.random_range(0..3)) {
            ("", _) => String::new(),
            (a, 0) => format!("-{}", a.to_lowercase()),
            (a, _) => a.to_owned(),
        };
        let n = h.number;
        let day = rng.random_range(1..=28);
        let (y, mo) = (s.month.year(), s.month.month());
        let _ = match partner.layout {
            Layout::Woningcorporatie => {
                // Also a tenant one month behind: in the export, not a signal.
                if rng.random_bool(0.3) {
                    let _ = write!(
                        out,
                        "HC-{:05};{pc};{n};{addition};{day:02}-{mo:02}-{y};1;{},{:02}\r\n",
                        s.household,
                        rng.random_range(400..900),
                        rng.random_range(0..100)
                    );
                }
                write!(
                    out,
                    "HC-{:05};{pc};{n};{addition};{day:02}-{mo:02}-{y};{};{}.{:03},{:02}\r\n",
                    s.household,
                    rng.random_range(2..7),
                    rng.random_range(1..4),
                    rng.random_range(0..1000),
                    rng.random_range(0..100)
                )
            }
            Layout::Energieleverancier => {
                let soort = if s.signal_type == "eindelevering_energie" {
                    "AFSLUITING"
                } else {
                    "ACHTERSTAND"
                };
                write!(
                    out,
                    "{},{pc},{n},{addition},{y}-{mo:02}-{day:02},{soort}\r\n",
                    880_000 + s.household
                )
            }
            Layout::Leerplicht => {
                let soort =
                    ["Ongeoorloofd", "Relatief verzuim", "Luxeverzuim"][rng.random_range(0..3)];
                writeln!(
                    out,
                    "{};{pc};{n};{addition};{day}-{mo}-{y};{soort};Scholengroep Almere-Stad",
                    child_bsn(s.household)
                )
            }
        };
    }
    match partner.layout {
        Layout::Woningcorporatie => encode_windows_1252(&out),
        _ => out.into_bytes(),
    }
}

/// Windows-1252 bytes of text that holds only characters it has (ASCII and €).
fn encode_windows_1252(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            '\u{20ac}' => 0x80,
            c if c.is_ascii() => c as u8,
            _ => b'?',
        })
        .collect()
}

#[cfg(test)]
mod export_tests {
    use super::*;

    #[test]
    fn child_bsns_pass_the_eleven_test_and_differ() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..5000 {
            let b = child_bsn(i);
            assert_eq!(b.len(), 9);
            let d: Vec<i64> = b.bytes().map(|c| i64::from(c - b'0')).collect();
            let sum: i64 = (0..8).map(|k| (9 - k as i64) * d[k]).sum::<i64>() - d[8];
            assert_eq!(sum % 11, 0, "{b}");
            assert!(seen.insert(b));
        }
    }
}
