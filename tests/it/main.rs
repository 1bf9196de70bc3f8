//! Integration tests: one test binary, one module per feature.

mod util;
mod encode;
mod schema_cli;
mod release;
mod evaluate;
