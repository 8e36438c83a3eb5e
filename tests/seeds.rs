//! `lab run seeds` on the default topology: every command line of the five
//! documents (the seed documents 000…004 beside DESIGN.md) runs in the guest as written
//! or with its adaptation named, or is reported not run, host-side or run
//! by another suite with its reason. Each line's outcome and adaptation
//! kinds are snapshot-tested with the lines as run; nothing there varies
//! by run (the offset is the default topology's CXL window, asserted), and
//! the output, exit codes and timings stay out of the snapshot.

use cxl_lab::events::Events;
use cxl_lab::suites::seeds::{How, LINES};
use cxl_lab::suites::Suite;
use cxl_lab::verbs;
use lab_e2e::{error_chain, TestLab};
use serde_json::{json, Value};

#[test]
fn seeds_runs_every_documented_command_line() {
    let dir = lab_e2e::tools_dir();
    for tool in [
        "dax-tester",
        "libfio_intercept.so",
        "data-generator",
        "mmap-workload",
        "fault-monitor",
        "sequential-access-benchmark",
        "random-access-benchmark",
    ] {
        assert!(
            dir.join(tool).is_file(),
            "{tool} is missing in {}: run `cargo build --workspace` first",
            dir.display()
        );
    }
    let lab = TestLab::new("e2e-seeds");
    lab.up();
    let results = lab
        .rt
        .block_on(verbs::run_suites(
            &lab.name,
            &[Suite::Seeds],
            &Events::none(),
        ))
        .unwrap_or_else(|e| panic!("lab run seeds: {}", error_chain(&e)))
        .suites;
    let r = &results[0];
    let v: Value = serde_json::from_slice(&std::fs::read(&r.result_file).expect("result file"))
        .expect("result JSON");
    let lines = v["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), LINES.len(), "{v}");
    for (line, got) in LINES.iter().zip(lines) {
        assert_eq!(got["id"], line.id, "{got}");
        let want = match line.how {
            How::AsWritten { .. } => "passed",
            How::Adapted { .. } => "adapted",
            How::NotRun(_) => "not_run",
            How::HostSide(_) => "host_side",
            How::RunBy(_) => "run_by",
        };
        assert_eq!(got["outcome"], want, "{}: {got:#}", line.id);
    }
    assert!(r.passed, "suite seeds failed: {:?}: {v:#}", r.error);
    assert_eq!(v["devmem"]["offset"], "0x110000000", "{v}");
    let digest = json!({
        "passed": v["passed"],
        "counts": v["counts"],
        "lines": lines.iter().map(|l| json!({
            "id": l["id"],
            "outcome": l["outcome"],
            "ran": l["ran"],
            "adaptations": l["adaptations"].as_array().map(|a| a.iter().map(|a| a["kind"].clone()).collect::<Vec<_>>()),
        })).collect::<Vec<_>>(),
    });
    insta::assert_json_snapshot!("seeds_outcomes", digest);
}
