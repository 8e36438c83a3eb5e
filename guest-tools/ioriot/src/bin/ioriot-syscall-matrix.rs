//! `ioriot-syscall-matrix DIR [--iterations N] [--json]`, or as I/O Riot's
//! documented helper `ioriot-syscall-matrix PIDFILE GOFILE BASEDIR USER`
//! (it writes its pid to PIDFILE, waits until GOFILE exists, works in
//! BASEDIR and gives what it made to USER): performs every
//! system call ioriot traces, mostly through directory descriptors, in
//! `DIR/m<i>/`, with raw syscall(2) so each call is exactly the traced
//! number (glibc would turn open into openat and stat into newfstatat or
//! statx). A second thread and a forked child add their own operations;
//! the child writes through a descriptor it inherited.
//! Each iteration leaves `m<i>/sub/a3.dat` (12000 bytes), `m<i>/t.dat` and
//! `m<i>/child.dat`; everything else it creates is renamed or removed.
//! Then, in DIR itself, the entries the documented procedure's checks look
//! for: `open-renamed.txt`, `dirA/openat-renamed.txt`, `creat.txt`,
//! `head-renamed.bin`, `link-open.txt` (opened through the symlink `link`)
//! and `emptydir`.

use std::ffi::CString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use libc::{c_long, syscall};
use serde::Serialize;

/// Performs every system call ioriot traces, in DIR.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// DIR to work in (created if missing), or PIDFILE GOFILE BASEDIR USER.
    #[arg(required = true, num_args = 1..=4, value_name = "DIR | PIDFILE GOFILE BASEDIR USER")]
    args: Vec<PathBuf>,
    /// How many times to run the whole matrix (each in its own m<i>/).
    #[arg(long, default_value_t = 1)]
    iterations: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Call {
    op: &'static str,
    ret: i64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    dir: PathBuf,
    iterations: u32,
    calls: Vec<Call>,
    /// Calls that failed although they should have succeeded.
    failed: Vec<String>,
    seconds: f64,
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in paths")
}

struct M {
    r: Report,
}

impl M {
    /// Records a call that must succeed.
    fn ok(&mut self, op: &'static str, ret: c_long) -> i64 {
        let ret = if ret < 0 {
            -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            ret
        };
        if ret < 0 {
            self.r.failed.push(format!(
                "{op}: {}",
                std::io::Error::from_raw_os_error(-ret as i32)
            ));
        }
        self.r.calls.push(Call { op, ret });
        ret
    }

    /// Records a call that must fail with `errno`.
    fn fails(&mut self, op: &'static str, ret: c_long, errno: i32) {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if ret >= 0 || e != errno {
            self.r.failed.push(format!(
                "{op}: expected errno {errno}, got ret {ret} errno {e}"
            ));
        }
        self.r.calls.push(Call {
            op,
            ret: -i64::from(e),
        });
    }
}

