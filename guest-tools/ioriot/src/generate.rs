//! generate: a `.capture` becomes a `.replay`. Real pids, tids and
//! descriptors become virtual ones (a descriptor number reused after close
//! gets a new virtual one); pseudo filesystems (proc, sysfs, devtmpfs, …,
//! and tmpfs unless kept) are dropped with every operation on their
//! descriptors; the skeleton of entries that existed before the capture
//! is inferred from what succeeded and failed; every path is rewritten
//! into its mount point's test tree, `/home/u/f` on a `/home` mount
//! becoming `/home/.ioriot/NAME/u/f` (as I/O Riot does). A forked child inherits its parent's descriptors: the
//! first time it uses one, a `fork` operation gives its virtual process a
//! copy of the parent's virtual descriptor (replayed as a dup of it), so its
//! reads, writes and closes act on the right file and its close leaves the
//! parent's open.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::capture_format::{Capture, Event, Mount};
use crate::op::Op;
use crate::paths;
use crate::replay_format::{InitEntry, Replay, ReplayOp};

/// Filesystems whose operations are never replayed.
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "bpf",
    "securityfs",
    "pstore",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "efivarfs",
    "nsfs",
    "9p",
];
/// Memory filesystems, dropped unless asked to keep them.
const TMPFS: &[&str] = &["tmpfs", "ramfs", "rootfs"];
/// Used when the capture lists no mounts.
const PSEUDO_PREFIXES: &[&[u8]] = &[b"/proc", b"/sys", b"/dev"];

#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub name: String,
    pub keep_tmpfs: bool,
    /// The user to replay as, recorded in the replay (`-u`).
    pub user: Option<String>,
    /// The working directory base (`-w`), recorded in the replay for
    /// init and replay.
    pub wd_base: Option<String>,
}

/// Errors of generate.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("The test name '{0}' must be one path component of letters, digits, '-', '_' or '.'.")]
    Name(String),
    #[error("The user name '{0}' is empty or contains white space or '|'.")]
    User(String),
    #[error("The working directory base '{0}' is not an absolute path without '|' or line breaks; give -w an absolute path.")]
    WdBase(String),
    #[error("The capture holds no operation that can be replayed ({0} events, all dropped).")]
    Empty(usize),
}

/// What generate kept and dropped, and why.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GenerateReport {
    pub events: usize,
    pub kept: usize,
    pub dropped_pseudo_fs: usize,
    pub dropped_unknown_fd: usize,
    /// Descriptors a forked child inherited and used: each gets a `fork`
    /// operation that copies the parent's.
    pub inherited_fds: usize,
    /// Path operations whose path (or new path) the capture could not read.
    pub dropped_unreadable_path: usize,
    /// Operations on a mount point itself that act on the entry (readlink,
    /// lstat, unlink, rename, …): the mount point is the system's, its test
    /// tree the replay's root.
    pub dropped_mount_point: usize,
    /// chdir and fchdir: replayed paths are absolute already.
    pub not_replayed: usize,
    pub lost_in_capture: Option<u64>,
    pub capture_ops: BTreeMap<String, usize>,
    pub replay_ops: BTreeMap<String, usize>,
    /// Real pid → virtual pid.
    pub pids: BTreeMap<u32, u32>,
    /// Real tid → virtual tid.
    pub tids: BTreeMap<u32, u32>,
    pub init_dirs: usize,
    pub init_files: usize,
    pub init_bytes: u64,
}

impl GenerateReport {
    pub fn text(&self) -> String {
        format!(
            "{} of {} events kept ({} on pseudo filesystems, {} on unknown descriptors, {} with unreadable paths dropped; {} chdir not replayed; {} inherited descriptors copied); {} processes, {} threads; skeleton {} dirs, {} files, {} bytes\n",
            self.kept,
            self.events,
            self.dropped_pseudo_fs,
            self.dropped_unknown_fd,
            self.dropped_unreadable_path,
            self.not_replayed,
            self.inherited_fds,
            self.pids.len(),
            self.tids.len(),
            self.init_dirs,
            self.init_files,
            self.init_bytes
        )
    }
}

