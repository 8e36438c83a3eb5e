//! byte: write, read back and verify at sizes from 1 B to 64 MiB at
//! unaligned offsets, checking that the bytes around each write are untouched.

use serde::Serialize;

use super::{Env, Rng};

/// Sizes tried, in order.
pub const SIZES: [u64; 14] = [
    1,
    2,
    3,
    7,
    64,
    128,
    256,
    384,
    511,
    4096,
    65536,
    1 << 20,
    16 << 20,
    64 << 20,
];
/// Guard bytes checked on each side of a write.
const GUARD: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
    #[serde(rename = "SKIP")]
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub size: u64,
    /// Offset of the write inside the range (deliberately not aligned).
    pub offset: u64,
    pub status: Status,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ByteReport {
    pub passed: bool,
    pub results: Vec<SizeResult>,
}

pub fn run(env: &Env<'_>) -> ByteReport {
    let base = env.dev.base();
    let len = env.dev.len() as u64;
    let mut results = Vec::new();
    for (i, &size) in SIZES.iter().enumerate() {
        let offset = offset_of(i);
        if !fits(i, len) {
            results.push(SizeResult {
                size,
                offset,
                status: Status::Skip,
                detail: Some(format!(
                    "the range is {len} bytes; this size needs {}",
                    offset + size + GUARD
                )),
            });
            continue;
        }
        // SAFETY: offset + size + GUARD <= len (checked above) and
        // offset >= GUARD, so check's bytes lie in the range, mapped while
        // `env.dev` lives; this thread is the only one touching it.
        let detail = unsafe { check(base, offset, &pattern(i)) };
        results.push(SizeResult {
            size,
            offset,
            status: if detail.is_none() {
                Status::Pass
            } else {
                Status::Fail
            },
            detail,
        });
    }
    let passed = results.iter().all(|r| r.status != Status::Fail)
        && results.iter().any(|r| r.status == Status::Pass);
    ByteReport { passed, results }
}

/// Where in the range `SIZES[i]` is written: an odd misalignment that
/// differs per size, 1, 14, 27, ... (mod 64), past the low guard.
pub fn offset_of(i: usize) -> u64 {
    GUARD + 1 + (i as u64 * 13) % 63
}

/// Whether `SIZES[i]` and its guards fit a range of `len` bytes.
pub fn fits(i: usize, len: u64) -> bool {
    offset_of(i) + SIZES[i] + GUARD <= len
}

/// The bytes written for `SIZES[i]`. Each size is written over the last,
/// so after a run the range holds, at `offset_of(i)`, the pattern of the
/// largest size that fitted: a check from outside the guest (the device's
/// backing file) compares it with this.
pub fn pattern(i: usize) -> Vec<u8> {
    let mut rng = Rng::new(i as u64 + 0xB17E);
    (0..SIZES[i]).map(|_| rng.next_u64() as u8).collect()
}

/// Writes `pattern` at `base + offset`, reads it back and checks the guards.
/// Returns a description of the first problem, if any.
///
/// # Safety
/// `[base + offset - GUARD, base + offset + pattern.len() + GUARD)` must be
/// mapped and writable, with no other access to it during the call.
unsafe fn check(base: *mut u8, offset: u64, pattern: &[u8]) -> Option<String> {
    let size = pattern.len() as u64;
    let guard_lo = offset - GUARD;
    let guard_hi = offset + size;
    // SAFETY: every byte touched is in [guard_lo, guard_hi + GUARD), which the
    // caller guarantees mapped, writable and ours alone; `pattern` is a
    // separate heap buffer of `size` bytes, so the copy does not overlap.
    unsafe {
        for g in (guard_lo..offset).chain(guard_hi..guard_hi + GUARD) {
            base.add(g as usize).write_volatile(0xA5);
        }
        let dst = base.add(offset as usize);
        if size < 64 {
            // Byte by byte: exercises sub-line stores.
            for (k, &b) in pattern.iter().enumerate() {
                dst.add(k).write_volatile(b);
            }
        } else {
            std::ptr::copy_nonoverlapping(pattern.as_ptr(), dst, size as usize);
        }
        for (k, &want) in pattern.iter().enumerate() {
            let got = dst.add(k).read_volatile();
            if got != want {
                return Some(format!("byte {k} reads {got:#04x}, wrote {want:#04x}"));
            }
        }
        for g in (guard_lo..offset).chain(guard_hi..guard_hi + GUARD) {
            let got = base.add(g as usize).read_volatile();
            if got != 0xA5 {
                return Some(format!(
                    "guard byte at range offset {g} changed to {got:#04x}"
                ));
            }
        }
    }
    None
}
