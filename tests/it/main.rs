//! Integration tests: one test binary, one module per feature.

mod clkhash;
mod util;
mod encode;
mod schema_cli;
mod release;
mod evaluate;
mod block;
