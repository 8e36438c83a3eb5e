//! What a lab that is down leaves behind: processes that name its run
//! directory, sockets, pid files, volatile backing files and suites'
//! copies of persistent data. After `lab down` all of these lists are
//! empty (persistent backing files and their label areas are kept on
//! purpose and are not leftovers). `lab soak` checks them after each cycle.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use cxl_topology::{DeviceKind, Topology};
use serde::Serialize;

use crate::rundir::RunDir;

/// What is left of a lab that should be down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Leftovers {
    /// `pid command-line` of each process whose command line names the
    /// run directory (as `pgrep -f` would find QEMU and cxl-memsim).
    pub processes: Vec<String>,
    /// Sockets in the run or socket directory.
    pub sockets: Vec<PathBuf>,
    /// Pid files, volatile backing files and `*.saved` copies.
    pub files: Vec<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.sockets.is_empty() && self.files.is_empty()
    }

    /// How many things are left, of all kinds.
    pub fn count(&self) -> usize {
        self.processes.len() + self.sockets.len() + self.files.len()
    }
}

/// Whether a NUL-separated command line names `dir` (the directory itself
/// or a path under it; `/x/lab` does not name `/x/lab2`).
fn names_dir(cmdline: &[u8], dir: &str) -> bool {
    let under = format!("{dir}/");
    cmdline.split(|&b| b == 0).any(|arg| {
        let arg = String::from_utf8_lossy(arg);
        arg == dir || arg.contains(&under) || arg.ends_with(&format!("={dir}"))
    })
}

/// Processes other than this one whose command line names `dir`.
pub fn processes_naming(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            if pid == me || !pid.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            names_dir(&cmdline, &dir).then(|| {
                let text: String = String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .chars()
                    .take(120)
                    .collect();
                format!("{pid} {text}")
            })
        })
        .collect()
}

/// Sockets directly in `dir`.
fn sockets_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .collect()
}

/// Files directly in `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .map(|e| e.path())
        .collect()
}

/// What is left of the lab of `run`, which should be down.
pub fn of_lab(run: &RunDir) -> Leftovers {
    let mut dirs = vec![run.dir.clone()];
    if run.sockets != run.dir {
        dirs.push(run.sockets.clone());
    }
    let mut sockets: Vec<PathBuf> = dirs.iter().flat_map(|d| sockets_in(d)).collect();
    let mut files: Vec<PathBuf> = dirs.iter().flat_map(|d| files_ending(d, ".pid")).collect();
    let backing = run.backing_dir();
    sockets.extend(sockets_in(&backing));
    files.extend(files_ending(&backing, ".saved"));
    if let Ok(t) = Topology::load(Some(&run.topology_file())) {
        files.extend(
            t.devices
                .iter()
                .filter(|d| d.kind != DeviceKind::Persistent)
                .map(|d| backing.join(format!("{}.mem", d.name)))
                .filter(|p| p.exists()),
        );
    }
    sockets.sort();
    files.sort();
    Leftovers {
        processes: processes_naming(&run.dir),
        sockets,
        files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_names_the_directory_not_a_sibling() {
        let qemu =
            b"qemu-system-x86_64\0-object\0memory-backend-file,mem-path=/s/lab/backing/v.mem\0";
        assert!(names_dir(qemu, "/s/lab"));
        assert!(!names_dir(qemu, "/s/la"));
        assert!(!names_dir(qemu, "/s/lab/backing/v"));
        assert!(names_dir(b"sh\0-c\0x\0/s/lab\0", "/s/lab"));
        assert!(names_dir(b"cxl-memsim\0--dir=/s/lab\0", "/s/lab"));
        assert!(!names_dir(b"cxl-memsim\0--dir=/s/lab2\0", "/s/lab"));
    }

    #[test]
    fn a_down_lab_leaves_only_what_it_keeps() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::under(d.path(), "t").unwrap();
        run.create().unwrap();
        let t = Topology::embedded_default();
        std::fs::write(run.topology_file(), t.to_toml()).unwrap();
        let backing = run.backing_dir();
        std::fs::write(backing.join("pmem0.mem"), b"kept").unwrap();
        std::fs::write(backing.join("pmem0.lsa"), b"kept").unwrap();
        std::fs::write(run.path("console.log"), b"kept").unwrap();
        assert_eq!(of_lab(&run), Leftovers::default());

        std::fs::write(backing.join("vmem0.mem"), b"left").unwrap();
        std::fs::write(backing.join("pmem0.dax.saved"), b"left").unwrap();
        std::fs::write(run.path("qemu.pid"), b"1").unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(run.path("qmp.sock")).unwrap();
        let left = of_lab(&run);
        assert_eq!(left.sockets, vec![run.path("qmp.sock")]);
        assert_eq!(
            left.files,
            vec![
                backing.join("pmem0.dax.saved"),
                backing.join("vmem0.mem"),
                run.path("qemu.pid")
            ]
        );
        assert_eq!(left.count(), 4);
    }
}
