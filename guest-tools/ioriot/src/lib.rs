//! ioriot: capture a workload's file I/O with eBPF, turn the capture into a
//! replay on virtual processes, threads and descriptors, create its
//! skeleton under a test root, replay it confined to that root, and report
//! statistics. The formats are documented in README.md.

pub mod capture;
pub mod capture_format;
pub mod confine;
pub mod escape;
pub mod generate;
pub mod init;
pub mod op;
pub mod order;
pub mod paths;
pub mod purge;
pub mod replay;
pub mod replay_format;
pub mod stats;
pub mod user;
