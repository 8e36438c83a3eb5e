//! `lab run`.

use std::path::Path;
use std::time::Instant;

use cxl_topology::Topology;
use sha2::{Digest, Sha256};

use super::exec::agent;
use crate::error::{error_chain, io_err, LabError};
use crate::events::{Event, Events, Step};
use crate::gate::junit;
use crate::gate::record::{self, Environment, RunRecord, TopologyId};
use crate::process;
use crate::qemu;
use crate::rundir::{LabState, RunDir};
use crate::schedstat;
use crate::suite_support::{SuiteContext, SuiteError};
use crate::suites::{expand_for, Suite, SuiteArg};
use crate::summary::{summarize, RunReport, SuiteResult};

/// A suite's outcome as `lab run` reports it.
#[derive(Debug, PartialEq)]
struct Outcome {
    passed: bool,
    error: Option<String>,
    /// The suite's `"skipped"` reason (the kernel lacks an option).
    skipped: Option<String>,
    /// What was written to the results file.
    json: serde_json::Value,
}

/// Writes a suite's outcome to `file` and returns it. A suite
/// that could not run still replaces the file of an earlier run, with
/// `{"suite", "passed": false, "error"}`, so no stale PASS is left behind.
fn record_result(
    file: &Path,
    suite: &str,
    result: Result<serde_json::Value, SuiteError>,
    kernel: &serde_json::Value,
) -> Result<Outcome, LabError> {
    let skipped = result
        .as_ref()
        .ok()
        .and_then(|v| v.get("skipped"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let (passed, error, mut v) = match result {
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
    name_kernel(&mut v, kernel);
    std::fs::write(
        file,
        serde_json::to_vec_pretty(&v).expect("JSON serialises"),
    )
    .map_err(io_err(file))?;
    Ok(Outcome {
        passed,
        error,
        skipped,
        json: v,
    })
}

/// Names the kernel a suite ran on in its result (`"kernel": {"release",
/// "origin"}`), unless the suite did.
fn name_kernel(v: &mut serde_json::Value, kernel: &serde_json::Value) {
    if let (Some(o), false) = (v.as_object_mut(), kernel.is_null()) {
        o.entry("kernel").or_insert_with(|| kernel.clone());
    }
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

/// `lab run <suite>…`: runs suites in the guest and keeps the run in
/// `results/<run id>/`: each suite's JSON as `<suite>.json` (see
/// `record_result`) and `summary.json` (`gate::record::RunRecord`), with
/// `results/latest` pointing at it. A
/// suite during which QEMU or cxl-memsim ended fails with that reason,
/// whatever its checks said, and the suites after it fail at once: a
/// suite is not cut short when cxl-memsim ends, since the guest still runs
/// and the suite puts back the persistent data it borrowed.
pub async fn run_suites(
    name: &str,
    suites: &[Suite],
    events: &Events,
) -> Result<RunReport, LabError> {
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
) -> Result<RunReport, LabError> {
    run_planned(name, |t| expand_for(args, t), events).await
}

async fn run_planned(
    name: &str,
    plan: impl FnOnce(&Topology) -> Vec<(Suite, Option<String>)>,
    events: &Events,
) -> Result<RunReport, LabError> {
    let run = RunDir::new(name)?;
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    let topology = Topology::load(Some(&run.topology_file()))?;
    let plan = plan(&topology);
    let summary = summarize(&run, &state, &topology);
    let agent = agent(name).await?;
    let results = run.results_dir();
    std::fs::create_dir_all(&results).map_err(io_err(&results))?;
    let started = chrono::Utc::now();
    let run_id = record::new_run_id(&results, started);
    let dir = results.join(&run_id);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let ctx = SuiteContext {
        agent: &agent,
        summary: &summary,
        topology: &topology,
    };
    let kernel = ctx
        .exec_checked(&["uname".to_owned(), "-r".to_owned()])
        .await
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({})", error_chain(&e)));
    let kernel_note = serde_json::json!({
        "release": kernel,
        "origin": state.kernel_origin,
    });
    let mut out = Vec::new();
    let mut records = Vec::new();
    for (suite, skip) in plan {
        let name = suite.name();
        let file = dir.join(format!("{name}.json"));
        if let Some(reason) = skip {
            let mut v = serde_json::json!({ "suite": name, "passed": false, "skipped": reason });
            name_kernel(&mut v, &kernel_note);
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
            let rec = record::suite_record(name, 0.0, &v);
            out.push(SuiteResult {
                suite: name.into(),
                passed: false,
                seconds: 0.0,
                result_file: file,
                error: None,
                skipped: Some(reason),
                headline: rec.headline.clone(),
            });
            records.push(rec);
            continue;
        }
        let t = Instant::now();
        events.emit(Event::Started {
            step: Step::Command,
            detail: format!("suite {name}"),
        });
        let cpu_before = state.qemu_pid.map(schedstat::Sample::take);
        let result = match process_gone(&run, &state) {
            Some(e) => Err(e),
            None => {
                let result = suite.run(&ctx).await;
                process_gone(&run, &state).map_or(result, Err)
            }
        };
        let qemu_cpu = state
            .qemu_pid
            .zip(cpu_before)
            .map(|(pid, before)| schedstat::Sample::take(pid).since(&before));
        let Outcome {
            passed,
            error,
            skipped,
            json: v,
        } = record_result(&file, name, result, &kernel_note)?;
        let verdict = match (&skipped, passed) {
            (Some(_), _) => "skipped",
            (None, true) => "passed",
            (None, false) => "FAILED",
        };
        let detail = format!("suite {name} {verdict}");
        let seconds = t.elapsed().as_secs_f64();
        events.emit(Event::Finished {
            step: Step::Command,
            elapsed: t.elapsed(),
            detail,
        });
        let mut rec = record::suite_record(name, seconds, &v);
        rec.qemu_cpu = qemu_cpu;
        rec.load_average = schedstat::load_average();
        out.push(SuiteResult {
            suite: name.into(),
            passed,
            seconds,
            result_file: file,
            error,
            skipped,
            headline: rec.headline.clone(),
        });
        records.push(rec);
    }
    let boot = [
        ("agent_ready_ms", state.timings.agent_ready_ms),
        ("regions_ready_ms", state.timings.regions_ready_ms),
    ]
    .into_iter()
    .filter(|(_, ms)| *ms > 0)
    .map(|(k, ms)| (k.to_owned(), ms as f64))
    .collect();
    write_memsim_stats(&run, &state, &dir).await?;
    let topology_text = topology.to_toml();
    let record = RunRecord {
        schema: record::SCHEMA,
        run_id: run_id.clone(),
        lab: name.to_owned(),
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        environment: Environment {
            kernel,
            kernel_origin: state.kernel_origin.clone(),
            topology: TopologyId {
                origin: state.topology_origin.clone(),
                sha256: hex::encode(Sha256::digest(topology_text.as_bytes())),
            },
            image_key: state.image_key.clone(),
            qemu: qemu::qemu_version(),
            lab: env!("CARGO_PKG_VERSION").to_owned(),
            accel: state.accel.as_str().to_owned(),
            boot: Some(state.timings.boot.as_str().to_owned()),
        },
        boot,
        suites: records,
        stall: state.timing.as_ref().and_then(|t| t.stall.clone()),
    };
    record::write_run(&results, &record)?;
    Ok(RunReport {
        run_id,
        run_dir: dir,
        suites: out,
    })
}

/// How many of the simulator's hottest pages a run keeps.
const HOT_PAGES: usize = 64;

/// Keeps cxl-memsim's stats as the run ends in `<run>/memsim.json`
/// (`record::MEMSIM_FILE`): `timing` (whether guest accesses to CXL memory
/// were charged to the simulator; without it only its TCP and vhost-user
/// requests are) and `stats` (`cxl-memsim stats --json`: per device totals
/// and the hottest pages, counted since `lab up`), or `error` when the
/// simulator did not answer. `lab report` charts the hot pages.
async fn write_memsim_stats(run: &RunDir, state: &LabState, dir: &Path) -> Result<(), LabError> {
    let timing = state.timing.is_some();
    let (socket, line) = (run.memsim_control(), format!("stats {HOT_PAGES}"));
    let ask = cxl_memsim_wire::control::request(&socket, &line);
    // A simulator that does not answer must not hold up the run's record.
    let v = match tokio::time::timeout(std::time::Duration::from_secs(10), ask).await {
        Ok(Ok(stats)) => serde_json::json!({ "timing": timing, "stats": stats }),
        Ok(Err(e)) => serde_json::json!({ "timing": timing, "error": error_chain(&e) }),
        Err(_) => serde_json::json!({
            "timing": timing,
            "error": "cxl-memsim did not answer `stats` on its control socket within 10 s",
        }),
    };
    let file = dir.join(record::MEMSIM_FILE);
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&v).expect("JSON serialises"),
    )
    .map_err(io_err(&file))
}

/// Writes the JUnit report of the run kept in `dir` to `file`.
pub fn write_junit(dir: &Path, file: &Path) -> Result<(), LabError> {
    let (run_id, suites) = run_suites_json(dir)?;
    write_junit_report(&junit::report(&run_id, &suites), file)
}

/// A kept run's id and its suites' `(suite, seconds, JSON)` in the order
/// they ran (a results file that is not JSON becomes a failed suite
/// saying so).
pub fn run_suites_json(dir: &Path) -> Result<(String, junit::RunSuites), LabError> {
    let record = record::load(dir)?;
    let mut suites = Vec::new();
    for s in &record.suites {
        let path = dir.join(format!("{}.json", s.suite));
        let text = std::fs::read(&path).map_err(io_err(&path))?;
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_else(
            |e| serde_json::json!({"suite": s.suite, "passed": false, "error": format!("{} is not JSON: {e}", path.display())}),
        );
        suites.push((s.suite.clone(), s.seconds, v));
    }
    Ok((record.run_id, suites))
}

/// Writes a JUnit report to `file`, creating its directory.
pub fn write_junit_report(report: &quick_junit::Report, file: &Path) -> Result<(), LabError> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let f = std::fs::File::create(file).map_err(io_err(file))?;
    report
        .serialize(std::io::BufWriter::new(f))
        .map_err(|source| LabError::Junit {
            path: file.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suite_that_errors_replaces_an_earlier_pass() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dax.json");
        let ok = record_result(
            &file,
            "dax",
            Ok(serde_json::json!({"passed": true})),
            &serde_json::Value::Null,
        )
        .unwrap();
        assert_eq!((ok.passed, ok.error, ok.skipped), (true, None, None));
        let err = SuiteError::NoDax("dax");
        let Outcome { passed, error, .. } =
            record_result(&file, "dax", Err(err), &serde_json::Value::Null).unwrap();
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
        let o = record_result(&file, "faults", Ok(v), &serde_json::Value::Null).unwrap();
        assert!(!o.passed && o.error.is_none());
        assert!(o.skipped.unwrap().contains("CONFIG_KPROBES"));
    }
}
