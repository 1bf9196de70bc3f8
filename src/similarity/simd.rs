//! The hot kernel: `|A ∧ B|` of one clk against a run of clks, in several
//! implementations chosen at run time by CPU detection. It hands the counts to
//! the candidate search, which turns them into scores.
//!
//! - `portable`: a `u64` word loop with `count_ones`, which the compiler
//!   vectorises as well as the build target allows (SWAR on baseline x86-64).
//! - `popcnt`: the same loop compiled with the `popcnt` instruction.
//! - `avx2`: nibble lookup with `pshufb` (Muła's method), bytes summed with
//!   `psadbw`; for 1024-bit clks this beats Harley–Seal, which only pays off
//!   on long bit streams.
//! - `avx512`: `vpopcntq` (AVX-512 VPOPCNTDQ) on 512-bit lanes, masked loads
//!   for a tail that is not a multiple of 8 words.
//!
//! This is the only module that may use `unsafe`: every implementation that
//! needs a CPU feature is reachable only through [`resolve`], which hands it
//! out after the feature has been detected.
#![allow(unsafe_code)]

use super::Kernel;

/// `out[j] = |a ∧ b_j|` where `b_j = b[j * a.len()..(j + 1) * a.len()]`.
///
/// Callers guarantee `b.len() == out.len() * a.len()` and `a.len() > 0`.
pub(super) type BatchFn = fn(a: &[u64], b: &[u64], out: &mut [u32]);

