//! `lab status`.

use std::time::Duration;

use cxl_topology::Topology;

use crate::error::LabError;
use crate::process;
use crate::qemu;
use crate::qga::Agent;
use crate::qmp::Qmp;
use crate::rundir::{LabState, LabStatus, RunDir};
use crate::summary::{summarize, StatusReport};

/// `lab status`: the summary, and whether QEMU, the simulator and the
/// guest agent answer.
pub async fn status(name: &str) -> Result<StatusReport, LabError> {
    let run = RunDir::new(name)?;
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    let topology = Topology::load(Some(&run.topology_file()))?;
    let marker = run.marker();
    let qemu_running = state
        .qemu_pid
        .is_some_and(|p| process::is_alive(p, &marker) && !process::is_exiting(p));
    let simulator_running = state
        .memsim_pid
        .is_some_and(|p| process::is_alive(p, &marker) && !process::is_exiting(p));
    let mut vm_status = None;
    let mut agent_answers = false;
    if qemu_running {
        if let Ok(q) = Qmp::connect(&qemu::qmp_socket(&run.sockets)).await {
            vm_status = q.status().await.ok();
        }
        if let Ok(a) =
            Agent::connect(&qemu::agent_socket(&run.sockets), Duration::from_secs(3)).await
        {
            agent_answers = a.ping().await.is_ok();
        }
    }
    let problems = problems(&run, &state, qemu_running, simulator_running, agent_answers);
    Ok(StatusReport {
        summary: summarize(&run, &state, &topology),
        qemu_running,
        simulator_running,
        vm_status,
        agent_answers,
        problems,
    })
}

/// What is wrong with a lab that should be up, each with what it means
/// and what to do.
fn problems(
    run: &RunDir,
    state: &LabState,
    qemu_running: bool,
    simulator_running: bool,
    agent_answers: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if state.status == LabStatus::Down {
        return out;
    }
    let name = &run.name;
    let restart = format!("run `lab down --name {name}`, then `lab up --name {name}`");
    if let (Some(pid), false) = (state.qemu_pid, qemu_running) {
        out.push(format!(
            "QEMU (pid {pid}) is gone (killed or crashed), and the guest with it; {} ends with: {}; {restart}.",
            run.qemu_log().display(),
            process::tail(&run.qemu_log(), 3).replace('\n', " | ")
        ));
    } else if qemu_running && !agent_answers {
        out.push(format!(
            "The guest agent does not answer: the guest is hung or too busy, or its qemu-ga is stopped or hung, so `lab exec` and `lab run` fail until it answers; if it does not, {restart}."
        ));
    }
    if let (Some(pid), false) = (state.memsim_pid, simulator_running) {
        out.push(format!(
            "The simulator cxl-memsim (pid {pid}) is gone (killed or crashed): the guest still maps the backing files, but the model, statistics, TCP server and vhost-user-blk disks are gone; {} ends with: {}; {restart}.",
            run.memsim_log().display(),
            process::tail(&run.memsim_log(), 3).replace('\n', " | ")
        ));
    }
    for f in &state.devices {
        if !f.memory.exists() {
            let kind = std::fs::read_to_string(f.memory.with_extension("kind")).unwrap_or_default();
            let fate = if kind.trim() == "persistent" {
                if simulator_running {
                    "`lab down` writes its data back to that path from cxl-memsim's open file"
                } else {
                    "its data is lost with the lab, since cxl-memsim, which kept it open, is gone too"
                }
            } else {
                "its data (volatile) ends with the lab as usual"
            };
            out.push(format!(
                "The backing file {} of device {} was deleted while the lab runs: QEMU and cxl-memsim still map it, so the guest sees no change; {fate}.",
                f.memory.display(),
                f.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::DeviceFiles;

    #[test]
    fn problems_name_what_is_gone_and_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::under(d.path(), "t").unwrap();
        run.create().unwrap();
        let t = Topology::embedded_default();
        let devices = DeviceFiles::in_dir(&t, &run.backing_dir());
        std::fs::write(run.backing_dir().join("pmem0.kind"), "persistent\n").unwrap();
        std::fs::write(run.backing_dir().join("vmem0.kind"), "volatile\n").unwrap();
        std::fs::write(run.memsim_log(), "serving\n").unwrap();
        let mut state = LabState::of_test_lab(LabStatus::Up, String::new(), vec![], devices);
        state.qemu_pid = Some(41);
        state.memsim_pid = Some(42);
        // Everything runs and answers; the backing files were deleted.
        let p = problems(&run, &state, true, true, true);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[1].contains("pmem0.mem of device pmem0 was deleted while the lab runs: QEMU and cxl-memsim still map it, so the guest sees no change; `lab down` writes its data back"), "{}", p[1]);
        assert!(
            p[0].ends_with("its data (volatile) ends with the lab as usual."),
            "{}",
            p[0]
        );
        for f in &state.devices {
            std::fs::write(&f.memory, b"").unwrap();
        }
        assert!(problems(&run, &state, true, true, true).is_empty());
        let p = problems(&run, &state, true, false, false);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p[0].starts_with("The guest agent does not answer"),
            "{}",
            p[0]
        );
        assert_eq!(
            p[1],
            format!(
                "The simulator cxl-memsim (pid 42) is gone (killed or crashed): the guest still maps the backing files, but the model, statistics, TCP server and vhost-user-blk disks are gone; {} ends with: serving; run `lab down --name t`, then `lab up --name t`.",
                run.memsim_log().display()
            )
        );
        let p = problems(&run, &state, false, true, false);
        assert!(
            p[0].starts_with("QEMU (pid 41) is gone (killed or crashed), and the guest with it"),
            "{p:#?}"
        );
        state.status = LabStatus::Down;
        assert!(problems(&run, &state, false, false, false).is_empty());
    }
}
