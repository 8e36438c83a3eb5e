//! `lab run faults` in a booted lab: the eBPF fault monitor, the
//! sequential-fault collector and its dry-run advice daemon on cold-cache
//! mmap workloads over ext4, and the seq_page_faults kernel module
//! (`madvise-collector --proc`, `/proc/seq_page_faults`) counting the same
//! workloads as the eBPF collector, at the same time. The checks read the
//! raw per-thread and per-process figures (not the suite's own verdicts)
//! and that the collector forgets the processes that exit; the snapshot keeps
//! what is stable from run to run, with timings, pids, tids and paths redacted.

use cxl_lab::events::Events;
use cxl_lab::suites::Suite;
use cxl_lab::verbs;
use lab_e2e::{error_chain, TestLab};
use serde_json::{json, Value};

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn workers(view: &Value) -> &Vec<Value> {
    view["workers"].as_array().expect("workers")
}

/// The part of a run's view that should not change between runs.
fn worker_digest(view: &Value) -> Value {
    json!({
        "pid": view["pid"],
        "pattern": view["pattern"],
        "elapsed_ms": view["elapsed_ms"],
        "workers": workers(view).iter().map(|w| json!({
            "tid": w["tid"],
            "rows": w["rows"],
            "accesses": w["accesses"],
            "elapsed_ms": w["elapsed_ms"],
            "major_as_counted_by_the_thread": w["monitor_major"] == w["workload_major"],
        })).collect::<Vec<_>>(),
    })
}

