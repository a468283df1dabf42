//! The bad-input suite's fixtures and runner (cases in `tests/bad_input_suite.rs`).
pub mod fixtures;
pub mod runner;
