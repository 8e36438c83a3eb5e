//! Turns raw records into capture events: relative and dirfd-relative
//! paths become absolute using each process's descriptor table (built from
//! the opens and dups it sees, copied at fork) and its working directory
//! (followed through chdir and fchdir); what was opened before capture
//! started, and the directory it started in, are read from /proc/PID/fd and
//! /proc/PID/cwd on first use. A task's exit record drops its state, so
//! the tables hold the running processes only; a task whose exit record was
//! lost (full ring buffer) is swept once two checks found it gone.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::raw::{
    RawEvent, FLAG_FAULT1, FLAG_FAULT2, FLAG_TRUNC1, FLAG_TRUNC2, KIND_EXIT, KIND_FORK,
};
use crate::capture_format::Event;
use crate::op::{self, Op};
use crate::paths;

const AT_FDCWD: i32 = -100;

#[derive(Debug, Clone, Default)]
struct Proc {
    cwd: Option<Vec<u8>>,
    fds: HashMap<i32, Vec<u8>>,
}

/// Per-process path state of a capture.
#[derive(Debug)]
pub struct Resolver {
    procs: HashMap<u32, Proc>,
    /// Where /proc is (tests point it elsewhere).
    proc_root: PathBuf,
    pub truncated: u64,
    /// Strings the kernel could not read: their path is left out (`-`).
    pub unreadable: u64,
    /// Exit records seen (threads and processes).
    pub exits: u64,
    /// Tasks found gone at the last sweep.
    gone: HashSet<u32>,
    /// Tasks dropped by a sweep (their exit record was lost).
    pub swept: u64,
}

/// Numeric arguments that are 64 bits wide (counts and offsets); the rest
/// are C ints, whose upper register half is not theirs.
fn wide(op: Op, slot: usize) -> bool {
    match op {
        Op::Read
        | Op::Write
        | Op::Readv
        | Op::Writev
        | Op::Getdents64
        | Op::Readlink
        | Op::Readlinkat => slot == 0,
        Op::Pread64 | Op::Pwrite64 | Op::Readahead => slot <= 1,
        Op::Lseek => slot == 0,
        Op::SyncFileRange => slot <= 1,
        Op::Truncate | Op::Ftruncate => slot == 0,
        Op::Fallocate => slot >= 1,
        Op::Fcntl => slot == 1,
        _ => false,
    }
}

impl Resolver {
    pub fn new(proc_root: PathBuf) -> Resolver {
        Resolver {
            procs: HashMap::new(),
            proc_root,
            truncated: 0,
            unreadable: 0,
            exits: 0,
            gone: HashSet::new(),
            swept: 0,
        }
    }

    /// Drops the state of tasks that `alive` found gone at this sweep and
    /// the one before: their exit record was lost. Once is not enough, as
    /// records a task sent before it exited may still wait in the ring
    /// buffer; the caller drains it between sweeps.
    pub fn sweep(&mut self, alive: impl Fn(u32) -> bool) {
        let gone: HashSet<u32> = self.procs.keys().copied().filter(|p| !alive(*p)).collect();
        for p in gone.intersection(&self.gone) {
            self.procs.remove(p);
            self.swept += 1;
        }
        self.gone = gone.difference(&self.gone).copied().collect();
    }

    /// How many tasks have path state (descriptor table, working directory).
    pub fn tracked(&self) -> usize {
        self.procs.len()
    }

    fn readlink(&self, pid: u32, what: &str) -> Option<Vec<u8>> {
        let p = self.proc_root.join(pid.to_string()).join(what);
        let t = std::fs::read_link(p).ok()?;
        let b = t.as_os_str().as_bytes();
        (b.first() == Some(&b'/')).then(|| b.to_vec())
    }

