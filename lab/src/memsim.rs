//! Starting `cxl-memsim serve` for a run: it creates and owns the CXL
//! backing files that QEMU then maps with memory-backend-file,share=on, and
//! serves the devices the topology asks for as vhost-user-blk disks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cxl_topology::{DeviceKind, Topology};
use serde::Deserialize;

use crate::process::{self, ProcessError};
use crate::rundir::RunDir;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum MemsimError {
    #[error("Cannot start the simulator.")]
    Spawn(#[source] ProcessError),
    #[error("cxl-memsim exited before it was ready; its log ({log}) ends with:\n{tail}")]
    Died { log: PathBuf, tail: String },
    #[error("cxl-memsim did not report ready within {timeout:?}; see {log}.")]
    Timeout { log: PathBuf, timeout: Duration },
    #[error("cxl-memsim's ready line is not what the lab expects: {line}")]
    BadReady {
        line: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One device in the ready line.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadyDevice {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub base: u64,
}

/// The JSON line `cxl-memsim serve` prints once its files and sockets are up.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    pub listen: String,
    pub control: PathBuf,
    pub devices: Vec<ReadyDevice>,
}

/// A running simulator.
#[derive(Debug, Clone)]
pub struct Memsim {
    pub pid: u32,
    pub ready: Ready,
}

/// The simulator binary: next to the lab's other binaries.
pub fn binary() -> PathBuf {
    crate::paths::tools_dir().join("cxl-memsim")
}

/// The ready event in a log line, if it is one.
pub fn parse_ready(line: &str) -> Option<Result<Ready, MemsimError>> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    (v.get("event")?.as_str()? == "ready").then(|| {
        serde_json::from_value(v).map_err(|source| MemsimError::BadReady {
            line: line.trim().to_owned(),
            source,
        })
    })
}

/// The `serve` flags of the topology's vhost-user-blk views, with sockets in
/// the run's socket directory.
pub fn block_view_args(socket_dir: &Path, topology: &Topology) -> Vec<String> {
    topology
        .block_views()
        .into_iter()
        .flat_map(|(d, read_only)| {
            let flag = if read_only {
                "--vhost-user-blk-ro"
            } else {
                "--vhost-user-blk"
            };
            let socket = crate::runfiles::vhost_user_blk_socket(socket_dir, &d.name);
            [flag.to_owned(), format!("{}={}", d.name, socket.display())]
        })
        .collect()
}

/// Warnings about the topology's block views: a writable view of a
/// persistent device shares its bytes with the guest's pmem namespace.
pub fn block_view_warnings(topology: &Topology) -> Vec<String> {
    topology
        .block_views()
        .into_iter()
        .filter(|(d, read_only)| !read_only && d.kind == DeviceKind::Persistent)
        .map(|(d, _)| {
            format!(
                "the vhost-user-blk view of persistent device {0} is writable: a write \
                 through it changes the same bytes as the guest's pmem namespace on {0} \
                 (its info block and data), unseen by the guest's filesystem; list {0} in \
                 simulator.vhost_user_blk_read_only unless that is what you want",
                d.name
            )
        })
        .collect()
}

/// Starts `cxl-memsim serve` on the run's topology (`topology_file` holds
/// `topology`) and waits for ready. With `plugin_socket` it also listens
/// for the TCG plugin there.
pub fn start(
    run: &RunDir,
    topology_file: &Path,
    topology: &Topology,
    plugin_socket: Option<&Path>,
    timeout: Duration,
) -> Result<Memsim, MemsimError> {
    let log = run.memsim_log();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(run.memsim_control());
    let mut argv: Vec<String> = vec![
        binary().display().to_string(),
        "serve".into(),
        "--topology".into(),
        topology_file.display().to_string(),
        "--backing-dir".into(),
        run.backing_dir().display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        run.memsim_control().display().to_string(),
    ];
    argv.extend(block_view_args(&run.sockets, topology));
    if let Some(p) = plugin_socket {
        argv.extend(["--plugin-socket".into(), p.display().to_string()]);
    }
    let mut child = process::spawn_detached(&argv, &log).map_err(MemsimError::Spawn)?;
    let pid = child.id();
    let marker = run.marker();
    let deadline = Instant::now() + timeout;
    loop {
        let bytes = std::fs::read(&log).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        if let Some(ready) = text.lines().find_map(parse_ready) {
            return ready.map(|ready| Memsim { pid, ready });
        }
        if !process::child_running(&mut child) {
            return Err(MemsimError::Died {
                log: log.clone(),
                tail: process::tail(&log, 20),
            });
        }
        if Instant::now() >= deadline {
            process::terminate(pid, &marker, Duration::from_secs(1));
            return Err(MemsimError::Timeout { log, timeout });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::tests::with_block_views;

    #[test]
    fn parses_the_ready_line() {
        let line = r#"{"event":"ready","listen":"127.0.0.1:4567","control":"/r/memsim.sock","devices":[{"name":"vmem0","path":"/r/backing/vmem0.mem","size":268435456,"base":0}]}"#;
        let r = parse_ready(line).unwrap().unwrap();
        assert_eq!(r.listen, "127.0.0.1:4567");
        assert_eq!(r.devices[0].name, "vmem0");
        assert!(parse_ready("INFO starting").is_none());
        assert!(parse_ready(r#"{"event":"ready"}"#).unwrap().is_err());
    }

    #[test]
    fn block_views_become_serve_flags() {
        let t = with_block_views();
        assert_eq!(
            block_view_args(Path::new("/r"), &t),
            [
                "--vhost-user-blk",
                "pmem0=/r/vublk-pmem0.sock",
                "--vhost-user-blk-ro",
                "vmem0=/r/vublk-vmem0.sock"
            ]
        );
        assert!(block_view_args(Path::new("/r"), &Topology::embedded_default()).is_empty());
        // pmem0 writable: warned; vmem0 is volatile (and read-only here).
        let warnings = block_view_warnings(&t);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("persistent device pmem0 is writable"));
        assert!(warnings[0].contains("simulator.vhost_user_blk_read_only"));
    }
}
