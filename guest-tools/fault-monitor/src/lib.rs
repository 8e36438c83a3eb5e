//! The page-fault tools of the lab guest: `fault-monitor` (per-thread major
//! and minor faults and their handling time, from a kprobe and kretprobe on
//! handle_mm_fault) and `madvise-collector` (per-process sequential faults,
//! and a daemon that turns them into process_madvise advice; `--proc` reads
//! them from the `seq_page_faults` kernel module instead). The eBPF
//! programs are C in `bpf/`, embedded by `cxl-bpf` and loaded with aya.

pub mod advice;
pub mod btf;
pub mod collector;
pub mod monitor;
pub mod preflight;
pub mod procfile;
pub mod seq;
pub mod table;
