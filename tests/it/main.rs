//! Integration tests: one test binary, one module per feature.

mod block;
mod clkhash;
mod encode;
mod evaluate;
mod release;
mod schema_cli;
mod util;
mod matching;
mod pipeline;
