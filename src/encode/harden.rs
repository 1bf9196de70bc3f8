//! Record-level steps after hashing, on the `u64` word buffer: XOR folding,
//! BLIP (random bit flips) and balancing. Each step's security purpose is
//! documented on [`crate::schema::Hardening`] and here.

use super::hashing::{get_bit, set_bit};
use super::keys::RandomStream;

/// XOR-folds the first `bits` bits `folds` times: each fold XORs the second
/// half onto the first (clkhash's `fold_xor`). Leaves `bits >> folds` bits,
/// with every bit after them cleared. Folding hides which token set which bit:
/// a set bit of the output can come from either half, which breaks attacks
/// that decode n-grams from bit positions (Schnell et al. 2016).
pub(crate) fn xor_fold(words: &mut [u64], bits: usize, folds: u32) {
    let mut len = bits;
    for _ in 0..folds {
        let half = len / 2;
        if half.is_multiple_of(64) {
            let (lo, hi) = words.split_at_mut(half / 64);
            for (a, b) in lo.iter_mut().zip(&hi[..half / 64]) {
                *a ^= *b;
            }
        } else {
            for i in 0..half {
                if get_bit(words, half + i) {
                    words[i >> 6] ^= 1u64 << (63 - (i & 63));
                }
            }
        }
        clear_from(words, half);
        len = half;
    }
}

/// Clears every bit from position `from` on.
pub(crate) fn clear_from(words: &mut [u64], from: usize) {
    let first = from / 64;
    if first >= words.len() {
        return;
    }
    if !from.is_multiple_of(64) {
        words[first] &= !(u64::MAX >> (from % 64));
        words[first + 1..].fill(0);
    } else {
        words[first..].fill(0);
    }
}

/// The bytes of the first `bits` bits, most significant bit first (clkhash order).
pub(crate) fn write_bytes(words: &[u64], out: &mut [u8]) {
    // Whole words first: with a constant length, each copy is one store
    // (a length known only at run time made it a `memcpy` call per word).
    let full_words = out.len() / 8;
    let mut whole = out.chunks_exact_mut(8);
    for (chunk, word) in (&mut whole).zip(words) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    let rest = whole.into_remainder();
    if let Some(word) = words.get(full_words).filter(|_| !rest.is_empty()) {
        rest.copy_from_slice(&word.to_be_bytes()[..rest.len()]);
    }
}

/// The flip threshold of probability `p` on 32-bit draws: a bit flips when a
/// uniform `u32` is below it.
pub(crate) fn blip_threshold(p: f64) -> u64 {
    (p * 4_294_967_296.0).round() as u64
}

/// BLIP: flips each of the first `bits` bits when the next 32-bit draw of a
/// stream is below `threshold`. The stream is the BLIP key's keyed BLAKE3 of
/// the record's unflipped filter, so equal records flip equally (determinism,
/// any thread count) while the flips look random to anyone without the secret.
/// Counters frequency and pattern attacks: a bit pattern no longer proves that
/// a token is present (differential-privacy style randomised response).
pub(crate) fn blip(
    words: &mut [u64],
    bits: usize,
    threshold: u64,
    key: &[u8; 32],
    scratch: &mut Vec<u8>,
) {
    scratch.clear();
    scratch.resize(bits.div_ceil(8), 0);
    write_bytes(words, scratch);
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&(bits as u64).to_le_bytes());
    hasher.update(scratch);
    let mut stream = RandomStream::new(hasher.finalize_xof());
    for i in 0..bits {
        if u64::from(stream.next_u32()) < threshold {
            words[i >> 6] ^= 1u64 << (63 - (i & 63));
        }
    }
}

