//! Encoding: one record's identifying fields -> one Bloom filter ("clk").
