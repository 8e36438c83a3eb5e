//! The regression gate: what of a suite's JSON is behaviour (`digest.rs`)
//! and what is a figure with its tolerance (`figures.rs`), the kept runs
//! and saved baselines (`record.rs`), comparing two of them (`compare.rs`)
//! and the JUnit report of a run (`junit.rs`). All pure, no lab needed:
//! the verbs `run`, `compare` and `baseline` put them to work.

pub mod compare;
pub mod digest;
pub mod figures;
pub mod junit;
pub mod record;
