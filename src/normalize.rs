//! Normalisation of field values before validation and tokenising.
//!
//! Two independent tools live here:
//!
//! * [`Normalization`]: the optional per-feature clean-up of pprl's native
//!   schemas (accents, case, whitespace, punctuation), so that `Dupont`,
//!   `DUPONT` and `Dupönt` all become `dupont` and `d'Hondt`, `D'HONDT` and
//!   `d’Hondt` all become `dhondt`. clkhash schemas do not normalise; a feature
//!   is only normalised when its schema says `"normalize"`.
//! * [`DateFormat`]: a `strptime` pattern compiled the way CPython's `_strptime`
//!   compiles it, so that clkhash `date` features accept and refuse exactly
//!   the values clkhash accepts and refuses, and native schemas can accept
//!   several input formats. Dates are handed on in the canonical form
//!   `YYYYMMDD` (clkhash's `DateSpec.OUTPUT_FORMAT`).
//!
//! Both hand the encoder a canonical string, which is then validated against
//! the feature's format and tokenised.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The clean-up steps applied to one feature's values, in this order:
///
/// 1. `removePunctuation` (first half): apostrophes (`'`, `’`, `‘`, `ʼ`, `` ` ``, `´`)
///    are removed, so `d'Hondt` and `O’Brien` become `dHondt` and `OBrien`;
/// 2. `foldAccents`: Unicode NFKD, then combining marks are removed
///    (`Dupönt` → `Dupont`, the ligature `ﬁ` → `fi`);
/// 3. `caseFold`: lower case, with `ß` → `ss` (`Straße` = `STRASSE`);
/// 4. `removePunctuation` (second half): every other character that is not a
///    letter, a digit or whitespace becomes a space. So hyphens and slashes
///    separate words: `Jean-Pierre` → `jean pierre`, the same as `Jean Pierre`,
///    because a space and a hyphen are the most frequent variants of a double
///    name, and a space keeps the word boundary in the n-grams;
/// 5. `collapseWhitespace`: runs of whitespace become one space, and leading
///    and trailing whitespace is removed.
///
/// In a schema, `"normalize": {}` turns every step on; each key turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalization {
    /// Unicode NFKD and removal of combining marks (accents).
    pub fold_accents: bool,
    /// Lower case (full Unicode), `ß` → `ss`.
    pub case_fold: bool,
    /// Collapse runs of whitespace into one space; trim both ends.
    pub collapse_whitespace: bool,
    /// Remove apostrophes; turn other punctuation and symbols into spaces.
    pub remove_punctuation: bool,
}

impl Default for Normalization {
    /// Every step on.
    fn default() -> Self {
        Normalization {
            fold_accents: true,
            case_fold: true,
            collapse_whitespace: true,
            remove_punctuation: true,
        }
    }
}

/// Apostrophe-like characters, removed (not turned into spaces) by `removePunctuation`.
fn is_apostrophe(c: char) -> bool {
    matches!(
        c,
        '\'' | '\u{2019}' | '\u{2018}' | '\u{02BC}' | '\u{0060}' | '\u{00B4}' | '\u{2032}'
    )
}

impl Normalization {
    /// Normalises `value` into `out` (cleared first). Allocation-free once
    /// `out` has grown to the size of the values it sees.
    pub fn apply_into(&self, value: &str, out: &mut String) {
        out.clear();
        // Letters and digits of ASCII only (register numbers, postcodes,
        // most names), perhaps as words between single spaces (addresses,
        // names with particles): no step changes them but lower-casing.
        let bytes = value.as_bytes();
        if bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b' ')
            && !(self.collapse_whitespace
                && (bytes.first() == Some(&b' ')
                    || bytes.last() == Some(&b' ')
                    || bytes.windows(2).any(|w| w == b"  ")))
        {
            out.push_str(value);
            if self.case_fold {
                out.make_ascii_lowercase();
            }
            return;
        }
        let mut sink = Sink {
            out,
            collapse: self.collapse_whitespace,
            pending_space: false,
        };
        // Fast path: pure ASCII needs no Unicode decomposition.
        if value.is_ascii() || !self.fold_accents {
            for c in value.chars() {
                self.push_folded(c, &mut sink);
            }
        } else {
            let kept = value
                .chars()
                .filter(|&c| !(self.remove_punctuation && is_apostrophe(c)));
            for c in kept.nfkd().filter(|&c| !is_combining_mark(c)) {
                self.push_folded(c, &mut sink);
            }
        }
    }

    /// Normalises `value` into a new string.
    pub fn apply(&self, value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        self.apply_into(value, &mut out);
        out
    }

    /// Steps 1, 3 and 4 for one character (step 2 is done by the caller,
    /// step 5 by the sink).
    fn push_folded(&self, c: char, out: &mut Sink<'_>) {
        if self.remove_punctuation {
            if is_apostrophe(c) {
                return;
            }
            if !(c.is_alphanumeric() || c.is_whitespace()) {
                out.push(' ');
                return;
            }
        }
        if self.case_fold {
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else if c == 'ß' || c == 'ẞ' {
                out.push('s');
                out.push('s');
            } else {
                for lower in c.to_lowercase() {
                    out.push(lower);
                }
            }
        } else {
            out.push(c);
        }
    }
}