#[derive(Debug, Clone)]
enum Fd {
    Tracked {
        vfd: u64,
        path: Vec<u8>,
        pos: u64,
        /// The open flags (a dup's are its source's).
        flags: i64,
    },
    /// On a pseudo filesystem: its operations are dropped.
    Pseudo,
    /// A forked child's copy of a tracked descriptor, not used yet: on
    /// first use it becomes the child's own `Tracked` descriptor through a
    /// `fork` operation at the fork's time.
    Inherited {
        /// The virtual descriptor copied (the one its first owner opened).
        from: u64,
        path: Vec<u8>,
        pos: u64,
        flags: i64,
        /// When the child was forked.
        t_fork: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Exists(Kind),
    Absent,
}

struct State<'a> {
    cfg: &'a GenerateConfig,
    mounts: Vec<Mount>,
    fds: HashMap<(u32, i64), Fd>,
    known: HashMap<Vec<u8>, Known>,
    /// Entries the workload created.
    created: HashSet<Vec<u8>>,
    /// Entries the skeleton must create: path → (kind, size).
    init: BTreeMap<Vec<u8>, (Kind, u64)>,
    next_vfd: u64,
    report: GenerateReport,
}

impl State<'_> {
    fn is_pseudo(&self, path: &[u8]) -> bool {
        if self.mounts.is_empty() {
            return PSEUDO_PREFIXES.iter().any(|p| paths::is_under(path, p));
        }
        let m = self
            .mounts
            .iter()
            .filter(|m| paths::is_under(path, &m.point))
            .max_by_key(|m| m.point.len());
        match m {
            Some(m) => {
                PSEUDO.contains(&m.fstype.as_str())
                    || (!self.cfg.keep_tmpfs && TMPFS.contains(&m.fstype.as_str()))
            }
            // On no mount the capture lists: no test tree to put it in.
            None => true,
        }
    }

    /// `<mount point>/.ioriot/NAME/<rest>`: the test tree of the path's
    /// mount (the longest mount point it lies under; `/` without one).
    fn rewrite(&self, path: &[u8]) -> Vec<u8> {
        let point: &[u8] = self
            .mounts
            .iter()
            .map(|m| m.point.as_slice())
            .filter(|p| paths::is_under(path, p))
            .max_by_key(|p| p.len())
            .unwrap_or(b"/");
        let (mut out, rest) = if point == b"/" {
            (Vec::new(), path)
        } else {
            (point.to_vec(), &path[point.len()..])
        };
        out.extend_from_slice(b"/");
        out.extend_from_slice(crate::confine::TREE_DIR.as_bytes());
        out.push(b'/');
        out.extend_from_slice(self.cfg.name.as_bytes());
        if rest != b"/" {
            out.extend_from_slice(rest);
        }
        out
    }

    /// Marks the parents of `path` as existing (in the skeleton if unknown).
    fn need_parents(&mut self, path: &[u8]) {
        let mut p = paths::parent(path).to_vec();
        let mut chain = Vec::new();
        while p != b"/" {
            chain.push(p.clone());
            p = paths::parent(&p).to_vec();
        }
        for d in chain.into_iter().rev() {
            self.need(&d, Kind::Dir);
        }
    }

    /// `path` existed before this point: if nothing happened to it yet, it
    /// existed before the capture and goes into the skeleton.
    fn need(&mut self, path: &[u8], kind: Kind) {
        // `/` becomes the test directory, which init makes anyway.
        if path == b"/" {
            return;
        }
        match self.known.get(path) {
            // A stat's success said only that it exists: proof that it is a
            // directory (a path below it, mkdir's EEXIST) comes later.
            Some(Known::Exists(Kind::File)) if kind == Kind::Dir => self.mark_dir(path),
            Some(Known::Exists(_)) | Some(Known::Absent) => {}
            None if self.under_run_made(path) => {
                self.known.insert(path.to_vec(), Known::Exists(kind));
            }
            None => {
                self.need_parents(path);
                self.known.insert(path.to_vec(), Known::Exists(kind));
                self.init.insert(path.to_vec(), (kind, 0));
            }
        }
    }

    fn grow(&mut self, path: &[u8], size: u64) {
        if let Some((Kind::File, s)) = self.init.get_mut(path) {
            *s = (*s).max(size);
        }
    }

    fn mark_dir(&mut self, path: &[u8]) {
        if let Some((k, s)) = self.init.get_mut(path) {
            *k = Kind::Dir;
            *s = 0;
        }
        if let Some(Known::Exists(k)) = self.known.get_mut(path) {
            *k = Kind::Dir;
        }
    }

    fn set(&mut self, path: &[u8], k: Known) {
        self.known.insert(path.to_vec(), k);
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) {
        self.created.insert(to.to_vec());
        let kind = match self.known.get(from) {
            Some(Known::Exists(k)) => *k,
            _ => Kind::File,
        };
        self.need(from, kind);
        self.need_parents(to);
        // Entries below a renamed directory move with it.
        let moved: Vec<(Vec<u8>, Known)> = self
            .known
            .iter()
            .filter(|(p, _)| paths::is_under(p, from) && p.as_slice() != from)
            .map(|(p, k)| ([to, &p[from.len()..]].concat(), *k))
            .collect();
        let under: Vec<Vec<u8>> = self
            .known
            .keys()
            .filter(|p| paths::is_under(p, from))
            .cloned()
            .collect();
        for p in under {
            self.known.insert(p, Known::Absent);
        }
        for (p, k) in moved {
            self.known.insert(p, k);
        }
        self.set(to, Known::Exists(kind));
    }

    /// Updates the model for one successful or failed path operation.
    /// Success means the path (or, for creations, its parent) existed;
    /// ENOENT says only that some component was missing, so it adds
    /// nothing to the skeleton.
    fn model(&mut self, e: &Event, path: &[u8]) {
        let ok = e.ret >= 0;
        let errno = (-e.ret) as i32;
        if !ok && errno == libc::ENOENT {
            if !matches!(self.known.get(path), Some(Known::Exists(_))) {
                self.set(path, Known::Absent);
            }
            return;
        }
        // Failures that prove the entry exists (EEXIST, EINVAL from
        // readlink on a non-link, ENOTEMPTY, EISDIR); others prove nothing.
        let exists_anyway =
            [libc::EEXIST, libc::EINVAL, libc::ENOTEMPTY, libc::EISDIR].contains(&errno);
        match e.op {
            Op::Open | Op::Openat | Op::Creat => {
                let flags = if e.op == Op::Creat {
                    libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC
                } else {
                    e.a as i32
                };
                let kind = if flags & libc::O_DIRECTORY != 0 {
                    Kind::Dir
                } else {
                    Kind::File
                };
                if ok
                    && flags & libc::O_CREAT != 0
                    && !matches!(self.known.get(path), Some(Known::Exists(_)))
                {
                    // The workload is ready to create it: the replay creates it too.
                    self.create(path, Kind::File);
                } else if ok || exists_anyway {
                    self.need(path, kind);
                }
            }
            Op::Mkdir | Op::Mkdirat => {
                if ok {
                    self.create(path, Kind::Dir);
                } else if exists_anyway {
                    self.need(path, Kind::Dir);
                }
            }
            Op::Symlink | Op::Symlinkat => {
                if ok {
                    self.create(path, Kind::Symlink);
                } else if exists_anyway {
                    self.need(path, Kind::File);
                }
            }
            Op::Rmdir | Op::Unlink | Op::Unlinkat => {
                let dir = e.op == Op::Rmdir
                    || (e.op == Op::Unlinkat && e.a & i64::from(libc::AT_REMOVEDIR) != 0);
                if ok || exists_anyway {
                    self.need(path, if dir { Kind::Dir } else { Kind::File });
                }
                if ok {
                    self.set(path, Known::Absent);
                }
            }
            _ => {
                if ok || exists_anyway {
                    self.need(path, Kind::File);
                }
            }
        }
    }

    /// `path` is created by the workload: its parent must exist.
    fn create(&mut self, path: &[u8], kind: Kind) {
        if path == b"/" {
            return;
        }
        self.need_parents(path);
        self.created.insert(path.to_vec());
        self.set(path, Known::Exists(kind));
    }

    /// Whether an ancestor of `path` was created or removed by the workload
    /// (then `path` cannot have existed before the capture).
    fn under_run_made(&self, path: &[u8]) -> bool {
        let mut p = paths::parent(path);
        while p != b"/" {
            if self.created.contains(p) || self.known.get(p) == Some(&Known::Absent) {
                return true;
            }
            p = paths::parent(p);
        }
        false
    }

    fn new_vfd(&mut self) -> u64 {
        self.next_vfd += 1;
        self.next_vfd
    }
}

