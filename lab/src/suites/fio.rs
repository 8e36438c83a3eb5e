//! `lab run fio`: Debian's fio in the guest, through the LD_PRELOAD
//! library onto a dax device, randwrite then randread with crc32c verify,
//! psync, at block sizes from 64 B to 4 KiB.
//!
//! A run passes only with evidence that its I/O reached the device: the
//! library runs with `FIO_DEBUG=1`, so it names the device it mapped, the
//! slot it gave fio's file, and at exit counts the calls it served; every
//! I/O fio reports must be among them. Without the library `ld.so` ignores
//! `LD_PRELOAD` and fio would write a tmpfs file instead, so the suite also
//! refuses to start when the library is missing from the guest and checks
//! that no file was created on disk.
//!
//! The baseline, without the preload: the same jobs (block size,
//! direction, number of I/Os, crc32c verify) run by plain fio through its
//! own `dev-dax` engine (Debian's fio has it, with libpmem: it maps the
//! device and copies with `memcpy` and `pmem_memcpy_persist`) onto the same
//! device and slot. Device-dax maps only whole 2 MiB pages, so those jobs
//! map the slot (`--size` 2 MiB) and do the same number of I/Os in it
//! (`--io_size`), at random offsets of the slot; and they run without
//! O_DIRECT, which a dax device refuses (its I/O is direct anyway).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use cxl_topology::DeviceKind;

use crate::suite_support::device_data;
use crate::suite_support::{sh, SuiteContext, SuiteError};
use crate::summary::DeviceSummary;

pub const BLOCK_SIZES: [u64; 6] = [64, 128, 256, 384, 512, 4096];
pub const PRELOAD: &str = "/usr/lib/cxl-lab/libfio_intercept.so";
/// The file fio opens: it matches the library's pattern, so it never
/// exists on the guest's disk.
pub const FILE: &str = "/tmp/lab-fio.cxl";
/// Each file gets a 2 MiB slot of the device.
const FILE_SIZE: u64 = 2 << 20;

/// Each job covers 1024 blocks (64 KiB at 64 B up to 512 KiB at 512 B),
/// capped at the 2 MiB slot (4 KiB blocks: 512 of them); TCG is slow.
fn job_size(bs: u64) -> u64 {
    (bs * 1024).min(FILE_SIZE)
}

