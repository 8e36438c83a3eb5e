//! `lab run ioriot` on the default topology: the syscall-matrix helper is
//! captured by pid with the eBPF capture, generated, initialised and
//! replayed single- and multi-threaded in the guest. Every op of the helper
//! must be in the capture and the replay, the replays must rebuild the
//! helper's tree (renamed files, created dirs, removed entries) with no
//! result differing from the capture. The replays run on an ext4 on the
//! lab's CXL persistent memory (DAX when the kernel allows), whose device
//! goes back to devdax afterwards. The op sets, trees, the replay
//! filesystem and pass/fail are snapshot-tested; timings and rates are left
//! out, device names redacted.

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
    assert_eq!(v["missing_in_capture"], json!([]));
    assert_eq!(v["missing_in_replay"], json!([]));
    assert_eq!(v["missing_in_replayed"], json!([]));
    for m in ["single", "multi"] {
        assert_eq!(v[m]["tree"], v["original_tree"], "{m} replay tree");
        assert_eq!(v[m]["stats"]["mismatches"], 0, "{m}");
        assert_eq!(v[m]["stats"]["refused"], 0, "{m}");
    }
    assert_eq!(v["capture"]["lost"], 0);
    // Followed tasks are pruned on exit: the helper, its thread and its
    // child each sent an exit record, and the kernel's map of followed
    // tasks (PID at the start, more while the child ran) and userspace's
    // per-task tables are empty again at the end.
    let c = &v["capture"];
    assert!(c["exits"].as_u64().is_some_and(|n| n >= 3), "exits: {c}");
    assert_eq!(c["targets_start"], 1, "{c}");
    assert!(
        c["targets_peak"].as_u64() >= c["targets_start"].as_u64(),
        "{c}"
    );
    assert_eq!(c["targets_end"], 0, "{c}");
    assert_eq!(c["tracked_end"], 0, "{c}");
    assert_eq!(c["targets_swept"], 0, "{c}");
    assert_eq!(c["tracked_swept"], 0, "{c}");
    assert_eq!(c["unfollowed_children"], 0, "{c}");
    assert!(v["overhead"]["ratio"].as_f64().is_some_and(|r| r > 0.0));
    // The helper's child writes through the descriptor it inherited and
    // closes its copy; the parent closes its own after: each replay copies
    // it once (a `fork` op), and the parent's close still succeeds (no
    // mismatch above), so child.dat is as long as in the captured run.
    assert_eq!(v["generate"]["inherited_fds"], 1);
    for m in ["single", "multi"] {
        assert_eq!(v[m]["stats"]["per_op"]["fork"]["count"], 1, "{m}");
        assert_eq!(v[m]["stats"]["per_op"]["fork"]["errors"], 0, "{m}");
    }
    // The replays ran on CXL memory: an ext4 on the persistent device's
    // fsdax namespace, mounted where every replay root lives, and the
    // namespace is devdax again under its old name.
    let fs = &v["replay_fs"];
    assert_eq!(fs["fstype"], "ext4", "{fs}");
    assert!(
        fs["blockdev"]
            .as_str()
            .is_some_and(|b| b.starts_with("/dev/pmem")),
        "{fs}"
    );
    let mount = fs["mount"].as_str().expect("mount");
    for root in fs["roots"].as_object().expect("roots").values() {
        assert!(root.as_str().is_some_and(|r| r.starts_with(mount)), "{fs}");
    }
    assert_eq!(
        fs["restored"]["dax"],
        json!(format!("/dev/{}", fs["chardev"].as_str().unwrap())),
        "{fs}"
    );
    assert_eq!(fs["restored"]["data_bytes"], json!(size), "{fs}");
    assert!(
        fs["restored"]["data_bytes_rewritten"].as_u64() > Some(0),
        "the filesystem overwrote the device, so its data was written back: {fs}"
    );
    pattern("verify", 0);
    pattern("verify", size - (1 << 20));
    let digest = json!({
        "passed": v["passed"],
        "capture_lost": v["capture"]["lost"],
        "capture_truncated": v["capture"]["truncated"],
        "capture_targets_end": v["capture"]["targets_end"],
        "capture_tracked_end": v["capture"]["tracked_end"],
        "helper_calls": v["helper_calls"],
        "capture_ops": v["capture_ops"],
        "replay_ops": v["replay_ops"],
        "generate": {
            "pids": v["generate"]["pids"].as_object().map(|m| m.len()),
            "tids": v["generate"]["tids"].as_object().map(|m| m.len()),
            "dropped_pseudo_fs": v["generate"]["dropped_pseudo_fs"],
            "dropped_unknown_fd": v["generate"]["dropped_unknown_fd"],
            "inherited_fds": v["generate"]["inherited_fds"],
            "init_dirs": v["generate"]["init_dirs"],
            "init_files": v["generate"]["init_files"],
        },
        "original_tree": v["original_tree"],
        "replay_fs": {
            "device": fs["device"],
            "blockdev": fs["blockdev"],
            "fstype": fs["fstype"],
            "dax": fs["dax"],
            "mount": fs["mount"],
            "restored": fs["restored"]["dax"],
        },
        "single": {"tree": v["single"]["tree"], "ops": v["single"]["stats"]["ops"], "errors": v["single"]["stats"]["errors"], "per_op": per_op_digest(&v["single"]["stats"])},
        "multi": {"tree": v["multi"]["tree"], "ops": v["multi"]["stats"]["ops"], "errors": v["multi"]["stats"]["errors"], "per_op": per_op_digest(&v["multi"]["stats"])},
    });
    insta::assert_json_snapshot!("ioriot_digest", digest, {
        ".replay_fs.blockdev" => "[pmem block device]",
        ".replay_fs.restored" => "[dax device]",
    });
}
