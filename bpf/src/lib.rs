//! The lab's eBPF programs. Each `bpf/<name>.bpf.c` is compiled by clang in
//! `build.rs`; its object is embedded here (8-byte aligned, as aya's ELF
//! parser wants) as a `pub static` and loaded with `aya::Ebpf::load` by the
//! tool that uses it. Shared C headers live in `bpf/include/`.
