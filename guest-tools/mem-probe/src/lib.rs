//! `mem-probe`: what a program sees of CXL memory against local memory.
//! For each of two placements (modules: `buffer` places the memory,
//! `measure` measures it) a dependent-load pointer chase gives the time
//! per load and a streaming read the bandwidth; the report has both and
//! their CXL/local ratios.

pub mod buffer;
pub mod measure;

use serde::Serialize;

pub use buffer::{Buffer, BufferError, Placement};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// The memory under test (CXL).
    pub cxl: Placement,
    /// The baseline.
    pub local: Placement,
    /// Buffer bytes per placement.
    pub size: usize,
    /// Dependent loads per chase round.
    pub loads: u64,
    /// Passes over the buffer per stream round.
    pub passes: u32,
    /// Rounds of each measurement; the report gives their median.
    pub rounds: u32,
    /// Seed of the chase order.
    pub seed: u64,
}

/// One placement's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub placement: String,
    pub bytes: usize,
    /// Median nanoseconds per dependent load.
    pub chase_ns_per_load: f64,
    /// Median MB/s (10^6 bytes) of the streaming read.
    pub stream_mb_per_s: f64,
    pub chase_rounds_ns: Vec<f64>,
    pub stream_rounds_mb_per_s: Vec<f64>,
}

/// The probe's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub loads: u64,
    pub passes: u32,
    pub rounds: u32,
    pub local: Figures,
    pub cxl: Figures,
    /// CXL ns per load over local ns per load (> 1: CXL is slower).
    pub latency_ratio: f64,
    /// CXL MB/s over local MB/s (< 1: CXL is slower).
    pub bandwidth_ratio: f64,
}

/// Measures one placement: a buffer there, its chase cycle, then `rounds`
/// rounds of chase and stream, interleaved so a change in the machine's
/// load touches both alike.
pub fn measure(placement: &Placement, c: &Config) -> Result<Figures, BufferError> {
    let mut b = Buffer::place(placement, c.size)?;
    // A dax device's bytes are someone's data: kept here, put back after.
    let saved = matches!(placement, Placement::Dax(_)).then(|| b.words().to_vec());
    measure::link_cycle(b.words(), c.seed);
    let figures = rounds(placement, b.words(), c);
    if let Some(saved) = saved {
        b.words().copy_from_slice(&saved);
    }
    Ok(figures)
}

fn rounds(placement: &Placement, words: &[u64], c: &Config) -> Figures {
    // One untimed lap: the guest's and QEMU's TLBs warm, as they would be
    // for a program that has been running.
    measure::chase(words, (words.len() / 8) as u64);
    let mut chase = Vec::new();
    let mut stream = Vec::new();
    for _ in 0..c.rounds.max(1) {
        chase.push(measure::chase(words, c.loads));
        stream.push(measure::stream(words, c.passes));
    }
    Figures {
        placement: placement.to_string(),
        bytes: words.len() * 8,
        chase_ns_per_load: measure::median(&chase),
        stream_mb_per_s: measure::median(&stream),
        chase_rounds_ns: chase,
        stream_rounds_mb_per_s: stream,
    }
}

/// Measures the local placement, then the CXL one.
pub fn run(c: &Config) -> Result<Report, BufferError> {
    let local = measure(&c.local, c)?;
    let cxl = measure(&c.cxl, c)?;
    Ok(Report {
        loads: c.loads,
        passes: c.passes,
        rounds: c.rounds.max(1),
        latency_ratio: cxl.chase_ns_per_load / local.chase_ns_per_load.max(1e-9),
        bandwidth_ratio: cxl.stream_mb_per_s / local.stream_mb_per_s.max(1e-9),
        local,
        cxl,
    })
}

/// The report as a short table.
pub fn format_table(r: &Report) -> String {
    let mut s = format!("{:<20} {:>14} {:>12}\n", "placement", "ns per load", "MB/s");
    for f in [&r.local, &r.cxl] {
        s += &format!(
            "{:<20} {:>14.1} {:>12.1}\n",
            f.placement, f.chase_ns_per_load, f.stream_mb_per_s
        );
    }
    s += &format!(
        "cxl/local: latency {:.2}x, bandwidth {:.2}x\n",
        r.latency_ratio, r.bandwidth_ratio
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_against_local_gives_both_figures_and_ratios() {
        let c = Config {
            cxl: Placement::Local,
            local: Placement::Local,
            size: 1 << 20,
            loads: 20_000,
            passes: 2,
            rounds: 3,
            seed: 1,
        };
        let r = run(&c).unwrap();
        assert_eq!(r.local.chase_rounds_ns.len(), 3);
        assert!(r.latency_ratio > 0.0 && r.bandwidth_ratio > 0.0);
        let t = format_table(&r);
        assert!(t.contains("cxl/local: latency"), "{t}");
    }
}
