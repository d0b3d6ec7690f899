//! The disclosure audit across tables: periods and versions (docs/privacy.md
//! "What leaves the aggregator", point 5, and I6's "all periods, all versions").
//!
//! A table is rarely released alone. A quarter's or a year's cells count
//! the same households as its months' cells, and a new version of a table
//! comes after the version before it. An attacker who holds those releases
//! too knows, besides each table's own sums (buurten to wijk, wijken to
//! gemeente) and each released value to within D:
//!
//! - [`Link::Parts`]: for every area, the period's count is at most the sum
//!   of its parts' counts (each household of the period counts in the part
//!   of its latest month that counts) and at least its last part's count
//!   (those households' latest month is the last); the period's gemeente
//!   total is at least every part's (a household of a part is in the period,
//!   in some buurt of the gemeente). Households rarely move within a
//!   period, so an attacker also assumes that per area the period is at
//!   least each of its parts. The audit assumes it too. Where the releases
//!   contradict it (households did move), it assumes the fewest movers per
//!   area the releases allow (1, 2, 4 or 8), and else only what holds
//!   whoever moves.
//! - [`Link::NestedParts`]: the same for a period's parts and, in turn,
//!   their parts (a year with its quarters and their months), all in one
//!   system: a year can narrow a quarter's hidden cell through its months
//!   where neither the year with its quarters nor the quarter with its
//!   months would (a test shows such a case). The server audits a year so.
//! - [`Link::StaleParts`]: parts released before their last signals came
//!   in (capped versions): the period still holds at least their households
//!   (in total, and per cell of the last part where cells only gain), but
//!   their sum no longer bounds it.
//! - [`Link::EarlierVersions`]: every earlier version of the table, oldest
//!   first, each at most the next. A (type, month) table only gains
//!   households, so that holds per cell; in a period or a derived table a
//!   late signal can move a household to another buurt, and only the
//!   gemeente total is known to grow. All of them, not only the last: the
//!   first can narrow the last through a middle one whose cell is hidden (a
//!   test shows such a case). The same for a linked table (a period's part):
//!   its earlier versions can narrow the period through it.
//!
//! With those inequalities the constraints no longer form a tree, so the
//! interval of a suppressed cell is found by linear programming (`microlp`,
//! pure Rust): minimise and maximise the cell over every table's truths.
//! The bounds are then rounded inward to whole households.
//!
//! The audit only needs to know which cells are narrower than `max(k, 2D)`,
//! and two feasible points that far apart in a cell prove it wide. So it
//! first solves a few programs over many cells at once (all pushed down;
//! then each brought up to `need` above, and down to `need` below, the
//! values seen so far, as many at once as the sums allow) and keeps every
//! optimum as a point; only the cells not shown wide that way get their own
//! two programs. Those first programs run over parts of the system: one
//! wijk with its buurten in every table (a block), with every other cell
//! held at a feasible point of the whole; then each block with the four
//! blocks that have the most room; then blocks in growing groups; last the
//! whole. A point of such a part is a point of the whole, and the parts are
//! small: Almere's year with its quarters and their months (seventeen
//! tables, about 4,900 suppressed cells) takes 1–4 s instead of 10–35 s.
//! `tests` hold the
//! result equal to brute-force enumeration of every integer assignment on
//! small cases, and the audit's promise (every suppressed cell, in this
//! table and in the linked ones, at least `max(k, 2D)` wide) is checked the
//! same way.

use std::collections::{HashMap, HashSet};

use microlp::{ComparisonOp, OptimizationDirection, Problem, Variable};

use crate::Released;
use crate::audit::{AreaTree, Interval};

/// What was released before and is tied to the table being released; every
/// linked table has the same areas in the same node order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The released tables of the parts of this table's period, in time
    /// order (the months of a quarter; the months or the quarters of a
    /// year).
    Parts(Vec<Vec<Released>>),
    /// Releases of the parts made before the last signals came in (a part
    /// past its version cap): this table still holds at least their
    /// households, in total, and per cell of the last part when `per_cell`
    /// (a table that only gains households per cell); the sum no longer
    /// bounds it.
    StaleParts {
        parts: Vec<Vec<Released>>,
        per_cell: bool,
    },
    /// As [`Link::Parts`], together with the parts' own parts, released
    /// before them (a year's quarters, each with its months): `theirs[i]`
    /// are the parts of `parts[i]`, in time order, tied to it as `Parts`
    /// ties parts to this table (empty where not known).
    NestedParts {
        parts: Vec<Vec<Released>>,
        theirs: Vec<Vec<Vec<Released>>>,
    },
    /// The earlier versions of table `of` (0: this table; else a linked
    /// table, by the number [`linked_intervals`] gives it, from a link
    /// before this one), oldest first: each counts at most the households of
    /// the next, and the last at most `of`, per cell when `per_cell` (a table
    /// that only gains households per cell), else in total.
    EarlierVersions {
        of: usize,
        versions: Vec<Vec<Released>>,
        per_cell: bool,
    },
}

/// What a program optimises: one cell, or the sum of a set of cells (to
/// find feasible points far apart for many cells at once).
#[derive(Debug, Clone, Copy)]
enum Objective<'a> {
    Cell((usize, usize)),
    /// The sum of a set of cells.
    Sum(&'a HashSet<(usize, usize)>),
    /// Bring each listed cell up to (maximising) or down to (minimising) its
    /// target, as many as can be at once: Σ min(x, target), or Σ max(x,
    /// target). Spreads a shared sum over many cells instead of piling it
    /// on one.
    Reach(&'a HashMap<(usize, usize), f64>),
}

/// What rounding to whole households allows for the solver's round-off.
const SLACK: f64 = 1e-6;

/// Whether the feasible points `seen` show the cell `need` wide, in whole
/// households, as the attacker counts (rounded inward, as the intervals
/// are, which the tests hold equal to enumeration).
fn wide(seen: &[Vec<(f64, f64)>], t: usize, i: usize, need: f64) -> bool {
    let (lo, hi) = seen[t][i];
    (hi + SLACK).floor() - (lo - SLACK).ceil().max(0.0) >= need
}

/// How many other blocks a block that its own program leaves open is
/// explored with (4 was the fastest of 1, 2, 4, 6 and 10 on Almere's year).
const PARTNERS: usize = 4;

/// Programs over a sum run with suppressed cells capped here (a point of
/// the capped program is a point of the real one).
const EXPLORE_CAP: f64 = 1e7;

/// Rounds of programs over the sum of the cells not yet shown wide, before
/// programs per cell.
const EXPLORE_ROUNDS: usize = 40;

/// What the programs of an audit found so far, kept while it hides more
/// cells: per table and cell the lowest and highest value of any feasible
/// point, and the first point.
#[derive(Default)]
struct Found {
    seen: Option<Vec<Vec<(f64, f64)>>>,
    point: Option<Vec<Vec<f64>>>,
}

/// A cell in a program: a variable, or a value held fixed.
#[derive(Debug, Clone, Copy)]
enum Term {
    Var(Variable),
    Const(f64),
}

/// Adds `Σ coefficient × term (op) 0`, with the fixed terms moved to the
/// right-hand side; a row of fixed terms only is left out (it holds at the
/// point they come from).
fn constrain(p: &mut Problem, terms: &[(Term, f64)], op: ComparisonOp) {
    let mut rhs = 0.0;
    let mut e: Vec<(Variable, f64)> = Vec::with_capacity(terms.len());
    for &(term, coefficient) in terms {
        match term {
            Term::Var(v) => e.push((v, coefficient)),
            Term::Const(c) => rhs -= coefficient * c,
        }
    }
    if !e.is_empty() {
        p.add_constraint(&e[..], op, rhs);
    }
}

/// A program over part of the system: the cells of the nodes marked
/// `free` (in every table) are variables, every other cell is held at its
/// value in `point`, a feasible point of the whole system. Every feasible
/// point of such a program is then one of the whole system, so it can show
/// cells wide (never narrow).
struct Scope<'p> {
    free: Vec<bool>,
    point: &'p [Vec<f64>],
}

