//! Deterministic byte patterns written to and verified on a mapped device,
//! for checks that data crossed between guest, backing file and simulator;
//! and saving a device range to a file and restoring it (so a destructive
//! test can run on persistent memory and leave its data as it was).

use std::path::Path;

use dax_tester::cpu::{sfence, CpuFeatures, Flush};
use dax_tester::device::{Device, DeviceError};

/// Errors of the pattern tool.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("Cannot map {len} bytes of {path} at offset {offset:#x}.")]
    Map {
        path: String,
        offset: u64,
        len: usize,
        #[source]
        source: DeviceError,
    },
    #[error("Cannot {action} {path}.")]
    File {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file} holds {found} bytes but the range is {len} bytes; it is not a copy of this range."
    )]
    SavedLength {
        file: String,
        found: usize,
        len: usize,
    },
    #[error("After restoring {len} bytes at {offset:#x} of {path}, {mismatches} bytes differ from the saved copy (first at offset {first:#x}).")]
    NotRestored {
        path: String,
        offset: u64,
        len: usize,
        mismatches: usize,
        first: u64,
    },
    #[error("{mismatches} of {len} bytes differ from the pattern (first at offset {first:#x}: expected {expected:#04x}, found {found:#04x}).")]
    Mismatch {
        len: usize,
        mismatches: usize,
        first: u64,
        expected: u8,
        found: u8,
    },
}

/// The pattern byte at absolute offset `pos` for `seed`: a cheap hash so
/// that shifted or stale data never matches by accident.
pub fn pattern_byte(seed: u64, pos: u64) -> u8 {
    let mut x = seed ^ pos.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x ^ (x >> 29)) as u8
}

/// Fills `buf`, which sits at absolute offset `base`, with the pattern.
pub fn fill(buf: &mut [u8], seed: u64, base: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, base + i as u64);
    }
}

/// Checks `buf` (at absolute offset `base`) against the pattern.
pub fn check(buf: &[u8], seed: u64, base: u64) -> Result<(), PatternError> {
    let mut first = None;
    let mut mismatches = 0;
    for (i, &b) in buf.iter().enumerate() {
        let want = pattern_byte(seed, base + i as u64);
        if b != want {
            mismatches += 1;
            first.get_or_insert((base + i as u64, want, b));
        }
    }
    match first {
        None => Ok(()),
        Some((first, expected, found)) => Err(PatternError::Mismatch {
            len: buf.len(),
            mismatches,
            first,
            expected,
            found,
        }),
    }
}

/// Maps `len` bytes of `path` at `offset` (dax-tester's mapping: aligned
/// outwards to the device alignment, MAP_SYNC where the device allows it)
/// and writes or verifies the pattern.
pub fn run(
    path: &Path,
    offset: u64,
    len: usize,
    seed: u64,
    write: bool,
) -> Result<(), PatternError> {
    let dev = map(path, offset, len)?;
    // SAFETY: the mapping covers [base, base + len) while `dev` lives; other
    // writers (the guest kernel, the simulator) are exactly what we check.
    let buf = unsafe { std::slice::from_raw_parts_mut(dev.base(), dev.len()) };
    if write {
        fill(buf, seed, offset);
        Ok(())
    } else {
        check(buf, seed, offset)
    }
}

/// Copies device memory into RAM in aligned 8-byte loads: under TCG every
/// access to CXL memory is an MMIO callback, and `memcpy` may use `rep movsb`
/// (one callback per byte).
fn read_words(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    // SAFETY: u64 has no invalid bit patterns.
    let (head, words, tail) = unsafe { src.align_to::<u64>() };
    out.extend_from_slice(head);
    for w in words {
        // SAFETY: `w` is an aligned element of the mapping.
        out.extend_from_slice(&unsafe { std::ptr::read_volatile(w) }.to_ne_bytes());
    }
    out.extend_from_slice(tail);
    out
}

/// Writes `src` to device memory in aligned 8-byte stores (see `read_words`).
fn write_words(dst: &mut [u8], src: &[u8]) {
    // SAFETY: u64 has no invalid bit patterns.
    let (head, words, tail) = unsafe { dst.align_to_mut::<u64>() };
    let (h, rest) = src.split_at(head.len());
    head.copy_from_slice(h);
    let (mid, t) = rest.split_at(words.len() * 8);
    for (w, chunk) in words.iter_mut().zip(mid.chunks_exact(8)) {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8-byte chunk"));
        // SAFETY: `w` is an aligned element of the mapping.
        unsafe { std::ptr::write_volatile(w, v) };
    }
    tail.copy_from_slice(t);
}

