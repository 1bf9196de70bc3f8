//! Solvers: scored candidate pairs in, entities out (every record in exactly
//! one entity, unmatched records alone) together with the links, the
//! candidate pairs whose two records ended in the same entity.
//!
//! All three solvers are greedy: they visit the pairs once, in descending
//! score, ties broken by the smaller record and then the larger one, in
//! (site, record) order, so the result depends only on the pairs given.
//!
//! - [`greedy_one_to_one`] (two sites): accept a pair when neither record is
//!   taken yet. This is anonlink's greedy solver for two parties.
//! - [`greedy_clusters`] (N sites): every record starts alone; a pair merges
//!   the entities of its two records when the merged entity still holds at
//!   most one record per site. Merging is transitive: an entity can hold
//!   records `a`, `c` that were never a candidate pair themselves, if each
//!   is linked to `b`. With two sites it gives exactly the one-to-one result.
//! - [`deduplicate`] (one site): complete linkage. A pair merges two entities
//!   only when every record of one scored at least the threshold with every
//!   record of the other (every pair is among the candidates), and, when a
//!   maximum is set, the merged entity is not larger than it. So each entity
//!   is a clique of the candidate graph: no chain of near-misses can pull
//!   unrelated records into one entity.

use std::collections::HashSet;

/// A record: its site (position among the inputs) and its index in that site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordRef {
    /// Input position of the site.
    pub site: u32,
    /// Index of the record in its site, in file order.
    pub record: u32,
}

impl RecordRef {
    /// Record `record` of site `site`.
    pub fn new(site: u32, record: u32) -> Self {
        Self { site, record }
    }
}

/// A candidate pair with its score; `a < b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    /// The smaller record.
    pub a: RecordRef,
    /// The larger record.
    pub b: RecordRef,
    /// Dice score.
    pub score: f64,
}

/// What a solver decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solution {
    /// `entity[site][record]`: the entity of every record, numbered from 0 in
    /// order of the smallest (site, record) each entity holds.
    pub entity: Vec<Vec<u32>>,
    /// Indices into the pairs given of the links (pairs whose records share an
    /// entity), ascending.
    pub links: Vec<usize>,
}

impl Solution {
    /// The number of entities.
    pub fn entity_count(&self) -> usize {
        self.entity
            .iter()
            .flatten()
            .map(|&e| e as usize + 1)
            .max()
            .unwrap_or(0)
    }
}

/// The order in which greedy solvers visit pairs: score descending, then the
/// pair's records ascending.
fn greedy_order(pairs: &[ScoredPair]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_unstable_by(|&i, &j| {
        let (p, q) = (&pairs[i], &pairs[j]);
        q.score
            .total_cmp(&p.score)
            .then((p.a, p.b).cmp(&(q.a, q.b)))
            .then(i.cmp(&j))
    });
    order
}

/// Disjoint sets over all records, flattened site after site.
struct Records {
    offsets: Vec<usize>,
    parent: Vec<u32>,
}

impl Records {
    fn new(site_sizes: &[usize]) -> Self {
        let mut offsets = Vec::with_capacity(site_sizes.len() + 1);
        let mut total = 0;
        for &n in site_sizes {
            offsets.push(total);
            total += n;
        }
        offsets.push(total);
        assert!(u32::try_from(total).is_ok(), "more than 2^32 records");
        Self {
            offsets,
            parent: (0..total as u32).collect(),
        }
    }

    fn index(&self, r: RecordRef) -> usize {
        let i = self.offsets[r.site as usize] + r.record as usize;
        assert!(
            i < self.offsets[r.site as usize + 1],
            "record {r:?} out of range"
        );
        i
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] as usize != x {
            let up = self.parent[self.parent[x] as usize];
            self.parent[x] = up;
            x = up as usize;
        }
        x
    }

    /// Merges the entities of roots `x` and `y` (distinct), whose lists are
    /// `lists[x]` and `lists[y]`: the longer list's root stays the root and
    /// takes in the other list. Returns that root.
    fn union<T>(&mut self, x: usize, y: usize, lists: &mut [Vec<T>]) -> usize {
        let (keep, gone) = if lists[x].len() >= lists[y].len() {
            (x, y)
        } else {
            (y, x)
        };
        let moved = std::mem::take(&mut lists[gone]);
        lists[keep].extend(moved);
        self.parent[gone] = keep as u32;
        keep
    }

    /// Entities numbered by first record, and the links among `pairs`.
    fn solution(mut self, pairs: &[ScoredPair]) -> Solution {
        let total = self.parent.len();
        let mut number = vec![u32::MAX; total];
        let mut next = 0;
        let mut flat = Vec::with_capacity(total);
        for i in 0..total {
            let root = self.find(i);
            if number[root] == u32::MAX {
                number[root] = next;
                next += 1;
            }
            flat.push(number[root]);
        }
        let links = pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| flat[self.index(p.a)] == flat[self.index(p.b)])
            .map(|(i, _)| i)
            .collect();
        let entity = self
            .offsets
            .windows(2)
            .map(|w| flat[w[0]..w[1]].to_vec())
            .collect();
        Solution { entity, links }
    }
}