/// One pass of the matrix in `base` (an existing directory).
fn matrix(m: &mut M, base: &str) {
    let at = libc::AT_FDCWD as c_long;
    let mdir = c(base);
    let cbuf = |s: &CString| s.as_ptr() as c_long;
    // SAFETY: every pointer a call gets is valid for what it does with it:
    // strings are CStrings alive for the call (NUL-terminated, read only);
    // reads and writes stay inside `buf` (8192 bytes), `lbuf` (256) or the
    // child's `data`, all alive for the call, as do the iovecs' ranges; the
    // stat, statfs and statx buffers are live locals of the types the calls
    // write, plain integers, for which zeroed() is a valid value. The
    // descriptors are ones this function opened, each closed once; dup2 and
    // dup3 target 200 and 201, numbers nothing else in this program holds.
    // After fork the child makes only raw syscalls and _exit, which is what
    // a child of a multithreaded process may do.
    unsafe {
        m.ok("mkdir", syscall(libc::SYS_mkdir, cbuf(&mdir), 0o755));
        let dfd = m.ok(
            "open",
            syscall(
                libc::SYS_open,
                cbuf(&mdir),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            ),
        );
        let sub = c("sub");
        m.ok(
            "mkdirat",
            syscall(libc::SYS_mkdirat, dfd, cbuf(&sub), 0o755),
        );
        let sfd = m.ok(
            "openat",
            syscall(
                libc::SYS_openat,
                dfd,
                cbuf(&sub),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            ),
        );
        let a = c("a.dat");
        let fd = m.ok(
            "openat",
            syscall(
                libc::SYS_openat,
                sfd,
                cbuf(&a),
                libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC,
                0o644,
            ),
        );
        let mut buf = vec![0x61u8; 8192];
        let p = buf.as_mut_ptr() as c_long;
        m.ok("write", syscall(libc::SYS_write, fd, p, 4096));
        let iov = [
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: 1000,
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().add(1000).cast(),
                iov_len: 24,
            },
        ];
        m.ok(
            "writev",
            syscall(libc::SYS_writev, fd, iov.as_ptr() as c_long, 2),
        );
        m.ok("pwrite64", syscall(libc::SYS_pwrite64, fd, p, 512, 8192));
        m.ok("lseek", syscall(libc::SYS_lseek, fd, 0, libc::SEEK_SET));
        m.ok("read", syscall(libc::SYS_read, fd, p, 1024));
        m.ok(
            "readv",
            syscall(libc::SYS_readv, fd, iov.as_ptr() as c_long, 2),
        );
        m.ok("pread64", syscall(libc::SYS_pread64, fd, p, 512, 100));
        let mut st: libc::stat = std::mem::zeroed();
        let stp = &mut st as *mut libc::stat as c_long;
        m.ok("fstat", syscall(libc::SYS_fstat, fd, stp));
        let mut sfs: libc::statfs = std::mem::zeroed();
        let sfsp = &mut sfs as *mut libc::statfs as c_long;
        m.ok("fstatfs", syscall(libc::SYS_fstatfs, fd, sfsp));
        m.ok("fcntl", syscall(libc::SYS_fcntl, fd, libc::F_GETFL));
        m.ok(
            "fcntl",
            syscall(libc::SYS_fcntl, fd, libc::F_SETFD, libc::FD_CLOEXEC),
        );
        m.ok("readahead", syscall(libc::SYS_readahead, fd, 0, 4096));
        m.ok(
            "sync_file_range",
            syscall(
                libc::SYS_sync_file_range,
                fd,
                0,
                0,
                libc::SYNC_FILE_RANGE_WRITE,
            ),
        );
        m.ok("fsync", syscall(libc::SYS_fsync, fd));
        m.ok("fdatasync", syscall(libc::SYS_fdatasync, fd));
        m.ok("syncfs", syscall(libc::SYS_syncfs, fd));
        m.ok("fchmod", syscall(libc::SYS_fchmod, fd, 0o600));
        let (uid, gid) = (libc::getuid() as c_long, libc::getgid() as c_long);
        m.ok("fchown", syscall(libc::SYS_fchown, fd, uid, gid));
        m.ok("close", syscall(libc::SYS_close, fd));

        let bpath = c(&format!("{base}/sub/b.dat"));
        let fd = m.ok("creat", syscall(libc::SYS_creat, cbuf(&bpath), 0o644));
        m.ok("write", syscall(libc::SYS_write, fd, p, 100));
        m.ok("close", syscall(libc::SYS_close, fd));
        let b = c("b.dat");
        m.ok(
            "newfstatat",
            syscall(libc::SYS_newfstatat, sfd, cbuf(&b), stp, 0),
        );
        m.ok("stat", syscall(libc::SYS_stat, cbuf(&bpath), stp));
        m.ok("lstat", syscall(libc::SYS_lstat, cbuf(&bpath), stp));
        m.ok("statfs", syscall(libc::SYS_statfs, cbuf(&mdir), sfsp));
        m.ok("chmod", syscall(libc::SYS_chmod, cbuf(&bpath), 0o640));
        m.ok(
            "fchmodat",
            syscall(libc::SYS_fchmodat, sfd, cbuf(&b), 0o644),
        );
        m.ok("chown", syscall(libc::SYS_chown, cbuf(&bpath), uid, gid));
        m.ok(
            "fchownat",
            syscall(libc::SYS_fchownat, sfd, cbuf(&b), uid, gid, 0),
        );
        m.ok("lchown", syscall(libc::SYS_lchown, cbuf(&bpath), uid, gid));

        let link = c("link");
        m.ok(
            "symlinkat",
            syscall(libc::SYS_symlinkat, cbuf(&b), sfd, cbuf(&link)),
        );
        let mut lbuf = [0u8; 256];
        let lp = lbuf.as_mut_ptr() as c_long;
        m.ok(
            "readlinkat",
            syscall(libc::SYS_readlinkat, sfd, cbuf(&link), lp, 256),
        );
        let lpath = c(&format!("{base}/sub/link"));
        m.ok(
            "readlink",
            syscall(libc::SYS_readlink, cbuf(&lpath), lp, 256),
        );
        let l2 = c(&format!("{base}/sub/link2"));
        m.ok(
            "symlink",
            syscall(libc::SYS_symlink, cbuf(&c("a.dat")), cbuf(&l2)),
        );

        let cpath = c(&format!("{base}/sub/c.dat"));
        m.ok(
            "rename",
            syscall(libc::SYS_rename, cbuf(&bpath), cbuf(&cpath)),
        );
        let a2 = c("a2.dat");
        m.ok(
            "renameat",
            syscall(libc::SYS_renameat, sfd, cbuf(&a), dfd, cbuf(&a2)),
        );
        let a3 = c("a3.dat");
        m.ok(
            "renameat2",
            syscall(
                libc::SYS_renameat2,
                dfd,
                cbuf(&a2),
                sfd,
                cbuf(&a3),
                libc::RENAME_NOREPLACE,
            ),
        );
        loop {
            let n = m.ok("getdents64", syscall(libc::SYS_getdents64, sfd, p, 8192));
            if n <= 0 {
                break;
            }
        }
        // Descriptor copies, size changes, statx, and relative paths
        // after chdir/fchdir.
        let mut stx: libc::statx = std::mem::zeroed();
        let stxp = &mut stx as *mut libc::statx as c_long;
        let mask = libc::STATX_BASIC_STATS as c_long;
        m.ok(
            "statx",
            syscall(libc::SYS_statx, sfd, cbuf(&a3), 0, mask, stxp),
        );
        let fd = m.ok(
            "openat",
            syscall(libc::SYS_openat, sfd, cbuf(&a3), libc::O_RDWR, 0),
        );
        let d1 = m.ok("dup", syscall(libc::SYS_dup, fd));
        m.ok("write", syscall(libc::SYS_write, d1, p, 64));
        let d2 = m.ok("dup2", syscall(libc::SYS_dup2, fd, 200));
        let d3 = m.ok("dup3", syscall(libc::SYS_dup3, fd, 201, libc::O_CLOEXEC));
        m.ok("ftruncate", syscall(libc::SYS_ftruncate, d2, 16384));
        let r = syscall(libc::SYS_fallocate, d3, 0, 0, 20000);
        // Not every filesystem allocates (ramfs does not): both are fine.
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
            m.r.calls.push(Call {
                op: "fallocate",
                ret: -i64::from(libc::EOPNOTSUPP),
            });
        } else {
            m.ok("fallocate", r);
        }
        for f in [fd, d1, d2, d3] {
            m.ok("close", syscall(libc::SYS_close, f));
        }
        let a3path = c(&format!("{base}/sub/a3.dat"));
        m.ok(
            "truncate",
            syscall(libc::SYS_truncate, cbuf(&a3path), 12000),
        );
        m.ok("chdir", syscall(libc::SYS_chdir, cbuf(&mdir)));
        let rel = c("sub/a3.dat");
        m.ok(
            "newfstatat",
            syscall(libc::SYS_newfstatat, at, cbuf(&rel), stp, 0),
        );
        m.ok("fchdir", syscall(libc::SYS_fchdir, sfd));
        m.ok(
            "newfstatat",
            syscall(libc::SYS_newfstatat, at, cbuf(&a3), stp, 0),
        );
        m.ok("chdir", syscall(libc::SYS_chdir, cbuf(&c("/"))));
        m.ok("unlink", syscall(libc::SYS_unlink, cbuf(&lpath)));
        m.ok("unlink", syscall(libc::SYS_unlink, cbuf(&l2)));
        m.ok(
            "unlinkat",
            syscall(libc::SYS_unlinkat, sfd, cbuf(&c("c.dat")), 0),
        );
        let gone = c(&format!("{base}/gone"));
        m.ok("mkdir", syscall(libc::SYS_mkdir, cbuf(&gone), 0o755));
        m.ok("rmdir", syscall(libc::SYS_rmdir, cbuf(&gone)));
        let gone2 = c("gone2");
        m.ok(
            "mkdirat",
            syscall(libc::SYS_mkdirat, dfd, cbuf(&gone2), 0o755),
        );
        m.ok(
            "unlinkat",
            syscall(libc::SYS_unlinkat, dfd, cbuf(&gone2), libc::AT_REMOVEDIR),
        );
        m.ok("sync", syscall(libc::SYS_sync));
        let missing = c("missing.dat");
        let r = syscall(libc::SYS_openat, at, cbuf(&missing), libc::O_RDONLY, 0);
        m.fails("openat", r, libc::ENOENT);

        // A second thread: its own file through the shared directory descriptor.
        let t = std::thread::spawn(move || {
            let name = c("t.dat");
            let mut calls = Vec::new();
            let fd = syscall(
                libc::SYS_openat,
                dfd,
                name.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            );
            calls.push(("openat", fd));
            let data = [0x74u8; 300];
            calls.push((
                "write",
                syscall(libc::SYS_write, fd, data.as_ptr(), data.len()),
            ));
            calls.push(("close", syscall(libc::SYS_close, fd)));
            calls
        });
        for (op, r) in t.join().expect("matrix thread") {
            m.ok(op, r);
        }
        // A child process: it writes 120 bytes of child.dat through the
        // descriptor it inherited (the parent's, same offset) and closes its
        // copy, then appends 80 through its own, opened by the inherited
        // directory descriptor; the parent's copy stays open until the
        // parent closes it.
        let name = c("child.dat");
        let cfd = m.ok(
            "openat",
            syscall(
                libc::SYS_openat,
                dfd,
                name.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            ),
        );
        let pid = libc::fork();
        if pid == 0 {
            let data = [0x63u8; 120];
            let w = syscall(libc::SYS_write, cfd, data.as_ptr(), data.len());
            let cl = syscall(libc::SYS_close, cfd);
            let fd = syscall(
                libc::SYS_openat,
                dfd,
                name.as_ptr(),
                libc::O_WRONLY | libc::O_APPEND,
                0,
            );
            let w2 = syscall(libc::SYS_write, fd, data.as_ptr(), 80);
            let cl2 = syscall(libc::SYS_close, fd);
            let ok = w == 120 && cl == 0 && fd >= 0 && w2 == 80 && cl2 == 0;
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid as i32, &mut status, 0);
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            m.r.failed
                .push(format!("child {pid} failed (status {status})"));
        }
        m.r.calls.push(Call {
            op: "fork",
            ret: i64::from(pid),
        });
        m.ok("close", syscall(libc::SYS_close, cfd));
        m.ok("close", syscall(libc::SYS_close, sfd));
        m.ok("close", syscall(libc::SYS_close, dfd));
    }
}

