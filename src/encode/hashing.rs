//! The hot path: one token -> k bit positions, set in a `u64` word buffer.
//!
//! Every keyed state is built once per feature in [`FieldHasher::new`] and
//! cloned per token, so no key is re-processed per token:
//!
//! * blakeHash: one BLAKE2b core per salt `str(j)`, with the key block already
//!   compressed (a keyed BLAKE2b hashes the zero-padded key as its first
//!   block), so a short token costs one compression instead of two;
//! * doubleHash: HMAC-SHA1 and HMAC-MD5 states with their inner and outer
//!   pads already absorbed;
//! * blake3: the 32-byte key (a keyed BLAKE3 hasher costs nothing to create).
//!
//! Bit `i` of the filter is bit `63 - i % 64` of word `i / 64`, so writing the
//! words big-endian gives clkhash's byte order.

use blake2::Blake2bMac512;
use blake2::Blake2bVarCore;
use blake2::digest::core_api::{Buffer, UpdateCore, VariableOutputCore};
use blake2::digest::{Mac, Output};
use hmac::Hmac;
use md5::Md5;
use sha1::Sha1;

use super::keys::FeatureKeys;
use crate::schema::{HashKind, TextEncoding};

/// How many blakeHash salts get a precomputed core; more are built on demand.
const PRECOMPUTED_BLAKE_SALTS: usize = 64;

/// Sets bit `i` of a word buffer.
#[inline(always)]
pub(crate) fn set_bit(words: &mut [u64], i: usize) {
    words[i >> 6] |= 1u64 << (63 - (i & 63));
}

/// Reads bit `i` of a word buffer.
#[inline(always)]
pub(crate) fn get_bit(words: &[u64], i: usize) -> bool {
    words[i >> 6] & (1u64 << (63 - (i & 63))) != 0
}

/// The bytes that are hashed for a token, in the feature's text encoding
/// (Python codec semantics: `utf-16` and `utf-32` start with a byte-order mark).
pub(crate) fn encode_token<'a>(
    encoding: TextEncoding,
    token: &'a str,
    buf: &'a mut Vec<u8>,
) -> &'a [u8] {
    match encoding {
        TextEncoding::Utf8 | TextEncoding::Ascii => token.as_bytes(),
        TextEncoding::Utf16 => {
            buf.clear();
            buf.extend_from_slice(&[0xFF, 0xFE]);
            for unit in token.encode_utf16() {
                buf.extend_from_slice(&unit.to_le_bytes());
            }
            buf
        }
        TextEncoding::Utf32 => {
            buf.clear();
            buf.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x00]);
            for c in token.chars() {
                buf.extend_from_slice(&(c as u32).to_le_bytes());
            }
            buf
        }
    }
}

/// A big-endian byte string modulo `l` (`l < 2^32`), four bytes at a time
/// (or a mask of the last eight bytes when `l` is a power of two).
#[inline]
fn be_mod(bytes: &[u8], l: u64) -> u64 {
    if l.is_power_of_two() && bytes.len() >= 8 {
        let tail: [u8; 8] = bytes[bytes.len() - 8..].try_into().expect("8 bytes");
        return u64::from_be_bytes(tail) & (l - 1);
    }
    let mut r = 0u64;
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        r = ((r << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))) % l;
    }
    for &b in chunks.remainder() {
        r = ((r << 8) | u64::from(b)) % l;
    }
    r
}

/// The keyed hash of one feature, ready to hash tokens.
#[derive(Clone)]
pub(crate) enum FieldHasher {
    Blake2b {
        key: Vec<u8>,
        /// `cores[j]`: BLAKE2b-512 with salt `str(j)`, key block compressed.
        cores: Vec<Blake2bVarCore>,
    },
    DoubleHash {
        /// HMAC-SHA1 (first key) and HMAC-MD5 (second key), boxed: they are large.
        states: Box<(Hmac<Sha1>, Hmac<Md5>)>,
        prevent_singularity: bool,
    },
    Blake3 {
        key: [u8; 32],
        draws: Draws,
    },
}

