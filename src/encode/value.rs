//! From a raw field value to the string that is tokenised: normalisation (if
//! the schema asks), missing-value handling, validation against the feature's
//! format and reformatting — clkhash's `FieldSpec.validate` and
//! `format_value`, in clkhash's order. Shared by the fast encoder and the
//! reference implementation.

use super::RejectReason;
use crate::normalize::Normalization;
use crate::schema::{Case, FeatureSpec, Format, OnInvalid, TextEncoding};
use crate::tokenize::parse_python_int;

/// Writes the value to tokenise for `raw` into `out`. `tmp` is scratch space.
///
/// `None` (a null or absent value) is read as the empty string, as clkhash
/// reads an empty CSV cell.
///
/// # Errors
/// The [`RejectReason`] of a value that fails validation (unless the feature's
/// `onInvalid` says otherwise); [`RejectReason::Missing`] when that value is empty.
pub(crate) fn prepare(
    spec: &FeatureSpec,
    raw: Option<&str>,
    out: &mut String,
    tmp: &mut String,
) -> Result<(), RejectReason> {
    let raw = raw.unwrap_or("");
    let value: &str = match &spec.normalize {
        Some(n) => {
            n.apply_into(raw, tmp);
            tmp
        }
        None => raw,
    };
    out.clear();
    if let Some(missing) = &spec.missing
        && value == missing.sentinel
    {
        // clkhash neither validates nor reformats a missing value or its replacement.
        out.push_str(missing.replacement());
        return Ok(());
    }
    match format_value(&spec.format, value, out) {
        Ok(()) => Ok(()),
        Err(reason) => {
            out.clear();
            match spec.on_invalid {
                OnInvalid::Reject if value.is_empty() => Err(RejectReason::Missing),
                OnInvalid::Reject => Err(reason),
                OnInvalid::Missing => {
                    if let Some(missing) = &spec.missing {
                        out.push_str(missing.replacement());
                    }
                    Ok(())
                }
                OnInvalid::Keep => {
                    out.push_str(value);
                    Ok(())
                }
            }
        }
    }
}

/// The value of an ignored feature used as a salt: trimmed and normalised
/// with every step, so that formatting differences between sites do not
/// change the salt.
pub(crate) fn salt_of_ignored(raw: Option<&str>, out: &mut String) {
    Normalization::default().apply_into(raw.unwrap_or(""), out);
}

/// Validates `value` against `format` and writes its formatted form to `out`.
fn format_value(format: &Format, value: &str, out: &mut String) -> Result<(), RejectReason> {
    match format {
        Format::String {
            encoding,
            case,
            min_length,
            max_length,
            pattern,
        } => {
            if *encoding == TextEncoding::Ascii && !value.is_ascii() {
                return Err(RejectReason::BadEncoding {
                    encoding: "ascii".to_owned(),
                });
            }
            if let Some(pattern) = pattern {
                if !pattern.is_full_match(value) {
                    return Err(RejectReason::PatternMismatch {
                        pattern: pattern.as_str().to_owned(),
                    });
                }
            } else {
                let len = value.chars().count();
                if let Some(min) = *min_length
                    && len < min
                {
                    return Err(RejectReason::TooShort { min, len });
                }
                if let Some(max) = *max_length
                    && len > max
                {
                    return Err(RejectReason::TooLong { max, len });
                }
                // Python: `s.upper() != s` (so strings without letters pass).
                let wrong = match case {
                    Case::Upper => !value.chars().flat_map(char::to_uppercase).eq(value.chars()),
                    Case::Lower => !value.chars().flat_map(char::to_lowercase).eq(value.chars()),
                    Case::Mixed => false,
                };
                if wrong {
                    return Err(RejectReason::WrongCase {
                        expected: if *case == Case::Upper {
                            "upper"
                        } else {
                            "lower"
                        }
                        .to_owned(),
                    });
                }
            }
            out.push_str(value);
        }
        Format::Integer { minimum, maximum } => {
            let v = parse_python_int(value).ok_or(RejectReason::NotAnInteger)?;
            if minimum.is_some_and(|m| v < i128::from(m))
                || maximum.is_some_and(|m| v > i128::from(m))
            {
                return Err(RejectReason::OutOfRange {
                    minimum: *minimum,
                    maximum: *maximum,
                });
            }
            use std::fmt::Write;
            let _ = write!(out, "{v}");
        }
        Format::Date { format, accepted } => {
            let date = std::iter::once(format)
                .chain(accepted)
                .find_map(|f| f.parse(value))
                .ok_or_else(|| RejectReason::BadDate {
                    expected_format: std::iter::once(format)
                        .chain(accepted)
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(" or "),
                })?;
            date.write_canonical(out);
        }
        Format::Enum { values } => {
            if !values.iter().any(|v| v == value) {
                return Err(RejectReason::NotInEnum);
            }
            out.push_str(value);
        }
    }
    Ok(())
}