/// The documented entries, in `base` (an existing directory).
fn documented(m: &mut M, base: &str) {
    let cbuf = |s: &CString| s.as_ptr() as c_long;
    let p = |name: &str| c(&format!("{base}/{name}"));
    let buf = [b'x'; 4096];
    let mut rbuf = [0u8; 4096];
    let mut lbuf = [0u8; 256];
    let (wr, rd) = (buf.as_ptr() as c_long, rbuf.as_mut_ptr() as c_long);
    let flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as c_long;
    // SAFETY: strings are CStrings alive for each call; reads and writes
    // stay inside `buf`, `rbuf` and `lbuf` (alive, of the lengths passed);
    // every descriptor is one this function opened and closes once.
    unsafe {
        let fd = m.ok(
            "open",
            syscall(libc::SYS_open, cbuf(&p("open.txt")), flags, 0o644),
        );
        m.ok("write", syscall(libc::SYS_write, fd, wr, 100));
        m.ok("close", syscall(libc::SYS_close, fd));
        m.ok(
            "rename",
            syscall(
                libc::SYS_rename,
                cbuf(&p("open.txt")),
                cbuf(&p("open-renamed.txt")),
            ),
        );
        m.ok("mkdir", syscall(libc::SYS_mkdir, cbuf(&p("dirA")), 0o755));
        let dfd = m.ok(
            "open",
            syscall(
                libc::SYS_open,
                cbuf(&p("dirA")),
                (libc::O_RDONLY | libc::O_DIRECTORY) as c_long,
                0,
            ),
        );
        let fd = m.ok(
            "openat",
            syscall(libc::SYS_openat, dfd, cbuf(&c("openat.txt")), flags, 0o644),
        );
        m.ok("write", syscall(libc::SYS_write, fd, wr, 200));
        m.ok("close", syscall(libc::SYS_close, fd));
        m.ok(
            "renameat",
            syscall(
                libc::SYS_renameat,
                dfd,
                cbuf(&c("openat.txt")),
                dfd,
                cbuf(&c("openat-renamed.txt")),
            ),
        );
        m.ok("close", syscall(libc::SYS_close, dfd));
        let fd = m.ok(
            "creat",
            syscall(libc::SYS_creat, cbuf(&p("creat.txt")), 0o644),
        );
        m.ok("write", syscall(libc::SYS_write, fd, wr, 300));
        m.ok("close", syscall(libc::SYS_close, fd));
        let fd = m.ok(
            "open",
            syscall(
                libc::SYS_open,
                cbuf(&p("head.bin")),
                (libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC) as c_long,
                0o644,
            ),
        );
        m.ok("write", syscall(libc::SYS_write, fd, wr, 4096));
        m.ok(
            "lseek",
            syscall(libc::SYS_lseek, fd, 0, libc::SEEK_SET as c_long),
        );
        m.ok("read", syscall(libc::SYS_read, fd, rd, 512));
        m.ok("close", syscall(libc::SYS_close, fd));
        m.ok(
            "rename",
            syscall(
                libc::SYS_rename,
                cbuf(&p("head.bin")),
                cbuf(&p("head-renamed.bin")),
            ),
        );
        let fd = m.ok(
            "creat",
            syscall(libc::SYS_creat, cbuf(&p("link-open.txt")), 0o644),
        );
        m.ok("close", syscall(libc::SYS_close, fd));
        m.ok(
            "symlink",
            syscall(
                libc::SYS_symlink,
                cbuf(&c("link-open.txt")),
                cbuf(&p("link")),
            ),
        );
        m.ok(
            "readlink",
            syscall(
                libc::SYS_readlink,
                cbuf(&p("link")),
                lbuf.as_mut_ptr() as c_long,
                256,
            ),
        );
        let fd = m.ok(
            "open",
            syscall(
                libc::SYS_open,
                cbuf(&p("link")),
                libc::O_WRONLY as c_long,
                0,
            ),
        );
        m.ok("write", syscall(libc::SYS_write, fd, wr, 50));
        m.ok("close", syscall(libc::SYS_close, fd));
        m.ok(
            "mkdir",
            syscall(libc::SYS_mkdir, cbuf(&p("emptydir")), 0o755),
        );
    }
}

