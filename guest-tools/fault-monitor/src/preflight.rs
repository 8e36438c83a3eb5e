//! What the fault tools check before loading anything, so that a missing
//! privilege, BTF or probe point is named instead of surfacing as a bare
//! errno from the BPF syscall.

use crate::btf::{BtfError, Enums, FaultBits};

/// The kernel function both tools probe.
pub const PROBE_POINT: &str = "handle_mm_fault";
const KALLSYMS: &str = "/proc/kallsyms";
/// aya attaches kprobes through this perf event source.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{tool} must run as root: it loads eBPF programs and attaches kprobes (try sudo).")]
    NotRoot { tool: &'static str },
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("Cannot read {KALLSYMS} to find the probe point {PROBE_POINT}.")]
    Kallsyms {
        #[source]
        source: std::io::Error,
    },
    #[error("The kernel offers no kprobe event source ({KPROBE_PMU} is missing); it needs CONFIG_KPROBE_EVENTS.")]
    NoKprobes,
    #[error("The kernel has no symbol {PROBE_POINT} (not in {KALLSYMS}), so there is no probe point to attach to.")]
    NoProbePoint,
}

/// Whether a `/proc/kallsyms` text lists `symbol` as a function.
pub fn kallsyms_has(text: &str, symbol: &str) -> bool {
    text.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_addr, kind, name) = (f.next(), f.next(), f.next());
        matches!(kind, Some("t" | "T")) && name == Some(symbol)
    })
}

/// Root only (loading a kernel module needs no BTF or eBPF).
pub fn require_root(tool: &'static str) -> Result<(), PreflightError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(PreflightError::NotRoot { tool });
    }
    Ok(())
}

/// Root, BTF with the fault constants, the probe point and kprobe support; returns the
/// constants the programs are loaded with.
pub fn check(tool: &'static str) -> Result<FaultBits, PreflightError> {
    require_root(tool)?;
    let bits = FaultBits::from_enums(&Enums::from_kernel()?)?;
    let syms =
        std::fs::read_to_string(KALLSYMS).map_err(|source| PreflightError::Kallsyms { source })?;
    if !kallsyms_has(&syms, PROBE_POINT) {
        return Err(PreflightError::NoProbePoint);
    }
    if !std::path::Path::new(KPROBE_PMU).exists() {
        return Err(PreflightError::NoKprobes);
    }
    Ok(bits)
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF maps to it
/// (6.12 charges memory cgroups instead; harmless there).
pub fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass; failure is not fatal.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_function_symbols_only() {
        let t = "ffffffff81234560 T handle_mm_fault\nffffffff81234570 t handle_mm_fault_x\n0000000000000000 d other\n";
        assert!(kallsyms_has(t, "handle_mm_fault"));
        assert!(!kallsyms_has(t, "handle_mm"));
        assert!(
            !kallsyms_has(t, "other"),
            "data symbols are no probe points"
        );
        assert!(!kallsyms_has("", "handle_mm_fault"));
    }

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(
            PreflightError::NotRoot { tool: "fault-monitor" }.to_string(),
            "fault-monitor must run as root: it loads eBPF programs and attaches kprobes (try sudo)."
        );
        assert_eq!(
            PreflightError::NoProbePoint.to_string(),
            "The kernel has no symbol handle_mm_fault (not in /proc/kallsyms), so there is no probe point to attach to."
        );
    }
}
