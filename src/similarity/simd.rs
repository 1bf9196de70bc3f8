//! The hot kernel: `|A ∧ B|` of one clk against a run of clks, in several
//! implementations chosen at run time by CPU detection. It hands counts (or
//! only the counts that reach a minimum) to the candidate search, which turns
//! them into scores.
//!
//! - `portable`: a `u64` word loop with `count_ones`, which the compiler
//!   vectorises as well as the build target allows (SWAR on baseline x86-64).
//! - `popcnt`: the same loop compiled with the `popcnt` instruction.
//! - `avx2`: nibble lookup with `pshufb` (Muła's method), bytes summed with
//!   `psadbw`, four clks at a time so that one horizontal reduction serves
//!   four pairs. (Harley–Seal only pays off on streams much longer than a
//!   1024-bit clk.)
//! - `avx512`: `vpopcntq` (AVX-512 VPOPCNTDQ) on 512-bit lanes, eight clks at
//!   a time with one transposing reduction, masked loads for a tail that is
//!   not a multiple of 8 words, and the comparison with the minimum count
//!   done in the vector registers.
//!
//! The popcount of one stored clk (for the `popcount` column of an encode
//! run) is here too: `popcnt` where the CPU has it, else the portable loop.
//!
//! This is the only module that may use `unsafe`: every implementation that
//! needs a CPU feature is reachable only through [`resolve`] or
//! [`popcount_bytes`], which use it after the feature has been detected.
#![allow(unsafe_code)]

use super::Kernel;

/// The two entry points of one kernel. For both, `b` holds clks of
/// `a.len()` words one after the other, and `a` is not empty.
#[derive(Debug, Clone, Copy)]
pub(super) struct KernelFns {
    /// `out[j] = |a ∧ b_j|`; `b.len() == out.len() * a.len()`.
    pub counts: CountsFn,
    /// Appends `(j, |a ∧ b_j|)` for every `j` whose count is at least
    /// `mins.at(j)`, in ascending `j`; `b` holds `mins.len()` clks.
    pub hits: HitsFn,
}

pub(super) type CountsFn = fn(a: &[u64], b: &[u64], out: &mut [u32]);
pub(super) type HitsFn = fn(a: &[u64], b: &[u64], mins: Minimums<'_>, hits: &mut Vec<(u32, u32)>);

/// The minimum count of each clk of a run: `min[pbs[j] - base]`, where `pbs`
/// are the clks' popcounts, ascending. `floor[p - base]` is the smallest
/// `min` of any popcount from `p` up, so the first clk's floor bounds the
/// minimum of a whole block of clks: the vector kernels test a block against
/// it and only the clks that pass against their own minimum.
#[derive(Debug, Clone, Copy)]
pub(super) struct Minimums<'a> {
    pub pbs: &'a [u32],
    pub base: u32,
    pub min: &'a [u32],
    pub floor: &'a [u32],
}

impl Minimums<'_> {
    pub fn len(&self) -> usize {
        self.pbs.len()
    }

    #[inline(always)]
    pub fn at(&self, j: usize) -> u32 {
        self.min[(self.pbs[j] - self.base) as usize]
    }

    /// A lower bound of `at(k)` for every `k >= j`.
    #[inline(always)]
    pub fn floor_at(&self, j: usize) -> u32 {
        self.floor[(self.pbs[j] - self.base) as usize]
    }

    fn from(&self, j: usize) -> Self {
        Self {
            pbs: &self.pbs[j..],
            ..*self
        }
    }
}

