//! `lab exec`, and the connection to a running lab's guest agent that
//! other verbs use too.

use std::time::Duration;

use crate::error::LabError;
use crate::process;
use crate::qemu;
use crate::qga::{Agent, ExecOutput};
use crate::rundir::RunDir;

/// Connects to a running lab's guest agent.
pub async fn agent(name: &str) -> Result<Agent, LabError> {
    let run = RunDir::new(name)?;
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    if !state
        .qemu_pid
        .is_some_and(|p| process::is_alive(p, &run.marker()))
    {
        return Err(LabError::NotUp(name.to_owned()));
    }
    Agent::connect(&qemu::agent_socket(&run.sockets), Duration::from_secs(5))
        .await
        .map_err(|source| LabError::Agent {
            name: name.to_owned(),
            source: Box::new(source),
        })
}

/// `lab exec -- CMD ARGS…`.
pub async fn exec(
    name: &str,
    command: &[String],
    timeout: Duration,
) -> Result<ExecOutput, LabError> {
    let a = agent(name).await?;
    a.exec(&command[0], &command[1..], timeout)
        .await
        .map_err(|e| LabError::Guest(Box::new(e)))
}
