//! fio's data files, learnt once at load time from fio's command line
//! (`/proc/self/cmdline`) and the job files it names. They are the default
//! set of claimed paths, which `FIO_INTERCEPT_PATTERN` adds to:
//!
//! - `<job>.<N>.<M>` (fio's default file names, `$jobname.$jobnum.$filenum`)
//!   in the working directory or in a directory given by `directory=`, for
//!   every job named by `name=` or a job file's `[section]`;
//! - every file given by `filename=` (`:`-separated, `\:` escapes a colon),
//!   relative names taken against the working directory and every
//!   `directory=`;
//!
//! but never a path fio or the system owns: `/proc`, `/sys`, `/dev` (except
//! `FIO_MEM_DEVICE` itself when fio names it), `/tmp/fio*` (fio's status
//! and trigger files directly in /tmp) or `*.state` (fio's verify state). Only a process
//! whose `argv[0]` is fio learns anything, so other programs that inherit
//! `LD_PRELOAD` keep their files.
//!
//! Everything is copied into a fixed arena in the constructor; the check at
//! open time only compares bytes.

use crate::log::ErrnoText;
use crate::path::{AbsPath, PATH_BUF};

/// Bytes kept for names and resolved paths.
const ARENA: usize = 64 * 1024;
/// Names and paths kept.
const MAX_ENTRIES: usize = 256;
/// Most bytes read of the command line or of one job file.
const READ_MAX: usize = 1 << 20;

/// Why fio's data files are not (all) known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LearnError {
    #[error("Cannot read /proc/self/cmdline ({0}), so fio's data files are unknown and only FIO_INTERCEPT_PATTERN is claimed; set it to match fio's files (e.g. FIO_INTERCEPT_PATTERN='/path/to/dir/*').")]
    Cmdline(ErrnoText),
    #[error("Cannot map a buffer to read fio's command line ({0}); only FIO_INTERCEPT_PATTERN is claimed.")]
    Buffer(ErrnoText),
    #[error("fio's command line and job files name more files than the library keeps ({MAX_ENTRIES} names in {ARENA} bytes); set FIO_INTERCEPT_PATTERN to match the rest.")]
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A job name: its default files are `<name>.<N>.<M>`.
    Job,
    /// `directory=` as written (relative or absolute).
    DirectoryArg,
    /// `filename=` as written.
    FilenameArg,
    /// An absolute, normalised directory holding default-named files.
    Directory,
    /// An absolute, normalised data file.
    File,
    /// `FIO_MEM_DEVICE`, absolute and normalised.
    Device,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    start: usize,
    len: usize,
}

const NO_ENTRY: Entry = Entry {
    kind: Kind::Job,
    start: 0,
    len: 0,
};

/// fio's data files (see the module documentation).
pub struct FioFiles {
    arena: [u8; ARENA],
    used: usize,
    entries: [Entry; MAX_ENTRIES],
    count: usize,
    full: bool,
}

impl FioFiles {
    pub const fn empty() -> Self {
        FioFiles {
            arena: [0; ARENA],
            used: 0,
            entries: [NO_ENTRY; MAX_ENTRIES],
            count: 0,
            full: false,
        }
    }

    /// Learns fio's data files from this process's command line. `device`
    /// is `FIO_MEM_DEVICE` (empty when unset). Nothing is learnt when the
    /// program is not fio.
    pub fn learn(&mut self, device: &[u8]) -> Result<(), LearnError> {
        let mut cwd_buf = [0u8; PATH_BUF];
        // SAFETY: getcwd writes at most 4096 bytes into the local buffer.
        let r = unsafe { libc::syscall(libc::SYS_getcwd, cwd_buf.as_mut_ptr(), 4096) };
        let cwd = if r > 0 {
            let n = cwd_buf.iter().position(|&c| c == 0).unwrap_or(0);
            &cwd_buf[..n]
        } else {
            // A removed working directory: relative names cannot be placed.
            &cwd_buf[..0]
        };
        let cmdline = Scratch::new()?;
        let args = cmdline
            .read(b"/proc/self/cmdline\0")
            .map_err(|e| LearnError::Cmdline(ErrnoText(e)))?;
        let mut argv = args.split(|&c| c == 0);
        let program = argv.next().unwrap_or_default();
        let name = program.rsplit(|&c| c == b'/').next().unwrap_or_default();
        if !name.starts_with(b"fio") {
            return Ok(());
        }
        let job_file = Scratch::new()?;
        let mut options_ended = false;
        while let Some(arg) = argv.next() {
            if arg.is_empty() {
                continue;
            }
            if !options_ended && arg == b"--" {
                options_ended = true;
            } else if !options_ended && arg.len() > 1 && arg[0] == b'-' {
                // fio takes `--opt=v`, `--opt v` and the one-dash forms
                // (getopt_long_only).
                let opt = arg.strip_prefix(b"--").unwrap_or(&arg[1..]);
                let (key, value) = match opt.iter().position(|&c| c == b'=') {
                    Some(i) => (&opt[..i], Some(&opt[i + 1..])),
                    None => (opt, None),
                };
                if option_kind(key).is_some() {
                    match value.or_else(|| argv.next()) {
                        Some(v) => self.add_option(key, v),
                        None => break,
                    }
                }
            } else if arg != b"-" {
                // A job file, or the value of an option this does not know
                // (then it is usually not a readable file, or holds no job
                // lines, and adds nothing).
                self.learn_job_file(arg, &job_file);
            }
        }
        self.resolve(cwd, device);
        if self.full {
            Err(LearnError::Full)
        } else {
            Ok(())
        }
    }

