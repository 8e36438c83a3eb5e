//! The typed configuration of one run.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Which checks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    All,
    Byte,
    Atomic,
    Mwait,
    Latency,
    Throughput,
    Persist,
}

impl Mode {
    /// The single modes `self` stands for, in run order.
    pub fn expand(self) -> &'static [Mode] {
        match self {
            Mode::All => &[
                Mode::Byte,
                Mode::Atomic,
                Mode::Mwait,
                Mode::Latency,
                Mode::Throughput,
                Mode::Persist,
            ],
            Mode::Byte => &[Mode::Byte],
            Mode::Atomic => &[Mode::Atomic],
            Mode::Mwait => &[Mode::Mwait],
            Mode::Latency => &[Mode::Latency],
            Mode::Throughput => &[Mode::Throughput],
            Mode::Persist => &[Mode::Persist],
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub device: PathBuf,
    pub offset: u64,
    pub size: u64,
    pub mode: Mode,
    /// Threads for atomic and throughput.
    pub threads: usize,
    /// How long each throughput measurement runs.
    pub duration: Duration,
    /// Samples per size and direction in latency.
    pub latency_samples: usize,
    /// Operations per thread and kind in atomic.
    pub atomic_ops: usize,
    /// Wake-ups measured in mwait.
    pub wakeups: usize,
}

/// Parameters echoed in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub threads: usize,
    pub duration_ms: u64,
    pub latency_samples: usize,
    pub atomic_ops: usize,
    pub wakeups: usize,
}

impl Config {
    pub fn params(&self) -> Params {
        Params {
            threads: self.threads,
            duration_ms: self.duration.as_millis() as u64,
            latency_samples: self.latency_samples,
            atomic_ops: self.atomic_ops,
            wakeups: self.wakeups,
        }
    }
}
