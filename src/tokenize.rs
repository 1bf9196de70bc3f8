//! Tokenising a validated, formatted value (n-grams, positional n-grams,
//! exact value, numeric neighbourhoods), exactly as clkhash 0.18's
//! comparators do, into a reusable [`Tokens`] buffer that the encoder hashes.
//!
//! Also holds the number parsing of Python's `int()` and `float()`, which
//! clkhash uses on integer features and numeric comparisons.

use std::fmt::Write as _;

use crate::schema::Comparison;

/// The tokens of one value, stored in one reusable string (no allocation per
/// token once the buffers have grown).
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    text: String,
    ends: Vec<usize>,
    // Scratch space for n-grams: the padded value and its char boundaries.
    padded: String,
    bounds: Vec<usize>,
}

/// A value that the comparison cannot tokenise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenizeError {
    /// A numeric comparison got a value that is not a (finite) number, or one
    /// too large to quantise.
    #[error("value is not a number")]
    NotANumber,
}

impl Tokens {
    /// An empty buffer.
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// Removes every token, keeping the allocations.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`-th token.
    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// The tokens in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    fn end_token(&mut self) {
        self.ends.push(self.text.len());
    }
}

/// Tokenises `value` with `comparison`, replacing the contents of `out`.
/// The empty value has no tokens, whatever the comparison.
///
/// # Errors
/// [`TokenizeError::NotANumber`] when a numeric comparison gets a non-number.
pub fn tokenize(
    comparison: &Comparison,
    value: &str,
    out: &mut Tokens,
) -> Result<(), TokenizeError> {
    out.clear();
    if value.is_empty() {
        return Ok(());
    }
    match *comparison {
        Comparison::Exact => {
            out.text.push_str(value);
            out.end_token();
        }
        Comparison::Ngram { n, positional } => ngrams(value, n, positional, out),
        Comparison::Numeric {
            resolution,
            fractional_precision,
            distance_interval,
            ..
        } => numeric(
            value,
            resolution,
            fractional_precision,
            distance_interval,
            out,
        )?,
    }
    Ok(())
}

/// clkhash's `NgramComparison.tokenize`: grams of Unicode code points; with
/// `n > 1`, `n - 1` spaces of padding on each side; positional grams are
/// `"<1-based position> <gram>"`.
fn ngrams(value: &str, n: usize, positional: bool, out: &mut Tokens) {
    let pad = n.saturating_sub(1);
    let padded = &mut out.padded;
    padded.clear();
    padded.extend(std::iter::repeat_n(' ', pad));
    padded.push_str(value);
    padded.extend(std::iter::repeat_n(' ', pad));
    out.bounds.clear();
    out.bounds.extend(padded.char_indices().map(|(i, _)| i));
    out.bounds.push(padded.len());
    let chars = out.bounds.len() - 1;
    if chars < n {
        return;
    }
    for i in 0..=(chars - n) {
        let gram = &out.padded[out.bounds[i]..out.bounds[i + n]];
        if positional {
            push_positional(&mut out.text, i, gram);
        } else {
            out.text.push_str(gram);
        }
        out.ends.push(out.text.len());
    }
}

/// A token of ASCII text that its bytes name: what [`ascii_grams`] yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AsciiGram {
    /// A positional unigram: the 0-based position and the byte.
    Positional(usize, u8),
    /// A bigram of the value padded with a space on each side.
    Bigram(u8, u8),
}

impl AsciiGram {
    /// The token's text, as [`tokenize`] writes it, written into `out`
    /// (cleared first).
    pub(crate) fn text(self, out: &mut String) -> &str {
        out.clear();
        match self {
            AsciiGram::Positional(index, byte) => {
                push_positional(out, index, char::from(byte).encode_utf8(&mut [0; 4]));
            }
            AsciiGram::Bigram(first, second) => {
                out.push(char::from(first));
                out.push(char::from(second));
            }
        }
        out
    }
}

/// The tokens [`tokenize`] makes of an ASCII `value` with positional
/// unigrams or bigrams, in order, named by their bytes so that they need
/// not be written out; `None` for other comparisons or other text.
pub(crate) fn ascii_grams(
    comparison: &Comparison,
    value: &str,
) -> Option<impl ExactSizeIterator<Item = AsciiGram>> {
    let bytes = value.as_bytes();
    let bigrams = match *comparison {
        _ if !value.is_ascii() => return None,
        Comparison::Ngram {
            n: 1,
            positional: true,
        } => false,
        Comparison::Ngram {
            n: 2,
            positional: false,
        } => true,
        _ => return None,
    };
    // An empty value has no tokens, not one of two spaces.
    let count = match bytes.len() {
        0 => 0,
        n => n + usize::from(bigrams),
    };
    Some((0..count).map(move |i| {
        if bigrams {
            let first = if i == 0 { b' ' } else { bytes[i - 1] };
            AsciiGram::Bigram(first, bytes.get(i).copied().unwrap_or(b' '))
        } else {
            AsciiGram::Positional(i, bytes[i])
        }
    }))
}

