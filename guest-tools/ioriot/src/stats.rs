//! Replay statistics: per operation counts, bytes, errors, results that
//! differ from the capture, refusals by confinement, and latency
//! percentiles from a mergeable log-linear histogram (workers in other
//! processes send theirs as JSON). Text and JSON output.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::op::Op;

/// Sub-buckets per power of two: percentiles are exact to 1/16 (6 %).
const SUB: u32 = 16;

/// Latency histogram in ns: bucket = (log2 range, 1/16 step within it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Histogram {
    buckets: BTreeMap<u32, u64>,
    count: u64,
    max: u64,
}

fn bucket(v: u64) -> u32 {
    if v < u64::from(SUB) {
        return v as u32;
    }
    let log = 63 - v.leading_zeros();
    let shift = log - SUB.trailing_zeros();
    let sub = ((v >> shift) as u32) - SUB;
    (log - SUB.trailing_zeros() + 1) * SUB + sub
}

/// The largest value in a bucket.
fn upper(b: u32) -> u64 {
    if b < SUB {
        return u64::from(b);
    }
    let range = b / SUB - 1;
    let sub = u64::from(b % SUB + SUB);
    ((sub + 1) << range) - 1
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        *self.buckets.entry(bucket(v)).or_default() += 1;
        self.count += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (b, n) in &o.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
        self.count += o.count;
        self.max = self.max.max(o.max);
    }

    /// The value at or below which `q` (0..=1) of the samples lie (the
    /// bucket's upper edge, capped at the maximum seen).
    pub fn percentile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return upper(*b).min(self.max);
            }
        }
        self.max
    }
}

/// Counters of one operation type.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OpStats {
    pub count: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Calls whose success or failure differed from the capture's.
    pub mismatches: u64,
    /// Calls refused by confinement (never issued).
    pub refused: u64,
    /// Calls not issued because their arguments cannot be replayed (e.g.
    /// fcntl commands taking a pointer).
    pub skipped: u64,
    pub bytes: u64,
    pub latency: Histogram,
}

/// The statistics of one replay (or one worker of it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub ops: BTreeMap<String, OpStats>,
    pub wall_ns: u64,
    /// The first refusals' messages (at most `MAX_MESSAGES`).
    pub refusals: Vec<String>,
}

pub const MAX_MESSAGES: usize = 20;

impl Stats {
    /// The counters of `name` (called for every replayed operation: no
    /// allocation once the name is known).
    pub fn op(&mut self, name: &str) -> &mut OpStats {
        if !self.ops.contains_key(name) {
            self.ops.insert(name.to_owned(), OpStats::default());
        }
        self.ops.get_mut(name).expect("just inserted")
    }

    pub fn refuse(&mut self, name: &str, message: String) {
        self.op(name).refused += 1;
        if self.refusals.len() < MAX_MESSAGES {
            self.refusals.push(format!("{name}: {message}"));
        }
    }

    pub fn merge(&mut self, o: &Stats) {
        for (k, v) in &o.ops {
            let s = self.op(k);
            s.count += v.count;
            s.errors += v.errors;
            s.mismatches += v.mismatches;
            s.refused += v.refused;
            s.skipped += v.skipped;
            s.bytes += v.bytes;
            s.latency.merge(&v.latency);
        }
        self.wall_ns = self.wall_ns.max(o.wall_ns);
        for m in &o.refusals {
            if self.refusals.len() < MAX_MESSAGES {
                self.refusals.push(m.clone());
            }
        }
    }

    fn total(&self, f: impl Fn(&OpStats) -> u64) -> u64 {
        self.ops.values().map(f).sum()
    }

