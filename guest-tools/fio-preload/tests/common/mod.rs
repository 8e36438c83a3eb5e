//! Shared helpers: the built library, a backing file in /dev/shm, and fio.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// `libfio_intercept.so` for this test run. Integration tests live in
/// `<target>/<profile>/deps/` and the cdylib belongs in `<target>/<profile>/`,
/// whatever CARGO_TARGET_DIR is. `cargo test` does not build a cdylib-only
/// library for integration tests, so it is built here (once per test binary)
/// with the cargo that runs the tests, into the same target dir and profile.
pub fn lib_path() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "fio-preload", "--lib"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd
            .status()
            .expect("run cargo build for libfio_intercept.so");
        assert!(
            status.success(),
            "cargo build -p fio-preload failed: {status}"
        );
        let lib = profile_dir.join("libfio_intercept.so");
        assert!(
            lib.exists(),
            "{} is missing after cargo build",
            lib.display()
        );
        lib
    })
    .clone()
}

/// Fails (never skips) when fio is not installed.
pub fn require_fio() {
    let ok = Command::new("fio")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "fio is not installed: run ci/install-deps (it installs Debian's fio)"
    );
}

/// A zero-filled backing file in /dev/shm.
pub fn backing(size: u64) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new()
        .prefix("fio-preload-")
        .tempfile_in("/dev/shm")
        .expect("create a file in /dev/shm");
    f.as_file().set_len(size).expect("size the backing file");
    f
}

/// A scratch directory for the paths fio opens.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fio-preload-")
        .tempdir()
        .expect("scratch dir")
}

/// The library's exit report as (call, count) pairs.
pub fn counters(stderr: &str) -> Vec<(String, u64)> {
    let line = stderr
        .lines()
        .find(|l| l.contains("intercepted calls in pid"))
        .unwrap_or_else(|| panic!("no FIO_DEBUG counters:\n{stderr}"));
    line.split_once(" children:")
        .map(|(_, c)| c)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("count")))
        .collect()
}

/// The calls of `calls` the library counted, summed.
pub fn count(stderr: &str, calls: &[&str]) -> u64 {
    counters(stderr)
        .iter()
        .filter(|(k, _)| calls.contains(&k.as_str()))
        .map(|(_, n)| n)
        .sum()
}
