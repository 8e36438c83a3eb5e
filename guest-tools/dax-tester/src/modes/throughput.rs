//! throughput: ops/s and MB/s (10^6 bytes) of sequential block copies
//! between a private buffer and the range, per block size, for a fixed
//! duration and thread count. Each thread owns an equal slice of the range.
//! Writes are plain stores (no flush); see persist for flush costs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Instant;

use serde::Serialize;

use super::Env;

pub const BLOCK_SIZES: [usize; 5] = [64, 256, 4096, 65536, 1 << 20];

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    pub block_size: usize,
    pub op: &'static str,
    pub threads: usize,
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub mb_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub passed: bool,
    pub results: Vec<ThroughputResult>,
    pub skipped: Vec<String>,
}

pub fn run(env: &Env<'_>) -> ThroughputReport {
    let threads = env.cfg.threads.max(1);
    let len = env.dev.len();
    let base = env.dev.base() as usize;
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for bs in BLOCK_SIZES {
        let slice = (len / threads) / bs * bs;
        if slice == 0 {
            skipped.push(format!(
                "{bs} B: the range has less than one block per thread ({threads} threads)"
            ));
            continue;
        }
        for op in ["read", "write"] {
            let stop = AtomicBool::new(false);
            let barrier = Barrier::new(threads + 1);
            let (counts, seconds) = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let (stop, barrier) = (&stop, &barrier);
                        s.spawn(move || {
                            let mut buf = vec![0x5Au8; bs];
                            let start = base + t * slice;
                            let mut pos = 0;
                            let mut ops = 0u64;
                            barrier.wait();
                            while !stop.load(Ordering::Relaxed) {
                                let p = (start + pos) as *mut u8;
                                // SAFETY: pos + bs <= slice, so [p, p + bs)
                                // lies in this thread's own slice of the
                                // range (threads * slice <= len), mapped while
                                // `env.dev` lives; `buf` is a separate heap
                                // buffer of bs bytes, so they do not overlap.
                                unsafe {
                                    if op == "read" {
                                        std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), bs);
                                    } else {
                                        std::ptr::copy_nonoverlapping(buf.as_ptr(), p, bs);
                                    }
                                }
                                std::hint::black_box(&mut buf);
                                ops += 1;
                                pos += bs;
                                if pos >= slice {
                                    pos = 0;
                                }
                            }
                            ops
                        })
                    })
                    .collect();
                barrier.wait();
                let t0 = Instant::now();
                std::thread::sleep(env.cfg.duration);
                stop.store(true, Ordering::Relaxed);
                let counts: Vec<u64> = handles
                    .into_iter()
                    .map(|h| h.join().expect("worker panicked"))
                    .collect();
                (counts, t0.elapsed().as_secs_f64())
            });
            let ops: u64 = counts.iter().sum();
            let ops_per_sec = ops as f64 / seconds;
            results.push(ThroughputResult {
                block_size: bs,
                op,
                threads,
                ops,
                seconds: (seconds * 1e4).round() / 1e4,
                ops_per_sec: ops_per_sec.round(),
                mb_per_sec: (ops_per_sec * bs as f64 / 1e6 * 100.0).round() / 100.0,
            });
        }
    }
    ThroughputReport {
        passed: !results.is_empty() && results.iter().all(|r| r.ops > 0),
        results,
        skipped,
    }
}
