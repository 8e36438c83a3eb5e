//! `dax-pattern write|verify PATH --offset N --len N --seed N`.

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Action {
    Write,
    Verify,
}

/// Writes or verifies a deterministic byte pattern on a mapped device.
#[derive(Parser)]
#[command(version)]
struct Args {
    action: Action,
    path: std::path::PathBuf,
    /// Byte offset: 0x200000, 2M, 4096.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    offset: u64,
    /// Length in bytes: 0x200000, 2M, 4096.
    #[arg(long, default_value = "2M", value_parser = parse_size)]
    len: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_size(s: &str) -> Result<u64, String> {
    cxl_topology::ByteSize::parse(s)
        .map(|b| b.bytes())
        .map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let write = matches!(a.action, Action::Write);
    dax_pattern::run(&a.path, a.offset, a.len as usize, a.seed, write).with_context(|| {
        format!(
            "{} pattern on {}",
            if write { "writing" } else { "verifying" },
            a.path.display()
        )
    })?;
    println!(
        "{} {} bytes at {:#x} of {}: ok",
        if write { "wrote" } else { "verified" },
        a.len,
        a.offset,
        a.path.display()
    );
    Ok(())
}
