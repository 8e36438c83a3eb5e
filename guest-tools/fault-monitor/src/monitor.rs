//! fault-monitor: loads `fault_monitor.bpf.c` with aya, attaches its kprobe
//! and kretprobe to handle_mm_fault, prints the per-thread table every
//! interval and, with events on, each fault from the ring buffer.

use std::io::Write;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData, RingBuf};
use aya::programs::KProbe;
use aya::{Ebpf, EbpfLoader};
use serde::Serialize;

use crate::btf::FaultBits;
use crate::preflight::PROBE_POINT;
use crate::table::{self, Counts, Row, HIST_SLOTS};

#[derive(Clone, Debug)]
pub struct Config {
    /// 0 = every process.
    pub pid: u32,
    pub interval: Duration,
    /// Per-fault events (-v).
    pub events: bool,
    /// One JSON document at the end instead of tables.
    pub json: bool,
    pub duration: Option<Duration>,
    /// At most this many events are kept for the JSON report.
    pub max_events: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("The kernel refused to load the fault monitor's eBPF object.")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error("The eBPF object has no program or map named {0}.")]
    Missing(&'static str),
    #[error("Cannot load or attach the {program} probe on {PROBE_POINT}.")]
    Attach {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("Cannot open the eBPF map {name}.")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("Cannot write the report.")]
    Output {
        #[source]
        source: std::io::Error,
    },
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Key {
    pid: u32,
    tid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RawStats {
    major: u64,
    minor: u64,
    errors: u64,
    total_ns: u64,
    max_ns: u64,
    min_ns: u64,
    comm: [u8; 16],
    hist: [u64; HIST_SLOTS],
}

impl Default for RawStats {
    fn default() -> RawStats {
        RawStats {
            major: 0,
            minor: 0,
            errors: 0,
            total_ns: 0,
            max_ns: 0,
            min_ns: 0,
            comm: [0; 16],
            hist: [0; HIST_SLOTS],
        }
    }
}

// SAFETY: aya copies Pod values to and from map bytes. Key is #[repr(C)],
// two u32s: 8 bytes, no padding (the layout test), any bit pattern valid.
unsafe impl aya::Pod for Key {}
// SAFETY: as for Key: six u64s, 16 bytes and 32 u64s, 320 bytes with no
// padding (the layout test), any bit pattern valid.
unsafe impl aya::Pod for RawStats {}

/// One fault from the ring buffer (`struct event` in the C program).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub address: u64,
    pub duration_us: f64,
    pub major: bool,
    pub ret: u32,
}

impl Event {
    /// Decodes the 48-byte record; None if it is shorter.
    pub fn parse(b: &[u8]) -> Option<Event> {
        if b.len() < 48 {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        Some(Event {
            pid: u32_at(0),
            tid: u32_at(4),
            address: u64_at(8),
            duration_us: u64_at(16) as f64 / 1e3,
            major: u32_at(24) != 0,
            ret: u32_at(28),
            comm: table::comm(&b[32..48]),
        })
    }

    pub fn line(&self) -> String {
        format!(
            "fault pid={} tid={} comm={} addr={:#x} {} {:.1}us ret={:#x}",
            self.pid,
            self.tid,
            self.comm,
            self.address,
            if self.major { "major" } else { "minor" },
            self.duration_us,
            self.ret
        )
    }
}

/// The loaded, attached monitor; detached when dropped.
pub struct Monitor {
    ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
}

impl Monitor {
    pub fn attach(cfg: &Config, bits: &FaultBits) -> Result<Monitor, MonitorError> {
        let emit = u32::from(cfg.events);
        let mut ebpf = EbpfLoader::new()
            .override_global("target_pid", &cfg.pid, true)
            .override_global("emit_events", &emit, true)
            .override_global("vm_fault_major", &bits.vm_fault_major, true)
            .override_global("vm_fault_retry", &bits.vm_fault_retry, true)
            .override_global("vm_fault_error", &bits.vm_fault_error, true)
            .override_global("fault_flag_tried", &bits.fault_flag_tried, true)
            .load(cxl_bpf::FAULT_MONITOR)
            .map_err(|source| MonitorError::Load { source })?;
        for program in ["fault_enter", "fault_exit"] {
            let p: &mut KProbe = ebpf
                .program_mut(program)
                .ok_or(MonitorError::Missing(program))?
                .try_into()
                .map_err(|source| MonitorError::Attach { program, source })?;
            p.load()
                .map_err(|source| MonitorError::Attach { program, source })?;
            p.attach(PROBE_POINT, 0)
                .map_err(|source| MonitorError::Attach { program, source })?;
        }
        let events = if cfg.events {
            let m = ebpf
                .take_map("events")
                .ok_or(MonitorError::Missing("events"))?;
            Some(RingBuf::try_from(m).map_err(|source| MonitorError::Map {
                name: "events",
                source,
            })?)
        } else {
            None
        };
        Ok(Monitor { ebpf, events })
    }

    /// Every (pid, tid)'s totals so far.
    pub fn rows(&self) -> Result<Vec<Row>, MonitorError> {
        let map = self
            .ebpf
            .map("stats")
            .ok_or(MonitorError::Missing("stats"))?;
        let stats: HashMap<_, Key, RawStats> =
            HashMap::try_from(map).map_err(|source| MonitorError::Map {
                name: "stats",
                source,
            })?;
        let mut rows = Vec::new();
        // An entry removed while iterating (none are) would only be skipped.
        for (k, v) in stats.iter().flatten() {
            let c = Counts {
                major: v.major,
                minor: v.minor,
                errors: v.errors,
                total_ns: v.total_ns,
                max_ns: v.max_ns,
                min_ns: v.min_ns,
                hist: v.hist,
            };
            rows.push(Row::new(k.pid, k.tid, table::comm(&v.comm), &c));
        }
        rows.sort_by_key(|r| (r.pid, r.tid));
        Ok(rows)
    }

    /// Faults whose start was seen but not their end: still in progress,
    /// or returns the kretprobe missed (the kernel keeps a bounded number of
    /// return instances, max(10, 2 × CPUs) by default, so many threads
    /// sleeping in faults at once can exceed it).
    pub fn unfinished(&self) -> Result<u64, MonitorError> {
        let map = self
            .ebpf
            .map("inflight")
            .ok_or(MonitorError::Missing("inflight"))?;
        let m: HashMap<_, u32, [u64; 4]> =
            HashMap::try_from(map).map_err(|source| MonitorError::Map {
                name: "inflight",
                source,
            })?;
        Ok(m.keys().flatten().count() as u64)
    }

    /// Hands every queued event to `f`.
    pub fn drain_events(&mut self, mut f: impl FnMut(Event)) {
        if let Some(rb) = self.events.as_mut() {
            while let Some(item) = rb.next() {
                if let Some(e) = Event::parse(&item) {
                    f(e);
                }
            }
        }
    }
}

/// The JSON report of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub probe_point: &'static str,
    pub pid_filter: u32,
    pub interval_ms: u64,
    pub elapsed_ms: f64,
    pub intervals: u64,
    /// The constants the programs were loaded with, from the kernel's BTF.
    pub fault_bits: FaultBits,
    pub rows: Vec<Row>,
    /// See [`Monitor::unfinished`]; counted when the monitor stops.
    pub unfinished: u64,
    pub events_seen: u64,
    pub events: Vec<Event>,
}

/// Runs until the duration ends or SIGINT/SIGTERM; tables (and -v event
/// lines) go to `out` as they come, or one JSON report at the end.
pub fn run(
    cfg: &Config,
    bits: FaultBits,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<Report, MonitorError> {
    let mut mon = Monitor::attach(cfg, &bits)?;
    // The suites wait for this line before starting a workload.
    eprintln!(
        "fault-monitor: attached to {PROBE_POINT} ({})",
        if cfg.pid == 0 {
            "all processes".to_string()
        } else {
            format!("pid {}", cfg.pid)
        }
    );
    let wr = |source| MonitorError::Output { source };
    let started = Instant::now();
    let mut next_table = started + cfg.interval;
    let mut intervals = 0;
    let mut events_seen = 0u64;
    let mut kept = Vec::new();
    loop {
        let done = stop() || cfg.duration.is_some_and(|d| started.elapsed() >= d);
        let mut lines = String::new();
        mon.drain_events(|e| {
            events_seen += 1;
            if cfg.json {
                if kept.len() < cfg.max_events {
                    kept.push(e);
                }
            } else {
                lines.push_str(&e.line());
                lines.push('\n');
            }
        });
        out.write_all(lines.as_bytes()).map_err(wr)?;
        if Instant::now() >= next_table || done {
            intervals += 1;
            next_table += cfg.interval;
            if !cfg.json {
                let rows = mon.rows()?;
                write!(
                    out,
                    "--- {:.1} s\n{}",
                    started.elapsed().as_secs_f64(),
                    table::format(&rows)
                )
                .map_err(wr)?;
                out.flush().map_err(wr)?;
            }
        }
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(20).min(cfg.interval));
    }
    Ok(Report {
        probe_point: PROBE_POINT,
        pid_filter: cfg.pid,
        interval_ms: cfg.interval.as_millis() as u64,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        intervals,
        fault_bits: bits,
        rows: mon.rows()?,
        unfinished: mon.unfinished()?,
        events_seen,
        events: kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_structs_have_the_c_layout() {
        // struct key and struct stats in bpf/fault_monitor.bpf.c.
        assert_eq!(std::mem::size_of::<Key>(), 8);
        assert_eq!(std::mem::offset_of!(Key, tid), 4);
        assert_eq!(std::mem::size_of::<RawStats>(), 64 + 8 * HIST_SLOTS);
        assert_eq!(std::mem::offset_of!(RawStats, hist), 64);
        assert_eq!(std::mem::offset_of!(RawStats, errors), 16);
        assert_eq!(std::mem::offset_of!(RawStats, min_ns), 40);
        assert_eq!(std::mem::offset_of!(RawStats, comm), 48);
    }

    #[test]
    fn decodes_ring_buffer_records() {
        let mut b = Vec::new();
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&0x7f00_0000_1000u64.to_le_bytes());
        b.extend_from_slice(&2500u64.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(b"mmap-w0\0\0\0\0\0\0\0\0\0");
        let e = Event::parse(&b).unwrap();
        assert_eq!(
            (e.pid, e.tid, e.address, e.major, e.ret),
            (7, 8, 0x7f00_0000_1000, true, 4)
        );
        assert_eq!(e.comm, "mmap-w0");
        assert_eq!(
            e.line(),
            "fault pid=7 tid=8 comm=mmap-w0 addr=0x7f0000001000 major 2.5us ret=0x4"
        );
        assert!(Event::parse(&b[..47]).is_none());
    }
}
