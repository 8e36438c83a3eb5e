//! The lab's eBPF programs. Each `bpf/<name>.bpf.c` is compiled by clang in
//! `build.rs`; its object is embedded here (8-byte aligned, as aya's ELF
//! parser wants) as a `pub static` and loaded with `aya::Ebpf::load` by the
//! tool that uses it. Shared C headers live in `bpf/include/`.

/// `fault_monitor.bpf.c`: kprobe + kretprobe on `handle_mm_fault`, per
/// (pid, tid) aggregation, per-fault events in a ring buffer.
pub static FAULT_MONITOR: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fault_monitor.bpf.o"));

/// `madvise_collector.bpf.c`: per-process sequential-fault counts; an
/// exiting process's entry is deleted and its final counts go to a ring
/// buffer (sched_process_exit).
pub static MADVISE_COLLECTOR: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/madvise_collector.bpf.o"));

/// ioriot's capture: raw_syscalls enter/exit, sched_process_fork and
/// sched_process_exit tracepoints (an exiting task leaves the maps and is
/// reported), events through a ring buffer, a lost-event counter
/// (`bpf/ioriot_capture.bpf.c`).
pub static IORIOT_CAPTURE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ioriot_capture.bpf.o"));
