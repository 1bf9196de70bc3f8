//! Solvers: scored candidate pairs -> links and entities.