    /// Whether `abs` (absolute, normalised) is one of fio's data files.
    pub fn claims(&self, abs: &[u8]) -> bool {
        if self.count == 0 {
            return false;
        }
        if owned_by_fio_or_system(abs) && !self.has(Kind::Device, abs) {
            return false;
        }
        let (dir, base) = match abs.iter().rposition(|&c| c == b'/') {
            Some(0) => (&abs[..1], &abs[1..]),
            Some(i) => (&abs[..i], &abs[i + 1..]),
            None => return false,
        };
        self.has(Kind::File, abs)
            || (self.has(Kind::Directory, dir)
                && self.each(Kind::Job).any(|job| is_default_name(base, job)))
    }

    /// The job names, directories and files, for the FIO_DEBUG report.
    pub fn describe(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let mut any = false;
        for job in self.each(Kind::Job) {
            write!(
                out,
                "{}{}.N.M",
                if any { ", " } else { "" },
                crate::log::Bytes(job)
            )?;
            any = true;
        }
        if any {
            write!(out, " in")?;
            for (i, dir) in self.each(Kind::Directory).enumerate() {
                write!(
                    out,
                    "{}{}",
                    if i > 0 { ", " } else { " " },
                    crate::log::Bytes(dir)
                )?;
            }
        }
        for file in self.each(Kind::File) {
            write!(
                out,
                "{}{}",
                if any { "; " } else { "" },
                crate::log::Bytes(file)
            )?;
            any = true;
        }
        if !any {
            write!(out, "none (not fio, or no job names)")?;
        }
        Ok(())
    }

    fn each(&self, kind: Kind) -> impl Iterator<Item = &[u8]> {
        self.entries[..self.count]
            .iter()
            .filter(move |e| e.kind == kind)
            .map(|e| &self.arena[e.start..e.start + e.len])
    }

    fn has(&self, kind: Kind, bytes: &[u8]) -> bool {
        self.each(kind).any(|b| b == bytes)
    }

    /// Keeps `bytes` as an entry of `kind` (once).
    fn push(&mut self, kind: Kind, bytes: &[u8]) {
        if bytes.is_empty() || self.has(kind, bytes) {
            return;
        }
        if self.count == MAX_ENTRIES || ARENA - self.used < bytes.len() {
            self.full = true;
            return;
        }
        self.arena[self.used..self.used + bytes.len()].copy_from_slice(bytes);
        self.entries[self.count] = Entry {
            kind,
            start: self.used,
            len: bytes.len(),
        };
        self.used += bytes.len();
        self.count += 1;
    }

    /// Keeps the value of option `key` (`name`, `directory`, `filename`).
    fn add_option(&mut self, key: &[u8], value: &[u8]) {
        let Some(kind) = option_kind(key) else {
            return;
        };
        if kind == Kind::Job {
            self.push(Kind::Job, value);
            return;
        }
        // A `:`-separated list; `\:` is a colon inside a name.
        let mut item = [0u8; PATH_BUF];
        let mut len = 0;
        let mut i = 0;
        while i <= value.len() {
            let c = value.get(i).copied();
            match c {
                Some(b'\\') if value.get(i + 1) == Some(&b':') => {
                    if len < item.len() {
                        item[len] = b':';
                        len += 1;
                    }
                    i += 2;
                    continue;
                }
                Some(b':') | None => {
                    self.push(kind, &item[..len]);
                    len = 0;
                }
                Some(c) => {
                    if len < item.len() {
                        item[len] = c;
                        len += 1;
                    }
                }
            }
            i += 1;
        }
    }

