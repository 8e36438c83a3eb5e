//! Per-thread fault rows and their table, as fault-monitor prints it every
//! interval: PID TID COMM MAJOR MINOR TOTAL_MS AVG_MS MAX_MS MIN_US.

use serde::Serialize;

/// Log2 slots of the fault-time histogram (`HIST_SLOTS` in the C program).
pub const HIST_SLOTS: usize = 32;

/// The raw totals of one (pid, tid), as the kernel map holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub major: u64,
    pub minor: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub min_ns: u64,
    /// Faults per log2 slot of their time in ns: slot k is [2^k, 2^(k+1)).
    pub hist: [u64; HIST_SLOTS],
}

/// One bucket of a thread's fault-time histogram: faults that took from
/// `from_ns` up to (not including) `to_ns`, as bcc's funclatency prints
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub from_ns: u64,
    pub to_ns: u64,
    pub count: u64,
}

/// The buckets from the first slot with a fault to the last (empty ones
/// between kept, as funclatency shows them); none when there was no fault.
pub fn histogram(hist: &[u64; HIST_SLOTS]) -> Vec<Bucket> {
    let Some(first) = hist.iter().position(|c| *c > 0) else {
        return Vec::new();
    };
    let last = hist.iter().rposition(|c| *c > 0).unwrap_or(first);
    (first..=last)
        .map(|k| Bucket {
            from_ns: if k == 0 { 0 } else { 1 << k },
            to_ns: 1 << (k + 1),
            count: hist[k],
        })
        .collect()
}

/// One (pid, tid)'s totals since the monitor started.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub major: u64,
    pub minor: u64,
    /// Calls that ended in VM_FAULT_ERROR (not counted as faults, as in the kernel).
    pub errors: u64,
    pub total_ms: f64,
    pub avg_ms: f64,
    pub max_ms: f64,
    pub min_us: f64,
    /// The log2 histogram of its fault times (the JSON report only).
    pub histogram: Vec<Bucket>,
}

impl Row {
    pub fn new(pid: u32, tid: u32, comm: String, c: &Counts) -> Row {
        let n = c.major + c.minor;
        Row {
            pid,
            tid,
            comm,
            major: c.major,
            minor: c.minor,
            errors: c.errors,
            total_ms: c.total_ns as f64 / 1e6,
            avg_ms: if n == 0 {
                0.0
            } else {
                c.total_ns as f64 / n as f64 / 1e6
            },
            max_ms: c.max_ns as f64 / 1e6,
            min_us: if n == 0 { 0.0 } else { c.min_ns as f64 / 1e3 },
            histogram: histogram(&c.hist),
        }
    }

    pub fn faults(&self) -> u64 {
        self.major + self.minor
    }
}

/// The table, rows sorted by pid then tid.
pub fn format(rows: &[Row]) -> String {
    let mut rows: Vec<&Row> = rows.iter().collect();
    rows.sort_by_key(|r| (r.pid, r.tid));
    let mut s = format!(
        "{:>7} {:>7} {:<16} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8}\n",
        "PID", "TID", "COMM", "MAJOR", "MINOR", "TOTAL_MS", "AVG_MS", "MAX_MS", "MIN_US"
    );
    for r in rows {
        s.push_str(&format!(
            "{:>7} {:>7} {:<16} {:>8} {:>8} {:>10.3} {:>8.3} {:>8.3} {:>8.1}\n",
            r.pid, r.tid, r.comm, r.major, r.minor, r.total_ms, r.avg_ms, r.max_ms, r.min_us
        ));
    }
    s
}

/// A comm from the kernel's NUL-padded 16 bytes.
pub fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(major: u64, minor: u64, errors: u64, total_ns: u64, max_ns: u64, min_ns: u64) -> Counts {
        Counts {
            major,
            minor,
            errors,
            total_ns,
            max_ns,
            min_ns,
            hist: [0; HIST_SLOTS],
        }
    }

    #[test]
    fn the_histogram_runs_from_the_first_to_the_last_slot_used() {
        let mut hist = [0; HIST_SLOTS];
        assert!(histogram(&hist).is_empty());
        // Faults of 1.5 us (slot 10: 1024..2048 ns) and 5 us (slot 12).
        hist[10] = 3;
        hist[12] = 1;
        let h = histogram(&hist);
        assert_eq!(
            h,
            [
                Bucket {
                    from_ns: 1024,
                    to_ns: 2048,
                    count: 3
                },
                Bucket {
                    from_ns: 2048,
                    to_ns: 4096,
                    count: 0
                },
                Bucket {
                    from_ns: 4096,
                    to_ns: 8192,
                    count: 1
                },
            ]
        );
        let mut zero = [0; HIST_SLOTS];
        zero[0] = 2;
        assert_eq!(
            histogram(&zero)[0],
            Bucket {
                from_ns: 0,
                to_ns: 2,
                count: 2
            }
        );
        let r = Row::new(
            1,
            2,
            "w".into(),
            &Counts {
                hist,
                ..c(0, 4, 0, 9_500, 5_000, 1_500)
            },
        );
        assert_eq!(r.histogram.len(), 3);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["histogram"][0],
            serde_json::json!({"from_ns": 1024, "to_ns": 2048, "count": 3})
        );
    }

    #[test]
    fn derives_averages_and_units() {
        let r = Row::new(
            10,
            11,
            "w".into(),
            &c(1, 3, 0, 8_000_000, 5_000_000, 250_000),
        );
        assert_eq!(
            (r.total_ms, r.avg_ms, r.max_ms, r.min_us),
            (8.0, 2.0, 5.0, 250.0)
        );
        let idle = Row::new(1, 1, "x".into(), &c(0, 0, 2, 0, 0, u64::MAX));
        assert_eq!(
            (idle.avg_ms, idle.min_us),
            (0.0, 0.0),
            "no faults: no average, no minimum"
        );
    }

    #[test]
    fn formats_the_seed_columns_sorted() {
        let rows = [
            Row::new(20, 21, "b".into(), &c(0, 1, 0, 1000, 1000, 1000)),
            Row::new(
                10,
                12,
                "mmap-workload".into(),
                &c(7, 40, 0, 94_500_000, 12_250_000, 3_500),
            ),
        ];
        let t = format(&rows);
        let expected = concat!(
            "    PID     TID COMM                MAJOR    MINOR   TOTAL_MS   AVG_MS   MAX_MS   MIN_US\n",
            "     10      12 mmap-workload           7       40     94.500    2.011   12.250      3.5\n",
            "     20      21 b                       0        1      0.001    0.001    0.001      1.0\n",
        );
        assert_eq!(t, expected);
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm(b"mmap-workload\0\0\0"), "mmap-workload");
        assert_eq!(comm(b"0123456789abcdef"), "0123456789abcdef");
    }
}