/// Balancing: the `bits`-bit filter followed by its complement (`2 × bits`
/// bits), shuffled by the keyed permutation `perm` (`out[j] = in[perm[j]]`).
/// Every output has popcount exactly `bits`, which removes the information in
/// the number of set bits (a proxy for the length of names) and, with the
/// permutation, the fixed positions of complemented bits. `tmp` is scratch.
pub(crate) fn balance(words: &mut Vec<u64>, bits: usize, perm: &[u32], tmp: &mut Vec<u64>) {
    debug_assert_eq!(perm.len(), 2 * bits);
    tmp.clear();
    tmp.extend_from_slice(&words[..bits.div_ceil(64)]);
    words.clear();
    words.resize((2 * bits).div_ceil(64), 0);
    for (j, &src) in perm.iter().enumerate() {
        let src = src as usize;
        let bit = if src < bits {
            get_bit(tmp, src)
        } else {
            !get_bit(tmp, src - bits)
        };
        if bit {
            set_bit(words, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits_of(words: &[u64], n: usize) -> Vec<bool> {
        (0..n).map(|i| get_bit(words, i)).collect()
    }

    proptest::proptest! {
        /// Bytes written word by word are the filter's bits in clkhash order
        /// (bit i is bit 7 - i % 8 of byte i / 8), for any length.
        #[test]
        fn write_bytes_puts_each_bit_in_clkhash_order(
            words in proptest::collection::vec(proptest::num::u64::ANY, 0..20),
            cut in 0usize..8,
        ) {
            let len = (8 * words.len()).saturating_sub(cut);
            let mut out = vec![0xA5; len];
            write_bytes(&words, &mut out);
            for i in 0..8 * len {
                let bit = out[i / 8] >> (7 - i % 8) & 1 == 1;
                proptest::prop_assert_eq!(bit, get_bit(&words, i), "bit {}", i);
            }
        }
    }

    #[test]
    fn folding_xors_halves_for_aligned_and_unaligned_lengths() {
        for (bits, folds) in [(256usize, 2u32), (128, 1), (200, 1), (1000, 3), (96, 1)] {
            let mut words: Vec<u64> = (0..bits.div_ceil(64) as u64)
                .map(|i| 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i + 1))
                .collect();
            clear_from(&mut words, bits);
            let mut expected = bits_of(&words, bits);
            for _ in 0..folds {
                let half = expected.len() / 2;
                expected = (0..half)
                    .map(|i| expected[i] ^ expected[half + i])
                    .collect();
            }
            xor_fold(&mut words, bits, folds);
            assert_eq!(
                bits_of(&words, expected.len()),
                expected,
                "{bits} bits, {folds} folds"
            );
            assert!((expected.len()..words.len() * 64).all(|i| !get_bit(&words, i)));
        }
    }

    #[test]
    fn balanced_filters_have_popcount_l() {
        let perm = super::super::keys::balance_permutation(
            &crate::secret::Secret::new("a secret of 16+ bytes").unwrap(),
            2000,
        );
        for seed in 0..20u64 {
            let mut words: Vec<u64> = (0..16)
                .map(|i| (seed * 31 + i).wrapping_mul(0x2545_F491_4F6C_DD1D))
                .collect();
            clear_from(&mut words, 1000);
            let mut tmp = Vec::new();
            balance(&mut words, 1000, &perm, &mut tmp);
            let popcount: u32 = words.iter().map(|w| w.count_ones()).sum();
            assert_eq!(popcount, 1000);
        }
    }

    #[test]
    fn blip_flips_about_p_of_the_bits_and_is_reproducible() {
        let key = [7u8; 32];
        let threshold = blip_threshold(0.1);
        let mut flipped = 0u64;
        let mut scratch = Vec::new();
        for record in 0..400u64 {
            let original: Vec<u64> = (0..16)
                .map(|i| (record * 16 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect();
            let mut a = original.clone();
            blip(&mut a, 1024, threshold, &key, &mut scratch);
            let mut b = original.clone();
            blip(&mut b, 1024, threshold, &key, &mut scratch);
            assert_eq!(a, b);
            flipped += a
                .iter()
                .zip(&original)
                .map(|(x, y)| u64::from((x ^ y).count_ones()))
                .sum::<u64>();
        }
        let rate = flipped as f64 / (400.0 * 1024.0);
        assert!((0.097..0.103).contains(&rate), "flip rate {rate}");
    }
}