/// The batch function of `kernel`, or `None` when this CPU lacks what it needs.
pub(super) fn resolve(kernel: Kernel) -> Option<BatchFn> {
    match kernel {
        Kernel::Portable => Some(portable),
        #[cfg(target_arch = "x86_64")]
        Kernel::Popcnt if std::arch::is_x86_feature_detected!("popcnt") => Some(x86::popcnt),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt") =>
        {
            Some(x86::avx2)
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vpopcntdq") =>
        {
            Some(x86::avx512)
        }
        _ => None,
    }
}

#[inline(always)]
fn and_count(a: &[u64], b: &[u64]) -> u32 {
    let mut count = 0;
    for (x, y) in a.iter().zip(b) {
        count += (x & y).count_ones();
    }
    count
}

#[inline(always)]
fn batch_words(a: &[u64], b: &[u64], out: &mut [u32]) {
    let words = a.len();
    debug_assert_eq!(b.len(), out.len() * words);
    // The common filter lengths get a loop the compiler unrolls completely.
    match words {
        16 => batch_fixed::<16>(a, b, out),
        8 => batch_fixed::<8>(a, b, out),
        32 => batch_fixed::<32>(a, b, out),
        _ => {
            for (o, bc) in out.iter_mut().zip(b.chunks_exact(words)) {
                *o = and_count(a, bc);
            }
        }
    }
}

#[inline(always)]
fn batch_fixed<const W: usize>(a: &[u64], b: &[u64], out: &mut [u32]) {
    let a: &[u64; W] = a.try_into().expect("clk length");
    for (o, bc) in out.iter_mut().zip(b.chunks_exact(W)) {
        let bc: &[u64; W] = bc.try_into().expect("clk length");
        let mut count = 0;
        for i in 0..W {
            count += (a[i] & bc[i]).count_ones();
        }
        *o = count;
    }
}

fn portable(a: &[u64], b: &[u64], out: &mut [u32]) {
    batch_words(a, b, out);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub(super) fn popcnt(a: &[u64], b: &[u64], out: &mut [u32]) {
        assert_eq!(b.len(), out.len() * a.len());
        // SAFETY: `resolve` hands this function out only after detecting `popcnt`.
        unsafe { popcnt_impl(a, b, out) }
    }

    #[target_feature(enable = "popcnt")]
    fn popcnt_impl(a: &[u64], b: &[u64], out: &mut [u32]) {
        super::batch_words(a, b, out);
    }

    pub(super) fn avx2(a: &[u64], b: &[u64], out: &mut [u32]) {
        assert_eq!(b.len(), out.len() * a.len());
        // SAFETY: `resolve` hands this function out only after detecting `avx2` and `popcnt`.
        unsafe { avx2_impl(a, b, out) }
    }

    #[target_feature(enable = "avx2,popcnt")]
    fn avx2_impl(a: &[u64], b: &[u64], out: &mut [u32]) {
        let words = a.len();
        let vectors = words / 4;
        let tail = vectors * 4;
        let lut = _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, //
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
        );
        let low = _mm256_set1_epi8(0x0f);
        for (o, bc) in out.iter_mut().zip(b.chunks_exact(words)) {
            let mut total = _mm256_setzero_si256();
            // A byte of `bytes` gains at most 8 per vector: flush every 31.
            for block in (0..vectors).step_by(31) {
                let mut bytes = _mm256_setzero_si256();
                for v in block..vectors.min(block + 31) {
                    // SAFETY: `v * 4 + 4 <= words == a.len() == bc.len()`; unaligned loads.
                    let (x, y) = unsafe {
                        (
                            _mm256_loadu_si256(a.as_ptr().add(v * 4).cast()),
                            _mm256_loadu_si256(bc.as_ptr().add(v * 4).cast()),
                        )
                    };
                    let w = _mm256_and_si256(x, y);
                    let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(w, low));
                    let hi =
                        _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(w, 4), low));
                    bytes = _mm256_add_epi8(bytes, _mm256_add_epi8(lo, hi));
                }
                total = _mm256_add_epi64(total, _mm256_sad_epu8(bytes, _mm256_setzero_si256()));
            }
            let sum128 = _mm_add_epi64(
                _mm256_castsi256_si128(total),
                _mm256_extracti128_si256(total, 1),
            );
            let sum = _mm_cvtsi128_si64(sum128) as u64
                + _mm_cvtsi128_si64(_mm_unpackhi_epi64(sum128, sum128)) as u64;
            *o = sum as u32 + super::and_count(&a[tail..], &bc[tail..]);
        }
    }

    pub(super) fn avx512(a: &[u64], b: &[u64], out: &mut [u32]) {
        assert_eq!(b.len(), out.len() * a.len());
        // SAFETY: `resolve` hands this function out only after detecting `avx512f` and
        // `avx512vpopcntdq`.
        unsafe { avx512_impl(a, b, out) }
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    fn avx512_impl(a: &[u64], b: &[u64], out: &mut [u32]) {
        let words = a.len();
        if words == 16 {
            // 1024-bit clks, the common case: `a` stays in two registers.
            // SAFETY: `a.len() == 16`; unaligned loads.
            let (a0, a1) = unsafe {
                (
                    _mm512_loadu_si512(a.as_ptr().cast()),
                    _mm512_loadu_si512(a.as_ptr().add(8).cast()),
                )
            };
            for (o, bc) in out.iter_mut().zip(b.chunks_exact(16)) {
                // SAFETY: `bc.len() == 16`; unaligned loads.
                let (b0, b1) = unsafe {
                    (
                        _mm512_loadu_si512(bc.as_ptr().cast()),
                        _mm512_loadu_si512(bc.as_ptr().add(8).cast()),
                    )
                };
                let c = _mm512_add_epi64(
                    _mm512_popcnt_epi64(_mm512_and_si512(a0, b0)),
                    _mm512_popcnt_epi64(_mm512_and_si512(a1, b1)),
                );
                *o = _mm512_reduce_add_epi64(c) as u32;
            }
            return;
        }
        let full = words / 8;
        let rem = words % 8;
        let mask: __mmask8 = ((1u16 << rem) - 1) as u8;
        for (o, bc) in out.iter_mut().zip(b.chunks_exact(words)) {
            let mut c = _mm512_setzero_si512();
            for v in 0..full {
                // SAFETY: `v * 8 + 8 <= words == a.len() == bc.len()`; unaligned loads.
                let (x, y) = unsafe {
                    (
                        _mm512_loadu_si512(a.as_ptr().add(v * 8).cast()),
                        _mm512_loadu_si512(bc.as_ptr().add(v * 8).cast()),
                    )
                };
                c = _mm512_add_epi64(c, _mm512_popcnt_epi64(_mm512_and_si512(x, y)));
            }
            if rem > 0 {
                // SAFETY: the mask selects the `rem` words from `full * 8` to `words`, all
                // in bounds; masked-off lanes are not read.
                let (x, y) = unsafe {
                    (
                        _mm512_maskz_loadu_epi64(mask, a.as_ptr().add(full * 8).cast()),
                        _mm512_maskz_loadu_epi64(mask, bc.as_ptr().add(full * 8).cast()),
                    )
                };
                c = _mm512_add_epi64(c, _mm512_popcnt_epi64(_mm512_and_si512(x, y)));
            }
            *o = _mm512_reduce_add_epi64(c) as u32;
        }
    }
}
