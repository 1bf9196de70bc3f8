//! Integration tests: one test binary, one module per feature.

mod util;
