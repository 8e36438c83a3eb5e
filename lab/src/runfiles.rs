//! The names of a run's files and sockets: the one place that spells them,
//! so QEMU's command line, the simulator's flags and the run directory's
//! checks agree. Plain functions of the directories, so QEMU's command line
//! needs only the paths, not the run directory ([`crate::rundir`]).

use std::path::{Path, PathBuf};

use cxl_topology::Topology;

/// QEMU's QMP socket in the socket directory.
pub fn qmp_socket(socket_dir: &Path) -> PathBuf {
    socket_dir.join("qmp.sock")
}
/// The guest agent's socket in the socket directory.
pub fn agent_socket(socket_dir: &Path) -> PathBuf {
    socket_dir.join("qga.sock")
}
/// QEMU's pid file in the socket directory.
pub fn pid_file(socket_dir: &Path) -> PathBuf {
    socket_dir.join("qemu.pid")
}
/// The vhost-user socket on which the simulator serves `device` as a disk.
pub fn vhost_user_blk_socket(socket_dir: &Path, device: &str) -> PathBuf {
    socket_dir.join(format!("vublk-{device}.sock"))
}
/// The guest's serial console, logged in the run directory.
pub fn console_log(run_dir: &Path) -> PathBuf {
    run_dir.join("console.log")
}
/// The guest's scratch disk in the run directory.
pub fn scratch_disk(run_dir: &Path) -> PathBuf {
    run_dir.join("scratch.img")
}

/// Backing files of one type-3 device.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceFiles {
    pub name: String,
    /// The device memory (created by cxl-memsim).
    pub memory: PathBuf,
    /// The label storage area of persistent devices.
    pub lsa: Option<PathBuf>,
}

impl DeviceFiles {
    /// Every device's files in the run's backing directory: `<name>.mem`
    /// (the name cxl-memsim gives the memory it creates there) and, for a
    /// device with a label storage area, `<name>.lsa`.
    pub fn in_dir(topology: &Topology, backing_dir: &Path) -> Vec<DeviceFiles> {
        topology
            .devices
            .iter()
            .map(|d| DeviceFiles {
                name: d.name.clone(),
                memory: backing_dir.join(format!("{}.mem", d.name)),
                lsa: d
                    .lsa_size
                    .map(|_| backing_dir.join(format!("{}.lsa", d.name))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_files_live_in_the_backing_dir_and_only_persistent_ones_have_a_label_area() {
        let t = Topology::embedded_default();
        let files = DeviceFiles::in_dir(&t, Path::new("/r/backing"));
        assert_eq!(files.len(), t.devices.len());
        for (d, f) in t.devices.iter().zip(&files) {
            assert_eq!(f.name, d.name);
            assert_eq!(
                f.memory,
                Path::new("/r/backing").join(format!("{}.mem", d.name))
            );
            assert_eq!(
                f.lsa,
                d.lsa_size
                    .map(|_| Path::new("/r/backing").join(format!("{}.lsa", d.name)))
            );
        }
        assert!(
            files.iter().any(|f| f.lsa.is_some()) && files.iter().any(|f| f.lsa.is_none()),
            "the default topology has a volatile and a persistent device: {files:?}"
        );
    }
}