/// Two sites: greedy one-to-one assignment. Pairs are visited in descending
/// score; a pair is accepted when neither of its records is taken.
///
/// # Panics
/// When a pair names a record outside `site_sizes` or two records of one site.
pub fn greedy_one_to_one(site_sizes: [usize; 2], pairs: &[ScoredPair]) -> Solution {
    let mut records = Records::new(&site_sizes);
    let mut taken = vec![false; records.parent.len()];
    for i in greedy_order(pairs) {
        let p = &pairs[i];
        assert_ne!(p.a.site, p.b.site, "a pair within one site");
        let (x, y) = (records.index(p.a), records.index(p.b));
        if !taken[x] && !taken[y] {
            taken[x] = true;
            taken[y] = true;
            // Roots are the smaller index so that `find` stays trivial.
            records.parent[y.max(x)] = x.min(y) as u32;
        }
    }
    records.solution(pairs)
}

/// N sites: multi-party greedy clustering, at most one record per site in
/// each entity. Pairs are visited in descending score; a pair merges the
/// entities of its records when they hold no site in common.
///
/// # Panics
/// When a pair names a record outside `site_sizes`.
pub fn greedy_clusters(site_sizes: &[usize], pairs: &[ScoredPair]) -> Solution {
    let mut records = Records::new(site_sizes);
    // The sites of each entity, kept at its root, sorted; entities stay small
    // (at most one record per site).
    let mut sites: Vec<Vec<u32>> = Vec::new();
    for (s, &n) in site_sizes.iter().enumerate() {
        sites.extend(std::iter::repeat_n(vec![s as u32], n));
    }
    for i in greedy_order(pairs) {
        let p = &pairs[i];
        let (x, y) = (records.index(p.a), records.index(p.b));
        let (rx, ry) = (records.find(x), records.find(y));
        if rx == ry || sites[rx].iter().any(|s| sites[ry].binary_search(s).is_ok()) {
            continue;
        }
        let keep = records.union(rx, ry, &mut sites);
        sites[keep].sort_unstable();
    }
    records.solution(pairs)
}

/// How deduplication bounds its entities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupOptions {
    /// Largest entity allowed; `None` for no limit beyond complete linkage.
    pub max_cluster_size: Option<usize>,
}

