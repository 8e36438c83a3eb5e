//! The advice daemon's decisions. Every interval, each process that faulted
//! is judged on that interval's faults: when its sequential ratio stays at or
//! above the threshold for the required number of intervals, it is advised
//! on the range next to its last fault (WILLNEED ahead of it; COLD or
//! PAGEOUT on the pages it has passed), through `process_madvise` from
//! outside the process. Every decision carries its evidence. A process
//! that is no longer sampled (it exited) is forgotten, and a pid reused by
//! a new process starts from nothing.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use serde::Serialize;

pub const PAGE: u64 = 4096;

/// What `process_madvise` accepts on 6.12 (mm/madvise.c,
/// process_madvise_behavior_valid: COLD, PAGEOUT, WILLNEED, COLLAPSE);
/// COLLAPSE is left out, it is about huge pages, not access order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Advice {
    #[serde(rename = "MADV_WILLNEED")]
    Willneed,
    #[serde(rename = "MADV_COLD")]
    Cold,
    #[serde(rename = "MADV_PAGEOUT")]
    Pageout,
}

impl Advice {
    pub fn value(self) -> libc::c_int {
        match self {
            Advice::Willneed => libc::MADV_WILLNEED,
            Advice::Cold => libc::MADV_COLD,
            Advice::Pageout => libc::MADV_PAGEOUT,
        }
    }
    /// WILLNEED prefetches ahead of the scan; the others release what it passed.
    pub fn ahead(self) -> bool {
        matches!(self, Advice::Willneed)
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Policy {
    /// Sequential faults / faults in an interval, 0..=1.
    pub threshold: f64,
    /// Fewer faults in an interval say nothing about the pattern.
    pub min_faults: u64,
    /// Consecutive intervals at or above the threshold before advising.
    pub intervals: u32,
    pub window_pages: u64,
    pub advice: Advice,
}

/// A process's cumulative counts, as the collector's map holds them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub pid: u32,
    pub comm: String,
    pub faults: u64,
    pub sequential: u64,
    pub last_address: u64,
    /// When the collector first saw the process (kernel monotonic ns): two
    /// processes that had the same pid have different values.
    pub born_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Advise,
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub interval: u64,
    pub pid: u32,
    pub comm: String,
    pub action: Action,
    pub reason: String,
    /// Evidence: this interval's faults and sequential faults.
    pub faults: u64,
    pub sequential: u64,
    pub ratio: f64,
    pub threshold: f64,
    pub streak: u32,
    pub required: u32,
    pub last_address: u64,
    pub advice: Option<Advice>,
    /// The byte range to advise, before clipping to the mapping.
    pub start: Option<u64>,
    pub len: Option<u64>,
    /// Filled in by the daemon when it resolves and applies the advice.
    pub mapping: Option<String>,
    pub dry_run: bool,
    pub applied: bool,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Prev {
    born_ns: u64,
    faults: u64,
    sequential: u64,
    streak: u32,
    /// Pages already advised run up to here (exclusive, as a page number).
    advised_to: u64,
}

#[derive(Debug)]
pub struct Tracker {
    policy: Policy,
    dry_run: bool,
    interval: u64,
    prev: HashMap<u32, Prev>,
}

impl Tracker {
    pub fn new(policy: Policy, dry_run: bool) -> Tracker {
        Tracker {
            policy,
            dry_run,
            interval: 0,
            prev: HashMap::new(),
        }
    }

    /// Processes the tracker remembers (those of the last samples).
    pub fn tracked(&self) -> usize {
        self.prev.len()
    }

    /// Judges one interval's samples (every running process the collector
    /// knows); a decision for every process that faulted. Processes missing
    /// from the samples have exited and are forgotten.
    pub fn evaluate(&mut self, samples: &[Sample]) -> Vec<Decision> {
        self.interval += 1;
        let live: HashSet<u32> = samples.iter().map(|s| s.pid).collect();
        self.prev.retain(|pid, _| live.contains(pid));
        let pol = self.policy;
        let mut out = Vec::new();
        for s in samples {
            let p = self.prev.entry(s.pid).or_default();
            if p.born_ns != s.born_ns {
                // A new process (or a reused pid): nothing carries over.
                *p = Prev {
                    born_ns: s.born_ns,
                    ..Prev::default()
                };
            }
            let faults = s.faults.saturating_sub(p.faults);
            let sequential = s.sequential.saturating_sub(p.sequential);
            p.faults = s.faults;
            p.sequential = s.sequential;
            if faults == 0 {
                continue;
            }
            let ratio = sequential as f64 / faults as f64;
            let reason;
            let mut range = None;
            if faults < pol.min_faults {
                p.streak = 0;
                reason = format!(
                    "{faults} faults in the interval, fewer than the {} needed to judge",
                    pol.min_faults
                );
            } else if ratio < pol.threshold {
                p.streak = 0;
                reason = format!(
                    "sequential ratio {ratio:.2} is below the threshold {:.2}",
                    pol.threshold
                );
            } else {
                p.streak += 1;
                if p.streak < pol.intervals {
                    reason = format!(
                        "sequential ratio {ratio:.2} at or above {:.2} for {} of {} intervals",
                        pol.threshold, p.streak, pol.intervals
                    );
                } else {
                    let last = s.last_address / PAGE;
                    let (from, to) = if pol.advice.ahead() {
                        ((last + 1).max(p.advised_to), last + 1 + pol.window_pages)
                    } else {
                        (
                            last.saturating_sub(pol.window_pages).max(p.advised_to),
                            last,
                        )
                    };
                    if from >= to {
                        reason =
                            format!("pages up to {:#x} are already advised", p.advised_to * PAGE);
                    } else {
                        p.advised_to = to;
                        range = Some((from * PAGE, (to - from) * PAGE));
                        reason = format!(
                            "sequential ratio {ratio:.2} at or above {:.2} for {} intervals",
                            pol.threshold, p.streak
                        );
                    }
                }
            }
            out.push(Decision {
                interval: self.interval,
                pid: s.pid,
                comm: s.comm.clone(),
                action: if range.is_some() {
                    Action::Advise
                } else {
                    Action::None
                },
                reason,
                faults,
                sequential,
                ratio,
                threshold: pol.threshold,
                streak: p.streak,
                required: pol.intervals,
                last_address: s.last_address,
                advice: range.map(|_| pol.advice),
                start: range.map(|r| r.0),
                len: range.map(|r| r.1),
                mapping: None,
                dry_run: self.dry_run,
                applied: false,
                error: None,
            });
        }
        out
    }
}

/// A mapping of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub path: String,
}

/// The mapping of a `/proc/PID/maps` text that contains `addr`.
pub fn vma_containing(maps: &str, addr: u64) -> Option<Vma> {
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (s, e) = f.next()?.split_once('-')?;
        let (start, end) = (
            u64::from_str_radix(s, 16).ok()?,
            u64::from_str_radix(e, 16).ok()?,
        );
        let path = f.nth(4).unwrap_or("").to_owned();
        (start <= addr && addr < end).then_some(Vma { start, end, path })
    })
}

