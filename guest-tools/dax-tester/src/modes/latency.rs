//! latency: p50/p90/p99/max and mean of 64 B, 256 B and 4 KiB reads and
//! writes at random size-aligned offsets of the range.
//!
//! A read sample evicts its lines first (CLFLUSHOPT/CLFLUSH + MFENCE, not
//! timed) and times 8-byte volatile loads of the whole block. A write sample
//! times 8-byte volatile stores of the block followed by the write-back of its
//! lines (CLWB/CLFLUSHOPT/CLFLUSH) and SFENCE, i.e. until the data has left
//! the CPU caches. The clock's measured start/stop overhead is subtracted.

use serde::Serialize;

use super::{Env, Rng};
use crate::cpu::{mfence, sfence, Flush};
use crate::stats::Summary;

pub const SIZES: [usize; 3] = [64, 256, 4096];

#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub size: usize,
    pub op: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub passed: bool,
    pub clock: &'static str,
    pub write_flush: &'static str,
    pub results: Vec<LatencyResult>,
    pub skipped: Vec<String>,
}

pub fn run(env: &Env<'_>) -> LatencyReport {
    let base = env.dev.base();
    let pad = base.align_offset(64);
    let len = env.dev.len().saturating_sub(pad);
    // SAFETY: pad.min(len) <= len, so the result is in the range or one past
    // its end (then `len` below is 0 and nothing is touched).
    let base = unsafe { base.add(pad.min(env.dev.len())) };
    let (flush, _) = Flush::select(env.cpu);
    let evict = Flush::evicting(env.cpu);
    let clock = env.clock;
    let n = env.cfg.latency_samples.max(1);
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    let mut sink = 0u64;
    for size in SIZES {
        if len < size {
            skipped.push(format!("{size} B: the range is smaller than one block"));
            continue;
        }
        let blocks = (len / size) as u64;
        let mut rng = Rng::new(size as u64);
        for op in ["read", "write"] {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                // SAFETY: the block index is < blocks = len / size, so the
                // block [p, p + size) lies inside the range after `base`.
                let p = unsafe { base.add((rng.below(blocks) as usize) * size) } as *mut u64;
                let words = size / 8;
                let ns = if op == "read" {
                    evict.range(p.cast(), size);
                    mfence();
                    let s = clock.start();
                    for w in 0..words {
                        // SAFETY: w < size / 8 keeps the word inside the
                        // mapped block; `base` is 64-byte aligned and sizes
                        // are multiples of 64, so `p` is aligned for u64.
                        sink ^= unsafe { p.add(w).read_volatile() };
                    }
                    let e = clock.stop();
                    clock.sample_ns(s, e)
                } else {
                    let v = rng.next_u64();
                    let s = clock.start();
                    for w in 0..words {
                        // SAFETY: as for the reads: an aligned word inside
                        // the mapped block, touched only by this thread.
                        unsafe { p.add(w).write_volatile(v ^ w as u64) };
                    }
                    flush.range(p.cast(), size);
                    sfence();
                    let e = clock.stop();
                    clock.sample_ns(s, e)
                };
                samples.push(ns);
            }
            if let Some(summary) = Summary::of(&mut samples) {
                results.push(LatencyResult { size, op, summary });
            }
        }
    }
    std::hint::black_box(sink);
    LatencyReport {
        passed: !results.is_empty(),
        clock: match clock.source {
            crate::clock::Source::Rdtscp => "rdtscp",
            crate::clock::Source::ClockGettime => "clock_gettime",
        },
        write_flush: flush.name(),
        results,
        skipped,
    }
}
