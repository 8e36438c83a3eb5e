//! The command lines of the original tool's documentation, as written (no
//! `FIO_INTERCEPT_PATTERN`, fio's default `jobname.N.M` file names): fio's
//! data files are served from the device, fio's own files reach the disk,
//! `FIO_INTERCEPT_PATTERN` adds to the default set, and a library that cannot
//! set up makes fio fail with the reason instead of writing to the disk.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{backing, count, lib_path, require_fio, scratch};

const MIB: u64 = 1 << 20;

/// fio run in `dir` with the documented environment (device, offset, sizes),
/// `FIO_DEBUG` at `debug`, no `FIO_INTERCEPT_PATTERN` unless `extra` sets it.
fn fio_in(dir: &Path, device: &Path, debug: &str, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new("fio");
    cmd.args(args)
        .current_dir(dir)
        .env_remove("FIO_INTERCEPT_PATTERN")
        .env("FIO_INTERCEPT_ENABLE", "1")
        .env("FIO_MEM_DEVICE", device)
        .env("FIO_MEM_OFFSET", "4M")
        .env("FIO_MEM_SIZE", "8M")
        .env("FIO_DEBUG", debug)
        .env("LD_PRELOAD", lib_path());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().expect("run fio")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts fio ran without error and wrote `ios` blocks through the library.
fn served(out: &Output, what: &str, ios: u64) {
    let (stdout, stderr) = text(out);
    assert!(
        out.status.success() && stdout.contains("err= 0"),
        "{what}: fio failed ({})\n{stdout}\n{stderr}",
        out.status
    );
    assert_eq!(
        count(&stderr, &["write", "pwrite", "writev", "pwritev"]),
        ios,
        "{what}: every write is served by the library\n{stderr}"
    );
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn documented_randwrite_line_is_intercepted_without_a_pattern() {
    require_fio();
    let dev = backing(16 * MIB);
    let dir = scratch();
    // The documented line, with a size that fits the test device.
    let out = fio_in(
        dir.path(),
        dev.path(),
        "1",
        &[("FIO_FILE_SIZE", "4M")],
        &[
            "--name=test",
            "--rw=randwrite",
            "--bs=4k",
            "--size=2M",
            "--direct=1",
            "--ioengine=psync",
            "--runtime=10",
        ],
    );
    served(&out, "randwrite", 512);
    let (_, stderr) = text(&out);
    let data_file = dir.path().join("test.0.0");
    assert!(
        stderr.contains(&format!("open {} -> fd", data_file.display())),
        "fio's test.0.0 gets a slot:\n{stderr}"
    );
    assert_eq!(
        files_in(dir.path()),
        Vec::<String>::new(),
        "nothing on disk"
    );
    let bytes = std::fs::read(dev.path()).unwrap();
    assert!(
        bytes[..(4 * MIB) as usize].iter().all(|&b| b == 0),
        "nothing before FIO_MEM_OFFSET is written"
    );
    assert!(
        bytes[(4 * MIB) as usize..(6 * MIB) as usize]
            .iter()
            .any(|&b| b != 0),
        "fio's data is in slot 0"
    );
}

#[test]
fn documented_sub_512_loop_is_intercepted_with_direct_io() {
    require_fio();
    let dev = backing(16 * MIB);
    let dir = scratch();
    // No FIO_FILE_SIZE, as documented: one file gets the whole window.
    for bs in [64u64, 128, 256, 384] {
        let out = fio_in(
            dir.path(),
            dev.path(),
            "1",
            &[],
            &[
                "--name=byte_test",
                "--rw=randwrite",
                &format!("--bs={bs}"),
                &format!("--size={}", bs * 256),
                "--direct=1",
            ],
        );
        served(&out, &format!("bs={bs}"), 256);
        assert_eq!(
            files_in(dir.path()),
            Vec::<String>::new(),
            "bs={bs}: nothing on disk"
        );
    }
}

#[test]
fn pattern_adds_to_the_default_set() {
    require_fio();
    let dev = backing(16 * MIB);
    let dir = scratch();
    let job = |format: &str| {
        [
            "--name=fmt".to_string(),
            format!("--filename_format={format}"),
            "--rw=write".to_string(),
            "--bs=4k".to_string(),
            "--size=64k".to_string(),
        ]
    };
    // fio's filename_format is not learnt: only the pattern claims its files.
    let dat = job("fmt.$jobnum.dat");
    let dat: Vec<&str> = dat.iter().map(String::as_str).collect();
    let out = fio_in(
        dir.path(),
        dev.path(),
        "1",
        &[("FIO_INTERCEPT_PATTERN", "*.dat")],
        &dat,
    );
    served(&out, "*.dat", 16);
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
    let cxl = job("fmt.$jobnum.cxl");
    let cxl: Vec<&str> = cxl.iter().map(String::as_str).collect();
    let out = fio_in(
        dir.path(),
        dev.path(),
        "1",
        &[("FIO_INTERCEPT_PATTERN", "*.cxl")],
        &cxl,
    );
    served(&out, "*.cxl", 16);
    // ... and the default set is still claimed with the pattern set.
    let out = fio_in(
        dir.path(),
        dev.path(),
        "1",
        &[("FIO_INTERCEPT_PATTERN", "*.cxl")],
        &[
            "--name=test",
            "--rw=randwrite",
            "--bs=4k",
            "--size=64k",
            "--direct=1",
        ],
    );
    served(&out, "test.0.0 with *.cxl", 16);
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
    // Without the pattern, the .dat file is fio's own business.
    let out = fio_in(dir.path(), dev.path(), "1", &[], &dat);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(count(&stderr, &["write", "pwrite"]), 0, "{stderr}");
    assert_eq!(files_in(dir.path()), vec!["fmt.0.dat".to_string()]);
}

/// What is wrong, the environment that makes it so, and what the message says.
type SetupCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[test]
fn a_library_that_cannot_set_up_fails_fio_with_the_reason() {
    require_fio();
    let dev = backing(16 * MIB);
    let dir = scratch();
    let line = [
        "--name=test",
        "--rw=randwrite",
        "--bs=4k",
        "--size=1M",
        "--direct=1",
        "--ioengine=psync",
    ];
    let cases: [SetupCase; 3] = [
        (
            "missing device",
            &[("FIO_MEM_DEVICE", "/dev/shm/fio-preload-no-such-device")],
            &["Cannot open FIO_MEM_DEVICE", "Set FIO_MEM_DEVICE to"],
        ),
        (
            "offset past the end",
            &[("FIO_MEM_OFFSET", "64M")],
            &[
                "FIO_MEM_OFFSET 0x4000000 is past the end",
                "Set FIO_MEM_OFFSET below",
            ],
        ),
        (
            "window past the end",
            &[("FIO_MEM_SIZE", "16M")],
            &[
                "runs past the end of FIO_MEM_DEVICE",
                "Lower FIO_MEM_OFFSET or FIO_MEM_SIZE",
            ],
        ),
    ];
    for (what, env, reason) in cases {
        let out = fio_in(dir.path(), dev.path(), "0", env, &line);
        let (stdout, stderr) = text(&out);
        assert!(
            !out.status.success(),
            "{what}: fio must fail\n{stdout}\n{stderr}"
        );
        let data_file = dir.path().join("test.0.0");
        assert!(
            stderr.contains(&format!("{} refused", data_file.display())),
            "{what}: the refusal names fio's file\n{stderr}"
        );
        for r in reason {
            assert!(stderr.contains(r), "{what}: no '{r}' in\n{stderr}");
        }
        assert!(
            format!("{stdout}{stderr}").contains("err=19"),
            "{what}: fio reports ENODEV\n{stdout}\n{stderr}"
        );
        assert_eq!(
            files_in(dir.path()),
            Vec::<String>::new(),
            "{what}: nothing on disk"
        );
    }
    assert!(
        std::fs::read(dev.path()).unwrap().iter().all(|&b| b == 0),
        "the device is untouched"
    );
}

#[test]
fn fio_own_files_are_not_intercepted() {
    require_fio();
    let dev = backing(16 * MIB);
    let dir = scratch();
    // verify=crc32c saves local-test-0-verify.state at the end;
    // write_bw_log writes test_bw.1.log; fio polls /tmp/fio-dump-status.
    let out = fio_in(
        dir.path(),
        dev.path(),
        "2",
        &[],
        &[
            "--name=test",
            "--rw=randwrite",
            "--bs=4k",
            "--size=64k",
            "--direct=1",
            "--ioengine=psync",
            "--verify=crc32c",
            "--write_bw_log=test",
        ],
    );
    served(&out, "randwrite with verify", 16);
    let (_, stderr) = text(&out);
    for own in [
        "verify.state",
        "fio-dump-status",
        "_bw.1.log",
        "/proc/",
        "/sys/",
    ] {
        assert!(
            !stderr
                .lines()
                .any(|l| l.contains(own) && (l.contains(" intercepted") || l.contains(" -> fd"))),
            "{own} was intercepted:\n{stderr}"
        );
    }
    assert_eq!(
        files_in(dir.path()),
        vec![
            "local-test-0-verify.state".to_string(),
            "test_bw.1.log".to_string()
        ],
        "fio's own files are on disk, its data file is not"
    );
}

#[test]
fn other_programs_learn_no_fio_files() {
    let dev = backing(16 * MIB);
    let dir = scratch();
    // A shell that inherits the documented `export LD_PRELOAD=...` keeps
    // its files, whatever their names.
    let out = Command::new("sh")
        .args(["-c", "printf data > test.0.0"])
        .current_dir(dir.path())
        .env_remove("FIO_INTERCEPT_PATTERN")
        .env("FIO_INTERCEPT_ENABLE", "1")
        .env("FIO_MEM_DEVICE", dev.path())
        .env("LD_PRELOAD", lib_path())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dir.path().join("test.0.0")).unwrap(), b"data");
}

#[test]
fn job_file_sections_directory_and_filename_are_learnt() {
    require_fio();
    let dev = backing(16 * MIB);
    let dir = scratch();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("jobs.fio"),
        "; two jobs\n[global]\ndirectory=sub\nrw=write\nbs=4k\nsize=64k\n\n[w]\n\n[named]\nfilename=data.bin\n",
    )
    .unwrap();
    let out = fio_in(
        dir.path(),
        dev.path(),
        "1",
        &[("FIO_FILE_SIZE", "2M")],
        &["jobs.fio"],
    );
    served(&out, "job file", 32);
    let (_, stderr) = text(&out);
    let sub = dir.path().join("sub");
    for file in ["w.0.0", "data.bin"] {
        assert!(
            stderr.contains(&format!("open {} -> fd", sub.join(file).display())),
            "{file} gets a slot:\n{stderr}"
        );
    }
    assert_eq!(files_in(&sub), Vec::<String>::new(), "nothing on disk");
}
