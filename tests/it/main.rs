//! Integration tests: one test binary, one module per feature.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod block;
mod blocked_match;
mod blocking_keys;
mod clkhash;
mod encode;
mod evaluate;
mod matching;
mod pipeline;
mod release;
mod schema_cli;
mod util;