/// One inequality `big[cell] ≥ small[cell] − slack` between two tables'
/// truths, for every cell or for the total (node 0) only. The slack is 0
/// where the inequality holds for every household; it is the assumed
/// number of movers where it holds for households that stay put.
struct AtLeast {
    big: usize,
    small: usize,
    total_only: bool,
    slack: u64,
}

/// The candidate assumptions on movers, strictest first: how many
/// households per area may leave it between a period's part and the period
/// (`Some(0)`: everyone stays put), or `None`: only the relations that
/// hold whoever moves.
const MOVERS: [Option<u64>; 6] = [Some(0), Some(1), Some(2), Some(4), Some(8), None];

/// All the tables (0 is the one being released) and what ties them.
struct System<'a> {
    tree: &'a AreaTree,
    tables: Vec<&'a [Released]>,
    at_least: Vec<AtLeast>,
    /// `(table, its parts)`: per cell, the table is at most the parts' sum.
    at_most_sum: Vec<(usize, Vec<usize>)>,
    d: u64,
    /// Per node, the topmost node above it (not itself) whose whole subtree
    /// is suppressed in every table: such a subtree is left out of the
    /// program (see [`System::collapse`]).
    hidden_under: Vec<Option<usize>>,
    /// Leaves under each node (itself when it is one).
    leaves: Vec<usize>,
    /// The assumption on movers this system was built with (see
    /// [`MOVERS`]).
    movers: Option<u64>,
}

impl<'a> System<'a> {
    fn new(tree: &'a AreaTree, this: &'a [Released], links: &'a [Link], d: u32) -> System<'a> {
        System::assuming(tree, this, links, d, &MOVERS)
    }

    /// The system under the strictest of `movers` that the releases do not
    /// contradict, collapsed. An attacker assumes what nearly always holds:
    /// that households stay put within a period. Where the releases show
    /// that some moved, the attacker assumes as few movers as they allow.
    fn assuming(
        tree: &'a AreaTree,
        this: &'a [Released],
        links: &'a [Link],
        d: u32,
        movers: &[Option<u64>],
    ) -> System<'a> {
        let mut s = System::uncollapsed_assuming(tree, this, links, d, movers);
        s.collapse();
        s
    }

