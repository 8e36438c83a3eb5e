//! `mmap-workload -f PATH -p seq|random|stride|mixed -c COUNT -t THREADS -s STRIDE -d DELAY_MS [--json]`.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mmap_workload::{format_table, run, Access, Config, Pattern};

/// Touches the pages of a mapped file from several threads in a given order.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The file to map (see data-generator).
    #[arg(short = 'f', long = "file")]
    file: std::path::PathBuf,
    /// Access order; mixed is 70 % random, 30 % sequential.
    #[arg(short = 'p', long = "pattern", value_enum, default_value = "seq")]
    pattern: Pattern,
    /// Accesses per thread.
    #[arg(short = 'c', long = "count", default_value_t = 1000)]
    count: u64,
    /// Worker threads.
    #[arg(short = 't', long = "threads", default_value_t = 1)]
    threads: u32,
    /// Stride in pages (stride pattern).
    #[arg(short = 's', long = "stride", default_value_t = 16)]
    stride: u64,
    /// Pause after each access, in milliseconds.
    #[arg(short = 'd', long = "delay", default_value_t = 0)]
    delay_ms: u64,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// write (default) copies each page on write: one fault per page;
    /// read lets the kernel map up to 16 cached pages per fault.
    #[arg(long, value_enum, default_value = "write")]
    access: Access,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn config(&self) -> Config {
        Config {
            path: self.file.clone(),
            pattern: self.pattern,
            count: self.count,
            threads: self.threads,
            stride: self.stride,
            delay: Duration::from_millis(self.delay_ms),
            seed: self.seed,
            access: self.access,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let s = run(&a.config())
        .with_context(|| format!("running the {} workload on {}", a.pattern, a.file.display()))?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print!("{}", format_table(&s));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_options() {
        let a = Args::try_parse_from([
            "mmap-workload",
            "-f",
            "/d",
            "-p",
            "mixed",
            "-c",
            "50",
            "-t",
            "4",
            "-s",
            "8",
            "-d",
            "2",
            "--json",
        ])
        .unwrap();
        let c = a.config();
        assert_eq!(
            (c.pattern, c.count, c.threads, c.stride),
            (Pattern::Mixed, 50, 4, 8)
        );
        assert_eq!(c.delay, Duration::from_millis(2));
        assert_eq!(c.access, Access::Write);
        assert!(a.json);
        let d = Args::try_parse_from(["mmap-workload", "-f", "/d"])
            .unwrap()
            .config();
        assert_eq!(
            (d.pattern, d.threads, d.delay),
            (Pattern::Seq, 1, Duration::ZERO)
        );
        assert!(Args::try_parse_from(["mmap-workload", "-f", "/d", "-p", "zigzag"]).is_err());
    }
}