/// Gives `dir` and everything below it to `user`, with the chown family
/// (lchown for symlinks), as the documented helper does.
fn give(m: &mut M, dir: &std::path::Path, user: &ioriot::user::User) -> anyhow::Result<()> {
    let cp = c(dir.to_str().context("the directory must be UTF-8")?);
    let meta = std::fs::symlink_metadata(dir)?;
    let (uid, gid) = (c_long::from(user.uid), c_long::from(user.gid));
    // SAFETY: cp is a CString alive for the call.
    let ret = unsafe {
        if meta.file_type().is_symlink() {
            syscall(libc::SYS_lchown, cp.as_ptr() as c_long, uid, gid)
        } else {
            syscall(libc::SYS_chown, cp.as_ptr() as c_long, uid, gid)
        }
    };
    m.ok(
        if meta.file_type().is_symlink() {
            "lchown"
        } else {
            "chown"
        },
        ret,
    );
    if meta.is_dir() {
        for e in std::fs::read_dir(dir)? {
            give(m, &e?.path(), user)?;
        }
    }
    Ok(())
}

/// The documented form: pid to PIDFILE, wait for GOFILE.
fn wait_for_go(pid_file: &std::path::Path, go_file: &std::path::Path) -> anyhow::Result<()> {
    // Written whole, then renamed: a reader never sees half a pid.
    let tmp = pid_file.with_extension("pid-writing");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, pid_file)
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    while !go_file.exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<Report> {
    let (dir, user) = match args.args.as_slice() {
        [dir] => (dir.clone(), None),
        [pid_file, go_file, dir, user] => {
            let user = user.to_str().context("USER must be UTF-8")?;
            let user = ioriot::user::lookup(user)?;
            wait_for_go(pid_file, go_file)?;
            (dir.clone(), Some(user))
        }
        _ => anyhow::bail!(
            "give DIR, or PIDFILE GOFILE BASEDIR USER as the documented procedure does"
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let mut m = M {
        r: Report {
            dir: dir.clone(),
            iterations: args.iterations,
            ..Report::default()
        },
    };
    let start = std::time::Instant::now();
    for i in 0..args.iterations {
        let base = dir.join(format!("m{i}"));
        matrix(
            &mut m,
            base.to_str().context("the directory must be UTF-8")?,
        );
    }
    documented(&mut m, dir.to_str().context("the directory must be UTF-8")?);
    if let Some(u) = &user {
        give(&mut m, &dir, u)?;
    }
    m.r.seconds = start.elapsed().as_secs_f64();
    Ok(m.r)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    match run(args) {
        Ok(r) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("serialisable")
                );
            } else {
                println!(
                    "{} calls in {} iteration(s) in {:.3} s under {}; {} failed",
                    r.calls.len(),
                    r.iterations,
                    r.seconds,
                    r.dir.display(),
                    r.failed.len()
                );
                for f in &r.failed {
                    println!("failed: {f}");
                }
            }
            if r.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ioriot-syscall-matrix: {e:#}");
            ExitCode::FAILURE
        }
    }
}
