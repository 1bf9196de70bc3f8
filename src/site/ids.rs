//! Record keys: every row's id is present, and no id occurs twice in the input.
//!
//! Workers hash the ids of their chunk and group the hashes by their top bits
//! ([`ChunkIds`]); the writing thread keeps each chunk's group as it is.
//! After the last chunk, [`IdSet::finish`] looks for a hash seen twice one
//! bucket at a time, each bucket on its own thread: no step is serial and no
//! buffer of all the hashes is made at the end. A hash seen twice is
//! confirmed by reading the input again, so a hash collision never reports a
//! false duplicate.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use rayon::prelude::*;

use super::{EncodeOptions, SiteError};
use crate::io::records::{Batch, RecordReader};

/// Top bits of a hash that pick its bucket. 256 buckets of 10 million ids
/// hold 39,000 hashes each (300 KiB, in a core's cache while it is sorted),
/// and a chunk of 4096 rows has 16 per bucket to hand over.
const BUCKET_BITS: u32 = 8;
const BUCKETS: usize = 1 << BUCKET_BITS;

fn bucket(hash: u64) -> usize {
    (hash >> (64 - BUCKET_BITS)) as usize
}

/// The id hashes of one chunk, grouped by bucket (in reading order within
/// each bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChunkIds {
    hashes: Vec<u64>,
    /// Where each bucket's hashes end in `hashes`.
    ends: Box<[u32; BUCKETS]>,
}

impl ChunkIds {
    /// Groups a chunk's hashes by bucket: one pass to count, one to move.
    pub(super) fn group(hashes: &[u64]) -> ChunkIds {
        let mut ends = Box::new([0u32; BUCKETS]);
        for &h in hashes {
            ends[bucket(h)] += 1;
        }
        let mut total = 0;
        for end in ends.iter_mut() {
            total += *end;
            *end = total;
        }
        let mut grouped = vec![0; hashes.len()];
        let mut starts = ends.clone();
        // From the back: each bucket's end moves down to its start, and the
        // hashes keep their order.
        for &h in hashes.iter().rev() {
            let at = &mut starts[bucket(h)];
            *at -= 1;
            grouped[*at as usize] = h;
        }
        ChunkIds {
            hashes: grouped,
            ends,
        }
    }

    fn bucket(&self, bucket: usize) -> &[u64] {
        let start = bucket.checked_sub(1).map_or(0, |b| self.ends[b]) as usize;
        &self.hashes[start..self.ends[bucket] as usize]
    }
}

/// The ids seen so far, as 64-bit hashes: 10 million ids take 80 MiB.
/// Sorting them once at the end costs a third of what inserting into a hash
/// set did, whose random probes missed the cache on every row.
#[derive(Debug)]
pub(super) struct IdSet {
    chunks: Vec<ChunkIds>,
    hash: fn(&str) -> u64,
}

impl Default for IdSet {
    fn default() -> IdSet {
        IdSet::with_hash(id_hash)
    }
}

impl IdSet {
    /// An empty set that hashes ids with `hash`.
    pub(super) fn with_hash(hash: fn(&str) -> u64) -> IdSet {
        IdSet {
            chunks: Vec::new(),
            hash,
        }
    }

    /// Adds the next chunk's ids.
    pub(super) fn push(&mut self, chunk: ChunkIds) {
        self.chunks.push(chunk);
    }

    /// After the last row: the duplicate id whose second row comes first, with
    /// every row that has it. Searches on `threads` threads.
    pub(super) fn finish(
        &mut self,
        options: &EncodeOptions<'_>,
        id_column: usize,
        threads: usize,
    ) -> Result<(), SiteError> {
        let chunks = std::mem::take(&mut self.chunks);
        let suspects = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(|| repeated_values(&chunks)),
            Err(_) => repeated_values(&chunks),
        };
        drop(chunks);
        if suspects.is_empty() {
            return Ok(());
        }
        let mut rows_of: HashMap<String, Vec<u64>> = HashMap::new();
        let mut reader = RecordReader::open(&options.input, &options.read)?;
        reader.select(&[id_column])?;
        while let Some(batch) = reader.next_batch()? {
            for row in 0..batch.len() {
                let id = batch.get(row, 0).unwrap_or_default();
                if suspects.contains(&(self.hash)(id)) {
                    rows_of
                        .entry(id.to_owned())
                        .or_default()
                        .push(batch.row_number(row));
                }
            }
        }
        match rows_of
            .into_iter()
            .filter(|(_, rows)| rows.len() > 1)
            .min_by_key(|(_, rows)| rows[1])
        {
            None => Ok(()),
            Some((id, rows)) => Err(SiteError::DuplicateId {
                path: options.input.clone(),
                column: options.id_column.clone(),
                id,
                rows,
            }),
        }
    }
}

