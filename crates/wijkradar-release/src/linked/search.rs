//! The search for a narrow cell, block by block: a wijk with its buurten
//! and the root, in every table, with every other cell held at a feasible
//! point of the whole system; what the blocks leave open goes to programs
//! over the whole system.

use super::*;

impl System<'_> {
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
    pub(super) fn first_narrow(&self, need: u64, found: &mut Found) -> Option<(usize, usize)> {
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
    pub(super) fn blocks(&self) -> Vec<Option<usize>> {
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
}
