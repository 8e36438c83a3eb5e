//! The behaviour part of each suite's JSON: what must be the same from one
//! run to the next on the same topology, kernel and image. Timings, rates,
//! addresses, pids, tids and paths are left out here (the figures worth
//! comparing are in `figures.rs`, with a tolerance). This is the one place
//! that decides it, per suite; `lab compare` requires digests to be equal.

use serde_json::{json, Map, Value};

/// The digest of `result`, the JSON that suite `suite` wrote. A suite that
/// could not run (`{"suite", "passed": false, "error"}`) digests to its
/// verdict and error.
pub fn digest(suite: &str, result: &Value) -> Value {
    // `lab run` names the kernel in every result (`kernel`): not behaviour.
    let could_not_run = result.as_object().is_some_and(|o| {
        o.len() - usize::from(o.contains_key("kernel")) == 3
            && o.contains_key("suite")
            && o.contains_key("error")
    });
    if could_not_run {
        return json!({ "passed": result["passed"], "error": result["error"] });
    }
    match suite {
        "dax" => dax(result),
        "fio" => fio(result),
        "faults" => faults(result),
        "ioriot" => ioriot(result),
        "ras" => ras(result),
        "seeds" => seeds(result),
        // A suite this build does not know: only its verdict.
        _ => json!({ "passed": result["passed"] }),
    }
}

fn dax(v: &Value) -> Value {
    let devices: Vec<Value> = array(&v["devices"])
        .iter()
        .map(|d| {
            let report = &d["report"];
            let modes = &report["modes"];
            let passed: Map<String, Value> = modes
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v["passed"].clone()))
                        .collect()
                })
                .unwrap_or_default();
            let byte: Vec<Value> = array(&modes["byte"]["results"])
                .iter()
                .map(|r| json!([r["size"], r["status"]]))
                .collect();
            json!({
                "device": d["device"],
                "kind": d["kind"],
                "dax": d["dax"],
                "range": d["range"],
                "data": d["data"],
                "passed": d["passed"],
                "modes": passed,
                "byte": byte,
                "mwait_mechanism": modes["mwait"]["mechanism"],
                "persist_instruction": modes["persist"]["instruction"],
                "persist_map_sync": modes["persist"]["map_sync"],
                "persist_mismatches": modes["persist"]["mismatches"],
            })
        })
        .collect();
    json!({ "passed": v["passed"], "devices": devices })
}

fn fio(v: &Value) -> Value {
    let runs: Vec<Value> = array(&v["runs"])
        .iter()
        .map(|run| {
            let e = &run["evidence"];
            json!({
                "bs": run["bs"],
                "rw": run["rw"],
                "size": run["size"],
                "passed": run["passed"],
                "error": run["error"],
                "checks": e["checks"],
                "fio_ios": e["fio_ios"],
                "intercepted": e["intercepted"],
                "slot_offsets": e["slot_offsets"],
            })
        })
        .collect();
    json!({
        "passed": v["passed"],
        "device": v["device"],
        "dax": v["dax"],
        "kind": v["kind"],
        "slot": v["slot"],
        "data": v["data"],
        "engine": v["engine"],
        "verify": v["verify"],
        "file_created_on_disk": v["file_created_on_disk"],
        "runs": runs,
        "baseline": fio_baseline(&v["baseline"]),
    })
}

/// The runs without the preload: each job's verdict and fio's I/O counts
/// (null for a run recorded before the suite had a baseline).
fn fio_baseline(b: &Value) -> Value {
    if b.is_null() {
        return Value::Null;
    }
    let runs: Vec<Value> = array(&b["runs"])
        .iter()
        .map(|r| {
            json!({
                "bs": r["bs"],
                "rw": r["rw"],
                "size": r["size"],
                "passed": r["passed"],
                "error": r["error"],
                "fio_ios": r["fio_ios"],
            })
        })
        .collect();
    json!({ "engine": b["engine"], "runs": runs })
}

