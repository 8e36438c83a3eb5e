//! `lab run ras` on the default topology under TCG: every step's outcome
//! (poison on both devices, the three event records, correctable errors on
//! both devices passed; the uncorrectable one skipped with the AER
//! registers that show the kernel masks it), and a digest of what was
//! injected and what the kernel reported, with boot-dependent parts
//! (memdev numbers, timestamps, addresses, UUIDs) redacted.

use cxl_lab::events::Events;
use cxl_lab::suites::Suite;
use cxl_lab::verbs;
use lab_e2e::{error_chain, TestLab};
use serde_json::{json, Value};

/// A trace or kernel-log line without what varies from boot to boot.
fn normalize(line: &str) -> String {
    // The trace's task-pid, CPU, flags and timestamp come before the
    // event name; the kernel log's timestamp is in brackets.
    let line = match line.find(": cxl_").or_else(|| line.find("] ")) {
        Some(at) if line.starts_with('[') => &line[at + 2..],
        Some(at) => &line[at + 2..],
        None => line,
    };
    line.split(' ')
        .map(|t| match t.split_once('=') {
            Some((k @ ("memdev" | "time" | "region_uuid" | "hpa"), _)) => format!("{k}=[{k}]"),
            _ => t.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn digest(step: &Value) -> Value {
    let checks: Vec<Value> = step["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| match c["field"].as_str() {
            Some("hpa") => json!({ "field": "hpa", "ok": c["ok"] }),
            _ => json!({ "field": c["field"], "expected": c["expected"], "ok": c["ok"] }),
        })
        .collect();
    let lines = |v: &Value| -> Value {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(normalize)
                    .collect::<Vec<_>>()
                    .into()
            })
            .unwrap_or(Value::Null)
    };
    let mut mask = step["kernel_mask"].clone();
    if mask.is_object() {
        mask["dmesg"] = lines(&mask["dmesg"]);
    }
    json!({
        "step": step["step"],
        "outcome": step["outcome"],
        "reason": step["reason"],
        "injected": { "command": step["injected"]["command"], "fields": step["injected"]["fields"] },
        "reported": step["reported"].as_str().map(normalize),
        "checks": checks,
        "dmesg": lines(&step["dmesg"]),
        "kernel_mask": mask,
        "registers": step["registers"],
    })
}

#[test]
fn ras_suite_compares_injections_with_the_guest_kernel() {
    let lab = TestLab::new("e2e-ras");
    lab.up();
    let results = lab
        .rt
        .block_on(verbs::run_suites(&lab.name, &[Suite::Ras], &Events::none()))
        .unwrap_or_else(|e| panic!("lab run ras: {}", error_chain(&e)))
        .suites;
    let r = &results[0];
    let v: Value = serde_json::from_slice(&std::fs::read(&r.result_file).expect("result file"))
        .expect("result JSON");
    assert!(r.passed, "ras failed: {:?}\n{v:#}", r.error);
    assert_eq!(v["suite"], "ras");
    let steps = v["steps"].as_array().expect("steps");
    let outcomes: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("poison vmem0 dpa 0x2000", "passed"),
            ("poison pmem0 dpa 0x4000", "passed"),
            ("general-media vmem0 dpa 0x1000", "passed"),
            ("dram vmem0 dpa 0x3000", "passed"),
            ("memory-module pmem0 temperature 95", "passed"),
            ("correctable vmem0 mem-data-ecc", "passed"),
            ("correctable pmem0 mem-data-ecc", "passed"),
            ("uncorrectable pmem0 mem-data-ecc", "skipped"),
        ],
        "{v:#}"
    );
    for s in steps {
        assert!(
            s["checks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["ok"] == true),
            "{s:#}"
        );
    }
    let skipped = &steps[7];
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("masks Uncorrectable Internal Error"),
        "{skipped:#}"
    );
    // The regions survive the suite.
    let daxes = lab.run(&["sh", "-c", "ls /dev/dax*"]);
    assert_eq!(daxes.split_whitespace().count(), 2, "{daxes}");
    let d: Vec<Value> = steps.iter().map(digest).collect();
    insta::assert_json_snapshot!("ras_digest", d);
    lab.down();
}
