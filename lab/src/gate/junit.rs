//! `lab run --junit FILE`: a JUnit XML report (through `quick-junit`) with
//! one test suite per lab suite and one test case per step of it: dax's
//! modes per device, fio's runs, faults' checks, ioriot's capture, generate
//! and replays and the documented procedure's steps, ras's injections,
//! seeds' documented command lines (one case each; not run, host-side and
//! run-by-another-suite lines skipped with their reason). Skipped steps are
//! skipped with their
//! reason; a suite that could not run is one failed case with its error.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde_json::Value;

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// A step of a suite, as a JUnit test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub outcome: Outcome,
}

fn step(name: impl Into<String>, ok: bool, why: impl FnOnce() -> String) -> Step {
    Step {
        name: name.into(),
        outcome: if ok {
            Outcome::Passed
        } else {
            Outcome::Failed(why())
        },
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// The steps of suite `suite`'s JSON.
pub fn steps(suite: &str, v: &Value) -> Vec<Step> {
    let could_not_run = v
        .as_object()
        .is_some_and(|o| o.len() == 3 && o.contains_key("suite") && o.contains_key("error"));
    if could_not_run {
        return vec![step(suite, false, || text(&v["error"]))];
    }
    let mut out = Vec::new();
    match suite {
        "dax" => {
            for d in v["devices"].as_array().into_iter().flatten() {
                let dev = d["device"].as_str().unwrap_or("?");
                let modes = d["report"]["modes"].as_object();
                if modes.is_none() {
                    out.push(step(dev, false, || {
                        format!("dax-tester reported no modes: {}", text(&d["error"]))
                    }));
                }
                for (mode, m) in modes.into_iter().flatten() {
                    let name = format!("{dev} {mode}");
                    let skipped = m["skipped"].as_str().filter(|s| !s.is_empty());
                    out.push(match skipped {
                        Some(reason) if m["passed"] != Value::Bool(false) => Step {
                            name,
                            outcome: Outcome::Skipped(reason.to_owned()),
                        },
                        _ => step(name, m["passed"] == Value::Bool(true), || {
                            format!("{mode} failed: {}", text(&m["detail"]))
                        }),
                    });
                }
            }
        }
        "fio" => {
            for r in v["runs"].as_array().into_iter().flatten() {
                let name = format!("{} B {}", r["bs"], text(&r["rw"]));
                out.push(step(name, r["passed"] == Value::Bool(true), || {
                    format!(
                        "fio error {}; checks {}",
                        r["error"], r["evidence"]["checks"]
                    )
                }));
            }
            for r in v["baseline"]["runs"].as_array().into_iter().flatten() {
                let name = format!("{} B {} without the preload", r["bs"], text(&r["rw"]));
                out.push(step(name, r["passed"] == Value::Bool(true), || {
                    format!(
                        "fio error {}; I/Os {}; {}",
                        r["error"],
                        r["fio_ios"],
                        text(&r["stderr"])
                    )
                }));
            }
        }
        "faults" => {
            for (check, ok) in v["checks"].as_object().into_iter().flatten() {
                if let Some(ok) = ok.as_bool() {
                    out.push(step(check.replace('_', " "), ok, || {
                        format!("{check} is false")
                    }));
                }
            }
        }
        "ioriot" => {
            let clean = |s: &Value| {
                ["mismatches", "refused", "skipped"]
                    .iter()
                    .all(|k| s[k].as_u64() == Some(0))
            };
            let empty = |k: &str| v[k].as_array().is_some_and(Vec::is_empty);
            let c = &v["capture"];
            out.push(step(
                "capture",
                c["lost"].as_u64() == Some(0) && empty("missing_in_capture"),
                || {
                    format!(
                        "lost {}, missing ops {}",
                        c["lost"], v["missing_in_capture"]
                    )
                },
            ));
            out.push(step("generate", empty("missing_in_replay"), || {
                format!("ops missing in the replay file: {}", v["missing_in_replay"])
            }));
            for replay in ["single", "multi"] {
                let r = &v[replay];
                out.push(step(
                    format!("replay {replay}"),
                    clean(&r["stats"]) && r["tree"] == v["original_tree"],
                    || {
                        format!(
                            "stats {}; tree as the capture's: {}",
                            r["stats"],
                            r["tree"] == v["original_tree"]
                        )
                    },
                ));
            }
            for (speed, r) in v["rate"].as_object().into_iter().flatten() {
                out.push(step(format!("replay rate {speed}"), clean(r), || {
                    r.to_string()
                }));
            }
            out.push(step("replay fio", clean(&v["fio"]["replay"]), || {
                v["fio"]["replay"].to_string()
            }));
            out.extend(procedure_steps(&v["procedure"]));
        }
        "ras" => {
            for s in v["steps"].as_array().into_iter().flatten() {
                let name = text(&s["step"]);
                let reason = text(&s["reason"]);
                out.push(Step {
                    name,
                    outcome: match s["outcome"].as_str() {
                        Some("passed") => Outcome::Passed,
                        Some("skipped") => Outcome::Skipped(reason),
                        _ => Outcome::Failed(reason),
                    },
                });
            }
        }
        "seeds" => {
            for l in v["lines"].as_array().into_iter().flatten() {
                let name = format!("{}: {}", text(&l["id"]), text(&l["documented"]));
                let outcome = match l["outcome"].as_str() {
                    Some("passed") | Some("adapted") => Outcome::Passed,
                    Some("not_run") | Some("host_side") | Some("run_by") => {
                        Outcome::Skipped(format!("{}: {}", text(&l["outcome"]), text(&l["reason"])))
                    }
                    _ => Outcome::Failed(format!(
                        "{}\n{}",
                        l["problems"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(text)
                            .collect::<Vec<_>>()
                            .join("; "),
                        text(&l["tail"])
                    )),
                };
                out.push(Step { name, outcome });
            }
        }
        _ => {}
    }
    if out.is_empty() {
        out.push(step(suite, v["passed"] == Value::Bool(true), || {
            "the suite failed".into()
        }));
    }
    out
}

/// A run's suites: `(suite, seconds, JSON)` in the order they ran.
pub type RunSuites = Vec<(String, f64, Value)>;

/// The report of a run: `(suite, seconds, JSON)` in the order they ran.
pub fn report(run_id: &str, suites: &[(String, f64, Value)]) -> Report {
    let mut report = Report::new(format!("cxl-lab run {run_id}"));
    let mut total = Duration::ZERO;
    for (suite, seconds, v) in suites {
        total += add_suite(&mut report, suite, suite, *seconds, v);
    }
    report.set_time(total);
    report
}

/// Adds one `<testsuite>` named `name` with suite `suite`'s steps (one
/// test case each); returns its time.
pub fn add_suite(
    report: &mut Report,
    name: &str,
    suite: &str,
    seconds: f64,
    v: &Value,
) -> Duration {
    let mut ts = TestSuite::new(name);
    let time = Duration::from_secs_f64(seconds.max(0.0));
    ts.set_time(time);
    for s in steps(suite, v) {
        let status = match &s.outcome {
            Outcome::Passed => TestCaseStatus::success(),
            Outcome::Failed(why) => {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_message(why.as_str());
                st
            }
            Outcome::Skipped(why) => {
                let mut st = TestCaseStatus::skipped();
                st.set_message(why.as_str());
                st
            }
        };
        let mut tc = TestCase::new(s.name, status);
        tc.set_classname(format!("cxl-lab.{suite}"));
        ts.add_test_case(tc);
    }
    report.add_test_suite(ts);
    time
}

/// The report of a matrix: per cell, each suite of its run as a
/// `<testsuite>` named `<cell> <suite>`; a cell with no run (its lab did
/// not come up) is one `<testsuite>` named after it with one failed case
/// and the reason.
pub fn matrix_report(matrix_id: &str, cells: &[(String, Result<RunSuites, String>)]) -> Report {
    let mut report = Report::new(format!("cxl-lab matrix {matrix_id}"));
    let mut total = Duration::ZERO;
    for (cell, run) in cells {
        match run {
            Ok(suites) => {
                for (suite, seconds, v) in suites {
                    total += add_suite(&mut report, &format!("{cell} {suite}"), suite, *seconds, v);
                }
            }
            Err(why) => {
                let mut ts = TestSuite::new(cell.as_str());
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_message(why.as_str());
                let mut tc = TestCase::new("run", st);
                tc.set_classname(format!("cxl-lab.matrix.{cell}"));
                ts.add_test_case(tc);
                report.add_test_suite(ts);
            }
        }
    }
    report.set_time(total);
    report
}

/// The documented procedure's steps: each command's exit code, then the
/// documented checks.
fn procedure_steps(p: &Value) -> Vec<Step> {
    let mut out = Vec::new();
    for cmd in ["helper", "capture", "generate", "init", "replay"] {
        let rc = &p["exit_codes"][cmd];
        out.push(step(
            format!("procedure {cmd}"),
            rc.as_i64() == Some(0),
            || format!("exit code {rc}"),
        ));
    }
    let missing = &p["capture_ops_missing"];
    out.push(step(
        "procedure capture ops",
        missing.as_array().is_some_and(Vec::is_empty),
        || format!("ops missing in the capture: {missing}"),
    ));
    out.push(step(
        "procedure replay ops",
        p["replay_ops"].as_array().is_some_and(|o| !o.is_empty()),
        || "the replay check printed no op".into(),
    ));
    let files = &p["expected_files"];
    out.push(step(
        "procedure expected files",
        files
            .as_array()
            .is_some_and(|f| !f.is_empty() && f.iter().all(|e| e["exists"] == true)),
        || files.to_string(),
    ));
    let unexpected = &p["unexpected_mismatches"];
    out.push(step(
        "procedure replay stats",
        p["stats"]["refused"].as_u64() == Some(0)
            && unexpected.as_array().is_some_and(Vec::is_empty),
        || {
            format!(
                "refused {}, unexpected mismatches {unexpected}",
                p["stats"]["refused"]
            )
        },
    ));
    out.push(step(
        "procedure strace",
        p["rg_strace_matches"].as_u64().is_some_and(|n| n > 0),
        || "strace shows no call in the test tree".into(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_report_has_a_testsuite_per_cell_and_suite() {
        let suites = |run: &str| -> RunSuites {
            ["fio", "faults"]
                .iter()
                .map(|s| {
                    (
                        s.to_string(),
                        1.0,
                        crate::gate::fixture(&format!("{run}/{s}")),
                    )
                })
                .collect()
        };
        let cells = vec![
            ("default".to_string(), Ok(suites("run1"))),
            ("switched".to_string(), Ok(suites("run2"))),
            (
                "dcd".to_string(),
                Err("lab up failed: no agent".to_string()),
            ),
        ];
        let mut out = Vec::new();
        matrix_report("m1", &cells).serialize(&mut out).unwrap();
        let xml = String::from_utf8(out).unwrap();
        for name in [
            "default fio",
            "default faults",
            "switched fio",
            "switched faults",
        ] {
            assert!(
                xml.contains(&format!("<testsuite name=\"{name}\"")),
                "{name}"
            );
        }
        assert!(xml.contains("<testsuite name=\"dcd\" tests=\"1\""));
        assert!(xml.contains("lab up failed: no agent"));
        // The same cases as a run's report, per cell.
        let one = report("r", &suites("run1"));
        assert_eq!(
            one.test_suites[0].test_cases.len(),
            matrix_report("m1", &cells).test_suites[0].test_cases.len()
        );
    }
    use crate::gate::fixture;
    use serde_json::json;

    #[test]
    fn every_suite_has_its_steps() {
        let count = |s: &str| steps(s, &fixture(&format!("run1/{s}"))).len();
        assert_eq!(count("dax"), 12, "6 modes on 2 devices");
        assert_eq!(
            count("fio"),
            24,
            "6 sizes × 2 directions, with and without the preload"
        );
        assert_eq!(count("ras"), 8);
        assert_eq!(count("ioriot"), 7 + 10, "measurements and the procedure");
        assert!(count("faults") >= 8);
        let ras = steps("ras", &fixture("run1/ras"));
        assert!(
            matches!(&ras[7].outcome, Outcome::Skipped(r) if !r.is_empty()),
            "{:?}",
            ras[7]
        );
        assert!(steps("fio", &fixture("run1/fio"))
            .iter()
            .all(|s| s.outcome == Outcome::Passed));
    }

    #[test]
    fn seeds_has_one_case_per_line_and_skips_what_did_not_run() {
        let v = json!({"suite": "seeds", "passed": false, "lines": [
            {"id": "000 a", "documented": "./a", "outcome": "passed"},
            {"id": "000 b", "documented": "./b", "outcome": "adapted"},
            {"id": "001 c", "documented": "./c", "outcome": "failed", "problems": ["exit 1"], "tail": "boom"},
            {"id": "002 d", "documented": "./d", "outcome": "host_side", "reason": "lab up does it"},
            {"id": "004 e", "documented": "./e", "outcome": "run_by", "reason": "lab run ioriot"},
        ]});
        let s = steps("seeds", &v);
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].name, "000 a: ./a");
        assert_eq!(s[1].outcome, Outcome::Passed);
        assert_eq!(s[2].outcome, Outcome::Failed("exit 1\nboom".into()));
        assert_eq!(
            s[3].outcome,
            Outcome::Skipped("host_side: lab up does it".into())
        );
    }

    #[test]
    fn the_report_has_cases_skips_and_failures() {
        let mut suites: Vec<(String, f64, Value)> = ["dax", "ras"]
            .iter()
            .map(|s| (s.to_string(), 2.5, fixture(&format!("run1/{s}"))))
            .collect();
        suites.push((
            "fio".into(),
            0.1,
            json!({"suite": "fio", "passed": false, "error": "The guest has no <fio> & so on."}),
        ));
        let xml = report("20261207T000102Z", &suites).to_string().unwrap();
        assert!(
            xml.contains(r#"<testsuites name="cxl-lab run 20261207T000102Z" tests="21" skipped="1" failures="1" errors="0""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testsuite name="ras" tests="8" skipped="1" errors="0" failures="0" time="2.500">"#),
            "{xml}"
        );
        assert!(
            xml.contains("The guest has no &lt;fio&gt; &amp; so on."),
            "{xml}"
        );
        assert!(xml.contains("<skipped message="), "{xml}");
    }
}