/// Where normalised characters go: step 5 (collapse whitespace) on the fly,
/// so no second pass and no second buffer. Lower-casing never yields
/// whitespace, so collapsing the characters as they come equals collapsing
/// the finished string.
struct Sink<'a> {
    out: &'a mut String,
    collapse: bool,
    /// A whitespace run since the last character pushed (after the first).
    pending_space: bool,
}

impl Sink<'_> {
    #[inline]
    fn push(&mut self, c: char) {
        if self.collapse {
            if c.is_whitespace() {
                // Leading whitespace is dropped; trailing never written.
                self.pending_space = !self.out.is_empty();
                return;
            }
            if self.pending_space {
                self.out.push(' ');
                self.pending_space = false;
            }
        }
        self.out.push(c);
    }
}

/// One `strptime` directive of a [`DateFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Year4,
    Year2,
    Month,
    MonthAbbr,
    MonthName,
    Day,
    DayOfYear,
    Hour24,
    Hour12,
    Minute,
    Second,
    Micro,
    AmPm,
    WeekdayAbbr,
    WeekdayName,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl Directive {
    fn from_char(c: char) -> Option<Directive> {
        Some(match c {
            'Y' => Directive::Year4,
            'y' => Directive::Year2,
            'm' => Directive::Month,
            'b' | 'h' => Directive::MonthAbbr,
            'B' => Directive::MonthName,
            'd' => Directive::Day,
            'j' => Directive::DayOfYear,
            'H' => Directive::Hour24,
            'I' => Directive::Hour12,
            'M' => Directive::Minute,
            'S' => Directive::Second,
            'f' => Directive::Micro,
            'p' => Directive::AmPm,
            'a' => Directive::WeekdayAbbr,
            'A' => Directive::WeekdayName,
            _ => return None,
        })
    }

    /// The sub-pattern CPython's `_strptime.TimeRE` uses (with ASCII digits).
    /// Alternatives are in CPython's order, which decides what a leftmost-first
    /// match takes.
    fn pattern(self) -> &'static str {
        match self {
            Directive::Year4 => "([0-9][0-9][0-9][0-9])",
            Directive::Year2 => "([0-9][0-9])",
            Directive::Month => "(1[0-2]|0[1-9]|[1-9])",
            Directive::MonthAbbr => "(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
            Directive::MonthName => {
                "(september|february|november|december|january|october|august|march|april|june|july|may)"
            }
            Directive::Day => "(3[0-1]|[1-2][0-9]|0[1-9]|[1-9]| [1-9])",
            Directive::DayOfYear => {
                "(36[0-6]|3[0-5][0-9]|[1-2][0-9][0-9]|0[1-9][0-9]|00[1-9]|[1-9][0-9]|0[1-9]|[1-9])"
            }
            Directive::Hour24 => "(2[0-3]|[0-1][0-9]|[0-9])",
            Directive::Hour12 => "(1[0-2]|0[1-9]|[1-9])",
            Directive::Minute => "([0-5][0-9]|[0-9])",
            Directive::Second => "(6[0-1]|[0-5][0-9]|[0-9])",
            Directive::Micro => "([0-9]{1,6})",
            Directive::AmPm => "(am|pm)",
            Directive::WeekdayAbbr => "(mon|tue|wed|thu|fri|sat|sun)",
            Directive::WeekdayName => "(wednesday|thursday|saturday|tuesday|monday|friday|sunday)",
        }
    }
}

