//! Deterministic byte patterns written to and verified on a mapped device,
//! for checks that data crossed between guest, backing file and simulator.

use std::fs::OpenOptions;
use std::path::Path;

use memmap2::MmapOptions;

/// Errors of the pattern tool.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("Cannot open {path}; is it a dax device or a file that exists?")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot map {len} bytes of {path} at offset {offset:#x}; device-dax maps only whole, aligned ranges (usually 2 MiB).")]
    Map {
        path: String,
        offset: u64,
        len: usize,
        #[source]
        source: std::io::Error,
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

/// Maps `len` bytes of `path` at `offset` (both aligned to 2 MiB by the
/// caller for device-dax) and writes or verifies the pattern.
pub fn run(
    path: &Path,
    offset: u64,
    len: usize,
    seed: u64,
    write: bool,
) -> Result<(), PatternError> {
    let p = path.display().to_string();
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|source| PatternError::Open {
            path: p.clone(),
            source,
        })?;
    let map_err = |source| PatternError::Map {
        path: p.clone(),
        offset,
        len,
        source,
    };
    // SAFETY: the mapping is private to this process's use below; other
    // writers (the guest kernel, the simulator) are exactly what we check.
    if write {
        let mut m = unsafe { MmapOptions::new().offset(offset).len(len).map_mut(&file) }
            .map_err(map_err)?;
        fill(&mut m, seed, offset);
        m.flush().map_err(|source| PatternError::Map {
            path: p.clone(),
            offset,
            len,
            source,
        })?;
        Ok(())
    } else {
        let m =
            unsafe { MmapOptions::new().offset(offset).len(len).map(&file) }.map_err(map_err)?;
        check(&m, seed, offset)
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
        assert!(e.to_string().starts_with("Cannot open /dev/dax9.9"), "{e}");
    }
}
