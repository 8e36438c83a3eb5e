//! `mem-probe --cxl dax:/dev/dax0.0|node:N [--local local|node:N] [--size 4M] [--loads N] [--passes N] [--rounds N] [--json]`.

use anyhow::Context;
use clap::Parser;
use mem_probe::{format_table, run, Config, Placement};

/// Pointer chase (ns per dependent load) and streaming read (MB/s) on CXL
/// memory and on local memory. A dax device's first SIZE bytes are
/// overwritten while it runs and put back afterwards.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The CXL memory: dax:PATH (a device-dax device) or node:N (a NUMA
    /// node, e.g. a system-ram CXL region).
    #[arg(long)]
    cxl: Placement,
    /// The baseline: local (default policy) or node:N.
    #[arg(long, default_value = "local")]
    local: Placement,
    /// Buffer size per placement (bytes; K, M, G suffixes).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    size: usize,
    /// Dependent loads per chase round.
    #[arg(long, default_value_t = 200_000)]
    loads: u64,
    /// Passes over the buffer per streaming round.
    #[arg(long, default_value_t = 1)]
    passes: u32,
    /// Rounds of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seed of the chase order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size; write e.g. 4M"))?;
    let mult = match unit {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return Err(format!("'{s}' has an unknown unit; use K, M or G")),
    };
    let bytes = n * mult;
    if bytes < 4096 {
        return Err(format!(
            "'{s}' is under one page; the probe needs at least 4K"
        ));
    }
    Ok(bytes)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let c = Config {
        cxl: a.cxl.clone(),
        local: a.local.clone(),
        size: a.size,
        loads: a.loads,
        passes: a.passes,
        rounds: a.rounds,
        seed: a.seed,
    };
    let r = run(&c).with_context(|| format!("probing {} against {}", a.cxl, a.local))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", format_table(&r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_size("4M").unwrap(), 4 << 20);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert!(parse_size("12").unwrap_err().contains("at least 4K"));
        assert!(parse_size("4X").unwrap_err().contains("K, M or G"));
        assert!(parse_size("M").unwrap_err().contains("e.g. 4M"));
    }
}
