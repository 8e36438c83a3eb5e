//! `lab down`.

use std::path::Path;
use std::time::{Duration, Instant};

use cxl_topology::{DeviceKind, Topology};

use crate::error::LabError;
use crate::events::{Event, Events, Step};
use crate::process::{self, Ended, Process};
use crate::qemu::{self, DeviceFiles};
use crate::qmp::Qmp;
use crate::rundir::{LabStatus, LockError, RunDir, RunLock};
use crate::summary::DownReport;

/// `lab down`: QMP quit, then SIGTERM/SIGKILL; returns once every thread
/// of QEMU and cxl-memsim is gone, then removes sockets, pid files and
/// volatile backing files; keeps persistent ones. Idempotent. Holds the run
/// directory's lock, so it never races a `lab up` of the same lab.
pub async fn down(name: &str, events: &Events) -> Result<DownReport, LabError> {
    let run = RunDir::new(name)?;
    // A lab that never ran has no directory: nothing to lock or clean.
    let _lock = if run.dir.exists() {
        Some(lock(&run, "down")?)
    } else {
        None
    };
    down_run(&run, events).await
}

/// Takes the run directory's lock for `verb`, held by `lab up` for all its
/// run and by `lab down`.
pub(crate) fn lock(run: &RunDir, verb: &str) -> Result<RunLock, LabError> {
    run.lock(verb).map_err(|e| match e {
        LockError::Held { pid, verb } => LabError::Busy {
            name: run.name.clone(),
            verb,
            pid,
        },
        LockError::Io { path, source } => LabError::Io { path, source },
    })
}

/// How long QEMU gets to exit after QMP quit, and each process after
/// SIGTERM.
const QUIT_WAIT: Duration = Duration::from_secs(5);
const TERM_GRACE: Duration = Duration::from_secs(3);

/// `lab down` on a run directory (also `lab up` cleaning up after itself);
/// the caller holds the lock.
pub(crate) async fn down_run(run: &RunDir, events: &Events) -> Result<DownReport, LabError> {
    let t = Instant::now();
    events.emit(Event::Started {
        step: Step::Shutdown,
        detail: run.name.clone(),
    });
    let state = run.load()?;
    let marker = run.marker();
    let mut report = DownReport {
        name: run.name.clone(),
        was_up: false,
        qemu: "not running".into(),
        simulator: "not running".into(),
        qemu_ms: 0,
        simulator_ms: 0,
        elapsed_ms: 0,
        removed: vec![],
        kept: vec![],
        recovered: vec![],
        lost: vec![],
    };
    let still_running = |what, pid| LabError::StillRunning {
        name: run.name.clone(),
        what,
        pid,
        waited: process::KILL_WAIT,
    };
    let qemu_pid = state.as_ref().and_then(|s| s.qemu_pid);
    if let Some((pid, qemu)) = qemu_pid.and_then(|p| Some((p, Process::find(p, &marker)?))) {
        report.was_up = true;
        let tq = Instant::now();
        let qmp = qemu::qmp_socket(&run.sockets);
        let quit = async {
            if let Ok(q) = Qmp::connect(&qmp).await {
                let _ = q.quit().await;
            }
        };
        let _ = tokio::time::timeout(QUIT_WAIT, quit).await;
        // Gone means every thread: QEMU's leader thread exits (a zombie)
        // while another still frees the guest memory and holds its files.
        let ended = if qemu.wait_gone(QUIT_WAIT) {
            Ended::Quit
        } else {
            qemu.terminate(TERM_GRACE)
        };
        report.qemu = ended.as_str().into();
        report.qemu_ms = tq.elapsed().as_millis() as u64;
        if !ended.gone() {
            return Err(still_running("QEMU", pid));
        }
    }
    let topology = Topology::load(Some(&run.topology_file())).ok();
    if let Some(state) = &state {
        // QEMU is gone, so nothing writes the memory any more: a
        // persistent backing file deleted under the running lab is
        // written back from cxl-memsim's descriptor before it ends.
        let memsim = state.memsim_pid.filter(|&p| process::is_alive(p, &marker));
        for f in &state.devices {
            if f.memory.exists() || !is_persistent(f, topology.as_ref()) {
                continue;
            }
            let path = f.memory.display().to_string();
            match memsim.map(|pid| recover_deleted(pid, &f.memory)) {
                Some(Ok(())) => report.recovered.push(path),
                Some(Err(e)) => report.lost.push(format!("{path}: {e}")),
                None => report
                    .lost
                    .push(format!("{path}: cxl-memsim, which kept it open, is gone")),
            }
        }
    }
    if let Some(pid) = state.as_ref().and_then(|s| s.memsim_pid) {
        let ts = Instant::now();
        // SIGTERM makes cxl-memsim print its final report into memsim.log.
        let ended = process::terminate(pid, &marker, TERM_GRACE);
        report.simulator = ended.as_str().into();
        report.simulator_ms = ts.elapsed().as_millis() as u64;
        if !ended.gone() {
            return Err(still_running("cxl-memsim", pid));
        }
    }
    for f in [
        "qmp.sock",
        "qga.sock",
        "memsim.sock",
        "plugin.sock",
        "qemu.pid",
        "memsim.pid",
    ] {
        if std::fs::remove_file(run.socket(f)).is_ok() {
            report.removed.push(f.into());
        }
    }
    // The simulator removes its vhost-user sockets when it exits cleanly;
    // one it was killed will not have.
    for (d, _) in topology.iter().flat_map(|t| t.block_views()) {
        let socket = qemu::vhost_user_blk_socket(&run.sockets, &d.name);
        if std::fs::remove_file(&socket).is_ok() {
            report.removed.push(socket.display().to_string());
        }
    }
    if let Some(state) = &state {
        for f in &state.devices {
            let persistent = is_persistent(f, topology.as_ref());
            if persistent {
                report.kept.push(f.memory.display().to_string());
                if let Some(l) = &f.lsa {
                    report.kept.push(l.display().to_string());
                }
            } else if std::fs::remove_file(&f.memory).is_ok() {
                report.removed.push(f.memory.display().to_string());
            }
        }
    }
    if run.sockets != run.dir {
        // Only when empty: it holds nothing else of the lab's.
        let _ = std::fs::remove_dir(&run.sockets);
    }
    if let Some(mut s) = state {
        s.status = LabStatus::Down;
        s.qemu_pid = None;
        s.memsim_pid = None;
        run.save(&s)?;
    }
    report.elapsed_ms = t.elapsed().as_millis() as u64;
    events.emit(Event::Finished {
        step: Step::Shutdown,
        elapsed: t.elapsed(),
        detail: report.qemu.clone(),
    });
    Ok(report)
}

