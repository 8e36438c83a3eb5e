//! `sequential-access-benchmark FILE_SIZE NUM_PASSES`: the smart-madvise
//! document's sequential benchmark (see `madvise_benchmark`).

use anyhow::Context;
use clap::Parser;
use mmap_workload::madvise_benchmark::{self, BenchConfig, Order};

#[derive(Parser)]
#[command(
    about = "Maps a fresh file and reads and writes its pages in order, under each posix_madvise advice; CSV results on stdout"
)]
struct Args {
    /// File size: 1gb, 64m, 4096 (a multiple of the page size).
    file_size: String,
    /// Passes over the file.
    num_passes: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = BenchConfig {
        order: Order::Sequential,
        file_size: madvise_benchmark::file_size(&args.file_size)?,
        passes: madvise_benchmark::parse_count("num_passes", &args.num_passes)?,
        threads: 1,
        seed: 0,
        dir: ".".into(),
    };
    madvise_benchmark::run(&cfg).context("the sequential access benchmark failed")
}
