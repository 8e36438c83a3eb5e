//! `random-access-benchmark FILE_SIZE NUM_PASSES NUM_THREADS`: the
//! smart-madvise document's random benchmark (see `madvise_benchmark`).

use anyhow::Context;
use clap::Parser;
use mmap_workload::madvise_benchmark::{self, BenchConfig, Order};

#[derive(Parser)]
#[command(
    about = "Maps a fresh file and reads and writes its pages in a shuffled order from several threads, under each posix_madvise advice; CSV results on stdout"
)]
struct Args {
    /// File size: 1gb, 64m, 4096 (a multiple of the page size).
    file_size: String,
    /// Passes over the file.
    num_passes: String,
    /// Threads taking chunks of 512 pages.
    num_threads: String,
    /// Seed of the shuffled order (the original takes the clock's).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = BenchConfig {
        order: Order::Random,
        file_size: madvise_benchmark::file_size(&args.file_size)?,
        passes: madvise_benchmark::parse_count("num_passes", &args.num_passes)?,
        threads: madvise_benchmark::parse_count("num_threads", &args.num_threads)?,
        seed: args.seed,
        dir: ".".into(),
    };
    madvise_benchmark::run(&cfg).context("the random access benchmark failed")
}