/// One site: deduplication by greedy complete linkage (see the module
/// documentation): two entities merge only when all their cross pairs are
/// among `pairs` and the result respects `options.max_cluster_size`.
///
/// # Panics
/// When a pair names a record outside `records` or of another site than 0.
pub fn deduplicate(records: usize, pairs: &[ScoredPair], options: DedupOptions) -> Solution {
    let mut sets = Records::new(&[records]);
    let linked: HashSet<(u32, u32)> = pairs
        .iter()
        .map(|p| {
            assert!(
                p.a.site == 0 && p.b.site == 0,
                "deduplication of one site only"
            );
            (p.a.record.min(p.b.record), p.a.record.max(p.b.record))
        })
        .collect();
    let mut members: Vec<Vec<u32>> = (0..records as u32).map(|r| vec![r]).collect();
    let limit = options.max_cluster_size.unwrap_or(usize::MAX);
    for i in greedy_order(pairs) {
        let p = &pairs[i];
        let (rx, ry) = (sets.find(sets.index(p.a)), sets.find(sets.index(p.b)));
        if rx == ry || members[rx].len() + members[ry].len() > limit {
            continue;
        }
        let complete = members[rx].iter().all(|&u| {
            members[ry]
                .iter()
                .all(|&v| linked.contains(&(u.min(v), u.max(v))))
        });
        if !complete {
            continue;
        }
        sets.union(rx, ry, &mut members);
    }
    sets.solution(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair(sa: u32, ra: u32, sb: u32, rb: u32, score: f64) -> ScoredPair {
        ScoredPair {
            a: RecordRef::new(sa, ra),
            b: RecordRef::new(sb, rb),
            score,
        }
    }

    #[test]
    fn one_to_one_takes_the_best_pair_first() {
        // a0-b0 0.9 wins; a1 then takes b1 although a1-b0 scored higher than a1-b1.
        let pairs = [
            pair(0, 0, 1, 0, 0.9),
            pair(0, 1, 1, 0, 0.85),
            pair(0, 1, 1, 1, 0.81),
            pair(0, 0, 1, 1, 0.80),
        ];
        let s = greedy_one_to_one([3, 2], &pairs);
        assert_eq!(s.links, vec![0, 2]);
        assert_eq!(s.entity, vec![vec![0, 1, 2], vec![0, 1]]);
        assert_eq!(s.entity_count(), 3);
    }

    #[test]
    fn ties_are_broken_by_record_order() {
        let pairs = [pair(0, 1, 1, 0, 0.9), pair(0, 0, 1, 0, 0.9)];
        let s = greedy_one_to_one([2, 1], &pairs);
        assert_eq!(s.links, vec![1], "a0 comes before a1");
        let reversed = [pairs[1], pairs[0]];
        assert_eq!(greedy_one_to_one([2, 1], &reversed).links, vec![0]);
    }

    #[test]
    fn clusters_hold_one_record_per_site() {
        // 0.95 joins a0-b0 and 0.92 a1-c0; 0.9 b0-c0 would put a0 and a1 together: refused;
        // 0.85 a0-c1 joins c1 to {a0, b0}; 0.7 a0-c0 would put c0 and c1 together: refused.
        let pairs = [
            pair(0, 0, 1, 0, 0.95),
            pair(1, 0, 2, 0, 0.9),
            pair(0, 1, 2, 0, 0.92),
            pair(0, 0, 2, 1, 0.85),
            pair(0, 0, 2, 0, 0.7),
        ];
        let s = greedy_clusters(&[2, 1, 2], &pairs);
        assert_eq!(s.entity, vec![vec![0, 1], vec![0], vec![1, 0]]);
        assert_eq!(s.links, vec![0, 2, 3]);
    }

    #[test]
    fn clusters_merge_transitively_and_list_every_pair_inside() {
        let pairs = [
            pair(0, 0, 1, 0, 0.9),
            pair(1, 0, 2, 0, 0.85),
            pair(0, 0, 2, 0, 0.6),
        ];
        let s = greedy_clusters(&[1, 1, 1], &pairs);
        assert_eq!(s.entity, vec![vec![0], vec![0], vec![0]]);
        assert_eq!(s.links, vec![0, 1, 2]);
    }

    #[test]
    fn dedup_needs_complete_linkage() {
        // 0-1 and 1-2 linked, 0-2 not: a chain, so 2 stays apart.
        let pairs = [pair(0, 0, 0, 1, 0.95), pair(0, 1, 0, 2, 0.9)];
        let s = deduplicate(3, &pairs, DedupOptions::default());
        assert_eq!(s.entity, vec![vec![0, 0, 1]]);
        assert_eq!(s.links, vec![0]);
        // With 0-2 linked too, all three form one entity.
        let pairs = [pairs[0], pairs[1], pair(0, 0, 0, 2, 0.85)];
        let s = deduplicate(3, &pairs, DedupOptions::default());
        assert_eq!(s.entity, vec![vec![0, 0, 0]]);
        assert_eq!(s.links, vec![0, 1, 2]);
        // A maximum size of 2 keeps the best pair only.
        let s = deduplicate(
            3,
            &pairs,
            DedupOptions {
                max_cluster_size: Some(2),
            },
        );
        assert_eq!(s.entity, vec![vec![0, 0, 1]]);
    }

    #[test]
    fn empty_inputs_give_singletons() {
        let s = greedy_clusters(&[2, 0, 1], &[]);
        assert_eq!(s.entity, vec![vec![0, 1], vec![], vec![2]]);
        assert!(s.links.is_empty());
        assert_eq!(
            deduplicate(0, &[], DedupOptions::default()).entity_count(),
            0
        );
    }

    fn two_site_pairs() -> impl Strategy<Value = (usize, usize, Vec<ScoredPair>)> {
        (1usize..12, 1usize..12).prop_flat_map(|(na, nb)| {
            let p = (0..na as u32, 0..nb as u32, 0u32..6)
                .prop_map(|(a, b, s)| pair(0, a, 1, b, 0.5 + f64::from(s) / 10.0));
            (Just(na), Just(nb), proptest::collection::vec(p, 0..30)).prop_map(
                |(na, nb, mut ps)| {
                    ps.sort_by_key(|p| (p.a, p.b));
                    ps.dedup_by_key(|p| (p.a, p.b));
                    (na, nb, ps)
                },
            )
        })
    }

    proptest! {
        #[test]
        fn clustering_two_sites_is_one_to_one((na, nb, pairs) in two_site_pairs()) {
            let one = greedy_one_to_one([na, nb], &pairs);
            prop_assert_eq!(&one, &greedy_clusters(&[na, nb], &pairs));
            // Each record is in at most one link.
            let mut seen = HashSet::new();
            for &l in &one.links {
                prop_assert!(seen.insert(pairs[l].a) && seen.insert(pairs[l].b));
            }
        }

        #[test]
        fn multi_party_entities_hold_one_record_per_site(
            sizes in proptest::collection::vec(1usize..6, 3..5),
            raw in proptest::collection::vec((0u32..5, 0u32..6, 0u32..5, 0u32..6, 0u32..5), 0..40),
        ) {
            let k = sizes.len() as u32;
            let mut pairs: Vec<ScoredPair> = raw
                .into_iter()
                .filter_map(|(sa, ra, sb, rb, s)| {
                    let (sa, sb) = (sa % k, sb % k);
                    let a = RecordRef::new(sa, ra % sizes[sa as usize] as u32);
                    let b = RecordRef::new(sb, rb % sizes[sb as usize] as u32);
                    (sa != sb).then(|| ScoredPair { a: a.min(b), b: a.max(b), score: 0.8 + f64::from(s) / 50.0 })
                })
                .collect();
            pairs.sort_by_key(|p| (p.a, p.b));
            pairs.dedup_by_key(|p| (p.a, p.b));
            let s = greedy_clusters(&sizes, &pairs);
            let mut site_of_entity = HashSet::new();
            for (site, es) in s.entity.iter().enumerate() {
                prop_assert_eq!(es.len(), sizes[site]);
                for &e in es {
                    prop_assert!(site_of_entity.insert((e, site)), "entity {} holds two records of site {}", e, site);
                }
            }
            // Numbering follows the first record of each entity.
            let flat: Vec<u32> = s.entity.concat();
            let mut next = 0;
            for &e in &flat {
                prop_assert!(e <= next);
                if e == next { next += 1; }
            }
        }

        #[test]
        fn dedup_entities_are_cliques(
            n in 1usize..15,
            raw in proptest::collection::vec((0u32..15, 0u32..15, 0u32..5), 0..40),
            max in proptest::option::of(2usize..5),
        ) {
            let mut pairs: Vec<ScoredPair> = raw
                .into_iter()
                .filter_map(|(x, y, s)| {
                    let (x, y) = (x % n as u32, y % n as u32);
                    (x != y).then(|| pair(0, x.min(y), 0, x.max(y), 0.8 + f64::from(s) / 50.0))
                })
                .collect();
            pairs.sort_by_key(|p| (p.a, p.b));
            pairs.dedup_by_key(|p| (p.a, p.b));
            let linked: HashSet<(u32, u32)> = pairs.iter().map(|p| (p.a.record, p.b.record)).collect();
            let s = deduplicate(n, &pairs, DedupOptions { max_cluster_size: max });
            let e = &s.entity[0];
            for x in 0..n as u32 {
                for y in x + 1..n as u32 {
                    if e[x as usize] == e[y as usize] {
                        prop_assert!(linked.contains(&(x, y)));
                    }
                }
            }
            if let Some(m) = max {
                for id in 0..s.entity_count() as u32 {
                    prop_assert!(e.iter().filter(|&&x| x == id).count() <= m);
                }
            }
        }
    }
}