/// A `strptime` format that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateFormatError {
    /// `%x` where `x` is not a supported directive.
    #[error(
        "'%{0}' is not a supported strptime directive (supported: %Y %y %m %b %B %d %j %H %I %M %S %f %p %a %A %%)"
    )]
    BadDirective(char),
    /// The format ends with a lone `%`.
    #[error("the format ends with a lone '%'")]
    TrailingPercent,
    /// The format has no year, month and day (or year and day of year).
    #[error("the format must contain a year (%Y or %y)")]
    NoYear,
}

/// A compiled `strptime` date format. It accepts and refuses values exactly
/// like CPython's `datetime.strptime` (C locale, ASCII digits): the format
/// becomes a case-insensitive regular expression with CPython's sub-patterns,
/// the value must match it from its first character, and the match must
/// consume the whole value; then the date must exist (no 30 February).
#[derive(Clone)]
pub struct DateFormat {
    format: String,
    regex: regex::Regex,
    directives: Vec<Directive>,
    /// The same pattern for [`NumericMatcher`], when the format has only
    /// numeric year, month and day directives and ASCII punctuation.
    numeric: Option<NumericMatcher>,
}

impl fmt::Debug for DateFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DateFormat").field(&self.format).finish()
    }
}

impl PartialEq for DateFormat {
    fn eq(&self, other: &Self) -> bool {
        self.format == other.format
    }
}

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Writes the date as `%Y%m%d`, the way clkhash does on Linux: the year is
    /// not zero-padded (glibc's `%Y`), month and day are.
    pub fn write_canonical(&self, out: &mut String) {
        // Digit by digit: `write!` goes through the formatting machinery,
        // which took a fifth as long as parsing the date. A parsed year is
        // 1..=9999.
        let digit = |n: u32| char::from(b'0' + (n % 10) as u8);
        let year = self.year.unsigned_abs();
        let mut started = false;
        for power in [1000, 100, 10] {
            started |= year >= power;
            if started {
                out.push(digit(year / power));
            }
        }
        out.push(digit(year));
        for two in [self.month, self.day] {
            out.push(digit(two / 10));
            out.push(digit(two));
        }
    }
}

