//! cxl-memsim: the simulator behind cxl-lab's CXL memory. It owns the
//! devices' backing files (QEMU maps them shared), models latency and
//! bandwidth deterministically, counts hotness, and serves CXLMemSim's TCP
//! protocol (`protocol.rs`), a Unix control socket for stats, a
//! vhost-user-blk view of any device's memory (`blk.rs`, `blk_backend.rs`)
//! and the stream of guest accesses from its QEMU TCG plugin (`plugin.rs`).

pub mod backing;
pub mod blk;
pub mod blk_backend;
pub mod busy_poll;
pub mod client;
pub mod control;
pub mod model;
pub mod plugin;
pub mod protocol;
pub mod serve;
pub mod server;
pub mod simulator;
pub mod stats;
