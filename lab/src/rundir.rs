//! A lab instance's run directory and its saved state.
//!
//! `<state root>/<name>/` (durable, see [`crate::paths::state_root`]):
//! `state.json`, the effective `topology.toml`, `console.log`, `qemu.log`,
//! `memsim.log`, `scratch.img`, `backing/` (device memory, label areas and
//! kind records) and `results/`.
//!
//! Its socket directory: `qmp.sock`, `qga.sock`, `memsim.sock`,
//! `plugin.sock` (timing mode), `vublk-<device>.sock` and `qemu.pid`. That
//! is `<socket root>/<name>/` when [`crate::paths::socket_root`] names one
//! (a short tmpfs path), else the run directory itself.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use serde::{Deserialize, Serialize};

use crate::qemu::Accel;
use crate::runfiles::{self, DeviceFiles};

/// Errors of the run directory.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("'{0}' is not a usable lab name; use letters, digits, '-' and '_'.")]
    BadName(String),
    #[error("The socket path {path} is {len} bytes, more than the {max} a Unix socket address holds; use a shorter lab name or device name, or point CXL_LAB_STATE (or, when that is unset, XDG_RUNTIME_DIR) at a shorter directory.")]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("{legacy} is the run directory of lab '{name}' from an earlier cxl-lab, which kept backing files and results there, in $XDG_RUNTIME_DIR (a tmpfs emptied at logout); the lab now keeps them in {dir}. Stop that lab if it still runs (its QEMU and cxl-memsim name {legacy} on their command lines), move what you want to keep (backing/, results/) into {dir}, then remove {legacy}.")]
    Legacy {
        name: String,
        legacy: PathBuf,
        dir: PathBuf,
    },
    #[error("Cannot write {path}.")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The state file {path} is damaged; remove the run directory after checking no QEMU of it runs.")]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A run directory's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another `lab up` or `lab down` holds it.
    #[error("held by {verb} (pid {})", pid.map_or("unknown".to_owned(), |p| p.to_string()))]
    Held {
        /// What the holder wrote: its pid and verb ("up", "down").
        pid: Option<u32>,
        verb: String,
    },
    #[error("Cannot lock {path}.")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The run directory's lock, held by one `lab up` or `lab down` at a time
/// and released when dropped (or when its process dies, however it dies).
/// Its file is opened close-on-exec, so QEMU and cxl-memsim, which outlive
/// `lab up`, do not inherit it.
#[derive(Debug)]
pub struct RunLock {
    _lock: Flock<File>,
}

/// Where a lab instance lives.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub name: String,
    /// Durable state.
    pub dir: PathBuf,
    /// Sockets and pid files (may be `dir`).
    pub sockets: PathBuf,
}

/// The longest path a Unix socket address holds (108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Boot timings of `lab up`, in milliseconds from its start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub image_ms: u64,
    pub simulator_ms: u64,
    pub agent_ready_ms: u64,
    pub regions_ready_ms: u64,
    /// How the guest came up.
    #[serde(default)]
    pub boot: BootKind,
    /// A cold boot that saved its state for the next `lab up`: how long
    /// the save took (between agent and regions, so in regions_ready_ms).
    #[serde(default)]
    pub save_ms: Option<u64>,
}

/// How `lab up` brought the guest up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootKind {
    /// A full boot from the kernel, then region creation.
    #[default]
    Cold,
    /// QEMU loaded a saved post-boot state (`crate::snapshot`).
    Restored,
}

impl BootKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BootKind::Cold => "cold",
            BootKind::Restored => "restored",
        }
    }
}

/// Where a lab is in its life, as state.json records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabStatus {
    /// `lab up` runs: the simulator is started, QEMU may be booting.
    Starting,
    /// Regions are made; the lab takes commands.
    Up,
    /// `lab down` ran (or cleaned up after a failed `lab up`).
    Down,
}

impl LabStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LabStatus::Starting => "starting",
            LabStatus::Up => "up",
            LabStatus::Down => "down",
        }
    }
}

