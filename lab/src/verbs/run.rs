//! `lab run`.

use std::path::Path;
use std::time::Instant;

use cxl_topology::Topology;

use super::exec::agent;
use crate::error::{error_chain, io_err, LabError};
use crate::events::{Event, Events, Step};
use crate::process;
use crate::rundir::{LabState, RunDir};
use crate::suite_support::{SuiteContext, SuiteError};
use crate::suites::Suite;
use crate::summary::{summarize, SuiteResult};

/// Writes a suite's outcome to `file` and returns (passed, error). A suite
/// that could not run still replaces the file of an earlier run, with
/// `{"suite", "passed": false, "error"}`, so no stale PASS is left behind.
fn record_result(
    file: &Path,
    suite: &str,
    result: Result<serde_json::Value, SuiteError>,
) -> Result<(bool, Option<String>), LabError> {
    let (passed, error, v) = match result {
        Ok(v) => {
            let passed = v
                .get("passed")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            (passed, None, v)
        }
        Err(e) => {
            let msg = error_chain(&e);
            let v = serde_json::json!({ "suite": suite, "passed": false, "error": msg });
            (false, Some(msg), v)
        }
    };
    std::fs::write(
        file,
        serde_json::to_vec_pretty(&v).expect("JSON serialises"),
    )
    .map_err(io_err(file))?;
    Ok((passed, error))
}

/// The first of the lab's processes (QEMU, then cxl-memsim) that is gone,
/// as the suite error that says so.
fn process_gone(run: &RunDir, state: &LabState) -> Option<SuiteError> {
    let marker = run.marker();
    let procs = [
        ("QEMU", state.qemu_pid, run.qemu_log()),
        ("cxl-memsim", state.memsim_pid, run.memsim_log()),
    ];
    procs.into_iter().find_map(|(what, pid, log)| {
        let pid = pid?;
        let gone = !process::is_alive(pid, &marker) || process::is_exiting(pid);
        gone.then(|| SuiteError::LabProcessGone {
            lab: run.name.clone(),
            what,
            pid,
            tail: process::tail(&log, 5),
            log,
        })
    })
}

/// `lab run <suite>…`: runs suites in the guest; each one's JSON goes to
/// `results/<suite>.json` in the run directory (see `record_result`). A
/// suite during which QEMU or cxl-memsim ended fails with that reason,
/// whatever its checks said, and the suites after it are not run: a
/// suite is not cut short when cxl-memsim ends, since the guest still runs
/// and the suite puts back the persistent data it borrowed.
pub async fn run_suites(
    name: &str,
    suites: &[Suite],
    events: &Events,
) -> Result<Vec<SuiteResult>, LabError> {
    let run = RunDir::new(name)?;
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    let topology = Topology::load(Some(&run.topology_file()))?;
    let summary = summarize(&run, &state, &topology);
    let agent = agent(name).await?;
    std::fs::create_dir_all(run.results_dir()).map_err(io_err(&run.results_dir()))?;
    let ctx = SuiteContext {
        agent: &agent,
        summary: &summary,
    };
    let mut out = Vec::new();
    for &suite in suites {
        let name = suite.name();
        let t = Instant::now();
        events.emit(Event::Started {
            step: Step::Command,
            detail: format!("suite {name}"),
        });
        let file = run.results_dir().join(format!("{name}.json"));
        let result = match process_gone(&run, &state) {
            Some(e) => Err(e),
            None => {
                let result = suite.run(&ctx).await;
                process_gone(&run, &state).map_or(result, Err)
            }
        };
        let (passed, error) = record_result(&file, name, result)?;
        let detail = format!("suite {name} {}", if passed { "passed" } else { "FAILED" });
        events.emit(Event::Finished {
            step: Step::Command,
            elapsed: t.elapsed(),
            detail,
        });
        out.push(SuiteResult {
            suite: name.into(),
            passed,
            seconds: t.elapsed().as_secs_f64(),
            result_file: file,
            error,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suite_that_errors_replaces_an_earlier_pass() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dax.json");
        let ok = record_result(&file, "dax", Ok(serde_json::json!({"passed": true}))).unwrap();
        assert_eq!(ok, (true, None));
        let err = SuiteError::NoDax("dax");
        let (passed, error) = record_result(&file, "dax", Err(err)).unwrap();
        assert!(!passed);
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"suite": "dax", "passed": false, "error": error.unwrap()})
        );
        assert!(written["error"]
            .as_str()
            .unwrap()
            .starts_with("The lab has no device in devdax mode"));
    }
}
