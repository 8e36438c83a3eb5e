//! `lab inject`: CXL errors and events into a running lab, as typed QMP
//! commands, each checked against the lab's topology first
//! (`crate::inject::plan`).

use cxl_topology::Topology;

use crate::error::LabError;
use crate::inject::{plan, qom_path, Command, Injection};
use crate::process;
use crate::qemu;
use crate::qmp::{Qmp, QmpError};
use crate::rundir::RunDir;
use crate::summary::InjectReport;

/// `lab inject`: checks `injection` against the running lab's topology
/// (refusing it with nothing sent), then sends its QMP command.
pub async fn inject(name: &str, injection: &Injection) -> Result<InjectReport, LabError> {
    let run = RunDir::new(name)?;
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    let topology = Topology::load(Some(&run.topology_file()))?;
    let command = plan(&topology, injection)?;
    if !state
        .qemu_pid
        .is_some_and(|p| process::is_alive(p, &run.marker()))
    {
        return Err(LabError::NotUp(name.to_owned()));
    }
    let device = injection.device().to_owned();
    let qmp = Qmp::connect(&qemu::qmp_socket(&run.sockets))
        .await
        .map_err(|source| LabError::Qmp {
            name: name.to_owned(),
            source,
        })?;
    let name_of = command.name();
    let fields = command.arguments();
    let answer = send(&qmp, command).await.map_err(|e| match e {
        QmpError::Command {
            command,
            source: qapi::ExecuteError::Qapi(source),
        } => LabError::QemuRefused {
            command,
            device: device.clone(),
            source,
        },
        source => LabError::Qmp {
            name: name.to_owned(),
            source,
        },
    })?;
    Ok(InjectReport {
        name: name.to_owned(),
        form: injection.form().to_owned(),
        command: name_of.to_owned(),
        path: qom_path(&device),
        device,
        fields,
        answer,
    })
}

async fn send(qmp: &Qmp, command: Command) -> Result<serde_json::Value, QmpError> {
    let answer = match command {
        Command::Poison(c) => qmp.execute(c).await?,
        Command::GeneralMedia(c) => qmp.execute(c).await?,
        Command::Dram(c) => qmp.execute(c).await?,
        Command::MemoryModule(c) => qmp.execute(c).await?,
        Command::Uncorrectable(c) => qmp.execute(c).await?,
        Command::Correctable(c) => qmp.execute(c).await?,
        Command::DcAdd(c) => qmp.execute(c).await?,
        Command::DcRelease(c) => qmp.execute(c).await?,
    };
    Ok(serde_json::to_value(answer).unwrap_or(serde_json::Value::Null))
}