/// The hashes that occur more than once in all `chunks`, found bucket by
/// bucket in parallel on the current rayon pool: a bucket's hashes from every
/// chunk are gathered into a buffer that each thread reuses, and sorted.
fn repeated_values(chunks: &[ChunkIds]) -> HashSet<u64> {
    (0..BUCKETS)
        .into_par_iter()
        .map_init(Vec::new, |all: &mut Vec<u64>, bucket| {
            all.clear();
            for chunk in chunks {
                all.extend_from_slice(chunk.bucket(bucket));
            }
            all.sort_unstable();
            let mut repeated = Vec::new();
            for pair in all.windows(2) {
                if pair[0] == pair[1] && repeated.last() != Some(&pair[0]) {
                    repeated.push(pair[0]);
                }
            }
            repeated
        })
        .flatten_iter()
        .collect()
}

/// A fast 64-bit hash of an id (8 bytes at a time, then a full avalanche).
/// Not keyed: ids are the site's own, and a collision only costs a second
/// look at the input (see [`IdSet`]); SipHash took 3% of an encode run.
pub(super) fn id_hash(id: &str) -> u64 {
    let bytes = id.as_bytes();
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        h = (h.rotate_left(23) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(23) ^ u64::from_le_bytes(tail)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // SplitMix64's finaliser: every input bit reaches every output bit.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Appends the `hash` of the id of every row in `rows` of `batch` to `hashes`; an empty id is an error.
pub(super) fn check_ids(
    options: &EncodeOptions<'_>,
    batch: &Batch,
    rows: Range<usize>,
    hash: fn(&str) -> u64,
    hashes: &mut Vec<u64>,
) -> Result<(), SiteError> {
    for row in rows {
        let id = batch.get(row, 0).unwrap_or_default();
        if id.is_empty() {
            return Err(SiteError::EmptyId {
                path: options.input.clone(),
                row: batch.row_number(row),
                column: options.id_column.clone(),
            });
        }
        hashes.push(hash(id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hashes` cut into chunks at `cuts` (taken modulo one more than the length).
    fn grouped(hashes: &[u64], cuts: &[usize]) -> Vec<ChunkIds> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (hashes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(hashes.len());
        cuts.sort_unstable();
        cuts.windows(2)
            .map(|w| ChunkIds::group(&hashes[w[0]..w[1]]))
            .collect()
    }

    #[test]
    fn a_chunk_is_grouped_by_bucket_in_reading_order() {
        let top = |b: u64, low: u64| b << (64 - BUCKET_BITS) | low;
        let hashes = [top(3, 1), top(0, 9), top(3, 0), top(255, 5), top(0, 2)];
        let chunk = ChunkIds::group(&hashes);
        assert_eq!(chunk.bucket(0), &[top(0, 9), top(0, 2)]);
        assert_eq!(chunk.bucket(1), &[] as &[u64]);
        assert_eq!(chunk.bucket(3), &[top(3, 1), top(3, 0)]);
        assert_eq!(chunk.bucket(255), &[top(255, 5)]);
        let total: usize = (0..BUCKETS).map(|b| chunk.bucket(b).len()).sum();
        assert_eq!(total, hashes.len());
    }

    #[test]
    fn repeats_across_chunks_and_within_one_are_found() {
        let hashes = [7, u64::MAX, 7, 1 << 63, 5, u64::MAX, 1 << 63, 1 << 63];
        for cuts in [vec![], vec![1], vec![2, 5], vec![1, 2, 3, 4, 5, 6, 7]] {
            let found = repeated_values(&grouped(&hashes, &cuts));
            assert_eq!(
                found,
                HashSet::from([7, u64::MAX, 1 << 63]),
                "cuts {cuts:?}"
            );
        }
        assert!(repeated_values(&grouped(&[1, 2, 3], &[1])).is_empty());
        assert!(repeated_values(&[]).is_empty());
    }

    proptest::proptest! {
        /// The bucketed search against a plain sort, on hashes with many
        /// repeats, in one bucket or spread over several, cut into chunks
        /// anywhere.
        #[test]
        fn repeated_values_are_those_a_sort_finds(
            hashes in proptest::collection::vec(
                proptest::prop_oneof![
                    0u64..8,
                    proptest::num::u64::ANY,
                    proptest::strategy::Strategy::prop_map(0u64..4, |h| h << 61),
                ],
                0..300,
            ),
            cuts in proptest::collection::vec(0usize..301, 0..6),
        ) {
            let mut sorted = hashes.clone();
            sorted.sort_unstable();
            let expected: HashSet<u64> =
                sorted.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
            proptest::prop_assert_eq!(repeated_values(&grouped(&hashes, &cuts)), expected);
        }
    }

    #[test]
    fn id_hash_is_stable() {
        assert_eq!(id_hash("rec-1-org"), id_hash("rec-1-org"));
        assert_ne!(id_hash("rec-1-org"), id_hash("rec-2-org"));
        // Lengths and trailing zero bytes are told apart.
        assert_ne!(id_hash("a"), id_hash("a\0"));
        assert_ne!(id_hash(""), id_hash("\0"));
        // No collision among 200,000 ids that differ in one position.
        let hashes: HashSet<u64> = (0..200_000)
            .map(|i| id_hash(&format!("rec-{i}-dup-0")))
            .collect();
        assert_eq!(hashes.len(), 200_000);
    }
}
