//! `lab run ioriot`, on one ext4 on the lab's CXL persistent memory
//! mounted at `/home` (`pmemfs`: the device's namespace turned fsdax,
//! mounted with DAX when the kernel allows, given back as devdax at the
//! end; the guest's own `/home` would be on its RAM root):
//!
//! 1. I/O Riot's documented syscall-matrix procedure (`ioriot_procedure`),
//!    reported under `procedure`;
//! 2. the measurements: `ioriot-syscall-matrix` captured by pid with the
//!    eBPF capture while it works under `/home`, generated, initialised and
//!    replayed single-threaded and with 2 processes × 4 threads into its
//!    test tree (`/home/.ioriot/<name>/…`), with the capture's and the
//!    replay's operation sets, the statistics and the replayed tree against
//!    the captured one; the helper with and without capture (same run, same
//!    iterations); the replay rate against the captured rate; and capture
//!    and replay of a real application (fio).
//!
//! The suite passes when both do. The filesystem is named under
//! `replay_fs`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::stats::median;
use crate::suite_support::pmemfs::{self, PmemFs};
use crate::suite_support::{number, ratio, sh, SuiteContext, SuiteError};
use crate::suites::ioriot_procedure::{self as procedure, HOME, PROCEDURE};

/// ioriot's own files (captures, replays, reports) in the guest: on its
/// RAM root, which generate drops, so nothing of them is replayed.
pub const DIR: &str = "/var/tmp/ioriot-lab";
/// Where the filesystem on CXL memory is mounted: the procedure's /home.
pub const MOUNT: &str = HOME;
/// What the captured programs work in, on that filesystem.
pub const WORK: &str = "/home/ioriot-lab";
/// The replays' working directory base (`-w`, recorded by generate).
pub const WD_BASE: &str = "/home/ioriot-lab/wd";
/// Test name of the helper's replay.
pub const NAME: &str = "matrix";
/// Iterations of the helper per overhead run, and alternating rounds of
/// runs without and with capture (their medians are compared: single runs
/// under TCG vary by 2× and more).
pub const BENCH_ITERATIONS: u32 = 30;
pub const BENCH_ROUNDS: u32 = 5;

