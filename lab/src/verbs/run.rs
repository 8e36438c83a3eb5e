//! `lab run`.

use std::path::Path;
use std::time::Instant;

use cxl_topology::Topology;

use super::exec::agent;
use crate::error::{error_chain, io_err, LabError};
use crate::events::{Event, Events, Step};
use crate::rundir::RunDir;
use crate::suite_support::{SuiteContext, SuiteError};
use crate::suites::{expand_for, Suite, SuiteArg};
use crate::summary::{summarize, SuiteResult};

/// A suite's outcome as `lab run` reports it.
#[derive(Debug, PartialEq)]
struct Outcome {
    passed: bool,
    error: Option<String>,
    /// The suite's `"skipped"` reason (the kernel lacks an option).
    skipped: Option<String>,
}

/// Writes a suite's outcome to `file` and returns it. A suite
/// that could not run still replaces the file of an earlier run, with
/// `{"suite", "passed": false, "error"}`, so no stale PASS is left behind.
fn record_result(
    file: &Path,
    suite: &str,
    result: Result<serde_json::Value, SuiteError>,
) -> Result<Outcome, LabError> {
    let skipped = result
        .as_ref()
        .ok()
        .and_then(|v| v.get("skipped"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
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
    Ok(Outcome {
        passed,
        error,
        skipped,
    })
}

/// `lab run <suite>…`: runs every suite named in the guest; each one's
/// JSON goes to `results/<suite>.json` in the run directory (see
/// `record_result`).
pub async fn run_suites(
    name: &str,
    suites: &[Suite],
    events: &Events,
) -> Result<Vec<SuiteResult>, LabError> {
    let plan: Vec<(Suite, Option<String>)> = suites.iter().map(|s| (*s, None)).collect();
    run_planned(name, |_| plan, events).await
}

/// `lab run` as typed: `all` leaves out the suites that do not apply to
/// the lab's topology (`Suite::not_for`), each reported as skipped with
/// the reason (its results file says so too); a suite named on its own
/// runs.
pub async fn run_selection(
    name: &str,
    args: &[SuiteArg],
    events: &Events,
) -> Result<Vec<SuiteResult>, LabError> {
    run_planned(name, |t| expand_for(args, t), events).await
}

async fn run_planned(
    name: &str,
    plan: impl FnOnce(&Topology) -> Vec<(Suite, Option<String>)>,
    events: &Events,
) -> Result<Vec<SuiteResult>, LabError> {
    let run = RunDir::new(name)?;
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    let topology = Topology::load(Some(&run.topology_file()))?;
    let plan = plan(&topology);
    let summary = summarize(&run, &state, &topology);
    let agent = agent(name).await?;
    std::fs::create_dir_all(run.results_dir()).map_err(io_err(&run.results_dir()))?;
    let ctx = SuiteContext {
        agent: &agent,
        summary: &summary,
        topology: &topology,
    };
    let mut out = Vec::new();
    for (suite, skip) in plan {
        let name = suite.name();
        let file = run.results_dir().join(format!("{name}.json"));
        if let Some(reason) = skip {
            let v = serde_json::json!({ "suite": name, "passed": false, "skipped": reason });
            std::fs::write(
                &file,
                serde_json::to_vec_pretty(&v).expect("JSON serialises"),
            )
            .map_err(io_err(&file))?;
            events.emit(Event::Finished {
                step: Step::Command,
                elapsed: std::time::Duration::ZERO,
                detail: format!("suite {name} skipped: {reason}"),
            });
            out.push(SuiteResult {
                suite: name.into(),
                passed: false,
                seconds: 0.0,
                result_file: file,
                error: None,
                skipped: Some(reason),
            });
            continue;
        }
        let t = Instant::now();
        events.emit(Event::Started {
            step: Step::Command,
            detail: format!("suite {name}"),
        });
        let result = suite.run(&ctx).await;
        let Outcome {
            passed,
            error,
            skipped,
        } = record_result(&file, name, result)?;
        let verdict = match (&skipped, passed) {
            (Some(_), _) => "skipped",
            (None, true) => "passed",
            (None, false) => "FAILED",
        };
        let detail = format!("suite {name} {verdict}");
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
            skipped,
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
        assert_eq!(
            ok,
            Outcome {
                passed: true,
                error: None,
                skipped: None
            }
        );
        let err = SuiteError::NoDax("dax");
        let Outcome { passed, error, .. } = record_result(&file, "dax", Err(err)).unwrap();
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

    #[test]
    fn a_suite_the_kernel_cannot_run_is_skipped_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("faults.json");
        let v = serde_json::json!({"suite": "faults", "passed": false, "skipped": "the guest kernel lacks CONFIG_KPROBES (y or m): …"});
        let o = record_result(&file, "faults", Ok(v)).unwrap();
        assert!(!o.passed && o.error.is_none());
        assert!(o.skipped.unwrap().contains("CONFIG_KPROBES"));
    }
}
