//! `lab run faults`: the page-fault tools on a real filesystem in the guest.
//! The scratch virtio-blk disk gets a fresh ext4 (page-cache faults on tmpfs
//! are never major), data-generator writes a file, the page cache is dropped
//! before every workload, and mmap-workload runs seq and random patterns
//! from several threads: once bare, then under fault-monitor, then under
//! madvise-collector as a dry-run daemon; last, the eBPF collector and
//! `madvise-collector --proc` (the seq_page_faults kernel module and its
//! `/proc/seq_page_faults`) count the same workloads side by side. The
//! result holds the workloads' own per-thread counts next to what the tools
//! saw, the two collectors' counts compared, the checks, and the overhead of
//! the monitor (median random run, monitored / bare).

use serde_json::{json, Value};

use crate::stats::median;
use crate::suite_support::{number, ratio, sh, SuiteContext, SuiteError};

/// Mount point of the ext4 on the scratch disk.
pub const MOUNT: &str = "/mnt/faults";
pub const FILE: &str = "/mnt/faults/data";
/// Small: the guest is TCG-emulated on a shared machine.
pub const FILE_MB: u64 = 32;
pub const THREADS: u32 = 4;
/// Accesses per thread.
pub const RANDOM_COUNT: u64 = 256;
pub const SEQ_COUNT: u64 = 512;
/// Pause per access under the collector, so its 100 ms intervals see each
/// workload for several intervals.
pub const COLLECTOR_DELAY_MS: u64 = 1;
pub const COLLECTOR_INTERVAL_MS: u64 = 100;
pub const MONITOR_INTERVAL_MS: u64 = 500;
/// Where the guest keeps the tools' output.
const WORK: &str = "/tmp/lab-faults";
/// Runs of the random workload with and without the monitor; the overhead
/// is the ratio of the medians (single runs vary by tens of percent on a
/// shared machine under TCG).
pub const OVERHEAD_ROUNDS: usize = 3;
/// The overhead the monitor should stay under (reported, not enforced).
pub const OVERHEAD_TARGET: f64 = 1.2;
/// "Far above": the sequential run's sequential faults over the random run's.
pub const SEQUENTIAL_FACTOR: f64 = 10.0;
/// Both collectors run at once, so both probes see every call of
/// handle_mm_fault, one after the other in the faulting thread. A
/// single-threaded process's calls reach both in the same order: the counts
/// must be equal. Threads of one process fault concurrently on the guest's
/// CPUs, and two faults can reach the two probes in different orders (the
/// module takes a lock, the eBPF program updates its entry without one), so
/// each such pair may turn a sequential fault into a non-sequential one in
/// one collector and not the other: allowed, up to this fraction of the
/// process's faults.
pub const MULTI_THREAD_TOLERANCE: f64 = 0.02;
/// The workloads both collectors count: (pattern, threads, count per thread).
pub const COMPARED: [(&str, u32, u64); 3] = [
    ("seq", 1, 2048),
    ("seq", THREADS, SEQ_COUNT),
    ("random", THREADS, RANDOM_COUNT),
];
const EBPF_COUNTS: &str = "/run/madvise-collector/sequential-ebpf";
const PROC_COUNTS: &str = "/run/madvise-collector/sequential-proc";

