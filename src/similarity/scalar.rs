//! The scalar reference: Dice similarity one pair at a time and the naive
//! all-pairs candidate search, written for obviousness, not speed. Every fast
//! path in [`super`] is tested against these functions and must return exactly
//! the same counts, pairs and scores.

use super::{Candidate, PackedClks, dice_score};

/// `|A ∧ B|`: the number of bits set in both clks.
///
/// # Panics
/// When the two clks have different lengths.
pub fn and_popcount(a: &[u64], b: &[u64]) -> u32 {
    assert_eq!(a.len(), b.len(), "clks of different lengths");
    let mut count = 0;
    for (x, y) in a.iter().zip(b) {
        count += (x & y).count_ones();
    }
    count
}

/// The number of bits set in one clk.
pub fn popcount(a: &[u64]) -> u32 {
    a.iter().map(|w| w.count_ones()).sum()
}

/// The number of bits set in a clk stored as bytes.
pub fn popcount_bytes(clk: &[u8]) -> u32 {
    clk.iter().map(|b| b.count_ones()).sum()
}

/// Dice similarity `2|A ∧ B| / (|A| + |B|)` of two clks; 0 when both are empty.
pub fn dice(a: &[u64], b: &[u64]) -> f64 {
    dice_score(and_popcount(a, b), popcount(a), popcount(b))
}

/// Every pair `(i, j)` of `a` × `b` with Dice score `>= threshold`, sorted by `(i, j)`.
pub fn all_pairs(a: &PackedClks, b: &PackedClks, threshold: f64) -> Vec<Candidate> {
    let mut out = Vec::new();
    for i in 0..a.len() {
        for j in 0..b.len() {
            let score = dice(a.clk(i), b.clk(j));
            if score >= threshold {
                out.push(Candidate {
                    a: i as u32,
                    b: j as u32,
                    score,
                });
            }
        }
    }
    out
}

/// Every pair `(i, j)`, `i < j`, of one site with Dice score `>= threshold`, sorted by `(i, j)`.
pub fn all_pairs_self(a: &PackedClks, threshold: f64) -> Vec<Candidate> {
    let mut out = Vec::new();
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            let score = dice(a.clk(i), a.clk(j));
            if score >= threshold {
                out.push(Candidate {
                    a: i as u32,
                    b: j as u32,
                    score,
                });
            }
        }
    }
    out
}

/// The `k` best candidates of each record of `a` (score descending, then `j`
/// ascending) among those `>= threshold`, sorted by `(i, j)`.
pub fn top_k_pairs(a: &PackedClks, b: &PackedClks, threshold: f64, k: usize) -> Vec<Candidate> {
    let mut out = Vec::new();
    for i in 0..a.len() {
        let mut row: Vec<Candidate> = all_pairs(&a.slice(i..i + 1), b, threshold)
            .into_iter()
            .map(|c| Candidate { a: i as u32, ..c })
            .collect();
        row.sort_by(|x, y| y.score.total_cmp(&x.score).then(x.b.cmp(&y.b)));
        row.truncate(k);
        row.sort_by_key(|c| c.b);
        out.extend(row);
    }
    out
}

/// Deduplication with top-k: each record keeps its `k` best candidates among
/// all other records; a pair is kept when either of its records keeps it.
/// Sorted by `(i, j)` with `i < j`.
pub fn top_k_pairs_self(a: &PackedClks, threshold: f64, k: usize) -> Vec<Candidate> {
    let mut out = Vec::new();
    for i in 0..a.len() {
        let mut row = Vec::new();
        for j in 0..a.len() {
            let score = dice(a.clk(i), a.clk(j));
            if j != i && score >= threshold {
                row.push(Candidate {
                    a: i as u32,
                    b: j as u32,
                    score,
                });
            }
        }
        row.sort_by(|x, y| y.score.total_cmp(&x.score).then(x.b.cmp(&y.b)));
        row.truncate(k);
        out.extend(row.into_iter().map(|c| Candidate {
            a: c.a.min(c.b),
            b: c.a.max(c.b),
            score: c.score,
        }));
    }
    out.sort_by_key(|c| (c.a, c.b));
    out.dedup_by_key(|c| (c.a, c.b));
    out
}