/// Appends the positional gram of `gram` at 0-based `index`: `"<index + 1> <gram>"`.
fn push_positional(out: &mut String, index: usize, gram: &str) {
    push_decimal(out, index + 1);
    out.push(' ');
    out.push_str(gram);
}

/// Appends `n` in decimal (what `write!` does, without its formatting machinery).
fn push_decimal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[start..] {
        out.push(d as char);
    }
}

/// clkhash's `NumericComparison.tokenize`: quantise the number to the grid of
/// multiples of `distance_interval` (after scaling by `2 × resolution` and
/// `10^fractional_precision`), then write the `2 × resolution + 1`
/// neighbours as decimal integers.
fn numeric(
    value: &str,
    resolution: u32,
    fractional_precision: u32,
    distance_interval: i128,
    out: &mut Tokens,
) -> Result<(), TokenizeError> {
    let scale = 10i128.pow(fractional_precision);
    let v: i128 = match parse_python_int(value) {
        Some(i) => i.checked_mul(scale).ok_or(TokenizeError::NotANumber)?,
        None => {
            let f = parse_python_float(value).ok_or(TokenizeError::NotANumber)?;
            let q = if fractional_precision > 0 {
                (f * 10f64.powi(fractional_precision as i32)).round_ties_even()
            } else {
                f.trunc()
            };
            if !q.is_finite() || q.abs() >= 1e36 {
                return Err(TokenizeError::NotANumber);
            }
            q as i128
        }
    };
    let res = i128::from(resolution);
    let mut v = v
        .checked_mul(2 * res)
        .filter(|v| v.abs() < i128::MAX / 4)
        .ok_or(TokenizeError::NotANumber)?;
    let residue = v.rem_euclid(distance_interval);
    if residue != 0 {
        if 2 * residue < distance_interval {
            v -= residue;
        } else {
            v += distance_interval - residue;
        }
    }
    for i in -res..=res {
        let _ = write!(out.text, "{}", v + i * distance_interval);
        out.end_token();
    }
    Ok(())
}

/// Python's `str.isspace()` (which `int()` and `float()` strip): Unicode
/// White_Space plus the ASCII separators `\x1c`..`\x1f`.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Removes underscores that sit between two ASCII digits (PEP 515); `None`
/// if an underscore is anywhere else.
fn strip_digit_underscores(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('_') {
        return Some(std::borrow::Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let ok = i > 0
                && bytes[i - 1].is_ascii_digit()
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !ok {
                return None;
            }
        } else {
            out.push(b as char);
        }
    }
    Some(std::borrow::Cow::Owned(out))
}

