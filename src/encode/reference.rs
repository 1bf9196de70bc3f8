//! A plain reference implementation of the encoding, written for clarity, not
//! speed: keys derived on every call, every hash keyed afresh for every token,
//! tokens as `Vec<String>`, bits as `Vec<bool>`. The fast [`super::Encoder`]
//! must give exactly the same bytes; property tests check this.

use blake2::Blake2bMac512;
use blake2::digest::Mac;
use hmac::Hmac;
use md5::Md5;
use sha1::Sha1;

use super::{FieldError, RejectReason, keys, value, write_salt_prefix};
use crate::schema::{Comparison, Format, HashKind, Schema, TextEncoding};
use crate::secret::Secret;

/// Encodes one record; same contract as [`super::Encoder::encode`].
///
/// # Errors
/// As [`super::Encoder::encode`].
pub fn encode(schema: &Schema, secret: &Secret, values: &[Option<&str>]) -> Result<Vec<u8>, FieldError> {
    assert_eq!(values.len(), schema.features().len());
    let keys = keys::feature_keys(schema, secret);
    let features = schema.features();

    // Every value validated and formatted first, as clkhash validates rows before hashing.
    let mut prepared: Vec<String> = vec![String::new(); features.len()];
    for (i, feature) in features.iter().enumerate() {
        if let Some(spec) = feature.spec() {
            let mut tmp = String::new();
            value::prepare(spec, values[i], &mut prepared[i], &mut tmp).map_err(|reason| FieldError {
                feature: feature.identifier().to_owned(),
                reason,
            })?;
        }
    }

    let hash_bits = schema.hash_bits();
    let mut filter = vec![false; hash_bits];
    for (i, feature) in features.iter().enumerate() {
        let Some(spec) = feature.spec() else { continue };
        let tokens = tokens_of(&spec.comparison, &prepared[i]).map_err(|reason| FieldError {
            feature: feature.identifier().to_owned(),
            reason,
        })?;
        let mut prefix = Vec::new();
        if let Some(salt) = &spec.salt {
            let source = if features[salt.source].is_ignored() {
                let mut s = String::new();
                value::salt_of_ignored(values[salt.source], &mut s);
                s
            } else {
                prepared[salt.source].clone()
            };
            write_salt_prefix(&source, salt.length, &mut prefix);
        }
        let encoding = match &spec.format {
            Format::String { encoding, .. } => *encoding,
            _ => TextEncoding::Utf8,
        };
        for (t, token) in tokens.iter().enumerate() {
            let k = spec.strategy.bits_for(t, tokens.len());
            let mut message = prefix.clone();
            message.extend(token_bytes(encoding, token));
            for position in positions(spec.hash, &keys[i], &message, k, hash_bits) {
                filter[position] = true;
            }
        }
    }

    for _ in 0..schema.xor_folds() {
        let half = filter.len() / 2;
        filter = (0..half).map(|i| filter[i] ^ filter[half + i]).collect();
    }
    let l = schema.l();
    let hardening = schema.hardening();
    if let Some(p) = hardening.blip {
        let key = keys::blip_key(secret);
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(&(l as u64).to_le_bytes());
        hasher.update(&to_bytes(&filter));
        let mut reader = hasher.finalize_xof();
        let threshold = (p * 4_294_967_296.0).round() as u64;
        for bit in filter.iter_mut() {
            let mut draw = [0u8; 4];
            reader.fill(&mut draw);
            if u64::from(u32::from_le_bytes(draw)) < threshold {
                *bit = !*bit;
            }
        }
    }
    if hardening.balance {
        let perm = keys::balance_permutation(secret, 2 * l);
        let doubled: Vec<bool> = filter.iter().copied().chain(filter.iter().map(|b| !b)).collect();
        filter = perm.iter().map(|&src| doubled[src as usize]).collect();
    }
    Ok(to_bytes(&filter))
}

/// Bits to bytes, most significant bit first, zero-padded.
fn to_bytes(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|chunk| chunk.iter().enumerate().fold(0u8, |byte, (i, &b)| byte | (u8::from(b) << (7 - i))))
        .collect()
}

