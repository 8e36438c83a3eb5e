//! capture: loads `bpf/ioriot_capture.bpf.c` with aya, marks the traced
//! system calls and the followed process, and writes every completed call
//! to a `.capture` file until the followed processes are gone, the
//! duration is over, or SIGINT/SIGTERM arrives. Lost records (full ring
//! buffer, full pending map) are counted and written in the trailer.
//! Exited tasks leave the kernel's map of followed processes (the eBPF
//! exit program) and the resolver's tables (its exit records); an entry
//! whose task is gone without one (it exited before it was added) is swept
//! at the next liveness check.

pub mod raw;
pub mod resolve;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use aya::programs::TracePoint;
use aya::Ebpf;
use serde::Serialize;

use crate::capture_format::{self, Mount};
use crate::op::{self, SPECS};

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub output: PathBuf,
    /// Follow this process and its children; `None` traces every process.
    pub pid: Option<u32>,
    pub duration: Option<Duration>,
    /// PID stops itself before its work: wait until it has, then continue it.
    pub resume: bool,
}

/// How often userspace looks for tasks whose exit record was lost.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long --resume waits for the process to stop itself.
const RESUME_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    pub output: PathBuf,
    pub followed: Option<u32>,
    pub events: u64,
    /// Records the ring buffer had no room for.
    pub lost: u64,
    /// Calls whose entry could not be kept (pending map full).
    pub lost_pending: u64,
    /// Children of followed processes that could not be followed (the
    /// kernel's map of followed tasks was full).
    pub unfollowed_children: u64,
    pub truncated: u64,
    /// Paths the kernel could not read (left out of their events).
    pub unreadable: u64,
    pub seconds: f64,
    /// Time the kernel spent in the eBPF programs and how often they ran
    /// (every system call of every process reaches the filter), from
    /// BPF_ENABLE_STATS; `None` where the kernel does not keep them.
    pub bpf_run_ns: Option<u64>,
    pub bpf_runs: Option<u64>,
    /// Exit records of followed threads and processes.
    pub exits: u64,
    /// Entries of the kernel's map of followed tasks: when capture started
    /// (PID and its running descendants), the most seen at a liveness
    /// check (every 50 ms), and at the end (0 once every followed task has
    /// exited). Always 0 without `-x`.
    pub targets_start: u64,
    pub targets_peak: u64,
    pub targets_end: u64,
    /// Entries of exited tasks that capture removed itself (no exit record).
    pub targets_swept: u64,
    /// Tasks whose descriptor table and working directory userspace still
    /// kept at the end (0 once every followed task has exited).
    pub tracked_end: u64,
    /// Tasks userspace forgot because two sweeps (every second) found them
    /// gone without an exit record (lost to a full ring buffer).
    pub tracked_swept: u64,
}

impl CaptureReport {
    pub fn text(&self) -> String {
        format!(
            "captured {} events to {} ({} lost, {} paths truncated, {} unreadable)\n",
            self.events,
            self.output.display(),
            self.lost + self.lost_pending,
            self.truncated,
            self.unreadable
        )
    }
}

const PROGRAMS: [(&str, &str, &str); 4] = [
    ("ioriot_sys_enter", "raw_syscalls", "sys_enter"),
    ("ioriot_sys_exit", "raw_syscalls", "sys_exit"),
    ("ioriot_fork", "sched", "sched_process_fork"),
    ("ioriot_exit", "sched", "sched_process_exit"),
];

/// Summed run time and count of the programs.
fn bpf_stats(bpf: &Ebpf) -> Option<(u64, u64)> {
    let mut ns = 0u64;
    let mut n = 0u64;
    for (name, _, _) in PROGRAMS {
        let info = bpf.program(name)?.info().ok()?;
        ns += info.run_time().as_nanos() as u64;
        n += info.run_count();
    }
    Some((ns, n))
}

