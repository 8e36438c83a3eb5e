//! dax-tester against files in /dev/shm: every mode passes, the JSON has the
//! documented shape, and bad devices and ranges give clear errors.

use std::process::{Command, Output};

use serde_json::Value;

fn backing(size: u64) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new()
        .prefix("dax-tester-")
        .tempfile_in("/dev/shm")
        .expect("create a file in /dev/shm");
    f.as_file().set_len(size).expect("size the backing file");
    f
}

fn dax_tester(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dax-tester"))
        .args(args)
        .output()
        .expect("run dax-tester")
}

/// Short settings so the whole suite runs in a few seconds.
const QUICK: [&str; 10] = [
    "--duration-ms",
    "50",
    "--threads",
    "2",
    "--latency-samples",
    "500",
    "--atomic-ops",
    "5000",
    "--wakeups",
    "50",
];

fn run_json(path: &str, offset: &str, size: &str, mode: &str) -> Value {
    let mut args = vec![path, offset, size, mode, "--json"];
    args.extend(QUICK);
    let out = dax_tester(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dax-tester {mode} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("dax-tester --json prints JSON")
}

#[test]
fn all_modes_pass_on_a_shm_file_with_documented_json() {
    let f = backing(80 << 20);
    let path = f.path().to_str().unwrap();
    // Offset and size in the suffix and hex forms.
    let r = run_json(path, "1M", "0x4100000", "all");
    assert_eq!(r["tool"], "dax-tester");
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["passed"], true);
    assert_eq!(r["device"]["kind"], "file");
    assert_eq!(r["device"]["offset"], 1 << 20);
    assert_eq!(r["device"]["size"], 0x410_0000);
    // tmpfs cannot do MAP_SYNC: the fallback must be reported.
    assert_eq!(r["device"]["map"]["map_sync"], false);
    assert!(r["device"]["map"]["fallback_reason"]
        .as_str()
        .unwrap()
        .contains("MAP_SYNC"));

    let modes = &r["modes"];
    for m in [
        "byte",
        "atomic",
        "mwait",
        "latency",
        "throughput",
        "persist",
    ] {
        assert_eq!(modes[m]["passed"], true, "mode {m}: {}", modes[m]);
    }
    let byte = modes["byte"]["results"].as_array().unwrap();
    let sizes: Vec<u64> = byte.iter().map(|s| s["size"].as_u64().unwrap()).collect();
    for want in [1, 2, 3, 7, 64, 128, 256, 384, 511, 4096, 64 << 20] {
        assert!(sizes.contains(&want), "byte size {want} missing");
    }
    assert!(byte.iter().all(|s| s["status"] == "PASS"), "{byte:?}");
    assert!(
        byte.iter().any(|s| s["offset"].as_u64().unwrap() % 2 == 1),
        "offsets are unaligned"
    );

    let atomic = modes["atomic"]["results"].as_array().unwrap();
    let bits: Vec<u64> = atomic.iter().map(|w| w["bits"].as_u64().unwrap()).collect();
    assert_eq!(bits, [8, 16, 32, 64]);
    assert_eq!(atomic[3]["fetch_add_found"], 2 * 5000);

    let mwait = &modes["mwait"];
    assert_eq!(mwait["observed"], 50);
    let mech = mwait["mechanism"].as_str().unwrap();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = |f: &str| cpuinfo.split_whitespace().any(|w| w == f);
    let expected = if flags("waitpkg") {
        "umonitor_umwait"
    } else if flags("mwaitx") {
        "monitorx_mwaitx"
    } else {
        "poll_pause"
    };
    assert_eq!(
        mech, expected,
        "mechanism must follow CPUID: {}",
        mwait["reason"]
    );
    assert!(!mwait["reason"].as_str().unwrap().is_empty());
    assert!(
        mwait["wake_latency"]["p99_ns"].as_f64().unwrap()
            >= mwait["wake_latency"]["p50_ns"].as_f64().unwrap()
    );

    let lat = modes["latency"]["results"].as_array().unwrap();
    assert_eq!(lat.len(), 6, "64 B, 256 B, 4 KiB x read, write");
    for l in lat {
        let (p50, p90, p99, max) = (
            l["p50_ns"].as_f64().unwrap(),
            l["p90_ns"].as_f64().unwrap(),
            l["p99_ns"].as_f64().unwrap(),
            l["max_ns"].as_f64().unwrap(),
        );
        assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{l}");
        assert_eq!(l["samples"], 500);
    }
    assert!(["rdtscp", "clock_gettime"].contains(&r["clock"]["source"].as_str().unwrap()));

    let tp = modes["throughput"]["results"].as_array().unwrap();
    assert!(tp
        .iter()
        .any(|t| t["block_size"] == 4096 && t["op"] == "write"));
    assert!(tp
        .iter()
        .all(|t| t["ops_per_sec"].as_f64().unwrap() > 0.0 && t["threads"] == 2));

    let persist = &modes["persist"];
    assert_eq!(persist["verified"], true);
    let insn = persist["instruction"].as_str().unwrap();
    let expected_insn = if flags("clwb") {
        "clwb"
    } else if flags("clflushopt") {
        "clflushopt"
    } else {
        "clflush"
    };
    assert_eq!(insn, expected_insn);
}

#[test]
fn each_mode_runs_alone_and_human_output_says_pass() {
    let f = backing(4 << 20);
    let path = f.path().to_str().unwrap();
    for mode in [
        "byte",
        "atomic",
        "mwait",
        "latency",
        "throughput",
        "persist",
    ] {
        let r = run_json(path, "0", "4M", mode);
        let modes = r["modes"].as_object().unwrap();
        assert_eq!(modes.keys().collect::<Vec<_>>(), [mode], "only {mode} runs");
        assert_eq!(r["passed"], true);
    }
    // Small range: big byte sizes are skipped, not failed.
    let r = run_json(path, "0", "4M", "byte");
    let byte = r["modes"]["byte"]["results"].as_array().unwrap();
    assert!(byte
        .iter()
        .any(|s| s["size"] == 64 << 20 && s["status"] == "SKIP"));

    let mut args = vec![path, "0", "4M", "byte"];
    args.extend(QUICK);
    let out = dax_tester(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("511 B at +"), "{text}");
    assert!(text.trim_end().ends_with("RESULT: PASS"), "{text}");
}

fn error_of(args: &[&str]) -> String {
    let out = dax_tester(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected a usage error for {args:?}"
    );
    assert!(out.stdout.is_empty());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn clear_errors_for_missing_device_range_past_end_and_unmappable() {
    let err = error_of(&["/dev/shm/dax-tester-does-not-exist", "0", "1M", "all"]);
    assert!(err.contains("does not exist"), "{err}");

    let f = backing(2 << 20);
    let path = f.path().to_str().unwrap();
    let err = error_of(&[path, "1M", "2M", "byte"]);
    assert!(
        err.contains("runs past the end") && err.contains("0x200000 bytes"),
        "{err}"
    );

    // A character device that is not a device-dax.
    let err = error_of(&["/dev/null", "0", "4K", "byte"]);
    assert!(
        err.contains("neither a regular file, a device-dax character device")
            && err.contains("nor /dev/mem"),
        "{err}"
    );

    // A regular file that cannot be mapped (sysfs attribute).
    let attr = "/sys/kernel/mm/transparent_hugepage/enabled";
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(attr)
        .is_ok()
    {
        let err = error_of(&[attr, "0", "4K", "byte"]);
        assert!(err.contains("Cannot map"), "{err}");
    }

    let out = dax_tester(&[path, "12Q", "1M", "byte"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a size"));
}