    /// The system with every node in the program (what `collapse` is
    /// tested against).
    #[cfg(test)]
    fn uncollapsed(
        tree: &'a AreaTree,
        this: &'a [Released],
        links: &'a [Link],
        d: u32,
    ) -> System<'a> {
        System::uncollapsed_assuming(tree, this, links, d, &MOVERS)
    }

    fn uncollapsed_assuming(
        tree: &'a AreaTree,
        this: &'a [Released],
        links: &'a [Link],
        d: u32,
        movers: &[Option<u64>],
    ) -> System<'a> {
        let (last, stricter) = movers.split_last().expect("at least one assumption");
        for &m in stricter {
            let s = System::built(tree, this, links, d, m);
            if s.consistent() {
                return s;
            }
        }
        System::built(tree, this, links, d, *last)
    }

    /// The system under one assumption on movers.
    fn built(
        tree: &'a AreaTree,
        this: &'a [Released],
        links: &'a [Link],
        d: u32,
        movers: Option<u64>,
    ) -> System<'a> {
        let mut s = System {
            tree,
            tables: vec![this],
            at_least: Vec::new(),
            at_most_sum: Vec::new(),
            d: u64::from(d),
            hidden_under: vec![None; tree.len()],
            leaves: vec![1; tree.len()],
            movers,
        };
        for link in links {
            match link {
                Link::Parts(parts) => {
                    s.add_parts(0, parts);
                }
                Link::NestedParts { parts, theirs } => {
                    let ids = s.add_parts(0, parts);
                    for (whole, theirs) in ids.into_iter().zip(theirs) {
                        if !theirs.is_empty() {
                            s.add_parts(whole, theirs);
                        }
                    }
                }
                Link::StaleParts { parts, per_cell } => {
                    let first = s.tables.len();
                    s.tables.extend(parts.iter().map(Vec::as_slice));
                    for p in first..s.tables.len() {
                        s.at_least.push(AtLeast {
                            big: 0,
                            small: p,
                            total_only: !*per_cell || p != first + parts.len() - 1,
                            slack: 0,
                        });
                    }
                }
                Link::EarlierVersions {
                    of,
                    versions,
                    per_cell,
                } => {
                    // The table, then its versions from the newest back.
                    assert!(*of < s.tables.len(), "versions of a table not linked yet");
                    let mut big = *of;
                    for old in versions.iter().rev() {
                        s.tables.push(old);
                        let small = s.tables.len() - 1;
                        s.at_least.push(AtLeast {
                            big,
                            small,
                            total_only: !*per_cell,
                            slack: 0,
                        });
                        big = small;
                    }
                }
            }
        }
        s
    }

    /// Adds the tables of a period's parts, in time order, tied to the table
    /// `whole`: per area the whole is at most their sum and at least the
    /// last part; its total at least every part's. Per area it is also at
    /// least every earlier part, less the movers assumed. Returns their ids.
    fn add_parts(&mut self, whole: usize, parts: &'a [Vec<Released>]) -> Vec<usize> {
        let first = self.tables.len();
        self.tables.extend(parts.iter().map(Vec::as_slice));
        let ids: Vec<usize> = (first..self.tables.len()).collect();
        for &p in &ids {
            let last = p == first + parts.len() - 1;
            self.at_least.push(AtLeast {
                big: whole,
                small: p,
                total_only: !last,
                slack: 0,
            });
            if let (false, Some(slack)) = (last, self.movers) {
                self.at_least.push(AtLeast {
                    big: whole,
                    small: p,
                    total_only: false,
                    slack,
                });
            }
        }
        self.at_most_sum.push((whole, ids.clone()));
        ids
    }

    /// Finds the subtrees that are suppressed in every table. Such a
    /// subtree's top node v can stand for all of it: any values of v in the
    /// tables that meet v's own inequalities are met by its subtree with all
    /// of it on one path of nodes from v down to a leaf and zero elsewhere
    /// (every inequality holds on the path as at v, and as 0 ≤ 0 elsewhere),
    /// and every node in it is unbounded by any release. So the program
    /// keeps v and leaves the rest out, which is exact; a node u below v
    /// lies in [0, hi(v)], or equals v when every leaf under v is under u.
    /// With sparse counts most wijken are such subtrees, which keeps the
    /// programs small.
    fn collapse(&mut self) {
        let n = self.tree.len();
        let mut hidden = vec![false; n];
        let mut leaves = vec![0usize; n];
        // Children come after their parents: from the back, bottom up.
        for i in (0..n).rev() {
            let kids = self.tree.children(i);
            leaves[i] = if kids.is_empty() {
                1
            } else {
                kids.iter().map(|&c| leaves[c]).sum()
            };
            hidden[i] = self.tables.iter().all(|t| t[i] == Released::Suppressed)
                && kids.iter().all(|&c| hidden[c]);
        }
        let mut under = vec![None; n];
        for i in 1..n {
            let p = self.tree.parent(i).expect("only the root has none");
            under[i] = under[p].or((hidden[p]).then_some(p));
        }
        self.hidden_under = under;
        self.leaves = leaves;
    }

    /// The linear program with `objective` to minimise or maximise, and
    /// every cell's term: a variable, or a constant where the cell is left
    /// out (0) or held by `scope`.
    fn program(
        &self,
        objective: Objective<'_>,
        direction: OptimizationDirection,
        scope: Option<&Scope<'_>>,
    ) -> (Problem, Vec<Vec<Term>>) {
        let mut p = Problem::new(direction);
        let n = self.tree.len();
        let kept = |i: usize| self.hidden_under[i].is_none();
        let terms: Vec<Vec<Term>> = self
            .tables
            .iter()
            .enumerate()
            .map(|(t, cells)| {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        if !kept(i) {
                            return Term::Const(0.0);
                        }
                        if let Some(scope) = scope.filter(|s| !s.free[i]) {
                            return Term::Const(scope.point[t][i]);
                        }
                        let (c, cap) = match objective {
                            Objective::Cell(cell) => (if (t, i) == cell { 1.0 } else { 0.0 }, None),
                            Objective::Reach(_) => (0.0, None),
                            Objective::Sum(set) => (
                                if set.contains(&(t, i)) { 1.0 } else { 0.0 },
                                Some(EXPLORE_CAP),
                            ),
                        };
                        let bounds = match *r {
                            Released::Value(v) => {
                                (v.saturating_sub(self.d) as f64, (v + self.d) as f64)
                            }
                            Released::Suppressed => (0.0, cap.unwrap_or(f64::INFINITY)),
                        };
                        Term::Var(p.add_var(c, bounds))
                    })
                    .collect()
            })
            .collect();
        for v in &terms {
            for parent in 0..n {
                let kids = self.tree.children(parent);
                if kids.is_empty() || !kids.iter().all(|&c| kept(c)) {
                    continue;
                }
                let mut e = vec![(v[parent], -1.0)];
                e.extend(kids.iter().map(|&c| (v[c], 1.0)));
                constrain(&mut p, &e, ComparisonOp::Eq);
            }
        }
        for a in &self.at_least {
            let cells = if a.total_only { 0..1 } else { 0..n };
            for i in cells.filter(|&i| kept(i)) {
                let e = [
                    (terms[a.big][i], 1.0),
                    (terms[a.small][i], -1.0),
                    (Term::Const(a.slack as f64), 1.0),
                ];
                constrain(&mut p, &e, ComparisonOp::Ge);
            }
        }
        for (whole, parts) in &self.at_most_sum {
            for i in (0..n).filter(|&i| kept(i)) {
                let mut e = vec![(terms[*whole][i], 1.0)];
                e.extend(parts.iter().map(|&t| (terms[t][i], -1.0)));
                constrain(&mut p, &e, ComparisonOp::Le);
            }
        }
        if let Objective::Reach(targets) = objective {
            for (&(t, i), &target) in targets {
                let Term::Var(x) = terms[t][i] else {
                    continue;
                };
                if direction == OptimizationDirection::Maximize {
                    // y ≤ x and y ≤ target: y is min(x, target) at the optimum.
                    let y = p.add_var(1.0, (f64::NEG_INFINITY, target));
                    p.add_constraint(&[(y, 1.0), (x, -1.0)][..], ComparisonOp::Le, 0.0);
                } else {
                    // z ≥ x and z ≥ target: z is max(x, target) at the optimum.
                    let z = p.add_var(1.0, (target, f64::INFINITY));
                    p.add_constraint(&[(z, 1.0), (x, -1.0)][..], ComparisonOp::Ge, 0.0);
                }
            }
        }
        (p, terms)
    }

    /// Whether some truth meets every release and relation of the system.
    fn consistent(&self) -> bool {
        let (problem, _) = self.program(
            Objective::Sum(&HashSet::new()),
            OptimizationDirection::Minimize,
            None,
        );
        !matches!(problem.solve(), Err(microlp::Error::Infeasible))
    }

    /// Solves `objective` (over the cells `scope` leaves free, or all) and
    /// widens `seen` (per table and cell, the lowest and highest value of
    /// any feasible point found so far) with the optimum found: every
    /// optimum is a feasible point, of the whole system too when the rest
    /// is held at one. Returns the objective's value and the point,
    /// `Err(true)` when unbounded, `Err(false)` when it could not be solved.
    fn solve_into(
        &self,
        objective: Objective<'_>,
        direction: OptimizationDirection,
        scope: Option<&Scope<'_>>,
        seen: &mut [Vec<(f64, f64)>],
    ) -> Result<(f64, Vec<Vec<f64>>), bool> {
        let (problem, terms) = self.program(objective, direction, scope);
        let solution = match problem.solve() {
            Ok(outcome) => outcome.into_solution().map_err(|_| false)?,
            Err(microlp::Error::Unbounded) => return Err(true),
            Err(_) => return Err(false),
        };
        let point: Vec<Vec<f64>> = terms
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&term| match term {
                        Term::Var(v) => solution.var_value(v),
                        Term::Const(c) => c,
                    })
                    .collect()
            })
            .collect();
        for (t, row) in point.iter().enumerate() {
            for (i, &x) in row.iter().enumerate() {
                let s = &mut seen[t][i];
                *s = (s.0.min(x), s.1.max(x));
            }
        }
        Ok((solution.objective(), point))
    }

    /// The first suppressed cell, of any table, whose interval is narrower
    /// than `need`, as (table, cell). Each cell needs two programs only when
    /// the feasible points found so far do not already show it to be wide
    /// (two points `need` apart in it prove that); a few programs with
    /// spread-out objectives find such points for most cells at once, and
    /// every program solved for one cell adds its optimum for the others.
    /// Nodes of a left-out subtree are as wide as the node standing for it.
    ///
    /// Those programs run first block by block: the subtree under one child
    /// of the root (a wijk with its buurten) and the root, in every table,
    /// with every other cell held at a feasible point of the whole system.
    /// Such a program is a few hundred times smaller than the whole one, and
    /// what makes the whole take many rounds (buurten sharing their wijk's
    /// total) stays inside a block. The cells the blocks cannot show wide
    /// (a hidden wijk whose other side is in another wijk) go on to programs
    /// over the whole system.
    ///
    /// `found` holds what earlier rounds of the same audit found: hiding a
    /// cell only takes a bound away, so their points are points of this
    /// system too.
    fn first_narrow(&self, need: u64, found: &mut Found) -> Option<(usize, usize)> {
        let need = need as f64;
        let seen = found.seen.get_or_insert_with(|| {
            vec![vec![(f64::INFINITY, f64::NEG_INFINITY); self.tree.len()]; self.tables.len()]
        });
        let cells: Vec<(usize, usize)> = self
            .tables
            .iter()
            .enumerate()
            .flat_map(|(t, cells)| {
                cells
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| **r == Released::Suppressed && self.hidden_under[*i].is_none())
                    .map(move |(i, _)| (t, i))
            })
            .collect();
        let mut open: HashSet<(usize, usize)> = cells.iter().copied().collect();
        open.retain(|&(t, i)| !wide(seen, t, i, need));
        if open.is_empty() {
            return None;
        }
        // Push every cell down together: a first point, and where the
        // blocks start from.
        if found.point.is_none() {
            found.point = self
                .solve_into(
                    Objective::Sum(&open),
                    OptimizationDirection::Minimize,
                    None,
                    seen,
                )
                .ok()
                .map(|(_, point)| point);
        }
        if let Some(point) = &found.point {
            self.explore_blocks(&mut open, need, point, seen);
        }
        self.explore(&mut open, need, None, seen);
        if open.is_empty() {
            return None;
        }
        for &(t, i) in &cells {
            if wide(seen, t, i, need) {
                continue;
            }
            let lo = match self.solve_into(
                Objective::Cell((t, i)),
                OptimizationDirection::Minimize,
                None,
                seen,
            ) {
                Ok((lo, _)) => lo,
                // A program that could not be solved proves nothing: the
                // cell counts as narrow, which only hides more.
                Err(_) => return Some((t, i)),
            };
            if wide(seen, t, i, need) {
                continue;
            }
            match self.solve_into(
                Objective::Cell((t, i)),
                OptimizationDirection::Maximize,
                None,
                seen,
            ) {
                Err(true) => continue,
                Err(false) => return Some((t, i)),
                Ok((hi, _)) => {
                    let width = (hi + SLACK).floor() - (lo - SLACK).ceil().max(0.0);
                    if width < need {
                        return Some((t, i));
                    }
                }
            }
        }
        None
    }

    /// Rounds of programs (over `scope`) that, while they show more cells
    /// of `open` wide, bring each one up to `need` above the lowest value
    /// seen of it, and down to `need` below the highest. Leaves in `open`
    /// the cells not shown wide.
    fn explore(
        &self,
        open: &mut HashSet<(usize, usize)>,
        need: f64,
        scope: Option<&Scope<'_>>,
        seen: &mut [Vec<(f64, f64)>],
    ) {
        for _ in 0..EXPLORE_ROUNDS {
            let before = open.len();
            for direction in [
                OptimizationDirection::Maximize,
                OptimizationDirection::Minimize,
            ] {
                open.retain(|&(t, i)| !wide(seen, t, i, need));
                if open.is_empty() {
                    return;
                }
                let targets: HashMap<(usize, usize), f64> = open
                    .iter()
                    .map(|&(t, i)| {
                        let (lo, hi) = seen[t][i];
                        let target = if direction == OptimizationDirection::Maximize {
                            lo + need
                        } else {
                            (hi - need).max(0.0)
                        };
                        ((t, i), target)
                    })
                    .collect();
                let _ = self.solve_into(Objective::Reach(&targets), direction, scope, seen);
            }
            open.retain(|&(t, i)| !wide(seen, t, i, need));
            if open.is_empty() || open.len() == before {
                return;
            }
        }
    }

    /// [`System::explore`] over parts of the system, with every other cell
    /// held at `point`: each block alone; then each block with its
    /// [`PARTNERS`] partners; then groups of blocks, neighbours in the
    /// tree's order, two by two, until the next would be the whole system.
    fn explore_blocks(
        &self,
        open: &mut HashSet<(usize, usize)>,
        need: f64,
        point: &[Vec<f64>],
        seen: &mut [Vec<(f64, f64)>],
    ) {
        let block = self.blocks();
        let tops = self.tree.children(0);
        let explore = |open: &mut HashSet<(usize, usize)>,
                       seen: &mut [Vec<(f64, f64)>],
                       of: &[usize],
                       with: &[usize]| {
            let mut inside: HashSet<(usize, usize)> = open
                .iter()
                .copied()
                .filter(|&(_, i)| block[i].is_some_and(|b| of.contains(&b)))
                .collect();
            if inside.is_empty() {
                return;
            }
            let free = (0..self.tree.len())
                .map(|i| i == 0 || block[i].is_some_and(|b| of.contains(&b) || with.contains(&b)))
                .collect();
            self.explore(&mut inside, need, Some(&Scope { free, point }), seen);
            open.retain(|&(t, i)| !wide(seen, t, i, need));
        };
        for &top in tops {
            explore(open, seen, &[top], &[]);
        }
        // A hidden wijk can move only as far as the gemeente's ± D lets it
        // unless another wijk moves the other way: its partners are the
        // blocks whose tops have the most room to go down, at `point`, in
        // the tables where it is still open.
        let room = |t: usize, i: usize| {
            let lowest = match self.tables[t][i] {
                Released::Value(v) => v.saturating_sub(self.d) as f64,
                Released::Suppressed => 0.0,
            };
            point[t][i] - lowest
        };
        for &top in tops {
            let tables: HashSet<usize> = open
                .iter()
                .filter(|&&(_, i)| block[i] == Some(top))
                .map(|&(t, _)| t)
                .collect();
            if tables.is_empty() {
                continue;
            }
            let mut others: Vec<(f64, usize)> = tops
                .iter()
                .filter(|&&b| b != top)
                .map(|&b| (tables.iter().map(|&t| room(t, b)).sum(), b))
                .collect();
            others.sort_by(|x, y| y.0.total_cmp(&x.0));
            let partners: Vec<usize> = others.iter().take(PARTNERS).map(|&(_, b)| b).collect();
            explore(open, seen, &[top], &partners);
        }
        let mut groups: Vec<Vec<usize>> = tops.chunks(2).map(<[usize]>::to_vec).collect();
        while groups.len() > 1 && !open.is_empty() {
            for group in &groups {
                explore(open, seen, group, &[]);
            }
            if groups.len() == 2 {
                break;
            }
            groups = groups.chunks(2).map(<[Vec<usize>]>::concat).collect();
        }
    }

    /// Per node, the child of the root whose subtree holds it (itself for a
    /// child of the root; `None` for the root).
    fn blocks(&self) -> Vec<Option<usize>> {
        let mut block = vec![None; self.tree.len()];
        // Parents come before their children.
        for i in 1..self.tree.len() {
            block[i] = match self.tree.parent(i) {
                Some(0) => Some(i),
                Some(p) => block[p],
                None => None,
            };
        }
        block
    }

    /// The exact interval of one cell, `None` when the releases contradict
    /// each other (they cannot, when they come from one truth).
    fn interval(&self, cell: (usize, usize)) -> Option<Interval> {
        let mut seen = vec![vec![(0.0, 0.0); self.tree.len()]; self.tables.len()];
        let (lo, _) = self
            .solve_into(
                Objective::Cell(cell),
                OptimizationDirection::Minimize,
                None,
                &mut seen,
            )
            .ok()?;
        let hi = match self.solve_into(
            Objective::Cell(cell),
            OptimizationDirection::Maximize,
            None,
            &mut seen,
        ) {
            Ok((hi, _)) => Some(hi),
            Err(true) => None,
            Err(false) => return None,
        };
        Some(Interval {
            lo: (lo - SLACK).ceil().max(0.0) as u64,
            hi: hi.map(|h| (h + SLACK).floor().max(0.0) as u64),
        })
    }
}

