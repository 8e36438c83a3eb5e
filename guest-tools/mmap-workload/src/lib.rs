//! Maps a file privately and touches its pages from several threads in a
//! chosen order. A write access copies the page on write, so every page gets
//! its own fault (reads of a cached file are mapped 16 pages per fault by
//! the kernel's fault-around, which would hide the access order); a cold
//! page still has to be read from disk first, which is a major fault.
//! Each thread reports its kernel thread id and its own fault counts
//! (`getrusage(RUSAGE_THREAD)`), so a fault monitor can be checked against them.

pub mod madvise_benchmark;
pub mod pattern;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use pattern::{Pages, Pattern};

pub const PAGE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub pattern: Pattern,
    /// Accesses per thread.
    pub count: u64,
    pub threads: u32,
    /// Stride in pages.
    pub stride: u64,
    pub delay: Duration,
    pub seed: u64,
    pub access: Access,
}

#[derive(Debug, Serialize)]
pub struct ThreadSummary {
    pub index: u32,
    pub tid: i32,
    pub accesses: u64,
    pub elapsed_ms: f64,
    /// This thread's faults as the kernel counts them (RUSAGE_THREAD).
    pub major_faults: i64,
    pub minor_faults: i64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub pid: u32,
    pub file: String,
    pub pattern: Pattern,
    pub access: Access,
    pub file_bytes: u64,
    pub pages: u64,
    pub threads: Vec<ThreadSummary>,
    pub accesses: u64,
    pub elapsed_ms: f64,
    /// Wrapping sum of the bytes read, so reads cannot be optimised away.
    pub checksum: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("Cannot open {path}.")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is smaller than one page; write it first (data-generator).")]
    TooSmall { path: String },
    #[error("Cannot map {path}.")]
    Map {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("At least one thread and one access are needed.")]
    Nothing,
    #[error("Cannot start worker thread {index}.")]
    Spawn {
        index: u32,
        #[source]
        source: std::io::Error,
    },
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: gettid(2) takes no arguments, touches no memory and cannot fail.
    unsafe { libc::gettid() }
}

/// (major, minor) faults of the calling thread.
fn thread_faults() -> (i64, i64) {
    // SAFETY: rusage is plain integers and timevals, for which all-zero
    // bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live, writable rusage; getrusage only fills it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return (-1, -1);
    }
    (ru.ru_majflt, ru.ru_minflt)
}

pub fn run(cfg: &Config) -> Result<Summary, WorkloadError> {
    if cfg.threads == 0 || cfg.count == 0 {
        return Err(WorkloadError::Nothing);
    }
    let path = cfg.path.display().to_string();
    let file = std::fs::File::open(&cfg.path).map_err(|source| WorkloadError::Open {
        path: path.clone(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| WorkloadError::Open {
            path: path.clone(),
            source,
        })?
        .len();
    let pages = len / PAGE;
    if pages == 0 {
        return Err(WorkloadError::TooSmall { path });
    }
    // SAFETY: a private (copy-on-write) mapping: our writes never reach the
    // file, and the suites do not truncate it while we run.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .len((pages * PAGE) as usize)
            .map_copy(&file)
    }
    .map_err(|source| WorkloadError::Map {
        path: path.clone(),
        source,
    })?;
    let base = map.as_ptr() as usize;
    let cursor = AtomicU64::new(0);
    let started = Instant::now();
    let results: Result<Vec<(ThreadSummary, u64)>, WorkloadError> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for index in 0..cfg.threads {
            let cursor = &cursor;
            let h = std::thread::Builder::new()
                .name(format!("mmap-w{index}"))
                .spawn_scoped(s, move || worker(cfg, index, base, pages, cursor))
                .map_err(|source| WorkloadError::Spawn { index, source })?;
            handles.push(h);
        }
        Ok(handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect())
    });
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let results = results?;
    drop(map);
    let checksum = results.iter().fold(0u64, |a, (_, c)| a.wrapping_add(*c));
    let threads: Vec<ThreadSummary> = results.into_iter().map(|(t, _)| t).collect();
    Ok(Summary {
        pid: std::process::id(),
        file: path,
        pattern: cfg.pattern,
        access: cfg.access,
        file_bytes: len,
        pages,
        accesses: threads.iter().map(|t| t.accesses).sum(),
        threads,
        elapsed_ms,
        checksum,
    })
}

