//! Pair completeness: how many true pairs the match run's blocking left to be
//! scored. The run records its blocking in the links file's metadata
//! ([`crate::matching::blocking_from_metadata`]); given the same clk files,
//! [`crate::block::lsh_pairs_met`] and [`crate::block::key_pairs_met`] tell,
//! pair by pair, whether blocking met it, without listing the candidates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{EvaluateError, FxHashSet, Records};
use crate::block;
use crate::io::clk_file::{self, ClkFile};
use crate::io::table;
use crate::matching::{BlockingUsed, blocking_from_metadata};
use crate::similarity::{Kernel, PackedClks, pair_score};

/// True pairs that survived blocking.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockingReport {
    /// The run's blocking: `none`, `lsh` or `keys`.
    pub method: &'static str,
    /// True pairs in the truth.
    pub true_pairs: u64,
    /// True pairs that blocking left to be scored.
    pub kept: u64,
    /// True pairs whose clks score at least the run's threshold: the ones
    /// comparing all pairs would make candidates (`None` without blocking,
    /// when the clks are not read).
    pub above_threshold: Option<u64>,
    /// Of those, the ones blocking left to be scored.
    pub kept_above_threshold: Option<u64>,
}

impl BlockingReport {
    /// `kept / true_pairs` (1 when there are no true pairs).
    pub fn pair_completeness(&self) -> f64 {
        ratio(self.kept, self.true_pairs)
    }

    /// `kept_above_threshold / above_threshold`: the pair completeness of
    /// blocking against comparing all pairs at the same threshold, on the
    /// true pairs.
    pub fn pair_completeness_at_threshold(&self) -> Option<f64> {
        Some(ratio(self.kept_above_threshold?, self.above_threshold?))
    }
}

/// The blocking report of the run behind `links`, for the true pairs `truth`
/// (pair keys of `records`), reading the sites' clk files `clks`.
pub(super) fn report(
    links: &Path,
    clks: &[PathBuf],
    truth: &FxHashSet<u64>,
    records: &Records,
) -> Result<BlockingReport, EvaluateError> {
    let metadata = table::read_metadata(links)?;
    let threshold = metadata
        .get("pprl.threshold")
        .and_then(|t| t.parse::<f64>().ok())
        .ok_or_else(|| EvaluateError::BlockingMetadata {
            path: links.to_path_buf(),
        })?;
    let blocking =
        blocking_from_metadata(&metadata).ok_or_else(|| EvaluateError::BlockingMetadata {
            path: links.to_path_buf(),
        })?;
    // Within one site, pairs are compared only when the run deduplicated it.
    let run_sites = metadata
        .get("pprl.sites")
        .map_or(0, |sites| sites.split(',').count());
    let true_pairs = truth.len() as u64;
    if blocking == BlockingUsed::AllPairs {
        return Ok(BlockingReport {
            method: blocking.name(),
            true_pairs,
            kept: true_pairs,
            above_threshold: None,
            kept_above_threshold: None,
        });
    }
    let files = clks
        .iter()
        .map(|path| Ok((path.clone(), clk_file::read(path, None)?)))
        .collect::<Result<Vec<(PathBuf, ClkFile)>, EvaluateError>>()?;
    let file_of = |site: &str| {
        files
            .iter()
            .position(|(_, f)| f.meta.site == site)
            .ok_or_else(|| EvaluateError::ClksMissingSite {
                site: site.to_owned(),
                given: files.iter().map(|(_, f)| f.meta.site.clone()).collect(),
            })
    };
    // True pairs as rows of the clk files, grouped by pair of files.
    let mut rows: Vec<HashMap<&str, u32>> = files
        .iter()
        .map(|(_, f)| {
            f.ids
                .iter()
                .enumerate()
                .map(|(r, id)| (id.as_str(), r as u32))
                .collect()
        })
        .collect();
    let mut by_files: HashMap<(usize, usize), Vec<(u32, u32)>> = HashMap::new();
    let mut sorted: Vec<u64> = truth.iter().copied().collect();
    sorted.sort_unstable();
    for key in sorted {
        let ends = [(key >> 32) as u32, key as u32].map(|r| {
            let site = &records.sites[records.site_of[r as usize] as usize];
            (site.as_str(), &*records.ids[r as usize])
        });
        let mut located = [(0usize, 0u32); 2];
        for (slot, (site, id)) in located.iter_mut().zip(ends) {
            let f = file_of(site)?;
            let row = rows[f]
                .get(id)
                .ok_or_else(|| EvaluateError::ClksMissingRecord {
                    path: files[f].0.clone(),
                    id: id.to_owned(),
                })?;
            *slot = (f, *row);
        }
        located.sort_unstable();
        let [(fx, rx), (fy, ry)] = located;
        by_files.entry((fx, fy)).or_default().push((rx, ry));
    }
    rows.clear();

    let (mut kept, mut above, mut kept_above) = (0u64, 0u64, 0u64);
    for ((fx, fy), pairs) in by_files {
        let other = (fx != fy).then_some(fy);
        let bytes = files[fx].1.filter_bytes();
        let pack = |f: usize| PackedClks::from_bytes(&files[f].1.clks, bytes);
        let (a, b) = (pack(fx), other.map(pack));
        let kernel = Kernel::best();
        let reaches: Vec<bool> = pairs
            .iter()
            .map(|&(i, j)| {
                let y = b.as_ref().unwrap_or(&a);
                pair_score(kernel, &a, i as usize, y, j as usize, threshold).is_some()
            })
            .collect();
        let met = match &blocking {
            _ if other.is_none() && run_sites > 1 => vec![false; pairs.len()],
            BlockingUsed::AllPairs => unreachable!("returned above"),
            BlockingUsed::Lsh { params, .. } => block::lsh_pairs_met(
                a.words(),
                b.as_ref().map(PackedClks::words),
                a.words_per_clk(),
                params,
                &pairs,
            )?,
            BlockingUsed::Keys { max_bucket_pairs } => {
                let keys = |f: usize| {
                    files[f].1.blocking_keys.as_deref().ok_or_else(|| {
                        EvaluateError::ClksWithoutKeys {
                            path: files[f].0.clone(),
                        }
                    })
                };
                block::key_pairs_met(
                    keys(fx)?,
                    other.map(keys).transpose()?,
                    *max_bucket_pairs,
                    &pairs,
                )?
            }
        };
        kept += met.iter().filter(|&&m| m).count() as u64;
        above += reaches.iter().filter(|&&r| r).count() as u64;
        kept_above += met.iter().zip(&reaches).filter(|(m, r)| **m && **r).count() as u64;
    }
    Ok(BlockingReport {
        method: blocking.name(),
        true_pairs,
        kept,
        above_threshold: Some(above),
        kept_above_threshold: Some(kept_above),
    })
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}
