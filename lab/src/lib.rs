//! cxl-lab's host harness: builds the guest image, starts the simulator and
//! QEMU with a CXL topology, talks QMP and the guest agent, creates regions,
//! runs commands in the guest and tears everything down.
//!
//! Where things are: the verbs (`up`, `down`, `status`, `exec`, `args`,
//! `run`, `compare`, `report`, `bench`, `soak`, `inject`) are a file each in `verbs/`, with `verbs/launch.rs`
//! gathering what QEMU starts with for `up` and `args` alike; what they
//! return is `summary.rs`, their error `error.rs`. The QEMU command line is
//! `qemu.rs`, QMP is `qmp.rs`, the guest agent is `qga.rs`, region set-up is
//! `regions.rs` (host side) and the `cxl-regions` guest tool, the run
//! directory is `rundir.rs` (the names of its files and sockets are
//! `runfiles.rs`), timing mode (the TCG plugin) is `timing.rs`.
//! `lab inject`'s forms, their checks against the topology and their QMP
//! commands are `inject.rs` (the verb itself is `verbs/inject.rs`).
//! The suites of `lab run` are in `suites/` (registered in `suites::Suite`),
//! what several of them share in `suite_support/`. The guest kernel's
//! config, checked before boot, and the options the suites need are
//! `kconfig.rs`; a user's kernel (`lab up --kernel`: a .deb, a bzImage
//! or a build tree, checked and cached with its modules layer) is
//! `kernel/`; the rebuild loop's new kernel for `lab bench rebuild` (a
//! tree's make, or a stand-in) and its scratch cache are `rebuild.rs`
//! (the verb is `verbs/bench_rebuild.rs`). The regression gate (what
//! of a suite's JSON is behaviour, the metric table, kept runs and
//! baselines, `lab compare`, JUnit) is `gate/`; `lab report`'s HTML page
//! and its SVG charts are `report/`. What a lab that is down
//! must not leave behind (processes, sockets, files) is `leftovers.rs`.
//! `lab matrix`'s file, cells, scheduling, CI matrices and record are
//! `matrix/` (the verb is `verbs/matrix.rs`).

pub mod error;
pub mod error_chain;
pub mod events;
pub mod gate;
pub mod image;
pub mod inject;
pub mod kconfig;
pub mod kernel;
pub mod kvm;
pub mod leftovers;
pub mod matrix;
pub mod memsim;
pub mod paths;
pub mod process;
pub mod qemu;
pub mod qga;
pub mod qmp;
pub mod rebuild;
pub mod regions;
pub mod report;
pub mod rundir;
pub mod runfiles;
pub mod schedstat;
pub mod snapshot;
pub mod stall;
pub mod stats;
pub mod striping;
pub mod suite_support;
pub mod suites;
pub mod summary;
pub mod text;
pub mod timing;
pub mod ui;
pub mod verbs;