fn first_advice(view: &Value) -> Value {
    view["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["action"] == "advise"))
        .map(|d| {
            json!({
                "pid": d["pid"],
                "action": d["action"],
                "advice": d["advice"],
                "dry_run": d["dry_run"],
                "applied": d["applied"],
                "error": d["error"],
                "required": d["required"],
                "streak_reached_required": d["streak"] == d["required"],
                "mapping": d["mapping"],
                "start": d["start"],
                "len": d["len"],
            })
        })
        .unwrap_or(Value::Null)
}

#[test]
fn faults_suite_sees_major_faults_per_thread_and_sequential_processes() {
    let lab = TestLab::new("e2e-faults");
    lab.up();
    let results = lab
        .rt
        .block_on(verbs::run_suites(
            &lab.name,
            &[Suite::Faults],
            &Events::none(),
        ))
        .unwrap_or_else(|e| panic!("lab run faults: {}", error_chain(&e)))
        .suites;
    let r = &results[0];
    let v: Value = serde_json::from_slice(&std::fs::read(&r.result_file).expect("result file"))
        .expect("result JSON");
    let mon = &v["monitor"];

    // Cold random access: every worker thread has its own row, with major
    // faults, and the monitor's major count is the thread's own (getrusage).
    let random = &mon["random"];
    assert_eq!(workers(random).len(), 4, "{random:#}");
    for w in workers(random) {
        assert_eq!(
            num(&w["rows"]),
            1,
            "worker {} has one row: {random:#}",
            w["tid"]
        );
        assert!(
            num(&w["monitor_major"]) > 0,
            "worker {} saw no major fault: {random:#}",
            w["tid"]
        );
        assert_eq!(
            w["monitor_major"], w["workload_major"],
            "major faults of worker {}",
            w["tid"]
        );
        println!(
            "random worker tid {}: monitor major {} minor {}, thread's own count major {} minor {}",
            w["tid"],
            w["monitor_major"],
            w["monitor_minor"],
            w["workload_major"],
            w["workload_minor"]
        );
    }

    println!(
        "faults whose return the monitor did not see: {}",
        mon["unfinished"]
    );

    // Sequential faults: the seq run far above the random run.
    let col = &v["collector"];
    let (seq, rnd) = (&col["seq"], &col["random"]);
    let (s, n) = (num(&seq["sequential"]), num(&rnd["sequential"]));
    let factor = s as f64 / n.max(1) as f64;
    println!(
        "sequential faults: seq run {s} of {} faults, random run {n} of {} faults; ratio {factor:.1}x",
        seq["faults"], rnd["faults"]
    );
    assert!(factor >= 10.0, "seq {s} vs random {n}");

    // The dry-run daemon names the sequential process, not the random one.
    let advised = |view: &Value| -> Vec<u64> {
        view["decisions"]
            .as_array()
            .expect("decisions")
            .iter()
            .filter(|d| d["action"] == "advise")
            .map(|d| num(&d["pid"]))
            .collect()
    };
    let (a_seq, a_rnd) = (advised(seq), advised(rnd));
    assert!(
        !a_seq.is_empty() && a_seq.iter().all(|p| *p == num(&seq["pid"])),
        "{seq:#}"
    );
    assert!(a_rnd.is_empty(), "the random process was advised: {rnd:#}");
    let first = first_advice(seq);
    assert_eq!(
        (&first["dry_run"], &first["applied"]),
        (&json!(true), &json!(false))
    );
    // Exited processes leave the kernel's map (their exit hands over the
    // final counts): both workloads are reported as exited, with the
    // counts checked above; the last PID COUNT file, written intervals
    // after the seq run ended, no longer lists it; no exit record was lost.
    assert_eq!(
        (&seq["exited"], &rnd["exited"]),
        (&json!(true), &json!(true)),
        "{col:#}"
    );
    let counts = col["counts_file"].as_str().expect("counts file");
    assert!(
        counts.lines().all(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() == 2 && f.iter().all(|n| n.parse::<u64>().is_ok())
        }),
        "PID COUNT lines: {counts}"
    );
    assert!(
        !counts
            .lines()
            .any(|l| l.split(' ').next() == Some(&seq["pid"].to_string())),
        "the exited seq process is still listed: {counts}"
    );
    assert!(num(&col["exits"]) >= 2, "{col:#}");
    assert_eq!(num(&col["exits_lost"]), 0);
    println!(
        "collector map: {} entries at most, {} at the end; {} exits, {} swept",
        col["map_entries_peak"], col["map_entries_end"], col["exits"], col["swept"]
    );

    // The kernel module and the eBPF program, attached at once, count the
    // same workloads: a single-threaded process exactly alike (both probes
    // see its faults in the same order), a multi-threaded one within the
    // suite's stated tolerance (concurrent faults may reach the two probes
    // in different orders); /proc/seq_page_faults shows the module's count.
    let cmp = &v["collectors_compared"];
    assert_eq!(
        (&cmp["ebpf_source"], &cmp["proc_source"]),
        (&json!("ebpf"), &json!("proc"))
    );
    let runs = cmp["runs"].as_array().expect("compared runs");
    assert_eq!(runs.len(), 3, "{cmp:#}");
    for c in runs {
        println!(
            "{} x{} pid {}: eBPF {} sequential of {} faults, module {} of {} (/proc/seq_page_faults: {}), allowed difference {}",
            c["pattern"], c["threads"], c["pid"], c["ebpf"]["sequential"], c["ebpf"]["faults"],
            c["proc"]["sequential"], c["proc"]["faults"], c["proc_file_count"], c["allowed_difference"]
        );
        let (es, ps) = (num(&c["ebpf"]["sequential"]), num(&c["proc"]["sequential"]));
        let (ef, pf) = (num(&c["ebpf"]["faults"]), num(&c["proc"]["faults"]));
        assert_eq!(num(&c["proc_file_count"]), ps, "{c:#}");
        assert_eq!(
            (&c["ebpf"]["exited"], &c["proc"]["exited"]),
            (&json!(true), &json!(true)),
            "{c:#}"
        );
        if num(&c["threads"]) == 1 {
            assert_eq!((es, ef), (ps, pf), "one thread counts exactly alike: {c:#}");
            assert!(es > 1000, "a sequential scan: {c:#}");
        } else {
            let allowed = (ef.max(pf) as f64 * 0.02).ceil() as u64;
            assert!(
                es.abs_diff(ps) <= allowed && ef.abs_diff(pf) <= allowed,
                "more than 2 % apart: {c:#}"
            );
        }
    }

    let o = &v["overhead"];
    println!(
        "overhead: {} bare {} ms (median {:.1}), under fault-monitor {} ms (median {:.1}), ratio {:.3} (target <= {})",
        o["workload"].as_str().unwrap_or_default(),
        o["bare_ms"],
        o["bare_median_ms"].as_f64().unwrap_or(0.0),
        o["monitored_ms"],
        o["monitored_median_ms"].as_f64().unwrap_or(0.0),
        o["ratio"].as_f64().unwrap_or(0.0),
        o["target"]
    );
    assert!(r.passed, "suite verdict: {:#}", v["checks"]);

    let digest = json!({
        "passed": v["passed"],
        "disk": v["disk"],
        "filesystem": v["filesystem"],
        "file": v["file"],
        "threads": v["threads"],
        "fault_bits": v["fault_bits"],
        "monitor": { "random": worker_digest(random), "seq": worker_digest(&mon["seq"]) },
        "collector": {
            "policy": col["policy"],
            "dry_run": col["dry_run"],
            "seq": { "pid": seq["pid"], "first_advice": first },
            "random": { "pid": rnd["pid"], "advise_decisions": rnd["advise_decisions"] },
            "exits_lost": col["exits_lost"],
        },
        "collectors_compared": {
            "multi_thread_tolerance": cmp["multi_thread_tolerance"],
            "proc_dropped": cmp["proc_dropped"],
            "runs": runs.iter().map(|c| json!({
                "pattern": c["pattern"],
                "threads": c["threads"],
                "agree": c["agree"],
                "exited": [c["ebpf"]["exited"], c["proc"]["exited"]],
                "proc_file_shows_the_module_count": c["proc_file_count"] == c["proc"]["sequential"],
            })).collect::<Vec<_>>(),
        },
        "overhead": { "workload": o["workload"], "rounds": o["rounds"], "target": o["target"], "ratio": o["ratio"] },
        "checks": v["checks"],
    });
    insta::assert_json_snapshot!("faults_digest", digest, {
        ".**.pid" => "[pid]",
        ".**.tid" => "[tid]",
        ".**.elapsed_ms" => "[ms]",
        ".file.mib_per_s" => "[rate]",
        ".file.path" => "[path]",
        ".collector.seq.first_advice.mapping" => "[mapping]",
        ".collector.seq.first_advice.start" => "[address]",
        ".overhead.ratio" => "[ratio]",
        ".checks.sequential_over_random" => "[ratio]",
    });
}
