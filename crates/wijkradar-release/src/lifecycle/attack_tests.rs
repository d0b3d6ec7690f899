//! The attacker who holds every version (issue 20, point 3), written apart
//! from the audit's own system so that it checks it.
//!
//! A year of one real gemeente (Harlingen) released as the scheduled job
//! releases it, month after month, while late signals keep coming: a
//! month gets new versions up to the cap, and with it its quarter and the
//! year. The attacker holds every version of every period and knows which
//! were current together: at each release run, a period and its parts that
//! were current then count the same households (nobody moves here, as the
//! attacker assumes). So besides each table's sums and each value within D:
//!
//! - a later version of a period counts at least each cell of the earlier;
//! - at each run, a period that was current is at least each of its parts
//!   that was current with it, per area, and at most their sum when all of
//!   them were (an earlier version of a period against the earlier
//!   versions of its parts: the relation the audit does not hold);
//! - a capped part (no longer current) ties nothing at that run.
//!
//! The attack minimises and maximises every suppressed cell of every
//! version in one linear program. No interval may be narrower than
//! max(k, 2D).
//!
//! With this seed it found a gap: the audit held a period's earlier
//! versions only by their gemeente total (a late signal may move a
//! household), while the attacker, assuming households stay put, holds
//! them per buurt, and pinned a quarter's hidden buurt (versions 2 and 3)
//! and the year's to [7, 14]. The audit now assumes it too, less the
//! fewest movers the releases allow, as it does for a period's parts.
//! Seeds 1 to 16 then pass; removing the audit's links to a period's
//! parts makes seeds 9, 10 and 11 fail (both verified).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;

use microlp::{ComparisonOp, OptimizationDirection, Problem};
use wijkradar_domain::{BuurtCode, CellTotal, GemeenteCode, Hierarchy, Month};

use super::*;
use crate::{GemeenteTable, Period, ReleasePolicy, Released, Threshold};

/// A deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn poisson(&mut self, mean: f64) -> u64 {
        let limit = (-mean).exp();
        let (mut product, mut n) = (self.unit(), 0);
        while product > limit {
            n += 1;
            product *= self.unit();
        }
        n
    }
}

/// One household's signal of one month, and the run (month index) at
/// whose end it has arrived.
#[derive(Clone, Copy)]
struct Signal {
    buurt: usize,
    key: u32,
    month: usize,
    arrives: usize,
}

/// Households in arrears month by month (they stay in arrears for months,
/// as in the stay-put attack), each month's signal arriving on time, or one
/// or two months late.
fn simulate(buurten: usize, seed: u64) -> Vec<Signal> {
    let mut rng = Rng(seed);
    let rates: Vec<f64> = (0..buurten).map(|_| 0.1 + 0.9 * rng.unit()).collect();
    let mut active: Vec<(usize, u32)> = Vec::new();
    let mut out = Vec::new();
    for month in 0..12 {
        active.retain(|_| rng.unit() < 0.9);
        for (b, &rate) in rates.iter().enumerate() {
            for _ in 0..rng.poisson(rate) {
                active.push((b, rng.next() as u32));
            }
        }
        for &(buurt, key) in &active {
            let late = match rng.unit() {
                u if u < 0.8 => 0,
                u if u < 0.95 => 1,
                _ => 2,
            };
            out.push(Signal {
                buurt,
                key,
                month,
                arrives: month + late,
            });
        }
    }
    out
}

const FIRST: &str = "2025-01";

/// The releases of one signal type in memory, over the signals that have
/// arrived by the current run.
struct Simulated {
    buurten: Vec<BuurtCode>,
    signals: Vec<Signal>,
    run: RefCell<usize>,
    stored: RefCell<HashMap<Period, Arc<Snapshot>>>,
}

impl Simulated {
    fn month_index(&self, m: Month) -> usize {
        (m.index() - FIRST.parse::<Month>().expect("a month").index()) as usize
    }