/// Every system call the helper makes (and ioriot traces), from the list
/// the ioriot crate's tests check too.
pub fn helper_ops() -> Vec<&'static str> {
    include_str!("../../../guest-tools/ioriot/src/syscall_matrix_ops.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// A path captured on `MOUNT` as replay `name` has it: I/O Riot's test
/// tree `<mount>/.ioriot/<name>/<rest>`.
pub fn test_tree(name: &str, captured: &str) -> String {
    let rest = captured
        .strip_prefix(MOUNT)
        .unwrap_or(captured)
        .trim_start_matches('/');
    format!("{MOUNT}/.ioriot/{name}/{rest}")
}

/// Generate with the suite's working directory base.
fn generate_script(capture: &str, replay: &str, name: &str) -> String {
    format!("ioriot -c {capture} -r {replay} -n {name} -w {WD_BASE} --json")
}

/// Replay without dropping the caches first (`-D`: a measurement of the
/// replay, not of the disk), at full speed unless told.
fn replay_script(replay: &str, p: u32, t: u32, speed: u32, extra: &str) -> String {
    format!("ioriot -r {replay} -p {p} -t {t} -s {speed} -D{extra} --json")
}

/// Captured but not replayed: replayed paths are absolute already.
pub const NOT_REPLAYED: &[&str] = &["chdir", "fchdir"];

/// The shell line that captures `program` (a command line without single
/// quotes) by pid: its shell sends the program's output to `program_out`
/// and stops itself before exec, and capture (--resume) waits for that and
/// sends SIGCONT once it is attached, so no call is missed. Should capture
/// fail, the program is killed, so the shell never waits for a stopped
/// process. Capture's report goes to `<out>.json`, the capture to
/// `<out>.capture`; the line fails unless both capture and program succeed.
pub fn capture_script(program: &str, program_out: &str, out: &str) -> String {
    format!(
        "sh -c 'exec >{program_out} 2>&1; kill -STOP $$; exec {program}' & P=$!; \
         ioriot -c {out}.capture -x $P --resume --json >{out}.json; rc=$?; [ $rc -eq 0 ] || kill -KILL $P 2>/dev/null; wait $P; h=$?; [ $rc -eq 0 ] && [ $h -eq 0 ]"
    )
}

/// `capture_script` for the helper: its report goes to `<out>.helper.json`.
pub fn capture_helper_script(work: &str, out: &str, iterations: u32) -> String {
    capture_script(
        &format!("ioriot-syscall-matrix {work} --iterations {iterations} --json"),
        &format!("{out}.helper.json"),
        out,
    )
}

/// The helper without capture, started like `capture_helper_script` starts it,
/// after a pause as long as capture's start-up (which the traced helper
/// spends stopped), so both start in an equally quiet guest.
pub fn plain_script(work: &str, out: &str, iterations: u32) -> String {
    format!(
        "sh -c 'exec >{out}.helper.json 2>&1; sleep 1; exec ioriot-syscall-matrix {work} --iterations {iterations} --json'"
    )
}

/// A real application: Debian's fio (random read/write, psync, two
/// threads) captured by pid, generated, initialised and replayed with 2
/// threads at speed 0.
async fn fio_workload(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    let d = format!("{DIR}/fio");
    let data = format!("{WORK}/fio");
    let fio = format!(
        "fio --name=j --filename={data}/data --size=1M --bs=4k --rw=randrw --ioengine=psync --numjobs=2 --thread"
    );
    run_checked(
        ctx,
        &format!(
            "mkdir -p {d} {data}; {}",
            capture_script(&fio, &format!("{d}/fio.out"), &format!("{d}/f"))
        ),
    )
    .await?;
    let capture = json_of(ctx, &format!("cat {d}/f.json")).await?;
    let generate = json_of(
        ctx,
        &generate_script(&format!("{d}/f.capture"), &format!("{d}/f.replay"), "fio"),
    )
    .await?;
    run_checked(ctx, &format!("ioriot -i {d}/f.replay --json >/dev/null")).await?;
    let replay = json_of(ctx, &replay_script(&format!("{d}/f.replay"), 1, 2, 0, "")).await?;
    Ok(json!({
        "capture": capture,
        "generate": {
            "events": generate["events"],
            "kept": generate["kept"],
            "dropped_pseudo_fs": generate["dropped_pseudo_fs"],
            "replay_ops": generate["replay_ops"],
            "init_files": generate["init_files"],
        },
        "replay": {
            "ops": replay["ops"],
            "errors": replay["errors"],
            "mismatches": replay["mismatches"],
            "refused": replay["refused"],
            "skipped": replay["skipped"],
            "bytes_read": replay["bytes_read"],
            "bytes_written": replay["bytes_written"],
            "ops_per_s": replay["ops_per_s"],
            "source_ops_per_s": replay["source_ops_per_s"],
            "rate_vs_source": replay["rate_vs_source"],
        },
    }))
}

/// Paths, types and sizes under a directory, as `find` prints them.
fn tree_script(dir: &str) -> String {
    format!("cd {dir} && find . -type d | sort | sed 's/$/\\//' && find . -type f -exec wc -c {{}} + | grep -v ' total$' | sort -k2")
}

/// Parses `tree_script`'s output into sorted entries: `dir/` or `file SIZE`.
pub fn parse_tree(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.ends_with('/') {
                Some(l.trim_start_matches("./").to_owned())
            } else {
                let (size, path) = l.split_once(' ')?;
                Some(format!("{} {size}", path.trim().trim_start_matches("./")))
            }
        })
        .filter(|s| !s.is_empty() && s != "/")
        .collect();
    v.sort();
    v
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// A guest shell line that must succeed; what it printed.
async fn run_checked(ctx: &SuiteContext<'_>, script: &str) -> Result<String, SuiteError> {
    ctx.exec_checked(&sh(script)).await
}

/// A guest shell line that prints JSON.
async fn json_of(ctx: &SuiteContext<'_>, script: &str) -> Result<Value, SuiteError> {
    Ok(ctx.exec_json(&sh(script)).await?.0)
}

async fn replay(ctx: &SuiteContext<'_>, label: &str, p: u32, t: u32) -> Result<Value, SuiteError> {
    run_checked(ctx, &format!("ioriot -i {DIR}/m.replay --json")).await?;
    let stats = json_of(
        ctx,
        &replay_script(
            &format!("{DIR}/m.replay"),
            p,
            t,
            0,
            &format!(" -S {DIR}/{label}.stats.json"),
        ),
    )
    .await?;
    let tree = parse_tree(
        &run_checked(ctx, &tree_script(&test_tree(NAME, &format!("{WORK}/work")))).await?,
    );
    Ok(json!({"processes": p, "threads": t, "stats": stats, "tree": tree}))
}

