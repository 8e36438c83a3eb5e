//! `lab status`.

use std::time::Duration;

use cxl_topology::Topology;

use crate::error::LabError;
use crate::process;
use crate::qemu;
use crate::qga::Agent;
use crate::qmp::Qmp;
use crate::rundir::RunDir;
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
        .is_some_and(|p| process::is_alive(p, &marker));
    let simulator_running = state
        .memsim_pid
        .is_some_and(|p| process::is_alive(p, &marker));
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
    Ok(StatusReport {
        summary: summarize(&run, &state, &topology),
        qemu_running,
        simulator_running,
        vm_status,
        agent_answers,
    })
}
