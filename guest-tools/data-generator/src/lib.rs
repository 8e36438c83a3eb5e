//! Test files for the page-fault suites: `random` (seeded pseudo-random
//! bytes), `sequential` (every 8-byte word holds its own offset, so a reader
//! can check where a page came from) and `sparse` (one 4 KiB block in every
//! [`SPARSE_EVERY`] written, the rest left as holes). The file is fsynced so
//! that dropping the page cache afterwards really makes it cold.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

pub const BLOCK: u64 = 4096;
/// In a sparse file, one block in this many holds data.
pub const SPARSE_EVERY: u64 = 16;
const CHUNK: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Random,
    Sequential,
    Sparse,
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pattern::Random => "random",
            Pattern::Sequential => "sequential",
            Pattern::Sparse => "sparse",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub pattern: Pattern,
    pub seed: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub path: String,
    pub pattern: Pattern,
    pub size_bytes: u64,
    pub bytes_written: u64,
    pub elapsed_ms: f64,
    pub mib_per_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("The size must be at least one MiB.")]
    Empty,
    #[error("Cannot create {path}.")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot write {path}.")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// SplitMix64: small, seedable and good enough for test data.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Fills `buf`, which starts at file offset `offset`, with the pattern.
pub fn fill(pattern: Pattern, rng: &mut SplitMix64, offset: u64, buf: &mut [u8]) {
    match pattern {
        Pattern::Random | Pattern::Sparse => {
            for w in buf.chunks_mut(8) {
                let v = rng.next_u64().to_le_bytes();
                w.copy_from_slice(&v[..w.len()]);
            }
        }
        Pattern::Sequential => {
            for (i, w) in buf.chunks_mut(8).enumerate() {
                let v = (offset + 8 * i as u64).to_le_bytes();
                w.copy_from_slice(&v[..w.len()]);
            }
        }
    }
}

pub fn generate(cfg: &Config) -> Result<Summary, GenerateError> {
    if cfg.size_bytes < (1 << 20) {
        return Err(GenerateError::Empty);
    }
    let path = cfg.path.display().to_string();
    let wr = |source| GenerateError::Write {
        path: path.clone(),
        source,
    };
    let started = Instant::now();
    let mut file = File::create(&cfg.path).map_err(|source| GenerateError::Create {
        path: path.clone(),
        source,
    })?;
    let mut rng = SplitMix64::new(cfg.seed);
    let mut written = 0u64;
    match cfg.pattern {
        Pattern::Sparse => {
            let mut block = vec![0u8; BLOCK as usize];
            let mut off = 0;
            while off < cfg.size_bytes {
                fill(cfg.pattern, &mut rng, off, &mut block);
                file.write_all_at(&block, off).map_err(wr)?;
                written += BLOCK;
                off += BLOCK * SPARSE_EVERY;
            }
            // Holes up to the full size.
            file.set_len(cfg.size_bytes).map_err(wr)?;
        }
        _ => {
            let mut buf = vec![0u8; CHUNK];
            while written < cfg.size_bytes {
                let n = (cfg.size_bytes - written).min(CHUNK as u64) as usize;
                fill(cfg.pattern, &mut rng, written, &mut buf[..n]);
                file.write_all(&buf[..n]).map_err(wr)?;
                written += n as u64;
            }
        }
    }
    file.sync_all().map_err(wr)?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Summary {
        path,
        pattern: cfg.pattern,
        size_bytes: cfg.size_bytes,
        bytes_written: written,
        elapsed_ms: elapsed * 1e3,
        mib_per_s: written as f64 / (1 << 20) as f64 / elapsed.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn random_is_reproducible_for_a_seed() {
        let (mut a, mut b) = (vec![0u8; 64], vec![0u8; 64]);
        fill(Pattern::Random, &mut SplitMix64::new(7), 0, &mut a);
        fill(Pattern::Random, &mut SplitMix64::new(7), 0, &mut b);
        assert_eq!(a, b);
        fill(Pattern::Random, &mut SplitMix64::new(8), 0, &mut b);
        assert_ne!(a, b);
        // The first output of SplitMix64 seeded with 0 is a published value.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn sequential_words_hold_their_offsets() {
        let mut b = vec![0u8; 32];
        fill(Pattern::Sequential, &mut SplitMix64::new(0), 4096, &mut b);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 4096);
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 4096 + 24);
    }

    #[test]
    fn writes_files_of_each_pattern() {
        let dir = tempfile::tempdir().unwrap();
        for p in [Pattern::Random, Pattern::Sequential, Pattern::Sparse] {
            let path = dir.path().join(p.to_string());
            let s = generate(&Config {
                path: path.clone(),
                size_bytes: 2 << 20,
                pattern: p,
                seed: 3,
            })
            .unwrap();
            let md = std::fs::metadata(&path).unwrap();
            assert_eq!(md.len(), 2 << 20);
            if p == Pattern::Sparse {
                assert_eq!(s.bytes_written, (2 << 20) / SPARSE_EVERY);
                assert!(md.blocks() * 512 < md.len(), "a sparse file has holes");
            } else {
                assert_eq!(s.bytes_written, 2 << 20);
            }
        }
        let seq = std::fs::read(dir.path().join("sequential")).unwrap();
        let at = 1_048_576usize + 64;
        assert_eq!(
            u64::from_le_bytes(seq[at..at + 8].try_into().unwrap()),
            at as u64
        );
    }

    #[test]
    fn refuses_an_empty_size() {
        let e = generate(&Config {
            path: "/nonexistent/x".into(),
            size_bytes: 0,
            pattern: Pattern::Random,
            seed: 0,
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "The size must be at least one MiB.");
    }
}