/// The interval an attacker computes for every suppressed cell of this table
/// (table 0) and of every linked table (numbered on in the order of `links`,
/// a [`Link::Parts`] one table per part, a [`Link::NestedParts`] its parts
/// and then their parts in order): `(table, cell, interval)`.
pub fn linked_intervals(
    tree: &AreaTree,
    this: &[Released],
    links: &[Link],
    d: u32,
) -> Vec<(usize, usize, Interval)> {
    System::new(tree, this, links, d).intervals()
}

impl System<'_> {
    /// Every suppressed cell's interval, as [`linked_intervals`] says.
    fn intervals(&self) -> Vec<(usize, usize, Interval)> {
        let system = self;
        let mut out = Vec::new();
        let mut solved = HashMap::new();
        for (t, cells) in system.tables.iter().enumerate() {
            for (i, r) in cells.iter().enumerate() {
                if *r != Released::Suppressed {
                    continue;
                }
                // A node of a left-out subtree, from the node standing for it.
                let top = system.hidden_under[i].unwrap_or(i);
                // Contradictory releases leave nothing to learn from; they do
                // not occur when every table comes from one truth.
                let found = *solved
                    .entry((t, top))
                    .or_insert_with(|| system.interval((t, top)));
                let Some(of_top) = found else {
                    continue;
                };
                let interval = if top == i || system.leaves[i] == system.leaves[top] {
                    of_top
                } else {
                    Interval {
                        lo: 0,
                        hi: of_top.hi,
                    }
                };
                out.push((t, i, interval));
            }
        }
        out
    }
}

