//! `lab matrix`: topologies × kernels from a small TOML file, each cell a
//! lab of its own that runs the file's suites. Pure parts only, no lab
//! needed: the file and its cells (`spec.rs`), how many labs run at once
//! (`schedule.rs`), the CI matrices `--emit` prints (`emit.rs`) and what a
//! matrix run keeps, its verdict and exit code (`record.rs`). The verb that
//! runs the cells is `verbs/matrix.rs`.

pub mod emit;
pub mod record;
pub mod schedule;
pub mod spec;