fn faults(v: &Value) -> Value {
    let view = |view: &Value| {
        json!({
            "pattern": view["pattern"],
            "workers": array(&view["workers"]).iter().map(|w| json!({
                "rows": w["rows"],
                "accesses": w["accesses"],
                "major_as_counted_by_the_thread": w["monitor_major"] == w["workload_major"],
            })).collect::<Vec<_>>(),
        })
    };
    let col = &v["collector"];
    let first_advice = array(&col["seq"]["decisions"])
        .iter()
        .find(|d| d["action"] == "advise")
        .map(|d| {
            json!({
                "action": d["action"],
                "advice": d["advice"],
                "dry_run": d["dry_run"],
                "applied": d["applied"],
                "error": d["error"],
                "required": d["required"],
                "streak_reached_required": d["streak"] == d["required"],
                "len": d["len"],
            })
        })
        .unwrap_or(Value::Null);
    // The ratio is a figure; the verdicts are behaviour.
    let checks: Map<String, Value> = v["checks"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, c)| c.is_boolean())
                .map(|(k, c)| (k.clone(), c.clone()))
                .collect()
        })
        .unwrap_or_default();
    let o = &v["overhead"];
    json!({
        "passed": v["passed"],
        "disk": v["disk"],
        "filesystem": v["filesystem"],
        "file": { "pattern": v["file"]["pattern"], "size_bytes": v["file"]["size_bytes"], "bytes_written": v["file"]["bytes_written"] },
        "threads": v["threads"],
        "fault_bits": v["fault_bits"],
        "monitor": { "random": view(&v["monitor"]["random"]), "seq": view(&v["monitor"]["seq"]) },
        "collector": {
            "policy": col["policy"],
            "dry_run": col["dry_run"],
            "seq_first_advice": first_advice,
            "random_advise_decisions": col["random"]["advise_decisions"],
            "exits_lost": col["exits_lost"],
        },
        "overhead": { "rounds": o["rounds"], "target": o["target"] },
        "checks": checks,
    })
}

fn ioriot(v: &Value) -> Value {
    let per_op = |stats: &Value| -> Value {
        stats["per_op"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            json!([v["errors"], v["mismatches"], v["refused"], v["skipped"]]),
                        )
                    })
                    .collect::<Map<_, _>>()
            })
            .map_or(Value::Null, Value::Object)
    };
    let replay = |r: &Value| {
        json!({
            "tree": r["tree"],
            "ops": r["stats"]["ops"],
            "errors": r["stats"]["errors"],
            "per_op": per_op(&r["stats"]),
        })
    };
    let rate = |r: &Value| json!({ "ops": r["ops"], "mismatches": r["mismatches"], "refused": r["refused"], "skipped": r["skipped"] });
    let fs = &v["replay_fs"];
    let p = &v["procedure"];
    json!({
        "passed": v["passed"],
        "procedure": {
            "passed": p["passed"],
            "exit_codes": p["exit_codes"],
            "capture_ops": p["capture_ops"],
            "capture_ops_missing": p["capture_ops_missing"],
            "replay_ops": p["replay_ops"],
            "rg_replay_matches": p["rg_replay_matches"],
            "found": p["found"],
            "expected_files": p["expected_files"],
            "unexpected_mismatches": p["unexpected_mismatches"],
            "ops": p["stats"]["ops"],
            "errors": p["stats"]["errors"],
            "per_op": per_op(&p["stats"]),
        },
        "capture_lost": v["capture"]["lost"],
        "capture_truncated": v["capture"]["truncated"],
        "capture_targets_end": v["capture"]["targets_end"],
        "capture_tracked_end": v["capture"]["tracked_end"],
        "helper_calls": v["helper_calls"],
        "capture_ops": v["capture_ops"],
        "replay_ops": v["replay_ops"],
        "missing_in_capture": v["missing_in_capture"],
        "missing_in_replay": v["missing_in_replay"],
        "missing_in_replayed": v["missing_in_replayed"],
        "generate": {
            "pids": v["generate"]["pids"].as_object().map(Map::len),
            "tids": v["generate"]["tids"].as_object().map(Map::len),
            "dropped_pseudo_fs": v["generate"]["dropped_pseudo_fs"],
            "dropped_unknown_fd": v["generate"]["dropped_unknown_fd"],
            "inherited_fds": v["generate"]["inherited_fds"],
            "init_dirs": v["generate"]["init_dirs"],
            "init_files": v["generate"]["init_files"],
        },
        "original_tree": v["original_tree"],
        "replay_fs": {
            "device": fs["device"],
            "fstype": fs["fstype"],
            "dax": fs["dax"],
        },
        "single": replay(&v["single"]),
        "multi": replay(&v["multi"]),
        "rate": v["rate"].as_object().map(|m| m.iter().map(|(k, r)| (k.clone(), rate(r))).collect::<Map<_, _>>()),
    })
}

