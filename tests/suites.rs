//! `lab run dax` and `lab run fio` on the default topology: the results'
//! structure, pass/fail and the evidence behind it are snapshot-tested;
//! timings and rates are left out. fio runs with the preload and, as a
//! baseline, without it (fio's dev-dax engine). The persistent device's data outlives
//! the dax suite, and fio without its LD_PRELOAD library is a failure that
//! replaces the earlier PASS in the results directory.

use cxl_lab::events::Events;
use cxl_lab::suites::Suite;
use cxl_lab::verbs;
use lab_e2e::{error_chain, TestLab};
use serde_json::{json, Value};

/// The parts of a dax-tester report that do not vary from run to run.
fn dax_digest(report: &Value) -> Value {
    let modes = &report["modes"];
    let byte: Vec<Value> = modes["byte"]["results"]
        .as_array()
        .map(|v| v.iter().map(|r| json!([r["size"], r["status"]])).collect())
        .unwrap_or_default();
    json!({
        "passed": report["passed"],
        "modes": modes.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v["passed"].clone())).collect::<serde_json::Map<_, _>>()),
        "byte": byte,
        "mwait_mechanism": modes["mwait"]["mechanism"],
        "persist_instruction": modes["persist"]["instruction"],
        "persist_map_sync": modes["persist"]["map_sync"],
    })
}

/// The parts of a fio run that do not vary: the evidence that the I/O went
/// through the library to the device (fio's I/O counts and the library's
/// are exact for a job size), with the rates reduced to "positive".
fn fio_digest(run: &Value) -> Value {
    let e = &run["evidence"];
    json!({
        "bs": run["bs"],
        "rw": run["rw"],
        "passed": run["passed"],
        "error": run["error"],
        "iops_positive": run["iops"].as_f64().is_some_and(|i| i > 0.0),
        "checks": e["checks"],
        "fio_ios": e["fio_ios"],
        "intercepted": e["intercepted"],
        "slot_offsets": e["slot_offsets"],
    })
}

const MIB: u64 = 1 << 20;

#[test]
fn dax_and_fio_suites_pass_in_the_guest() {
    let lab = TestLab::new("e2e-suites");
    let summary = lab.up();
    let pdax = summary
        .devices
        .iter()
        .find(|d| d.kind == cxl_topology::DeviceKind::Persistent)
        .and_then(|d| d.dax.clone())
        .expect("a persistent dax device");
    // Data at both ends of the range dax-tester writes (the first 20 MiB).
    let pattern = |action: &str, offset: u64| {
        lab.run(&[
            "dax-pattern",
            action,
            &pdax,
            "--offset",
            &offset.to_string(),
            "--len",
            &MIB.to_string(),
            "--seed",
            "41",
        ])
    };
    for offset in [0, 19 * MIB] {
        pattern("write", offset);
    }
    let results = lab
        .rt
        .block_on(verbs::run_suites(
            &lab.name,
            &[Suite::Dax, Suite::Fio],
            &Events::none(),
        ))
        .unwrap_or_else(|e| panic!("lab run dax fio: {}", error_chain(&e)))
        .suites;
    for offset in [0, 19 * MIB] {
        pattern("verify", offset);
    }
    let mut digest = serde_json::Map::new();
    for r in &results {
        assert!(
            r.passed,
            "suite {} failed: {:?}; see {}",
            r.suite,
            r.error,
            r.result_file.display()
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&r.result_file).expect("result file"))
            .expect("result JSON");
        let d = match r.suite.as_str() {
            "dax" => json!(v["devices"]
                .as_array()
                .expect("devices")
                .iter()
                .map(|d| json!({
                    "device": d["device"],
                    "kind": d["kind"],
                    "dax": d["dax"],
                    "range": d["range"],
                    "data": d["data"],
                    "report": dax_digest(&d["report"]),
                }))
                .collect::<Vec<_>>()),
            "fio" => json!({
                "dax": v["dax"],
                "kind": v["kind"],
                "slot": v["slot"],
                "data": v["data"],
                "preload": v["preload"],
                "file_created_on_disk": v["file_created_on_disk"],
                "runs": v["runs"].as_array().expect("runs").iter().map(fio_digest).collect::<Vec<_>>(),
                "baseline": {
                    "engine": v["baseline"]["engine"],
                    "runs": v["baseline"]["runs"].as_array().expect("baseline runs").iter().map(|r| json!({
                        "bs": r["bs"],
                        "rw": r["rw"],
                        "passed": r["passed"],
                        "error": r["error"],
                        "iops_positive": r["iops"].as_f64().is_some_and(|i| i > 0.0),
                        "fio_ios": r["fio_ios"],
                    })).collect::<Vec<_>>(),
                },
            }),
            other => panic!("unexpected suite {other}"),
        };
        digest.insert(r.suite.clone(), d);
    }
    insta::assert_json_snapshot!("suites_digest", digest);

    // Without the library, fio would write a tmpfs file and verify it: the
    // suite must refuse, say how to fix it, and replace the earlier PASS.
    lab.run(&["rm", "/usr/lib/cxl-lab/libfio_intercept.so"]);
    let again = lab
        .rt
        .block_on(verbs::run_suites(&lab.name, &[Suite::Fio], &Events::none()))
        .unwrap_or_else(|e| panic!("lab run fio: {}", error_chain(&e)))
        .suites;
    let r = &again[0];
    assert!(!r.passed);
    let error = r.error.clone().expect("an error");
    assert!(
        error.starts_with("The guest has no /usr/lib/cxl-lab/libfio_intercept.so")
            && error.contains("cargo build -p fio-preload"),
        "{error}"
    );
    let mut v: Value = serde_json::from_slice(&std::fs::read(&r.result_file).expect("result file"))
        .expect("result JSON");
    // Every result names the kernel it ran on (`lab up --kernel`).
    let kernel = v
        .as_object_mut()
        .and_then(|m| m.remove("kernel"))
        .unwrap_or_else(|| panic!("no kernel in {v}"));
    assert!(kernel["release"].is_string(), "{kernel}");
    assert_eq!(
        v,
        json!({"suite": "fio", "passed": false, "error": error}),
        "the earlier PASS is replaced"
    );
}
