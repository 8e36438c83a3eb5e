//! The verbs of `lab`, one module each: `up`, `down`, `status`, `exec`,
//! `args`, `run` (suites), `compare` (and `baseline save`), `report`, `bench` (`bench boot`, `bench timing`), `bench_rebuild` (`bench rebuild`),
//! `soak`, `inject` and `matrix` (and `bench matrix`); `launch` is what QEMU
//! is started with, for `up` and `args` alike. What they return is in
//! `summary.rs`, their error in `error.rs`.

pub mod args;
pub mod bench;
pub mod bench_rebuild;
pub mod compare;
pub mod down;
pub mod exec;
pub mod inject;
pub mod launch;
pub mod matrix;
pub mod report;
pub mod run;
pub mod soak;
pub mod status;
pub mod up;

pub use args::args;
pub use bench::bench_boot;
pub use bench_rebuild::bench_rebuild;
pub use compare::{compare_runs, save_baseline};
pub use down::down;
pub use exec::{agent, exec};
pub use inject::inject;
pub use launch::AccelChoice;
pub use matrix::{bench_matrix, matrix, MatrixOptions};
pub use report::report;
pub use run::{run_selection, run_suites};
pub use soak::soak;
pub use status::status;
pub use up::{up, UpOptions};

use crate::error::LabError;
use crate::rundir::RunDir;

/// The run directory of a lab (for `lab console` and results).
pub fn run_dir(name: &str) -> Result<RunDir, LabError> {
    Ok(RunDir::new(name)?)
}
