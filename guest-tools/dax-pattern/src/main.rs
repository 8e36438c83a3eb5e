//! `dax-pattern write|verify PATH --offset N --len N --seed N`;
//! `dax-pattern save|restore PATH --offset N --len N --file F`.

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Action {
    /// Writes the pattern.
    Write,
    /// Checks the range against the pattern.
    Verify,
    /// Copies the range into --file.
    Save,
    /// Writes --file (made by save) back to the range, flushes and checks it.
    Restore,
}

/// Writes or verifies a deterministic byte pattern on a mapped device, or
/// saves a range to a file and restores it.
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
    /// The copy of the range (save and restore).
    #[arg(long, required_if_eq_any = [("action", "save"), ("action", "restore")])]
    file: Option<std::path::PathBuf>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    cxl_topology::ByteSize::parse(s)
        .map(|b| b.bytes())
        .map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let len = a.len as usize;
    let file = || {
        a.file
            .clone()
            .expect("clap requires --file for save and restore")
    };
    let (done, what) = match a.action {
        Action::Write | Action::Verify => {
            let write = matches!(a.action, Action::Write);
            dax_pattern::run(&a.path, a.offset, len, a.seed, write).with_context(|| {
                format!(
                    "{} pattern on {}",
                    if write { "writing" } else { "verifying" },
                    a.path.display()
                )
            })?;
            (if write { "wrote" } else { "verified" }, String::new())
        }
        Action::Save => {
            let f = file();
            dax_pattern::save(&a.path, a.offset, len, &f)
                .with_context(|| format!("saving a range of {}", a.path.display()))?;
            ("saved", format!(" to {}", f.display()))
        }
        Action::Restore => {
            let f = file();
            dax_pattern::restore(&a.path, a.offset, len, &f)
                .with_context(|| format!("restoring a range of {}", a.path.display()))?;
            ("restored", format!(" from {}", f.display()))
        }
    };
    println!(
        "{done} {} bytes at {:#x} of {}{what}: ok",
        a.len,
        a.offset,
        a.path.display()
    );
    Ok(())
}