fn map(path: &Path, offset: u64, len: usize) -> Result<Device, PatternError> {
    Device::open(path, offset, len as u64).map_err(|source| PatternError::Map {
        path: path.display().to_string(),
        offset,
        len,
        source,
    })
}

/// Copies `len` bytes of `path` at `offset` into the file `to`.
pub fn save(path: &Path, offset: u64, len: usize, to: &Path) -> Result<(), PatternError> {
    let dev = map(path, offset, len)?;
    // SAFETY: the mapping covers [base, base + len) while `dev` lives.
    let buf = unsafe { std::slice::from_raw_parts(dev.base().cast_const(), dev.len()) };
    std::fs::write(to, read_words(buf)).map_err(|source| PatternError::File {
        action: "write the saved copy to",
        path: to.display().to_string(),
        source,
    })
}

/// Writes the copy in `from` (made by `save` of the same range) back to
/// `len` bytes of `path` at `offset`, writes the lines back from the CPU
/// cache (CLWB, CLFLUSHOPT or CLFLUSH, then SFENCE) and checks that the
/// range now equals the copy.
pub fn restore(path: &Path, offset: u64, len: usize, from: &Path) -> Result<(), PatternError> {
    let saved = std::fs::read(from).map_err(|source| PatternError::File {
        action: "read the saved copy",
        path: from.display().to_string(),
        source,
    })?;
    if saved.len() != len {
        return Err(PatternError::SavedLength {
            file: from.display().to_string(),
            found: saved.len(),
            len,
        });
    }
    let dev = map(path, offset, len)?;
    // SAFETY: the mapping covers [base, base + len) while `dev` lives.
    let buf = unsafe { std::slice::from_raw_parts_mut(dev.base(), dev.len()) };
    write_words(buf, &saved);
    let (flush, _) = Flush::select(&CpuFeatures::detect());
    flush.range(buf.as_ptr(), buf.len());
    sfence();
    let back = read_words(buf);
    if back == saved {
        return Ok(());
    }
    let mut diff = back
        .iter()
        .zip(&saved)
        .enumerate()
        .filter(|(_, (a, b))| a != b);
    match diff.next() {
        None => Ok(()),
        Some((first, _)) => Err(PatternError::NotRestored {
            path: path.display().to_string(),
            offset,
            len,
            mismatches: 1 + diff.count(),
            first: offset + first as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_verify_a_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        run(f.path(), 4096, 8192, 7, true).unwrap();
        run(f.path(), 4096, 8192, 7, false).unwrap();
        let e = run(f.path(), 4096, 8192, 8, false).unwrap_err();
        assert!(
            e.to_string()
                .contains("of 8192 bytes differ from the pattern"),
            "{e}"
        );
        let bytes = std::fs::read(f.path()).unwrap();
        assert!(bytes[..4096].iter().all(|&b| b == 0));
        check(&bytes[4096..12288], 7, 4096).unwrap();
    }

    #[test]
    fn save_then_restore_brings_back_the_range() {
        let dev = tempfile::NamedTempFile::new().unwrap();
        dev.as_file().set_len(1 << 20).unwrap();
        let copy = tempfile::NamedTempFile::new().unwrap();
        run(dev.path(), 0, 1 << 20, 3, true).unwrap();
        save(dev.path(), 8192, 16384, copy.path()).unwrap();
        assert_eq!(std::fs::metadata(copy.path()).unwrap().len(), 16384);
        // A destructive test overwrites the range …
        run(dev.path(), 8192, 16384, 4, true).unwrap();
        assert!(run(dev.path(), 0, 1 << 20, 3, false).is_err());
        // … and the restore brings every byte back.
        restore(dev.path(), 8192, 16384, copy.path()).unwrap();
        run(dev.path(), 0, 1 << 20, 3, false).unwrap();
        // Ranges that start and end off an 8-byte boundary.
        save(dev.path(), 4099, 1000, copy.path()).unwrap();
        run(dev.path(), 4099, 1000, 4, true).unwrap();
        restore(dev.path(), 4099, 1000, copy.path()).unwrap();
        run(dev.path(), 0, 1 << 20, 3, false).unwrap();
        save(dev.path(), 8192, 16384, copy.path()).unwrap();
        let e = restore(dev.path(), 0, 4096, copy.path()).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "holds 16384 bytes but the range is 4096 bytes; it is not a copy of this range."
            ),
            "{e}"
        );
        let e = restore(dev.path(), 0, 4096, Path::new("/nonexistent/copy")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Cannot read the saved copy /nonexistent/copy."
        );
    }

    #[test]
    fn missing_device_is_named() {
        let e = run(Path::new("/dev/dax9.9"), 0, 4096, 1, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Cannot map 4096 bytes of /dev/dax9.9"),
            "{e}"
        );
    }
}
