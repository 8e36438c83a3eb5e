//! madvise-collector: loads `madvise_collector.bpf.c`, writes every
//! interval a `PID COUNT` file (sequential faults per process) and, as a
//! daemon, turns sustained sequential faulting into `process_madvise` advice
//! (see `advice`), logging every decision as a JSON line.
//!
//! The kernel's map holds running processes only: a process's exit
//! (sched/sched_process_exit of its thread-group leader) deletes its entry
//! and sends its final counts through the `exits` ring buffer, so a
//! long-running daemon keeps counting new processes however many come and
//! go. The final JSON report counts the exits and the map's entries.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, MapData, RingBuf};
use aya::programs::{KProbe, TracePoint};
use aya::{Ebpf, EbpfLoader};
use serde::Serialize;

use crate::advice::{self, Action, Decision, Policy, Sample, Tracker};
use crate::preflight::PROBE_POINT;
use crate::procfile::{self, ProcCollector};
use crate::table;

pub const DEFAULT_FILE: &str = "/run/madvise-collector/sequential";

/// Where the counts come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `madvise_collector.bpf.c`.
    #[default]
    Ebpf,
    /// The `seq_page_faults` kernel module's `/proc` files (`procfile`).
    Proc,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub interval: Duration,
    pub file: PathBuf,
    pub json: bool,
    pub duration: Option<Duration>,
    /// Some = daemon mode.
    pub daemon: Option<Policy>,
    pub dry_run: bool,
    pub source: Source,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("The kernel refused to load the collector's eBPF object.")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error("The eBPF object has no program or map named {0}.")]
    Missing(&'static str),
    #[error("Cannot load or attach the collector's kprobe on {PROBE_POINT}.")]
    Attach {
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("Cannot attach the collector's exit hook to the tracepoint sched/sched_process_exit.")]
    AttachExit {
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("Cannot use the eBPF map {name}.")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("Cannot write the counts file {path}.")]
    CountsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Proc(#[from] crate::procfile::ProcFileError),
    #[error("Cannot write the decision log.")]
    Log {
        #[source]
        source: std::io::Error,
    },
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawProc {
    last_page: u64,
    last_address: u64,
    faults: u64,
    sequential: u64,
    born_ns: u64,
    comm: [u8; 16],
}

// SAFETY: aya copies Pod values to and from map bytes. RawProc is
// #[repr(C)], five u64s and 16 bytes laid out as `struct proc` in C: 56
// bytes with no padding (the layout test), any bit pattern valid.
unsafe impl aya::Pod for RawProc {}

/// `struct exit_record` of the `exits` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawExit {
    pid: u32,
    _pad: u32,
    proc_: RawProc,
}

impl RawExit {
    fn decode(bytes: &[u8]) -> Option<RawExit> {
        if bytes.len() < std::mem::size_of::<RawExit>() {
            return None;
        }
        // SAFETY: the length check keeps the read inside `bytes`; RawExit is
        // #[repr(C)] integers and bytes (its padding spelled out), valid for
        // any bit pattern; read_unaligned needs no alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawExit>()) })
    }
}

fn sample(pid: u32, p: &RawProc, comm: Option<String>) -> Sample {
    Sample {
        pid,
        comm: comm.unwrap_or_else(|| table::comm(&p.comm)),
        faults: p.faults,
        sequential: p.sequential,
        last_address: p.last_address,
        born_ns: p.born_ns,
    }
}

/// One look at the kernel's counts.
#[derive(Debug, Default)]
pub struct Poll {
    /// The running processes, by pid.
    pub live: Vec<Sample>,
    /// Processes that exited since the last poll, with their final counts.
    pub exited: Vec<Sample>,
}

/// Map entries (pid, born_ns) whose process was not running at the last
/// poll: one that is still there, unchanged, at the next poll is stale.
#[derive(Debug, Default)]
struct Suspects(HashSet<(u32, u64)>);

impl Suspects {
    /// The entries of `live` to remove now, given whether a pid runs.
    fn stale(&mut self, live: &[Sample], running: impl Fn(u32) -> bool) -> HashSet<(u32, u64)> {
        let gone: HashSet<(u32, u64)> = live
            .iter()
            .filter(|s| !running(s.pid))
            .map(|s| (s.pid, s.born_ns))
            .collect();
        let stale: HashSet<(u32, u64)> = gone.intersection(&self.0).copied().collect();
        self.0 = &gone - &stale;
        stale
    }
}

pub struct Collector {
    ebpf: Ebpf,
    exits: RingBuf<MapData>,
    suspects: Suspects,
    /// Exit records received, and entries removed by `sweep`.
    pub exits_seen: u64,
    pub swept: u64,
}

impl Collector {
    pub fn attach() -> Result<Collector, CollectorError> {
        let me = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .override_global("self_pid", &me, true)
            .load(cxl_bpf::MADVISE_COLLECTOR)
            .map_err(|source| CollectorError::Load { source })?;
        // The exit hook first: a process must not be counted before its
        // exit can remove it.
        let t: &mut TracePoint = ebpf
            .program_mut("collect_exit")
            .ok_or(CollectorError::Missing("collect_exit"))?
            .try_into()
            .map_err(|source| CollectorError::AttachExit { source })?;
        t.load()
            .map_err(|source| CollectorError::AttachExit { source })?;
        t.attach("sched", "sched_process_exit")
            .map_err(|source| CollectorError::AttachExit { source })?;
        let p: &mut KProbe = ebpf
            .program_mut("collect_fault")
            .ok_or(CollectorError::Missing("collect_fault"))?
            .try_into()
            .map_err(|source| CollectorError::Attach { source })?;
        p.load()
            .map_err(|source| CollectorError::Attach { source })?;
        p.attach(PROBE_POINT, 0)
            .map_err(|source| CollectorError::Attach { source })?;
        let exits = RingBuf::try_from(
            ebpf.take_map("exits")
                .ok_or(CollectorError::Missing("exits"))?,
        )
        .map_err(|source| CollectorError::Map {
            name: "exits",
            source,
        })?;
        Ok(Collector {
            ebpf,
            exits,
            suspects: Suspects::default(),
            exits_seen: 0,
            swept: 0,
        })
    }

    /// Every running process's cumulative counts, by pid, and the final
    /// counts of those that exited since the last poll.
    pub fn poll(&mut self) -> Result<Poll, CollectorError> {
        let map_err = |source| CollectorError::Map {
            name: "procs",
            source,
        };
        let procs: HashMap<_, u32, RawProc> = HashMap::try_from(
            self.ebpf
                .map("procs")
                .ok_or(CollectorError::Missing("procs"))?,
        )
        .map_err(map_err)?;
        let mut live: Vec<Sample> = procs
            .iter()
            .flatten()
            .map(|(pid, p)| sample(pid, &p, process_name(pid)))
            .collect();
        // Drained after the map was read: an exit that raced with the read
        // is then here, and its entry is dropped from `live` below.
        let mut exited = Vec::new();
        while let Some(item) = self.exits.next() {
            if let Some(e) = RawExit::decode(&item) {
                exited.push(sample(e.pid, &e.proc_, None));
            }
        }
        self.exits_seen += exited.len() as u64;
        live.retain(|s| {
            !exited
                .iter()
                .any(|e| (e.pid, e.born_ns) == (s.pid, s.born_ns))
        });
        exited.extend(self.sweep(&mut live)?);
        live.sort_by_key(|s| s.pid);
        exited.sort_by_key(|s| s.pid);
        Ok(Poll { live, exited })
    }

    /// Entries of processes that are gone without their exit removing the
    /// entry (a thread faulting after its leader exited recreates it):
    /// removed once they are seen, unchanged, at two polls in a row with no
    /// /proc entry. Returns them, as exited.
    fn sweep(&mut self, live: &mut Vec<Sample>) -> Result<Vec<Sample>, CollectorError> {
        let stale = self
            .suspects
            .stale(live, |pid| Path::new(&format!("/proc/{pid}")).exists());
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let map_err = |source| CollectorError::Map {
            name: "procs",
            source,
        };
        let mut procs: HashMap<_, u32, RawProc> = HashMap::try_from(
            self.ebpf
                .map_mut("procs")
                .ok_or(CollectorError::Missing("procs"))?,
        )
        .map_err(map_err)?;
        let mut removed = Vec::new();
        for (pid, _) in &stale {
            match procs.remove(pid) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        live.retain(|s| {
            if stale.contains(&(s.pid, s.born_ns)) {
                removed.push(s.clone());
                false
            } else {
                true
            }
        });
        self.swept += removed.len() as u64;
        Ok(removed)
    }

    /// Exit records the kernel had no ring-buffer room for.
    pub fn exits_lost(&self) -> Result<u64, CollectorError> {
        let map_err = |source| CollectorError::Map {
            name: "counters",
            source,
        };
        let counters: Array<_, u64> = Array::try_from(
            self.ebpf
                .map("counters")
                .ok_or(CollectorError::Missing("counters"))?,
        )
        .map_err(map_err)?;
        counters.get(&0, 0).map_err(map_err)
    }
}

/// The counter behind a run: the eBPF program or the kernel module.
enum Counter {
    Ebpf(Box<Collector>),
    Proc(ProcCollector),
}

impl Counter {
    fn attach(source: Source) -> Result<Counter, CollectorError> {
        Ok(match source {
            Source::Ebpf => Counter::Ebpf(Box::new(Collector::attach()?)),
            Source::Proc => Counter::Proc(ProcCollector::attach()?),
        })
    }

    fn poll(&mut self) -> Result<Poll, CollectorError> {
        match self {
            Counter::Ebpf(c) => c.poll(),
            Counter::Proc(c) => {
                let procfile::Counts { mut live, exited } = c.poll()?;
                // As for the eBPF map: the running process's own name, not
                // that of its first fault (before an exec).
                for s in &mut live {
                    if let Some(name) = process_name(s.pid) {
                        s.comm = name;
                    }
                }
                Ok(Poll { live, exited })
            }
        }
    }

    fn attached_to(&self) -> String {
        match self {
            Counter::Ebpf(_) => format!("{PROBE_POINT} and sched/sched_process_exit"),
            Counter::Proc(c) => format!(
                "kernel module {} ({}; {})",
                procfile::MODULE,
                procfile::COUNTS_FILE,
                if c.loaded_here {
                    "loaded now, removed at the end"
                } else {
                    "already loaded: its counts include what came before"
                }
            ),
        }
    }
}

/// The process's name while it runs: the kernel program keeps the comm of
/// the first fault, which can be the shell's before an exec.
fn process_name(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(s.trim_end().to_owned())
}

/// The `PID COUNT` lines, one per process, by pid.
pub fn counts_text<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> String {
    samples
        .into_iter()
        .map(|s| format!("{} {}\n", s.pid, s.sequential))
        .collect()
}

/// Writes the counts file whole (temporary file, then rename), so a reader
/// never sees half of it.
pub fn write_counts<'a>(
    path: &Path,
    samples: impl IntoIterator<Item = &'a Sample>,
) -> Result<(), CollectorError> {
    let err = |source| CollectorError::CountsFile {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, counts_text(samples)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    pub faults: u64,
    pub sequential: u64,
    pub ratio: f64,
    /// The process exited during the run: these are its final counts.
    pub exited: bool,
}

impl ProcessReport {
    fn new(s: Sample, exited: bool) -> ProcessReport {
        ProcessReport {
            ratio: if s.faults == 0 {
                0.0
            } else {
                s.sequential as f64 / s.faults as f64
            },
            pid: s.pid,
            comm: s.comm,
            faults: s.faults,
            sequential: s.sequential,
            exited,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub probe_point: &'static str,
    /// Which counter ran: the eBPF program or the kernel module.
    pub source: Source,
    pub file: String,
    pub interval_ms: u64,
    pub intervals: u64,
    pub elapsed_ms: f64,
    pub daemon: bool,
    pub dry_run: bool,
    pub policy: Option<Policy>,
    /// The running processes at the end, then those that exited during the
    /// run, by pid.
    pub processes: Vec<ProcessReport>,
    pub decisions: Vec<Decision>,
    /// Processes whose exit removed their entry from the kernel's map.
    pub exits: u64,
    /// Exits whose final counts the ring buffer had no room for.
    pub exits_lost: u64,
    /// Entries of vanished processes removed by the collector itself.
    pub swept: u64,
    /// Entries (running processes) in the kernel's map: the most at any
    /// interval, and at the end.
    pub map_entries_peak: usize,
    pub map_entries_end: usize,
    /// The kernel module only: faults of new processes it had no free
    /// entry for (its table is full of running processes).
    pub dropped: u64,
}

/// Resolves an advise decision against the process's mappings and, unless
/// this is a dry run, applies it.
fn carry_out(d: &mut Decision) {
    let (Some(start), Some(len), Some(adv)) = (d.start, d.len, d.advice) else {
        return;
    };
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", d.pid)).unwrap_or_default();
    let Some(vma) = advice::vma_containing(&maps, d.last_address) else {
        d.error = Some("the last fault address is in no mapping (has the process exited?)".into());
        return;
    };
    d.mapping = Some(format!("{:#x}-{:#x} {}", vma.start, vma.end, vma.path));
    let Some((s, l)) = advice::clip(start, len, &vma) else {
        d.error = Some("the range lies outside the faulting mapping".into());
        return;
    };
    (d.start, d.len) = (Some(s), Some(l));
    if d.dry_run {
        return;
    }
    match advice::apply(d.pid, s, l, adv) {
        Ok(_) => d.applied = true,
        // anyhow's alternate form: the error and its sources on one line.
        Err(e) => d.error = Some(format!("{:#}", anyhow::Error::new(e))),
    }
}

/// Runs until the duration ends or SIGINT/SIGTERM; decisions are logged to
/// `log` as JSON lines when they are taken. Every interval the counts file
/// lists the running processes and those that exited during the interval;
/// exited processes and decisions are kept for the report only when one is
/// asked for (`json`), so a daemon's memory does not grow with time.
pub fn run(
    cfg: &Config,
    log: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<Report, CollectorError> {
    let mut col = Counter::attach(cfg.source)?;
    eprintln!(
        "madvise-collector: attached to {}, counts in {}",
        col.attached_to(),
        cfg.file.display()
    );
    let mut tracker = cfg.daemon.map(|p| Tracker::new(p, cfg.dry_run));
    let mut decisions = Vec::new();
    let mut exited = Vec::new();
    let mut peak = 0;
    let started = Instant::now();
    let mut intervals = 0;
    let live = loop {
        let until = started + cfg.interval * (intervals as u32 + 1);
        while Instant::now() < until && !stop() {
            std::thread::sleep(Duration::from_millis(20).min(cfg.interval));
        }
        let done = stop() || cfg.duration.is_some_and(|d| started.elapsed() >= d);
        intervals += 1;
        let poll = col.poll()?;
        peak = peak.max(poll.live.len());
        let mut listed: Vec<&Sample> = poll.live.iter().chain(&poll.exited).collect();
        listed.sort_by_key(|s| s.pid);
        write_counts(&cfg.file, listed)?;
        if let Some(t) = tracker.as_mut() {
            for mut d in t.evaluate(&poll.live) {
                if d.action == Action::Advise {
                    carry_out(&mut d);
                }
                let line = serde_json::to_string(&d).expect("decisions serialize");
                writeln!(log, "{line}").map_err(|source| CollectorError::Log { source })?;
                if cfg.json {
                    decisions.push(d);
                }
            }
        }
        if cfg.json {
            exited.extend(poll.exited);
        }
        if done {
            break poll.live;
        }
    };
    exited.sort_by_key(|s| s.pid);
    let map_entries_end = live.len();
    let processes = live
        .into_iter()
        .map(|s| ProcessReport::new(s, false))
        .chain(exited.into_iter().map(|s| ProcessReport::new(s, true)))
        .collect();
    let (exits, exits_lost, swept, dropped) = match &col {
        Counter::Ebpf(c) => (c.exits_seen, c.exits_lost()?, c.swept, 0),
        Counter::Proc(c) => (c.exits_seen, 0, 0, c.dropped),
    };
    Ok(Report {
        probe_point: PROBE_POINT,
        source: cfg.source,
        file: cfg.file.display().to_string(),
        interval_ms: cfg.interval.as_millis() as u64,
        intervals,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        daemon: cfg.daemon.is_some(),
        dry_run: cfg.dry_run,
        policy: cfg.daemon,
        processes,
        decisions,
        exits,
        exits_lost,
        swept,
        map_entries_peak: peak,
        map_entries_end,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_struct_has_the_c_layout() {
        // struct proc in bpf/madvise_collector.bpf.c.
        assert_eq!(std::mem::size_of::<RawProc>(), 56);
        assert_eq!(std::mem::offset_of!(RawProc, faults), 16);
        assert_eq!(std::mem::offset_of!(RawProc, sequential), 24);
        assert_eq!(std::mem::offset_of!(RawProc, born_ns), 32);
        assert_eq!(std::mem::offset_of!(RawProc, comm), 40);
        // struct exit_record: the pid, padding, then struct proc.
        assert_eq!(std::mem::size_of::<RawExit>(), 64);
        assert_eq!(std::mem::offset_of!(RawExit, proc_), 8);
    }

    #[test]
    fn an_entry_of_a_vanished_process_is_stale_at_its_second_poll() {
        let born = |pid, born_ns| Sample {
            born_ns,
            ..s(pid, 0)
        };
        let mut sus = Suspects::default();
        let running = |pid| pid != 9;
        let live = [born(1, 10), born(9, 90)];
        assert!(sus.stale(&live, running).is_empty(), "first seen gone");
        assert_eq!(
            sus.stale(&live, running),
            HashSet::from([(9, 90)]),
            "still there, unchanged"
        );
        assert!(
            sus.stale(&live, running).is_empty(),
            "forgotten once reported"
        );
        // A new process took pid 9 between the polls: not the same entry.
        assert!(sus.stale(&[born(9, 91)], running).is_empty());
        assert!(sus.stale(&[born(9, 92)], running).is_empty());
        // Seen running at a poll in between: suspicion starts over.
        assert!(sus.stale(&[born(9, 93)], running).is_empty());
        assert!(sus.stale(&[born(9, 93)], |_| true).is_empty());
        assert!(sus.stale(&[born(9, 93)], running).is_empty());
    }

    #[test]
    fn exit_records_decode_from_ring_buffer_bytes() {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(&4242u32.to_ne_bytes());
        b[8 + 16..8 + 24].copy_from_slice(&900u64.to_ne_bytes());
        b[8 + 24..8 + 32].copy_from_slice(&850u64.to_ne_bytes());
        b[8 + 32..8 + 40].copy_from_slice(&77u64.to_ne_bytes());
        b[8 + 40..8 + 43].copy_from_slice(b"cat");
        let e = RawExit::decode(&b).unwrap();
        let s = sample(e.pid, &e.proc_, None);
        assert_eq!(
            (s.pid, s.faults, s.sequential, s.born_ns, s.comm.as_str()),
            (4242, 900, 850, 77, "cat")
        );
        assert!(RawExit::decode(&b[..63]).is_none(), "a short record");
    }

    fn s(pid: u32, sequential: u64) -> Sample {
        Sample {
            pid,
            comm: "x".into(),
            faults: 10,
            sequential,
            last_address: 0,
            born_ns: 0,
        }
    }

    #[test]
    fn counts_file_has_pid_count_lines() {
        assert_eq!(counts_text(&[s(7, 3), s(12, 0)]), "7 3\n12 0\n");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/sequential");
        write_counts(&f, &[s(1, 5)]).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "1 5\n");
        write_counts(&f, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "");
    }
}