    /// Learns the jobs, `name=`, `directory=` and `filename=` of an INI job
    /// file; unreadable files are skipped (fio reports them itself).
    fn learn_job_file(&mut self, path: &[u8], buf: &Scratch) {
        let mut c_path = [0u8; PATH_BUF];
        if path.len() >= c_path.len() {
            return;
        }
        c_path[..path.len()].copy_from_slice(path);
        let Ok(text) = buf.read(&c_path[..=path.len()]) else {
            return;
        };
        for line in text.split(|&c| c == b'\n') {
            let line = trim(line);
            if line.is_empty() || line[0] == b';' || line[0] == b'#' {
                continue;
            }
            if let Some(section) = line.strip_prefix(b"[").and_then(|l| l.strip_suffix(b"]")) {
                let section = trim(section);
                if section != b"global" {
                    self.push(Kind::Job, section);
                }
            } else if let Some(i) = line.iter().position(|&c| c == b'=') {
                self.add_option(trim(&line[..i]), trim(&line[i + 1..]));
            }
        }
    }

    /// Turns the directories and file names as written into absolute paths.
    fn resolve(&mut self, cwd: &[u8], device: &[u8]) {
        if !cwd.is_empty() {
            if let Some(abs) = AbsPath::join(cwd, device).filter(|_| !device.is_empty()) {
                self.push(Kind::Device, abs.as_bytes());
            }
            self.push(Kind::Directory, cwd);
        }
        let written = self.count;
        for d in 0..written {
            let e = self.entries[d];
            if e.kind != Kind::DirectoryArg {
                continue;
            }
            let dir = &self.arena[e.start..e.start + e.len];
            if dir[0] != b'/' && cwd.is_empty() {
                continue;
            }
            if let Some(abs) = AbsPath::join(cwd, dir) {
                self.push(Kind::Directory, abs.as_bytes());
            }
        }
        let with_dirs = self.count;
        for f in 0..written {
            let e = self.entries[f];
            if e.kind != Kind::FilenameArg {
                continue;
            }
            for d in 0..with_dirs {
                let dir = self.entries[d];
                if dir.kind != Kind::Directory {
                    continue;
                }
                let file = &self.arena[e.start..e.start + e.len];
                let base = &self.arena[dir.start..dir.start + dir.len];
                if let Some(abs) = AbsPath::join(base, file) {
                    self.push(Kind::File, abs.as_bytes());
                }
            }
        }
    }
}

/// The option whose value names jobs, directories or files.
fn option_kind(key: &[u8]) -> Option<Kind> {
    match key {
        b"name" => Some(Kind::Job),
        b"directory" => Some(Kind::DirectoryArg),
        b"filename" => Some(Kind::FilenameArg),
        _ => None,
    }
}

