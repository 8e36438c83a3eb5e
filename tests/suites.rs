//! `lab run dax` and `lab run fio` on the default topology: the results'
//! structure and pass/fail are snapshot-tested; numbers are left out.

use cxl_lab::events::Events;
use cxl_lab::lab;
use lab_e2e::{chain, TestLab};
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

#[test]
fn dax_and_fio_suites_pass_in_the_guest() {
    let lab = TestLab::new("e2e-suites");
    lab.up();
    let results = lab
        .rt
        .block_on(lab::run_suites(
            &lab.name,
            &["dax".into(), "fio".into()],
            &Events::none(),
        ))
        .unwrap_or_else(|e| panic!("lab run dax fio: {}", chain(&e)));
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
                .map(|d| json!({"device": d["device"], "dax": d["dax"], "report": dax_digest(&d["report"])}))
                .collect::<Vec<_>>()),
            "fio" => json!({
                "dax": v["dax"],
                "runs": v["runs"].as_array().expect("runs").iter().map(|r| json!([r["bs"], r["rw"], r["passed"], r["error"]])).collect::<Vec<_>>(),
            }),
            other => panic!("unexpected suite {other}"),
        };
        digest.insert(r.suite.clone(), d);
    }
    insta::assert_json_snapshot!("suites_digest", digest);
}