    fn base(&mut self, pid: u32, dirfd: Option<i32>) -> Option<Vec<u8>> {
        match dirfd {
            Some(fd) if fd != AT_FDCWD => self.fd_path(pid, fd),
            _ => {
                if let Some(c) = self.procs.get(&pid).and_then(|p| p.cwd.clone()) {
                    return Some(c);
                }
                let c = self.readlink(pid, "cwd")?;
                self.procs.entry(pid).or_default().cwd = Some(c.clone());
                Some(c)
            }
        }
    }

    fn fd_path(&mut self, pid: u32, fd: i32) -> Option<Vec<u8>> {
        if let Some(p) = self.procs.get(&pid).and_then(|p| p.fds.get(&fd)) {
            return Some(p.clone());
        }
        let p = self.readlink(pid, &format!("fd/{fd}"))?;
        self.procs.entry(pid).or_default().fds.insert(fd, p.clone());
        Some(p)
    }

    /// The capture event of a record; `None` for a number not in the table
    /// and for exit records, which only drop the task's state.
    pub fn event(&mut self, r: &RawEvent) -> Option<Event> {
        if r.kind == KIND_EXIT {
            // The process's state when its leader exits; for another thread
            // the copy its creation (a fork record too) made.
            self.procs.remove(&r.tid);
            self.exits += 1;
            return None;
        }
        if r.kind == KIND_FORK {
            let child = r.ret as u32;
            let parent = self.procs.get(&r.tgid).cloned().unwrap_or_default();
            self.procs.insert(child, parent);
            return Some(Event {
                t_ns: r.t_enter,
                dur_ns: 0,
                pid: r.tgid,
                tid: r.tid,
                op: Op::Fork,
                ret: r.ret,
                fd: -1,
                path: None,
                path2: None,
                a: 0,
                b: 0,
                c: 0,
            });
        }
        let spec = op::spec_by_nr(r.nr)?;
        if r.flags & FLAG_TRUNC1 != 0 {
            self.truncated += 1;
        }
        if r.flags & FLAG_TRUNC2 != 0 {
            self.truncated += 1;
        }
        let fault = [r.flags & FLAG_FAULT1 != 0, r.flags & FLAG_FAULT2 != 0];
        self.unreadable += fault.iter().filter(|f| **f).count() as u64;
        let fd = spec.fd.map(|i| r.args[usize::from(i)] as i32);
        let mut resolved: [Option<Vec<u8>>; 2] = [None, None];
        for (slot, p) in spec.paths.iter().enumerate() {
            if let Some((_, dirfd_arg)) = p {
                if fault[slot] {
                    continue;
                }
                let raw = if slot == 0 { &r.path1 } else { &r.path2 };
                let dirfd = dirfd_arg.map(|d| r.args[usize::from(d)] as i32);
                resolved[slot] = if raw.first() == Some(&b'/') {
                    Some(paths::normalize(raw))
                } else {
                    // Unresolvable relative paths are kept relative; generate drops them.
                    match self.base(r.tgid, dirfd) {
                        Some(b) => Some(paths::resolve(&b, raw)),
                        None => Some(raw.clone()),
                    }
                };
            }
        }
        let [mut path, mut path2] = resolved;
        if op::literal_arg(spec.op).is_some() {
            // symlink: the target (second string) is content, kept verbatim.
            path2 = (!fault[1]).then(|| r.path2.clone());
        }
        if spec.op.uses_fd() {
            if let Some(f) = fd {
                path = self.fd_path(r.tgid, f);
            }
        }
        let mut nums = [0i64; 3];
        for (slot, n) in spec.nums.iter().enumerate() {
            if let Some(i) = n {
                let v = r.args[usize::from(*i)];
                nums[slot] = if wide(spec.op, slot) {
                    v as i64
                } else {
                    i64::from(v as u32 as i32)
                };
            }
        }
        // uid and gid are unsigned: -1 means "unchanged" and stays 4294967295.
        if matches!(spec.op, Op::Chown | Op::Fchown | Op::Lchown | Op::Fchownat) {
            nums[0] = i64::from(nums[0] as u32);
            nums[1] = i64::from(nums[1] as u32);
        }
        if r.ret >= 0 {
            let proc_ = self.procs.entry(r.tgid).or_default();
            match spec.op {
                o if o.opens() => {
                    if let Some(p) = &path {
                        proc_.fds.insert(r.ret as i32, p.clone());
                    }
                }
                Op::Close => {
                    if let Some(f) = fd {
                        proc_.fds.remove(&f);
                    }
                }
                Op::Fcntl if nums[0] == 0 || nums[0] == 1030 => {
                    if let Some(p) = &path {
                        proc_.fds.insert(r.ret as i32, p.clone());
                    }
                }
                o if o.dups() => {
                    if let Some(p) = &path {
                        proc_.fds.insert(r.ret as i32, p.clone());
                    }
                }
                Op::Chdir | Op::Fchdir => {
                    if let Some(p) = &path {
                        proc_.cwd = Some(p.clone());
                    }
                }
                _ => {}
            }
        }
        Some(Event {
            t_ns: r.t_enter,
            dur_ns: r.t_exit.saturating_sub(r.t_enter),
            pid: r.tgid,
            tid: r.tid,
            op: spec.op,
            ret: r.ret,
            fd: fd.map_or(-1, i64::from),
            path,
            path2,
            a: nums[0],
            b: nums[1],
            c: nums[2],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(nr: u32, ret: i64, args: [u64; 6], p1: &[u8], p2: &[u8]) -> RawEvent {
        RawEvent {
            t_enter: 100,
            t_exit: 150,
            tgid: 7,
            tid: 8,
            kind: 1,
            nr,
            ret,
            args,
            flags: 0,
            path1: p1.to_vec(),
            path2: p2.to_vec(),
        }
    }

    #[test]
    fn dirfd_relative_paths_resolve_through_the_fd_table_and_forks() {
        let t = tempfile::tempdir().unwrap();
        let proc7 = t.path().join("7");
        std::fs::create_dir_all(&proc7).unwrap();
        // The process's working directory: any absolute path will do, it
        // is only read through the /proc/PID/cwd link.
        let cwd = t.path().join("cwd");
        std::os::unix::fs::symlink(&cwd, proc7.join("cwd")).unwrap();
        let under = |rel: &str| format!("{}/{rel}", cwd.display()).into_bytes();
        let mut r = Resolver::new(t.path().to_path_buf());
        let fdcwd = AT_FDCWD as u32 as u64;
        // openat(AT_FDCWD, "d", O_DIRECTORY) = 3
        let e = r
            .event(&raw(
                257,
                3,
                [fdcwd, 0, libc::O_DIRECTORY as u64, 0, 0, 0],
                b"d",
                b"",
            ))
            .unwrap();
        assert_eq!(e.path.as_deref(), Some(&under("d")[..]));
        assert_eq!((e.fd, e.a), (-100, i64::from(libc::O_DIRECTORY)));
        // renameat(3, "a", 3, "../b")
        let e = r
            .event(&raw(264, 0, [3, 0, 3, 0, 0, 0], b"a", b"../b"))
            .unwrap();
        assert_eq!(e.op, Op::Renameat);
        assert_eq!(e.path.as_deref(), Some(&under("d/a")[..]));
        assert_eq!(e.path2.as_deref(), Some(&under("b")[..]));
        // symlinkat("target", 3, "l"): the target stays verbatim.
        let e = r
            .event(&raw(266, 0, [0, 3, 0, 0, 0, 0], b"l", b"../t"))
            .unwrap();
        assert_eq!(e.path.as_deref(), Some(&under("d/l")[..]));
        assert_eq!(e.path2.as_deref(), Some(&b"../t"[..]));
        // A child inherits the table.
        let mut f = raw(0, 9, [0; 6], b"", b"");
        f.kind = KIND_FORK;
        assert_eq!(r.event(&f).unwrap().op, Op::Fork);
        let mut c = raw(263, 0, [3, 0, 0, 0, 0, 0], b"x", b"");
        c.tgid = 9;
        assert_eq!(
            r.event(&c).unwrap().path.as_deref(),
            Some(&under("d/x")[..])
        );
        // fchown(3, -1, 5): ints are decoded from the low register half.
        let e = r
            .event(&raw(93, 0, [3, 0xffff_ffff, 5, 0, 0, 0], b"", b""))
            .unwrap();
        assert_eq!(
            (e.a, e.b, e.path.as_deref()),
            (4294967295, 5, Some(&under("d")[..]))
        );
        // An unreadable string is left out, not taken for "".
        let mut u = raw(257, 5, [fdcwd, 0, 0, 0, 0, 0], b"", b"");
        u.flags = FLAG_FAULT1;
        assert_eq!(r.event(&u).unwrap().path, None);
        assert_eq!(r.unreadable, 1);
        // close(3) forgets it.
        r.event(&raw(3, 0, [3, 0, 0, 0, 0, 0], b"", b"")).unwrap();
        assert!(!r.procs[&7].fds.contains_key(&3));
    }

    fn exit(tgid: u32, tid: u32) -> RawEvent {
        let mut e = raw(0, 0, [0; 6], b"", b"");
        e.kind = KIND_EXIT;
        e.tgid = tgid;
        e.tid = tid;
        e
    }

    fn fork(parent: u32, child: u32) -> RawEvent {
        let mut e = raw(0, i64::from(child), [0; 6], b"", b"");
        e.kind = KIND_FORK;
        e.tgid = parent;
        e.tid = parent;
        e
    }

    #[test]
    fn exit_records_drop_the_state_of_exited_tasks() {
        let t = tempfile::tempdir().unwrap();
        let mut r = Resolver::new(t.path().to_path_buf());
        // Process 7 opens /d/f as 3, makes a thread (tid 8) and a child (9).
        let open = raw(2, 3, [0, libc::O_RDONLY as u64, 0, 0, 0, 0], b"/d/f", b"");
        let mut open = open;
        open.tgid = 7;
        open.tid = 7;
        r.event(&open).unwrap();
        assert!(r.event(&fork(7, 8)).is_some());
        assert!(r.event(&fork(7, 9)).is_some());
        assert_eq!(r.tracked(), 3);
        // The thread ends: its copy goes, the process keeps its table.
        assert!(r.event(&exit(7, 8)).is_none());
        assert_eq!(r.tracked(), 2);
        assert_eq!(r.procs[&7].fds[&3], b"/d/f");
        // The parent ends; the child still resolves its inherited descriptor.
        assert!(r.event(&exit(7, 7)).is_none());
        assert_eq!(r.tracked(), 1);
        let mut read = raw(0, 1, [3, 0, 1, 0, 0, 0], b"", b"");
        read.tgid = 9;
        read.tid = 9;
        assert_eq!(r.event(&read).unwrap().path.as_deref(), Some(&b"/d/f"[..]));
        assert!(r.event(&exit(9, 9)).is_none());
        assert_eq!((r.tracked(), r.exits), (0, 3));
        // A task whose exit record was lost goes at the second sweep that
        // finds it gone, not at the first.
        r.event(&open).unwrap();
        assert_eq!(r.tracked(), 1);
        r.sweep(|_| false);
        assert_eq!((r.tracked(), r.swept), (1, 0));
        r.sweep(|_| false);
        assert_eq!((r.tracked(), r.swept), (0, 1));
        r.event(&open).unwrap();
        r.sweep(|_| true);
        r.sweep(|_| false);
        assert_eq!(r.tracked(), 1, "gone once since it was last seen alive");
        assert!(r.event(&exit(7, 7)).is_none());
        // A reused pid starts afresh: descriptor 3 is unknown to it (no
        // /proc entry here), not the old process's file.
        let mut again = raw(0, 1, [3, 0, 1, 0, 0, 0], b"", b"");
        again.tgid = 7;
        assert_eq!(r.event(&again).unwrap().path, None);
    }
}