fn fio_argv(dax: &str, rw: &str, bs: u64) -> Vec<String> {
    [
        "env",
        "FIO_INTERCEPT_ENABLE=1",
        &format!("FIO_MEM_DEVICE={dax}"),
        "FIO_MEM_OFFSET=0",
        &format!("FIO_FILE_SIZE={FILE_SIZE}"),
        "FIO_INTERCEPT_PATTERN=*.cxl",
        "FIO_DEBUG=1",
        &format!("LD_PRELOAD={PRELOAD}"),
        "fio",
        "--output-format=json",
        "--name=cxl",
        &format!("--filename={FILE}"),
        &format!("--size={}", job_size(bs)),
        &format!("--bs={bs}"),
        &format!("--rw={rw}"),
        "--ioengine=psync",
        "--direct=1",
        "--randrepeat=1",
        "--verify=crc32c",
        "--verify_state_save=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The baseline job: plain fio's `dev-dax` engine onto `dax`, no preload.
fn baseline_argv(dax: &str, rw: &str, bs: u64) -> Vec<String> {
    [
        "fio",
        "--output-format=json",
        "--name=cxl-baseline",
        &format!("--filename={dax}"),
        "--ioengine=dev-dax",
        &format!("--size={FILE_SIZE}"),
        &format!("--io_size={}", job_size(bs)),
        &format!("--bs={bs}"),
        &format!("--rw={rw}"),
        "--direct=0",
        "--randrepeat=1",
        "--verify=crc32c",
        "--verify_state_save=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// iops, bandwidth and error of fio's JSON for the given direction.
fn job_figures(report: &Value, dir: &str) -> (f64, u64, i64) {
    let job = &report["jobs"][0];
    let side = &job[dir];
    (
        side["iops"].as_f64().unwrap_or(0.0),
        side["bw_bytes"].as_u64().unwrap_or(0),
        job["error"].as_i64().unwrap_or(-1),
    )
}

/// What the library printed with `FIO_DEBUG=1` (lines `fio-intercept: …`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterceptLog {
    /// The device named by `pid N: enabled: device <dev> (device-dax, …`.
    pub device: Option<String>,
    /// Whether that device was mapped as device-dax (not a plain file).
    pub device_dax: bool,
    /// Device offsets of the slots the intercepted opens of `FILE` got.
    pub slot_offsets: Vec<String>,
    /// The exit report's counters (`open=2 pread=1024 …`); `None` when the
    /// library printed no report (it did not run).
    pub counters: Option<BTreeMap<String, u64>>,
}

/// Reads the library's debug lines out of fio's stderr.
pub fn intercept_log(stderr: &str) -> InterceptLog {
    let mut log = InterceptLog::default();
    for line in stderr.lines() {
        let Some(msg) = line.strip_prefix("fio-intercept: ") else {
            continue;
        };
        if let Some((_, rest)) = msg.split_once(": enabled: device ") {
            if let Some((dev, kind)) = rest.split_once(" (") {
                log.device = Some(dev.to_owned());
                log.device_dax = kind.starts_with("device-dax,");
            }
        } else if let Some(rest) = msg.strip_prefix(&format!("open {FILE} -> fd ")) {
            if let Some((_, at)) = rest.split_once(" at device offset ") {
                let off = at.split(',').next().unwrap_or(at);
                log.slot_offsets.push(off.to_owned());
            }
        } else if let Some(rest) = msg.strip_prefix("intercepted calls in pid ") {
            let counts = rest.split_once(':').map(|(_, c)| c).unwrap_or("");
            log.counters = Some(
                counts
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                    .collect(),
            );
        }
    }
    log
}

/// The library's counters of the calls that move data in one direction.
fn served(counters: &BTreeMap<String, u64>, dir: &str) -> u64 {
    let calls: &[&str] = if dir == "write" {
        &["write", "pwrite", "writev", "pwritev"]
    } else {
        &["read", "pread", "readv", "preadv"]
    };
    calls
        .iter()
        .map(|c| counters.get(*c).copied().unwrap_or(0))
        .sum()
}

/// The evidence that one run's I/O went through the library to `dax`:
/// the checks (all must hold) and the figures they compare.
pub fn evidence(report: &Value, log: &InterceptLog, dax: &str, dir: &str) -> Value {
    let ios = |d: &str| report["jobs"][0][d]["total_ios"].as_u64();
    let counters = log.counters.clone().unwrap_or_default();
    let (writes, reads) = (served(&counters, "write"), served(&counters, "read"));
    // Every I/O fio reports, in both directions (a write job's verify
    // reads too), was one of the library's calls.
    let all_served = matches!(
        (ios("write"), ios("read")),
        (Some(w), Some(r)) if writes >= w && reads >= r
    );
    let iops = report["jobs"][0][dir]["iops"].as_f64().unwrap_or(0.0);
    let checks = json!({
        "library_mapped_the_dax_device": log.device.as_deref() == Some(dax) && log.device_dax,
        "file_opened_in_a_device_slot": !log.slot_offsets.is_empty(),
        "library_reported_its_calls": log.counters.is_some(),
        "every_fio_io_was_served_by_the_library": all_served,
        "io_done": ios(dir).is_some_and(|n| n > 0) && iops > 0.0,
    });
    json!({
        "checks": checks,
        "fio_ios": { "write": ios("write"), "read": ios("read") },
        "intercepted": { "write": writes, "read": reads },
        "counters": counters,
        "slot_offsets": log.slot_offsets,
    })
}

fn all_checks(evidence: &Value) -> bool {
    evidence["checks"]
        .as_object()
        .is_some_and(|m| m.values().all(|v| v == &Value::Bool(true)))
}

/// The device fio writes to: the first volatile dax device, else the
/// first dax device (a persistent one gets its slot saved and restored).
pub fn pick_device(devices: &[DeviceSummary]) -> Option<&DeviceSummary> {
    devices
        .iter()
        .filter(|d| d.dax.is_some())
        .min_by_key(|d| d.kind == DeviceKind::Persistent)
}

pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    let dev = pick_device(&ctx.summary.devices).ok_or(SuiteError::NoDax("fio"))?;
    let dax = dev.dax.clone().unwrap_or_default();
    // Without the library fio would run on a tmpfs file and pass.
    let present = ctx.exec(&sh(format!("test -f {PRELOAD}"))).await?;
    if !present.success() {
        return Err(SuiteError::MissingGuestTool {
            tool: "libfio_intercept.so",
            path: PRELOAD,
            package: "fio-preload",
        });
    }
    ctx.exec_checked(&sh(format!("rm -f {FILE}"))).await?;
    let persistent = dev.kind == DeviceKind::Persistent;
    let chardev = dax.trim_start_matches("/dev/");
    let saved = match persistent {
        true => Some(device_data::save(ctx, dev, chardev, "fio", 0, Some(FILE_SIZE)).await?),
        false => None,
    };
    let runs = fio_runs(ctx, &dax).await;
    let baseline = match &runs {
        Ok(_) => baseline_runs(ctx, &dax).await,
        Err(_) => Ok(Vec::new()),
    };
    if let Some(saved) = &saved {
        // Restored whatever the runs did; a failed restore is the error
        // that matters, and names the copy.
        device_data::restore(ctx, saved, chardev).await?;
    }
    let (runs, baseline) = (runs?, baseline?);
    let mut all_passed =
        runs.iter().all(|r| r["passed"] == true) && baseline.iter().all(|r| r["passed"] == true);
    // The library claims the path, so nothing may exist on disk.
    let on_disk = ctx.exec(&sh(format!("test -e {FILE}"))).await?.success();
    all_passed &= !on_disk;
    Ok(json!({
        "suite": "fio",
        "device": dev.name,
        "kind": dev.kind,
        "dax": dax,
        "slot": { "offset": 0, "size": FILE_SIZE },
        "data": device_data::data_fate(persistent),
        "preload": PRELOAD,
        "engine": "psync",
        "verify": "crc32c",
        "file": FILE,
        "file_created_on_disk": on_disk,
        "passed": all_passed,
        "runs": runs,
        "baseline": {
            "what": "the same jobs without the preload: plain fio, its dev-dax engine, on the same device and slot",
            "engine": "dev-dax",
            "runs": baseline,
        },
    }))
}

/// Runs one fio job and reads its JSON report.
async fn fio_json(
    ctx: &SuiteContext<'_>,
    argv: &[String],
) -> Result<(Value, String, bool), SuiteError> {
    let out = ctx.exec(argv).await?;
    match serde_json::from_str(out.stdout.trim()) {
        Ok(v) => {
            let success = out.success();
            Ok((v, out.stderr, success))
        }
        Err(_) if !out.success() => Err(SuiteError::Command {
            command: argv.join(" "),
            code: out.exit_code,
            stderr: out.stderr.trim().to_owned(),
        }),
        Err(source) => Err(SuiteError::Output {
            command: argv.join(" "),
            output: out.stdout.trim().to_owned(),
            source,
        }),
    }
}

/// Every block size, randwrite then randread: `argv(rw, bs)` run and its
/// report made a record by `record(report, stderr, success, bs, rw, dir)`.
async fn every_job(
    ctx: &SuiteContext<'_>,
    argv: impl Fn(&str, u64) -> Vec<String>,
    record: impl Fn(&Value, &str, bool, u64, &str, &str) -> Value,
) -> Result<Vec<Value>, SuiteError> {
    let mut runs = Vec::new();
    for bs in BLOCK_SIZES {
        for (rw, dir) in [("randwrite", "write"), ("randread", "read")] {
            let (report, stderr, success) = fio_json(ctx, &argv(rw, bs)).await?;
            runs.push(record(&report, &stderr, success, bs, rw, dir));
        }
    }
    Ok(runs)
}

/// Every job without the preload.
async fn baseline_runs(ctx: &SuiteContext<'_>, dax: &str) -> Result<Vec<Value>, SuiteError> {
    every_job(ctx, |rw, bs| baseline_argv(dax, rw, bs), baseline_run).await
}

/// One baseline job's record: it passes when fio exited 0 with no job
/// error and did the job's number of I/Os in its direction.
fn baseline_run(
    report: &Value,
    stderr: &str,
    success: bool,
    bs: u64,
    rw: &str,
    dir: &str,
) -> Value {
    let (iops, bw, error) = job_figures(report, dir);
    let ios = |d: &str| report["jobs"][0][d]["total_ios"].as_u64();
    let expected = job_size(bs) / bs;
    let passed = success && error == 0 && ios(dir) == Some(expected) && iops > 0.0;
    let mut run = json!({
        "bs": bs,
        "rw": rw,
        "size": job_size(bs),
        "passed": passed,
        "error": error,
        "iops": iops,
        "bw_bytes": bw,
        "fio_ios": { "write": ios("write"), "read": ios("read") },
    });
    if !passed {
        run["stderr"] = json!(stderr.trim());
    }
    run
}

/// Every job with the preload, with each run's evidence.
async fn fio_runs(ctx: &SuiteContext<'_>, dax: &str) -> Result<Vec<Value>, SuiteError> {
    every_job(
        ctx,
        |rw, bs| fio_argv(dax, rw, bs),
        |report, stderr, success, bs, rw, dir| {
            let (iops, bw, error) = job_figures(report, dir);
            let evidence = evidence(report, &intercept_log(stderr), dax, dir);
            let passed = success && error == 0 && all_checks(&evidence);
            json!({
                "bs": bs,
                "rw": rw,
                "size": job_size(bs),
                "passed": passed,
                "error": error,
                "iops": iops,
                "bw_bytes": bw,
                "evidence": evidence,
                "fio_version": report["fio version"],
            })
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_sets_the_preload_environment_and_verify() {
        let a = fio_argv("/dev/dax0.0", "randwrite", 64);
        assert_eq!(a[0], "env");
        assert!(a.contains(&"FIO_MEM_DEVICE=/dev/dax0.0".to_string()));
        assert!(a.contains(&"FIO_DEBUG=1".to_string()));
        assert!(a.contains(&"LD_PRELOAD=/usr/lib/cxl-lab/libfio_intercept.so".to_string()));
        assert!(a.contains(&"--verify=crc32c".to_string()));
        assert!(a.contains(&"--size=65536".to_string()));
        assert_eq!(job_size(512), 512 << 10);
        assert_eq!(job_size(4096), FILE_SIZE);
    }

    #[test]
    fn the_baseline_is_plain_fio_on_the_device_with_the_same_jobs() {
        let a = baseline_argv("/dev/dax0.0", "randread", 256);
        assert_eq!(a[0], "fio", "no env, no LD_PRELOAD");
        assert!(!a
            .iter()
            .any(|x| x.contains("FIO_") || x.contains("PRELOAD")));
        for want in [
            "--filename=/dev/dax0.0",
            "--ioengine=dev-dax",
            "--size=2097152",
            "--io_size=262144",
            "--bs=256",
            "--rw=randread",
            "--direct=0",
            "--verify=crc32c",
        ] {
            assert!(a.contains(&want.to_string()), "{want} in {a:?}");
        }
        let ok = json!({"jobs": [{"error": 0, "read": {"total_ios": 1024, "iops": 5000.0, "bw_bytes": 1280000}, "write": {"total_ios": 0}}]});
        let r = baseline_run(&ok, "", true, 256, "randread", "read");
        assert_eq!(r["passed"], true, "{r}");
        assert_eq!(r["iops"], 5000.0);
        assert!(r.get("stderr").is_none());
        // Fewer I/Os than the job's, or fio's failure, fails it with fio's words.
        let short = json!({"jobs": [{"error": 0, "read": {"total_ios": 1000, "iops": 5000.0}}]});
        let r = baseline_run(
            &short,
            "fio: verify failed\n",
            true,
            256,
            "randread",
            "read",
        );
        assert_eq!(
            (r["passed"].clone(), r["stderr"].clone()),
            (json!(false), json!("fio: verify failed"))
        );
        assert_eq!(
            baseline_run(&ok, "", false, 256, "randread", "read")["passed"],
            false
        );
    }

    #[test]
    fn reads_figures_from_fio_json() {
        let r = json!({"jobs": [{"error": 0, "write": {"iops": 1234.5, "bw_bytes": 79008}}]});
        assert_eq!(job_figures(&r, "write"), (1234.5, 79008, 0));
        assert_eq!(job_figures(&json!({}), "read").2, -1);
    }

    /// stderr of a randwrite through the library (FIO_DEBUG=1), as the
    /// library prints it.
    const STDERR: &str = "\
fio-intercept: pid 210: enabled: device /dev/dax0.0 (device-dax, 0x10000000 bytes), window offset 0x0 size 0x10000000, 128 slot(s) of 0x200000 bytes, mapping MAP_SHARED_VALIDATE|MAP_SYNC, flush clwb, pattern '*.cxl'
fio-intercept: open /tmp/lab-fio.cxl -> fd 6: slot 0 at device offset 0x0, size 0x200000 (new slot)
fio-intercept: open /tmp/lab-fio.cxl -> fd 6: slot 0 at device offset 0x0, size 0x200000
fio-intercept: intercepted calls in pid 210 and its children: open=2 close=2 pread=1024 pwrite=1024 stat=3 fadvise=4
";

    fn report(w: u64, r: u64) -> Value {
        json!({"jobs": [{"error": 0,
            "write": {"total_ios": w, "iops": if w > 0 { 900.0 } else { 0.0 }},
            "read": {"total_ios": r, "iops": 800.0}}]})
    }

    #[test]
    fn every_io_through_the_library_onto_the_dax_device_passes() {
        let log = intercept_log(STDERR);
        assert_eq!(log.device.as_deref(), Some("/dev/dax0.0"));
        assert!(log.device_dax);
        assert_eq!(log.slot_offsets, ["0x0", "0x0"]);
        assert_eq!(log.counters.as_ref().unwrap()["pwrite"], 1024);
        let e = evidence(&report(1024, 1024), &log, "/dev/dax0.0", "write");
        assert!(all_checks(&e), "{e:#}");
        assert_eq!(e["intercepted"], json!({"write": 1024, "read": 1024}));
    }

    #[test]
    fn io_the_library_did_not_serve_fails() {
        let log = intercept_log(STDERR);
        // fio did more writes than the library served.
        let e = evidence(&report(2048, 1024), &log, "/dev/dax0.0", "write");
        assert_eq!(e["checks"]["every_fio_io_was_served_by_the_library"], false);
        assert!(!all_checks(&e));
        // Another device than the one asked for.
        let e = evidence(&report(1024, 1024), &log, "/dev/dax1.0", "write");
        assert_eq!(e["checks"]["library_mapped_the_dax_device"], false);
        // No I/O in the job's direction.
        let e = evidence(&report(0, 1024), &log, "/dev/dax0.0", "write");
        assert_eq!(e["checks"]["io_done"], false);
    }

    #[test]
    fn without_the_library_nothing_is_evidence() {
        // What ld.so prints when LD_PRELOAD names a missing object; fio then
        // runs on a tmpfs file and passes its own verify.
        let stderr = "ERROR: ld.so: object '/usr/lib/cxl-lab/libfio_intercept.so' from LD_PRELOAD cannot be preloaded (cannot open shared object file): ignored.\n";
        let log = intercept_log(stderr);
        assert_eq!(log, InterceptLog::default());
        let e = evidence(&report(1024, 1024), &log, "/dev/dax0.0", "write");
        for check in [
            "library_mapped_the_dax_device",
            "file_opened_in_a_device_slot",
            "library_reported_its_calls",
            "every_fio_io_was_served_by_the_library",
        ] {
            assert_eq!(e["checks"][check], false, "{check}");
        }
        assert!(!all_checks(&e));
    }

    fn device(name: &str, kind: DeviceKind, dax: Option<&str>) -> DeviceSummary {
        DeviceSummary {
            name: name.into(),
            kind,
            size: 256 << 20,
            mode: "devdax".into(),
            memdev: None,
            dax: dax.map(Into::into),
            numa_node: None,
            backing: std::path::PathBuf::new(),
            simulator_base: 0,
            vhost_user_blk: None,
        }
    }

    #[test]
    fn fio_prefers_a_volatile_dax_device() {
        let p = device("pmem0", DeviceKind::Persistent, Some("/dev/dax0.0"));
        let ram = device("vmem0", DeviceKind::Volatile, None);
        let v = device("vmem1", DeviceKind::Volatile, Some("/dev/dax1.0"));
        let d = [p.clone(), ram.clone(), v];
        assert_eq!(pick_device(&d).unwrap().name, "vmem1");
        let d = [ram.clone(), p];
        assert_eq!(
            pick_device(&d).unwrap().name,
            "pmem0",
            "persistent only as a last resort"
        );
        assert!(pick_device(&[ram]).is_none());
    }

    #[test]
    fn a_missing_library_names_the_fix() {
        let e = SuiteError::MissingGuestTool {
            tool: "libfio_intercept.so",
            path: PRELOAD,
            package: "fio-preload",
        };
        assert_eq!(
            e.to_string(),
            "The guest has no /usr/lib/cxl-lab/libfio_intercept.so: the image includes libfio_intercept.so only when it is built next to `lab`; run `cargo build -p fio-preload` (or `cargo build --workspace`), then `lab down` and `lab up` so the image is rebuilt with it."
        );
    }
}
