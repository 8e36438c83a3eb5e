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

/// A placement's buffer, linked for the chase; a dax device's bytes are
/// put back when it is dropped.
struct Linked {
    buffer: Buffer,
    /// The words measured: `size` of them even where the mapping is
    /// larger (a dax mapping is rounded up to the device's alignment).
    words: usize,
    /// A dax device's bytes are someone's data: kept, put back at drop.
    saved: Option<Vec<u64>>,
}

impl Linked {
    fn new(placement: &Placement, c: &Config) -> Result<Linked, BufferError> {
        let mut buffer = Buffer::place(placement, c.size)?;
        let words = (c.size / 8).min(buffer.words().len());
        let saved = matches!(placement, Placement::Dax(_)).then(|| buffer.words().to_vec());
        measure::link_cycle(&mut buffer.words()[..words], c.seed);
        let mut l = Linked {
            buffer,
            words,
            saved,
        };
        // One untimed lap: the guest's and QEMU's TLBs warm, as they would
        // be for a program that has been running.
        let w = l.words();
        measure::chase(w, (w.len() / 8) as u64);
        Ok(l)
    }

    fn words(&mut self) -> &[u64] {
        &self.buffer.words()[..self.words]
    }
}

impl Drop for Linked {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            self.buffer.words().copy_from_slice(&saved);
        }
    }
}

#[derive(Default)]
struct Rounds {
    chase: Vec<f64>,
    stream: Vec<f64>,
}

impl Rounds {
    fn figures(self, placement: &Placement, bytes: usize) -> Figures {
        Figures {
            placement: placement.to_string(),
            bytes,
            chase_ns_per_load: measure::median(&self.chase),
            stream_mb_per_s: measure::median(&self.stream),
            chase_rounds_ns: self.chase,
            stream_rounds_mb_per_s: self.stream,
        }
    }
}

/// Places and links both buffers, then measures them in alternation,
/// round by round (local chase, CXL chase, local stream, CXL stream), so
/// a change in the machine's speed touches both sides of each ratio alike.
pub fn run(c: &Config) -> Result<Report, BufferError> {
    let mut local = Linked::new(&c.local, c)?;
    let mut cxl = Linked::new(&c.cxl, c)?;
    let (mut l, mut x) = (Rounds::default(), Rounds::default());
    for _ in 0..c.rounds.max(1) {
        l.chase.push(measure::chase(local.words(), c.loads));
        x.chase.push(measure::chase(cxl.words(), c.loads));
        l.stream.push(measure::stream(local.words(), c.passes));
        x.stream.push(measure::stream(cxl.words(), c.passes));
    }
    let local = l.figures(&c.local, local.words * 8);
    let cxl = x.figures(&c.cxl, cxl.words * 8);
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
