//! `dax-tester <device> <offset> <size> <mode> [--json]`: parses the command
//! line into a `Config` and runs the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use dax_tester::size::parse_size;
use dax_tester::{Config, Mode};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    All,
    Byte,
    Atomic,
    Mwait,
    Latency,
    Throughput,
    Persist,
}

/// Checks a device-dax (or any mappable file) range: byte-addressable I/O,
/// atomics, wait-for-change, latency, throughput and persistence.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Device or file, e.g. /dev/dax0.0 or /dev/shm/backing.
    device: PathBuf,
    /// Offset of the range, e.g. 0, 2M, 0x100000000.
    #[arg(value_parser = parse_size)]
    offset: u64,
    /// Size of the range, e.g. 256M, 16G.
    #[arg(value_parser = parse_size)]
    size: u64,
    /// Which checks to run.
    #[arg(value_enum)]
    mode: ModeArg,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Threads for atomic and throughput.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Milliseconds per throughput measurement (each block size and direction).
    #[arg(long, default_value_t = 1000)]
    duration_ms: u64,
    /// Samples per size and direction in latency.
    #[arg(long, default_value_t = 10_000)]
    latency_samples: usize,
    /// Operations per thread in atomic.
    #[arg(long, default_value_t = 100_000)]
    atomic_ops: usize,
    /// Wake-ups measured in mwait.
    #[arg(long, default_value_t = 1000)]
    wakeups: usize,
}

impl Args {
    fn config(&self) -> Config {
        Config {
            device: self.device.clone(),
            offset: self.offset,
            size: self.size,
            mode: match self.mode {
                ModeArg::All => Mode::All,
                ModeArg::Byte => Mode::Byte,
                ModeArg::Atomic => Mode::Atomic,
                ModeArg::Mwait => Mode::Mwait,
                ModeArg::Latency => Mode::Latency,
                ModeArg::Throughput => Mode::Throughput,
                ModeArg::Persist => Mode::Persist,
            },
            threads: self.threads.max(1),
            duration: Duration::from_millis(self.duration_ms),
            latency_samples: self.latency_samples,
            atomic_ops: self.atomic_ops,
            wakeups: self.wakeups,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("dax-tester: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let cfg = args.config();
    let report =
        dax_tester::run(&cfg).with_context(|| format!("cannot test {}", cfg.device.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot encode the report")?
        );
    } else {
        print!("{}", report.human());
    }
    Ok(report.passed)
}