/// Python's `int(s, base=10)` for values that fit an `i128`: surrounding
/// whitespace, an optional sign, ASCII digits with single underscores between
/// them, leading zeros allowed. (Python also takes non-ASCII decimal digits
/// and integers of any size; those are refused here.)
pub fn parse_python_int(s: &str) -> Option<i128> {
    let s = s.trim_matches(is_python_space);
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let digits = strip_digit_underscores(digits)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude: i128 = digits.parse().ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Python's `float(s)`: surrounding whitespace, sign, decimal and exponent
/// forms, `inf`/`infinity`/`nan` in any case, underscores between digits.
pub fn parse_python_float(s: &str) -> Option<f64> {
    let s = s.trim_matches(is_python_space);
    if s.is_empty() {
        return None;
    }
    let s = strip_digit_underscores(s)?;
    // Rust's parser is Python's grammar here, except that it is stricter
    // about nothing Python accepts; reject the few forms Rust alone takes.
    if s.contains(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))) {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(c: &Comparison, v: &str) -> Vec<String> {
        let mut t = Tokens::new();
        tokenize(c, v, &mut t).unwrap();
        t.iter().map(str::to_owned).collect()
    }

    proptest::proptest! {
        /// The grams named by their bytes are `tokenize`'s tokens, for ASCII
        /// text; other text and other comparisons have none.
        #[test]
        fn ascii_grams_are_the_tokens(
            value in "[a-z0-9 é]{0,12}",
            n in 0usize..4,
            positional in proptest::bool::ANY,
        ) {
            let comparison = Comparison::Ngram { n, positional };
            match ascii_grams(&comparison, &value) {
                Some(grams) => {
                    proptest::prop_assert!(value.is_ascii());
                    proptest::prop_assert!((n, positional) == (1, true) || (n, positional) == (2, false));
                    let written: Vec<String> = grams
                        .map(|g| g.text(&mut String::new()).to_owned())
                        .collect();
                    proptest::prop_assert_eq!(written, tokens(&comparison, &value));
                }
                None => proptest::prop_assert!(
                    !value.is_ascii() || !((n, positional) == (1, true) || (n, positional) == (2, false))
                ),
            }
        }
    }

    #[test]
    fn ngrams_are_padded_like_clkhash() {
        let bigrams = Comparison::Ngram {
            n: 2,
            positional: false,
        };
        assert_eq!(
            tokens(&bigrams, "clkhash"),
            [" c", "cl", "lk", "kh", "ha", "as", "sh", "h "]
        );
        let positional = Comparison::Ngram {
            n: 2,
            positional: true,
        };
        assert_eq!(tokens(&positional, "ab"), ["1  a", "2 ab", "3 b "]);
        let unigrams = Comparison::Ngram {
            n: 1,
            positional: true,
        };
        assert_eq!(tokens(&unigrams, "0423"), ["1 0", "2 4", "3 2", "4 3"]);
        let trigrams = Comparison::Ngram {
            n: 3,
            positional: false,
        };
        assert_eq!(tokens(&trigrams, "é"), ["  é", " é ", "é  "]);
        assert!(tokens(&bigrams, "").is_empty());
        let zero = Comparison::Ngram {
            n: 0,
            positional: true,
        };
        assert_eq!(tokens(&zero, "ab"), ["1 ", "2 ", "3 "]);
        let long: String = "x".repeat(120);
        let grams = tokens(&unigrams, &long);
        assert_eq!((grams[9].as_str(), grams[99].as_str()), ("10 x", "100 x"));
    }

    #[test]
    fn exact_is_one_token_unless_empty() {
        assert_eq!(tokens(&Comparison::Exact, " a b "), [" a b "]);
        assert!(tokens(&Comparison::Exact, "").is_empty());
    }

    fn numeric(td: f64, res: u32, fp: u32) -> Comparison {
        Comparison::Numeric {
            threshold_distance: td,
            resolution: res,
            fractional_precision: fp,
            distance_interval: (td * 10f64.powi(fp as i32)).round_ties_even() as i128,
        }
    }

    #[test]
    fn numeric_neighbourhoods_follow_the_clkhash_docstring() {
        // threshold 8, resolution 2: x = 25 gives [88, 96, 104, 112, 120].
        assert_eq!(
            tokens(&numeric(8.0, 2, 0), "25"),
            ["88", "96", "104", "112", "120"]
        );
        // Floats are truncated without fractional precision, rounded with it.
        assert_eq!(
            tokens(&numeric(8.0, 2, 0), "25.9"),
            tokens(&numeric(8.0, 2, 0), "25")
        );
        assert_eq!(tokens(&numeric(1.0, 1, 1), "-0.25"), ["-10", "0", "10"]);
        // Python's floor modulo for negatives.
        assert_eq!(tokens(&numeric(5.0, 1, 0), "-7"), ["-20", "-15", "-10"]);
        let mut t = Tokens::new();
        assert_eq!(
            tokenize(&numeric(5.0, 1, 0), "abc", &mut t),
            Err(TokenizeError::NotANumber)
        );
        assert_eq!(
            tokenize(&numeric(5.0, 1, 0), "inf", &mut t),
            Err(TokenizeError::NotANumber)
        );
    }

    #[test]
    fn python_int_and_float_grammar() {
        assert_eq!(parse_python_int(" +0042 "), Some(42));
        assert_eq!(parse_python_int("-1_000"), Some(-1000));
        assert_eq!(parse_python_int("1__0"), None);
        assert_eq!(parse_python_int("_1"), None);
        assert_eq!(parse_python_int("1.0"), None);
        assert_eq!(parse_python_int(""), None);
        assert_eq!(parse_python_int("-"), None);
        assert_eq!(parse_python_int("\u{1f}7\u{a0}"), Some(7));
        assert_eq!(parse_python_float(" 1.5e1 "), Some(15.0));
        assert_eq!(parse_python_float("-.5"), Some(-0.5));
        assert_eq!(parse_python_float("1_0.2_5"), Some(10.25));
        assert!(parse_python_float("Infinity").unwrap().is_infinite());
        assert_eq!(parse_python_float("1,5"), None);
        assert_eq!(parse_python_float("0x10"), None);
    }
}
