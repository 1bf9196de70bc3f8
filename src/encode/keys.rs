//! Key derivation: the project secret -> per-feature hashing keys, and the
//! record-level keys of the hardening steps (balance permutation, BLIP).
//!
//! clkhash schemas (`"kdf": {"type": "HKDF"}`) derive keys exactly as clkhash
//! 0.18: one HKDF run gives `2 × keySize` bytes per feature, ignored features
//! included, and feature `i` gets keys `2i` and `2i + 1`. pprl's `BLAKE3` kdf
//! derives each feature's keys from the secret and the feature's identifier
//! with `blake3` in key-derivation mode, so keys do not depend on the order of
//! the features and no two features share a key.

use hkdf::Hkdf;
use sha2::{Sha256, Sha512};

use crate::schema::{HkdfHash, Kdf, Schema};
use crate::secret::Secret;

/// `blake3::derive_key` context of the per-feature keys (BLAKE3 kdf).
const FEATURE_KEY_CONTEXT: &str = "pprl 2026-11 feature hashing keys v1";
/// Context of the key of the balanced filter's permutation.
const BALANCE_CONTEXT: &str = "pprl 2026-11 balance permutation v1";
/// Context of the key of the BLIP bit-flip stream.
const BLIP_CONTEXT: &str = "pprl 2026-11 blip stream v1";

/// The two keys of one feature: `first` keys blakeHash, HMAC-SHA1 and BLAKE3
/// (its first 32 bytes); `second` keys HMAC-MD5.
#[derive(Clone)]
pub(crate) struct FeatureKeys {
    pub first: Vec<u8>,
    pub second: Vec<u8>,
}

impl Drop for FeatureKeys {
    fn drop(&mut self) {
        for b in self.first.iter_mut().chain(self.second.iter_mut()) {
            *b = std::hint::black_box(0);
        }
    }
}

impl FeatureKeys {
    /// The 32-byte BLAKE3 key: the first 32 bytes of `first`.
    pub fn blake3_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(&self.first[..32]);
        key
    }
}

/// Keys of every feature, in schema order (ignored features included).
pub(crate) fn feature_keys(schema: &Schema, secret: &Secret) -> Vec<FeatureKeys> {
    let n = schema.features().len();
    match schema.kdf() {
        Kdf::Hkdf {
            hash,
            key_size,
            salt,
            info,
        } => {
            let mut okm = vec![0u8; 2 * n * key_size];
            let info = info.as_deref().unwrap_or(&[]);
            // The schema validated that the output fits HKDF's limit.
            match hash {
                HkdfHash::Sha256 => Hkdf::<Sha256>::new(salt.as_deref(), secret.expose())
                    .expand(info, &mut okm)
                    .expect("output length checked by the schema"),
                HkdfHash::Sha512 => Hkdf::<Sha512>::new(salt.as_deref(), secret.expose())
                    .expand(info, &mut okm)
                    .expect("output length checked by the schema"),
            }
            let keys = okm
                .chunks_exact(2 * key_size)
                .map(|pair| FeatureKeys {
                    first: pair[..*key_size].to_vec(),
                    second: pair[*key_size..].to_vec(),
                })
                .collect();
            okm.iter_mut().for_each(|b| *b = std::hint::black_box(0));
            keys
        }
        Kdf::Blake3 => schema
            .features()
            .iter()
            .map(|f| {
                let mut hasher = blake3::Hasher::new_derive_key(FEATURE_KEY_CONTEXT);
                // Length-prefixed, so (secret, identifier) pairs cannot collide.
                hasher.update(&(secret.expose().len() as u64).to_le_bytes());
                hasher.update(secret.expose());
                hasher.update(f.identifier().as_bytes());
                let mut material = [0u8; 128];
                hasher.finalize_xof().fill(&mut material);
                let keys = FeatureKeys {
                    first: material[..64].to_vec(),
                    second: material[64..].to_vec(),
                };
                material
                    .iter_mut()
                    .for_each(|b| *b = std::hint::black_box(0));
                keys
            })
            .collect(),
    }
}

