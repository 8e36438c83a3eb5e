//! Debian's fio through the preload: randwrite then randread with
//! verify=crc32c, psync, --direct=1, at every block size the lab suite uses
//! and at odd sizes below 512 B; data lands at the slot's offset of the
//! backing file (fio's own files and the default set: tests/defaults.rs).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{backing, count, lib_path, require_fio, scratch};

const MIB: u64 = 1 << 20;
/// Slot layout used by these tests: window at 4 MiB, 2 MiB per file.
const MEM_OFFSET: u64 = 4 * MIB;
const FILE_SIZE: u64 = 2 * MIB;

fn fio(device: &Path, args: &[String]) -> Output {
    Command::new("fio")
        .args(args)
        .env("LD_PRELOAD", lib_path())
        .env("FIO_INTERCEPT_ENABLE", "1")
        .env("FIO_MEM_DEVICE", device)
        .env("FIO_MEM_OFFSET", "4M")
        .env("FIO_FILE_SIZE", "0x200000")
        .env("FIO_INTERCEPT_PATTERN", "*.cxl")
        .env("FIO_DEBUG", "1")
        .output()
        .expect("run fio")
}

fn job(file: &Path, rw: &str, bs: u64, size: &str, engine: &str, verify: bool) -> Vec<String> {
    let mut a = vec![
        "--name=job".to_string(),
        format!("--filename={}", file.display()),
        format!("--size={size}"),
        format!("--bs={bs}"),
        format!("--rw={rw}"),
        format!("--ioengine={engine}"),
        "--direct=1".to_string(),
        "--randrepeat=1".to_string(),
    ];
    if verify {
        a.push("--verify=crc32c".to_string());
        // No local-*-verify.state files in the working directory.
        a.push("--verify_state_save=0".to_string());
    }
    a
}

/// Asserts fio succeeded with no error and that the preload served it.
fn check(out: &Output, what: &str, calls: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: fio failed ({})\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("err= 0"),
        "{what}: fio reported an error\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("verify:") && !stderr.contains("verify:"),
        "{what}: verify failed\n{stdout}\n{stderr}"
    );
    for c in calls {
        assert!(
            count(&stderr, &[c]) > 0,
            "{what}: {c} was not intercepted\n{stderr}"
        );
    }
}

#[test]
fn fio_randwrite_then_randread_verify_crc32c_psync_all_block_sizes() {
    require_fio();
    let dev = backing(16 * MIB);
    let dir = scratch();
    let file = dir.path().join("data.cxl");
    for bs in [64u64, 128, 256, 384, 512, 4096] {
        let size = format!("{}", bs * 2048); // 2048 blocks: 128 KiB .. 8 MiB capped below
        let size = if bs * 2048 > FILE_SIZE {
            format!("{FILE_SIZE}")
        } else {
            size
        };
        let w = fio(
            dev.path(),
            &job(&file, "randwrite", bs, &size, "psync", true),
        );
        check(
            &w,
            &format!("randwrite bs={bs}"),
            &["open", "pwrite", "pread"],
        );
        let r = fio(
            dev.path(),
            &job(&file, "randread", bs, &size, "psync", true),
        );
        check(&r, &format!("randread bs={bs}"), &["open", "pread"]);
        assert!(
            !file.exists(),
            "an intercepted file must not be created on disk"
        );
    }
    // The data is in the backing file, in slot 0 at FIO_MEM_OFFSET, and
    // nothing before the window was written.
    let bytes = std::fs::read(dev.path()).unwrap();
    assert!(
        bytes[..MEM_OFFSET as usize].iter().all(|&b| b == 0),
        "bytes before the window changed"
    );
    let slot = &bytes[MEM_OFFSET as usize..(MEM_OFFSET + FILE_SIZE) as usize];
    assert!(
        slot.iter().filter(|&&b| b != 0).count() > slot.len() / 2,
        "the slot holds fio's data"
    );
    // fio's crc32c verify header starts with the magic 0xacca (little endian).
    assert!(
        slot.chunks(4096).any(|c| c[..2] == [0xca, 0xac]),
        "verify headers are in the slot"
    );
    assert!(
        bytes[(MEM_OFFSET + FILE_SIZE) as usize..]
            .iter()
            .all(|&b| b == 0),
        "bytes after the slot changed"
    );
}

#[test]
fn corruption_in_the_backing_file_is_caught_by_fio_verify() {
    require_fio();
    let dev = backing(8 * MIB);
    let dir = scratch();
    let file = dir.path().join("c.cxl");
    let w = fio(
        dev.path(),
        &job(&file, "randwrite", 512, "256k", "psync", true),
    );
    check(&w, "randwrite", &["pwrite"]);
    // Flip bytes of block 3 directly in the backing file.
    let mut bytes = std::fs::read(dev.path()).unwrap();
    let at = (MEM_OFFSET + 3 * 512 + 100) as usize;
    for b in &mut bytes[at..at + 8] {
        *b = !*b;
    }
    std::fs::write(dev.path(), &bytes).unwrap();
    let r = fio(
        dev.path(),
        &job(&file, "randread", 512, "256k", "psync", true),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    // fio reports a verify failure as EILSEQ (err=84).
    assert!(
        !r.status.success() && text.contains("err=84"),
        "fio must read the corrupted slot: {text}"
    );
}

#[test]
fn fio_sync_engine_and_sub_512_block_sizes() {
    require_fio();
    let dev = backing(16 * MIB);
    let dir = scratch();
    for (i, bs) in [1u64, 7, 100, 511].into_iter().enumerate() {
        let file = dir.path().join(format!("odd{i}.cxl"));
        let size = format!("{}", bs * 512);
        // sync engine: lseek + read/write on the descriptor's offset.
        let w = fio(dev.path(), &job(&file, "write", bs, &size, "sync", false));
        check(&w, &format!("sync write bs={bs}"), &["write"]);
        let r = fio(
            dev.path(),
            &job(&file, "randread", bs, &size, "sync", false),
        );
        check(&r, &format!("sync randread bs={bs}"), &["read", "lseek"]);
    }
    // psync with verify at an odd size too.
    let file = dir.path().join("odd.cxl");
    let w = fio(
        dev.path(),
        &job(&file, "randwrite", 200, "100k", "psync", true),
    );
    check(&w, "psync randwrite bs=200 verify", &["pwrite", "pread"]);
}

#[test]
fn missing_device_gives_a_message_and_an_error_not_a_disk_file() {
    require_fio();
    let dir = scratch();
    let file = dir.path().join("m.cxl");
    let out = fio(
        Path::new("/dev/shm/fio-preload-no-such-device"),
        &job(&file, "write", 4096, "64k", "psync", false),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("fio-intercept:") && stderr.contains("Cannot open FIO_MEM_DEVICE"),
        "no clear message: {stderr}"
    );
    assert!(!stdout.contains("err= 0"), "fio must fail: {stdout}");
    assert!(!file.exists(), "nothing may fall through to the disk");
}
