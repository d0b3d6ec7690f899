//! The linked audit against enumeration and random cases.

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
    // In a period table only the total grows for every household; per
    // buurt it grows for households that stay put, which the attacker
    // assumes where the releases allow it (issue 20: an attacker holding
    // every version of a year narrowed a quarter's hidden buurt to [7, 14]
    // when the audit assumed only the total). So the same [8, 16], and the
    // audit hides buurt 2 too.
    let mut new = vec![V(26), S, V(18)];
    let links = [Link::EarlierVersions {
        of: 0,
        versions: vec![vec![V(26), V(12), V(14)]],
        per_cell: false,
    }];
    assert_eq!(
        linked_intervals(&tree, &new, &links, 4),
        vec![(0, 1, iv(8, Some(16)))]
    );
    assert_eq!(audit_linked(&tree, &mut new, &links, 10, 4), 1);
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
            let tree = AreaTree::from_parents(&[None, Some(0), Some(0), Some(1), Some(1), Some(2)]);
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
                Released::Value(v) => (v.saturating_sub(s.d) as f64 - x).max(x - (v + s.d) as f64),
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