impl DateFormat {
    /// Compiles a `strptime` format.
    ///
    /// # Errors
    /// [`DateFormatError`] for an unsupported directive, a trailing `%`, or a
    /// format without a year.
    pub fn new(format: &str) -> Result<DateFormat, DateFormatError> {
        let mut pattern = String::from("(?i)\\A");
        let mut directives = Vec::new();
        let mut pieces = Some(Vec::new());
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '%' {
                let d = chars.next().ok_or(DateFormatError::TrailingPercent)?;
                if d == '%' {
                    pattern.push('%');
                    NumericMatcher::push_literal(&mut pieces, '%');
                    continue;
                }
                let directive = Directive::from_char(d).ok_or(DateFormatError::BadDirective(d))?;
                pattern.push_str(directive.pattern());
                directives.push(directive);
                NumericMatcher::push_directive(&mut pieces, directive);
            } else if c.is_whitespace() {
                pieces = None;
                // CPython turns every whitespace run of the format into `\s+`.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                pattern.push_str("\\s+");
            } else {
                pattern.push_str(&regex::escape(&c.to_string()));
                NumericMatcher::push_literal(&mut pieces, c);
            }
        }
        if !directives
            .iter()
            .any(|d| matches!(d, Directive::Year4 | Directive::Year2))
        {
            return Err(DateFormatError::NoYear);
        }
        let regex = regex::Regex::new(&pattern).expect("date format patterns are valid regexes");
        Ok(DateFormat {
            format: format.to_owned(),
            regex,
            directives,
            numeric: pieces.map(|pieces| NumericMatcher { pieces }),
        })
    }

    /// The format string as written in the schema.
    pub fn as_str(&self) -> &str {
        &self.format
    }

    /// Parses `value`, or `None` when `datetime.strptime` would raise.
    pub fn parse(&self, value: &str) -> Option<Date> {
        match &self.numeric {
            Some(matcher) => {
                let mut spans = [(0, 0); MAX_NUMERIC_DIRECTIVES];
                let end = matcher.find(value.as_bytes(), &mut spans)?;
                // CPython: "unconverted data remains" unless the match ends the value.
                if end != value.len() {
                    return None;
                }
                self.date(|i| value.get(spans[i].0..spans[i].1))
            }
            None => self.parse_with_regex(value),
        }
    }

    /// [`DateFormat::parse`] by the regular expression alone (any format).
    fn parse_with_regex(&self, value: &str) -> Option<Date> {
        let caps = self.regex.captures(value)?;
        if caps.get(0)?.end() != value.len() {
            return None;
        }
        self.date(|i| caps.get(i + 1).map(|m| m.as_str()))
    }

    /// The date that the texts matched by the directives give (`text(i)`
    /// for directive `i`), if it exists.
    fn date<'v>(&self, text: impl Fn(usize) -> Option<&'v str>) -> Option<Date> {
        let mut year: i32 = 1900;
        let mut month: u32 = 1;
        let mut day: u32 = 1;
        let mut day_of_year: Option<u32> = None;
        for (i, directive) in self.directives.iter().enumerate() {
            let text = text(i)?;
            match directive {
                Directive::Year4 => year = text.parse().ok()?,
                Directive::Year2 => {
                    let y: i32 = text.parse().ok()?;
                    year = if y <= 68 { 2000 + y } else { 1900 + y };
                }
                Directive::Month => month = text.parse().ok()?,
                Directive::MonthAbbr => {
                    let lower = text.to_ascii_lowercase();
                    month = MONTHS.iter().position(|m| m[..3] == lower)? as u32 + 1;
                }
                Directive::MonthName => {
                    let lower = text.to_ascii_lowercase();
                    month = MONTHS.iter().position(|m| *m == lower)? as u32 + 1;
                }
                Directive::Day => day = text.trim_start().parse().ok()?,
                Directive::DayOfYear => day_of_year = Some(text.parse().ok()?),
                _ => {}
            }
        }
        let date = match day_of_year {
            None => chrono::NaiveDate::from_ymd_opt(year, month, day)?,
            Some(j) => chrono::NaiveDate::from_ymd_opt(year, 1, 1)?
                .checked_add_days(chrono::Days::new(u64::from(j) - 1))?,
        };
        use chrono::Datelike;
        if !(1..=9999).contains(&date.year()) {
            return None;
        }
        Some(Date {
            year: date.year(),
            month: date.month(),
            day: date.day(),
        })
    }
}

/// Directives a [`NumericMatcher`] takes at most (a date has three).
const MAX_NUMERIC_DIRECTIVES: usize = 4;

/// One element of a numeric date pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(u8),
    /// A directive's alternatives, in its pattern's order, each a sequence
    /// of byte ranges (see [`byte_alternatives`]).
    Directive(Vec<Vec<(u8, u8)>>),
}

/// The regular expression of a format made of `%Y`, `%y`, `%m`, `%d` and
/// ASCII punctuation, matched byte by byte: each directive tries its
/// alternatives in the pattern's order and the match backtracks as the
/// regular expression's leftmost-first search does, so both find the same
/// match (property-tested). A date the value memo has not seen was parsed by
/// the regular expression's bounded backtracker: with the default schema,
/// this matcher takes 5% off the CPU of encoding 100,000 new people, and
/// about as much off a cold run on Febrl4's 5000.
#[derive(Debug, Clone)]
struct NumericMatcher {
    pieces: Vec<Piece>,
}

impl NumericMatcher {
    /// Adds a directive to a pattern under construction, or gives up on it
    /// (`None`) for a directive that is not numeric or one too many.
    fn push_directive(pieces: &mut Option<Vec<Piece>>, directive: Directive) {
        let numeric = matches!(
            directive,
            Directive::Year4 | Directive::Year2 | Directive::Month | Directive::Day
        );
        if let Some(list) = pieces {
            let count = list
                .iter()
                .filter(|p| matches!(p, Piece::Directive(_)))
                .count();
            if numeric && count < MAX_NUMERIC_DIRECTIVES {
                list.push(Piece::Directive(byte_alternatives(directive.pattern())));
                return;
            }
        }
        *pieces = None;
    }

