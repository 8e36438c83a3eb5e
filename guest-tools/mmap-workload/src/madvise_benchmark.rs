//! The madvise benchmarks the smart-madvise document (003) runs to exercise
//! its sequential-fault log: `sequential-access-benchmark FILE_SIZE
//! NUM_PASSES` and `random-access-benchmark FILE_SIZE NUM_PASSES
//! NUM_THREADS` (the argument order of the benchmarks' own usage line; the
//! document's `1gb 2 1` example reads the middle number as threads, which
//! matters only when both differ from 1).
//!
//! Each program runs every test (writes, then reads) under every
//! `posix_madvise` advice: it writes a fresh file of FILE_SIZE, maps it
//! shared, gives the advice, and touches every page NUM_PASSES times, in
//! file order or in a shuffled order handed out in chunks of 512 pages to
//! NUM_THREADS threads. Results go to stdout as CSV lines
//! `file_size,num_passes,num_threads,advice,test,total_bytes,bytes,seconds,bytes_per_second`
//! (one every 16384 pages and one at the end of a test), progress to stderr.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::pattern::Rng;
use crate::PAGE;

/// Pages between two result lines.
const REPORT_EVERY: u64 = 16384;
/// Pages a random-access thread takes at a time.
const CHUNK_PAGES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("`{0}` is not a size: give a whole number with an optional unit b, k, kb, m, mb, g, gb, t or tb (for example 1gb).")]
    Size(String),
    #[error("The file size {0} is not a multiple of the page size (4096 bytes).")]
    NotPageMultiple(u64),
    #[error("`{what}` must be a positive whole number, got `{got}`.")]
    Count { what: &'static str, got: String },
    #[error("Could not create and fill the test file {path}.")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Could not map the test file {path}.")]
    Map {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("posix_madvise({advice}) failed.")]
    Advise {
        advice: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("The {test} test touched {got} pages, {expected} expected.")]
    Incomplete {
        test: &'static str,
        got: u64,
        expected: u64,
    },
}

/// The advice values, in the benchmarks' order.
pub const ADVICE: [(libc::c_int, &str); 5] = [
    (libc::POSIX_MADV_NORMAL, "POSIX_MADV_NORMAL"),
    (libc::POSIX_MADV_RANDOM, "POSIX_MADV_RANDOM"),
    (libc::POSIX_MADV_SEQUENTIAL, "POSIX_MADV_SEQUENTIAL"),
    (libc::POSIX_MADV_WILLNEED, "POSIX_MADV_WILLNEED"),
    (libc::POSIX_MADV_DONTNEED, "POSIX_MADV_DONTNEED"),
];

/// A human-readable size: `1gb`, `64M`, `4096`.
pub fn parse_size(arg: &str) -> Result<u64, BenchError> {
    let err = || BenchError::Size(arg.to_owned());
    let digits = arg.bytes().take_while(u8::is_ascii_digit).count();
    let number: u64 = arg[..digits].parse().map_err(|_| err())?;
    let shift = match arg[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" => 10,
        "m" | "mb" => 20,
        "g" | "gb" => 30,
        "t" | "tb" => 40,
        _ => return Err(err()),
    };
    let size = number.checked_shl(shift).filter(|s| s >> shift == number);
    match size {
        Some(s) if s > 0 => Ok(s),
        _ => Err(err()),
    }
}

pub fn parse_count(what: &'static str, arg: &str) -> Result<u32, BenchError> {
    arg.parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| BenchError::Count {
            what,
            got: arg.to_owned(),
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Sequential,
    Random,
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub order: Order,
    pub file_size: u64,
    pub passes: u32,
    pub threads: u32,
    /// Seed of the random order (the original seeds from the clock).
    pub seed: u64,
    /// Where the test file is made (the benchmarks use the working
    /// directory).
    pub dir: std::path::PathBuf,
}

impl BenchConfig {
    fn file_path(&self) -> std::path::PathBuf {
        self.dir.join(match self.order {
            Order::Sequential => "sequential-access.bin",
            Order::Random => "random-access.bin",
        })
    }

    fn test_names(&self) -> [&'static str; 2] {
        match self.order {
            Order::Sequential => ["seq_writes", "seq_reads"],
            Order::Random => ["random_writes", "random_reads"],
        }
    }
}

/// The result lines of one test, shared by its threads.
struct Results<'a> {
    cfg: &'a BenchConfig,
    advice: &'static str,
    test: &'static str,
    expected_pages: u64,
    state: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    total_bytes: u64,
    total_pages: u64,
    bytes: u64,
    pages: u64,
    since: Option<Instant>,
}