/// Errors of capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("Process {0} does not exist.")]
    NoProcess(u32),
    #[error("Process {0} did not stop itself within {1} s (--resume waits for `kill -STOP $$` before its work).")]
    NotStopped(u32, u64),
    #[error("The eBPF program could not be loaded (capture needs root and a kernel with BPF and tracepoints).")]
    Load(#[source] aya::EbpfError),
    #[error("The eBPF program '{0}' is missing from the object.")]
    Missing(&'static str),
    #[error("The eBPF program '{name}' could not be loaded or attached.")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("The eBPF map '{name}' could not be used.")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("Writing {} failed.", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> CaptureError {
    move |source| CaptureError::Map { name, source }
}

/// The process state letter from /proc/PID/stat (None if it is gone).
fn state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ").and_then(|(_, r)| r.chars().next())
}

fn alive(pid: u32) -> bool {
    !matches!(state(pid), None | Some('Z') | Some('X'))
}

/// Descendants of `pid` that already run (from /proc/*/stat parent pids).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            if let Some(pp) = s
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split(' ').nth(1))
                .and_then(|v| v.parse().ok())
            {
                parent.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

fn mounts() -> Vec<Mount> {
    let s = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            // /proc/mounts escapes space, tab, newline and backslash as \ooo.
            let point = unescape_octal(f.get(1)?);
            Some(Mount {
                fstype: f.get(2)?.to_string(),
                point,
            })
        })
        .collect()
}

fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.len() >= i + 4 {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The per-number value of the `nrs` map: traced, and which arguments are strings.
fn nr_value(spec: &op::OpSpec) -> u32 {
    let slot = |a: Option<u8>| a.map_or(0, |i| u32::from(i) + 1);
    let s1 = slot(spec.paths[0].map(|p| p.0));
    let s2 = slot(spec.paths[1].map(|p| p.0).or(op::literal_arg(spec.op)));
    1 | (s1 << 8) | (s2 << 16)
}

/// Checks the sched_process_fork layout the C program assumes (child_pid at 44).
fn fork_layout_ok() -> Option<bool> {
    for base in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if let Ok(f) =
            std::fs::read_to_string(format!("{base}/events/sched/sched_process_fork/format"))
        {
            return Some(
                f.lines()
                    .any(|l| l.contains("child_pid;") && l.contains("offset:44;")),
            );
        }
    }
    None
}

/// Writes every record waiting in the ring buffer to the capture; returns
/// how many events were written (records the resolver drops are not).
fn drain(
    ring: &mut RingBuf<MapData>,
    resolver: &mut resolve::Resolver,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    let mut events = 0;
    while let Some(item) = ring.next() {
        if let Some(e) = raw::RawEvent::decode(&item).and_then(|r| resolver.event(&r)) {
            capture_format::write_event(out, &e)?;
            events += 1;
        }
    }
    Ok(events)
}

