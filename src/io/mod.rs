//! Files: reading site records (CSV, Parquet) in batches, and the `.clk.parquet`
//! / clkhash JSON encodings that a site hands to the linkage unit.