    /// Adds a literal character, or gives up on the pattern for one that is
    /// not ASCII punctuation (letters would need case folding).
    fn push_literal(pieces: &mut Option<Vec<Piece>>, c: char) {
        match pieces {
            Some(list) if c.is_ascii_punctuation() => list.push(Piece::Literal(c as u8)),
            _ => *pieces = None,
        }
    }

    /// Where the pattern's first match at the start of `value` ends, with
    /// the span of each directive's text in `spans`; `None` without a match.
    fn find(
        &self,
        value: &[u8],
        spans: &mut [(usize, usize); MAX_NUMERIC_DIRECTIVES],
    ) -> Option<usize> {
        self.find_from(0, 0, 0, value, spans)
    }

    fn find_from(
        &self,
        piece: usize,
        directive: usize,
        at: usize,
        value: &[u8],
        spans: &mut [(usize, usize); MAX_NUMERIC_DIRECTIVES],
    ) -> Option<usize> {
        let Some(next) = self.pieces.get(piece) else {
            return Some(at);
        };
        let rest = &value[at..];
        match next {
            Piece::Literal(b) => (rest.first() == Some(b))
                .then(|| self.find_from(piece + 1, directive, at + 1, value, spans))
                .flatten(),
            Piece::Directive(alternatives) => alternatives.iter().find_map(|ranges| {
                let len = ranges.len();
                let fits = rest.len() >= len
                    && ranges
                        .iter()
                        .zip(rest)
                        .all(|(&(lo, hi), b)| (lo..=hi).contains(b));
                if !fits {
                    return None;
                }
                spans[directive] = (at, at + len);
                self.find_from(piece + 1, directive + 1, at + len, value, spans)
            }),
        }
    }
}