/// Whether `base` is fio's default name of a file of job `job`:
/// `<job>.<digits>.<digits>`.
fn is_default_name(base: &[u8], job: &[u8]) -> bool {
    let Some(rest) = base.strip_prefix(job).and_then(|r| r.strip_prefix(b".")) else {
        return false;
    };
    let mut parts = rest.split(|&c| c == b'.');
    let digits =
        |p: Option<&[u8]>| p.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// Paths never claimed by the default set: kernel and device trees, fio's
/// own files directly in /tmp, and fio's verify state.
fn owned_by_fio_or_system(abs: &[u8]) -> bool {
    let under = |dir: &[u8]| {
        abs.strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
    };
    let in_tmp_named_fio = abs
        .strip_prefix(b"/tmp/fio")
        .is_some_and(|rest| !rest.contains(&b'/'));
    under(b"/proc")
        || under(b"/sys")
        || under(b"/dev")
        || in_tmp_named_fio
        || abs.ends_with(b".state")
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// An anonymous mapping of `READ_MAX` bytes to read a file into (pages are
/// only touched as far as the file goes), unmapped when dropped.
struct Scratch {
    base: *mut u8,
}

impl Scratch {
    fn new() -> Result<Scratch, LearnError> {
        // SAFETY: a new private anonymous mapping touches no existing memory;
        // failure is checked.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                READ_MAX,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(LearnError::Buffer(ErrnoText(crate::errno::get())));
        }
        Ok(Scratch { base: p.cast() })
    }

    /// Reads up to `READ_MAX` bytes of the regular file at NUL-terminated
    /// `c_path` (replacing what an earlier read left), or the errno (`EINVAL`
    /// for anything but a regular file; /proc files are regular).
    fn read(&self, c_path: &[u8]) -> Result<&[u8], i32> {
        debug_assert_eq!(c_path.last(), Some(&0));
        // SAFETY: openat of a NUL-terminated path.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c_path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(crate::errno::get());
        }
        // Only regular files are read: an argument that is not a job file
        // may name a FIFO or a terminal (`--output /dev/tty`), and reading
        // it would block.
        //
        // SAFETY: all-zero bytes are a valid `struct stat`.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: fstat writes one `struct stat` into the local.
        let stat_failed = unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st) } != 0;
        if stat_failed || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            // SAFETY: closes the descriptor opened above.
            unsafe { libc::syscall(libc::SYS_close, fd) };
            return Err(libc::EINVAL);
        }
        let mut len = 0;
        let result = loop {
            let rest = READ_MAX - len;
            // SAFETY: `len < READ_MAX`, so `base + len .. base + READ_MAX` is
            // inside the mapping this reads into, which `self` owns.
            let n = unsafe { libc::syscall(libc::SYS_read, fd, self.base.add(len), rest) };
            if n < 0 {
                break Err(crate::errno::get());
            }
            len += n as usize;
            if n == 0 || len == READ_MAX {
                break Ok(());
            }
        };
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        result?;
        // SAFETY: `len` bytes of the mapping were written by read(2), and
        // the mapping lives as long as `self`.
        Ok(unsafe { core::slice::from_raw_parts(self.base, len) })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`; no slice of it outlives
        // `self` (`read` borrows `self`).
        unsafe { libc::munmap(self.base.cast(), READ_MAX) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learnt(options: &[(&[u8], &[u8])], cwd: &[u8]) -> Box<FioFiles> {
        let mut f = Box::new(FioFiles::empty());
        for (k, v) in options {
            f.add_option(k, v);
        }
        f.resolve(cwd, b"/dev/dax0.0");
        f
    }

    #[test]
    fn default_names_in_the_working_directory_or_a_directory_option() {
        let f = learnt(&[(b"name", b"test"), (b"directory", b"data:/mnt/x")], b"/w");
        assert!(f.claims(b"/w/test.0.0"));
        assert!(f.claims(b"/w/data/test.3.12"));
        assert!(f.claims(b"/mnt/x/test.0.1"));
        assert!(!f.claims(b"/elsewhere/test.0.0"));
        assert!(!f.claims(b"/w/test.0"));
        assert!(!f.claims(b"/w/test.0.0.1"));
        assert!(!f.claims(b"/w/test.a.0"));
        assert!(!f.claims(b"/w/test"));
        assert!(!f.claims(b"/w/local-test-0-verify.state"));
        assert!(!f.claims(b"/w/other.0.0"));
    }

    #[test]
    fn filenames_absolute_relative_and_escaped() {
        let f = learnt(
            &[(b"filename", b"/tmp/a.dat:rel\\:x"), (b"directory", b"/d")],
            b"/w",
        );
        assert!(f.claims(b"/tmp/a.dat"));
        assert!(f.claims(b"/d/rel:x"));
        assert!(f.claims(b"/w/rel:x"));
        assert!(!f.claims(b"/w/rel"));
    }

    #[test]
    fn never_system_or_fio_state_paths_but_the_device_when_named() {
        let f = learnt(
            &[
                (b"name", b"fio"),
                (
                    b"filename",
                    b"/dev/null:/proc/x:/tmp/fio-dump-status:v.state:/dev/dax0.0",
                ),
            ],
            b"/tmp",
        );
        assert!(!f.claims(b"/dev/null"));
        assert!(!f.claims(b"/proc/x"));
        assert!(!f.claims(b"/tmp/fio-dump-status"));
        assert!(!f.claims(b"/tmp/fio.0.0"), "/tmp/fio* is fio's");
        assert!(!f.claims(b"/tmp/v.state"));
        assert!(f.claims(b"/dev/dax0.0"));
        let scratch = learnt(&[(b"name", b"test")], b"/tmp/fio-scratch");
        assert!(
            scratch.claims(b"/tmp/fio-scratch/test.0.0"),
            "only files directly in /tmp"
        );
    }

    #[test]
    fn nothing_learnt_claims_nothing() {
        let f = Box::new(FioFiles::empty());
        assert!(!f.claims(b"/w/test.0.0"));
    }
}
