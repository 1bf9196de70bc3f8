//! The linkage unit's match run: checks the inputs, finds candidates, solves.