fn token_bytes(encoding: TextEncoding, token: &str) -> Vec<u8> {
    match encoding {
        TextEncoding::Ascii | TextEncoding::Utf8 => token.as_bytes().to_vec(),
        TextEncoding::Utf16 => [0xFF, 0xFE]
            .into_iter()
            .chain(token.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
        TextEncoding::Utf32 => [0xFF, 0xFE, 0, 0]
            .into_iter()
            .chain(token.chars().flat_map(|c| (c as u32).to_le_bytes()))
            .collect(),
    }
}

fn tokens_of(comparison: &Comparison, value: &str) -> Result<Vec<String>, RejectReason> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    Ok(match comparison {
        Comparison::Exact => vec![value.to_owned()],
        Comparison::Ngram { n, positional } => {
            let pad = " ".repeat(n.saturating_sub(1));
            let chars: Vec<char> = format!("{pad}{value}{pad}").chars().collect();
            if chars.len() < *n {
                return Ok(Vec::new());
            }
            (0..=chars.len() - n)
                .map(|i| {
                    let gram: String = chars[i..i + n].iter().collect();
                    if *positional { format!("{} {gram}", i + 1) } else { gram }
                })
                .collect()
        }
        Comparison::Numeric { .. } => {
            let mut tokens = crate::tokenize::Tokens::new();
            crate::tokenize::tokenize(comparison, value, &mut tokens).map_err(|_| RejectReason::NotANumber)?;
            tokens.iter().map(str::to_owned).collect()
        }
    })
}

/// The `k` bit positions of one token (with its salt prefix) among `l` bits.
fn positions(hash: HashKind, keys: &keys::FeatureKeys, message: &[u8], k: usize, l: usize) -> Vec<usize> {
    match hash {
        HashKind::Blake2b => {
            let mut words = Vec::new();
            for j in 0..k.div_ceil(32) {
                let mut mac = Blake2bMac512::new_with_salt_and_personal(&keys.first, j.to_string().as_bytes(), &[])
                    .expect("valid key and salt");
                mac.update(message);
                let digest = mac.finalize().into_bytes();
                words.extend(digest.chunks(2).map(|p| u16::from_le_bytes([p[0], p[1]]) as usize));
            }
            words.into_iter().take(k).map(|w| w % l).collect()
        }
        HashKind::DoubleHash { prevent_singularity } => {
            let modulo = |bytes: &[u8]| bytes.iter().fold(0usize, |r, &b| (r * 256 + b as usize) % l);
            let hmac = |key: &[u8], data: &[u8], md5: bool| -> Vec<u8> {
                if md5 {
                    let mut m = <Hmac<Md5> as Mac>::new_from_slice(key).expect("any key");
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                } else {
                    let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key");
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
            };
            let h1 = modulo(&hmac(&keys.first, message, false));
            let mut h2 = modulo(&hmac(&keys.second, message, true));
            let mut i = 0u32;
            while prevent_singularity && h2 == 0 {
                let mut data = message.to_vec();
                data.extend(char::from_u32(i).unwrap_or('\u{FFFD}').to_string().as_bytes());
                h2 = modulo(&hmac(&keys.second, &data, true));
                i += 1;
            }
            (0..k).map(|j| (h1 + j * h2) % l).collect()
        }
        HashKind::Blake3 => {
            let mut hasher = blake3::Hasher::new_keyed(&keys.blake3_key());
            hasher.update(message);
            let mut reader = hasher.finalize_xof();
            let mut next = || {
                let mut b = [0u8; 4];
                reader.fill(&mut b);
                u64::from(u32::from_le_bytes(b))
            };
            let n = l as u64;
            // Lemire: accept x·n unless its low 32 bits fall below 2^32 mod n.
            let reject_below = (1u64 << 32) % n;
            (0..k)
                .map(|_| loop {
                    let m = next() * n;
                    if m & 0xFFFF_FFFF >= reject_below {
                        break (m >> 32) as usize;
                    }
                })
                .collect()
        }
    }
}
