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
//!   late signal can move a household to another buurt, so only the
//!   gemeente total is known to grow, and per cell it holds for households
//!   that stay put: the audit assumes that too, less the fewest movers the
//!   releases allow (as for parts). The same for parts kept at their
//!   version cap ([`Link::StaleParts`]). All of them, not only the last: the
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
//!
//! Modules: this one builds the system of linear programs over the linked
//! tables and computes intervals; `search` is the search over blocks;
//! `tests` hold the result equal to brute-force enumeration of every
//! integer assignment on small cases, and check the audit's promise (every
//! suppressed cell, in this table and in the linked ones, at least
//! `max(k, 2D)` wide) the same way.

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
                        let total_only = !*per_cell || p != first + parts.len() - 1;
                        s.at_least.push(AtLeast {
                            big: 0,
                            small: p,
                            total_only,
                            slack: 0,
                        });
                        s.stay_put(0, p, total_only);
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
                        // A period's later version moves a household to
                        // another buurt only if it moved: per area the
                        // version after is at least this one, less the
                        // movers assumed.
                        s.stay_put(big, small, !*per_cell);
                        big = small;
                    }
                }
            }
        }
        s
    }

    /// Where `big ≥ small` holds per area only for households that stay put
    /// (`only_in_total` for every household): the per-area inequality
    /// less the movers assumed.
    fn stay_put(&mut self, big: usize, small: usize, only_in_total: bool) {
        if let (true, Some(slack)) = (only_in_total, self.movers) {
            self.at_least.push(AtLeast {
                big,
                small,
                total_only: false,
                slack,
            });
        }
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

mod search;
#[cfg(test)]
mod tests;