/// Formats an ext4 on the disk whose serial is the lab's scratch serial and
/// mounts it; prints the device.
fn prepare_script(serial: &str) -> String {
    format!(
        r#"set -e
dev=
for b in /sys/block/vd*; do
  if [ "$(cat "$b/serial" 2>/dev/null)" = "{serial}" ]; then dev=/dev/${{b##*/}}; fi
done
if [ -z "$dev" ]; then echo "no virtio disk with serial {serial} under /sys/block/vd*" >&2; exit 1; fi
if grep -q " {MOUNT} " /proc/mounts; then umount {MOUNT}; fi
/sbin/mke2fs -q -F -t ext4 "$dev"
mkdir -p {MOUNT} {WORK}
mount -t ext4 "$dev" {MOUNT}
echo "$dev""#
    )
}

pub fn workload_argv(pattern: &str, count: u64, delay_ms: u64) -> String {
    threads_argv(pattern, THREADS, count, delay_ms)
}

pub fn threads_argv(pattern: &str, threads: u32, count: u64, delay_ms: u64) -> String {
    format!("mmap-workload -f {FILE} -p {pattern} -c {count} -t {threads} -d {delay_ms} --seed 7 --json")
}

/// Both collectors at once: each in the background, the workloads on a
/// cold page cache once both are attached, then `/proc/seq_page_faults`
/// read while the module is loaded, then both stopped; prints
/// `{"ebpf": …, "proc": …, "proc_file": "…", "runs": […]}`.
pub fn both_collectors_script(workloads: &[String]) -> String {
    let mut s = format!(
        r#"set -e
cd {WORK}
madvise-collector -i {COLLECTOR_INTERVAL_MS} --json -o {EBPF_COUNTS} > ebpf.json 2> ebpf.err < /dev/null &
e=$!
madvise-collector --proc -i {COLLECTOR_INTERVAL_MS} --json -o {PROC_COUNTS} > proc.json 2> proc.err < /dev/null &
p=$!
trap 'kill $e $p 2>/dev/null || true' EXIT
i=0
until grep -q attached ebpf.err && grep -q attached proc.err; do
  i=$((i+1))
  if [ $i -gt 600 ] || ! kill -0 $e 2>/dev/null || ! kill -0 $p 2>/dev/null; then
    echo "the collectors did not both attach:" >&2; cat ebpf.err proc.err >&2; exit 1
  fi
  sleep 0.1
done
"#
    );
    for (i, w) in workloads.iter().enumerate() {
        s.push_str(&format!(
            "sync; echo 3 > /proc/sys/vm/drop_caches\n{w} > both{i}.json\n"
        ));
    }
    s.push_str(
        "cat /proc/seq_page_faults > proc_file.txt\nkill -INT $e $p\nwait $e\nwait $p\ntrap - EXIT\n",
    );
    s.push_str("printf '{\"ebpf\":'; cat ebpf.json; printf ',\"proc\":'; cat proc.json\n");
    // The PID COUNT lines as one JSON string (digits, spaces, newlines).
    s.push_str("printf ',\"proc_file\":\"'; sed 's/$/\\\\n/' proc_file.txt | tr -d '\\n'; printf '\",\"runs\":['\n");
    for i in 0..workloads.len() {
        if i > 0 {
            s.push_str("printf ','\n");
        }
        s.push_str(&format!("cat both{i}.json\n"));
    }
    s.push_str("printf ']}'\n");
    s
}

/// `PID COUNT` lines -> count by pid.
pub fn pid_counts(text: &str) -> std::collections::BTreeMap<u64, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// One workload as both collectors counted it, and whether they agree:
/// exactly for one thread, within `MULTI_THREAD_TOLERANCE` of its faults
/// for several.
pub fn agreement(workload: &Value, ebpf: &Value, proc_: &Value, proc_file: &str) -> Value {
    let pid = u(&workload["pid"]);
    let threads = workload["threads"].as_array().map_or(0, Vec::len);
    let find = |report: &Value| {
        report["processes"]
            .as_array()
            .and_then(|p| p.iter().find(|p| u(&p["pid"]) == pid))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (e, p) = (find(ebpf), find(proc_));
    let file = pid_counts(proc_file).get(&pid).copied();
    let counts = (
        e["sequential"].as_u64(),
        p["sequential"].as_u64(),
        e["faults"].as_u64(),
        p["faults"].as_u64(),
    );
    let (allowed, agree) = match counts {
        (Some(es), Some(ps), Some(ef), Some(pf)) => {
            let allowed = if threads <= 1 {
                0
            } else {
                (ef.max(pf) as f64 * MULTI_THREAD_TOLERANCE).ceil() as u64
            };
            let ok = es.abs_diff(ps) <= allowed && ef.abs_diff(pf) <= allowed && file == Some(ps);
            (Some(allowed), ok)
        }
        _ => (None, false),
    };
    json!({
        "pid": pid,
        "pattern": workload["pattern"],
        "threads": threads,
        "ebpf": { "faults": e["faults"], "sequential": e["sequential"], "exited": e["exited"] },
        "proc": { "faults": p["faults"], "sequential": p["sequential"], "exited": p["exited"] },
        "proc_file_count": file,
        "sequential_difference": counts.0.zip(counts.1).map(|(a, b)| a.abs_diff(b)),
        "faults_difference": counts.2.zip(counts.3).map(|(a, b)| a.abs_diff(b)),
        "allowed_difference": allowed,
        "agree": agree,
    })
}

/// Runs `tool` in the background, waits for it to say it is attached, runs
/// each workload on a cold page cache, stops the tool with SIGINT and prints
/// `{"tool": <its JSON>, "runs": [<workload JSON>…]}`.
pub fn under_script(name: &str, tool: &str, workloads: &[String]) -> String {
    let mut s = format!(
        r#"set -e
cd {WORK}
{tool} > {name}.json 2> {name}.err < /dev/null &
t=$!
trap 'kill $t 2>/dev/null || true' EXIT
i=0
until grep -q attached {name}.err; do
  i=$((i+1))
  if [ $i -gt 600 ] || ! kill -0 $t 2>/dev/null; then echo "{name} did not attach:" >&2; cat {name}.err >&2; exit 1; fi
  sleep 0.1
done
"#
    );
    for (i, w) in workloads.iter().enumerate() {
        s.push_str(&format!(
            "sync; echo 3 > /proc/sys/vm/drop_caches\n{w} > run{i}.json\n"
        ));
    }
    s.push_str("kill -INT $t\nwait $t\ntrap - EXIT\n");
    s.push_str(&format!(
        "printf '{{\"tool\":'; cat {name}.json; printf ',\"runs\":['\n"
    ));
    for i in 0..workloads.len() {
        if i > 0 {
            s.push_str("printf ','\n");
        }
        s.push_str(&format!("cat run{i}.json\n"));
    }
    s.push_str("printf ']}'\n");
    s
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The monitor's rows of one workload process, next to each worker's own
/// count (getrusage) of its faults.
pub fn thread_view(workload: &Value, monitor: &Value) -> Value {
    let pid = u(&workload["pid"]);
    let rows: Vec<&Value> = monitor["rows"]
        .as_array()
        .map(|r| r.iter().filter(|r| u(&r["pid"]) == pid).collect())
        .unwrap_or_default();
    let workers: Vec<Value> = workload["threads"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let tid = u(&t["tid"]);
                    let mine: Vec<&&Value> = rows.iter().filter(|r| u(&r["tid"]) == tid).collect();
                    let row = mine.first();
                    json!({
                        "tid": tid,
                        "rows": mine.len(),
                        "monitor_major": row.map(|r| u(&r["major"])),
                        "monitor_minor": row.map(|r| u(&r["minor"])),
                        "monitor_avg_ms": row.map(|r| r["avg_ms"].clone()),
                        "workload_major": t["major_faults"],
                        "workload_minor": t["minor_faults"],
                        "accesses": t["accesses"],
                        "elapsed_ms": t["elapsed_ms"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "pid": pid,
        "pattern": workload["pattern"],
        "elapsed_ms": workload["elapsed_ms"],
        "rows": rows,
        "workers": workers,
    })
}

/// The collector's counts and daemon decisions about one workload process.
pub fn process_view(workload: &Value, collector: &Value) -> Value {
    let pid = u(&workload["pid"]);
    let proc_ = collector["processes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| u(&p["pid"]) == pid))
        .cloned()
        .unwrap_or(Value::Null);
    let decisions: Vec<&Value> = collector["decisions"]
        .as_array()
        .map(|d| d.iter().filter(|d| u(&d["pid"]) == pid).collect())
        .unwrap_or_default();
    let advised = decisions.iter().filter(|d| d["action"] == "advise").count();
    json!({
        "pid": pid,
        "pattern": workload["pattern"],
        "elapsed_ms": workload["elapsed_ms"],
        "faults": proc_["faults"],
        "sequential": proc_["sequential"],
        "ratio": proc_["ratio"],
        "exited": proc_["exited"],
        "advise_decisions": advised,
        "decisions": decisions,
    })
}

/// Whether a run has workers and the monitor's major-fault count of every
/// worker equals the thread's own `getrusage(RUSAGE_THREAD)` count (both
/// present: a worker the monitor has no row for fails).
pub fn majors_match_getrusage(view: &Value) -> bool {
    let workers = view["workers"].as_array().cloned().unwrap_or_default();
    !workers.is_empty()
        && workers.iter().all(|w| {
            matches!(
                (w["monitor_major"].as_u64(), w["workload_major"].as_u64()),
                (Some(m), Some(t)) if m == t
            )
        })
}

/// The suite's checks over the views.
pub fn checks(
    random: &Value,
    seq: &Value,
    seq_c: &Value,
    random_c: &Value,
    compared: &[Value],
    module_skipped: bool,
) -> Value {
    let workers = random["workers"].as_array().cloned().unwrap_or_default();
    let own_rows = !workers.is_empty() && workers.iter().all(|w| u(&w["rows"]) == 1);
    let majors = !workers.is_empty() && workers.iter().all(|w| u(&w["monitor_major"]) > 0);
    // Both counts must be there: a process the collector never reported
    // is no evidence of a low random count.
    let factor = match (
        seq_c["sequential"].as_u64(),
        random_c["sequential"].as_u64(),
    ) {
        (Some(s), Some(r)) => Some(s as f64 / r.max(1) as f64),
        _ => None,
    };
    json!({
        "random_every_worker_has_its_own_row": own_rows,
        "random_major_faults_on_every_worker": majors,
        "random_major_faults_equal_each_threads_getrusage": majors_match_getrusage(random),
        "seq_major_faults_equal_each_threads_getrusage": majors_match_getrusage(seq),
        "sequential_over_random": factor,
        "sequential_far_above_random": factor.is_some_and(|f| f >= SEQUENTIAL_FACTOR),
        "daemon_advises_the_sequential_process": u(&seq_c["advise_decisions"]) > 0,
        "daemon_leaves_the_random_process_alone": u(&random_c["advise_decisions"]) == 0,
        "collector_reports_exited_workloads_by_their_final_counts":
            seq_c["exited"] == true && random_c["exited"] == true,
        // Not run (null, not false) when the kernel cannot load the module.
        "proc_module_agrees_with_ebpf_collector": (!module_skipped)
            .then(|| !compared.is_empty() && compared.iter().all(|c| c["agree"] == true)),
    })
}

fn all_true(checks: &Value) -> bool {
    checks
        .as_object()
        .map(|m| {
            m.values()
                .filter(|v| v.is_boolean())
                .all(|v| v == &Value::Bool(true))
        })
        .unwrap_or(false)
}

pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    // eBPF, BTF and kprobes: without them the tools cannot start.
    if let Some(skipped) = ctx.skipped_for_kernel("faults") {
        return Ok(skipped);
    }
    let out = ctx
        .exec(&sh(prepare_script(crate::qemu::SCRATCH_SERIAL)))
        .await?;
    if !out.success() {
        return Err(SuiteError::Command {
            command: "format and mount the scratch disk".into(),
            code: out.exit_code,
            stderr: out.stderr.trim().to_owned(),
        });
    }
    let disk = out.stdout.trim().to_owned();
    let gen = format!("data-generator -f {FILE} -s {FILE_MB} -p random --json");
    let (file, _) = ctx.exec_json(&sh(gen)).await?;

    let random = workload_argv("random", RANDOM_COUNT, 0);
    let seq = workload_argv("seq", SEQ_COUNT, 0);
    let mut bare_ms = Vec::new();
    for _ in 0..OVERHEAD_ROUNDS {
        let cold = format!("sync; echo 3 > /proc/sys/vm/drop_caches\n{random}");
        let (bare, _) = ctx.exec_json(&sh(cold)).await?;
        bare_ms.push(number(&bare, "elapsed_ms", &random)?);
    }

    let fm = format!("fault-monitor -p 0 -i {MONITOR_INTERVAL_MS} --json");
    let mut runs = vec![random.clone(); OVERHEAD_ROUNDS];
    runs.push(seq);
    let (monitored, _) = ctx
        .exec_json(&sh(under_script("fault-monitor", &fm, &runs)))
        .await?;
    let mon = &monitored["tool"];
    let random_m = thread_view(&monitored["runs"][0], mon);
    let seq_m = thread_view(&monitored["runs"][OVERHEAD_ROUNDS], mon);
    let monitored_ms = (0..OVERHEAD_ROUNDS)
        .map(|i| {
            number(
                &monitored["runs"][i],
                "elapsed_ms",
                &format!("{random} (under {fm})"),
            )
        })
        .collect::<Result<Vec<f64>, _>>()?;

    let mc = format!(
        "madvise-collector -i {COLLECTOR_INTERVAL_MS} --daemon --dry-run --json -o /run/madvise-collector/sequential"
    );
    let (collected, _) = ctx
        .exec_json(&sh(under_script(
            "madvise-collector",
            &mc,
            &[
                workload_argv("seq", SEQ_COUNT, COLLECTOR_DELAY_MS),
                workload_argv("random", RANDOM_COUNT, COLLECTOR_DELAY_MS),
            ],
        )))
        .await?;
    let col = &collected["tool"];
    let seq_c = process_view(&collected["runs"][0], col);
    let random_c = process_view(&collected["runs"][1], col);
    let counts = ctx
        .exec(&sh("cat /run/madvise-collector/sequential"))
        .await?
        .stdout;

    // The seq_page_faults module is built against the image's kernel
    // headers: a user's kernel of another release (`lab up --kernel`)
    // cannot load it, so the side-by-side comparison is skipped, saying so.
    let module_skipped = ctx
        .summary
        .foreign_built_modules
        .iter()
        .any(|m| m == "seq_page_faults")
        .then(|| {
            format!(
                "the seq_page_faults kernel module is built against the image kernel's headers; this lab boots kernel {} ({}), which cannot load it",
                ctx.summary.kernel_release.as_deref().unwrap_or("unknown"),
                ctx.summary
                    .kernel_origin
                    .as_ref()
                    .map(|o| o.describe())
                    .unwrap_or_default()
            )
        });
    let (both, compared) = if module_skipped.is_some() {
        (Value::Null, Vec::new())
    } else {
        let both_runs: Vec<String> = COMPARED
            .iter()
            .map(|(p, t, c)| threads_argv(p, *t, *c, 0))
            .collect();
        let (both, _) = ctx
            .exec_json(&sh(both_collectors_script(&both_runs)))
            .await?;
        let proc_file = both["proc_file"].as_str().unwrap_or_default();
        let compared: Vec<Value> = (0..COMPARED.len())
            .map(|i| agreement(&both["runs"][i], &both["ebpf"], &both["proc"], proc_file))
            .collect();
        (both, compared)
    };

    let (bare_median, monitored_median) = (median(&bare_ms), median(&monitored_ms));
    let ratio = ratio(monitored_median, bare_median);
    let checks = checks(
        &random_m,
        &seq_m,
        &seq_c,
        &random_c,
        &compared,
        module_skipped.is_some(),
    );
    let collectors_compared = match &module_skipped {
        Some(reason) => json!({ "skipped": reason }),
        None => json!({
            "ebpf_source": both["ebpf"]["source"],
            "proc_source": both["proc"]["source"],
            "multi_thread_tolerance": MULTI_THREAD_TOLERANCE,
            "runs": compared,
            "proc_exits": both["proc"]["exits"],
            "proc_dropped": both["proc"]["dropped"],
            "ebpf_exits_lost": both["ebpf"]["exits_lost"],
        }),
    };
    Ok(json!({
        "suite": "faults",
        "passed": all_true(&checks),
        "disk": disk,
        "filesystem": "ext4",
        "file": file,
        "threads": THREADS,
        "fault_bits": mon["fault_bits"],
        "monitor": {
            "interval_ms": mon["interval_ms"],
            "intervals": mon["intervals"],
            "unfinished": mon["unfinished"],
            "random": random_m,
            "seq": seq_m,
        },
        "overhead": {
            "workload": random,
            "rounds": OVERHEAD_ROUNDS,
            "bare_ms": bare_ms,
            "monitored_ms": monitored_ms,
            "bare_median_ms": bare_median,
            "monitored_median_ms": monitored_median,
            "ratio": ratio,
            "target": OVERHEAD_TARGET,
            "within_target": ratio.map(|r| r <= OVERHEAD_TARGET),
        },
        "collector": {
            "interval_ms": col["interval_ms"],
            "policy": col["policy"],
            "dry_run": col["dry_run"],
            "seq": seq_c,
            "random": random_c,
            "counts_file": counts,
            "exits": col["exits"],
            "exits_lost": col["exits_lost"],
            "swept": col["swept"],
            "map_entries_peak": col["map_entries_peak"],
            "map_entries_end": col["map_entries_end"],
        },
        "collectors_compared": collectors_compared,
        "checks": checks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_scripts_drop_caches_before_each_workload_and_stop_the_tool() {
        let s = under_script(
            "fault-monitor",
            "fault-monitor -p 0 --json",
            &["w0".into(), "w1".into()],
        );
        assert_eq!(s.matches("echo 3 > /proc/sys/vm/drop_caches").count(), 2);
        let (attach, w0, stop) = (
            s.find("grep -q attached").unwrap(),
            s.find("w0 > run0.json").unwrap(),
            s.find("kill -INT $t").unwrap(),
        );
        assert!(attach < w0 && w0 < stop);
        assert!(s.ends_with("printf '{\"tool\":'; cat fault-monitor.json; printf ',\"runs\":['\ncat run0.json\nprintf ','\ncat run1.json\nprintf ']}'\n"));
        let p = prepare_script("cxl-lab-scratch");
        assert!(p.contains("= \"cxl-lab-scratch\" ]; then dev=/dev/${b##*/}"));
        assert!(
            p.contains("/sbin/mke2fs -q -F -t ext4 \"$dev\""),
            "the real mke2fs, not busybox's"
        );
        assert_eq!(
            workload_argv("seq", 5, 1),
            "mmap-workload -f /mnt/faults/data -p seq -c 5 -t 4 -d 1 --seed 7 --json"
        );
    }

    #[test]
    fn both_collectors_run_at_once_and_the_proc_file_is_read_before_they_stop() {
        let s = both_collectors_script(&["w0".into(), "w1".into()]);
        assert!(
            s.contains("madvise-collector -i 100 --json -o /run/madvise-collector/sequential-ebpf")
        );
        assert!(s.contains(
            "madvise-collector --proc -i 100 --json -o /run/madvise-collector/sequential-proc"
        ));
        let (attach, w1, cat, stop) = (
            s.find("until grep -q attached ebpf.err && grep -q attached proc.err")
                .unwrap(),
            s.find("w1 > both1.json").unwrap(),
            s.find("cat /proc/seq_page_faults").unwrap(),
            s.find("kill -INT $e $p").unwrap(),
        );
        assert!(attach < w1 && w1 < cat && cat < stop);
        assert_eq!(s.matches("drop_caches").count(), 2);
        assert!(
            s.contains("sed 's/$/\\\\n/' proc_file.txt | tr -d '\\n'"),
            "{s}"
        );
        assert_eq!(
            pid_counts("10 5\n11 0\nbad\n"),
            [(10, 5), (11, 0)].into_iter().collect()
        );
    }

    #[test]
    fn one_thread_must_agree_exactly_several_within_the_tolerance() {
        let report = |pid: u64, faults: u64, seq: u64| json!({"processes": [{"pid": pid, "faults": faults, "sequential": seq, "exited": true}]});
        let one = json!({"pid": 5, "pattern": "seq", "threads": [{"tid": 5}]});
        let a = agreement(
            &one,
            &report(5, 2049, 2047),
            &report(5, 2049, 2047),
            "5 2047\n",
        );
        assert_eq!(
            (&a["agree"], &a["allowed_difference"]),
            (&json!(true), &json!(0))
        );
        let a = agreement(
            &one,
            &report(5, 2049, 2047),
            &report(5, 2049, 2046),
            "5 2046\n",
        );
        assert_eq!(
            a["agree"], false,
            "one thread: off by one is a disagreement"
        );
        assert_eq!(a["sequential_difference"], 1);
        let four = json!({"pid": 6, "pattern": "seq", "threads": [{}, {}, {}, {}]});
        let a = agreement(
            &four,
            &report(6, 2000, 1900),
            &report(6, 2000, 1870),
            "6 1870\n",
        );
        assert_eq!(
            (&a["agree"], &a["allowed_difference"]),
            (&json!(true), &json!(40))
        );
        let a = agreement(
            &four,
            &report(6, 2000, 1900),
            &report(6, 2000, 1850),
            "6 1850\n",
        );
        assert_eq!(a["agree"], false, "50 > 2 % of 2000");
        let a = agreement(
            &four,
            &report(6, 2000, 1900),
            &report(6, 2000, 1900),
            "6 1899\n",
        );
        assert_eq!(
            a["agree"], false,
            "/proc/seq_page_faults must show the module's count"
        );
        let a = agreement(&four, &report(6, 2000, 1900), &json!({"processes": []}), "");
        assert_eq!(
            (&a["agree"], &a["allowed_difference"]),
            (&json!(false), &Value::Null)
        );
    }

    fn workload(pid: u64, tids: &[u64]) -> Value {
        json!({"pid": pid, "pattern": "random", "elapsed_ms": 10.0,
               "threads": tids.iter().map(|t| json!({"tid": t, "major_faults": 3, "minor_faults": 9, "accesses": 5, "elapsed_ms": 1.0})).collect::<Vec<_>>()})
    }

    #[test]
    fn views_and_checks() {
        let w = workload(10, &[11, 12]);
        let mon = json!({"rows": [
            {"pid": 10, "tid": 10, "major": 0, "minor": 50, "avg_ms": 0.1},
            {"pid": 10, "tid": 11, "major": 3, "minor": 9, "avg_ms": 0.2},
            {"pid": 10, "tid": 12, "major": 0, "minor": 12, "avg_ms": 0.2},
            {"pid": 99, "tid": 11, "major": 7, "minor": 1, "avg_ms": 0.2},
        ]});
        let v = thread_view(&w, &mon);
        assert_eq!(
            v["rows"].as_array().unwrap().len(),
            3,
            "only the workload's rows"
        );
        assert_eq!(v["workers"][0]["monitor_major"], 3);
        assert_eq!(v["workers"][1]["rows"], 1);
        let col = json!({"processes": [{"pid": 10, "faults": 100, "sequential": 2, "ratio": 0.02, "exited": true}, {"pid": 20, "faults": 100, "sequential": 90, "ratio": 0.9, "exited": false}],
                         "decisions": [{"pid": 20, "action": "none"}, {"pid": 20, "action": "advise"}, {"pid": 10, "action": "none"}]});
        let seq_c = process_view(&json!({"pid": 20, "pattern": "seq"}), &col);
        let rnd_c = process_view(&w, &col);
        assert_eq!(
            (
                seq_c["sequential"].as_u64(),
                seq_c["advise_decisions"].as_u64()
            ),
            (Some(90), Some(1))
        );
        let c = checks(&v, &v, &seq_c, &rnd_c, &[], false);
        assert_eq!(
            c["random_major_faults_on_every_worker"], false,
            "tid 12 had no major fault"
        );
        assert_eq!(c["random_every_worker_has_its_own_row"], true);
        assert_eq!(c["sequential_over_random"], 45.0);
        assert_eq!(c["daemon_advises_the_sequential_process"], true);
        assert_eq!(c["daemon_leaves_the_random_process_alone"], true);
        assert_eq!(
            c["collector_reports_exited_workloads_by_their_final_counts"], false,
            "pid 20 still runs"
        );
        assert_eq!(
            c["random_major_faults_equal_each_threads_getrusage"], false,
            "tid 12: the monitor saw 0 major faults, the thread counted 3"
        );
        assert!(!all_true(&c));
        assert_eq!(c["proc_module_agrees_with_ebpf_collector"], false);
        let without_module = checks(&v, &v, &seq_c, &rnd_c, &[], true);
        assert_eq!(
            without_module["proc_module_agrees_with_ebpf_collector"],
            Value::Null,
            "not run is not a failure"
        );
    }

    #[test]
    fn major_faults_must_equal_getrusage_on_every_worker() {
        let w = workload(10, &[11, 12]);
        let rows = |m12: u64| {
            json!({"rows": [
                {"pid": 10, "tid": 11, "major": 3, "minor": 9, "avg_ms": 0.2},
                {"pid": 10, "tid": 12, "major": m12, "minor": 9, "avg_ms": 0.2},
            ]})
        };
        assert!(majors_match_getrusage(&thread_view(&w, &rows(3))));
        assert!(!majors_match_getrusage(&thread_view(&w, &rows(4))));
        let one_row = json!({"rows": [{"pid": 10, "tid": 11, "major": 3, "minor": 9}]});
        assert!(
            !majors_match_getrusage(&thread_view(&w, &one_row)),
            "a worker without a row is not a match"
        );
        assert!(!majors_match_getrusage(&thread_view(
            &workload(10, &[]),
            &rows(3)
        )));
    }

    #[test]
    fn missing_figures_are_errors_or_null_never_zero() {
        let e = number(&json!({"pid": 1}), "elapsed_ms", "mmap-workload …").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Guest command `mmap-workload …` printed JSON without the number `elapsed_ms`: {\"pid\":1}"
        );
        assert_eq!(
            number(&json!({"elapsed_ms": 2.5}), "elapsed_ms", "w").unwrap(),
            2.5
        );
        assert_eq!(ratio(5.0, 0.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        let seq_c = json!({"sequential": 90, "advise_decisions": 1, "exited": true});
        let gone = json!({"sequential": null, "advise_decisions": 0, "exited": true});
        let c = checks(&json!({}), &json!({}), &seq_c, &gone, &[], false);
        assert_eq!(c["sequential_over_random"], Value::Null);
        assert_eq!(c["sequential_far_above_random"], false);
    }
}