    fn arrived(&self, period: Period) -> impl Iterator<Item = &Signal> {
        let run = *self.run.borrow();
        let (a, b) = (
            self.month_index(period.first()),
            self.month_index(period.last()),
        );
        self.signals
            .iter()
            .filter(move |s| s.arrives <= run && (a..=b).contains(&s.month))
    }
}

impl Releases for Simulated {
    type Error = Infallible;

    fn stored(&self, period: Period) -> Result<Option<Arc<Snapshot>>, Infallible> {
        Ok(self.stored.borrow().get(&period).cloned())
    }

    /// The signals arrived for the period: changes with every late one.
    fn state(&self, period: Period) -> u64 {
        self.arrived(period).count() as u64
    }

    fn totals(&self, period: Period) -> Result<Vec<(BuurtCode, CellTotal)>, Infallible> {
        let mut distinct: BTreeMap<(usize, u32), ()> = BTreeMap::new();
        for s in self.arrived(period) {
            distinct.insert((s.buurt, s.key), ());
        }
        let mut out: BTreeMap<usize, CellTotal> = BTreeMap::new();
        for (b, key) in distinct.into_keys() {
            *out.entry(b).or_default() += CellTotal::one(key);
        }
        Ok(out.into_iter().map(|(b, t)| (self.buurten[b], t)).collect())
    }

    fn store(
        &self,
        period: Period,
        _previous: Option<&Snapshot>,
        new: NewRelease,
    ) -> Result<Arc<Snapshot>, Infallible> {
        let s = Arc::new(new.snapshot);
        self.stored.borrow_mut().insert(period, s.clone());
        Ok(s)
    }
}

