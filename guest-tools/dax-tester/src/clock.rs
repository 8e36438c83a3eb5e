//! The clock used for latencies: RDTSCP when CPUID reports an invariant TSC
//! and RDTSCP, calibrated against CLOCK_MONOTONIC_RAW; otherwise
//! clock_gettime(CLOCK_MONOTONIC). The cost of one empty start/stop pair is
//! measured and subtracted from every sample.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cpu::CpuFeatures;

/// Which counter is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Rdtscp,
    ClockGettime,
}

/// A calibrated clock.
#[derive(Debug, Clone, Serialize)]
pub struct Clock {
    pub source: Source,
    /// TSC ticks per second (RDTSCP only).
    pub tsc_hz: Option<f64>,
    /// Cost of an empty start/stop pair, subtracted from samples.
    pub overhead_ns: f64,
    /// How long the calibration ran.
    pub calibration_ms: f64,
    pub reason: &'static str,
}

const CALIBRATION: Duration = Duration::from_millis(50);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; CLOCK_MONOTONIC always
    // exists, so the call only fills `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn raw_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; CLOCK_MONOTONIC_RAW exists
    // on every kernel the guest runs, so the call only fills `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Clock {
    /// Chooses and calibrates the clock.
    pub fn calibrate(cpu: &CpuFeatures) -> Clock {
        let started = Instant::now();
        let (source, tsc_hz, reason) = if cpu.rdtscp && cpu.invariant_tsc {
            let (t0, n0) = (crate::cpu::rdtsc(), raw_ns());
            std::thread::sleep(CALIBRATION);
            let (t1, n1) = (crate::cpu::rdtsc(), raw_ns());
            let hz = (t1 - t0) as f64 * 1e9 / (n1 - n0) as f64;
            (Source::Rdtscp, Some(hz), "CPUID reports RDTSCP and an invariant TSC; calibrated against CLOCK_MONOTONIC_RAW over 50 ms")
        } else {
            (
                Source::ClockGettime,
                None,
                "no invariant TSC with RDTSCP in CPUID; using clock_gettime(CLOCK_MONOTONIC)",
            )
        };
        let mut clock = Clock {
            source,
            tsc_hz,
            overhead_ns: 0.0,
            calibration_ms: 0.0,
            reason,
        };
        let mut best = u64::MAX;
        for _ in 0..2000 {
            let s = clock.start();
            let e = clock.stop();
            best = best.min(e.saturating_sub(s));
        }
        clock.overhead_ns = clock.ticks_to_ns(best);
        clock.calibration_ms = started.elapsed().as_secs_f64() * 1e3;
        clock
    }

    /// Timestamp before the measured code (LFENCE; RDTSC, or clock_gettime).
    #[inline]
    pub fn start(&self) -> u64 {
        match self.source {
            Source::Rdtscp => {
                // SAFETY: LFENCE is SSE2 (baseline x86_64) and RDTSC is
                // unprivileged on Linux with a TSC on every x86_64 CPU; both
                // only order execution or read the counter.
                unsafe {
                    core::arch::x86_64::_mm_lfence();
                    let t = core::arch::x86_64::_rdtsc();
                    core::arch::x86_64::_mm_lfence();
                    t
                }
            }
            Source::ClockGettime => monotonic_ns(),
        }
    }

    /// Timestamp after the measured code (RDTSCP; LFENCE, or clock_gettime).
    #[inline]
    pub fn stop(&self) -> u64 {
        match self.source {
            Source::Rdtscp => {
                let mut aux = 0u32;
                // SAFETY: the source is Rdtscp only when `calibrate` saw
                // CPUID report RDTSCP; `aux` is a live u32 it writes the
                // processor id into. LFENCE is SSE2 (baseline x86_64).
                unsafe {
                    let t = core::arch::x86_64::__rdtscp(&mut aux);
                    core::arch::x86_64::_mm_lfence();
                    t
                }
            }
            Source::ClockGettime => monotonic_ns(),
        }
    }

    /// Converts a tick difference to nanoseconds.
    pub fn ticks_to_ns(&self, ticks: u64) -> f64 {
        match self.tsc_hz {
            Some(hz) => ticks as f64 * 1e9 / hz,
            None => ticks as f64,
        }
    }

    /// Nanoseconds of a start/stop interval with the overhead removed.
    pub fn sample_ns(&self, start: u64, stop: u64) -> f64 {
        (self.ticks_to_ns(stop.saturating_sub(start)) - self.overhead_ns).max(0.0)
    }

    /// A timestamp in nanoseconds comparable across threads.
    pub fn now_ns(&self) -> f64 {
        match self.source {
            Source::Rdtscp => self.ticks_to_ns(self.stop()),
            Source::ClockGettime => monotonic_ns() as f64,
        }
    }
}
