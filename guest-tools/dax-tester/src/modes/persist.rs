//! persist: write a pattern, write every line back with CLWB or CLFLUSHOPT
//! (chosen by CPUID; CLFLUSH as a last resort) and SFENCE, time the flush,
//! and verify the data through a second, independent mapping of the range.
//! Reports whether the range is mapped with MAP_SYNC and why not.

use serde::Serialize;

use super::{Env, Rng};
use crate::cpu::{sfence, Flush};

/// Most bytes written and flushed.
const MAX_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct PersistReport {
    pub passed: bool,
    pub instruction: Flush,
    pub instruction_reason: &'static str,
    pub map_sync: bool,
    pub map_fallback_reason: Option<String>,
    pub bytes: usize,
    pub lines: usize,
    pub flush_total_ns: f64,
    pub flush_per_line_ns: f64,
    pub verified: bool,
    pub mismatches: usize,
    pub detail: Option<String>,
}

pub fn run(env: &Env<'_>) -> PersistReport {
    let (instruction, instruction_reason) = Flush::select(env.cpu);
    let base = env.dev.base();
    let bytes = env.dev.len().min(MAX_BYTES);
    let lines = bytes.div_ceil(64);
    let mut rng = Rng::new(0xF1005);
    let pattern: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
    // SAFETY: bytes <= dev.len(), so [base, base + bytes) is in the range,
    // mapped while `env.dev` lives; `pattern` is a separate heap buffer of
    // `bytes` bytes, so the copy does not overlap.
    unsafe { std::ptr::copy_nonoverlapping(pattern.as_ptr(), base, bytes) };
    let clock = env.clock;
    let s = clock.start();
    instruction.range(base, bytes);
    sfence();
    let e = clock.stop();
    let flush_total_ns = clock.sample_ns(s, e);
    let (mismatches, detail) = match env.dev.map_again() {
        Ok((_second, p)) => {
            // SAFETY: `p` is the range's first byte in the second mapping,
            // which `_second` keeps mapped through this arm, and bytes <=
            // dev.len(); nothing writes the range while `seen` is read.
            let seen = unsafe { std::slice::from_raw_parts(p, bytes) };
            let bad = seen.iter().zip(&pattern).filter(|(a, b)| a != b).count();
            let detail = (bad > 0)
                .then(|| format!("{bad} of {bytes} bytes differ through a second mapping"));
            (bad, detail)
        }
        Err(err) => (
            0,
            Some(format!("cannot map the range a second time: {err}")),
        ),
    };
    let verified = detail.is_none();
    PersistReport {
        passed: verified,
        instruction,
        instruction_reason,
        map_sync: env.dev.info.map.map_sync,
        map_fallback_reason: env.dev.info.map.fallback_reason.clone(),
        bytes,
        lines,
        flush_total_ns: flush_total_ns.round(),
        flush_per_line_ns: (flush_total_ns / lines as f64 * 10.0).round() / 10.0,
        verified,
        mismatches,
        detail,
    }
}
