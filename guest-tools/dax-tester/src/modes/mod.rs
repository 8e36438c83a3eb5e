//! One module per check. Each returns a serialisable report with `passed`.

pub mod atomic;
pub mod byte;
pub mod latency;
pub mod mwait;
pub mod persist;
pub mod throughput;

use crate::clock::Clock;
use crate::config::Config;
use crate::cpu::CpuFeatures;
use crate::device::Device;

/// What every check gets.
pub struct Env<'a> {
    pub dev: &'a Device,
    pub cpu: &'a CpuFeatures,
    pub clock: &'a Clock,
    pub cfg: &'a Config,
}

/// A small deterministic generator (xorshift64*), for patterns and offsets.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
