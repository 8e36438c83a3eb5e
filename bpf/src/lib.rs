//! The lab's eBPF programs. Each `bpf/<name>.bpf.c` is compiled by clang in
//! `build.rs`; its object is embedded here (8-byte aligned, as aya's ELF
//! parser wants) as a `pub static` and loaded with `aya::Ebpf::load` by the
//! tool that uses it. Shared C headers live in `bpf/include/`.

/// ioriot's capture: raw_syscalls enter/exit and sched_process_fork
/// tracepoints, events through a ring buffer, a lost-event counter
/// (`bpf/ioriot_capture.bpf.c`).
pub static IORIOT_CAPTURE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ioriot_capture.bpf.o"));
