//! `lab run ioriot` on the default topology: I/O Riot's documented
//! syscall-matrix procedure (seed 004, steps 2–10) runs in the guest with
//! /home an ext4 filesystem on the lab's CXL persistent memory (DAX when
//! the kernel allows), whose device goes back to devdax afterwards with its
//! data. Both documented python checks must find every expected operation,
//! the replay must rebuild the documented files, and every replayed result
//! must be the captured one but the ownership changes the unprivileged
//! replay user may not make. The op names, files, adaptations, exit codes
//! and per-op outcomes are snapshot-tested; timings, the run's stamp and
//! device names are redacted.

use cxl_lab::events::Events;
use cxl_lab::suites::Suite;
use cxl_lab::verbs;
use lab_e2e::{error_chain, TestLab};
use serde_json::{json, Value};

/// Per op of a replay's statistics: the figures that do not vary.
fn per_op_digest(stats: &Value) -> Value {
    json!(stats["per_op"]
        .as_object()
        .expect("per_op")
        .iter()
        .map(|(k, v)| (
            k.clone(),
            json!([v["errors"], v["mismatches"], v["refused"], v["skipped"]])
        ))
        .collect::<serde_json::Map<_, _>>())
}

#[test]
fn ioriot_captures_and_replays_the_syscall_matrix() {
    // Optional guest tools: the image takes them only when they are built.
    let dir = lab_e2e::tools_dir();
    for tool in ["ioriot", "ioriot-syscall-matrix"] {
        assert!(
            dir.join(tool).is_file(),
            "{tool} is missing in {}: run `cargo build --workspace` first",
            dir.display()
        );
    }
    let lab = TestLab::new("e2e-ioriot");
    let summary = lab.up();
    // Data on the persistent device's dax device, at its start and end,
    // must survive the suite turning the device into a filesystem.
    let pmem = summary
        .devices
        .iter()
        .find(|d| d.name == "pmem0")
        .and_then(|d| d.dax.clone())
        .expect("pmem0 has a dax device");
    let size: u64 = lab
        .run(&[
            "sh",
            "-c",
            &format!("cat /sys/bus/dax/devices/{}/size", &pmem[5..]),
        ])
        .trim()
        .parse()
        .expect("dax size");
    let pattern = |action: &str, offset: u64| {
        let (offset, len) = (offset.to_string(), (1u64 << 20).to_string());
        lab.run(&[
            "dax-pattern",
            action,
            &pmem,
            "--offset",
            &offset,
            "--len",
            &len,
            "--seed",
            "77",
        ]);
    };
    pattern("write", 0);
    pattern("write", size - (1 << 20));
    let results = lab
        .rt
        .block_on(verbs::run_suites(
            &lab.name,
            &[Suite::Ioriot],
            &Events::none(),
        ))
        .unwrap_or_else(|e| panic!("lab run ioriot: {}", error_chain(&e)))
        .suites;
    let r = &results[0];
    let v: Value = serde_json::from_slice(&std::fs::read(&r.result_file).expect("result file"))
        .expect("result JSON");
    assert!(
        r.passed,
        "suite ioriot failed: {:?}; see {}",
        r.error,
        r.result_file.display()
    );
    assert_eq!(v["capture_ops_missing"], json!([]), "{v}");
    assert_eq!(v["unexpected_mismatches"], json!([]), "{v}");
    assert_eq!(v["stats"]["refused"], 0, "{v}");
    for f in v["expected_files"].as_array().expect("expected_files") {
        assert_eq!(f["exists"], true, "{f}");
    }
    for step in ["helper", "capture", "generate", "init", "replay"] {
        assert_eq!(v["exit_codes"][step], 0, "step {step}: {v}");
    }
    assert!(v["rg_strace_matches"].as_u64() > Some(0), "{v}");
    // /home was an ext4 on the persistent device's fsdax namespace, and
    // the namespace is devdax again under its old name.
    let fs = &v["home_fs"];
    assert_eq!(fs["fstype"], "ext4", "{fs}");
    assert_eq!(fs["mount"], "/home", "{fs}");
    assert!(
        fs["blockdev"]
            .as_str()
            .is_some_and(|b| b.starts_with("/dev/pmem")),
        "{fs}"
    );
    assert_eq!(
        fs["restored"]["dax"],
        json!(format!("/dev/{}", fs["chardev"].as_str().unwrap())),
        "{fs}"
    );
    assert_eq!(fs["restored"]["data_bytes"], json!(size), "{fs}");
    pattern("verify", 0);
    pattern("verify", size - (1 << 20));
    let digest = json!({
        "passed": v["passed"],
        "document": v["document"],
        "steps": v["steps"],
        "adaptations": v["adaptations"],
        "exit_codes": v["exit_codes"],
        "capture_ops": v["capture_ops"],
        "replay_ops": v["replay_ops"],
        "rg_replay_matches": v["rg_replay_matches"],
        "found": v["found"],
        "expected_files": v["expected_files"],
        "stats": {
            "ops": v["stats"]["ops"],
            "errors": v["stats"]["errors"],
            "mismatches": v["stats"]["mismatches"],
            "refused": v["stats"]["refused"],
            "per_op": per_op_digest(&v["stats"]),
        },
        "home_fs": {
            "device": fs["device"],
            "blockdev": fs["blockdev"],
            "fstype": fs["fstype"],
            "dax": fs["dax"],
            "mount": fs["mount"],
            "restored": fs["restored"]["dax"],
        },
    });
    insta::assert_json_snapshot!("ioriot_digest", digest, {
        ".home_fs.blockdev" => "[pmem block device]",
        ".home_fs.restored" => "[dax device]",
    });
}