/// `start..start+len` clipped to the mapping; None if nothing is left.
pub fn clip(start: u64, len: u64, vma: &Vma) -> Option<(u64, u64)> {
    let (s, e) = (start.max(vma.start), (start + len).min(vma.end));
    (s < e).then_some((s, e - s))
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("Process {pid} is gone or cannot be opened (pidfd_open).")]
    Pidfd {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("process_madvise on process {pid} failed.")]
    Madvise {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Applies `advice` to `start..start+len` of process `pid` from outside it:
/// pidfd_open + process_madvise. Returns the bytes advised.
pub fn apply(pid: u32, start: u64, len: u64, advice: Advice) -> Result<u64, ApplyError> {
    // SAFETY: pidfd_open takes two integers and touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(ApplyError::Pidfd {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    let iov = libc::iovec {
        iov_base: start as *mut libc::c_void,
        iov_len: len as usize,
    };
    // SAFETY: pidfd_open returned a new fd that nothing else owns; the
    // OwnedFd closes it when dropped.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: the fd is open (owned above); process_madvise reads one iovec
    // from `iov`, a live local. The range the iovec names is in the *target*
    // process, which the kernel checks through the pidfd; none of ours is
    // read or written.
    let n = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            pidfd.as_raw_fd(),
            &iov,
            1usize,
            advice.value(),
            0u32,
        )
    };
    let err = std::io::Error::last_os_error();
    if n < 0 {
        return Err(ApplyError::Madvise { pid, source: err });
    }
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(advice: Advice) -> Policy {
        Policy {
            threshold: 0.6,
            min_faults: 10,
            intervals: 2,
            window_pages: 64,
            advice,
        }
    }

    fn sample(pid: u32, faults: u64, sequential: u64, last_page: u64) -> Sample {
        Sample {
            pid,
            comm: format!("p{pid}"),
            faults,
            sequential,
            last_address: last_page * PAGE + 8,
            born_ns: u64::from(pid) * 1000,
        }
    }

    #[test]
    fn exited_processes_are_forgotten_and_a_reused_pid_starts_afresh() {
        let mut t = Tracker::new(policy(Advice::Willneed), true);
        let procs: Vec<Sample> = (1..=100).map(|p| sample(p, 100, 100, 10)).collect();
        t.evaluate(&procs);
        assert_eq!(t.tracked(), 100);
        // 99 of them exit; the collector samples only the survivor.
        let d = t.evaluate(&[sample(7, 200, 200, 20)]);
        assert_eq!(t.tracked(), 1, "only the running process is kept");
        assert_eq!((d[0].pid, d[0].action), (7, Action::Advise));
        assert!(t.evaluate(&[]).is_empty());
        assert_eq!(t.tracked(), 0, "nothing runs, nothing is kept");

        // Pid 7 is reused by a new process: its counts are its own, with
        // no streak and no advised range inherited from the old one.
        t.evaluate(&[sample(7, 100, 100, 10)]);
        let mut reused = sample(7, 40, 40, 15);
        reused.born_ns += 1;
        let d = t.evaluate(&[reused.clone()]);
        assert_eq!(
            (d[0].faults, d[0].sequential, d[0].streak, d[0].action),
            (40, 40, 1, Action::None),
            "not a delta against the old process, and no old streak"
        );
        reused.faults += 50;
        reused.sequential += 50;
        let d = t.evaluate(&[reused]);
        assert_eq!((d[0].faults, d[0].action), (50, Action::Advise));
        assert_eq!(
            d[0].start,
            Some(16 * PAGE),
            "right after the last fault page"
        );
    }

    #[test]
    fn advises_only_after_the_ratio_holds_for_the_required_intervals() {
        let mut t = Tracker::new(policy(Advice::Willneed), true);
        let d = t.evaluate(&[sample(1, 100, 95, 1000), sample(2, 100, 1, 5)]);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].action, d[0].streak), (Action::None, 1));
        assert_eq!(
            d[0].reason,
            "sequential ratio 0.95 at or above 0.60 for 1 of 2 intervals"
        );
        assert_eq!(
            d[1].reason,
            "sequential ratio 0.01 is below the threshold 0.60"
        );
        let d = t.evaluate(&[sample(1, 200, 190, 1100), sample(2, 200, 2, 9)]);
        let a = &d[0];
        assert_eq!(
            (a.action, a.faults, a.sequential, a.streak),
            (Action::Advise, 100, 95, 2)
        );
        assert_eq!((a.start, a.len), (Some(1101 * PAGE), Some(64 * PAGE)));
        assert_eq!(a.advice, Some(Advice::Willneed));
        assert!(a.dry_run && !a.applied);
        assert_eq!(d[1].action, Action::None);
        // Still sequential: the next window starts where the last one ended.
        let d = t.evaluate(&[sample(1, 300, 290, 1120)]);
        assert_eq!((d[0].start, d[0].len), (Some(1165 * PAGE), Some(20 * PAGE)));
    }

    #[test]
    fn a_random_interval_resets_the_streak_and_idle_processes_are_not_judged() {
        let mut t = Tracker::new(policy(Advice::Willneed), false);
        t.evaluate(&[sample(1, 100, 100, 10)]);
        let d = t.evaluate(&[sample(1, 200, 110, 20)]);
        assert_eq!((d[0].action, d[0].streak), (Action::None, 0));
        assert!(
            t.evaluate(&[sample(1, 200, 110, 20)]).is_empty(),
            "no faults, no decision"
        );
        let d = t.evaluate(&[sample(1, 205, 115, 25)]);
        assert_eq!(
            d[0].reason,
            "5 faults in the interval, fewer than the 10 needed to judge"
        );
    }

    #[test]
    fn cold_advises_the_pages_behind_the_scan() {
        let mut t = Tracker::new(policy(Advice::Cold), true);
        t.evaluate(&[sample(1, 100, 100, 500)]);
        let d = t.evaluate(&[sample(1, 200, 200, 600)]);
        assert_eq!((d[0].start, d[0].len), (Some(536 * PAGE), Some(64 * PAGE)));
        let json = serde_json::to_value(&d[0]).unwrap();
        assert_eq!(json["advice"], "MADV_COLD");
        assert_eq!(json["action"], "advise");
    }

    #[test]
    fn finds_and_clips_to_the_mapping() {
        let maps = "\
55d0c0a00000-55d0c0a21000 r--p 00000000 fe:00 131 /usr/bin/mmap-workload
7f1000000000-7f1002000000 r--p 00000000 fe:10 12 /mnt/faults/data
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]
7ffd1c100000-7ffd1c101000 rw-p 00000000 00:00 0
";
        let v = vma_containing(maps, 0x7f10_0000_5000).unwrap();
        assert_eq!(
            v,
            Vma {
                start: 0x7f10_0000_0000,
                end: 0x7f10_0200_0000,
                path: "/mnt/faults/data".into()
            }
        );
        assert_eq!(vma_containing(maps, 0x7ffd_1c10_0010).unwrap().path, "");
        assert!(vma_containing(maps, 0x1000).is_none());
        assert_eq!(
            clip(0x7f10_01ff_f000, 0x4000, &v),
            Some((0x7f10_01ff_f000, 0x1000))
        );
        assert_eq!(clip(0x7f10_0200_0000, 0x4000, &v), None);
    }

    #[test]
    fn advice_values_are_the_uapi_ones() {
        assert_eq!(
            (
                Advice::Willneed.value(),
                Advice::Cold.value(),
                Advice::Pageout.value()
            ),
            (3, 20, 21)
        );
    }

    #[test]
    fn process_madvise_on_ourselves_works() {
        // WILLNEED on one of our own anonymous pages: no privilege needed for self.
        let mut v = vec![0u8; 2 * PAGE as usize];
        let start = (v.as_mut_ptr() as u64).div_ceil(PAGE) * PAGE;
        match apply(std::process::id(), start, PAGE, Advice::Cold) {
            Ok(n) => assert_eq!(n, PAGE),
            // Kernels before 5.10 (or seccomp) lack the syscalls; say so.
            Err(e) => eprintln!("process_madvise not available here: {e}"),
        }
        assert!(matches!(
            apply(u32::MAX >> 2, 0, PAGE, Advice::Cold),
            Err(ApplyError::Pidfd { .. })
        ));
    }
}