    /// The report: totals, rates against the captured run, per operation figures.
    pub fn report(&self, source_ops: u64, source_span_ns: u64) -> Report {
        let ops = self.total(|s| s.count);
        let rate = |n: u64, ns: u64| {
            if ns == 0 {
                0.0
            } else {
                n as f64 * 1e9 / ns as f64
            }
        };
        let replay_rate = rate(ops, self.wall_ns);
        let source_rate = rate(source_ops, source_span_ns);
        Report {
            format: 1,
            wall_ns: self.wall_ns,
            ops,
            errors: self.total(|s| s.errors),
            mismatches: self.total(|s| s.mismatches),
            refused: self.total(|s| s.refused),
            skipped: self.total(|s| s.skipped),
            bytes_read: self
                .ops
                .iter()
                .filter(|(k, _)| Op::from_name(k).is_some_and(Op::reads))
                .map(|(_, s)| s.bytes)
                .sum(),
            bytes_written: self
                .ops
                .iter()
                .filter(|(k, _)| Op::from_name(k).is_some_and(Op::writes))
                .map(|(_, s)| s.bytes)
                .sum(),
            ops_per_s: replay_rate,
            source_ops,
            source_span_ns,
            source_ops_per_s: source_rate,
            rate_vs_source: if source_rate > 0.0 {
                replay_rate / source_rate
            } else {
                0.0
            },
            per_op: self
                .ops
                .iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        OpReport {
                            count: s.count,
                            errors: s.errors,
                            mismatches: s.mismatches,
                            refused: s.refused,
                            skipped: s.skipped,
                            bytes: s.bytes,
                            p50_ns: s.latency.percentile(0.50),
                            p90_ns: s.latency.percentile(0.90),
                            p99_ns: s.latency.percentile(0.99),
                            max_ns: s.latency.max,
                        },
                    )
                })
                .collect(),
            refusals: self.refusals.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpReport {
    pub count: u64,
    pub errors: u64,
    pub mismatches: u64,
    pub refused: u64,
    pub skipped: u64,
    pub bytes: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// The replay's statistics as printed and saved (`-S FILE`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub format: u32,
    pub wall_ns: u64,
    pub ops: u64,
    pub errors: u64,
    pub mismatches: u64,
    pub refused: u64,
    pub skipped: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub ops_per_s: f64,
    pub source_ops: u64,
    pub source_span_ns: u64,
    pub source_ops_per_s: f64,
    /// Replay rate over the captured run's own rate.
    pub rate_vs_source: f64,
    pub per_op: BTreeMap<String, OpReport>,
    pub refusals: Vec<String>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replayed {} ops in {:.3} s ({:.0} ops/s; captured run {:.0} ops/s; ratio {:.2})",
            self.ops,
            self.wall_ns as f64 / 1e9,
            self.ops_per_s,
            self.source_ops_per_s,
            self.rate_vs_source
        );
        let _ = writeln!(
            s,
            "errors {}, results differing from the capture {}, refused by confinement {}, skipped {}, read {} B, written {} B",
            self.errors, self.mismatches, self.refused, self.skipped, self.bytes_read, self.bytes_written
        );
        let _ = writeln!(
            s,
            "{:<16} {:>8} {:>6} {:>6} {:>7} {:>12} {:>10} {:>10} {:>10} {:>10}",
            "op",
            "count",
            "errors",
            "differ",
            "refused",
            "bytes",
            "p50 ns",
            "p90 ns",
            "p99 ns",
            "max ns"
        );
        for (k, o) in &self.per_op {
            let _ = writeln!(
                s,
                "{:<16} {:>8} {:>6} {:>6} {:>7} {:>12} {:>10} {:>10} {:>10} {:>10}",
                k,
                o.count,
                o.errors,
                o.mismatches,
                o.refused,
                o.bytes,
                o.p50_ns,
                o.p90_ns,
                o.p99_ns,
                o.max_ns
            );
        }
        for r in &self.refusals {
            let _ = writeln!(s, "refused: {r}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_sixteenth() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 5000.0), (0.9, 9000.0), (0.99, 9900.0)] {
            let p = h.percentile(q) as f64;
            assert!(p >= exact && p <= exact * 1.07, "q {q}: {p}");
        }
        assert_eq!(h.percentile(1.0), 10_000);
        let mut m = Histogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count, 20_000);
        assert_eq!(m.percentile(0.5), h.percentile(0.5));
        for v in [0u64, 1, 15, 16, 17, 31, 32, 1000, u64::MAX / 2] {
            assert!(upper(bucket(v)) >= v, "{v}");
        }
    }

    #[test]
    fn merged_stats_add_up_and_report_rates() {
        let mut a = Stats::default();
        a.op("read").count = 3;
        a.op("read").bytes = 30;
        a.wall_ns = 1_000_000_000;
        let mut b = Stats::default();
        b.op("read").count = 1;
        b.op("write").count = 2;
        b.op("write").bytes = 7;
        b.refuse("openat", "Path 'x' is absolute".into());
        a.merge(&b);
        let r = a.report(3, 1_000_000_000);
        assert_eq!(r.ops, 6);
        assert_eq!(r.bytes_read, 30);
        assert_eq!(r.bytes_written, 7);
        assert_eq!(r.refused, 1);
        assert!((r.rate_vs_source - 2.0).abs() < 1e-9);
        assert!(r.text().contains("refused: openat: Path 'x' is absolute"));
    }
}