/// A forked child's copy of its parent's descriptor `f`, forked at `t_fork`.
fn inherit(f: &Fd, t_fork: u64) -> Fd {
    match f {
        Fd::Tracked {
            vfd,
            path,
            pos,
            flags,
        } => Fd::Inherited {
            from: *vfd,
            path: path.clone(),
            pos: *pos,
            flags: *flags,
            t_fork,
        },
        // Inherited again before use: a copy of the same original, made
        // at this fork.
        Fd::Inherited {
            from,
            path,
            pos,
            flags,
            ..
        } => Fd::Inherited {
            from: *from,
            path: path.clone(),
            pos: *pos,
            flags: *flags,
            t_fork,
        },
        Fd::Pseudo => Fd::Pseudo,
    }
}

/// Generates the replay of a capture.
pub fn generate(
    cap: &Capture,
    cfg: &GenerateConfig,
) -> Result<(Replay, GenerateReport), GenerateError> {
    if !crate::confine::valid_name(&cfg.name) {
        return Err(GenerateError::Name(cfg.name.clone()));
    }
    if let Some(u) = &cfg.user {
        if u.is_empty() || u.contains(char::is_whitespace) || u.contains('|') {
            return Err(GenerateError::User(u.clone()));
        }
    }
    if let Some(w) = &cfg.wd_base {
        if !w.starts_with('/') || w.contains(['|', '\n', '\r']) {
            return Err(GenerateError::WdBase(w.clone()));
        }
    }
    // sched_process_fork reports new threads too: a "child" that never
    // shows up as a process in the capture inherits nothing.
    let processes: HashSet<u32> = cap
        .events
        .iter()
        .filter(|e| e.op != Op::Fork)
        .map(|e| e.pid)
        .collect();
    let mut st = State {
        cfg,
        mounts: cap.mounts.clone(),
        fds: HashMap::new(),
        known: HashMap::new(),
        created: HashSet::new(),
        init: BTreeMap::new(),
        next_vfd: 0,
        report: GenerateReport {
            events: cap.events.len(),
            lost_in_capture: cap.lost,
            ..GenerateReport::default()
        },
    };
    // Descriptor state follows completion order (a close on one thread and
    // an open reusing the number on another are ordered by their exits);
    // the replay keeps each thread's order of entry.
    let mut order: Vec<&Event> = cap.events.iter().collect();
    order.sort_by_key(|e| (e.t_ns + e.dur_ns, e.t_ns));
    let mut pids: HashMap<u32, u32> = HashMap::new();
    let mut tids: HashMap<u32, u32> = HashMap::new();
    let mut out: Vec<ReplayOp> = Vec::new();
    for e in order {
        *st.report
            .capture_ops
            .entry(e.op.name().to_owned())
            .or_default() += 1;
        if e.op == Op::Fork {
            let child = e.ret as u32;
            if !processes.contains(&child) {
                continue;
            }
            let inherited: Vec<(i64, Fd)> = st
                .fds
                .iter()
                .filter(|((p, _), _)| *p == e.pid)
                .map(|((_, fd), f)| (*fd, inherit(f, e.t_ns)))
                .collect();
            for (fd, f) in inherited {
                st.fds.insert((child, fd), f);
            }
            continue;
        }
        if e.op.cwd() {
            st.report.not_replayed += 1;
            continue;
        }
        let path = e.path.as_deref().map(paths::normalize);
        let path2 = e.path2.as_deref().map(paths::normalize);
        if e.op == Op::Sync {
            // sync names no file; kept as is.
        } else if e.op.uses_fd() {
            match st.fds.get(&(e.pid, e.fd)) {
                None => {
                    st.report.dropped_unknown_fd += 1;
                    continue;
                }
                Some(Fd::Pseudo) => {
                    st.report.dropped_pseudo_fs += 1;
                    if e.op == Op::Close {
                        st.fds.remove(&(e.pid, e.fd));
                    }
                    continue;
                }
                Some(Fd::Inherited { .. }) | Some(Fd::Tracked { .. }) => {}
            }
        } else {
            let needs_second = matches!(
                e.op,
                Op::Rename | Op::Renameat | Op::Renameat2 | Op::Symlink | Op::Symlinkat
            );
            let p = match &path {
                Some(p) if !needs_second || e.path2.is_some() => p,
                _ => {
                    st.report.dropped_unreadable_path += 1;
                    continue;
                }
            };
            let outside = |p: &Option<Vec<u8>>| p.as_ref().is_some_and(|p| st.is_pseudo(p));
            let both = matches!(e.op, Op::Rename | Op::Renameat | Op::Renameat2);
            let on_entry = matches!(
                e.op,
                Op::Readlink
                    | Op::Readlinkat
                    | Op::Lstat
                    | Op::Unlink
                    | Op::Unlinkat
                    | Op::Rmdir
                    | Op::Rename
                    | Op::Renameat
                    | Op::Renameat2
                    | Op::Mkdir
                    | Op::Mkdirat
                    | Op::Symlink
                    | Op::Symlinkat
                    | Op::Lchown
            );
            let is_mount = |p: &[u8]| p == b"/" || st.mounts.iter().any(|m| m.point == p);
            if on_entry && (is_mount(p) || path2.as_deref().is_some_and(|q| both && is_mount(q))) {
                st.report.dropped_mount_point += 1;
                continue;
            }
            if st.is_pseudo(p) || (both && outside(&path2)) {
                st.report.dropped_pseudo_fs += 1;
                if e.op.opens() && e.ret >= 0 {
                    st.fds.insert((e.pid, e.ret), Fd::Pseudo);
                }
                continue;
            }
        }
        let vpid = {
            let n = pids.len() as u32 + 1;
            *pids.entry(e.pid).or_insert(n)
        };
        let vtid = {
            let n = tids.len() as u32 + 1;
            *tids.entry(e.tid).or_insert(n)
        };
        let mut op = ReplayOp {
            t_ns: e.t_ns,
            vpid,
            vtid,
            op: e.op,
            vfd: 0,
            ret: e.ret,
            path: path.as_deref().map(|p| st.rewrite(p)),
            path2: None,
            a: e.a,
            b: e.b,
            c: e.c,
        };
        if e.op.uses_fd() {
            let key = (e.pid, e.fd);
            if let Some(Fd::Inherited {
                from,
                path,
                pos,
                flags,
                t_fork,
            }) = st.fds.get(&key).cloned()
            {
                // The child's first use of a descriptor it inherited: its
                // own copy of the parent's, made when it was forked.
                let v = st.new_vfd();
                out.push(ReplayOp {
                    t_ns: t_fork,
                    vpid,
                    vtid,
                    op: Op::Fork,
                    vfd: v,
                    ret: 0,
                    path: Some(st.rewrite(&path)),
                    path2: None,
                    a: from as i64,
                    b: flags,
                    c: pos as i64,
                });
                *st.report.replay_ops.entry("fork".to_owned()).or_default() += 1;
                st.report.inherited_fds += 1;
                st.fds.insert(
                    key,
                    Fd::Tracked {
                        vfd: v,
                        path,
                        pos,
                        flags,
                    },
                );
            }
            let (vfd, fpath, pos, flags) = match st.fds.get(&key) {
                Some(Fd::Tracked {
                    vfd,
                    path,
                    pos,
                    flags,
                }) => (*vfd, path.clone(), *pos, *flags),
                _ => unreachable!("checked above"),
            };
            op.vfd = vfd;
            op.path = Some(st.rewrite(&fpath));
            let n = if e.ret > 0 { e.ret as u64 } else { 0 };
            let mut newpos = pos;
            match e.op {
                Op::Read | Op::Readv | Op::Write | Op::Writev => {
                    newpos = pos + n;
                    if e.op.reads() {
                        st.grow(&fpath, newpos);
                    }
                    op.a = e.ret.max(0);
                }
                Op::Pread64 | Op::Pwrite64 => {
                    if e.op.reads() {
                        st.grow(&fpath, e.b.max(0) as u64 + n);
                    }
                    op.a = e.ret.max(0);
                }
                Op::Lseek if e.ret >= 0 => {
                    newpos = e.ret as u64;
                    if e.b == i64::from(libc::SEEK_END) {
                        st.grow(&fpath, newpos);
                    }
                }
                Op::Getdents64 => st.mark_dir(&fpath),
                o if e.ret >= 0 && (o.dups() || (o == Op::Fcntl && (e.a == 0 || e.a == 1030))) => {
                    // dup* and F_DUPFD(_CLOEXEC): a new descriptor on the same
                    // file, whose virtual number goes in c.
                    let v = st.new_vfd();
                    st.fds.insert(
                        (e.pid, e.ret),
                        Fd::Tracked {
                            vfd: v,
                            path: fpath.clone(),
                            pos,
                            flags,
                        },
                    );
                    op.c = v as i64;
                }
                Op::Close => {
                    st.fds.remove(&key);
                }
                _ => {}
            }
            if let Some(Fd::Tracked { pos, .. }) = st.fds.get_mut(&key) {
                *pos = newpos;
            }
        } else if let Some(p) = &path {
            let p = p.clone();
            match e.op {
                Op::Rename | Op::Renameat | Op::Renameat2 => {
                    let to = path2.clone().unwrap_or_default();
                    op.path2 = Some(st.rewrite(&to));
                    if e.ret >= 0 {
                        st.rename(&p, &to);
                    } else {
                        st.need_parents(&p);
                    }
                }
                Op::Symlink | Op::Symlinkat => {
                    // The target is content, kept verbatim unless absolute:
                    // then it points into the test tree too.
                    op.path2 = match &e.path2 {
                        Some(t) if t.first() == Some(&b'/') && !st.is_pseudo(t) => {
                            Some(st.rewrite(&paths::normalize(t)))
                        }
                        t => t.clone(),
                    };
                    st.model(e, &p);
                }
                _ => st.model(e, &p),
            }
            if e.op.opens() && e.ret >= 0 {
                let v = st.new_vfd();
                op.vfd = v;
                let flags = if e.op == Op::Creat {
                    i64::from(libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC)
                } else {
                    e.a
                };
                st.fds.insert(
                    (e.pid, e.ret),
                    Fd::Tracked {
                        vfd: v,
                        path: p.clone(),
                        pos: 0,
                        flags,
                    },
                );
                if e.a & i64::from(libc::O_DIRECTORY) != 0 {
                    st.mark_dir(&p);
                }
            }
        }
        *st.report
            .replay_ops
            .entry(e.op.name().to_owned())
            .or_default() += 1;
        out.push(op);
    }
    if out.is_empty() {
        return Err(GenerateError::Empty(cap.events.len()));
    }
    out.sort_by_key(|o| o.t_ns);
    let t0 = out[0].t_ns;
    let end = cap
        .events
        .iter()
        .filter(|e| e.op != Op::Fork)
        .map(|e| e.t_ns + e.dur_ns)
        .max()
        .unwrap_or(t0);
    for o in &mut out {
        o.t_ns -= t0;
    }
    // An entry with entries below it in the skeleton is a directory.
    let keys: Vec<Vec<u8>> = st.init.keys().cloned().collect();
    for k in &keys {
        let p = paths::parent(k).to_vec();
        if p != b"/" {
            st.mark_dir(&p);
        }
    }
    let mut init = Vec::new();
    for (p, (kind, size)) in &st.init {
        // Parents above a kept mount point (on a dropped filesystem) are
        // the system's, not the workload's; a mount point is its tree,
        // which init makes.
        if st.is_pseudo(p) || st.mounts.iter().any(|m| m.point == *p) {
            continue;
        }
        let rp = st.rewrite(p);
        match kind {
            Kind::Dir => {
                st.report.init_dirs += 1;
                init.push(InitEntry::Dir(rp));
            }
            // A symlink that existed before is unknown in its target: a file stands in.
            Kind::File | Kind::Symlink => {
                st.report.init_files += 1;
                st.report.init_bytes += size;
                init.push(InitEntry::File {
                    size: *size,
                    path: rp,
                });
            }
        }
    }
    // The `fork` copies are the replay's own operations, not captured events.
    st.report.kept = out.len() - st.report.inherited_fds;
    st.report.pids = pids.iter().map(|(r, v)| (*r, *v)).collect();
    st.report.tids = tids.iter().map(|(r, v)| (*r, *v)).collect();
    let replay = Replay {
        name: cfg.name.clone(),
        user: cfg.user.clone(),
        wd_base: cfg.wd_base.clone(),
        vpids: pids.len() as u32,
        vtids: tids.len() as u32,
        source_ops: out.len() as u64,
        source_span_ns: end.saturating_sub(t0),
        init,
        ops: out,
    };
    Ok((replay, st.report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic capture (`tests/fixtures/inherit.capture`): process 10
    /// creates /w/f as 3 and writes 100 bytes, makes a thread (tid 12, also
    /// reported as a fork) and forks 11; 11 forks 13 before using anything;
    /// 11 writes 50 bytes to its inherited 3 and closes it, 13 writes 7,
    /// then 10 writes 20 and closes its own 3, and 13 closes its copy last.
    fn inheriting_capture() -> Capture {
        crate::capture_format::read(&include_bytes!("../tests/fixtures/inherit.capture")[..])
            .expect("the fixture parses")
    }

    #[test]
    fn a_forked_child_copies_the_descriptors_it_inherited_on_first_use() {
        let cfg = GenerateConfig {
            name: "t".into(),
            keep_tmpfs: false,
            wd_base: None,
            user: None,
        };
        let (rep, report) = generate(&inheriting_capture(), &cfg).unwrap();
        type Row<'a> = (u64, u32, u32, &'a str, u64, i64, i64, i64);
        let ops: Vec<Row> = rep
            .ops
            .iter()
            .map(|o| (o.t_ns, o.vpid, o.vtid, o.op.name(), o.vfd, o.a, o.b, o.c))
            .collect();
        let creat = i64::from(libc::O_CREAT | libc::O_WRONLY);
        assert_eq!(
            ops,
            [
                (0, 1, 1, "openat", 1, creat, 420, 0),
                (1000, 1, 1, "write", 1, 100, 0, 0),
                // The thread is no process: no copies for it.
                (3000, 1, 2, "stat", 0, 0, 0, 0),
                // 11's copy of 1, made at its fork (t 5), at offset 100.
                (4000, 2, 3, "fork", 2, 1, creat, 100),
                // 13's copy of the same file description, made at its fork.
                (5000, 3, 4, "fork", 3, 1, creat, 100),
                (6000, 2, 3, "write", 2, 50, 0, 0),
                // The child closes its own copy ...
                (7000, 2, 3, "close", 2, 0, 0, 0),
                (8000, 3, 4, "write", 3, 7, 0, 0),
                // ... and the parent's still writes.
                (9000, 1, 1, "write", 1, 20, 0, 0),
                (10000, 1, 1, "close", 1, 0, 0, 0),
                (11000, 3, 4, "close", 3, 0, 0, 0),
            ]
        );
        assert!(rep
            .ops
            .iter()
            .all(|o| o.path.as_deref() == Some(&b"/.ioriot/t/w/f"[..])));
        assert_eq!(report.inherited_fds, 2);
        assert_eq!(report.dropped_unknown_fd, 0);
        assert_eq!(report.kept, 9);
        assert_eq!(report.replay_ops["fork"], 2);
        assert_eq!(report.pids, BTreeMap::from([(10, 1), (11, 2), (13, 3)]));
        assert_eq!((rep.vpids, rep.vtids), (3, 4));
    }

    /// fio's start: it stats its directory (made before the capture),
    /// tries to make it, and creates its file in it. The directory's
    /// skeleton entry is a directory, though the stat came first.
    #[test]
    fn a_path_first_stat_then_a_parent_is_a_directory_in_the_skeleton() {
        let text = "#ioriot-capture 1\n#fields t_ns dur_ns pid tid op ret fd path path2 a b c\n\
            1000 1000 10 10 newfstatat 0 -100 /d - 0 0 0\n\
            2000 1000 10 10 mkdir -17 -1 /d - 448 0 0\n\
            3000 1000 10 10 openat 3 -100 /d/data - 577 420 0\n\
            #end events=3 lost=0\n";
        let cap = crate::capture_format::read(text.as_bytes()).expect("the capture parses");
        let cfg = GenerateConfig {
            name: "t".into(),
            keep_tmpfs: false,
            wd_base: None,
            user: None,
        };
        let (rep, _) = generate(&cap, &cfg).unwrap();
        assert_eq!(rep.init, [InitEntry::Dir(b"/.ioriot/t/d".to_vec())]);
    }

    #[test]
    fn descriptors_a_child_never_uses_cost_nothing() {
        let cfg = GenerateConfig {
            name: "t".into(),
            keep_tmpfs: false,
            wd_base: None,
            user: None,
        };
        let mut cap = inheriting_capture();
        // Without 11's and 13's operations the forks copy nothing.
        cap.events.retain(|e| e.op == Op::Fork || e.pid == 10);
        let (rep, report) = generate(&cap, &cfg).unwrap();
        assert_eq!(report.inherited_fds, 0);
        assert!(rep.ops.iter().all(|o| o.op != Op::Fork && o.vpid == 1));
    }
}
