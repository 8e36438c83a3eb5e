//! `fault-monitor -p PID -i MS [-v] [--json] [--duration S]`.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fault_monitor::{monitor, preflight};

/// Per-thread page faults (major, minor, handling time) from a kprobe and a
/// kretprobe on handle_mm_fault; a table every interval.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Process to watch; 0 watches every process.
    #[arg(short = 'p', long = "pid", default_value_t = 0)]
    pid: u32,
    /// Table interval in milliseconds.
    #[arg(short = 'i', long = "interval", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    interval_ms: u64,
    /// Also print every fault (through the ring buffer).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// One JSON report at the end instead of tables.
    #[arg(long)]
    json: bool,
    /// Stop after this many seconds (default: at SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// Events kept in the JSON report with -v.
    #[arg(long, default_value_t = 10_000)]
    max_events: usize,
}

impl Args {
    fn config(&self) -> monitor::Config {
        monitor::Config {
            pid: self.pid,
            interval: Duration::from_millis(self.interval_ms),
            events: self.verbose,
            json: self.json,
            duration: self.duration.map(Duration::from_secs_f64),
            max_events: self.max_events,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let bits = preflight::check("fault-monitor").context("fault-monitor cannot start")?;
    preflight::raise_memlock();
    stop_signal::install();
    let mut out = std::io::stdout().lock();
    let report = monitor::run(&a.config(), bits, &mut out, &stop_signal::requested)
        .context("monitoring page faults")?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_options() {
        let a = Args::try_parse_from([
            "fault-monitor",
            "-p",
            "42",
            "-i",
            "250",
            "-v",
            "--json",
            "--duration",
            "1.5",
        ])
        .unwrap();
        let c = a.config();
        assert_eq!(
            (c.pid, c.interval, c.events, c.json),
            (42, Duration::from_millis(250), true, true)
        );
        assert_eq!(c.duration, Some(Duration::from_millis(1500)));
        let d = Args::try_parse_from(["fault-monitor"]).unwrap().config();
        assert_eq!(
            (d.pid, d.interval, d.events, d.duration),
            (0, Duration::from_secs(1), false, None)
        );
        assert!(
            Args::try_parse_from(["fault-monitor", "-i", "0"]).is_err(),
            "a zero interval is refused"
        );
        assert!(Args::try_parse_from(["fault-monitor", "-p", "-1"]).is_err());
    }
}