/// How blake3 turns its output into positions in `0..l`: 16-bit
/// little-endian draws when `l <= 2^16`, else 32-bit, each mapped by Lemire's
/// multiply-shift (`x·l >> width`), rejecting the draws whose low half falls
/// below `2^width mod l` — exactly the ones that would bias the result. For a
/// power-of-two `l` nothing is rejected. So positions are exactly uniform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Draws {
    l: u64,
    /// 16 or 32.
    width: u32,
    reject_below: u64,
}

impl Draws {
    pub fn new(l: usize) -> Draws {
        let l = l as u64;
        let width = if l <= 1 << 16 { 16 } else { 32 };
        Draws {
            l,
            width,
            reject_below: (1u64 << width) % l,
        }
    }

    /// Hands `f` the positions of up to `k` accepted draws read from `bytes`;
    /// returns how many.
    #[inline]
    fn emit(self, bytes: &[u8], k: usize, f: &mut impl FnMut(usize)) -> usize {
        if self.reject_below == 0 {
            // Nothing is rejected (l is a power of two): one position per draw.
            let step = self.width as usize / 8;
            let n = k.min(bytes.len() / step);
            for draw in bytes.chunks_exact(step).take(n) {
                let x = if step == 2 {
                    u64::from(u16::from_le_bytes([draw[0], draw[1]]))
                } else {
                    u64::from(u32::from_le_bytes([draw[0], draw[1], draw[2], draw[3]]))
                };
                f(((x * self.l) >> self.width) as usize);
            }
            return n;
        }
        let mut set = 0;
        if self.width == 16 {
            for pair in bytes.chunks_exact(2) {
                if set == k {
                    break;
                }
                if let Some(i) = self.map(u64::from(u16::from_le_bytes([pair[0], pair[1]]))) {
                    f(i);
                    set += 1;
                }
            }
        } else {
            for quad in bytes.chunks_exact(4) {
                if set == k {
                    break;
                }
                let x = u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]);
                if let Some(i) = self.map(u64::from(x)) {
                    f(i);
                    set += 1;
                }
            }
        }
        set
    }

    /// The position of draw `x` (a `width`-bit value), or `None` if rejected.
    #[inline(always)]
    fn map(self, x: u64) -> Option<usize> {
        let m = x * self.l;
        let low = m & ((1u64 << self.width) - 1);
        (low >= self.reject_below).then_some((m >> self.width) as usize)
    }
}

/// A BLAKE2b-512 core with salt `str(j)` and the key block absorbed.
fn blake2b_core(key: &[u8], j: usize) -> Blake2bVarCore {
    let salt = j.to_string();
    let mut core = Blake2bVarCore::new_with_params(salt.as_bytes(), &[], key.len(), 64);
    let mut block = blake2::digest::core_api::Block::<Blake2bVarCore>::default();
    block[..key.len()].copy_from_slice(key);
    core.update_blocks(std::slice::from_ref(&block));
    core
}

impl FieldHasher {
    /// Builds the keyed states of a feature for a filter of `l` bits (before
    /// folding); `max_bits` is the most bits one token can set (it sizes the
    /// blakeHash salts).
    pub fn new(hash: HashKind, keys: &FeatureKeys, max_bits: usize, l: usize) -> FieldHasher {
        match hash {
            HashKind::Blake2b => {
                let salts = max_bits.div_ceil(32).clamp(1, PRECOMPUTED_BLAKE_SALTS);
                FieldHasher::Blake2b {
                    key: keys.first.clone(),
                    cores: (0..salts).map(|j| blake2b_core(&keys.first, j)).collect(),
                }
            }
            HashKind::DoubleHash {
                prevent_singularity,
            } => FieldHasher::DoubleHash {
                states: Box::new((
                    <Hmac<Sha1> as Mac>::new_from_slice(&keys.first)
                        .expect("HMAC takes keys of any length"),
                    <Hmac<Md5> as Mac>::new_from_slice(&keys.second)
                        .expect("HMAC takes keys of any length"),
                )),
                prevent_singularity,
            },
            HashKind::Blake3 => FieldHasher::Blake3 {
                key: keys.blake3_key(),
                draws: Draws::new(l),
            },
        }
    }