/// The alternatives of a numeric directive's pattern, as
/// [`Directive::pattern`] writes it (`(1[0-2]|0[1-9]|[1-9])`): each a
/// sequence of byte ranges, one per character it matches. Read from the
/// pattern itself, so that the byte matcher and the regular expression
/// share one definition.
fn byte_alternatives(pattern: &str) -> Vec<Vec<(u8, u8)>> {
    let group = pattern
        .strip_prefix('(')
        .and_then(|p| p.strip_suffix(')'))
        .expect("a directive's pattern is one group");
    group
        .split('|')
        .map(|alternative| {
            let mut bytes = alternative.bytes();
            let mut ranges = Vec::new();
            while let Some(b) = bytes.next() {
                ranges.push(match b {
                    b'[' => match (bytes.next(), bytes.next(), bytes.next(), bytes.next()) {
                        (Some(lo), Some(b'-'), Some(hi), Some(b']')) => (lo, hi),
                        _ => unreachable!("only ranges such as [0-9] in {pattern}"),
                    },
                    literal => (literal, literal),
                });
            }
            ranges
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The normalisation as first written: fold every character, then
    /// collapse whitespace on the finished string.
    fn two_pass(n: &Normalization, value: &str) -> String {
        let mut folded = String::new();
        let mut sink = Sink {
            out: &mut folded,
            collapse: false,
            pending_space: false,
        };
        if value.is_ascii() || !n.fold_accents {
            value.chars().for_each(|c| n.push_folded(c, &mut sink));
        } else {
            let kept = value
                .chars()
                .filter(|&c| !(n.remove_punctuation && is_apostrophe(c)));
            for c in kept.nfkd().filter(|&c| !is_combining_mark(c)) {
                n.push_folded(c, &mut sink);
            }
        }
        if n.collapse_whitespace {
            folded.split_whitespace().collect::<Vec<_>>().join(" ")
        } else {
            folded
        }
    }

    proptest::proptest! {
        #[test]
        fn collapsing_on_the_fly_equals_collapsing_after(
            value in proptest::prop_oneof![
                "[a-zA-Z0-9]{0,16}",
                "[a-zA-Z0-9 ]{0,16}",
                "[a-zA-Z0-9 \t\u{a0}\u{3000}\u{2028}'’.,ßéÉ\u{301}-]{0,16}",
            ],
            steps in proptest::array::uniform4(proptest::bool::ANY),
        ) {
            let n = Normalization {
                fold_accents: steps[0],
                case_fold: steps[1],
                collapse_whitespace: steps[2],
                remove_punctuation: steps[3],
            };
            proptest::prop_assert_eq!(n.apply(&value), two_pass(&n, &value));
        }

        /// The byte matcher of numeric formats finds what the regular
        /// expression finds (the same end and the same text for each
        /// directive, or no match), so dates parse the same either way.
        #[test]
        fn numeric_formats_match_as_the_regex_does(
            parts in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["%Y", "%y", "%m", "%d"]),
                    proptest::sample::select(vec!["", "", "/", "-", ".", "%%"]),
                ),
                1..4,
            ),
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    "[0-9]{0,10}",
                    "[0-9 /.%-]{0,12}",
                    "[0-9]{1,2}[/.-][0-9]{1,2}[/.-][0-9]{2,4}",
                    "[0-9]{4}[/.-]?[0-9 ]{1,2}[/.-]?[0-9 ]{1,2}x?",
                    // Months and days of one or two digits run together
                    // ("2000110": month 11 leaves day "0", so the month is 1).
                    "[0-9]{2,4}[0-3 ][0-9]{0,3}",
                ],
                16,
            ),
        ) {
            let mut format = String::from("%Y");
            for (directive, separator) in &parts {
                format.push_str(separator);
                format.push_str(directive);
            }
            let f = DateFormat::new(&format).unwrap();
            let matcher = f.numeric.as_ref().expect("a numeric format");
            for value in &values {
                let mut spans = [(0, 0); MAX_NUMERIC_DIRECTIVES];
                let found = matcher.find(value.as_bytes(), &mut spans).map(|end| {
                    (end, spans[..f.directives.len()].to_vec())
                });
                let expected = f.regex.captures(value).map(|caps| {
                    let span = |m: regex::Match<'_>| (m.start(), m.end());
                    let groups = (1..caps.len()).map(|i| span(caps.get(i).unwrap())).collect();
                    (caps.get(0).unwrap().end(), groups)
                });
                proptest::prop_assert_eq!(&found, &expected, "{:?} on {:?}", format, value);
                proptest::prop_assert_eq!(f.parse(value), f.parse_with_regex(value));
            }
        }
    }

    /// What CPython's `datetime.strptime` gives for digits run together.
    #[test]
    fn run_together_digits_parse_as_cpython_does() {
        let cases = [
            ("2000110", "%Y%m%d", Some((2000, 1, 10))),
            ("1999130", "%Y%m%d", Some((1999, 1, 30))),
            ("20001 5", "%Y%m%d", Some((2000, 1, 5))),
            ("3/1/99", "%d/%m/%y", Some((1999, 1, 3))),
            ("19990230", "%Y%m%d", None),
            ("1999052", "%Y%m%d%%", None),
        ];
        for (value, format, expected) in cases {
            let f = DateFormat::new(format).unwrap();
            let date = f.parse(value).map(|d| (d.year, d.month, d.day));
            assert_eq!(date, expected, "{value} as {format}");
            assert_eq!(
                f.parse_with_regex(value),
                f.parse(value),
                "{value} as {format}"
            );
        }
    }

    #[test]
    fn canonical_dates_are_written_as_glibc_strftime_writes_them() {
        // Every year a date can have; months and days on both sides of 10.
        for year in 1..=9999 {
            for (month, day) in [(1, 9), (10, 31), (12, 1)] {
                let mut got = String::from("x");
                Date { year, month, day }.write_canonical(&mut got);
                assert_eq!(got, format!("x{year}{month:02}{day:02}"));
            }
        }
    }

    #[test]
    fn only_numeric_formats_take_the_byte_matcher() {
        for numeric in ["%Y%m%d", "%d/%m/%Y", "%Y-%m-%d", "%d.%m.%y", "%Y%%%m"] {
            assert!(
                DateFormat::new(numeric).unwrap().numeric.is_some(),
                "{numeric}"
            );
        }
        for other in [
            "%d %m %Y",
            "%Y%b%d",
            "%Yx%m",
            "%Y%m%d%H",
            "%Y%m%d%m%d",
            "%Y·%m",
        ] {
            assert!(DateFormat::new(other).unwrap().numeric.is_none(), "{other}");
        }
    }

    #[test]
    fn default_normalization_folds_case_and_accents() {
        let n = Normalization::default();
        for v in [
            "Dupont",
            "DUPONT",
            "Dupönt",
            "  dupont ",
            "DUPÔNT",
            "Dupont\u{0308}",
        ] {
            assert_eq!(n.apply(v), "dupont", "{v:?}");
        }
    }

    #[test]
    fn default_normalization_removes_apostrophes() {
        let n = Normalization::default();
        for v in [
            "d'Hondt",
            "D'HONDT",
            "d’Hondt",
            "d‘Hondt",
            "dʼHondt",
            "D´Hondt",
            "dHondt",
        ] {
            assert_eq!(n.apply(v), "dhondt", "{v:?}");
        }
    }

    #[test]
    fn hyphens_and_other_punctuation_separate_words() {
        let n = Normalization::default();
        assert_eq!(n.apply("Jean-Pierre"), "jean pierre");
        assert_eq!(n.apply("Jean  Pierre"), "jean pierre");
        assert_eq!(n.apply("St. Kilda,  VIC"), "st kilda vic");
        assert_eq!(n.apply("Straße"), "strasse");
        assert_eq!(n.apply("ﬁeld"), "field");
        assert_eq!(n.apply("\t O'Brien -- Smith \n"), "obrien smith");
        assert_eq!(n.apply(""), "");
        assert_eq!(n.apply(" - "), "");
    }

    #[test]
    fn each_step_can_be_turned_off() {
        let keep_case = Normalization {
            case_fold: false,
            ..Normalization::default()
        };
        assert_eq!(keep_case.apply("Dupönt"), "Dupont");
        let keep_accents = Normalization {
            fold_accents: false,
            ..Normalization::default()
        };
        assert_eq!(keep_accents.apply("Dupönt"), "dupönt");
        let keep_punct = Normalization {
            remove_punctuation: false,
            ..Normalization::default()
        };
        assert_eq!(keep_punct.apply("d'Hondt-X"), "d'hondt-x");
        let keep_space = Normalization {
            collapse_whitespace: false,
            ..Normalization::default()
        };
        assert_eq!(keep_space.apply(" a  b "), " a  b ");
    }

    #[test]
    fn strptime_accepts_what_cpython_accepts() {
        let f = DateFormat::new("%d/%m/%Y").unwrap();
        let d = f.parse("01/02/1999").unwrap();
        assert_eq!((d.year, d.month, d.day), (1999, 2, 1));
        assert_eq!(f.parse("1/2/1999"), f.parse("01/02/1999"));
        assert_eq!(f.parse(" 1/2/1999").map(|d| d.day), Some(1));
        assert!(f.parse("30/02/1999").is_none());
        assert!(f.parse("29/02/2000").is_some());
        assert!(f.parse("29/02/1900").is_none());
        assert!(f.parse("01/02/1999 ").is_none());
        assert!(f.parse("01-02-1999").is_none());
        assert!(f.parse("").is_none());
        let compact = DateFormat::new("%Y%m%d").unwrap();
        assert_eq!(compact.parse("19561231").map(|d| d.month), Some(12));
        // CPython takes "11" for the month, then "1" for the day.
        assert_eq!(
            compact.parse("1999111").map(|d| (d.month, d.day)),
            Some((11, 1))
        );
        assert!(compact.parse("19991301").is_none());
        let named = DateFormat::new("%d %B %Y").unwrap();
        assert_eq!(named.parse("3   MARCH 2001").map(|d| d.month), Some(3));
        let short = DateFormat::new("%y-%j").unwrap();
        assert_eq!(
            short.parse("69-032").map(|d| (d.year, d.month, d.day)),
            Some((1969, 2, 1))
        );
        assert_eq!(short.parse("68-001").map(|d| d.year), Some(2068));
    }

    #[test]
    fn strptime_refuses_bad_formats() {
        assert_eq!(
            DateFormat::new("%Y-%q").unwrap_err(),
            DateFormatError::BadDirective('q')
        );
        assert_eq!(
            DateFormat::new("%Y%").unwrap_err(),
            DateFormatError::TrailingPercent
        );
        assert_eq!(
            DateFormat::new("%d.%m").unwrap_err(),
            DateFormatError::NoYear
        );
    }

    #[test]
    fn canonical_dates_follow_glibc() {
        let mut s = String::new();
        Date {
            year: 999,
            month: 1,
            day: 2,
        }
        .write_canonical(&mut s);
        assert_eq!(s, "9990102");
    }
}