/// Per documented line: its outcome and the kinds of its adaptations (the
/// output, exit codes and the lab's offset are left out).
fn seeds(v: &Value) -> Value {
    let lines: Map<String, Value> = array(&v["lines"])
        .iter()
        .map(|l| {
            let kinds: Vec<Value> = array(&l["adaptations"])
                .iter()
                .map(|a| a["kind"].clone())
                .collect();
            (
                l["id"].as_str().unwrap_or("?").to_owned(),
                json!([l["outcome"], kinds]),
            )
        })
        .collect();
    json!({ "passed": v["passed"], "counts": v["counts"], "lines": lines })
}

/// A trace or kernel-log line without what varies from boot to boot or run
/// to run: the trace's task-pid, CPU, flags and timestamp before the event
/// name, the kernel log's bracketed timestamp, memdev numbers, times,
/// UUIDs, host physical addresses, and event record handles (QEMU numbers a
/// device's event records over the lab's life, so a second run of the ras
/// suite on one lab reads handle=3 where the first read handle=1).
pub fn normalize_kernel_line(line: &str) -> String {
    let line = match line.find(": cxl_").or_else(|| line.find("] ")) {
        Some(at) => &line[at + 2..],
        None => line,
    };
    line.split(' ')
        .map(|t| match t.split_once('=') {
            Some((k @ ("memdev" | "time" | "region_uuid" | "hpa" | "handle"), _)) => {
                format!("{k}=[{k}]")
            }
            _ => t.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ras(v: &Value) -> Value {
    let lines = |v: &Value| -> Value {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(normalize_kernel_line)
                    .collect::<Vec<_>>()
                    .into()
            })
            .unwrap_or(Value::Null)
    };
    let steps: Vec<Value> = array(&v["steps"])
        .iter()
        .map(|step| {
            let checks: Vec<Value> = array(&step["checks"])
                .iter()
                .map(|c| match c["field"].as_str() {
                    // Where the region sits in host memory depends on the boot.
                    Some("hpa") => json!({ "field": "hpa", "ok": c["ok"] }),
                    _ => json!({ "field": c["field"], "expected": c["expected"], "ok": c["ok"] }),
                })
                .collect();
            let mut mask = step["kernel_mask"].clone();
            if mask.is_object() {
                mask["dmesg"] = lines(&mask["dmesg"]);
            }
            json!({
                "step": step["step"],
                "outcome": step["outcome"],
                "reason": step["reason"],
                "injected": { "command": step["injected"]["command"], "fields": step["injected"]["fields"] },
                "reported": step["reported"].as_str().map(normalize_kernel_line),
                "checks": checks,
                "dmesg": lines(&step["dmesg"]),
                "kernel_mask": mask,
                "registers": step["registers"],
            })
        })
        .collect();
    json!({ "passed": v["passed"], "counts": v["counts"], "steps": steps })
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::fixture;

    /// Two real runs of every suite on the default topology (kept as
    /// fixtures) differ in timings, pids, addresses and rates, yet digest
    /// the same.
    #[test]
    fn two_runs_of_every_suite_digest_the_same() {
        for suite in ["dax", "fio", "faults", "ioriot", "ras"] {
            let a = fixture(&format!("run1/{suite}"));
            let b = fixture(&format!("run2/{suite}"));
            assert_ne!(a, b, "{suite}: the fixtures are two different runs");
            assert_eq!(digest(suite, &a), digest(suite, &b), "{suite}");
        }
    }

    #[test]
    fn a_digest_holds_no_pid_tid_timing_or_path() {
        for suite in ["dax", "fio", "faults", "ioriot", "ras"] {
            let d = digest(suite, &fixture(&format!("run1/{suite}")));
            let text = d.to_string();
            // (ras's injected fields name QEMU's device by its QOM path, a
            // name, not a file; its trace lines keep `time=[time]`.)
            for word in [
                "\"pid\"", "\"tid\"", "_ms\"", "_ns\"", "/tmp/", "/mnt/", "iops", "pid=", "hpa=0x",
            ] {
                assert!(!text.contains(word), "{suite}'s digest has {word}: {d:#}");
            }
        }
    }

    #[test]
    fn a_behaviour_change_changes_the_digest() {
        let a = fixture("run1/fio");
        let mut b = a.clone();
        b["runs"][2]["evidence"]["intercepted"]["read"] = json!(1023);
        assert_ne!(digest("fio", &a), digest("fio", &b));
        let mut c = a.clone();
        c["runs"][2]["iops"] = json!(1.0);
        assert_eq!(
            digest("fio", &a),
            digest("fio", &c),
            "a rate is not behaviour"
        );
    }

    #[test]
    fn a_suite_that_could_not_run_digests_to_its_error() {
        let v = json!({"suite": "fio", "passed": false, "error": "The guest has no fio."});
        assert_eq!(
            digest("fio", &v),
            json!({"passed": false, "error": "The guest has no fio."})
        );
    }

    #[test]
    fn seeds_digests_outcomes_and_adaptation_kinds_not_output() {
        let run = |code: i64, tail: &str| {
            json!({"suite": "seeds", "passed": true, "devmem": {"offset": "0x110000000"},
                "counts": {"adapted": 1},
                "lines": [{"id": "000 test_mwait_dax all", "document": "000", "outcome": "adapted",
                    "exit_code": code, "tail": tail, "ran": "./test_mwait_dax /dev/mem 0x110000000 16M all",
                    "adaptations": [{"kind": "offset", "what": "…"}, {"kind": "size", "what": "…"}]}]})
        };
        let d = digest("seeds", &run(0, "a"));
        assert_eq!(d, digest("seeds", &run(0, "b")));
        assert_eq!(
            d["lines"]["000 test_mwait_dax all"],
            json!(["adapted", ["offset", "size"]])
        );
    }

    #[test]
    fn kernel_lines_lose_what_varies_by_boot() {
        let line = "  kworker/u8:2-51  [001] d..1.  97.1: cxl_poison: memdev=mem1 host=0000:0d:00.0 serial=2 trace_type=List region=region0 region_uuid=ab-cd hpa=0x110002000 dpa=0x2000";
        assert_eq!(
            normalize_kernel_line(line),
            "cxl_poison: memdev=[memdev] host=0000:0d:00.0 serial=2 trace_type=List region=region0 region_uuid=[region_uuid] hpa=[hpa] dpa=0x2000"
        );
        assert_eq!(
            normalize_kernel_line(
                "sh-9 [000] 5.1: cxl_dram: memdev=mem0 time=123 handle=3 related_handle=0 row=300"
            ),
            "cxl_dram: memdev=[memdev] time=[time] handle=[handle] related_handle=0 row=300"
        );
        assert_eq!(
            normalize_kernel_line("[   12.5] pcieport 0000:0c:00.0: AER: Corrected error"),
            "pcieport 0000:0c:00.0: AER: Corrected error"
        );
    }
}
