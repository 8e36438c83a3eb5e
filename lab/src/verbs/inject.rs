//! `lab inject`: CXL errors and events into a running lab, as typed QMP
//! commands, each checked against the lab's topology first (the shared
//! `crate::inject::inject`, which the suites call too).

use cxl_topology::Topology;

use crate::error::LabError;
use crate::inject::Injection;
use crate::process;
use crate::qemu;
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
    crate::inject::plan(&topology, injection)?;
    if !state
        .qemu_pid
        .is_some_and(|p| process::is_alive(p, &run.marker()))
    {
        return Err(LabError::NotUp(name.to_owned()));
    }
    let r = crate::inject::inject(&qemu::qmp_socket(&run.sockets), &topology, injection).await?;
    Ok(InjectReport {
        name: name.to_owned(),
        form: injection.form().to_owned(),
        command: r.command.to_owned(),
        device: r.device,
        path: r.path,
        fields: r.fields,
        answer: r.answer,
    })
}
