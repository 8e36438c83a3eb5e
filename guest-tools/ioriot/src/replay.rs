//! replay: runs a replay's operations under `<root>/<name>` with P worker
//! processes and T threads each. Virtual process `v` goes to worker
//! `(v-1) % P`; within a worker each virtual thread is bound to one OS
//! thread (`index % T`), which runs its operations in captured order. A
//! descriptor opened on one thread and used on another is waited for.
//! Speed 0 runs as fast as possible; speed s > 0 starts each operation at
//! its captured time divided by s. Every path goes through `confine.rs`.
//! A forked child that copies descriptors of its parent (`fork`
//! operations) runs in its parent's worker, where the copy is a dup of the
//! parent's descriptor: they share the open file and its offset, and the
//! child's close leaves the parent's open.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::confine::{Failure, Jail};
use crate::op::Op;
use crate::order::{self, Done};
use crate::replay_format::{Replay, ReplayOp};
use crate::stats::Stats;

/// How long a thread waits for a descriptor another thread opens.
const FD_WAIT: Duration = Duration::from_secs(10);
/// The largest read or write buffer replay allocates.
const MAX_IO: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub processes: u32,
    pub threads: u32,
    /// 0 = as fast as possible, 1 = captured timing, 2 = twice as fast.
    pub speed: f64,
}

/// Errors of replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("Processes and threads must be at least 1 and speed must be 0 or more.")]
    Config,
    #[error("A test tree of the replay cannot be used.")]
    Confine(#[from] crate::confine::ConfineError),
    #[error("The replay's user cannot be taken on.")]
    User(#[from] crate::user::UserError),
    #[error("The replay's completion flags could not be mapped.")]
    Order(#[source] std::io::Error),
    #[error("Worker process {index} could not be started.")]
    Spawn {
        index: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("Worker process {index} failed: {stderr}")]
    Worker { index: u32, stderr: String },
    #[error("Worker process {index} printed statistics that cannot be read.")]
    WorkerOutput {
        index: u32,
        #[source]
        source: serde_json::Error,
    },
}

enum Slot {
    Open(OwnedFd),
    Closed,
}

/// Virtual descriptors of one worker (virtual numbers are unique per replay).
#[derive(Default)]
struct Fds {
    map: Mutex<HashMap<u64, Slot>>,
    changed: Condvar,
}

impl Fds {
    fn insert(&self, vfd: u64, fd: OwnedFd) {
        self.map
            .lock()
            .expect("fd table")
            .insert(vfd, Slot::Open(fd));
        self.changed.notify_all();
    }

    /// The real descriptor of `vfd`, waiting for another thread's open.
    fn get(&self, vfd: u64) -> Result<RawFd, Failure> {
        let deadline = Instant::now() + FD_WAIT;
        let mut map = self.map.lock().expect("fd table");
        loop {
            match map.get(&vfd) {
                Some(Slot::Open(fd)) => return Ok(fd.as_raw_fd()),
                Some(Slot::Closed) => return Err(Failure::Errno(libc::EBADF)),
                None => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Errno(libc::EBADF));
            }
            map = self
                .changed
                .wait_timeout(map, deadline - now)
                .expect("fd table")
                .0;
        }
    }

    /// An open that failed in replay: operations on its descriptor fail
    /// at once instead of waiting for it.
    fn failed(&self, vfd: u64) {
        if vfd != 0 {
            self.map.lock().expect("fd table").insert(vfd, Slot::Closed);
            self.changed.notify_all();
        }
    }

    fn close(&self, vfd: u64) -> Result<(), Failure> {
        self.get(vfd)?;
        let old = self.map.lock().expect("fd table").insert(vfd, Slot::Closed);
        self.changed.notify_all();
        drop(old);
        Ok(())
    }
}

use crate::confine::errno;

fn check(r: i64) -> Result<i64, Failure> {
    if r < 0 {
        Err(Failure::Errno(errno()))
    } else {
        Ok(r)
    }
}

/// Open flags openat2 accepts (it refuses unknown bits, which captured
/// flags may carry).
const OPEN_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_CREAT
    | libc::O_EXCL
    | libc::O_NOCTTY
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_DIRECT
    | libc::O_LARGEFILE
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_NOATIME
    | libc::O_SYNC
    | libc::O_PATH
    | libc::O_TMPFILE;

/// Flags of an open that must not act again when a file is opened anew
/// for an inherited descriptor.
const REOPEN_DROP: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_TMPFILE;

/// For each virtual process, the one whose worker runs it: itself, or for
/// a child that copies a parent's descriptors (`fork` operations, `a` the
/// parent's virtual descriptor), the parent's, so the copy can be a dup.
pub fn homes(ops: &[ReplayOp]) -> HashMap<u32, u32> {
    let mut home: HashMap<u32, u32> = HashMap::new();
    // Virtual descriptor → the virtual process that made it.
    let mut maker: HashMap<u64, u32> = HashMap::new();
    for o in ops {
        let own = *home.entry(o.vpid).or_insert(o.vpid);
        match o.op {
            Op::Fork => {
                if let Some(parent) = maker.get(&(o.a as u64)) {
                    let h = home.get(parent).copied().unwrap_or(*parent);
                    if own == o.vpid {
                        home.insert(o.vpid, h);
                    }
                }
                maker.insert(o.vfd, o.vpid);
            }
            op if op.opens() && o.vfd != 0 => {
                maker.insert(o.vfd, o.vpid);
            }
            op if o.c > 0 && (op.dups() || (op == Op::Fcntl && (o.a == 0 || o.a == 1030))) => {
                maker.insert(o.c as u64, o.vpid);
            }
            _ => {}
        }
    }
    home
}

struct Ctx<'a> {
    jail: &'a Jail,
    fds: &'a Fds,
}

