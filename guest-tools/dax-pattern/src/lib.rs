//! Deterministic byte patterns written to and verified on a mapped device,
//! for checks that data crossed between guest, backing file and simulator.

use std::path::Path;

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
    let dev = Device::open(path, offset, len as u64).map_err(|source| PatternError::Map {
        path: path.display().to_string(),
        offset,
        len,
        source,
    })?;
    // SAFETY: `dev` maps [base, base + len) writable and outlives `buf`, and
    // nothing else in this process touches the mapping meanwhile; other
    // writers (the guest kernel, the simulator) are exactly what we check.
    let buf = unsafe { std::slice::from_raw_parts_mut(dev.base(), dev.len()) };
    if write {
        fill(buf, seed, offset);
        Ok(())
    } else {
        check(buf, seed, offset)
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
    fn missing_device_is_named() {
        let e = run(Path::new("/dev/dax9.9"), 0, 4096, 1, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Cannot map 4096 bytes of /dev/dax9.9"),
            "{e}"
        );
    }
}