    /// Hashes `message` (a token's bytes, after its salt prefix if any) and
    /// sets its `k` bits among the first `l` bits of `words`.
    #[inline]
    pub fn insert(&self, message: &[u8], k: usize, l: usize, words: &mut [u64]) {
        self.each_position(message, k, l, |i| set_bit(words, i));
    }

    /// Appends the `k` bit positions of `message` to `out`.
    ///
    /// For every scheme the positions for `k` are the first `k` of the
    /// positions for any larger `k` (each scheme reads one stream of
    /// positions and stops after `k`), which lets the token cache keep one
    /// list per token for every `k`.
    pub fn positions(&self, message: &[u8], k: usize, l: usize, out: &mut Vec<u32>) {
        self.each_position(message, k, l, |i| out.push(i as u32));
    }

    /// Hands `f` the `k` positions of `message` in `0..l`, in stream order
    /// (repeats included).
    #[inline]
    fn each_position(&self, message: &[u8], k: usize, l: usize, mut f: impl FnMut(usize)) {
        match self {
            FieldHasher::Blake2b { key, cores } => {
                let mut digest = Output::<Blake2bVarCore>::default();
                let mut remaining = k;
                let mut j = 0;
                while remaining > 0 {
                    if message.is_empty() {
                        // The key block is then the final block: no precomputed core.
                        let mut mac = Blake2bMac512::new_with_salt_and_personal(
                            key,
                            j.to_string().as_bytes(),
                            &[],
                        )
                        .expect("key and salt lengths checked");
                        mac.update(&[]);
                        digest.copy_from_slice(&mac.finalize().into_bytes());
                    } else {
                        let mut core = match cores.get(j) {
                            Some(core) => core.clone(),
                            None => blake2b_core(key, j),
                        };
                        let mut buffer = Buffer::<Blake2bVarCore>::default();
                        buffer.digest_blocks(message, |blocks| core.update_blocks(blocks));
                        core.finalize_variable_core(&mut buffer, &mut digest);
                    }
                    let take = remaining.min(32);
                    // blakeHash filters are powers of two (the schema checks), so
                    // `v mod l` is a mask.
                    let mask = l - 1;
                    for pair in digest.chunks_exact(2).take(take) {
                        let v = u16::from_le_bytes([pair[0], pair[1]]) as usize;
                        f(v & mask);
                    }
                    remaining -= take;
                    j += 1;
                }
            }
            FieldHasher::DoubleHash {
                states,
                prevent_singularity,
            } => {
                let (sha1, md5) = &**states;
                let l64 = l as u64;
                let mut h1 = sha1.clone();
                h1.update(message);
                let h1 = be_mod(&h1.finalize().into_bytes(), l64);
                let mut h2 = md5.clone();
                h2.update(message);
                let mut h2v = be_mod(&h2.finalize().into_bytes(), l64);
                if *prevent_singularity {
                    // clkhash re-hashes with chr(i) appended until h2 is not 0 mod l.
                    let mut i = 0u32;
                    while h2v == 0 {
                        let mut h = md5.clone();
                        h.update(message);
                        let mut utf8 = [0u8; 4];
                        let c = char::from_u32(i).unwrap_or('\u{FFFD}');
                        h.update(c.encode_utf8(&mut utf8).as_bytes());
                        h2v = be_mod(&h.finalize().into_bytes(), l64);
                        i += 1;
                    }
                }
                let mut g = h1;
                for _ in 0..k {
                    f(g as usize);
                    g += h2v;
                    if g >= l64 {
                        g -= l64;
                    }
                }
            }
            FieldHasher::Blake3 { key, draws } => {
                debug_assert_eq!(draws.l, l as u64);
                // The first 32 bytes of the output are the keyed hash: one
                // compression, the cheapest way to 16 draws. More draws come
                // from the extendable output, 64 bytes per compression.
                if k * draws.width as usize <= 256 {
                    let first = *blake3::keyed_hash(key, message).as_bytes();
                    let mut set = draws.emit(&first, k, &mut f);
                    if set < k {
                        // Rejected draws (only when l is not a power of two).
                        let mut hasher = blake3::Hasher::new_keyed(key);
                        hasher.update(message);
                        let mut reader = hasher.finalize_xof();
                        reader.set_position(32);
                        let mut chunk = [0u8; 32];
                        while set < k {
                            reader.fill(&mut chunk);
                            set += draws.emit(&chunk, k - set, &mut f);
                        }
                    }
                } else {
                    let mut hasher = blake3::Hasher::new_keyed(key);
                    hasher.update(message);
                    let mut reader = hasher.finalize_xof();
                    let mut block = [0u8; 64];
                    let mut set = 0;
                    while set < k {
                        reader.fill(&mut block);
                        set += draws.emit(&block, k - set, &mut f);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn be_mod_matches_bytewise_horner() {
        let bytes: Vec<u8> = (0u8..20)
            .map(|b| b.wrapping_mul(37).wrapping_add(11))
            .collect();
        for l in [1u64, 7, 64, 1000, 1024, 65_537, (1 << 24) - 3, 1 << 24] {
            let horner = bytes
                .iter()
                .fold(0u64, |r, &b| (r * 256 + u64::from(b)) % l);
            assert_eq!(be_mod(&bytes, l), horner, "l = {l}");
            assert_eq!(
                be_mod(&bytes[..16], l),
                bytes[..16]
                    .iter()
                    .fold(0u64, |r, &b| (r * 256 + u64::from(b)) % l)
            );
        }
    }

    #[test]
    fn precomputed_blake2b_core_equals_the_keyed_mac() {
        let key: Vec<u8> = (0..64).collect();
        let keys = FeatureKeys {
            first: key.clone(),
            second: key.clone(),
        };
        let hasher = FieldHasher::new(HashKind::Blake2b, &keys, 40, 1024);
        for token in [&b""[..], b"ab", &[7u8; 200][..]] {
            let mut fast = [0u64; 16];
            hasher.insert(token, 40, 1024, &mut fast);
            let mut slow = [0u64; 16];
            for j in 0..2 {
                let mut mac =
                    Blake2bMac512::new_with_salt_and_personal(&key, j.to_string().as_bytes(), &[])
                        .unwrap();
                mac.update(token);
                let d = mac.finalize().into_bytes();
                for pair in d.chunks_exact(2).take(if j == 0 { 32 } else { 8 }) {
                    set_bit(
                        &mut slow,
                        u16::from_le_bytes([pair[0], pair[1]]) as usize % 1024,
                    );
                }
            }
            assert_eq!(fast, slow, "token {token:?}");
        }
    }

    #[test]
    fn draws_are_exactly_uniform() {
        // Every 16-bit draw is either rejected or maps to a position; each
        // position gets the same number of accepted draws.
        for l in [8usize, 100, 1000, 1024, 65_536] {
            let d = Draws::new(l);
            let mut counts = vec![0u32; l];
            for x in 0..(1u64 << 16) {
                if let Some(i) = d.map(x) {
                    counts[i] += 1;
                }
            }
            assert!(counts.iter().all(|&c| c == counts[0]), "l = {l}");
        }
        assert_eq!(Draws::new(1 << 20).width, 32);
    }

    #[test]
    fn python_codecs() {
        let mut buf = Vec::new();
        assert_eq!(
            encode_token(TextEncoding::Utf16, "aé", &mut buf),
            [0xFF, 0xFE, b'a', 0, 0xE9, 0]
        );
        assert_eq!(
            encode_token(TextEncoding::Utf32, "a", &mut buf),
            [0xFF, 0xFE, 0, 0, b'a', 0, 0, 0]
        );
        assert_eq!(
            encode_token(TextEncoding::Utf8, "é", &mut buf),
            [0xC3, 0xA9]
        );
    }
}
