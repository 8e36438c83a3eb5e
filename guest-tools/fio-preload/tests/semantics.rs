//! File semantics through the preload, checked by a child process (this test
//! executable re-run with LD_PRELOAD): offsets, dup, O_APPEND, short reads and
//! writes at the slot end, ftruncate, fsync, running out of slots, concurrent
//! writers on one descriptor, and pass-through of unmatched files.

mod common;

use std::ffi::CString;
use std::process::Command;

use common::{backing, lib_path, scratch};

const SLOT: usize = 64 * 1024;
const OFFSET: usize = 128 * 1024;

fn c(path: &str) -> CString {
    CString::new(path).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn open(path: &str, flags: i32) -> i32 {
    // SAFETY: the path is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(c(path).as_ptr(), flags, 0o644) };
    assert!(fd >= 0, "open {path}: errno {}", errno());
    fd
}

fn size_of(fd: i32) -> i64 {
    // SAFETY: all-zero bytes are a valid `struct stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `struct stat` into the local.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFREG);
    st.st_size
}

#[test]
#[ignore = "helper: run in a child process with LD_PRELOAD by file_semantics_through_the_preload"]
fn child_semantics() {
    let dir = std::env::var("SEMANTICS_DIR").expect("run by file_semantics_through_the_preload");
    let a = format!("{dir}/a.cxl");
    // SAFETY: plain libc calls on buffers owned by this function.
    unsafe {
        let fd = open(&a, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC);
        assert_eq!(size_of(fd), 0, "O_TRUNC empties the file");
        assert_eq!(libc::write(fd, b"hello".as_ptr().cast(), 5), 5);
        assert_eq!(libc::write(fd, b" world".as_ptr().cast(), 6), 6);
        assert_eq!(size_of(fd), 11);
        assert_eq!(libc::lseek(fd, 0, libc::SEEK_CUR), 11);
        let mut buf = [0u8; 64];
        assert_eq!(
            libc::pread(fd, buf.as_mut_ptr().cast(), 64, 0),
            11,
            "short read at the logical end"
        );
        assert_eq!(&buf[..11], b"hello world");
        assert_eq!(libc::lseek(fd, 0, libc::SEEK_SET), 0);
        assert_eq!(libc::read(fd, buf.as_mut_ptr().cast(), 5), 5);
        // dup shares the offset.
        let fd_dup = libc::dup(fd);
        assert_eq!(libc::read(fd_dup, buf.as_mut_ptr().cast(), 3), 3);
        assert_eq!(&buf[..3], b" wo");
        assert_eq!(libc::lseek(fd, 0, libc::SEEK_CUR), 8);
        assert_eq!(libc::close(fd_dup), 0);
        assert_eq!(libc::read(fd, buf.as_mut_ptr().cast(), 64), 3, "short read");
        assert_eq!(
            libc::read(fd, buf.as_mut_ptr().cast(), 64),
            0,
            "end of file"
        );

        // O_APPEND on a second descriptor writes at the end.
        let fa = open(&a, libc::O_WRONLY | libc::O_APPEND);
        assert_eq!(libc::write(fa, b"!".as_ptr().cast(), 1), 1);
        assert_eq!(size_of(fd), 12);
        assert_eq!(libc::close(fa), 0);

        // Slot end: short write, then EFBIG; reads short at the end.
        let end = SLOT as i64;
        assert_eq!(
            libc::pwrite(fd, [7u8; 100].as_ptr().cast(), 100, end - 10),
            10
        );
        assert_eq!(size_of(fd), end);
        assert_eq!(libc::pread(fd, buf.as_mut_ptr().cast(), 64, end - 10), 10);
        assert_eq!(libc::pwrite(fd, buf.as_ptr().cast(), 1, end), -1);
        assert_eq!(errno(), libc::EFBIG);
        // The gap between 12 and end-10 reads as zeros.
        assert_eq!(libc::pread(fd, buf.as_mut_ptr().cast(), 64, 100), 64);
        assert!(buf.iter().all(|&b| b == 0), "gap is zero-filled");

        assert_eq!(libc::ftruncate(fd, 20), 0);
        assert_eq!(size_of(fd), 20);
        assert_eq!(libc::pread(fd, buf.as_mut_ptr().cast(), 64, 15), 5);
        assert_eq!(libc::fsync(fd), 0);
        assert_eq!(libc::fdatasync(fd), 0);
        assert_eq!(libc::lseek(fd, 0, libc::SEEK_END), 20);
        assert_eq!(libc::close(fd), 0);

        // A path not yet opened stats as a FIO_FILE_SIZE regular file.
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::stat(c(&format!("{dir}/b.cxl")).as_ptr(), &mut st), 0);
        assert_eq!(st.st_size, SLOT as i64);

        // Concurrent writers sharing one offset: records never overlap.
        let fb = open(&format!("{dir}/b.cxl"), libc::O_RDWR | libc::O_TRUNC);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                s.spawn(move || {
                    let rec = [b'A' + t; 16];
                    for _ in 0..1000 {
                        assert_eq!(libc::write(fb, rec.as_ptr().cast(), 16), 16);
                    }
                });
            }
        });
        assert_eq!(size_of(fb), 64_000);
        assert_eq!(libc::fsync(fb), 0);
        assert_eq!(libc::close(fb), 0);

        // Slots: c and d fit (4 slots), e does not.
        for name in ["c", "d"] {
            let f = open(&format!("{dir}/{name}.cxl"), libc::O_RDWR | libc::O_CREAT);
            assert_eq!(libc::close(f), 0);
        }
        let e = libc::open(
            c(&format!("{dir}/e.cxl")).as_ptr(),
            libc::O_RDWR | libc::O_CREAT,
            0o644,
        );
        assert_eq!(e, -1);
        assert_eq!(errno(), libc::ENOSPC);

        // An unmatched file goes to the disk.
        let p = open(
            &format!("{dir}/plain.txt"),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        );
        assert_eq!(libc::write(p, b"plain".as_ptr().cast(), 5), 5);
        assert_eq!(libc::close(p), 0);
    }
}

