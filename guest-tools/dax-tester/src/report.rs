//! The result of a run: one JSON document (`--json`) or human text.

use std::fmt::Write as _;

use serde::Serialize;

use crate::clock::Clock;
use crate::config::Params;
use crate::cpu::CpuFeatures;
use crate::device::DeviceInfo;
use crate::modes::{atomic::AtomicReport, byte::ByteReport, latency::LatencyReport};
use crate::modes::{mwait::MwaitReport, persist::PersistReport, throughput::ThroughputReport};
use crate::size::human;

/// Version of the JSON layout; raised on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Reports of the modes that ran (absent modes did not run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Modes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte: Option<ByteReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub atomic: Option<AtomicReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mwait: Option<MwaitReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<ThroughputReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist: Option<PersistReport>,
}

impl Modes {
    fn passes(&self) -> Vec<bool> {
        [
            self.byte.as_ref().map(|r| r.passed),
            self.atomic.as_ref().map(|r| r.passed),
            self.mwait.as_ref().map(|r| r.passed),
            self.latency.as_ref().map(|r| r.passed),
            self.throughput.as_ref().map(|r| r.passed),
            self.persist.as_ref().map(|r| r.passed),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub schema_version: u32,
    pub mode: crate::config::Mode,
    pub device: DeviceInfo,
    pub cpu: CpuFeatures,
    pub clock: Clock,
    pub params: Params,
    pub modes: Modes,
    pub passed: bool,
}

impl Report {
    pub fn finish(mut self) -> Report {
        let p = self.modes.passes();
        self.passed = !p.is_empty() && p.iter().all(|&x| x);
        self
    }

    fn verdict(ok: bool) -> &'static str {
        if ok {
            "PASS"
        } else {
            "FAIL"
        }
    }

    /// The human-readable form.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let d = &self.device;
        let _ = writeln!(
            o,
            "dax-tester {} ({}, {}, align {}): range {:#x} + {} ({})",
            d.path,
            match d.kind {
                crate::device::Kind::DeviceDax => "device-dax",
                crate::device::Kind::File => "file",
                crate::device::Kind::DevMem => "physical memory",
            },
            human(d.device_size),
            human(d.align),
            d.offset,
            human(d.size),
            d.map.flags
        );
        if let Some(p) = &d.physical {
            let _ = write!(o, "  in ");
            if let Some(dax) = &p.dax {
                let _ = write!(o, "{} of ", dax.name);
            }
            let _ = writeln!(
                o,
                "{} [{:#x}-{:#x}] in {}",
                p.region.name, p.region.start, p.region.end, p.window.name
            );
        }
        if let Some(why) = &d.map.fallback_reason {
            let _ = writeln!(o, "  note: {why}");
        }
        let c = &self.clock;
        let _ = writeln!(
            o,
            "  clock: {:?}{} overhead {:.1} ns ({})",
            c.source,
            c.tsc_hz
                .map(|h| format!(" {:.3} GHz,", h / 1e9))
                .unwrap_or_default(),
            c.overhead_ns,
            c.reason
        );
        let m = &self.modes;
        if let Some(r) = &m.byte {
            let _ = writeln!(o, "[byte] {}", Self::verdict(r.passed));
            for s in &r.results {
                let _ = write!(
                    o,
                    "  {:>8} at +{:#x}: {}",
                    human(s.size),
                    s.offset,
                    s.status.label()
                );
                let _ = writeln!(
                    o,
                    "{}",
                    s.detail
                        .as_ref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
            }
        }
        if let Some(r) = &m.atomic {
            let _ = writeln!(o, "[atomic] {}", Self::verdict(r.passed));
            if let Some(why) = &r.skipped {
                let _ = writeln!(o, "  skipped: {why}");
            }
            for w in &r.results {
                let _ = writeln!(
                    o,
                    "  {:>2}-bit x{} threads: fetch_add {}/{} cas {}/{} torn loads {}: {}",
                    w.bits,
                    w.threads,
                    w.fetch_add_found,
                    w.fetch_add_expected,
                    w.cas_found,
                    w.cas_expected,
                    w.torn_loads,
                    Self::verdict(w.passed)
                );
            }
        }
        if let Some(r) = &m.mwait {
            let _ = writeln!(
                o,
                "[mwait] {}: {} ({})",
                Self::verdict(r.passed),
                r.mechanism.label(),
                r.reason
            );
            if let Some(l) = &r.wake_latency {
                let _ = writeln!(
                    o,
                    "  {}/{} wake-ups: p50 {:.0} ns p90 {:.0} ns p99 {:.0} ns max {:.0} ns; waiter CPU {:.1} ms of {:.1} ms ({:.0}%)",
                    r.observed,
                    r.wakeups,
                    l.p50_ns,
                    l.p90_ns,
                    l.p99_ns,
                    l.max_ns,
                    r.waiter_cpu_ms,
                    r.waiter_wall_ms,
                    r.waiter_cpu_fraction * 100.0
                );
            }
        }
        if let Some(r) = &m.latency {
            let _ = writeln!(
                o,
                "[latency] {} (clock {}, writes include {} + sfence)",
                Self::verdict(r.passed),
                r.clock,
                r.write_flush
            );
            for l in &r.results {
                let s = &l.summary;
                let _ = writeln!(
                    o,
                    "  {:>5} {:>6}: avg {:.1} p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} ns ({} samples)",
                    l.op,
                    human(l.size as u64),
                    s.avg_ns,
                    s.p50_ns,
                    s.p90_ns,
                    s.p99_ns,
                    s.max_ns,
                    s.samples
                );
            }
        }
        if let Some(r) = &m.throughput {
            let _ = writeln!(o, "[throughput] {}", Self::verdict(r.passed));
            for t in &r.results {
                let _ = writeln!(
                    o,
                    "  {:>5} {:>7} x{}: {:.0} ops/s {:.1} MB/s",
                    t.op,
                    human(t.block_size as u64),
                    t.threads,
                    t.ops_per_sec,
                    t.mb_per_sec
                );
            }
        }
        if let Some(r) = &m.persist {
            let _ = writeln!(
                o,
                "[persist] {}: {} + sfence over {} lines: {:.0} ns total, {:.1} ns/line; verified through a second mapping: {}{}",
                Self::verdict(r.passed),
                r.instruction.name(),
                r.lines,
                r.flush_total_ns,
                r.flush_per_line_ns,
                r.verified,
                if r.map_sync { ", MAP_SYNC" } else { ", no MAP_SYNC" }
            );
            if let Some(dt) = &r.detail {
                let _ = writeln!(o, "  {dt}");
            }
        }
        let _ = writeln!(o, "RESULT: {}", Self::verdict(self.passed));
        o
    }
}
