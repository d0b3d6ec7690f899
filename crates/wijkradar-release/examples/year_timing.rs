//! How long a year's disclosure audit takes with its quarters only and with
//! its quarters and their months in one system (`Link::NestedParts`, what
//! the server does), on one municipality with random counts:
//!
//! ```sh
//! cargo run --release -p wijkradar-release --example year_timing -- GM0034 8
//! ```
//!
//! (gemeente code, mean households per buurt and month). Prints the time of
//! each step and how many cells each year release hides.

use wijkradar_domain::{BuurtCode, CellTotal, GemeenteCode, Hierarchy};
use wijkradar_release::{GemeenteTable, Link, ReleasePolicy, Released, Threshold};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let g: GemeenteCode = std::env::args()
        .nth(1)
        .unwrap_or("GM0363".into())
        .parse()
        .unwrap();
    let mean: u64 = std::env::args().nth(2).map_or(8, |m| m.parse().unwrap());
    let h = Hierarchy::netherlands_2023();
    let table = GemeenteTable::new(&h, g);
    let buurten: Vec<BuurtCode> = h.buurten_of(g).collect();
    let policy = ReleasePolicy::new(Threshold::new(10).unwrap(), 4, 2.0).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Per month and buurt: households, each with its own record key.
    let months: Vec<Vec<(BuurtCode, CellTotal)>> = (0..12)
        .map(|_| {
            buurten
                .iter()
                .map(|&b| {
                    let n = rng.next() % (2 * mean + 1);
                    let mut t = CellTotal::default();
                    for _ in 0..n {
                        t += CellTotal::one(rng.next() as u32);
                    }
                    (b, t)
                })
                .collect()
        })
        .collect();
    let cells = |r: Vec<(wijkradar_domain::AreaCode, Released)>| -> Vec<Released> {
        r.into_iter().map(|(_, x)| x).collect()
    };
    let sum = |parts: &[Vec<(BuurtCode, CellTotal)>]| -> Vec<(BuurtCode, CellTotal)> {
        let mut out = parts[0].clone();
        for p in &parts[1..] {
            for (o, (_, t)) in out.iter_mut().zip(p) {
                o.1 += *t;
            }
        }
        out
    };
    let t0 = std::time::Instant::now();
    let released_months: Vec<Vec<Released>> = months
        .iter()
        .map(|m| cells(table.release(&policy, m, &[])))
        .collect();
    let t_months = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    let quarters: Vec<Vec<Released>> = (0..4)
        .map(|q| {
            let parts = released_months[3 * q..3 * q + 3].to_vec();
            cells(table.release(
                &policy,
                &sum(&months[3 * q..3 * q + 3]),
                &[Link::Parts(parts)],
            ))
        })
        .collect();
    let t_quarters = t0.elapsed().as_secs_f64();
    let year_totals = sum(&months);
    let t0 = std::time::Instant::now();
    let star = cells(table.release(&policy, &year_totals, &[Link::Parts(quarters.clone())]));
    let t_star = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    let nested = cells(
        table.release(
            &policy,
            &year_totals,
            &[Link::NestedParts {
                parts: quarters.clone(),
                theirs: (0..4)
                    .map(|q| released_months[3 * q..3 * q + 3].to_vec())
                    .collect(),
            }],
        ),
    );
    let t_nested = t0.elapsed().as_secs_f64();
    let hidden = |r: &[Released]| r.iter().filter(|c| **c == Released::Suppressed).count();
    println!(
        "{g} ({} areas, mean {mean}/buurt/month): 12 months {t_months:.2} s, 4 quarters {t_quarters:.2} s, year with quarters {t_star:.2} s ({} hidden), year with quarters and months {t_nested:.2} s ({} hidden); months hidden {}",
        table.codes().len(),
        hidden(&star),
        hidden(&nested),
        released_months.iter().map(|m| hidden(m)).sum::<usize>()
    );
}
