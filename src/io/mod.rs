//! Files: reading site records (CSV, Parquet) in batches, and the `.clk.parquet`
//! / clkhash JSON encodings that a site hands to the linkage unit.
//!
//! Every file the engine writes goes through [`atomic`]: written to a
//! temporary file beside the target and renamed at the end, so that a failed
//! or interrupted run never leaves a half-written output.

pub mod atomic;
pub(crate) mod clk_column;
pub mod clk_file;
mod csv_lines;
pub mod records;
pub mod table;
