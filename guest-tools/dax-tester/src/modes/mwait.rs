//! mwait: one thread waits for a cache line of the mapping to change while
//! another writes it. UMONITOR/UMWAIT (WAITPKG) or MONITORX/MWAITX are used
//! only when CPUID reports them; otherwise the waiter polls with PAUSE, and
//! the report says so and why. Wake-up latency is the time from the writer's
//! timestamp (stored in the line) to the waiter seeing the change.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{Env, Rng};
use crate::stats::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    UmonitorUmwait,
    MonitorxMwaitx,
    PollPause,
}

impl Mechanism {
    pub fn label(self) -> &'static str {
        match self {
            Mechanism::UmonitorUmwait => "UMONITOR/UMWAIT",
            Mechanism::MonitorxMwaitx => "MONITORX/MWAITX",
            Mechanism::PollPause => "polling with PAUSE",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MwaitReport {
    pub passed: bool,
    pub mechanism: Mechanism,
    pub reason: String,
    pub wakeups: usize,
    /// Wake-ups that saw the value the writer stored.
    pub observed: usize,
    pub wake_latency: Option<Summary>,
    /// CPU time (user + system) the waiting thread used while waiting.
    pub waiter_cpu_ms: f64,
    pub waiter_wall_ms: f64,
    /// waiter_cpu_ms / waiter_wall_ms: near 1 for polling.
    pub waiter_cpu_fraction: f64,
    pub skipped: Option<String>,
}

fn choose(env: &Env<'_>) -> (Mechanism, String) {
    if env.cpu.waitpkg {
        (
            Mechanism::UmonitorUmwait,
            "CPUID.(EAX=7,ECX=0):ECX[5] WAITPKG is set: UMONITOR/UMWAIT in C0.1 with a TSC deadline".into(),
        )
    } else if env.cpu.monitorx {
        (
            Mechanism::MonitorxMwaitx,
            "CPUID.80000001H:ECX[29] MONITORX is set: MONITORX/MWAITX with its timer".into(),
        )
    } else {
        (
            Mechanism::PollPause,
            "CPUID reports neither WAITPKG (UMONITOR/UMWAIT) nor MONITORX (MONITORX/MWAITX), and MONITOR/MWAIT is not usable in user mode: the waiter polls the line with PAUSE".into(),
        )
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; CLOCK_THREAD_CPUTIME_ID
    // always exists, so the call only fills `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Waits until `seq` holds `want`, with the chosen mechanism.
fn wait_for(mech: Mechanism, seq: &AtomicU64, want: u64) {
    loop {
        match mech {
            Mechanism::UmonitorUmwait => {
                // SAFETY: `choose` picks this mechanism only when CPUID
                // reports WAITPKG; `seq` is a live reference, so its line is
                // mapped.
                unsafe { crate::cpu::umonitor((seq as *const AtomicU64).cast()) };
                if seq.load(Ordering::Acquire) == want {
                    return;
                }
                // SAFETY: WAITPKG as above; the deadline bounds a missed
                // wake-up.
                unsafe { crate::cpu::umwait(crate::cpu::rdtsc() + 200_000) };
            }
            Mechanism::MonitorxMwaitx => {
                // SAFETY: `choose` picks this mechanism only when CPUID
                // reports MONITORX; `seq` is a live reference, so its line is
                // mapped.
                unsafe { crate::cpu::monitorx((seq as *const AtomicU64).cast()) };
                if seq.load(Ordering::Acquire) == want {
                    return;
                }
                // SAFETY: MONITORX as above.
                unsafe { crate::cpu::mwaitx(200_000) };
            }
            Mechanism::PollPause => {
                if seq.load(Ordering::Acquire) == want {
                    return;
                }
                std::hint::spin_loop();
            }
        }
        if seq.load(Ordering::Acquire) == want {
            return;
        }
    }
}

pub fn run(env: &Env<'_>) -> MwaitReport {
    let (mechanism, reason) = choose(env);
    let base = env.dev.base();
    let pad = base.align_offset(64);
    let empty = |why: String| MwaitReport {
        passed: false,
        mechanism,
        reason: reason.clone(),
        wakeups: 0,
        observed: 0,
        wake_latency: None,
        waiter_cpu_ms: 0.0,
        waiter_wall_ms: 0.0,
        waiter_cpu_fraction: 0.0,
        skipped: Some(why),
    };
    if env.dev.len() < pad + 128 {
        return empty("the range must hold at least 128 bytes".into());
    }
    // Line 0: sequence number and writer timestamp (the monitored line).
    // Line 1: the waiter's "armed" counter, so the writer never writes early.
    // SAFETY: l0 = base + pad is 64-byte aligned (align_offset) and
    // len >= pad + 128, so both lines are in the range, mapped while
    // `env.dev` lives (past the thread scope below), and aligned for
    // AtomicU64, which has u64's layout; they are only accessed through these
    // atomics while the references live.
    let (seq, stamp, armed) = unsafe {
        let l0 = base.add(pad);
        (
            &*(l0 as *const AtomicU64),
            &*(l0.add(8) as *const AtomicU64),
            &*(l0.add(64) as *const AtomicU64),
        )
    };
    seq.store(0, Ordering::SeqCst);
    armed.store(0, Ordering::SeqCst);
    let n = env.cfg.wakeups.max(1);
    let clock = env.clock;
    let (samples, observed, cpu_ns, wall_ns) = std::thread::scope(|s| {
        let waiter = s.spawn(move || {
            let mut samples = Vec::with_capacity(n);
            let mut observed = 0;
            let (cpu0, wall0) = (thread_cpu_ns(), std::time::Instant::now());
            for i in 0..n as u64 {
                armed.store(i + 1, Ordering::Release);
                wait_for(mechanism, seq, i + 1);
                let now = clock.now_ns();
                let t = f64::from_bits(stamp.load(Ordering::Acquire));
                if seq.load(Ordering::Acquire) == i + 1 {
                    observed += 1;
                }
                samples.push((now - t).max(0.0));
            }
            (
                samples,
                observed,
                thread_cpu_ns() - cpu0,
                wall0.elapsed().as_nanos() as u64,
            )
        });
        let mut rng = Rng::new(0x3A17);
        for i in 0..n as u64 {
            while armed.load(Ordering::Acquire) != i + 1 {
                std::hint::spin_loop();
            }
            // Let the waiter settle into its wait: 20-50 us.
            let until =
                std::time::Instant::now() + std::time::Duration::from_micros(20 + rng.below(30));
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            stamp.store(clock.now_ns().to_bits(), Ordering::Release);
            seq.store(i + 1, Ordering::Release);
        }
        waiter.join().expect("waiter thread panicked")
    });
    let mut samples = samples;
    let cpu_ms = cpu_ns as f64 / 1e6;
    let wall_ms = wall_ns as f64 / 1e6;
    MwaitReport {
        passed: observed == n,
        mechanism,
        reason,
        wakeups: n,
        observed,
        wake_latency: Summary::of(&mut samples),
        waiter_cpu_ms: (cpu_ms * 1000.0).round() / 1000.0,
        waiter_wall_ms: (wall_ms * 1000.0).round() / 1000.0,
        waiter_cpu_fraction: if wall_ms > 0.0 {
            ((cpu_ms / wall_ms) * 1000.0).round() / 1000.0
        } else {
            0.0
        },
        skipped: None,
    }
}