/// The functions of `kernel`, or `None` when this CPU lacks what it needs.
pub(super) fn resolve(kernel: Kernel) -> Option<KernelFns> {
    match kernel {
        Kernel::Portable => Some(KernelFns {
            counts: portable_counts,
            hits: portable_hits,
        }),
        #[cfg(target_arch = "x86_64")]
        Kernel::Popcnt if std::arch::is_x86_feature_detected!("popcnt") => Some(KernelFns {
            counts: x86::popcnt_counts,
            hits: x86::popcnt_hits,
        }),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt") =>
        {
            Some(KernelFns {
                counts: x86::avx2_counts,
                hits: x86::avx2_hits,
            })
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
                && std::arch::is_x86_feature_detected!("popcnt") =>
        {
            Some(KernelFns {
                counts: x86::avx512_counts,
                hits: x86::avx512_hits,
            })
        }
        _ => None,
    }
}

/// The number of bits set in `bytes` (a clk as stored), with the `popcnt`
/// instruction where the CPU has it: a build for baseline x86-64 counts
/// bits with shifts and masks, which took a third of the time an encode
/// run spends on a chunk's output besides the Parquet writer.
pub(super) fn popcount_bytes(bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        return x86::popcnt_bytes(bytes);
    }
    count_bytes(bytes)
}

/// Eight bytes at a time, then the rest one by one.
#[inline(always)]
pub(super) fn count_bytes(bytes: &[u8]) -> u32 {
    let mut words = bytes.chunks_exact(8);
    let mut count = 0;
    for word in &mut words {
        count += u64::from_le_bytes(word.try_into().expect("8 bytes")).count_ones();
    }
    count
        + words
            .remainder()
            .iter()
            .map(|b| b.count_ones())
            .sum::<u32>()
}

#[inline(always)]
fn and_count(a: &[u64], b: &[u64]) -> u32 {
    let mut count = 0;
    for (x, y) in a.iter().zip(b) {
        count += (x & y).count_ones();
    }
    count
}

/// `and_count` with the word count known at compile time for the common
/// filter lengths, so the loop unrolls completely.
#[inline(always)]
fn each_count(a: &[u64], b: &[u64], mut f: impl FnMut(usize, u32)) {
    #[inline(always)]
    fn fixed<const W: usize>(a: &[u64], b: &[u64], f: &mut impl FnMut(usize, u32)) {
        let a: &[u64; W] = a.try_into().expect("clk length");
        for (j, bc) in b.chunks_exact(W).enumerate() {
            let bc: &[u64; W] = bc.try_into().expect("clk length");
            let mut count = 0;
            for i in 0..W {
                count += (a[i] & bc[i]).count_ones();
            }
            f(j, count);
        }
    }
    match a.len() {
        8 => fixed::<8>(a, b, &mut f),
        16 => fixed::<16>(a, b, &mut f),
        32 => fixed::<32>(a, b, &mut f),
        words => {
            for (j, bc) in b.chunks_exact(words).enumerate() {
                f(j, and_count(a, bc));
            }
        }
    }
}

#[inline(always)]
fn loop_counts(a: &[u64], b: &[u64], out: &mut [u32]) {
    assert_eq!(b.len(), out.len() * a.len());
    each_count(a, b, |j, c| out[j] = c);
}

#[inline(always)]
fn loop_hits(a: &[u64], b: &[u64], mins: Minimums<'_>, hits: &mut Vec<(u32, u32)>) {
    assert_eq!(b.len(), mins.len() * a.len());
    each_count(a, b, |j, c| {
        if c >= mins.at(j) {
            hits.push((j as u32, c));
        }
    });
}

fn portable_counts(a: &[u64], b: &[u64], out: &mut [u32]) {
    loop_counts(a, b, out);
}