/// The audit of one table against what it is linked to: first within the
/// table (exact and fast on its tree), then across the links, suppressing
/// one more cell of this table until every suppressed cell anywhere is at
/// least `max(k, 2D)` wide. The linked tables were released before and stay
/// as they are. Returns how many cells it suppressed.
pub fn audit_linked(
    tree: &AreaTree,
    released: &mut [Released],
    links: &[Link],
    k: u32,
    d: u32,
) -> usize {
    let need = u64::from(k.max(2 * d));
    let mut extra = crate::audit::audit(tree, released, k, d);
    if links.is_empty() {
        return extra;
    }
    let mut found = Found::default();
    // Hiding a cell only takes a bound away: an assumption the releases
    // allowed stays allowed, and only stricter ones need trying again.
    let mut movers = MOVERS.len() - 1;
    loop {
        let system = System::assuming(tree, released, links, d, &MOVERS[..=movers]);
        let now = MOVERS
            .iter()
            .position(|&m| m == system.movers)
            .expect("one of them");
        if now != movers {
            // Points of a looser system need not be points of this one.
            found = Found::default();
            movers = now;
        }
        let Some((_, area)) = system.first_narrow(need, &mut found) else {
            return extra;
        };
        // Hide the same area in this table if it shows, else a neighbour by
        // the rule of the table audit.
        let victim = if released[area] != Released::Suppressed {
            Some(area)
        } else {
            crate::audit::victim_for(tree, released, area)
        };
        let Some(v) = victim else {
            // Nothing released is left to hide behind.
            return extra;
        };
        released[v] = Released::Suppressed;
        extra += 1;
        extra += crate::audit::audit(tree, released, k, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Released::{Suppressed as S, Value as V};
    use proptest::prelude::*;

    /// A gemeente (0) of two buurten (1, 2): small enough to enumerate.
    fn pair() -> AreaTree {
        AreaTree::from_parents(&[None, Some(0), Some(0)])
    }

    fn iv(lo: u64, hi: Option<u64>) -> Interval {
        Interval { lo, hi }
    }

    /// Every interval at least 4 wide (k = 4, D = 1).
    fn all_wide(found: Vec<(usize, usize, Interval)>) -> bool {
        found
            .iter()
            .all(|(_, _, i)| i.width().is_none_or(|w| w >= 4))
    }

    /// With `links`, `this` table's buurt 1 is narrowed to `narrowed` (as
    /// enumeration finds too); the audit (k = 4, D = 1) hides more, after
    /// which every cell is wide.
    fn narrowed_and_stopped(this: &[Released], links: &[Link], narrowed: Interval) {
        let tree = pair();
        let found = linked_intervals(&tree, this, links, 1);
        assert!(found.contains(&(0, 1, narrowed)), "{found:?}");
        assert_eq!(found, brute_force(&System::new(&tree, this, links, 1)));
        let mut audited = this.to_vec();
        assert!(audit_linked(&tree, &mut audited, links, 4, 1) > 0);
        assert!(all_wide(brute_force(&System::new(
            &tree, &audited, links, 1
        ))));
    }

    /// Above this an enumerated upper bound means "unbounded"; every real
    /// bound of the generated cases is lower.
    const CAP: u64 = 13;

    /// Exact intervals by trying every integer assignment of every table's
    /// buurten (0..=CAP) against all the system's constraints.
    fn brute_force(s: &System<'_>) -> Vec<(usize, usize, Interval)> {
        let d = s.d;
        let within = |r: Released, x: u64| match r {
            Released::Value(v) => v.saturating_sub(d) <= x && x <= v + d,
            Released::Suppressed => true,
        };
        // Each table's own consistent assignments [total, buurt 1, buurt 2].
        let own: Vec<Vec<[u64; 3]>> = s
            .tables
            .iter()
            .map(|cells| {
                let mut out = Vec::new();
                for a in 0..=CAP {
                    for b in 0..=CAP {
                        let x = [a + b, a, b];
                        if (0..3).all(|i| within(cells[i], x[i])) {
                            out.push(x);
                        }
                    }
                }
                out
            })
            .collect();
        let mut bounds: Vec<Vec<Option<(u64, u64)>>> = vec![vec![None; 3]; s.tables.len()];
        let mut pick = vec![[0u64; 3]; s.tables.len()];
        fn walk(
            s: &System<'_>,
            own: &[Vec<[u64; 3]>],
            t: usize,
            pick: &mut Vec<[u64; 3]>,
            bounds: &mut Vec<Vec<Option<(u64, u64)>>>,
        ) {
            if t == own.len() {
                let ok_sum = s.at_most_sum.iter().all(|(w, parts)| {
                    (0..3).all(|i| pick[*w][i] <= parts.iter().map(|&p| pick[p][i]).sum())
                });
                if !ok_sum {
                    return;
                }
                for (tt, x) in pick.iter().enumerate() {
                    for i in 0..3 {
                        let b = bounds[tt][i].get_or_insert((x[i], x[i]));
                        *b = (b.0.min(x[i]), b.1.max(x[i]));
                    }
                }
                return;
            }
            for x in &own[t] {
                pick[t] = *x;
                // Inequalities between tables assigned so far.
                let ok = s.at_least.iter().all(|a| {
                    a.big.max(a.small) > t
                        || if a.total_only {
                            pick[a.big][0] + a.slack >= pick[a.small][0]
                        } else {
                            (0..3).all(|i| pick[a.big][i] + a.slack >= pick[a.small][i])
                        }
                });
                if ok {
                    walk(s, own, t + 1, pick, bounds);
                }
            }
        }
        walk(s, &own, 0, &mut pick, &mut bounds);
        let mut out = Vec::new();
        for (t, cells) in s.tables.iter().enumerate() {
            for (i, r) in cells.iter().enumerate() {
                if *r == S {
                    let (lo, hi) = bounds[t][i].expect("the truth is consistent");
                    out.push((t, i, iv(lo, (hi < CAP).then_some(hi))));
                }
            }
        }
        out
    }

    #[test]
    fn a_period_narrows_its_hidden_month_and_the_audit_stops_it() {
        // A two-month period with D = 1. Month 1 shows 20 = 10 + 10; month 2
        // hides everything; the period shows 30 = 20 + 10.
        let tree = pair();
        let m1 = vec![V(20), V(10), V(10)];
        let m2 = vec![S, S, S];
        let mut period = vec![V(30), V(20), V(10)];
        let links = [Link::Parts(vec![m1, m2])];
        // Per buurt the period is at most month 1 plus month 2, so month 2's
        // buurt 1 ≥ 19 − 11 = 8, and at least month 2 (its last month), so
        // ≤ 21; its total ≥ 29 − 21 = 8 and ≤ 31; its buurt 2 ∈ [0, 11].
        let found = linked_intervals(&tree, &period, &links, 1);
        assert_eq!(
            found,
            vec![
                (2, 0, iv(8, Some(31))),
                (2, 1, iv(8, Some(21))),
                (2, 2, iv(0, Some(11)))
            ]
        );
        // With k = 25 all three are too narrow: the audit hides cells of
        // the period (the months are out already) until none is.
        assert!(audit_linked(&tree, &mut period, &links, 25, 1) > 0);
        for (_, _, i) in linked_intervals(&tree, &period, &links, 1) {
            assert!(i.width().is_none_or(|w| w >= 25), "{period:?} {i:?}");
        }
    }

    #[test]
    fn the_first_version_narrows_the_third_through_the_second() {
        // D = 1, k = 4 (need 4). Version 1 showed buurt 1 as 6: at least 5.
        // Version 2 hid everything. Version 3 shows the total 7 and hides
        // both buurten.
        let tree = pair();
        let v1 = vec![S, V(6), S];
        let v2 = vec![S, S, S];
        let v3 = vec![V(7), S, S];
        // With the version before only, as a star would link it: buurt 1 of
        // version 3 is at least its hidden value in version 2, so [0, 8].
        let last_only = [Link::EarlierVersions {
            of: 0,
            versions: vec![v2.clone()],
            per_cell: true,
        }];
        assert!(all_wide(linked_intervals(&tree, &v3, &last_only, 1)));
        // With both: at least version 2's, which is at least version 1's,
        // at least 5; at most the total's 8. [5, 8] is 3 wide.
        let both = [Link::EarlierVersions {
            of: 0,
            versions: vec![v1, v2],
            per_cell: true,
        }];
        narrowed_and_stopped(&v3, &both, iv(5, Some(8)));
    }

    #[test]
    fn a_part_s_earlier_version_narrows_its_period() {
        // D = 1, k = 4 (need 4). A period of two months; month 2's first
        // version showed buurt 1 as 6 (at least 5), its second hid
        // everything, as did month 1. The period shows its total 7.
        let tree = pair();
        let months = vec![vec![S, S, S], vec![S, S, S]];
        let period = vec![V(7), S, S];
        // With the months' current versions only: the period's buurt 1 is
        // at least month 2's, which is hidden: [0, 8].
        let current = [Link::Parts(months.clone())];
        assert!(all_wide(linked_intervals(&tree, &period, &current, 1)));
        // With month 2's first version too (table 2 is month 2): buurt 1 is
        // at least 5, at most the total's 8.
        let all = [
            Link::Parts(months),
            Link::EarlierVersions {
                of: 2,
                versions: vec![vec![S, V(6), S]],
                per_cell: true,
            },
        ];
        narrowed_and_stopped(&period, &all, iv(5, Some(8)));
    }

    #[test]
    fn an_earlier_version_narrows_a_hidden_cell_and_the_audit_stops_it() {
        // D = 4, k = 10. Version 1 showed 26 = 12 + 14. Version 2 shows the
        // total 26 and buurt 2 as 18 and hides buurt 1. On its own, version 2
        // gives buurt 1 ∈ [22 − 22, 30 − 14] = [0, 16]: wide enough.
        let tree = pair();
        let old = vec![V(26), V(12), V(14)];
        let mut new = vec![V(26), S, V(18)];
        let alone = crate::audit::feasible_intervals(&tree, &new, 4);
        assert_eq!(alone[1], iv(0, Some(16)));
        // But a (type, month) table only gains households: buurt 1 is at
        // least its old truth, at least 12 − 4 = 8. [8, 16] is 8 wide.
        let links = [Link::EarlierVersions {
            of: 0,
            versions: vec![old],
            per_cell: true,
        }];
        assert_eq!(
            linked_intervals(&tree, &new, &links, 4),
            vec![(0, 1, iv(8, Some(16)))]
        );
        // The audit hides buurt 2 as well: buurt 1 ∈ [8, 30 − 10] = [8, 20]
        // (buurt 2 is at least its old 10), buurt 2 ∈ [10, 30 − 8] = [10, 22].
        assert_eq!(audit_linked(&tree, &mut new, &links, 10, 4), 1);
        assert_eq!(new, vec![V(26), S, S]);
        assert_eq!(
            linked_intervals(&tree, &new, &links, 4),
            vec![(0, 1, iv(8, Some(20))), (0, 2, iv(10, Some(22)))]
        );
        // Only the total is known to grow in a period table: then the old
        // buurt 1 says nothing about the new one.
        let mut new = vec![V(26), S, V(18)];
        let links = [Link::EarlierVersions {
            of: 0,
            versions: vec![vec![V(26), V(12), V(14)]],
            per_cell: false,
        }];
        assert_eq!(
            linked_intervals(&tree, &new, &links, 4),
            vec![(0, 1, iv(0, Some(16)))]
        );
        assert_eq!(audit_linked(&tree, &mut new, &links, 10, 4), 0);
    }

    /// Consistent truths for a period of two parts (each buurt's period
    /// count between the last part's and the sum), or for versions (three,
    /// each with households added; or two, with households moved), released with noise of at most D = 1
    /// and values below 3 (or drawn at random) suppressed.
    fn linked_case() -> impl Strategy<Value = (Vec<Released>, Vec<Link>)> {
        let truth = || prop::collection::vec(0u64..=2, 2);
        (
            truth(),
            truth(),
            prop::collection::vec((0u64..=2, -1i64..=1, any::<bool>()), 9),
            0u8..4,
        )
            .prop_map(|(a, b, draws, kind)| {
                let release = |t: [u64; 2], j: usize| -> Vec<Released> {
                    [t[0] + t[1], t[0], t[1]]
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| {
                            let (_, noise, hide) = draws[3 * j + i];
                            let v = x.saturating_add_signed(noise);
                            if v < 3 || (hide && i > 0) { S } else { V(v) }
                        })
                        .collect()
                };
                // The earlier tables were released, so audited, on their own.
                let audited = |mut cells: Vec<Released>| {
                    crate::audit::audit(&pair(), &mut cells, 4, 1);
                    cells
                };
                let (a, b) = ([a[0], a[1]], [b[0], b[1]]);
                match kind {
                    0 => {
                        // Period: per buurt at least each part (households
                        // stay put) and at most a + b.
                        let p = [0, 1].map(|i| a[i].max(b[i]) + draws[i].0.min(a[i].min(b[i])));
                        (
                            release(p, 2),
                            vec![Link::Parts(vec![
                                audited(release(a, 0)),
                                audited(release(b, 1)),
                            ])],
                        )
                    }
                    3 => {
                        // Stale parts: a was released, then b's households
                        // joined the same month; the period counts them all.
                        let current = [0, 1].map(|i| a[i] + b[i]);
                        let p = [0, 1].map(|i| current[i] + draws[i].0.min(1));
                        (
                            release(p, 2),
                            vec![Link::StaleParts {
                                parts: vec![audited(release(b, 0)), audited(release(a, 1))],
                                per_cell: true,
                            }],
                        )
                    }
                    1 => {
                        // Three versions, each with households added; the
                        // second was audited with the first when released.
                        let mid = [0, 1].map(|i| a[i] + draws[i].0.min(b[i]));
                        let new = [0, 1].map(|i| a[i] + b[i]);
                        let first = audited(release(a, 0));
                        let mut second = release(mid, 1);
                        let before = [Link::EarlierVersions {
                            of: 0,
                            versions: vec![first.clone()],
                            per_cell: true,
                        }];
                        audit_linked(&pair(), &mut second, &before, 4, 1);
                        (
                            release(new, 2),
                            vec![Link::EarlierVersions {
                                of: 0,
                                versions: vec![first, second],
                                per_cell: true,
                            }],
                        )
                    }
                    _ => {
                        // Households moved between buurten, and some added.
                        let new = [a[1] + b[0], a[0] + b[1]];
                        (
                            release(new, 2),
                            vec![Link::EarlierVersions {
                                of: 0,
                                versions: vec![audited(release(a, 0))],
                                per_cell: false,
                            }],
                        )
                    }
                }
            })
    }

    /// A gemeente of two wijken (two buurten and one), and a period of two
    /// months over it, from consistent truths with noise within D = 4;
    /// values below 10 (or drawn at random) suppressed, often whole wijken.
    fn two_level_case() -> impl Strategy<Value = (AreaTree, Vec<Released>, Vec<Link>)> {
        (
            prop::collection::vec((0u64..12, 0u64..12, 0u64..12), 3),
            prop::collection::vec((-4i64..=4, 0u8..4), 18),
        )
            .prop_map(|(leaves, draws)| {
                let tree =
                    AreaTree::from_parents(&[None, Some(0), Some(0), Some(1), Some(1), Some(2)]);
                let table = |values: [u64; 3], j: usize| -> Vec<Released> {
                    let [a, b, c] = values;
                    [a + b + c, a + b, c, a, b, c]
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| {
                            let (noise, hide) = draws[6 * j + i];
                            let v = x.saturating_add_signed(noise);
                            if v < 10 || hide == 0 { S } else { V(v) }
                        })
                        .collect()
                };
                let m1 = [leaves[0].0, leaves[1].0, leaves[2].0];
                let m2 = [leaves[0].1, leaves[1].1, leaves[2].1];
                // Per buurt at least each month, at most their sum.
                let p = [0, 1, 2].map(|i| {
                    m1[i].max(m2[i])
                        + m1[i]
                            .min(m2[i])
                            .min([leaves[0].2, leaves[1].2, leaves[2].2][i])
                });
                let audited = |mut cells: Vec<Released>| {
                    crate::audit::audit(&tree, &mut cells, 10, 4);
                    cells
                };
                let links = vec![Link::Parts(vec![
                    audited(table(m1, 0)),
                    audited(table(m2, 1)),
                ])];
                (tree.clone(), table(p, 2), links)
            })
    }

    /// A gemeente of four wijken (two buurten, one, two, one), and a
    /// quarter over three months, from consistent truths with noise within
    /// D = 4; values below 10 (or drawn at random) suppressed. Four wijken
    /// are enough for every step of [`System::explore_blocks`] to run:
    /// blocks alone, with partners, and in groups.
    fn four_wijk_case() -> impl Strategy<Value = (AreaTree, Vec<Released>, Vec<Link>)> {
        const PARENTS: [Option<usize>; 11] = [
            None,
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(1),
            Some(1),
            Some(2),
            Some(3),
            Some(3),
            Some(4),
        ];
        (
            prop::collection::vec(prop::collection::vec(0u64..14, 6), 3),
            prop::collection::vec((-4i64..=4, 0u8..4), 44),
        )
            .prop_map(|(months, draws)| {
                let tree = AreaTree::from_parents(&PARENTS);
                let table = |leaves: &[u64], j: usize| -> Vec<Released> {
                    let mut x = vec![0u64; PARENTS.len()];
                    for (leaf, &v) in (5..PARENTS.len()).zip(leaves) {
                        x[leaf] = v;
                        let mut up = PARENTS[leaf];
                        while let Some(p) = up {
                            x[p] += v;
                            up = PARENTS[p];
                        }
                    }
                    x.iter()
                        .enumerate()
                        .map(|(i, &x)| {
                            let (noise, hide) = draws[PARENTS.len() * j + i];
                            let v = x.saturating_add_signed(noise);
                            if v < 10 || hide == 0 { S } else { V(v) }
                        })
                        .collect()
                };
                // Each household once per month; the quarter holds every
                // household of its months: at most their sum, at least each
                // month (households stay put). Here: the largest month and
                // half of the others. (Issue 22: the last month and half of
                // the others could fall below another month in total, which
                // no truth gives.)
                let quarter: Vec<u64> = (0..6)
                    .map(|b| {
                        let most = (0..3).map(|m| months[m][b]).max().unwrap_or(0);
                        let sum: u64 = (0..3).map(|m| months[m][b]).sum();
                        most + (sum - most) / 2
                    })
                    .collect();
                let audited = |mut cells: Vec<Released>| {
                    crate::audit::audit(&tree, &mut cells, 10, 4);
                    cells
                };
                let links = vec![Link::Parts(
                    (0..3).map(|m| audited(table(&months[m], m))).collect(),
                )];
                (tree.clone(), table(&quarter, 3), links)
            })
    }

    /// How far `point` lies outside the system's constraints (0 inside).
    fn violation(s: &System<'_>, point: &[Vec<f64>]) -> f64 {
        let n = s.tree.len();
        let kept = |i: usize| s.hidden_under[i].is_none();
        let mut worst: f64 = 0.0;
        for (t, cells) in s.tables.iter().enumerate() {
            for i in (0..n).filter(|&i| kept(i)) {
                let x = point[t][i];
                worst = worst.max(match cells[i] {
                    Released::Value(v) => {
                        (v.saturating_sub(s.d) as f64 - x).max(x - (v + s.d) as f64)
                    }
                    Released::Suppressed => -x,
                });
                let kids = s.tree.children(i);
                if !kids.is_empty() && kids.iter().all(|&c| kept(c)) {
                    let sum: f64 = kids.iter().map(|&c| point[t][c]).sum();
                    worst = worst.max((x - sum).abs());
                }
            }
        }
        for a in &s.at_least {
            let cells = if a.total_only { 0..1 } else { 0..n };
            for i in cells.filter(|&i| kept(i)) {
                worst = worst.max(point[a.small][i] - point[a.big][i] - a.slack as f64);
            }
        }
        for (whole, parts) in &s.at_most_sum {
            for i in (0..n).filter(|&i| kept(i)) {
                let sum: f64 = parts.iter().map(|&t| point[t][i]).sum();
                worst = worst.max(point[*whole][i] - sum);
            }
        }
        worst
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// A program over some blocks, with the rest held at a feasible
        /// point, only finds points of the whole system: what lets it show
        /// cells wide. Every block, alone and with every other one, pushed
        /// up and down.
        #[test]
        fn points_of_programs_over_blocks_are_points_of_the_whole_system((tree, this, links) in four_wijk_case()) {
            let s = System::new(&tree, &this, &links, 4);
            let mut seen = vec![vec![(f64::INFINITY, f64::NEG_INFINITY); tree.len()]; s.tables.len()];
            let hidden: HashSet<(usize, usize)> = (0..s.tables.len())
                .flat_map(|t| (0..tree.len()).map(move |i| (t, i)))
                .filter(|&(t, i)| s.tables[t][i] == S)
                .collect();
            let (_, point) = s
                .solve_into(Objective::Sum(&hidden), OptimizationDirection::Minimize, None, &mut seen)
                .expect("releases from one truth are consistent");
            prop_assert!(violation(&s, &point) < 1e-6);
            let block = s.blocks();
            let tops = tree.children(0);
            for &a in tops {
                for &b in tops {
                    let free = (0..tree.len())
                        .map(|i| i == 0 || block[i] == Some(a) || block[i] == Some(b))
                        .collect();
                    let scope = Scope { free, point: &point };
                    for direction in [OptimizationDirection::Maximize, OptimizationDirection::Minimize] {
                        let targets: HashMap<(usize, usize), f64> = hidden
                            .iter()
                            .map(|&cell| (cell, if direction == OptimizationDirection::Maximize { 30.0 } else { 0.0 }))
                            .collect();
                        if let Ok((_, found)) = s.solve_into(Objective::Reach(&targets), direction, Some(&scope), &mut seen) {
                            prop_assert!(violation(&s, &found) < 1e-6, "{a} {b} {direction:?}: {found:?}");
                            // Held cells stay where they were.
                            for (t, row) in found.iter().enumerate() {
                                for (i, &x) in row.iter().enumerate() {
                                    if !scope.free[i] && s.hidden_under[i].is_none() {
                                        prop_assert_eq!(x, point[t][i]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }

        /// I6 across tables on four wijken: after the linked audit, which
        /// shows cells wide block by block, the program over every node
        /// finds no suppressed cell narrower than max(k, 2D) = 10.
        #[test]
        fn after_the_linked_audit_no_cell_of_four_wijken_is_narrow((tree, mut this, links) in four_wijk_case()) {
            audit_linked(&tree, &mut this, &links, 10, 4);
            for (t, i, interval) in System::uncollapsed(&tree, &this, &links, 4).intervals() {
                prop_assert!(interval.width().is_none_or(|w| w >= 10), "{:?} {:?}: {} {} {:?}", this, links, t, i, interval);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// I6 across tables on a two-level gemeente: after the audit, the
        /// program over every node finds no suppressed cell narrower than
        /// max(k, 2D) = 10.
        #[test]
        fn after_the_linked_audit_no_cell_of_two_levels_is_narrow((tree, mut this, links) in two_level_case()) {
            audit_linked(&tree, &mut this, &links, 10, 4);
            for (t, i, interval) in System::uncollapsed(&tree, &this, &links, 4).intervals() {
                prop_assert!(interval.width().is_none_or(|w| w >= 10), "{:?} {:?}: {} {} {:?}", this, links, t, i, interval);
            }
        }

        /// Leaving out the subtrees suppressed everywhere changes no
        /// interval: the same as the program over every node.
        #[test]
        fn collapsing_hidden_subtrees_is_exact((tree, this, links) in two_level_case()) {
            let full = System::uncollapsed(&tree, &this, &links, 4).intervals();
            prop_assert_eq!(linked_intervals(&tree, &this, &links, 4), full);
        }

        /// The linear program's intervals, rounded to whole households, are
        /// exactly what enumeration of every integer assignment finds.
        #[test]
        fn linked_intervals_are_exact((this, links) in linked_case()) {
            let tree = pair();
            let system = System::new(&tree, &this, &links, 1);
            prop_assert_eq!(linked_intervals(&tree, &this, &links, 1), brute_force(&system));
        }

        /// I6 across tables: after the audit, no suppressed cell of this
        /// table or of a linked one can be narrowed below max(k, 2D),
        /// checked by enumeration.
        #[test]
        fn after_the_linked_audit_every_suppressed_cell_stays_wide((mut this, links) in linked_case()) {
            let tree = pair();
            audit_linked(&tree, &mut this, &links, 4, 1);
            let system = System::new(&tree, &this, &links, 1);
            for (t, i, interval) in brute_force(&system) {
                prop_assert!(interval.width().is_none_or(|w| w >= 4), "{:?} {:?}: {} {} {:?}", this, links, t, i, interval);
            }
        }
    }

    #[test]
    fn where_households_moved_the_fewest_movers_the_releases_allow_are_assumed() {
        // D = 1. Month 1 has 6 households in buurt 1; in month 2 three of
        // them moved to buurt 2, and the quarter counts them there: its
        // buurt 1 (3, at most 4) is below month 1's (at least 5). Staying
        // put contradicts the releases; one mover per area does not.
        let tree = pair();
        let m1 = vec![V(6), V(6), S];
        let m2 = vec![V(6), S, S];
        let quarter = vec![V(6), V(3), V(3)];
        let links = [Link::Parts(vec![m1, m2])];
        let strict = System::built(&tree, &quarter, &links, 1, Some(0));
        assert!(!strict.consistent());
        let system = System::new(&tree, &quarter, &links, 1);
        assert_eq!(system.movers, Some(1));
        assert_eq!(
            linked_intervals(&tree, &quarter, &links, 1),
            brute_force(&system)
        );
        // Where they stay put, everyone is assumed to.
        let stayed = vec![V(6), V(6), S];
        let system = System::new(&tree, &stayed, &links, 1);
        assert_eq!(system.movers, Some(0));
    }

    #[test]
    fn a_year_narrows_a_quarter_through_its_months_where_no_star_does() {
        // D = 1, k = 4. Quarter 1 was audited with its months, and the
        // year with its quarters: each star leaves every hidden cell at
        // least 4 wide. (Found by a random search over consistent truths.)
        let tree = pair();
        let (m1, m2) = (vec![V(5), S, S], vec![S, V(5), S]);
        let (q1, q2) = (vec![V(7), S, S], vec![S, V(4), S]);
        let year = vec![V(10), V(6), V(4)];
        assert!(all_wide(linked_intervals(
            &tree,
            &q1,
            &[Link::Parts(vec![m1.clone(), m2.clone()])],
            1
        )));
        assert!(all_wide(linked_intervals(
            &tree,
            &year,
            &[Link::Parts(vec![q1.clone(), q2.clone()])],
            1
        )));
        // Together: quarter 1's buurt 1 is at least month 2's (at least 4),
        // and at most the year's buurt 1 (households stay put: at most 7):
        // [4, 7].
        let nested = [Link::NestedParts {
            parts: vec![q1, q2],
            theirs: vec![vec![m1, m2], vec![]],
        }];
        let found = linked_intervals(&tree, &year, &nested, 1);
        assert!(found.contains(&(1, 1, iv(4, Some(7)))), "{found:?}");
        let system = System::new(&tree, &year, &nested, 1);
        assert_eq!(found, brute_force(&system));
        // The audit of the year with all of it hides the year's total.
        let mut audited = year.clone();
        assert!(audit_linked(&tree, &mut audited, &nested, 4, 1) > 0);
        let system = System::new(&tree, &audited, &nested, 1);
        assert!(all_wide(brute_force(&system)));
    }
}