impl Results<'_> {
    fn log(&self, started: Instant, pages: u64) {
        let mut t = self.state.lock().unwrap_or_else(|p| p.into_inner());
        t.since.get_or_insert(started);
        t.total_pages += pages;
        t.total_bytes += pages * PAGE;
        t.pages += pages;
        t.bytes += pages * PAGE;
        if t.pages >= REPORT_EVERY {
            self.print(&mut t);
        }
    }

    fn print(&self, t: &mut Tally) {
        let seconds = t.since.map_or(0.0, |s| s.elapsed().as_secs_f64()).max(1e-9);
        let rate = t.bytes as f64 / seconds;
        println!(
            "{},{},{},{},{},{},{},{:.6},{:.6}",
            self.cfg.file_size,
            self.cfg.passes,
            self.cfg.threads,
            self.advice,
            self.test,
            t.total_bytes,
            t.bytes,
            seconds,
            rate
        );
        eprintln!(
            "  {:5.1} complete ({:9.3} MBps, {:10.1} pages/sec)",
            t.total_pages as f64 / self.expected_pages as f64 * 100.0,
            rate / 1024.0 / 1024.0,
            t.pages as f64 / seconds
        );
        t.bytes = 0;
        t.pages = 0;
        t.since = None;
    }

    fn finish(&self) -> Result<(), BenchError> {
        let mut t = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if t.pages > 0 {
            self.print(&mut t);
        }
        if t.total_pages != self.expected_pages {
            return Err(BenchError::Incomplete {
                test: self.test,
                got: t.total_pages,
                expected: self.expected_pages,
            });
        }
        Ok(())
    }
}

/// Writes `size` bytes of a repeating pattern to a new file, bypassing the
/// page cache where the file system allows (`O_DIRECT`; the guest's root is
/// a RAM file system, which does not), so the mapping faults its pages in.
fn create_file(path: &Path, size: u64) -> std::io::Result<File> {
    let direct = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let buffered = || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(path)
    };
    let mut out = match direct {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => buffered()?,
        Err(e) => return Err(e),
    };
    let chunk = if size >= 1 << 20 { 1 << 20 } else { PAGE };
    // O_DIRECT wants a page-aligned buffer: a Vec of pages is aligned to
    // its element type only, so over-allocate and write from an aligned start.
    let raw: Vec<u8> = (0..chunk + PAGE).map(|i| i as u8).collect();
    let skip = raw.as_ptr().align_offset(PAGE as usize);
    let buf = &raw[skip..skip + chunk as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.sync_all()?;
    drop(out);
    OpenOptions::new().read(true).write(true).open(path)
}

