//! `data-generator -f PATH -s MB -p random|sequential|sparse [--seed N] [--json]`.

use anyhow::Context;
use clap::Parser;
use data_generator::{generate, Config, Pattern};

/// Writes a file of SIZE MiB with a content pattern, then fsyncs it.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The file to write (created or truncated).
    #[arg(short = 'f', long = "file")]
    file: std::path::PathBuf,
    /// Size in MiB.
    #[arg(short = 's', long = "size", default_value_t = 64)]
    size_mb: u64,
    /// Content pattern.
    #[arg(short = 'p', long = "pattern", value_enum, default_value = "random")]
    pattern: Pattern,
    /// Seed of the random pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = Config {
        path: a.file.clone(),
        size_bytes: a.size_mb << 20,
        pattern: a.pattern,
        seed: a.seed,
    };
    let s = generate(&cfg).with_context(|| format!("generating {}", a.file.display()))?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "wrote {} ({} pattern): {} of {} bytes in {:.1} ms ({:.1} MiB/s)",
            s.path, s.pattern, s.bytes_written, s.size_bytes, s.elapsed_ms, s.mib_per_s
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_short_options() {
        let a = Args::try_parse_from(["data-generator", "-f", "/x", "-s", "8", "-p", "sparse"])
            .unwrap();
        assert_eq!(a.file, std::path::PathBuf::from("/x"));
        assert_eq!(a.size_mb, 8);
        assert_eq!(a.pattern, Pattern::Sparse);
        assert!(!a.json);
        assert!(Args::try_parse_from(["data-generator", "-f", "/x", "-p", "zigzag"]).is_err());
        assert!(
            Args::try_parse_from(["data-generator", "-s", "8"]).is_err(),
            "-f is required"
        );
    }
}
