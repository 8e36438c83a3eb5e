//! atomic: 8/16/32/64-bit loads and stores (checked for tearing), fetch-add
//! and compare-exchange on the mapping from several threads at once; the
//! final values are checked against the expected totals.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Barrier;

use serde::Serialize;

use super::Env;

#[derive(Debug, Clone, Serialize)]
pub struct WidthResult {
    pub bits: u32,
    pub threads: usize,
    pub ops_per_thread: usize,
    /// Expected and found value of the fetch-add counter (mod 2^bits).
    pub fetch_add_expected: u64,
    pub fetch_add_found: u64,
    /// Expected and found value of the compare-exchange counter.
    pub cas_expected: u64,
    pub cas_found: u64,
    /// Loads that saw a mix of two stores' bytes (must be 0).
    pub torn_loads: u64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AtomicReport {
    pub passed: bool,
    pub results: Vec<WidthResult>,
    pub skipped: Option<String>,
}

/// Bytes of the range this check uses.
const NEEDED: usize = 12 * 64;

macro_rules! width {
    ($name:ident, $atomic:ty, $int:ty, $bits:expr) => {
        /// # Safety
        /// `base` must be 64-byte aligned with three lines from it mapped
        /// while the call runs, and accessed by nothing else meanwhile.
        unsafe fn $name(base: *mut u8, threads: usize, ops: usize) -> WidthResult {
            let line = |k: usize| -> &$atomic {
                // SAFETY: k < 3, so line k is one of the caller's three
                // mapped lines, 64-byte aligned and so aligned for the atomic,
                // and only accessed through these atomics during the call.
                unsafe { &*(base.add(k * 64) as *const $atomic) }
            };
            let (add, cas, ls) = (line(0), line(1), line(2));
            add.store(0, Ordering::SeqCst);
            cas.store(0, Ordering::SeqCst);
            ls.store(0, Ordering::SeqCst);
            let torn = AtomicU64::new(0);
            let barrier = Barrier::new(threads);
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (barrier, torn) = (&barrier, &torn);
                    s.spawn(move || {
                        // Every byte of a thread's value is the same, so a torn
                        // load shows up as unequal bytes.
                        let mine = <$int>::from_ne_bytes([(t as u8).wrapping_add(1); $bits / 8]);
                        barrier.wait();
                        for _ in 0..ops {
                            add.fetch_add(1, Ordering::AcqRel);
                            let mut cur = cas.load(Ordering::Acquire);
                            loop {
                                match cas.compare_exchange_weak(
                                    cur,
                                    cur.wrapping_add(1),
                                    Ordering::AcqRel,
                                    Ordering::Acquire,
                                ) {
                                    Ok(_) => break,
                                    Err(v) => cur = v,
                                }
                            }
                            ls.store(mine, Ordering::Release);
                            let seen = ls.load(Ordering::Acquire).to_ne_bytes();
                            if seen.iter().any(|&b| b != seen[0]) {
                                torn.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            let total = (threads as u64).wrapping_mul(ops as u64);
            let expected = (total as $int) as u64;
            let fetch_add_found = add.load(Ordering::SeqCst) as u64;
            let cas_found = cas.load(Ordering::SeqCst) as u64;
            let torn_loads = torn.load(Ordering::Relaxed);
            WidthResult {
                bits: $bits,
                threads,
                ops_per_thread: ops,
                fetch_add_expected: expected,
                fetch_add_found,
                cas_expected: expected,
                cas_found,
                torn_loads,
                passed: fetch_add_found == expected && cas_found == expected && torn_loads == 0,
            }
        }
    };
}

width!(check8, AtomicU8, u8, 8);
width!(check16, AtomicU16, u16, 16);
width!(check32, AtomicU32, u32, 32);
width!(check64, AtomicU64, u64, 64);

pub fn run(env: &Env<'_>) -> AtomicReport {
    // First 64-byte aligned address inside the range.
    let base = env.dev.base();
    let pad = base.align_offset(64);
    if env.dev.len() < pad + NEEDED {
        return AtomicReport {
            passed: false,
            results: Vec::new(),
            skipped: Some(format!("the range must hold at least {NEEDED} bytes")),
        };
    }
    // pad from align_offset(64) makes `lines` 64-byte aligned, and
    // pad + NEEDED <= len leaves 12 lines of the range after it.
    let lines = base.wrapping_add(pad);
    let (threads, ops) = (env.cfg.threads.max(2), env.cfg.atomic_ops);
    // SAFETY: each width gets its own three aligned lines of those 12, mapped
    // while `env.dev` lives and touched by nothing else during the checks.
    let results = unsafe {
        vec![
            check8(lines, threads, ops),
            check16(lines.add(3 * 64), threads, ops),
            check32(lines.add(6 * 64), threads, ops),
            check64(lines.add(9 * 64), threads, ops),
        ]
    };
    AtomicReport {
        passed: results.iter().all(|r| r.passed),
        results,
        skipped: None,
    }
}