fn worker(
    cfg: &Config,
    index: u32,
    base: usize,
    pages: u64,
    cursor: &AtomicU64,
) -> (ThreadSummary, u64) {
    let tid = gettid();
    let (maj0, min0) = thread_faults();
    let seed = cfg
        .seed
        .wrapping_add(index as u64)
        .wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut gen = Pages::new(cfg.pattern, pages, cfg.stride, cursor, seed);
    let started = Instant::now();
    let mut sum = 0u64;
    for i in 0..cfg.count {
        let page = gen.next_page();
        // A byte in the middle of the page, varied so pages are not all alike.
        let off = page * PAGE + (i % 64) * 64;
        // SAFETY: off < pages * PAGE, the mapping's length, and `map` outlives
        // the thread scope this runs in; AtomicU8 has u8's layout and
        // alignment, and every access to the mapping is through it, because
        // threads may touch the same byte at once.
        let cell = unsafe { &*((base + off as usize) as *const AtomicU8) };
        match cfg.access {
            Access::Read => sum = sum.wrapping_add(cell.load(Ordering::Relaxed) as u64),
            Access::Write => sum = sum.wrapping_add(cell.fetch_add(1, Ordering::Relaxed) as u64),
        }
        if !cfg.delay.is_zero() {
            std::thread::sleep(cfg.delay);
        }
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let (maj1, min1) = thread_faults();
    (
        ThreadSummary {
            index,
            tid,
            accesses: cfg.count,
            elapsed_ms,
            major_faults: maj1 - maj0,
            minor_faults: min1 - min0,
        },
        sum,
    )
}

/// The human-readable summary.
pub fn format_table(s: &Summary) -> String {
    let mut out = format!(
        "pid {} {} {} on {} ({} pages): {} accesses in {:.1} ms\n{:>6} {:>8} {:>10} {:>12} {:>8} {:>8}\n",
        s.pid,
        s.pattern,
        match s.access {
            Access::Read => "read",
            Access::Write => "write",
        },
        s.file, s.pages, s.accesses, s.elapsed_ms, "THREAD", "TID", "ACCESSES", "ELAPSED_MS", "MAJFLT", "MINFLT"
    );
    for t in &s.threads {
        out.push_str(&format!(
            "{:>6} {:>8} {:>10} {:>12.1} {:>8} {:>8}\n",
            t.index, t.tid, t.accesses, t.elapsed_ms, t.major_faults, t.minor_faults
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(pages: u64) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(pages * PAGE).unwrap();
        f
    }

    fn cfg(path: PathBuf, pattern: Pattern, threads: u32, access: Access) -> Config {
        Config {
            path,
            pattern,
            count: 100,
            threads,
            stride: 4,
            delay: Duration::ZERO,
            seed: 1,
            access,
        }
    }

    #[test]
    fn every_thread_reports_its_own_tid_and_accesses() {
        let f = file_of(64);
        for p in [
            Pattern::Seq,
            Pattern::Random,
            Pattern::Stride,
            Pattern::Mixed,
        ] {
            let s = run(&cfg(f.path().into(), p, 3, Access::Write)).unwrap();
            assert_eq!(s.threads.len(), 3);
            assert_eq!(s.accesses, 300);
            assert_eq!(s.pages, 64);
            let mut tids: Vec<i32> = s.threads.iter().map(|t| t.tid).collect();
            tids.sort();
            tids.dedup();
            assert_eq!(tids.len(), 3, "{p}: distinct tids");
            assert!(
                tids.iter().all(|t| *t as u32 != s.pid),
                "workers are not the main thread"
            );
            // Writing a private mapping copies pages: the faults are the thread's own.
            assert!(
                s.threads
                    .iter()
                    .map(|t| t.minor_faults + t.major_faults)
                    .sum::<i64>()
                    > 0
            );
        }
        // The private mapping left the file untouched.
        assert!(std::fs::read(f.path()).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn reads_sum_the_bytes() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![1u8; 2 * PAGE as usize]).unwrap();
        let s = run(&cfg(f.path().into(), Pattern::Seq, 1, Access::Read)).unwrap();
        assert_eq!(s.checksum, 100);
        assert!(format_table(&s).contains("ACCESSES"));
    }

    #[test]
    fn refuses_empty_files_and_zero_threads() {
        let f = file_of(0);
        let e = run(&cfg(f.path().into(), Pattern::Seq, 1, Access::Read)).unwrap_err();
        assert!(e
            .to_string()
            .ends_with("is smaller than one page; write it first (data-generator)."));
        let f = file_of(1);
        let e = run(&cfg(f.path().into(), Pattern::Seq, 0, Access::Read)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "At least one thread and one access are needed."
        );
    }
}