/// What `lab up` started and found, saved as state.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub status: LabStatus,
    pub topology_origin: String,
    pub image_key: String,
    pub kernel: PathBuf,
    /// `uname -r` of the guest kernel.
    #[serde(default)]
    pub kernel_release: Option<String>,
    /// The config the kernel was checked against before boot; the suites
    /// read it to skip what the kernel cannot do.
    #[serde(default)]
    pub kernel_config: Option<PathBuf>,
    /// Where the kernel came from (the image, or `--kernel`).
    #[serde(default)]
    pub kernel_origin: Option<crate::kernel::KernelOrigin>,
    /// The image's out-of-tree modules, built for the image's kernel, that
    /// a user's kernel of another release cannot load.
    #[serde(default)]
    pub foreign_built_modules: Vec<String>,
    pub initrd: PathBuf,
    pub accel: Accel,
    pub argv: Vec<String>,
    pub devices: Vec<DeviceFiles>,
    pub qemu_pid: Option<u32>,
    pub memsim_pid: Option<u32>,
    pub memsim_listen: Option<String>,
    pub regions: Option<cxl_regions::plan::Outcome>,
    pub timings: Timings,
    /// Timing mode: the plugin and what it was armed with.
    #[serde(default)]
    pub timing: Option<crate::timing::TimingState>,
}

impl LabState {
    /// A saved state of lab "t" with no processes, for the verbs' tests.
    #[cfg(test)]
    pub(crate) fn of_test_lab(
        status: LabStatus,
        topology_origin: String,
        argv: Vec<String>,
        devices: Vec<DeviceFiles>,
    ) -> LabState {
        LabState {
            name: "t".into(),
            status,
            topology_origin,
            image_key: "k".into(),
            kernel: "/k".into(),
            kernel_release: None,
            kernel_config: None,
            kernel_origin: None,
            foreign_built_modules: Vec::new(),
            initrd: "/i".into(),
            accel: Accel::Tcg,
            argv,
            devices,
            qemu_pid: None,
            memsim_pid: None,
            memsim_listen: None,
            regions: None,
            timings: Timings::default(),
            timing: None,
        }
    }
}

/// Whether `name` can name a lab: 1 to 64 letters, digits, '-' and '_'
/// (it becomes a directory and part of socket paths).
pub fn check_name(name: &str) -> Result<(), RunDirError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(RunDirError::BadName(name.to_owned()))
    }
}

impl RunDir {
    pub fn new(name: &str) -> Result<RunDir, RunDirError> {
        let mut run = RunDir::under(&crate::paths::state_root(), name)?;
        if let Some(root) = crate::paths::socket_root() {
            run.sockets = root.join(name);
        }
        Ok(run)
    }

