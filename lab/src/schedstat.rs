//! How much of the host CPU a process got while it wanted it, from the
//! kernel's per-thread scheduler statistics
//! (`/proc/<pid>/task/<tid>/schedstat`: nanoseconds on a CPU, nanoseconds
//! runnable but waiting for one, timeslices). `lab run` samples QEMU's
//! threads before and after each suite: under TCG a guest's wall-clock
//! rates fall when QEMU waits for a CPU, so `summary.json` keeps the share
//! of its runnable time QEMU actually ran, and `lab compare` shows two
//! runs' ratio beside their rates (`gate::figures::Load`). Time QEMU
//! sleeps (an idle guest) is in neither count.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The counters of one process's threads at one moment, by thread id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    threads: BTreeMap<u32, (u64, u64)>,
}

/// What a process's threads did between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuShare {
    /// Seconds its threads ran on a CPU.
    pub run_seconds: f64,
    /// Seconds its threads were runnable but waited for a CPU.
    pub wait_seconds: f64,
    /// run / (run + wait): 1 when it never waited for a CPU (1 when it
    /// did not run at all, since nothing was held back).
    pub share: f64,
}

/// One schedstat line: (run ns, wait ns).
fn parse_line(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

impl Sample {
    /// The counters of every thread of `pid` now (threads that end while
    /// they are read are left out; none for a process that is gone).
    pub fn take(pid: u32) -> Sample {
        Sample::read(&Path::new("/proc").join(pid.to_string()).join("task"))
    }

    fn read(tasks: &Path) -> Sample {
        let mut threads = BTreeMap::new();
        for e in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let line = std::fs::read_to_string(e.path().join("schedstat")).ok();
            if let Some(c) = line.as_deref().and_then(parse_line) {
                threads.insert(tid, c);
            }
        }
        Sample { threads }
    }

    /// What the threads did since `earlier`: a thread started since then
    /// counts from zero; a thread that ended in between is lost (QEMU's
    /// vCPU threads live as long as the guest).
    pub fn since(&self, earlier: &Sample) -> CpuShare {
        let (mut run, mut wait) = (0u64, 0u64);
        for (tid, &(r, w)) in &self.threads {
            let (r0, w0) = earlier.threads.get(tid).copied().unwrap_or((0, 0));
            run += r.saturating_sub(r0);
            wait += w.saturating_sub(w0);
        }
        let share = if run + wait == 0 {
            1.0
        } else {
            run as f64 / (run + wait) as f64
        };
        CpuShare {
            run_seconds: run as f64 / 1e9,
            wait_seconds: wait as f64 / 1e9,
            share,
        }
    }
}

/// /proc/loadavg as it reads (empty where there is none), for a bench
/// report's load at its start and end.
pub fn loadavg_line() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The host's 1, 5 and 15 minute load averages, from /proc/loadavg.
pub fn load_average() -> Option<[f64; 3]> {
    let text = loadavg_line();
    let mut it = text.split_whitespace().map(|w| w.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(threads: &[(u32, u64, u64)]) -> Sample {
        Sample {
            threads: threads.iter().map(|&(t, r, w)| (t, (r, w))).collect(),
        }
    }

    #[test]
    fn share_is_run_over_runnable_time_across_threads() {
        let a = sample(&[(1, 1_000_000_000, 0), (2, 0, 0)]);
        let b = sample(&[
            (1, 2_000_000_000, 3_000_000_000),
            (2, 1_000_000_000, 0),
            (3, 0, 1_000_000_000),
        ]);
        let s = b.since(&a);
        assert_eq!(s.run_seconds, 2.0);
        assert_eq!(s.wait_seconds, 4.0);
        assert!((s.share - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(a.since(&a).share, 1.0);
    }

    #[test]
    fn parses_the_kernels_line_and_reads_this_process() {
        assert_eq!(parse_line("1086463 2510014 2\n"), Some((1086463, 2510014)));
        assert_eq!(parse_line("x"), None);
        // This test process has threads with counters, unless the kernel
        // lacks schedstat (then the sample is empty and the share 1).
        let me = Sample::take(std::process::id());
        let later = Sample::take(std::process::id());
        let s = later.since(&me);
        assert!(s.share > 0.0 && s.share <= 1.0, "{s:?}");
        if Path::new("/proc/self/schedstat").exists() {
            assert!(!me.threads.is_empty());
        }
        assert!(Sample::take(u32::MAX).threads.is_empty());
    }
}
