//! The project secret shared by all sites, and the one-way key check value
//! that lets the linkage unit verify that all sites used the same secret.
//!
//! A [`Secret`] never prints its bytes: `Debug` shows a placeholder, there is
//! no `Display`, and errors about it never include it.

use std::fmt;
use std::path::Path;

/// The shortest secret accepted by [`Secret::new`]: 16 bytes (128 bits).
pub const MIN_SECRET_LEN: usize = 16;

/// BLAKE3 `derive_key` context for the key check value. It differs from every
/// context used to derive hashing keys, so the check value reveals nothing about them.
const KEY_CHECK_CONTEXT: &str = "pprl 2026-11 key check value v1";

/// Errors about the secret. None of them contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret is empty")]
    Empty,
    #[error(
        "the secret is {len} bytes long; at least {MIN_SECRET_LEN} are required, \
         because a short secret can be guessed and every encoding reversed \
         (generate one with e.g. `openssl rand -base64 32 > project.key`)"
    )]
    TooShort { len: usize },
    #[error("cannot read the secret file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The project secret. Its bytes are zeroed when dropped.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps a secret, refusing empty ones and ones shorter than [`MIN_SECRET_LEN`].
    ///
    /// # Errors
    /// [`SecretError::Empty`] or [`SecretError::TooShort`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, SecretError> {
        let bytes = bytes.into();
        match bytes.len() {
            0 => Err(SecretError::Empty),
            len if len < MIN_SECRET_LEN => Err(SecretError::TooShort { len }),
            _ => Ok(Secret(bytes)),
        }
    }

    /// Wraps a secret of any length. Only for reproducing reference vectors
    /// made with short secrets; tools must use [`Secret::new`].
    pub fn new_unchecked(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// Reads a secret file. One trailing newline (`\n` or `\r\n`) is removed,
    /// because editors and `echo` add one; everything else is kept byte for byte.
    ///
    /// # Errors
    /// [`SecretError::Read`] when the file cannot be read, or the length checks of [`Secret::new`].
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let mut bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        Secret::new(bytes)
    }

    /// The secret bytes, for key derivation only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A one-way value derived from the secret (BLAKE3 `derive_key` with a
    /// context of its own), as 32 lowercase hex characters. Equal secrets give
    /// equal values; the value does not help to find the secret, which has at
    /// least 128 bits.
    pub fn key_check_value(&self) -> String {
        let key = blake3::derive_key(KEY_CHECK_CONTEXT, &self.0);
        key[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is freed.
        for b in self.0.iter_mut() {
            // black_box keeps the compiler from eliding writes to memory about to be freed.
            *b = std::hint::black_box(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_and_short_secrets() {
        assert!(matches!(Secret::new(""), Err(SecretError::Empty)));
        assert!(matches!(
            Secret::new("fifteen bytes!!"),
            Err(SecretError::TooShort { len: 15 })
        ));
        assert!(Secret::new("sixteen bytes!!!").is_ok());
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let secret = Secret::new("correct horse battery staple").unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains("horse"), "{shown}");
    }

    #[test]
    fn key_check_value_is_stable_and_distinguishes_secrets() {
        let a = Secret::new("correct horse battery staple").unwrap();
        let b = Secret::new("correct horse battery staplf").unwrap();
        assert_eq!(a.key_check_value(), a.clone().key_check_value());
        assert_ne!(a.key_check_value(), b.key_check_value());
        assert_eq!(a.key_check_value().len(), 32);
        assert!(!a.key_check_value().contains("horse"));
    }
}
