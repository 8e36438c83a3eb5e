//! cxl-lab's host harness: builds the guest image, starts the simulator and
//! QEMU with a CXL topology, talks QMP and the guest agent, creates regions,
//! runs commands in the guest and tears everything down.
//!
//! Where things are: the QEMU command line is `qemu.rs`, QMP is `qmp.rs`,
//! the guest agent is `qga.rs`, region set-up is `regions.rs` (host side)
//! and the `cxl-regions` guest tool, the run directory is `rundir.rs` (the
//! names of its files and sockets are `runfiles.rs`), and the verbs (`up`,
//! `down`, `exec`, ...) are in `lab.rs`, timing mode (the TCG plugin) is
//! `timing.rs`.

pub mod events;
pub mod image;
pub mod kvm;
pub mod lab;
pub mod memsim;
pub mod paths;
pub mod process;
pub mod qemu;
pub mod qga;
pub mod qmp;
pub mod regions;
pub mod rundir;
pub mod runfiles;
pub mod striping;
pub mod suites;
pub mod text;
pub mod timing;
pub mod ui;
