//! The `pprl` command: a thin layer over the `pprl` library.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`pprl ... | head`) is not a failure.
            if err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text
/// the message already holds (library errors name their cause in their own
/// text, e.g. "{path}: {source}", and keep it as their source too), and
/// naming a file once where a context ends with it and its cause begins with
/// it ("cannot split a.parquet" and "a.parquet is not ...").
fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        let mut part = part.as_str();
        if let Some((subject, rest)) = repeated_subject(&text, part) {
            if let Some(rest) = rest.strip_prefix(": ") {
                part = rest; // "cannot encode a.csv: row 5 has ..."
            } else {
                // "cannot split: a.parquet is not ..."
                text.truncate(text.len() - subject.len() - 1);
            }
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(part);
    }
    text
}

/// The first word of `part` (up to a space or `: `) and what follows it, when
/// `text` ends with that word as its own last word.
fn repeated_subject<'a>(text: &str, part: &'a str) -> Option<(&'a str, &'a str)> {
    let end = [part.find(": "), part.find(' ')]
        .into_iter()
        .flatten()
        .min()?;
    let (subject, rest) = part.split_at(end);
    let before = text.strip_suffix(subject)?;
    (!subject.is_empty() && before.ends_with(' ')).then_some((subject, rest))
}

#[cfg(test)]
mod tests {
    use super::message;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Cause(String);

    fn with_context(cause: &str, context: &str) -> String {
        message(&anyhow::Error::new(Cause(cause.into())).context(context.to_owned()))
    }

    #[test]
    fn a_file_named_by_the_context_and_its_cause_is_named_once() {
        assert_eq!(
            with_context("a.csv: row 5 has an empty id", "cannot encode a.csv"),
            "cannot encode a.csv: row 5 has an empty id"
        );
        assert_eq!(
            with_context(
                "a.parquet is not a readable Parquet file",
                "cannot split a.parquet"
            ),
            "cannot split: a.parquet is not a readable Parquet file"
        );
        // Other files, and a word that only ends the context's last word, stay.
        assert_eq!(
            with_context("cannot write b.parquet: disk full", "cannot encode a.csv"),
            "cannot encode a.csv: cannot write b.parquet: disk full"
        );
        assert_eq!(
            with_context("a.csv: bad row", "cannot encode data/xa.csv"),
            "cannot encode data/xa.csv: a.csv: bad row"
        );
        assert_eq!(
            with_context("no subject", "cannot match"),
            "cannot match: no subject"
        );
    }
}
