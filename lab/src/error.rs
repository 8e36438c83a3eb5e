//! The error of the verbs, and how any error reads as one text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cxl_topology::TopologyError;

use crate::gate::record::RecordError;
use crate::image::ImageError;
use crate::inject::InjectError;
use crate::kconfig::KconfigError;
use crate::kernel::KernelError;
use crate::memsim::MemsimError;
use crate::process::ProcessError;
use crate::qga::QgaError;
use crate::qmp::QmpError;
use crate::regions::RegionError;
use crate::rundir::RunDirError;

/// Errors of the verbs.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error("Writing the JUnit report {} failed.", path.display())]
    Junit {
        path: PathBuf,
        #[source]
        source: quick_junit::SerializeError,
    },
    #[error("Building the guest image failed.")]
    Image(#[from] ImageError),
    #[error(transparent)]
    Memsim(#[from] MemsimError),
    #[error(transparent)]
    Kconfig(#[from] KconfigError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Rebuild(#[from] crate::rebuild::RebuildError),
    #[error("Starting QEMU failed.")]
    Process(#[from] ProcessError),
    #[error("Restoring the saved lab state failed.")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("Creating regions in the guest failed; the console log is {console}.")]
    Regions {
        console: PathBuf,
        #[source]
        source: Box<RegionError>,
    },
    #[error("cxl-memsim created the memory of device {device} at {reported}, not at {expected} where QEMU would map it; the lab and cxl-memsim name backing files differently (are both from the same build?).")]
    BackingFileElsewhere {
        device: String,
        expected: PathBuf,
        reported: PathBuf,
    },
    #[error("Lab '{0}' is already up; run `lab down --name {0}` first.")]
    AlreadyUp(String),
    #[error("{}", busy_text(name, verb, *pid))]
    Busy {
        name: String,
        /// What holds the run directory's lock: "up" or "down".
        verb: String,
        pid: Option<u32>,
    },
    #[error("{what} (pid {pid}) of lab '{name}' still runs {waited:?} after SIGKILL, so its sockets and files are kept; it is stuck in the kernel (see /proc/{pid}/stack). Run `lab down --name {name}` again once it is gone.")]
    StillRunning {
        name: String,
        what: &'static str,
        pid: u32,
        waited: Duration,
    },
    #[error("Lab '{0}' is not up; start it with `lab up --name {0}`.")]
    NotUp(String),
    #[error("QEMU exited during boot; {log} ends with:\n{qemu_tail}\nand the console ({console}) with:\n{console_tail}")]
    QemuDied {
        log: PathBuf,
        qemu_tail: String,
        console: PathBuf,
        console_tail: String,
    },
    #[error("The guest agent did not answer within {timeout:?}; the console ({console}) ends with:\n{console_tail}")]
    BootTimeout {
        timeout: Duration,
        console: PathBuf,
        console_tail: String,
        #[source]
        source: Box<QgaError>,
    },
    #[error("Cannot reach the guest agent of lab '{name}'.")]
    Agent {
        name: String,
        #[source]
        source: Box<QgaError>,
    },
    /// A guest command (`lab exec`) that could not run or finish.
    #[error(transparent)]
    Guest(Box<QgaError>),
    #[error("Timing mode could not start.")]
    Timing(#[from] crate::timing::TimingError),
    #[error("Stall mode could not be set up.")]
    Stall(#[from] crate::stall::StallError),
    #[error("The label storage area {path} of device {device} has {found} bytes but the topology says lsa_size = {expected}; move the file away (its namespace labels belong to another topology) or fix the device's lsa_size.")]
    LsaSizeMismatch {
        device: String,
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("The label storage area {} of persistent device {device} holds namespace labels, but its backing file {} is gone, so the guest would find labels for data that is not there and region set-up would fail; put the backing file back, or move the label area away too for a fresh device.", lsa.display(), memory.display())]
    OrphanLabels {
        device: String,
        lsa: PathBuf,
        memory: PathBuf,
    },
    #[error("The label storage area {} of persistent device {device} holds namespace labels written when the device was {was}, but the topology now makes it {now}; its namespace cannot come back in another region shape (ndctl fails with ENXIO). Go back to the earlier topology, use another lab --name for this one, or move {} and {} away to start the device empty.", lsa.display(), lsa.display(), memory.display())]
    RegionShapeChanged {
        device: String,
        was: String,
        now: String,
        lsa: PathBuf,
        memory: PathBuf,
    },
    #[error("Lab '{name}' is running, so `lab args` prints the command line it runs with, which {option} cannot change ({why}); leave {option} out to see it, or run `lab down --name {name}` first to see the command line {option} gives.")]
    ArgsOfRunning {
        name: String,
        option: &'static str,
        why: &'static str,
    },
    /// An injection refused before QEMU saw it, or by QEMU (boxed: it
    /// carries QEMU's error).
    #[error(transparent)]
    Inject(Box<InjectError>),
    #[error("Lab '{name}' did not answer on QMP.")]
    Qmp {
        name: String,
        #[source]
        source: QmpError,
    },
    #[error("Cannot create {path}.")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<InjectError> for LabError {
    fn from(e: InjectError) -> Self {
        LabError::Inject(Box::new(e))
    }
}

fn busy_text(name: &str, verb: &str, pid: Option<u32>) -> String {
    let by = match pid {
        Some(p) => format!("`lab {verb}` (pid {p})"),
        None => format!("`lab {verb}`"),
    };
    let stop = pid.map_or(String::new(), |p| format!(", or stop it with `kill {p}`"));
    match verb {
        "up" => format!("Lab '{name}' is being started by {by}; wait for it to finish{stop}, then run `lab down --name {name}` if you want it down."),
        "down" => format!("Lab '{name}' is being shut down by {by}; wait for it to finish, then try again."),
        _ => format!("Lab '{name}' is in use by {by}; wait for it to finish, then try again."),
    }
}

pub use crate::error_chain::error_chain;

/// Maps an I/O error on `path` to [`LabError::Io`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_read_as_sentences() {
        let e = LabError::Agent {
            name: "t".into(),
            source: Box::new(QgaError::NotStarted),
        };
        assert_eq!(
            error_chain(&e),
            "Cannot reach the guest agent of lab 't'. The guest agent never started in the guest: the guest's /init did not report it on the console."
        );
        let io = std::io::Error::other("disk full");
        let e = LabError::Io {
            path: "/x".into(),
            source: io,
        };
        assert_eq!(error_chain(&e), "Cannot create /x. disk full");
    }

    #[test]
    fn qemu_refusals_name_the_command_and_device_once() {
        let e = LabError::from(InjectError::QemuRefused {
            command: "cxl-inject-poison",
            device: "vmem0".into(),
            source: qapi::Error {
                class: qapi::ErrorClass::GenericError,
                desc: "Overlap with existing poisoned region not supported".into(),
                id: None,
            },
        });
        assert_eq!(
            error_chain(&e),
            "QEMU refused cxl-inject-poison on device vmem0: Overlap with existing poisoned region not supported"
        );
    }

    #[test]
    fn a_busy_lab_names_the_holder_and_the_fix() {
        let e = LabError::Busy {
            name: "x".into(),
            verb: "up".into(),
            pid: Some(42),
        };
        assert_eq!(
            e.to_string(),
            "Lab 'x' is being started by `lab up` (pid 42); wait for it to finish, or stop it with `kill 42`, then run `lab down --name x` if you want it down."
        );
        let e = LabError::Busy {
            name: "x".into(),
            verb: "down".into(),
            pid: Some(42),
        };
        assert_eq!(
            e.to_string(),
            "Lab 'x' is being shut down by `lab down` (pid 42); wait for it to finish, then try again."
        );
    }
}
