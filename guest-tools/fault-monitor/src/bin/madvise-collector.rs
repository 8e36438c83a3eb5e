//! `madvise-collector [-i MS] [-o FILE] [--json] [--daemon [--dry-run] …]`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fault_monitor::advice::{Advice, Policy};
use fault_monitor::{collector, preflight};

/// Per-process sequential page faults (fault page = the process's previous
/// fault page + 1), written as `PID COUNT` lines every interval; as a daemon,
/// advises sequential processes through process_madvise.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Interval in milliseconds.
    #[arg(short = 'i', long = "interval", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    interval_ms: u64,
    /// The `PID COUNT` file, rewritten every interval: the running processes
    /// and those that exited during the interval (exited ones are dropped).
    #[arg(short = 'o', long = "output", default_value = collector::DEFAULT_FILE)]
    output: PathBuf,
    /// One JSON report at the end (counts and decisions).
    #[arg(long)]
    json: bool,
    /// Stop after this many seconds (default: at SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// Advise processes whose sequential ratio stays above the threshold.
    #[arg(long)]
    daemon: bool,
    /// Log decisions without applying them.
    #[arg(long, requires = "daemon")]
    dry_run: bool,
    /// Sequential faults / faults in an interval at or above which a process counts as sequential.
    #[arg(long, default_value_t = 0.6, value_parser = ratio)]
    threshold: f64,
    /// Faults an interval needs before it is judged.
    #[arg(long, default_value_t = 16)]
    min_faults: u64,
    /// Consecutive sequential intervals before advising.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    intervals: u32,
    /// The advice: willneed (ahead of the scan), cold or pageout (behind it).
    #[arg(long, value_enum, default_value = "willneed")]
    advice: Advice,
    /// Pages advised at a time.
    #[arg(long, default_value_t = 256)]
    window_pages: u64,
    /// Where decisions go as JSON lines (default: stderr).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Count with the seq_page_faults kernel module (kprobe on
    /// handle_mm_fault, `PID COUNT` lines in /proc/seq_page_faults; loaded
    /// with modprobe when not loaded, and removed at the end then) instead
    /// of the eBPF program.
    #[arg(long)]
    proc: bool,
}

fn ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("the threshold is a ratio between 0 and 1".into())
    }
}

impl Args {
    fn config(&self) -> collector::Config {
        collector::Config {
            interval: Duration::from_millis(self.interval_ms),
            file: self.output.clone(),
            json: self.json,
            duration: self.duration.map(Duration::from_secs_f64),
            daemon: self.daemon.then_some(Policy {
                threshold: self.threshold,
                min_faults: self.min_faults,
                intervals: self.intervals,
                window_pages: self.window_pages,
                advice: self.advice,
            }),
            dry_run: self.dry_run,
            source: if self.proc {
                collector::Source::Proc
            } else {
                collector::Source::Ebpf
            },
        }
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.proc {
        // The module needs no BTF or eBPF: only root, to load it.
        preflight::require_root("madvise-collector")
            .context("madvise-collector --proc cannot start")?;
    } else {
        preflight::check("madvise-collector").context("madvise-collector cannot start")?;
        preflight::raise_memlock();
    }
    stop_signal::install();
    let mut log: Box<dyn Write> = match &a.log {
        Some(p) => Box::new(
            std::fs::File::create(p)
                .with_context(|| format!("creating the decision log {}", p.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let report = collector::run(&a.config(), &mut log, &stop_signal::requested)
        .context("collecting sequential faults")?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_daemon_options() {
        let a = Args::try_parse_from([
            "madvise-collector",
            "-i",
            "200",
            "--daemon",
            "--dry-run",
            "--threshold",
            "0.8",
            "--advice",
            "cold",
            "--json",
        ])
        .unwrap();
        let c = a.config();
        let p = c.daemon.unwrap();
        assert_eq!((p.threshold, p.advice, p.intervals), (0.8, Advice::Cold, 2));
        assert!(c.dry_run && c.json);
        assert_eq!(c.file, PathBuf::from("/run/madvise-collector/sequential"));
        let plain = Args::try_parse_from(["madvise-collector"])
            .unwrap()
            .config();
        assert!(plain.daemon.is_none());
        assert_eq!(plain.source, collector::Source::Ebpf, "eBPF by default");
        let proc = Args::try_parse_from(["madvise-collector", "--proc", "-i", "100"])
            .unwrap()
            .config();
        assert_eq!(proc.source, collector::Source::Proc);
        assert!(
            Args::try_parse_from(["madvise-collector", "--dry-run"]).is_err(),
            "--dry-run needs --daemon"
        );
        assert!(
            Args::try_parse_from(["madvise-collector", "--daemon", "--threshold", "1.5"]).is_err()
        );
    }
}