/// One test under one advice: a fresh file, mapped and touched.
fn run_one(
    cfg: &BenchConfig,
    advice: (libc::c_int, &'static str),
    test: &'static str,
    write: bool,
) -> Result<(), BenchError> {
    let order = match cfg.order {
        Order::Sequential => "sequential",
        Order::Random => "random",
    };
    eprintln!(
        "Running {order} access benchmark: file_size={}, num_passes={}, num_threads={}, test={test}, advice={}",
        cfg.file_size, cfg.passes, cfg.threads, advice.1
    );
    let path = cfg.file_path();
    let file = create_file(&path, cfg.file_size).map_err(|source| BenchError::File {
        path: path.display().to_string(),
        source,
    })?;
    // A raw map: the file is shared, so it is touched through raw copies
    // below, never through references.
    let map = memmap2::MmapOptions::new()
        .len(cfg.file_size as usize)
        .map_raw(&file)
        .map_err(|source| BenchError::Map {
            path: path.display().to_string(),
            source,
        })?;
    // SAFETY: the range is exactly the mapping made above.
    let rc =
        unsafe { libc::posix_madvise(map.as_mut_ptr().cast(), cfg.file_size as usize, advice.0) };
    if rc != 0 {
        return Err(BenchError::Advise {
            advice: advice.1,
            source: std::io::Error::from_raw_os_error(rc),
        });
    }
    let pages = cfg.file_size / PAGE;
    let results = Results {
        cfg,
        advice: advice.1,
        test,
        expected_pages: pages * u64::from(cfg.passes),
        state: Mutex::new(Tally::default()),
    };
    let base = map.as_mut_ptr() as usize;
    let touch = |page: u64, buf: &mut [u8]| {
        let p = (base + (page * PAGE) as usize) as *mut u8;
        // SAFETY: page < pages, so [p, p + PAGE) is inside the mapping,
        // which outlives every thread (scoped below); the accesses are
        // byte copies with no reference into the shared memory.
        unsafe {
            if write {
                std::ptr::copy_nonoverlapping(buf.as_ptr(), p, PAGE as usize);
            } else {
                std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), PAGE as usize);
            }
        }
    };
    match cfg.order {
        Order::Sequential => {
            let mut buf = vec![0u8; PAGE as usize];
            let mut since = Instant::now();
            let mut logged = 0;
            for i in 0..results.expected_pages {
                touch(i % pages, &mut buf);
                if (i + 1) % REPORT_EVERY == 0 {
                    results.log(since, i + 1 - logged);
                    logged = i + 1;
                    since = Instant::now();
                }
            }
            if logged < results.expected_pages {
                results.log(since, results.expected_pages - logged);
            }
        }
        Order::Random => {
            // One shuffled order of the pages, cut into chunks; every pass
            // hands out all chunks again, threads take the next one.
            let mut order: Vec<u64> = (0..pages).collect();
            let mut rng = Rng::new(cfg.seed);
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let chunks: Vec<&[u64]> = order.chunks(CHUNK_PAGES).collect();
            let total = chunks.len() * cfg.passes as usize;
            let next = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..cfg.threads {
                    s.spawn(|| {
                        let mut buf = vec![0u8; PAGE as usize];
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= total {
                                break;
                            }
                            let chunk = chunks[n % chunks.len()];
                            let started = Instant::now();
                            for &page in chunk {
                                touch(page, &mut buf);
                            }
                            results.log(started, chunk.len() as u64);
                        }
                    });
                }
            });
        }
    }
    results.finish()
}

/// Every test under every advice, as the benchmarks do.
pub fn run(cfg: &BenchConfig) -> Result<(), BenchError> {
    eprintln!("page size:   {PAGE}");
    eprintln!("file size:   {}", cfg.file_size);
    eprintln!("num passes:  {}", cfg.passes);
    if cfg.order == Order::Random {
        eprintln!("num threads: {}", cfg.threads);
    }
    eprintln!();
    let [writes, reads] = cfg.test_names();
    for (test, write) in [(writes, true), (reads, false)] {
        for advice in ADVICE {
            run_one(cfg, advice, test, write)?;
        }
    }
    Ok(())
}

/// Checks the arguments shared by both programs.
pub fn file_size(arg: &str) -> Result<u64, BenchError> {
    let size = parse_size(arg)?;
    if size % PAGE != 0 {
        return Err(BenchError::NotPageMultiple(size));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_the_benchmarks_read_them() {
        assert_eq!(parse_size("1gb").unwrap(), 1 << 30);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("8 kb").unwrap(), 8192);
        for bad in ["", "gb", "1xb", "0", "-1gb", "99999999999tb"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            file_size("100"),
            Err(BenchError::NotPageMultiple(100))
        ));
        assert!(parse_count("num_threads", "0").is_err());
        assert_eq!(parse_count("num_passes", "2").unwrap(), 2);
    }

    #[test]
    fn every_test_and_advice_touches_every_page_of_every_pass() {
        let dir = tempfile::tempdir().unwrap();
        for (order, threads) in [(Order::Sequential, 1), (Order::Random, 3)] {
            let cfg = BenchConfig {
                order,
                file_size: 40 * PAGE * 16,
                passes: 2,
                threads,
                seed: 7,
                dir: dir.path().to_owned(),
            };
            // finish() refuses a test that missed a page.
            run(&cfg).unwrap();
            // The last test (reads) left the freshly written pattern.
            let bytes = std::fs::read(cfg.file_path()).unwrap();
            assert_eq!(bytes.len() as u64, cfg.file_size);
            assert!(bytes
                .windows(2)
                .take(200)
                .all(|w| w[1] == w[0].wrapping_add(1)));
        }
    }

    #[test]
    fn the_writes_test_writes_through_the_shared_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BenchConfig {
            order: Order::Random,
            file_size: 8 * PAGE,
            passes: 1,
            threads: 2,
            seed: 1,
            dir: dir.path().to_owned(),
        };
        run_one(&cfg, ADVICE[0], "random_writes", true).unwrap();
        let bytes = std::fs::read(cfg.file_path()).unwrap();
        assert!(bytes.iter().all(|b| *b == 0), "every page zeroed");
    }
}
