//! The attacker who assumes that households stay put (issue 20, point 1),
//! written apart from the audit's own system so that it checks it.
//!
//! A year of releases of one real gemeente (Harlingen: 4 wijken, 13
//! buurten) at realistic rates: households fall into arrears a few a month
//! per buurt and most stay in arrears for months, so a quarter counts
//! nearly the same households as each of its months. Nobody moves, so the
//! attacker's assumptions all hold: per area, a quarter is at least each
//! of its months and at most their sum; a year is at least each of its
//! quarters and months and at most the quarters' sum; every table adds up
//! from buurten to wijken to the gemeente; every released value is the
//! truth within D.
//!
//! The releases are made as the server makes them: months alone, each
//! quarter with its months, the year with its quarters and their months.
//! The attack then minimises and maximises every suppressed cell of all 17
//! tables in one linear program. No interval may be narrower than
//! max(k, 2D).

use std::collections::BTreeMap;

use microlp::{ComparisonOp, OptimizationDirection, Problem, Variable};
use wijkradar_domain::{BuurtCode, CellTotal, GemeenteCode, Hierarchy};
use wijkradar_release::{GemeenteTable, Link, ReleasePolicy, Released, Threshold};

use crate::common::SplitMix;

/// Draws a test needs besides `next`.
trait Draws {
    fn unit(&mut self) -> f64;
    fn poisson(&mut self, mean: f64) -> u64;
}

impl Draws for SplitMix {
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Poisson draw (Knuth's method; small means only).
    fn poisson(&mut self, mean: f64) -> u64 {
        let limit = (-mean).exp();
        let mut product = self.unit();
        let mut n = 0;
        while product > limit {
            n += 1;
            product *= self.unit();
        }
        n
    }
}

/// How likely a household in arrears is still in arrears the next month.
const STAY: f64 = 0.9;
/// The range of a buurt's own rate of households newly in arrears a month.
const LOW: f64 = 0.1;
const HIGH: f64 = 1.0;

/// Per month, the households in arrears: (buurt, record key). A household
/// enters at its buurt's rate and stays in arrears each next month with
/// probability [`STAY`], as arrears last for months.
fn simulate(buurten: &[BuurtCode], seed: u64) -> Vec<Vec<(BuurtCode, u32)>> {
    let mut rng = SplitMix(seed);
    let rates: Vec<f64> = buurten
        .iter()
        .map(|_| LOW + (HIGH - LOW) * rng.unit())
        .collect();
    let mut active: Vec<(BuurtCode, u32)> = Vec::new();
    (0..12)
        .map(|_| {
            active.retain(|_| rng.unit() < STAY);
            for (b, &rate) in buurten.iter().zip(&rates) {
                for _ in 0..rng.poisson(rate) {
                    active.push((*b, rng.next() as u32));
                }
            }
            active.clone()
        })
        .collect()
}

/// Per buurt, the cell total of the distinct households of some months.
fn totals(months: &[Vec<(BuurtCode, u32)>]) -> Vec<(BuurtCode, CellTotal)> {
    let mut distinct: BTreeMap<(BuurtCode, u32), ()> = BTreeMap::new();
    for m in months {
        for &h in m {
            distinct.insert(h, ());
        }
    }
    let mut out: BTreeMap<BuurtCode, CellTotal> = BTreeMap::new();
    for (b, key) in distinct.into_keys() {
        *out.entry(b).or_default() += CellTotal::one(key);
    }
    out.into_iter().collect()
}

/// One row of the program: Σ coefficient × variable (op) right-hand side.
type Row = (Vec<(usize, f64)>, ComparisonOp, f64);

/// The attacker's program: one variable per table and area.
struct Attack {
    problem_rows: Vec<Row>,
    bounds: Vec<(f64, f64)>,
}

impl Attack {
    fn var(table: usize, node: usize, nodes: usize) -> usize {
        table * nodes + node
    }