fn portable_hits(a: &[u64], b: &[u64], mins: Minimums<'_>, hits: &mut Vec<(u32, u32)>) {
    loop_hits(a, b, mins, hits);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Minimums;

    pub(super) fn popcnt_bytes(bytes: &[u8]) -> u32 {
        // SAFETY: `popcount_bytes` calls this only after detecting `popcnt`.
        unsafe { popcnt_bytes_impl(bytes) }
    }

    #[target_feature(enable = "popcnt")]
    fn popcnt_bytes_impl(bytes: &[u8]) -> u32 {
        super::count_bytes(bytes)
    }

    pub(super) fn popcnt_counts(a: &[u64], b: &[u64], out: &mut [u32]) {
        // SAFETY: `resolve` hands this function out only after detecting `popcnt`.
        unsafe { popcnt_counts_impl(a, b, out) }
    }

    #[target_feature(enable = "popcnt")]
    fn popcnt_counts_impl(a: &[u64], b: &[u64], out: &mut [u32]) {
        super::loop_counts(a, b, out);
    }

    pub(super) fn popcnt_hits(
        a: &[u64],
        b: &[u64],
        mins: Minimums<'_>,
        hits: &mut Vec<(u32, u32)>,
    ) {
        // SAFETY: `resolve` hands this function out only after detecting `popcnt`.
        unsafe { popcnt_hits_impl(a, b, mins, hits) }
    }

    #[target_feature(enable = "popcnt")]
    fn popcnt_hits_impl(a: &[u64], b: &[u64], mins: Minimums<'_>, hits: &mut Vec<(u32, u32)>) {
        super::loop_hits(a, b, mins, hits);
    }

    // ---- AVX2 -------------------------------------------------------------

    /// `|a ∧ b_k|` for the four clks `b_k` at `b[k * words..]`, as four u64 lanes.
    ///
    /// # Safety
    /// AVX2 and popcnt available; `a.len() == words > 0`, `b.len() >= 4 * words`.
    #[inline]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn avx2_sums4(a: &[u64], b: &[u64]) -> __m256i {
        let words = a.len();
        debug_assert!(b.len() >= 4 * words);
        let vectors = words / 4;
        let lut = _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, //
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
        );
        let low = _mm256_set1_epi8(0x0f);
        let zero = _mm256_setzero_si256();
        let mut totals = [zero; 4];
        // A byte of an accumulator gains at most 8 per vector: flush every 31.
        let mut start = 0;
        while start < vectors {
            let end = vectors.min(start + 31);
            let mut bytes = [zero; 4];
            for v in start..end {
                // SAFETY: `v * 4 + 4 <= words == a.len()`; unaligned load.
                let x = unsafe { _mm256_loadu_si256(a.as_ptr().add(v * 4).cast()) };
                for (k, acc) in bytes.iter_mut().enumerate() {
                    // SAFETY: `k * words + v * 4 + 4 <= 4 * words <= b.len()`.
                    let y = unsafe { _mm256_loadu_si256(b.as_ptr().add(k * words + v * 4).cast()) };
                    let w = _mm256_and_si256(x, y);
                    let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(w, low));
                    let hi =
                        _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(w, 4), low));
                    *acc = _mm256_add_epi8(*acc, _mm256_add_epi8(lo, hi));
                }
            }
            for (total, acc) in totals.iter_mut().zip(bytes) {
                *total = _mm256_add_epi64(*total, _mm256_sad_epu8(acc, zero));
            }
            start = end;
        }
        // Transpose-add: lane k of the result is the sum of `totals[k]`.
        let t01 = _mm256_add_epi64(
            _mm256_unpacklo_epi64(totals[0], totals[1]),
            _mm256_unpackhi_epi64(totals[0], totals[1]),
        );
        let t23 = _mm256_add_epi64(
            _mm256_unpacklo_epi64(totals[2], totals[3]),
            _mm256_unpackhi_epi64(totals[2], totals[3]),
        );
        let mut sums = _mm256_add_epi64(
            _mm256_permute2x128_si256::<0x20>(t01, t23),
            _mm256_permute2x128_si256::<0x31>(t01, t23),
        );
        let tail = vectors * 4;
        if tail < words {
            let t = |k: usize| {
                super::and_count(&a[tail..], &b[k * words + tail..(k + 1) * words]) as i64
            };
            sums = _mm256_add_epi64(sums, _mm256_setr_epi64x(t(0), t(1), t(2), t(3)));
        }
        sums
    }

    pub(super) fn avx2_counts(a: &[u64], b: &[u64], out: &mut [u32]) {
        assert_eq!(b.len(), out.len() * a.len());
        // SAFETY: `resolve` hands this function out only after detecting `avx2` and `popcnt`.
        unsafe { avx2_counts_impl(a, b, out) }
    }

    #[target_feature(enable = "avx2,popcnt")]
    fn avx2_counts_impl(a: &[u64], b: &[u64], out: &mut [u32]) {
        let words = a.len();
        let n = out.len();
        let mut j = 0;
        while j + 4 <= n {
            // SAFETY: `b.len() == n * words`, so `b[j * words..]` holds 4 clks.
            let sums = unsafe { avx2_sums4(a, &b[j * words..]) };
            let mut lanes = [0u64; 4];
            // SAFETY: `lanes` is 32 bytes; unaligned store.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sums) };
            for k in 0..4 {
                out[j + k] = lanes[k] as u32;
            }
            j += 4;
        }
        super::loop_counts(a, &b[j * words..], &mut out[j..]);
    }

    pub(super) fn avx2_hits(a: &[u64], b: &[u64], mins: Minimums<'_>, hits: &mut Vec<(u32, u32)>) {
        assert_eq!(b.len(), mins.len() * a.len());
        // SAFETY: `resolve` hands this function out only after detecting `avx2` and `popcnt`.
        unsafe { avx2_hits_impl(a, b, mins, hits) }
    }

    #[target_feature(enable = "avx2,popcnt")]
    fn avx2_hits_impl(a: &[u64], b: &[u64], mins: Minimums<'_>, hits: &mut Vec<(u32, u32)>) {
        let words = a.len();
        let n = mins.len();
        let mut j = 0;
        while j + 4 <= n {
            // SAFETY: `b` holds `n` clks, so `b[j * words..]` holds 4.
            let sums = unsafe { avx2_sums4(a, &b[j * words..]) };
            let below = _mm256_set1_epi64x(i64::from(mins.floor_at(j)) - 1);
            let reached = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(sums, below)));
            if reached != 0 {
                let mut lanes = [0u64; 4];
                // SAFETY: `lanes` is 32 bytes; unaligned store.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sums) };
                for (k, &count) in lanes.iter().enumerate() {
                    if reached & (1 << k) != 0 && count as u32 >= mins.at(j + k) {
                        hits.push(((j + k) as u32, count as u32));
                    }
                }
            }
            j += 4;
        }
        let from = hits.len();
        super::loop_hits(a, &b[j * words..n * words], mins.from(j), hits);
        for h in &mut hits[from..] {
            h.0 += j as u32;
        }
    }

    // ---- AVX-512 ----------------------------------------------------------

    /// `|a ∧ b_k|` for the eight clks `b_k` at `b[k * words..]`, as eight u64 lanes.
    ///
    /// # Safety
    /// AVX-512F and VPOPCNTDQ available; `a.len() == words > 0`, `b.len() >= 8 * words`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    unsafe fn avx512_sums8(a: &[u64], b: &[u64]) -> __m512i {
        let words = a.len();
        debug_assert!(b.len() >= 8 * words);
        let full = words / 8;
        let rem = words % 8;
        let mut c = [_mm512_setzero_si512(); 8];
        for v in 0..full {
            // SAFETY: `v * 8 + 8 <= words == a.len()`; unaligned load.
            let x = unsafe { _mm512_loadu_si512(a.as_ptr().add(v * 8).cast()) };
            for (k, ck) in c.iter_mut().enumerate() {
                // SAFETY: `k * words + v * 8 + 8 <= 8 * words <= b.len()`.
                let y = unsafe { _mm512_loadu_si512(b.as_ptr().add(k * words + v * 8).cast()) };
                *ck = _mm512_add_epi64(*ck, _mm512_popcnt_epi64(_mm512_and_si512(x, y)));
            }
        }
        if rem > 0 {
            let mask: __mmask8 = ((1u16 << rem) - 1) as u8;
            // SAFETY: the mask selects words `full * 8..words` of `a`, all in bounds;
            // masked-off lanes are not read.
            let x = unsafe { _mm512_maskz_loadu_epi64(mask, a.as_ptr().add(full * 8).cast()) };
            for (k, ck) in c.iter_mut().enumerate() {
                // SAFETY: as above, within clk `k` of `b`, which is in bounds.
                let y = unsafe {
                    _mm512_maskz_loadu_epi64(mask, b.as_ptr().add(k * words + full * 8).cast())
                };
                *ck = _mm512_add_epi64(*ck, _mm512_popcnt_epi64(_mm512_and_si512(x, y)));
            }
        }
        // Transpose-add in three steps: lane k of the result is the sum of `c[k]`.
        let pairs = |x: __m512i, y: __m512i| {
            _mm512_add_epi64(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y))
        };
        let halves = |x: __m512i, y: __m512i| {
            _mm512_add_epi64(
                _mm512_shuffle_i64x2::<0b10_00_10_00>(x, y),
                _mm512_shuffle_i64x2::<0b11_01_11_01>(x, y),
            )
        };
        let (d0, d1, d2, d3) = (
            pairs(c[0], c[1]),
            pairs(c[2], c[3]),
            pairs(c[4], c[5]),
            pairs(c[6], c[7]),
        );
        halves(halves(d0, d1), halves(d2, d3))
    }

    pub(super) fn avx512_counts(a: &[u64], b: &[u64], out: &mut [u32]) {
        assert_eq!(b.len(), out.len() * a.len());
        // SAFETY: `resolve` hands this function out only after detecting `avx512f`,
        // `avx512vpopcntdq` and `popcnt`.
        unsafe { avx512_counts_impl(a, b, out) }
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
    fn avx512_counts_impl(a: &[u64], b: &[u64], out: &mut [u32]) {
        let words = a.len();
        let n = out.len();
        let mut j = 0;
        while j + 8 <= n {
            // SAFETY: `b.len() == n * words`, so `b[j * words..]` holds 8 clks.
            let sums = unsafe { avx512_sums8(a, &b[j * words..]) };
            // SAFETY: `out[j..j + 8]` is in bounds; 8 u32 = 32 bytes, unaligned store.
            unsafe {
                _mm256_storeu_si256(out.as_mut_ptr().add(j).cast(), _mm512_cvtepi64_epi32(sums))
            };
            j += 8;
        }
        super::loop_counts(a, &b[j * words..], &mut out[j..]);
    }

    pub(super) fn avx512_hits(
        a: &[u64],
        b: &[u64],
        mins: Minimums<'_>,
        hits: &mut Vec<(u32, u32)>,
    ) {
        assert_eq!(b.len(), mins.len() * a.len());
        // SAFETY: `resolve` hands this function out only after detecting `avx512f`,
        // `avx512vpopcntdq` and `popcnt`.
        unsafe { avx512_hits_impl(a, b, mins, hits) }
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
    fn avx512_hits_impl(a: &[u64], b: &[u64], mins: Minimums<'_>, hits: &mut Vec<(u32, u32)>) {
        let words = a.len();
        let n = mins.len();
        let mut j = 0;
        while j + 8 <= n {
            // SAFETY: `b` holds `n` clks, so `b[j * words..]` holds 8.
            let sums = unsafe { avx512_sums8(a, &b[j * words..]) };
            let min = _mm512_set1_epi64(i64::from(mins.floor_at(j)));
            let mut reached = _mm512_cmpge_epu64_mask(sums, min);
            if reached != 0 {
                let mut lanes = [0u64; 8];
                // SAFETY: `lanes` is 64 bytes; unaligned store.
                unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), sums) };
                while reached != 0 {
                    let k = reached.trailing_zeros() as usize;
                    if lanes[k] as u32 >= mins.at(j + k) {
                        hits.push(((j + k) as u32, lanes[k] as u32));
                    }
                    reached &= reached - 1;
                }
            }
            j += 8;
        }
        let from = hits.len();
        super::loop_hits(a, &b[j * words..n * words], mins.from(j), hits);
        for h in &mut hits[from..] {
            h.0 += j as u32;
        }
    }
}