/// What issuing one operation gave.
enum Issued {
    /// The call returned this (bytes for reads and writes).
    Ret(i64),
    /// Not issued: its arguments cannot be replayed.
    Skipped,
}

impl Ctx<'_> {
    fn path<'b>(&self, o: &'b ReplayOp) -> &'b [u8] {
        o.path.as_deref().unwrap_or(b"")
    }

    fn stat_follow(&self, p: &[u8]) -> Result<i64, Failure> {
        let fd = self.jail.open(p, libc::O_PATH, 0)?;
        // SAFETY: libc::stat is a C struct of integers (and reserved integer
        // arrays), for which all-zero bytes are a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is an OwnedFd, open for the call; fstat writes one
        // stat into st, a live local of that type.
        check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }.into())
    }

    fn stat_nofollow(&self, p: &[u8]) -> Result<i64, Failure> {
        let (dir, name) = self.jail.parent(p)?;
        // SAFETY: libc::stat is a C struct of integers (and reserved integer
        // arrays), for which all-zero bytes are a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: dir is an OwnedFd, open for the call; name is a CString
        // (NUL-terminated); fstatat writes one stat into st, a live local.
        check(
            unsafe {
                libc::fstatat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            }
            .into(),
        )
    }

    fn chmod(&self, p: &[u8], mode: u32) -> Result<i64, Failure> {
        let fd = self.jail.open(p, libc::O_PATH, 0)?;
        let empty = c"";
        // SAFETY: fd is open; fchmodat2 with AT_EMPTY_PATH acts on fd itself.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fchmodat2,
                fd.as_raw_fd(),
                empty.as_ptr(),
                mode,
                libc::AT_EMPTY_PATH,
            )
        };
        if r == 0 {
            return Ok(0);
        }
        let e = errno();
        if e != libc::ENOSYS && e != libc::EINVAL {
            return Err(Failure::Errno(e));
        }
        // Kernels before 6.6: through the descriptor's /proc link.
        let link = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
        // SAFETY: link is NUL-terminated.
        check(unsafe { libc::chmod(link.as_ptr(), mode) }.into())
    }

    fn statx(&self, p: &[u8], flags: i32, mask: u32) -> Result<i64, Failure> {
        // SAFETY: libc::statx is a C struct of integers (and reserved integer
        // arrays), for which all-zero bytes are a valid value.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        let sync = flags & (libc::AT_STATX_FORCE_SYNC | libc::AT_STATX_DONT_SYNC);
        if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
            let (dir, name) = self.jail.parent(p)?;
            // SAFETY: dir is open, name NUL-terminated, st a valid buffer.
            check(
                unsafe {
                    libc::statx(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW | sync,
                        mask,
                        &mut st,
                    )
                }
                .into(),
            )
        } else {
            let fd = self.jail.open(p, libc::O_PATH, 0)?;
            // SAFETY: fd is open; AT_EMPTY_PATH acts on fd itself.
            check(
                unsafe {
                    libc::statx(
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        libc::AT_EMPTY_PATH | sync,
                        mask,
                        &mut st,
                    )
                }
                .into(),
            )
        }
    }

    fn chown(&self, p: &[u8], uid: i64, gid: i64, follow: bool) -> Result<i64, Failure> {
        let (uid, gid) = (uid as u32, gid as u32);
        if follow {
            let fd = self.jail.open(p, libc::O_PATH, 0)?;
            // SAFETY: fd is open; AT_EMPTY_PATH acts on fd itself.
            check(
                unsafe {
                    libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH)
                }
                .into(),
            )
        } else {
            let (dir, name) = self.jail.parent(p)?;
            // SAFETY: dir is open, name NUL-terminated.
            check(
                unsafe {
                    libc::fchownat(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        uid,
                        gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                }
                .into(),
            )
        }
    }

    fn issue(&self, o: &ReplayOp, buf: &mut [u8]) -> Result<Issued, Failure> {
        let p = self.path(o);
        let n = (o.a.max(0) as usize).min(buf.len());
        let ret = match o.op {
            Op::Open | Op::Openat | Op::Creat => {
                let (flags, mode) = if o.op == Op::Creat {
                    (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, o.a as u32)
                } else {
                    ((o.a as i32) & OPEN_FLAGS, o.b as u32)
                };
                let fd = self
                    .jail
                    .open(p, flags, mode)
                    .inspect_err(|_| self.fds.failed(o.vfd))?;
                let raw = fd.as_raw_fd();
                self.fds.insert(o.vfd, fd);
                i64::from(raw)
            }
            Op::Stat => self.stat_follow(p)?,
            Op::Lstat => self.stat_nofollow(p)?,
            Op::Newfstatat => {
                if o.a & i64::from(libc::AT_SYMLINK_NOFOLLOW) != 0 {
                    self.stat_nofollow(p)?
                } else {
                    self.stat_follow(p)?
                }
            }
            Op::Statfs => {
                let fd = self.jail.open(p, libc::O_PATH, 0)?;
                // SAFETY: libc::statfs is a C struct of integers (and reserved integer
                // arrays), for which all-zero bytes are a valid value.
                let mut st: libc::statfs = unsafe { std::mem::zeroed() };
                // SAFETY: fd is an OwnedFd, open for the call; fstatfs writes
                // one statfs into st, a live local of that type.
                check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) }.into())?
            }
            Op::Mkdir | Op::Mkdirat => {
                let (dir, name) = self.jail.parent(p)?;
                check(
                    // SAFETY: dir is an OwnedFd, open for the call; name is a
                    // CString (NUL-terminated), read only.
                    unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), (o.a as u32) & 0o7777) }
                        .into(),
                )?
            }
            Op::Rmdir | Op::Unlink | Op::Unlinkat => {
                let flags = match o.op {
                    Op::Rmdir => libc::AT_REMOVEDIR,
                    Op::Unlink => 0,
                    _ => (o.a as i32) & libc::AT_REMOVEDIR,
                };
                let (dir, name) = self.jail.parent(p)?;
                // SAFETY: dir is open, name NUL-terminated.
                check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }.into())?
            }
            Op::Rename | Op::Renameat | Op::Renameat2 => {
                let to = o.path2.as_deref().unwrap_or(b"");
                let (d1, n1) = self.jail.parent(p)?;
                let (d2, n2) = self.jail.parent(to)?;
                let flags = if o.op == Op::Renameat2 { o.a as u32 } else { 0 };
                // SAFETY: both directories are open, names NUL-terminated.
                check(unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        d1.as_raw_fd(),
                        n1.as_ptr(),
                        d2.as_raw_fd(),
                        n2.as_ptr(),
                        flags,
                    )
                })?
            }
            Op::Readlink | Op::Readlinkat => {
                let (dir, name) = self.jail.parent(p)?;
                let len = n.max(1);
                // SAFETY: dir is open, name NUL-terminated, buf has len bytes.
                check(unsafe {
                    libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), len)
                } as i64)?
            }
            Op::Symlink | Op::Symlinkat => {
                let target = o.path2.as_deref().unwrap_or(b"");
                // An absolute target points into the test directory, as
                // every replayed path does.
                let target = if target.first() == Some(&b'/') && self.jail.tree_of(target).is_err()
                {
                    [&self.jail.tree_of(p)?[..], target].concat()
                } else {
                    target.to_vec()
                };
                let target = CString::new(target).map_err(|_| Failure::Errno(libc::EINVAL))?;
                let (dir, name) = self.jail.parent(p)?;
                check(
                    // SAFETY: dir is an OwnedFd, open for the call; target and
                    // name are CStrings (NUL-terminated), read only.
                    unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }
                        .into(),
                )?
            }
            Op::Chmod | Op::Fchmodat => self.chmod(p, (o.a as u32) & 0o7777)?,
            Op::Truncate => {
                let fd = self.jail.open(p, libc::O_WRONLY, 0)?;
                // SAFETY: fd is open.
                check(unsafe { libc::ftruncate(fd.as_raw_fd(), o.a) }.into())?
            }
            Op::Statx => self.statx(p, o.a as i32, o.b as u32)?,
            Op::Chdir => return Ok(Issued::Skipped),
            Op::Chown => self.chown(p, o.a, o.b, true)?,
            Op::Lchown => self.chown(p, o.a, o.b, false)?,
            Op::Fchownat => {
                self.chown(p, o.a, o.b, o.c & i64::from(libc::AT_SYMLINK_NOFOLLOW) == 0)?
            }
            Op::Sync => {
                // SAFETY: no arguments.
                unsafe { libc::sync() };
                0
            }
            Op::Close => {
                self.fds.close(o.vfd)?;
                0
            }
            Op::Fork => self.inherit(o)?,
            _ => return self.issue_fd(o, buf, n),
        };
        Ok(Issued::Ret(ret))
    }

    /// A `fork` operation: the child's virtual descriptor `vfd` becomes a
    /// copy of the parent's `a` (a dup: same open file, shared offset).
    /// Should the parent's be closed already (its close ran first), the
    /// file is opened again with the parent's flags `b` at the offset `c`
    /// it had at the fork.
    fn inherit(&self, o: &ReplayOp) -> Result<i64, Failure> {
        use std::os::fd::FromRawFd;
        let dup = self.fds.get(o.a as u64).ok().and_then(|fd| {
            // SAFETY: fd is an open descriptor of this worker.
            let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            // SAFETY: r is a new descriptor nobody else owns.
            (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r) })
        });
        let fd = match dup {
            Some(fd) => fd,
            None => {
                let flags = (o.b as i32) & OPEN_FLAGS & !REOPEN_DROP;
                let fd = self
                    .jail
                    .open(self.path(o), flags, 0)
                    .inspect_err(|_| self.fds.failed(o.vfd))?;
                // SAFETY: fd is open.
                if unsafe { libc::lseek(fd.as_raw_fd(), o.c, libc::SEEK_SET) } < 0 {
                    let e = errno();
                    self.fds.failed(o.vfd);
                    return Err(Failure::Errno(e));
                }
                fd
            }
        };
        let raw = fd.as_raw_fd();
        self.fds.insert(o.vfd, fd);
        Ok(i64::from(raw))
    }

    fn issue_fd(&self, o: &ReplayOp, buf: &mut [u8], n: usize) -> Result<Issued, Failure> {
        let fd = self.fds.get(o.vfd).inspect_err(|_| {
            // A copy of a descriptor that is not there is not there either.
            if o.op.dups() || o.op == Op::Fcntl {
                self.fds.failed(o.c as u64);
            }
        })?;
        let p = buf.as_mut_ptr();
        // SAFETY: every pointer passed is valid for what the call does with
        // it: `p` for n <= buf.len() bytes (buf is exclusively borrowed), the
        // iovec and the stat/statfs buffers are live locals of the types the
        // calls write, and the stat/statfs types are plain integers, for
        // which all-zero bytes are valid. fcntl commands that take a pointer
        // are not issued. `fd` is a number the kernel checks, not memory:
        // should another thread replay the descriptor's close meanwhile (a
        // race the captured workload had too), the call fails with EBADF or
        // acts on whatever file reuses the number. A new descriptor from a
        // successful dup is owned by nobody else, so the table may own it.
        let r: i64 = unsafe {
            match o.op {
                Op::Read => libc::read(fd, p.cast(), n) as i64,
                Op::Write => libc::write(fd, p.cast(), n) as i64,
                Op::Pread64 => libc::pread(fd, p.cast(), n, o.b) as i64,
                Op::Pwrite64 => libc::pwrite(fd, p.cast(), n, o.b) as i64,
                Op::Readv | Op::Writev => {
                    let iov = libc::iovec {
                        iov_base: p.cast(),
                        iov_len: n,
                    };
                    if o.op == Op::Readv {
                        libc::readv(fd, &iov, 1) as i64
                    } else {
                        libc::writev(fd, &iov, 1) as i64
                    }
                }
                Op::Lseek => libc::lseek(fd, o.a, o.b as i32),
                Op::Fstat => {
                    let mut st: libc::stat = std::mem::zeroed();
                    libc::fstat(fd, &mut st).into()
                }
                Op::Fstatfs => {
                    let mut st: libc::statfs = std::mem::zeroed();
                    libc::fstatfs(fd, &mut st).into()
                }
                Op::Fsync => libc::fsync(fd).into(),
                Op::Fdatasync => libc::fdatasync(fd).into(),
                Op::Syncfs => libc::syncfs(fd).into(),
                Op::Readahead => libc::readahead(fd, o.a, o.b.max(0) as usize) as i64,
                Op::SyncFileRange => libc::sync_file_range(fd, o.a, o.b, o.c as u32).into(),
                Op::Getdents64 => libc::syscall(libc::SYS_getdents64, fd, p, n),
                Op::Fchmod => libc::fchmod(fd, (o.a as u32) & 0o7777).into(),
                Op::Fchown => libc::fchown(fd, o.a as u32, o.b as u32).into(),
                Op::Ftruncate => libc::ftruncate(fd, o.a).into(),
                Op::Fallocate => libc::fallocate(fd, o.a as i32, o.b, o.c).into(),
                // The number the workload asked for does not matter here.
                Op::Dup | Op::Dup2 | Op::Dup3 => {
                    let r = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0);
                    if r >= 0 {
                        use std::os::fd::FromRawFd;
                        self.fds.insert(o.c as u64, OwnedFd::from_raw_fd(r));
                    } else {
                        self.fds.failed(o.c as u64);
                    }
                    r.into()
                }
                Op::Fchdir => return Ok(Issued::Skipped),
                Op::Fcntl => match o.a as i32 {
                    c @ (libc::F_GETFD | libc::F_GETFL) => libc::fcntl(fd, c).into(),
                    c @ (libc::F_SETFD | libc::F_SETFL) => libc::fcntl(fd, c, o.b as i32).into(),
                    c @ (libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) => {
                        let r = libc::fcntl(fd, c, o.b as i32);
                        if r >= 0 {
                            use std::os::fd::FromRawFd;
                            self.fds.insert(o.c as u64, OwnedFd::from_raw_fd(r));
                        } else {
                            self.fds.failed(o.c as u64);
                        }
                        r.into()
                    }
                    // Commands whose argument is a pointer (locks, owners) are not replayed.
                    _ => return Ok(Issued::Skipped),
                },
                other => unreachable!("{other} is not a descriptor operation"),
            }
        };
        Ok(Issued::Ret(check(r)?))
    }
}