/// Whether a device's backing file holds persistent data. The kind
/// cxl-memsim recorded beside the file decides, not the topology file: a
/// failed `lab up` may have left a new topology that makes a persistent
/// device volatile. With no record (or no topology) it is kept.
fn is_persistent(f: &DeviceFiles, topology: Option<&Topology>) -> bool {
    let recorded = std::fs::read_to_string(f.memory.with_extension("kind")).ok();
    match recorded.as_deref().map(str::trim) {
        Some(kind) => kind == "persistent",
        None => topology
            .and_then(|t| t.device(&f.name))
            .is_none_or(|d| d.kind == DeviceKind::Persistent),
    }
}

/// Writes the data of `path`, deleted while cxl-memsim (`pid`) still has
/// it open, back to `path` from that descriptor (through a temporary file
/// renamed into place, so a failed copy leaves no half file).
fn recover_deleted(pid: u32, path: &Path) -> std::io::Result<()> {
    let deleted = format!("{} (deleted)", path.display());
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?;
    let fd = fds
        .flatten()
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == deleted.as_str()))
        .ok_or_else(|| std::io::Error::other("cxl-memsim has no descriptor of it open"))?;
    let mut from = std::fs::File::open(fd.path())?;
    let tmp = path.with_extension("mem.recovering");
    let copied = (|| {
        let mut to = std::fs::File::create(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::LabState;

    #[tokio::test]
    async fn down_keeps_a_file_recorded_persistent_whatever_the_topology_file_says() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::under(d.path(), "t").unwrap();
        run.create().unwrap();
        let mut t = Topology::embedded_default();
        let devices = DeviceFiles::in_dir(&t, &run.backing_dir());
        for f in &devices {
            std::fs::write(&f.memory, b"data").unwrap();
        }
        std::fs::write(run.backing_dir().join("vmem0.kind"), "volatile\n").unwrap();
        std::fs::write(run.backing_dir().join("pmem0.kind"), "persistent\n").unwrap();
        // A `lab up` that failed left a topology making pmem0 volatile.
        for dev in &mut t.devices {
            dev.kind = DeviceKind::Volatile;
            dev.lsa_size = None;
        }
        std::fs::write(run.topology_file(), t.to_toml()).unwrap();
        let state = LabState::of_test_lab(LabStatus::Down, String::new(), vec![], devices.clone());
        run.save(&state).unwrap();
        down_run(&run, &Events::none()).await.unwrap();
        let pmem = devices.iter().find(|f| f.name == "pmem0").unwrap();
        let vmem = devices.iter().find(|f| f.name == "vmem0").unwrap();
        assert_eq!(std::fs::read(&pmem.memory).unwrap(), b"data", "kept");
        assert!(!vmem.memory.exists(), "volatile memory removed");
    }
}
