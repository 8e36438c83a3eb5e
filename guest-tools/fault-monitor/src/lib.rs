//! The page-fault tools of the lab guest: `fault-monitor` (per-thread major
//! and minor faults and their handling time, from a kprobe and kretprobe on
//! handle_mm_fault) and `madvise-collector` (per-process sequential faults,
//! and a daemon that turns them into process_madvise advice). The eBPF
//! programs are C in `bpf/`, embedded by `cxl-bpf` and loaded with aya.

pub mod advice;
pub mod btf;
pub mod collector;
pub mod monitor;
pub mod preflight;
pub mod seq;
pub mod table;

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