/// Runs one thread's operations in order and records them.
fn run_thread(
    ctx: &Ctx<'_>,
    ops: &[(usize, &ReplayOp)],
    order: (&[Option<usize>], &Done),
    speed: f64,
    start: Instant,
) -> Stats {
    let (deps, done) = order;
    let mut stats = Stats::default();
    let want = ops
        .iter()
        .filter(|(_, o)| {
            o.op.reads()
                || o.op.writes()
                || matches!(o.op, Op::Getdents64 | Op::Readlink | Op::Readlinkat)
        })
        .map(|(_, o)| o.a.max(0) as usize)
        .max()
        .unwrap_or(0)
        .clamp(4096, MAX_IO);
    let mut buf = vec![0x5au8; want];
    for &(i, o) in ops {
        if let Some(d) = deps[i] {
            done.wait(d);
        }
        if speed > 0.0 {
            let due = start + Duration::from_nanos((o.t_ns as f64 / speed) as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let t = Instant::now();
        let res = ctx.issue(o, &mut buf);
        let ns = t.elapsed().as_nanos() as u64;
        done.set(i);
        let name = o.op.name();
        match res {
            Err(Failure::Refused(r)) => stats.refuse(name, r.to_string()),
            Ok(Issued::Skipped) => stats.op(name).skipped += 1,
            Ok(Issued::Ret(r)) => {
                let s = stats.op(name);
                s.count += 1;
                s.latency.record(ns);
                if o.op.reads() || o.op.writes() {
                    s.bytes += r as u64;
                }
                if o.ret < 0 {
                    s.mismatches += 1;
                }
            }
            Err(Failure::Errno(_)) => {
                let s = stats.op(name);
                s.count += 1;
                s.errors += 1;
                s.latency.record(ns);
                if o.ret >= 0 {
                    s.mismatches += 1;
                }
            }
        }
    }
    stats
}

/// Runs worker `index` of `workers` in this process.
pub fn run_worker(
    rep: &Replay,
    cfg: &ReplayConfig,
    index: u32,
    workers: u32,
    done: &Done,
) -> Result<Stats, ReplayError> {
    if cfg.threads == 0 || workers == 0 || cfg.speed.is_nan() || cfg.speed < 0.0 {
        return Err(ReplayError::Config);
    }
    let jail = Jail::new(&rep.name)?;
    for tree in jail.trees(rep.paths()) {
        jail.check_tree(&tree)?;
    }
    let fds = Fds::default();
    let deps = order::dependencies(&rep.ops);
    let homes = homes(&rep.ops);
    let mut per_vtid: BTreeMap<u32, Vec<(usize, &ReplayOp)>> = BTreeMap::new();
    for (i, o) in rep.ops.iter().enumerate() {
        let home = homes.get(&o.vpid).copied().unwrap_or(o.vpid);
        if (home.max(1) - 1) % workers == index {
            per_vtid.entry(o.vtid).or_default().push((i, o));
        }
    }
    let mut per_thread: Vec<Vec<(usize, &ReplayOp)>> = vec![Vec::new(); cfg.threads as usize];
    for (i, (_, ops)) in per_vtid.into_iter().enumerate() {
        per_thread[i % cfg.threads as usize].extend(ops);
    }
    // Operations are in captured order in the file; a thread with several
    // virtual threads keeps that order.
    for ops in &mut per_thread {
        ops.sort_by_key(|(i, _)| *i);
    }
    per_thread.retain(|v| !v.is_empty());
    let ctx = Ctx {
        jail: &jail,
        fds: &fds,
    };
    let start = Instant::now();
    let parts: Vec<Stats> = std::thread::scope(|s| {
        let handles: Vec<_> = per_thread
            .iter()
            .map(|ops| {
                let ctx = &ctx;
                let deps = &deps;
                s.spawn(move || run_thread(ctx, ops, (deps, done), cfg.speed, start))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a replay thread panicked"))
            .collect()
    });
    let mut stats = Stats::default();
    for p in &parts {
        stats.merge(p);
    }
    stats.wall_ns = start.elapsed().as_nanos() as u64;
    Ok(stats)
}

/// Runs the whole replay: in this process when P is 1, otherwise in P
/// worker processes (`worker_cmd(K, P, order file)`, which runs
/// `run_worker` with `Done::shared`), whose statistics are merged.
pub fn run(
    rep: &Replay,
    cfg: &ReplayConfig,
    worker_cmd: impl Fn(u32, u32, &Path) -> std::process::Command,
) -> Result<Stats, ReplayError> {
    if cfg.processes == 0 {
        return Err(ReplayError::Config);
    }
    // Workers inherit the user from this process.
    if let Some(name) = &rep.user {
        crate::user::switch(&crate::user::lookup(name)?)?;
    }
    if cfg.processes == 1 {
        let done = Done::anonymous(rep.ops.len()).map_err(ReplayError::Order)?;
        return run_worker(rep, cfg, 0, 1, &done);
    }
    // The completion flags the workers share: ioriot's own file, outside the test tree.
    let sync = std::env::temp_dir().join(format!("ioriot-order-{}", std::process::id()));
    std::fs::File::create(&sync)
        .and_then(|f| f.set_len(rep.ops.len().max(1) as u64))
        .map_err(ReplayError::Order)?;
    let res = run_workers(cfg, &sync, worker_cmd);
    let _ = std::fs::remove_file(&sync);
    res
}

fn run_workers(
    cfg: &ReplayConfig,
    sync: &Path,
    worker_cmd: impl Fn(u32, u32, &Path) -> std::process::Command,
) -> Result<Stats, ReplayError> {
    let mut children = Vec::new();
    for i in 0..cfg.processes {
        let child = worker_cmd(i, cfg.processes, sync)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| ReplayError::Spawn { index: i, source })?;
        children.push(child);
    }
    let mut stats = Stats::default();
    for (i, c) in children.into_iter().enumerate() {
        let index = i as u32;
        let out = c
            .wait_with_output()
            .map_err(|source| ReplayError::Spawn { index, source })?;
        if !out.status.success() {
            return Err(ReplayError::Worker {
                index,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        let s: Stats = serde_json::from_slice(&out.stdout)
            .map_err(|source| ReplayError::WorkerOutput { index, source })?;
        stats.merge(&s);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(vpid: u32, op: Op, vfd: u64, a: i64, c: i64) -> ReplayOp {
        ReplayOp {
            t_ns: 0,
            vpid,
            vtid: vpid,
            op,
            vfd,
            ret: 0,
            path: Some(b"t/f".to_vec()),
            path2: None,
            a,
            b: 0,
            c,
        }
    }

    #[test]
    fn children_copying_descriptors_run_in_their_parents_worker() {
        let ops = [
            op(1, Op::Openat, 1, 0, 0),
            op(1, Op::Dup, 1, 0, 2),
            // 2 copies 1's dup; 3 (2's child) copies 2's copy.
            op(2, Op::Fork, 3, 2, 0),
            op(3, Op::Fork, 4, 3, 0),
            // 4 opens its own file: its own worker.
            op(4, Op::Openat, 5, 0, 0),
            // 5 copies a descriptor no operation made: nothing to follow.
            op(5, Op::Fork, 6, 99, 0),
        ];
        let h = homes(&ops);
        assert_eq!(
            (h[&1], h[&2], h[&3], h[&4], h[&5]),
            (1, 1, 1, 4, 5),
            "{h:?}"
        );
    }
}
