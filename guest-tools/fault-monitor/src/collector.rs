//! madvise-collector: loads `madvise_collector.bpf.c`, writes every
//! interval a `PID COUNT` file (sequential faults per process) and, as a
//! daemon, turns sustained sequential faulting into `process_madvise` advice
//! (see `advice`), logging every decision as a JSON line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::HashMap;
use aya::programs::KProbe;
use aya::{Ebpf, EbpfLoader};
use serde::Serialize;

use crate::advice::{self, Action, Decision, Policy, Sample, Tracker};
use crate::preflight::PROBE_POINT;
use crate::table;

pub const DEFAULT_FILE: &str = "/run/madvise-collector/sequential";

#[derive(Clone, Debug)]
pub struct Config {
    pub interval: Duration,
    pub file: PathBuf,
    pub json: bool,
    pub duration: Option<Duration>,
    /// Some = daemon mode.
    pub daemon: Option<Policy>,
    pub dry_run: bool,
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
    #[error("Cannot open the eBPF map procs.")]
    Map {
        #[source]
        source: aya::maps::MapError,
    },
    #[error("Cannot write the counts file {path}.")]
    CountsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
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
    comm: [u8; 16],
}

// SAFETY: #[repr(C)] integers and bytes, laid out as `struct proc` in C.
unsafe impl aya::Pod for RawProc {}

pub struct Collector {
    ebpf: Ebpf,
}

impl Collector {
    pub fn attach() -> Result<Collector, CollectorError> {
        let me = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .override_global("self_pid", &me, true)
            .load(cxl_bpf::MADVISE_COLLECTOR)
            .map_err(|source| CollectorError::Load { source })?;
        let p: &mut KProbe = ebpf
            .program_mut("collect_fault")
            .ok_or(CollectorError::Missing("collect_fault"))?
            .try_into()
            .map_err(|source| CollectorError::Attach { source })?;
        p.load()
            .map_err(|source| CollectorError::Attach { source })?;
        p.attach(PROBE_POINT, 0)
            .map_err(|source| CollectorError::Attach { source })?;
        Ok(Collector { ebpf })
    }

    /// Every process's cumulative counts, by pid.
    pub fn samples(&self) -> Result<Vec<Sample>, CollectorError> {
        let map = self
            .ebpf
            .map("procs")
            .ok_or(CollectorError::Missing("procs"))?;
        let procs: HashMap<_, u32, RawProc> =
            HashMap::try_from(map).map_err(|source| CollectorError::Map { source })?;
        let mut out: Vec<Sample> = procs
            .iter()
            .flatten()
            .map(|(pid, p)| Sample {
                pid,
                comm: process_name(pid).unwrap_or_else(|| table::comm(&p.comm)),
                faults: p.faults,
                sequential: p.sequential,
                last_address: p.last_address,
            })
            .collect();
        out.sort_by_key(|s| s.pid);
        Ok(out)
    }
}

/// The process's name while it runs: the kernel program keeps the comm of
/// the first fault, which can be the shell's before an exec.
fn process_name(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(s.trim_end().to_owned())
}

/// The `PID COUNT` lines, one per process, by pid.
pub fn counts_text(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|s| format!("{} {}\n", s.pid, s.sequential))
        .collect()
}

/// Writes the counts file whole (temporary file, then rename), so a reader
/// never sees half of it.
pub fn write_counts(path: &Path, samples: &[Sample]) -> Result<(), CollectorError> {
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
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub probe_point: &'static str,
    pub file: String,
    pub interval_ms: u64,
    pub intervals: u64,
    pub elapsed_ms: f64,
    pub daemon: bool,
    pub dry_run: bool,
    pub policy: Option<Policy>,
    pub processes: Vec<ProcessReport>,
    pub decisions: Vec<Decision>,
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
        Err(e) => d.error = Some(crate::error_chain(&e)),
    }
}

/// Runs until the duration ends or SIGINT/SIGTERM; decisions are logged to
/// `log` as JSON lines when they are taken.
pub fn run(
    cfg: &Config,
    log: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<Report, CollectorError> {
    let col = Collector::attach()?;
    eprintln!(
        "madvise-collector: attached to {PROBE_POINT}, counts in {}",
        cfg.file.display()
    );
    let mut tracker = cfg.daemon.map(|p| Tracker::new(p, cfg.dry_run));
    let mut decisions = Vec::new();
    let started = Instant::now();
    let mut intervals = 0;
    loop {
        let until = started + cfg.interval * (intervals as u32 + 1);
        while Instant::now() < until && !stop() {
            std::thread::sleep(Duration::from_millis(20).min(cfg.interval));
        }
        let done = stop() || cfg.duration.is_some_and(|d| started.elapsed() >= d);
        intervals += 1;
        let samples = col.samples()?;
        write_counts(&cfg.file, &samples)?;
        if let Some(t) = tracker.as_mut() {
            for mut d in t.evaluate(&samples) {
                if d.action == Action::Advise {
                    carry_out(&mut d);
                }
                let line = serde_json::to_string(&d).expect("decisions serialize");
                writeln!(log, "{line}").map_err(|source| CollectorError::Log { source })?;
                decisions.push(d);
            }
        }
        if done {
            break;
        }
    }
    let processes = col
        .samples()?
        .into_iter()
        .map(|s| ProcessReport {
            ratio: if s.faults == 0 {
                0.0
            } else {
                s.sequential as f64 / s.faults as f64
            },
            pid: s.pid,
            comm: s.comm,
            faults: s.faults,
            sequential: s.sequential,
        })
        .collect();
    Ok(Report {
        probe_point: PROBE_POINT,
        file: cfg.file.display().to_string(),
        interval_ms: cfg.interval.as_millis() as u64,
        intervals,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        daemon: cfg.daemon.is_some(),
        dry_run: cfg.dry_run,
        policy: cfg.daemon,
        processes,
        decisions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_struct_has_the_c_layout() {
        // struct proc in bpf/madvise_collector.bpf.c.
        assert_eq!(std::mem::size_of::<RawProc>(), 48);
        assert_eq!(std::mem::offset_of!(RawProc, faults), 16);
        assert_eq!(std::mem::offset_of!(RawProc, sequential), 24);
        assert_eq!(std::mem::offset_of!(RawProc, comm), 32);
    }

    fn s(pid: u32, sequential: u64) -> Sample {
        Sample {
            pid,
            comm: "x".into(),
            faults: 10,
            sequential,
            last_address: 0,
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