    fn solve(&self, cell: usize, direction: OptimizationDirection) -> Option<f64> {
        let mut p = Problem::new(direction);
        let vars: Vec<Variable> = self
            .bounds
            .iter()
            .enumerate()
            .map(|(i, &b)| p.add_var(if i == cell { 1.0 } else { 0.0 }, b))
            .collect();
        for (row, op, rhs) in &self.problem_rows {
            let e: Vec<(Variable, f64)> = row.iter().map(|&(v, c)| (vars[v], c)).collect();
            p.add_constraint(&e[..], *op, *rhs);
        }
        match p.solve() {
            Ok(outcome) => Some(outcome.into_solution().expect("solved").objective()),
            Err(microlp::Error::Unbounded) => None,
            Err(e) => panic!("the releases come from one truth: {e:?}"),
        }
    }
}

#[test]
fn households_that_stay_put_narrow_no_suppressed_cell_of_a_year() {
    let h = Hierarchy::netherlands_2023();
    let g: GemeenteCode = "GM0072".parse().unwrap();
    let table = GemeenteTable::new(&h, g);
    let buurten: Vec<BuurtCode> = h.buurten_of(g).collect();
    let policy = ReleasePolicy::new(Threshold::new(10).unwrap(), 4, 2.0).unwrap();
    let (k, d): (f64, f64) = (10.0, 4.0);
    // With this seed the audit that assumed only "a period is at least its
    // last month" left a buurt's quarter at [6, 15] (verified).
    let months = simulate(&buurten, 2);
    let cells = |r: Vec<(wijkradar_domain::AreaCode, Released)>| -> Vec<Released> {
        r.into_iter().map(|(_, x)| x).collect()
    };

    // Released as the server releases them.
    let released_months: Vec<Vec<Released>> = months
        .iter()
        .map(|m| cells(table.release(&policy, &totals(std::slice::from_ref(m)), &[])))
        .collect();
    let quarters: Vec<Vec<Released>> = (0..4)
        .map(|q| {
            let parts = released_months[3 * q..3 * q + 3].to_vec();
            cells(table.release(
                &policy,
                &totals(&months[3 * q..3 * q + 3]),
                &[Link::Parts(parts)],
            ))
        })
        .collect();
    let year = cells(
        table.release(
            &policy,
            &totals(&months),
            &[Link::NestedParts {
                parts: quarters.clone(),
                theirs: (0..4)
                    .map(|q| released_months[3 * q..3 * q + 3].to_vec())
                    .collect(),
            }],
        ),
    );

    // Tables 0..12 the months, 12..16 the quarters, 16 the year.
    let mut tables = released_months.clone();
    tables.extend(quarters);
    tables.push(year);
    let nodes = table.codes().len();
    let parents: Vec<Option<usize>> = {
        let index: BTreeMap<_, _> = table
            .codes()
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i))
            .collect();
        table
            .codes()
            .iter()
            .map(|c| c.parent().and_then(|p| index.get(&p).copied()))
            .collect()
    };
    let var = |t: usize, i: usize| Attack::var(t, i, nodes);
    let mut attack = Attack {
        problem_rows: Vec::new(),
        bounds: Vec::new(),
    };
    for cells in &tables {
        for r in cells {
            attack.bounds.push(match r {
                Released::Value(v) => ((*v as f64 - d).max(0.0), *v as f64 + d),
                Released::Suppressed => (0.0, f64::INFINITY),
            });
        }
    }
    for t in 0..tables.len() {
        for parent in 0..nodes {
            let kids: Vec<usize> = (0..nodes).filter(|&c| parents[c] == Some(parent)).collect();
            if kids.is_empty() {
                continue;
            }
            let mut row = vec![(var(t, parent), -1.0)];
            row.extend(kids.iter().map(|&c| (var(t, c), 1.0)));
            attack.problem_rows.push((row, ComparisonOp::Eq, 0.0));
        }
    }
    // (period, its parts): each quarter with its months, the year with its
    // quarters; the year is at least each month too.
    let mut periods: Vec<(usize, Vec<usize>, bool)> = (0..4)
        .map(|q| (12 + q, (3 * q..3 * q + 3).collect(), true))
        .collect();
    periods.push((16, (12..16).collect(), true));
    periods.push((16, (0..12).collect(), false));
    for (whole, parts, bounded_by_sum) in &periods {
        for i in 0..nodes {
            for &p in parts {
                attack.problem_rows.push((
                    vec![(var(*whole, i), 1.0), (var(p, i), -1.0)],
                    ComparisonOp::Ge,
                    0.0,
                ));
            }
            if *bounded_by_sum {
                let mut row = vec![(var(*whole, i), 1.0)];
                row.extend(parts.iter().map(|&p| (var(p, i), -1.0)));
                attack.problem_rows.push((row, ComparisonOp::Le, 0.0));
            }
        }
    }

    let mut suppressed = 0;
    let mut narrow = Vec::new();
    for (t, cells) in tables.iter().enumerate() {
        for (i, r) in cells.iter().enumerate() {
            if *r != Released::Suppressed {
                continue;
            }
            suppressed += 1;
            let lo = attack
                .solve(var(t, i), OptimizationDirection::Minimize)
                .expect("bounded below by 0");
            let Some(hi) = attack.solve(var(t, i), OptimizationDirection::Maximize) else {
                continue;
            };
            let width = (hi + 1e-6).floor() - (lo - 1e-6).ceil().max(0.0);
            if width < k.max(2.0 * d) {
                narrow.push((t, table.codes()[i], lo, hi));
            }
        }
    }
    let released = tables.iter().flatten().count() - suppressed;
    eprintln!("{suppressed} suppressed and {released} released cells in 17 tables");
    // Realistic rates: most cells hidden, some shown, in every kind of table.
    assert!(released >= 20, "{released} released");
    assert!(narrow.is_empty(), "narrowed: {narrow:?}");
}
