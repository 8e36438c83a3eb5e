//! The two measurements: a dependent-load pointer chase (latency per
//! load) and a streaming read (bandwidth), over one buffer.

use std::time::Instant;

/// Bytes between chased slots: one cache line, so every load is its own
/// line and (on real hardware) its own miss.
pub const LINE: usize = 64;

/// splitmix64: the chase order's random source, seeded so runs repeat.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Writes one random cycle through every line of `words` (Sattolo's
/// shuffle): the first word of each line holds the word index of the next
/// line, so a chase visits every line before it repeats and no load's
/// address is known before the previous load completes.
pub fn link_cycle(words: &mut [u64], seed: u64) {
    let stride = LINE / 8;
    let lines = words.len() / stride;
    let mut order: Vec<usize> = (0..lines).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..lines).rev() {
        let j = (rng.next() % i as u64) as usize;
        order.swap(i, j);
    }
    for k in 0..lines {
        let from = order[k] * stride;
        let to = order[(k + 1) % lines] * stride;
        words[from] = to as u64;
    }
}

/// Follows the cycle `loads` times; nanoseconds per load.
pub fn chase(words: &[u64], loads: u64) -> f64 {
    let base = words.as_ptr();
    let mut i = 0usize;
    let t = Instant::now();
    for _ in 0..loads {
        // SAFETY: link_cycle stored only word indexes of line starts
        // inside `words`, and i starts at 0; a volatile read keeps every
        // load in the loop.
        i = unsafe { base.add(i).read_volatile() } as usize;
    }
    let ns = t.elapsed().as_nanos() as f64;
    std::hint::black_box(i);
    ns / loads.max(1) as f64
}

/// Reads every word of `words` in order, `passes` times; MB/s (10^6 bytes).
pub fn stream(words: &[u64], passes: u32) -> f64 {
    let mut sum = 0u64;
    let t = Instant::now();
    for _ in 0..passes {
        for w in words {
            // SAFETY: a reference to a live word; volatile so each word is
            // one 8-byte load that the compiler cannot merge or skip.
            sum = sum.wrapping_add(unsafe { (w as *const u64).read_volatile() });
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    (words.len() * 8) as f64 * f64::from(passes) / secs.max(1e-9) / 1e6
}

/// The median of some samples (the mean of the middle two for an even
/// count); 0 for none.
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cycle_visits_every_line_once() {
        let mut w = vec![0u64; 1024 * 8];
        link_cycle(&mut w, 7);
        let mut seen = vec![false; 1024];
        let mut i = 0usize;
        for _ in 0..1024 {
            assert!(!seen[i / 8], "line {} visited twice", i / 8);
            seen[i / 8] = true;
            i = w[i] as usize;
        }
        assert_eq!(i, 0, "the chase comes back to its start after every line");
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn the_measurements_are_positive_and_the_median_is_the_middle() {
        let mut w = vec![0u64; 4096 * 8];
        link_cycle(&mut w, 1);
        assert!(chase(&w, 10_000) > 0.0);
        assert!(stream(&w, 2) > 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
