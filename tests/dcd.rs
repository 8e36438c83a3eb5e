//! `lab run dcd` on the `dcd` preset under TCG: extents added to the
//! running QEMU are accepted, each invalid one is refused with QEMU's own
//! text (and the lab's check beside it), what the guest logged is
//! recorded; on a kernel without dynamic capacity (Debian's 6.12) every
//! guest step is skipped with the reason, never passed, and QEMU keeps the
//! offered extent pending (it refuses to release it). A digest of the
//! steps is snapshotted with the kernel release redacted.

use std::path::Path;

use cxl_lab::events::Events;
use cxl_lab::suites::Suite;
use cxl_lab::verbs;
use lab_e2e::{error_chain, TestLab};
use serde_json::{json, Value};

/// The steps the guest half has (run where the kernel has dynamic
/// capacity, skipped elsewhere).
const GUEST_STEPS: [&str; 5] = [
    "guest sees the added extent",
    "dax device over the added capacity",
    "use the dax device",
    "release the extent",
    "extent gone",
];

fn digest(v: &Value, kernel: &str) -> Value {
    let redact = |s: &Value| -> Value {
        s.as_str()
            .map_or(s.clone(), |t| t.replace(kernel, "[kernel]").into())
    };
    let steps: Vec<Value> = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            json!({
                "step": s["step"],
                "outcome": s["outcome"],
                "reason": redact(&s["reason"]),
                "command": s["command"],
                "fields": s["fields"],
                "qemu": s["qemu"],
                "lab": s["lab"],
                "checks": s["checks"],
            })
        })
        .collect();
    json!({
        "counts": v["counts"],
        "guest_support": v["guest_support"],
        "steps": steps,
        "guest_log": v["guest_log"],
    })
}

#[test]
fn dcd_suite_adds_extents_to_a_running_qemu_and_reports_the_guest_half() {
    let lab = TestLab::new("e2e-dcd");
    lab.up_with_topology(Path::new("dcd"));
    let results = lab
        .rt
        .block_on(verbs::run_suites(&lab.name, &[Suite::Dcd], &Events::none()))
        .unwrap_or_else(|e| panic!("lab run dcd: {}", error_chain(&e)));
    let r = &results.suites[0];
    let v: Value = serde_json::from_slice(&std::fs::read(&r.result_file).expect("result file"))
        .expect("result JSON");
    assert!(r.passed, "dcd failed: {:?}\n{v:#}", r.error);
    assert_eq!(v["suite"], "dcd");
    assert_eq!(v["device"], "dcd0");
    let support = v["guest_support"]["dynamic_capacity"]
        .as_bool()
        .expect("guest_support.dynamic_capacity");
    let kernel = v["guest_support"]["kernel"]
        .as_str()
        .expect("the kernel release")
        .to_owned();
    let steps = v["steps"].as_array().expect("steps");
    let outcome = |name: &str| -> &str {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .and_then(|s| s["outcome"].as_str())
            .unwrap_or_else(|| panic!("no step '{name}' in {v:#}"))
    };
    // The QMP half, on any kernel.
    for name in [
        "add region 0 extent 0x0:0x200000",
        "add region 1 extent 0x800000:0x400000",
        "add past the end of DC region 0",
        "add to a DC region the device does not have",
        "add an extent of zero length",
        "add an extent not aligned to the 2 MiB block",
        "add overlapping extents in one request",
        "add the added extent again",
        "release an extent never added",
    ] {
        assert_eq!(outcome(name), "passed", "{name}: {v:#}");
    }
    if support {
        for name in GUEST_STEPS {
            assert_eq!(outcome(name), "passed", "{name}: {v:#}");
        }
    } else {
        // Debian's 6.12: the guest half is skipped, with the reason.
        assert!(kernel.starts_with("6.12"), "{kernel}");
        for name in GUEST_STEPS {
            assert_eq!(outcome(name), "skipped", "{name}: {v:#}");
        }
        for s in steps.iter().filter(|s| s["outcome"] == "skipped") {
            let reason = s["reason"].as_str().expect("a skipped step's reason");
            assert!(
                reason.contains("has no guest side of dynamic capacity")
                    && reason.contains("dynamic_ram_a/size"),
                "{s:#}"
            );
        }
        assert_eq!(
            outcome("release the added extent the guest never accepted"),
            "passed",
            "{v:#}"
        );
        assert_eq!(
            v["counts"],
            json!({ "passed": 10, "skipped": 5, "failed": 0 })
        );
    }
    for s in steps.iter().filter(|s| s["outcome"] == "passed") {
        let checks = s["checks"].as_array().expect("checks");
        assert!(
            !checks.is_empty() && checks.iter().all(|c| c["ok"] == true),
            "{s:#}"
        );
    }
    // Nothing in the guest log is a figure; it is recorded as read.
    for key in ["dmesg", "trace", "memdev_sysfs"] {
        assert!(v["guest_log"][key].is_array(), "{key}: {v:#}");
    }
    insta::assert_json_snapshot!("dcd_digest", digest(&v, &kernel), {
        ".guest_support.kernel" => "[kernel]",
    });
    lab.down();
}