pub fn capture(cfg: &CaptureConfig) -> Result<CaptureReport, CaptureError> {
    if let Some(p) = cfg.pid {
        if !alive(p) {
            return Err(CaptureError::NoProcess(p));
        }
    }
    if fork_layout_ok() == Some(false) {
        eprintln!("ioriot: warning: sched_process_fork has an unexpected layout; children started during capture may be missed");
    }
    let mut bpf = Ebpf::load(cxl_bpf::IORIOT_CAPTURE).map_err(CaptureError::Load)?;
    {
        let mut nrs: Array<&mut MapData, u32> =
            Array::try_from(bpf.map_mut("nrs").ok_or(CaptureError::Missing("nrs"))?)
                .map_err(map_err("nrs"))?;
        for s in SPECS {
            nrs.set(s.nr, nr_value(s), 0).map_err(map_err("nrs"))?;
        }
    }
    {
        let mut conf: Array<&mut MapData, [u32; 2]> = Array::try_from(
            bpf.map_mut("config")
                .ok_or(CaptureError::Missing("config"))?,
        )
        .map_err(map_err("config"))?;
        conf.set(0, [u32::from(cfg.pid.is_none()), std::process::id()], 0)
            .map_err(map_err("config"))?;
    }
    let mut targets = Targets::default();
    if let Some(p) = cfg.pid {
        let mut t: BpfHashMap<&mut MapData, u32, u8> = BpfHashMap::try_from(
            bpf.map_mut("targets")
                .ok_or(CaptureError::Missing("targets"))?,
        )
        .map_err(map_err("targets"))?;
        for d in descendants(p) {
            t.insert(d, 1, 0).map_err(map_err("targets"))?;
        }
        targets.seen(t.keys().count() as u64);
        targets.start = targets.peak;
    }
    // Run-time statistics cost two clock reads per program run; they are
    // kept only while this descriptor is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
    for (name, cat, tp) in PROGRAMS {
        let prog: &mut TracePoint = bpf
            .program_mut(name)
            .ok_or(CaptureError::Missing("tracepoint program"))?
            .try_into()
            .map_err(|source| CaptureError::Program { name, source })?;
        prog.load()
            .map_err(|source| CaptureError::Program { name, source })?;
        prog.attach(cat, tp)
            .map_err(|source| CaptureError::Program { name, source })?;
    }
    let mut ring = RingBuf::try_from(
        bpf.take_map("events")
            .ok_or(CaptureError::Missing("events"))?,
    )
    .map_err(map_err("events"))?;
    let werr = |source| CaptureError::Write {
        path: cfg.output.clone(),
        source,
    };
    let mut out = BufWriter::new(File::create(&cfg.output).map_err(werr)?);
    capture_format::write_header(&mut out, cfg.pid, &mounts()).map_err(werr)?;
    stop_signal::install();
    // What staprun's "inserted" line is to I/O Riot users: from here on
    // nothing the followed processes do is missed.
    match cfg.pid {
        Some(p) => eprintln!(
            "ioriot: tracing attached to pid {p} and its children; writing {}; SIGINT (Ctrl+C) stops",
            cfg.output.display()
        ),
        None => eprintln!(
            "ioriot: tracing attached to every process; writing {}; SIGINT (Ctrl+C) stops",
            cfg.output.display()
        ),
    }
    // A workload started stopped (e.g. `kill -STOP $$; exec prog`) runs now
    // that tracing is attached, so nothing it does is missed. With
    // --resume it may not have stopped itself yet: wait for that, or the
    // SIGCONT would come first and it would stay stopped for good.
    if let Some(p) = cfg.pid {
        if cfg.resume {
            let deadline = Instant::now() + RESUME_WAIT;
            while state(p) != Some('T') {
                if !alive(p) || Instant::now() >= deadline {
                    return Err(CaptureError::NotStopped(p, RESUME_WAIT.as_secs()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if state(p) == Some('T') {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(p as i32, libc::SIGCONT) };
        }
    }
    let start = Instant::now();
    let mut resolver = resolve::Resolver::new(PathBuf::from("/proc"));
    let mut events = 0u64;
    let mut last_check = Instant::now();
    let mut last_sweep = Instant::now();
    loop {
        events += drain(&mut ring, &mut resolver, &mut out).map_err(werr)?;
        if stop_signal::requested() || cfg.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            resolver.sweep(alive);
        }
        if let Some(p) = cfg.pid {
            if last_check.elapsed() >= Duration::from_millis(50) {
                last_check = Instant::now();
                let mut t: BpfHashMap<&mut MapData, u32, u8> = BpfHashMap::try_from(
                    bpf.map_mut("targets")
                        .ok_or(CaptureError::Missing("targets"))?,
                )
                .map_err(map_err("targets"))?;
                let keys: Vec<u32> = t.keys().flatten().collect();
                targets.seen(keys.len() as u64);
                let (live, dead) = split_alive(&keys, alive);
                for d in dead {
                    // Gone already when it was added (an exit between the
                    // /proc scan and the insert); a failed removal is a race
                    // with the exit program, which removed it first.
                    if t.remove(&d).is_ok() {
                        targets.swept += 1;
                    }
                }
                if !alive(p) && live == 0 {
                    break;
                }
            }
        }
        let mut pfd = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 50) };
    }
    // What was submitted before the stop is still in the ring.
    events += drain(&mut ring, &mut resolver, &mut out).map_err(werr)?;
    let run = bpf_stats(&bpf);
    if cfg.pid.is_some() {
        let t: BpfHashMap<&MapData, u32, u8> =
            BpfHashMap::try_from(bpf.map("targets").ok_or(CaptureError::Missing("targets"))?)
                .map_err(map_err("targets"))?;
        targets.end = t.keys().count() as u64;
    }
    let counters: Array<&MapData, u64> = Array::try_from(
        bpf.map("counters")
            .ok_or(CaptureError::Missing("counters"))?,
    )
    .map_err(map_err("counters"))?;
    let lost = counters.get(&0, 0).map_err(map_err("counters"))?;
    let lost_pending = counters.get(&1, 0).map_err(map_err("counters"))?;
    let unfollowed_children = counters.get(&2, 0).map_err(map_err("counters"))?;
    capture_format::write_trailer(
        &mut out,
        events,
        lost + lost_pending,
        resolver.truncated,
        resolver.unreadable,
    )
    .map_err(werr)?;
    out.flush().map_err(werr)?;
    Ok(CaptureReport {
        output: cfg.output.clone(),
        followed: cfg.pid,
        events,
        lost,
        lost_pending,
        unfollowed_children,
        truncated: resolver.truncated,
        unreadable: resolver.unreadable,
        seconds: start.elapsed().as_secs_f64(),
        bpf_run_ns: run.map(|r| r.0),
        bpf_runs: run.map(|r| r.1),
        exits: resolver.exits,
        targets_start: targets.start,
        targets_peak: targets.peak,
        targets_end: targets.end,
        targets_swept: targets.swept,
        tracked_end: resolver.tracked() as u64,
        tracked_swept: resolver.swept,
    })
}

/// Entry counts of the kernel's map of followed tasks.
#[derive(Debug, Default)]
struct Targets {
    start: u64,
    peak: u64,
    end: u64,
    swept: u64,
}

impl Targets {
    fn seen(&mut self, n: u64) {
        self.peak = self.peak.max(n);
    }
}

/// How many of `keys` are alive, and those that are not.
fn split_alive(keys: &[u32], alive: impl Fn(u32) -> bool) -> (usize, Vec<u32>) {
    let dead: Vec<u32> = keys.iter().copied().filter(|k| !alive(*k)).collect();
    (keys.len() - dead.len(), dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bpf_filter_knows_each_string_argument() {
        let v = |op| nr_value(op::spec_of(op).unwrap());
        assert_eq!(v(op::Op::Read), 1);
        assert_eq!(v(op::Op::Openat), 1 | (2 << 8));
        assert_eq!(v(op::Op::Renameat2), 1 | (2 << 8) | (4 << 16));
        assert_eq!(v(op::Op::Symlink), 1 | (2 << 8) | (1 << 16));
        assert_eq!(unescape_octal("/a\\040b"), b"/a b");
        assert!(alive(std::process::id()));
    }

    #[test]
    fn liveness_checks_split_the_followed_tasks_and_keep_the_peak() {
        let (live, dead) = split_alive(&[1, 2, 3, 4], |k| k % 2 == 0);
        assert_eq!((live, dead), (2, vec![1, 3]));
        let mut t = Targets::default();
        for n in [1, 5, 2, 0] {
            t.seen(n);
        }
        assert_eq!(t.peak, 5);
        // A pid that cannot exist is not alive.
        assert!(!alive(u32::MAX));
    }
}