#[test]
fn file_semantics_through_the_preload() {
    let dev = backing((OFFSET + 4 * SLOT) as u64);
    let dir = scratch();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_semantics",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SEMANTICS_DIR", dir.path())
        .env("LD_PRELOAD", lib_path())
        .env("FIO_INTERCEPT_ENABLE", "1")
        .env("FIO_MEM_DEVICE", dev.path())
        .env("FIO_MEM_OFFSET", format!("{OFFSET}"))
        .env("FIO_MEM_SIZE", "256K")
        .env("FIO_FILE_SIZE", "64K")
        .env("FIO_INTERCEPT_PATTERN", "*.cxl")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran its checks\n{stdout}"
    );
    assert!(
        stderr.contains("All 4 slots of the window are taken"),
        "{stderr}"
    );

    let bytes = std::fs::read(dev.path()).unwrap();
    assert!(
        bytes[..OFFSET].iter().all(|&b| b == 0),
        "nothing before the window"
    );
    assert_eq!(
        &bytes[OFFSET..OFFSET + 12],
        b"hello world!",
        "slot 0 holds a.cxl"
    );
    let b = &bytes[OFFSET + SLOT..OFFSET + SLOT + 64_000];
    let mut per_thread = [0usize; 4];
    for rec in b.chunks(16) {
        assert!(
            rec.iter().all(|&x| x == rec[0]),
            "a record was torn: {rec:?}"
        );
        per_thread[(rec[0] - b'A') as usize] += 1;
    }
    assert_eq!(per_thread, [1000; 4], "slot 1 holds every record of b.cxl");
    assert_eq!(
        std::fs::read(dir.path().join("plain.txt")).unwrap(),
        b"plain"
    );
    for name in ["a", "b", "c", "d", "e"] {
        assert!(
            !dir.path().join(format!("{name}.cxl")).exists(),
            "{name}.cxl reached the disk"
        );
    }
}