/// A stream of uniform random integers from a BLAKE3 extendable output.
pub(crate) struct RandomStream {
    reader: blake3::OutputReader,
    buf: [u8; 64],
    pos: usize,
}

impl RandomStream {
    pub fn new(reader: blake3::OutputReader) -> RandomStream {
        RandomStream {
            reader,
            buf: [0; 64],
            pos: 64,
        }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.pos == 64 {
            self.reader.fill(&mut self.buf);
            self.pos = 0;
        }
        let v = u32::from_le_bytes(
            self.buf[self.pos..self.pos + 4]
                .try_into()
                .expect("4 bytes"),
        );
        self.pos += 4;
        v
    }

    pub fn next_u64(&mut self) -> u64 {
        u64::from(self.next_u32()) | (u64::from(self.next_u32()) << 32)
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias: Lemire's
    /// multiply-shift with rejection of the few values that would bias it.
    pub fn below_u64(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The permutation of the balanced filter: `out[j] = in[perm[j]]` over `bits`
/// positions, a Fisher–Yates shuffle driven by a stream keyed by the secret.
pub(crate) fn balance_permutation(secret: &Secret, bits: usize) -> Vec<u32> {
    let key = blake3::derive_key(BALANCE_CONTEXT, secret.expose());
    let mut hasher = blake3::Hasher::new_keyed(&key);
    hasher.update(&(bits as u64).to_le_bytes());
    let mut stream = RandomStream::new(hasher.finalize_xof());
    let mut perm: Vec<u32> = (0..bits as u32).collect();
    for i in (1..bits).rev() {
        let j = stream.below_u64(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

/// The key of the BLIP flip stream (each record's stream is this key's keyed
/// hash of the record's unflipped filter).
pub(crate) fn blip_key(secret: &Secret) -> [u8; 32] {
    blake3::derive_key(BLIP_CONTEXT, secret.expose())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("correct horse battery staple").unwrap()
    }

    #[test]
    fn permutation_is_a_keyed_bijection() {
        let p = balance_permutation(&secret(), 2048);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert!(sorted.iter().enumerate().all(|(i, &v)| v as usize == i));
        assert_eq!(p, balance_permutation(&secret(), 2048));
        let other = Secret::new("another secret of some length").unwrap();
        assert_ne!(p, balance_permutation(&other, 2048));
        // Not the identity, nor close to it.
        assert!(
            p.iter()
                .enumerate()
                .filter(|(i, v)| *i == **v as usize)
                .count()
                < 20
        );
    }

    #[test]
    fn bounded_draws_are_in_range_and_roughly_uniform() {
        let mut s = RandomStream::new(blake3::Hasher::new().finalize_xof());
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[s.below_u64(7) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn blake3_keys_depend_on_identifier_not_position() {
        let text = |a: &str, b: &str| {
            format!(
                r#"{{"version": 3, "clkConfig": {{"l": 64, "kdf": {{"type": "BLAKE3"}}}},
                "features": [
                 {{"identifier": "{a}", "format": {{"type": "string"}}, "hashing": {{"comparison": {{"type": "exact"}}, "strategy": {{"bitsPerToken": 2}}, "hash": {{"type": "blake3"}}}}}},
                 {{"identifier": "{b}", "format": {{"type": "string"}}, "hashing": {{"comparison": {{"type": "exact"}}, "strategy": {{"bitsPerToken": 2}}, "hash": {{"type": "blake3"}}}}}}]}}"#
            )
        };
        let ab = feature_keys(&Schema::from_json(&text("a", "b")).unwrap(), &secret());
        let ba = feature_keys(&Schema::from_json(&text("b", "a")).unwrap(), &secret());
        assert_eq!(ab[0].first, ba[1].first);
        assert_ne!(ab[0].first, ab[1].first);
        assert_ne!(ab[0].first, ab[0].second);
    }
}