#[test]
fn every_version_held_at_once_narrows_no_suppressed_cell() {
    let h = Hierarchy::netherlands_2023();
    let g: GemeenteCode = "GM0072".parse().unwrap();
    let table = GemeenteTable::new(&h, g);
    let policy = ReleasePolicy::new(Threshold::new(10).unwrap(), 4, 2.0).unwrap();
    let (k, d) = (10.0f64, 4.0f64);
    let buurten: Vec<BuurtCode> = h.buurten_of(g).collect();
    let memory = Simulated {
        signals: simulate(buurten.len(), 9),
        buurten,
        run: RefCell::new(0),
        stored: RefCell::new(HashMap::new()),
    };
    let first: Month = FIRST.parse().unwrap();
    let month = |i: usize| first.plus(i as i32);
    let periods: Vec<Period> = (0..12)
        .map(|i| Period::month(month(i)))
        .chain((0..4).map(|q| Period::new(month(3 * q), 3)))
        .chain([Period::new(first, 12)])
        .collect();

    // Runs at the end of each month and two more: every ended period is
    // released (a new version where its signals changed, up to the cap).
    // At each run, which version of each period is current.
    let mut current_at: Vec<HashMap<Period, u32>> = Vec::new();
    for run in 0..14 {
        *memory.run.borrow_mut() = run;
        let rules = Lifecycle {
            table: &table,
            policy: &policy,
            counts: Counts::Type,
            now: month(run + 1),
            closed_before: month(run + 1),
            max_versions: 3,
            first_kept: "2024-01".parse().unwrap(),
            all_kept_from: "2024-01".parse().unwrap(),
        };
        let mut current = HashMap::new();
        for &p in &periods {
            if let Ok(Ok(r)) = rules.release(&memory, p)
                && r.current
            {
                current.insert(p, r.version());
            }
        }
        current_at.push(current);
    }

    // Every version of every period: its cells, oldest first.
    let mut tables: Vec<(Period, u32, Vec<Released>)> = Vec::new();
    for &p in &periods {
        let s = memory.stored(p).unwrap().expect("released");
        for (v, cells) in s.earlier.iter().chain([&s.cells]).enumerate() {
            tables.push((p, v as u32 + 1, released(cells)));
        }
    }
    let versions = tables.iter().filter(|t| t.1 > 1).count();
    assert!(versions >= 10, "late signals made {versions} new versions");
    let index: HashMap<(Period, u32), usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| ((t.0, t.1), i))
        .collect();
    let nodes = table.codes().len();
    let node_of: HashMap<_, _> = table
        .codes()
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i))
        .collect();
    let parent: Vec<Option<usize>> = table
        .codes()
        .iter()
        .map(|c| c.parent().and_then(|p| node_of.get(&p).copied()))
        .collect();
    let var = |t: usize, i: usize| t * nodes + i;

    // The attacker's program.
    type Row = (Vec<(usize, f64)>, ComparisonOp, f64);
    let mut rows: Vec<Row> = Vec::new();
    let mut bounds = Vec::new();
    for (_, _, cells) in &tables {
        for r in cells {
            bounds.push(match r {
                Released::Value(v) => ((*v as f64 - d).max(0.0), *v as f64 + d),
                Released::Suppressed => (0.0, f64::INFINITY),
            });
        }
    }
    for t in 0..tables.len() {
        for p in 0..nodes {
            let kids: Vec<usize> = (0..nodes).filter(|&c| parent[c] == Some(p)).collect();
            if !kids.is_empty() {
                let mut row = vec![(var(t, p), -1.0)];
                row.extend(kids.iter().map(|&c| (var(t, c), 1.0)));
                rows.push((row, ComparisonOp::Eq, 0.0));
            }
        }
    }
    let at_least = |rows: &mut Vec<Row>, big: usize, small: usize| {
        for i in 0..nodes {
            rows.push((
                vec![(var(big, i), 1.0), (var(small, i), -1.0)],
                ComparisonOp::Ge,
                0.0,
            ));
        }
    };
    for (t, (p, v, _)) in tables.iter().enumerate() {
        if let Some(&before) = index.get(&(*p, v - 1)) {
            at_least(&mut rows, t, before);
        }
    }
    for current in &current_at {
        for (&p, &v) in current {
            let whole = index[&(p, v)];
            let parts: Vec<Option<usize>> = p
                .parts()
                .iter()
                .map(|part| current.get(part).map(|&pv| index[&(*part, pv)]))
                .collect();
            for &part in parts.iter().flatten() {
                at_least(&mut rows, whole, part);
            }
            if !parts.is_empty() && parts.iter().all(Option::is_some) {
                for i in 0..nodes {
                    let mut row = vec![(var(whole, i), 1.0)];
                    row.extend(parts.iter().flatten().map(|&t| (var(t, i), -1.0)));
                    rows.push((row, ComparisonOp::Le, 0.0));
                }
            }
            if p.len() == 12 {
                for m in p.months() {
                    if let Some(&mv) = current.get(&Period::month(m)) {
                        at_least(&mut rows, whole, index[&(Period::month(m), mv)]);
                    }
                }
            }
        }
    }
    let suppressed: Vec<usize> = tables
        .iter()
        .enumerate()
        .flat_map(|(t, (_, _, cells))| {
            cells
                .iter()
                .enumerate()
                .filter(|(_, r)| **r == Released::Suppressed)
                .map(move |(i, _)| var(t, i))
        })
        .collect();
    let need = k.max(2.0 * d);
    // One program: the objective's coefficients by variable, and extra
    // variables (bounds, coefficient) each with its rows.
    let solve = |objective: &[(usize, f64)],
                 extra: &[((f64, f64), f64, Vec<Row>)],
                 direction: OptimizationDirection|
     -> Option<Vec<f64>> {
        let mut p = Problem::new(direction);
        let mut coefficient = vec![0.0; bounds.len()];
        for &(v, c) in objective {
            coefficient[v] = c;
        }
        let mut vars: Vec<_> = bounds
            .iter()
            .zip(&coefficient)
            .map(|(&b, &c)| p.add_var(c, b))
            .collect();
        for (b, c, _) in extra {
            vars.push(p.add_var(*c, *b));
        }
        for (row, op, rhs) in rows.iter().chain(extra.iter().flat_map(|e| &e.2)) {
            let e: Vec<_> = row.iter().map(|&(v, c)| (vars[v], c)).collect();
            p.add_constraint(&e[..], *op, *rhs);
        }
        match p.solve() {
            Ok(s) => {
                let s = s.into_solution().expect("solved");
                Some(vars[..bounds.len()].iter().map(|&v| s[v]).collect())
            }
            Err(microlp::Error::Unbounded) => None,
            Err(e) => panic!("the releases come from one truth: {e:?}"),
        }
    };
    // Feasible points for many cells at once first: every suppressed cell
    // pushed down, then in rounds the cells not yet shown wide each pulled
    // up to `need` above the lowest value seen (Σ min(x, lo + need)) and
    // down to `need` below the highest (Σ max(x, hi - need)), as far as
    // the sums allow. A cell two points show `need` apart is wide; only the
    // others get their own two programs.
    let down: Vec<(usize, f64)> = suppressed.iter().map(|&v| (v, 1.0)).collect();
    let first = solve(&down, &[], OptimizationDirection::Minimize).expect("bounded below");
    let n = bounds.len();
    let mut seen: Vec<(f64, f64)> = first.iter().map(|&x| (x, x)).collect();
    let see = |seen: &mut Vec<(f64, f64)>, point: &[f64]| {
        for (s, &x) in seen.iter_mut().zip(point) {
            *s = (s.0.min(x), s.1.max(x));
        }
    };
    let width = |lo: f64, hi: f64| (hi + 1e-6).floor() - (lo - 1e-6).ceil().max(0.0);
    let mut open: Vec<usize> = suppressed.clone();
    for _ in 0..40 {
        open.retain(|&v| width(seen[v].0, seen[v].1) < need);
        if open.is_empty() {
            break;
        }
        let before = open.len();
        let up: Vec<((f64, f64), f64, Vec<Row>)> = open
            .iter()
            .enumerate()
            .map(|(j, &v)| {
                let row = vec![(n + j, 1.0), (v, -1.0)];
                (
                    (0.0, seen[v].0 + need),
                    1.0,
                    vec![(row, ComparisonOp::Le, 0.0)],
                )
            })
            .collect();
        if let Some(point) = solve(&[], &up, OptimizationDirection::Maximize) {
            see(&mut seen, &point);
        }
        let down: Vec<((f64, f64), f64, Vec<Row>)> = open
            .iter()
            .enumerate()
            .map(|(j, &v)| {
                let row = vec![(n + j, 1.0), (v, -1.0)];
                let floor = (seen[v].1 - need).max(0.0);
                (
                    (floor, f64::INFINITY),
                    1.0,
                    vec![(row, ComparisonOp::Ge, 0.0)],
                )
            })
            .collect();
        if let Some(point) = solve(&[], &down, OptimizationDirection::Minimize) {
            see(&mut seen, &point);
        }
        open.retain(|&v| width(seen[v].0, seen[v].1) < need);
        if open.len() == before {
            break;
        }
    }
    let mut narrow = Vec::new();
    for &v in &open {
        let objective = [(v, 1.0)];
        let lo = solve(&objective, &[], OptimizationDirection::Minimize).expect("bounded")[v];
        let Some(hi) = solve(&objective, &[], OptimizationDirection::Maximize) else {
            continue;
        };
        if width(lo, hi[v]) < need {
            let (t, i) = (v / nodes, v % nodes);
            let (p, version, _) = &tables[t];
            narrow.push(format!(
                "{p} v{version} {}: [{lo:.1}, {:.1}]",
                table.codes()[i],
                hi[v]
            ));
        }
    }
    let own = open.len();
    let suppressed = suppressed.len();
    eprintln!("{own} of {suppressed} suppressed cells needed programs of their own");
    let shown = tables.iter().map(|t| t.2.len()).sum::<usize>() - suppressed;
    eprintln!(
        "{} tables ({versions} later versions), {suppressed} suppressed and {shown} released cells",
        tables.len()
    );
    assert!(shown >= 20, "{shown} released");
    assert!(narrow.is_empty(), "narrowed: {narrow:?}");
}
