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

/// A simulated partner organisation and the signal types it exports.
#[derive(Debug, Clone, Copy)]
pub struct Partner {
    /// Certificate name.
    pub name: &'static str,
    pub organisation: &'static str,
    pub types: &'static [&'static str],
    /// Field separator of its export, as its own system writes it.
    pub delimiter: char,
}

/// The three partners of the demo.
pub const PARTNERS: [Partner; 3] = [
    Partner {
        name: "woningcorporatie",
        organisation: "Woningcorporatie De Vaart",
        types: &["huurachterstand"],
        delimiter: ';',
    },
    Partner {
        name: "energieleverancier",
        organisation: "Energieleverancier Flevostroom",
        types: &["energieachterstand", "eindelevering_energie"],
        delimiter: ',',
    },
    Partner {
        name: "school",
        organisation: "Scholengroep Almere-Stad",
        types: &["schoolverzuim"],
        delimiter: ',',
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

/// The monthly signal model: base rates per type, eight times higher for
/// at-risk households, and in `rising` wijken a rise that doubles the rates
/// over the last `rise_months` months.
pub fn signals(
    m: &Municipality,
    from: Month,
    to: Month,
    rising: &[WijkCode],
    rise_months: u32,
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
            let mut hit = |p: f64| rng.random_bool((p * f).min(1.0));
            let rent = h.social_rent && hit(0.025);
            let energy = hit(0.015);
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

/// A partner's export of its signals, written the way its own system would:
/// postcodes with or without a space, additions with separators.
pub fn export_csv(m: &Municipality, partner: &Partner, signals: &[SimSignal], seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = partner.delimiter;
    let mut out = format!("postcode{d}huisnummer{d}toevoeging{d}signaaltype{d}maand\n");
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
        let _ = writeln!(
            out,
            "{pc}{d}{}{d}{addition}{d}{}{d}{}",
            h.number, s.signal_type, s.month
        );
    }
    out
}