    /// A run directory under `root` that also holds its sockets.
    pub fn under(root: &Path, name: &str) -> Result<RunDir, RunDirError> {
        check_name(name)?;
        Ok(RunDir {
            name: name.to_owned(),
            dir: root.join(name),
            sockets: root.join(name),
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
    pub fn state_file(&self) -> PathBuf {
        self.path("state.json")
    }
    pub fn backing_dir(&self) -> PathBuf {
        self.path("backing")
    }
    pub fn results_dir(&self) -> PathBuf {
        self.path("results")
    }
    pub fn topology_file(&self) -> PathBuf {
        self.path("topology.toml")
    }
    /// A file in the socket directory.
    pub fn socket(&self, file: &str) -> PathBuf {
        self.sockets.join(file)
    }
    pub fn memsim_control(&self) -> PathBuf {
        self.socket("memsim.sock")
    }
    pub fn plugin_socket(&self) -> PathBuf {
        crate::timing::plugin_socket(&self.sockets)
    }

    /// Every socket the lab makes for `topology`, checked against the
    /// length a Unix socket address holds, so a long path fails here with
    /// the fix rather than deep in QEMU or the simulator.
    pub fn check_socket_paths(&self, topology: &cxl_topology::Topology) -> Result<(), RunDirError> {
        let mut sockets = vec![
            runfiles::qmp_socket(&self.sockets),
            runfiles::agent_socket(&self.sockets),
            self.memsim_control(),
            self.plugin_socket(),
        ];
        for (d, _) in topology.block_views() {
            sockets.push(runfiles::vhost_user_blk_socket(&self.sockets, &d.name));
        }
        match sockets
            .into_iter()
            .find(|p| p.as_os_str().len() > MAX_SOCKET_PATH)
        {
            Some(path) => Err(RunDirError::SocketPathTooLong {
                len: path.as_os_str().len(),
                path,
                max: MAX_SOCKET_PATH,
            }),
            None => Ok(()),
        }
    }

    /// Refuses a socket directory that an earlier cxl-lab used as the
    /// whole run directory (state and backing files in a tmpfs), so its
    /// persistent data is not silently left behind.
    pub fn check_legacy(&self) -> Result<(), RunDirError> {
        let old = self.sockets != self.dir
            && (self.sockets.join("state.json").exists() || self.sockets.join("backing").exists());
        if old {
            return Err(RunDirError::Legacy {
                name: self.name.clone(),
                legacy: self.sockets.clone(),
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }
    pub fn memsim_log(&self) -> PathBuf {
        self.path("memsim.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.path("qemu.log")
    }
    /// The string that marks a process as started for this run.
    pub fn marker(&self) -> String {
        self.dir.display().to_string()
    }

    pub fn create(&self) -> Result<(), RunDirError> {
        for d in [
            self.dir.clone(),
            self.sockets.clone(),
            self.backing_dir(),
            self.results_dir(),
        ] {
            std::fs::create_dir_all(&d).map_err(|source| RunDirError::Write {
                path: d.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The lock file (beside state.json).
    pub fn lock_file(&self) -> PathBuf {
        self.path("lock")
    }

    /// Takes the run directory's lock for `verb` ("up", "down"), creating
    /// the directory; fails at once when another process holds it, with
    /// that process's pid and verb.
    pub fn lock(&self, verb: &str) -> Result<RunLock, LockError> {
        let path = self.lock_file();
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                lock.set_len(0).map_err(io)?;
                lock.rewind().map_err(io)?;
                writeln!(lock, "{} {verb}", std::process::id()).map_err(io)?;
                Ok(RunLock { _lock: lock })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                // The holder writes its pid right after taking the lock:
                // give it a moment.
                let mut text = String::new();
                for _ in 0..20 {
                    text.clear();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut text);
                    if text.ends_with('\n') {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let mut words = text.split_whitespace();
                let pid = words.next().and_then(|p| p.parse().ok());
                let verb = words.next().unwrap_or("another lab").to_owned();
                Err(LockError::Held { pid, verb })
            }
            Err((_, errno)) => Err(io(errno.into())),
        }
    }

    pub fn load(&self) -> Result<Option<LabState>, RunDirError> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RunDirError::Damaged { path, source }),
            Err(_) => Ok(None),
        }
    }

    pub fn save(&self, state: &LabState) -> Result<(), RunDirError> {
        let path = self.state_file();
        let tmp = self.path("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| RunDirError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let root = Path::new("/tmp/x");
        assert!(RunDir::under(root, "default").is_ok());
        let e = RunDir::under(root, "../etc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'../etc' is not a usable lab name; use letters, digits, '-' and '_'."
        );
    }

    #[test]
    fn long_socket_paths_are_refused_with_the_fix() {
        let t = cxl_topology::Topology::embedded_default();
        let short = RunDir::under(Path::new("/tmp/x"), "default").unwrap();
        short.check_socket_paths(&t).unwrap();
        let deep = format!("/home/{}/.local/state/cxl-lab", "u".repeat(40));
        let long = RunDir::under(Path::new(&deep), &"n".repeat(40)).unwrap();
        let e = long.check_socket_paths(&t).unwrap_err().to_string();
        assert!(
            e.contains("more than the 107 a Unix socket address holds"),
            "{e}"
        );
        assert!(e.contains("use a shorter lab name"), "{e}");
    }

    #[test]
    fn a_second_lock_fails_with_the_holders_pid() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::under(d.path(), "t").unwrap();
        let held = run.lock("up").expect("a free lock");
        match run.lock("up") {
            Err(LockError::Held { pid, verb }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(verb, "up");
            }
            other => panic!("a held lock was taken again: {other:?}"),
        }
        assert!(matches!(run.lock("down"), Err(LockError::Held { .. })));
        drop(held);
        let again = run.lock("down").expect("free once dropped");
        assert_eq!(
            std::fs::read_to_string(run.lock_file()).unwrap(),
            format!("{} down\n", std::process::id())
        );
        drop(again);
        // Held by another process: its pid is named.
        let script = format!(
            "exec 9>>'{}'; flock -n 9 && echo \"$$ up\" > '{}' && echo locked && exec sleep 30",
            run.lock_file().display(),
            run.lock_file().display()
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "locked\n");
        let e = run.lock("up").unwrap_err();
        let _ = child.kill();
        let _ = child.wait();
        match e {
            LockError::Held { pid, verb } => {
                assert_eq!(pid, Some(child.id()));
                assert_eq!(verb, "up");
            }
            other => panic!("{other:?}"),
        }
        run.lock("up").expect("free once its holder died");
    }

    #[test]
    fn an_old_run_directory_in_the_socket_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut run = RunDir::under(&d.path().join("state"), "default").unwrap();
        run.sockets = d.path().join("runtime/default");
        run.check_legacy().unwrap();
        run.create().unwrap();
        run.check_legacy().expect("the new layout is not legacy");
        std::fs::create_dir_all(run.sockets.join("backing")).unwrap();
        let e = run.check_legacy().unwrap_err().to_string();
        assert!(e.contains("from an earlier cxl-lab"), "{e}");
        assert!(e.contains("move what you want to keep"), "{e}");
    }
}