/// Every followed task left capture's state when it exited: the kernel's
/// map of followed tasks and userspace's per-task tables are back to empty,
/// and no child went unfollowed for want of room.
fn pruned(capture: &Value) -> bool {
    ["targets_end", "tracked_end", "unfollowed_children"]
        .iter()
        .all(|k| capture[k].as_u64() == Some(0))
        && capture["exits"].as_u64().is_some_and(|n| n > 0)
}

/// A replay went as captured: no result differed from the capture's (the
/// helper's intended failures fail again), nothing was refused or skipped.
fn clean(v: &Value) -> bool {
    ["mismatches", "refused", "skipped"]
        .iter()
        .all(|k| v[k].as_u64() == Some(0))
}

pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    // eBPF and the raw_syscalls tracepoints: without them nothing is captured.
    if let Some(skipped) = ctx.skipped_for_kernel("ioriot") {
        return Ok(skipped);
    }
    run_checked(ctx, &format!("rm -rf {DIR} && mkdir -p {DIR}")).await?;
    let fs = pmemfs::mount(ctx, "ioriot", MOUNT).await?;
    // The device goes back to devdax whatever happened on it.
    let result = run_on(ctx).await;
    let restored = pmemfs::restore(ctx, &fs).await;
    let mut v = result?;
    let restored = restored?;
    v["passed"] = json!(
        v["passed"].as_bool() == Some(true)
            && v["procedure"]["passed"].as_bool() == Some(true)
            && fs_ok(&fs)
    );
    v["replay_fs"] = replay_fs(&fs, restored);
    Ok(v)
}

/// The documented procedure, first, on the fresh filesystem.
async fn run_procedure(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    let out = ctx.exec(&sh(PROCEDURE)).await?;
    let mut v = procedure::digest(&out.stdout);
    v["exit_code"] = json!(out.exit_code);
    if !out.stderr.trim().is_empty() {
        v["stderr"] = json!(out.stderr.lines().rev().take(20).collect::<Vec<_>>());
    }
    Ok(v)
}

/// The filesystem the replays ran on is a real one on the CXL device.
fn fs_ok(fs: &PmemFs) -> bool {
    fs.fstype == "ext4" && fs.blockdev.starts_with("/dev/pmem")
}

/// What the result says about the filesystem the replays ran on.
fn replay_fs(fs: &PmemFs, restored: Value) -> Value {
    let mut v = serde_json::to_value(fs).expect("PmemFs serialises");
    v["roots"] = json!({
        "procedure": format!("{MOUNT}/.ioriot"),
        "matrix": test_tree(NAME, WORK),
        "rate": test_tree("bench", WORK),
        "fio": test_tree("fio", WORK),
    });
    v["restored"] = restored;
    v
}

/// Everything but the filesystem's set-up: the procedure, then the
/// measurements (programs working under `WORK`, replays into their test
/// trees under `MOUNT`).
async fn run_on(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    let procedure = run_procedure(ctx).await?;
    run_checked(ctx, &format!("rm -rf {WORK} && mkdir -p {WORK}")).await?;
    run_checked(
        ctx,
        &capture_helper_script(&format!("{WORK}/work"), &format!("{DIR}/m"), 1),
    )
    .await?;
    let capture = json_of(ctx, &format!("cat {DIR}/m.json")).await?;
    let helper = json_of(ctx, &format!("cat {DIR}/m.helper.json")).await?;
    let generate = json_of(
        ctx,
        &generate_script(
            &format!("{DIR}/m.capture"),
            &format!("{DIR}/m.replay"),
            NAME,
        ),
    )
    .await?;
    let original = parse_tree(&run_checked(ctx, &tree_script(&format!("{WORK}/work"))).await?);
    let single = replay(ctx, "single", 1, 1).await?;
    let multi = replay(ctx, "multi", 2, 4).await?;

    // Overhead: the same helper, without and with capture, alternating.
    let mut plain = Vec::new();
    let mut traced = Vec::new();
    let mut traced_events = Vec::new();
    let mut traced_lost = 0;
    // Calls the bench helpers reported failed (a missing list counts as one).
    let mut bench_failed = 0;
    let mut bpf_ns = Vec::new();
    let mut bpf_runs = Vec::new();
    for round in 0..BENCH_ROUNDS {
        // Both runs start the same way (a shell that redirects, then execs
        // the helper); which one goes first alternates, so an order effect
        // cancels out.
        for traced_run in [round % 2 == 1, round % 2 == 0] {
            let out = format!("{DIR}/bench{round}{}", if traced_run { "t" } else { "p" });
            let work = format!("{WORK}/work-{round}{}", if traced_run { "t" } else { "p" });
            let script = if traced_run {
                capture_helper_script(&work, &out, BENCH_ITERATIONS)
            } else {
                plain_script(&work, &out, BENCH_ITERATIONS)
            };
            run_checked(ctx, &script).await?;
            let cat = format!("cat {out}.helper.json");
            let h = json_of(ctx, &cat).await?;
            let seconds = number(&h, "seconds", &cat)?;
            bench_failed += h["failed"].as_array().map_or(1, Vec::len);
            if traced_run {
                traced.push(seconds);
                let cat = format!("cat {out}.json");
                let c = json_of(ctx, &cat).await?;
                traced_events.push(number(&c, "events", &cat)? as u64);
                bpf_ns.push(number(&c, "bpf_run_ns", &cat)?);
                bpf_runs.push(number(&c, "bpf_runs", &cat)?);
                traced_lost +=
                    (number(&c, "lost", &cat)? + number(&c, "lost_pending", &cat)?) as u64;
            } else {
                plain.push(seconds);
            }
        }
    }
    let (plain_s, traced_s) = (median(&plain), median(&traced));
    // The kernel's own account of the eBPF programs' time over each whole
    // capture (every process's system calls reach the filter): added to the
    // helper's run time it bounds the overhead from above, free of the
    // run-to-run noise the timed ratio has under TCG.
    let bpf_ns_med = median(&bpf_ns);
    let bound = ratio(bpf_ns_med, traced_s * 1e9).map(|r| 1.0 + r);
    let ns_per_run = ratio(bpf_ns_med, median(&bpf_runs));
    let overhead = ratio(traced_s, plain_s);

    // Replay rate on a longer capture (the first traced overhead run):
    // speed 0 against the captured run's own op rate, and speed 1, whose
    // wall time should match the captured span.
    run_checked(
        ctx,
        &format!(
            "{} >/dev/null",
            generate_script(
                &format!("{DIR}/bench0t.capture"),
                &format!("{DIR}/bench.replay"),
                "bench"
            )
        ),
    )
    .await?;
    let mut rate = serde_json::Map::new();
    for speed in [0, 1] {
        run_checked(
            ctx,
            &format!("ioriot -i {DIR}/bench.replay --json >/dev/null"),
        )
        .await?;
        let st = json_of(
            ctx,
            &replay_script(&format!("{DIR}/bench.replay"), 1, 1, speed, ""),
        )
        .await?;
        rate.insert(
            format!("speed{speed}"),
            json!({
                "ops": st["ops"],
                "mismatches": st["mismatches"],
                "refused": st["refused"],
                "skipped": st["skipped"],
                "wall_ns": st["wall_ns"],
                "ops_per_s": st["ops_per_s"],
                "source_span_ns": st["source_span_ns"],
                "source_ops_per_s": st["source_ops_per_s"],
                "rate_vs_source": st["rate_vs_source"],
            }),
        );
    }

    let fio = fio_workload(ctx).await?;

    let capture_ops = keys(&generate["capture_ops"]);
    let replay_ops = keys(&generate["replay_ops"]);
    let missing_capture: Vec<&str> = helper_ops()
        .iter()
        .copied()
        .filter(|o| !capture_ops.contains(*o))
        .collect();
    let missing_replay: Vec<&str> = helper_ops()
        .iter()
        .copied()
        .filter(|o| !replay_ops.contains(*o) && !NOT_REPLAYED.contains(o))
        .collect();
    let replayed_ops = keys(&single["stats"]["per_op"]);
    let missing_replayed: Vec<&str> = helper_ops()
        .iter()
        .copied()
        .filter(|o| !replayed_ops.contains(*o) && !NOT_REPLAYED.contains(o))
        .collect();
    let passed = helper["failed"].as_array().is_some_and(|f| f.is_empty())
        && capture["lost"].as_u64() == Some(0)
        && capture["lost_pending"].as_u64() == Some(0)
        && capture["unreadable"].as_u64() == Some(0)
        && pruned(&capture)
        // The helper's child writes through a descriptor it inherited.
        && generate["inherited_fds"].as_u64().is_some_and(|n| n > 0)
        && missing_capture.is_empty()
        && missing_replay.is_empty()
        && missing_replayed.is_empty()
        && clean(&single["stats"])
        && clean(&multi["stats"])
        && single["tree"] == json!(original)
        && multi["tree"] == json!(original)
        && traced_lost == 0
        && bench_failed == 0
        && rate.values().all(clean)
        && clean(&fio["replay"])
        && fio["capture"]["lost"].as_u64() == Some(0);
    Ok(json!({
        "suite": "ioriot",
        "passed": passed,
        "capture": capture,
        "helper_calls": helper["calls"].as_array().map_or(0, Vec::len),
        "generate": generate,
        "capture_ops": capture_ops,
        "replay_ops": replay_ops,
        "missing_in_capture": missing_capture,
        "missing_in_replay": missing_replay,
        "missing_in_replayed": missing_replayed,
        "original_tree": original,
        "single": single,
        "multi": multi,
        "rate": rate,
        "fio": fio,
        "procedure": procedure,
        "overhead": {
            "iterations": BENCH_ITERATIONS,
            "rounds": BENCH_ROUNDS,
            "plain_seconds": plain,
            "traced_seconds": traced,
            "traced_events": traced_events,
            "traced_lost": traced_lost,
            "helper_failed_calls": bench_failed,
            "median_plain_seconds": plain_s,
            "median_traced_seconds": traced_s,
            "ratio": overhead,
            "bpf_run_ns": bpf_ns,
            "bpf_runs": bpf_runs,
            "bpf_ns_per_run": ns_per_run,
            "bpf_bound_ratio": bound,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_must_run_on_an_ext4_on_a_pmem_device() {
        let fs = PmemFs {
            device: "pmem0".into(),
            namespace: "namespace1.0".into(),
            chardev: "dax1.0".into(),
            blockdev: "/dev/pmem1".into(),
            mount: MOUNT.into(),
            fstype: "ext4".into(),
            dax: false,
            options: "rw,relatime".into(),
            no_dax_reason: Some("mount: Invalid argument".into()),
            saved: Default::default(),
            map: "mem".into(),
        };
        assert!(fs_ok(&fs));
        let v = replay_fs(&fs, json!({"dax": "/dev/dax1.0"}));
        assert_eq!(v["blockdev"], "/dev/pmem1");
        assert_eq!(v["dax"], false);
        assert_eq!(v["no_dax_reason"], "mount: Invalid argument");
        assert_eq!(v["roots"]["matrix"], "/home/.ioriot/matrix/ioriot-lab");
        assert_eq!(v["restored"]["dax"], "/dev/dax1.0");
        let rootfs = PmemFs {
            fstype: "rootfs".into(),
            ..fs
        };
        assert!(!fs_ok(&rootfs));
    }

    #[test]
    fn a_capture_is_pruned_when_its_maps_are_empty_again() {
        let ok = json!({"targets_end": 0, "tracked_end": 0, "unfollowed_children": 0, "exits": 3});
        assert!(pruned(&ok));
        let mut full = ok.clone();
        full["targets_end"] = json!(2);
        assert!(!pruned(&full));
        let mut no_exit = ok.clone();
        no_exit["exits"] = json!(0);
        assert!(!pruned(&no_exit));
        assert!(!pruned(&json!({})));
    }

    #[test]
    fn captured_paths_replay_in_their_test_tree() {
        assert_eq!(
            test_tree(NAME, "/home/ioriot-lab/work"),
            "/home/.ioriot/matrix/ioriot-lab/work"
        );
        assert!(test_tree("fio", WORK).starts_with(MOUNT));
        assert!(WD_BASE.starts_with(WORK));
        assert_eq!(
            replay_script("/r", 2, 4, 0, " -S /s"),
            "ioriot -r /r -p 2 -t 4 -s 0 -D -S /s --json"
        );
    }

    #[test]
    fn tree_listings_parse_into_sorted_entries() {
        let out = "./\n./sub/\n    300 ./t.dat\n   8704 ./sub/a3.dat\n";
        assert_eq!(
            parse_tree(out),
            vec!["sub/", "sub/a3.dat 8704", "t.dat 300"]
        );
        let s = capture_helper_script("/w", "/o", 2);
        assert!(s.starts_with("sh -c 'exec >/o.helper.json 2>&1; kill -STOP $$; exec ioriot-syscall-matrix /w --iterations 2 --json' & P=$!;"));
        assert!(s.contains("ioriot -c /o.capture -x $P --resume --json >/o.json"));
        let f = capture_script("fio --name=j", "/d/fio.out", "/d/f");
        assert!(f.starts_with(
            "sh -c 'exec >/d/fio.out 2>&1; kill -STOP $$; exec fio --name=j' & P=$!;"
        ));
        assert!(f.contains("ioriot -c /d/f.capture -x $P --resume --json >/d/f.json"));
    }
}
