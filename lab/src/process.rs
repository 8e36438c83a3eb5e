//! Processes the lab starts (QEMU, cxl-memsim): detached spawning, liveness
//! that survives pid reuse, and SIGTERM-then-SIGKILL termination.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Errors starting processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("Cannot start {program}; is it installed? (run ci/install-deps, or cargo build --workspace for the lab's own binaries)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot open log file {path}.")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Starts `argv` in its own process group (so a Ctrl-C aimed at `lab`
/// does not reach it), stdin from /dev/null, stdout and stderr appended to
/// `log`. The process outlives `lab`. Until it has exec'ed, its command line
/// is still ours, so right after the spawn ask the returned `Child`
/// (`try_wait`) whether it runs, not [`is_alive`].
pub fn spawn_detached(argv: &[String], log: &Path) -> Result<Child, ProcessError> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ProcessError::Log {
                path: log.to_owned(),
                source,
            })
    };
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        // An error's backtrace (anyhow's, under RUST_BACKTRACE=1) would push
        // the error itself out of the log tail that lab quotes when the
        // process dies; panics keep theirs.
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .process_group(0)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            program: argv[0].clone(),
            source,
        })?;
    Ok(child)
}

/// True while a child we spawned has not exited.
pub fn child_running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// True while any thread of `pid` runs and the process is ours: its
/// command line mentions `marker` (the run directory), so a recycled pid is
/// never mistaken for ours. A process whose leader thread has exited (a
/// zombie leader) while another thread still tears down its memory is
/// alive: it still holds its files, sockets and guest memory. Reaps it when
/// it has exited and is a child of this process.
pub fn is_alive(pid: u32, marker: &str) -> bool {
    Process::find(pid, marker).is_some()
}

/// True when `pid` is on its way out: its leader thread has exited (a
/// zombie leader while other threads tear down) or a SIGKILL is pending.
/// Such a process is still alive, but no longer a running lab.
pub fn is_exiting(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let leader_gone = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // SIGKILL is signal 9: bit 8 of the pending masks.
    let kill_pending = status.lines().any(|l| {
        let (key, value) = l.split_once(':').unwrap_or_default();
        matches!(key, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(value.trim(), 16).is_ok_and(|m| m & (1 << 8) != 0)
    });
    leader_gone || kill_pending
}

/// Waits up to `timeout` for every thread of `pid` to end.
pub fn wait_gone(pid: u32, marker: &str, timeout: Duration) -> bool {
    Process::find(pid, marker).is_none_or(|t| t.wait_gone(timeout))
}

/// SIGTERM, then SIGKILL after `grace`. Returns how it ended.
pub fn terminate(pid: u32, marker: &str, grace: Duration) -> Ended {
    match Process::find(pid, marker) {
        None => Ended::NotRunning,
        Some(t) => t.terminate(grace),
    }
}

/// How long [`Process::terminate`] waits after SIGKILL: the kernel frees a
/// large guest memory before the last thread is gone.
pub const KILL_WAIT: Duration = Duration::from_secs(30);

/// How a process of the lab ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    NotRunning,
    /// It exited when asked (QEMU's QMP quit).
    Quit,
    Terminated,
    Killed,
    /// Still running [`KILL_WAIT`] after SIGKILL (stuck in the kernel).
    Survived,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::NotRunning => "not running",
            Ended::Quit => "quit",
            Ended::Terminated => "terminated",
            Ended::Killed => "killed",
            Ended::Survived => "still running after SIGKILL",
        }
    }

    /// Whether the process is gone.
    pub fn gone(self) -> bool {
        self != Ended::Survived
    }
}

/// A process file descriptor: refers to one process whatever happens to
/// its pid, and becomes readable only once the whole thread group has
/// exited (the kernel's `thread_group_exited`), not when the leader thread
/// alone has. Works on processes that are not our children, like a QEMU
/// left by an earlier `lab up`.
#[derive(Debug)]
struct PidFd(OwnedFd);

impl PidFd {
    fn open(pid: u32) -> std::io::Result<PidFd> {
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags by value and touches no
        // memory of this process.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new file descriptor that nothing
        // else owns; the OwnedFd closes it once.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// Waits up to `timeout` for the whole process to exit; true once it has.
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            let mut p = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `p` is one valid pollfd that outlives the call, and
            // the count passed is 1.
            let n = unsafe { libc::poll(&mut p, 1, ms) };
            if n > 0 {
                return true;
            }
            let interrupted =
                n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
            if !interrupted && (n < 0 || left.is_zero()) {
                // A poll error on a valid pidfd does not happen; say "exited"
                // only when the poll says so.
                return false;
            }
        }
    }

    /// Sends `signal` to the process the descriptor refers to, never to a
    /// process that took its pid later.
    fn signal(&self, signal: Signal) -> bool {
        // SAFETY: pidfd_send_signal reads no memory when its siginfo
        // argument is null; the descriptor is open for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        r == 0
    }
}

/// A running process of ours (QEMU, cxl-memsim), followed until every
/// thread of it is gone.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    /// None on a kernel without pidfd_open (before 5.3): then /proc's
    /// thread list says when it is gone, and signals go by pid.
    fd: Option<PidFd>,
}

impl Process {
    /// The process `pid` when it runs and is ours (see [`is_alive`]).
    pub fn find(pid: u32, marker: &str) -> Option<Process> {
        let fd = match PidFd::open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => None,
            // ESRCH: no such process; EINVAL: a thread, not a process.
            Err(_) => return None,
        };
        let tracked = Process { pid, fd };
        let ours = threads_run_as_ours(&threads(pid), marker);
        // Read after the descriptor was opened: unless the process has
        // exited since, /proc showed this very process, not a later one
        // with its pid.
        if tracked.wait_gone(Duration::ZERO) {
            return None;
        }
        ours.then_some(tracked)
    }

    /// Waits up to `timeout` for every thread to end; reaps the process
    /// when it is our child. True once it is gone.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let exited = match &self.fd {
            Some(fd) => fd.wait(timeout),
            None => {
                let deadline = Instant::now() + timeout;
                loop {
                    if threads_exited(&threads(self.pid)) {
                        break true;
                    }
                    if Instant::now() >= deadline {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        if exited {
            // A child of ours stays a zombie until reaped; ECHILD otherwise.
            let _ = waitpid(Pid::from_raw(self.pid as i32), Some(WaitPidFlag::WNOHANG));
        }
        exited
    }

    fn signal(&self, signal: Signal) {
        match &self.fd {
            Some(fd) => {
                fd.signal(signal);
            }
            None => {
                let _ = kill(Pid::from_raw(self.pid as i32), signal);
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&self, grace: Duration) -> Ended {
        self.signal(Signal::SIGTERM);
        if self.wait_gone(grace) {
            return Ended::Terminated;
        }
        self.signal(Signal::SIGKILL);
        if self.wait_gone(KILL_WAIT) {
            Ended::Killed
        } else {
            Ended::Survived
        }
    }
}

/// Each thread of `pid`: its /proc stat line and command line.
fn threads(pid: u32) -> Vec<(String, Vec<u8>)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    dir.flatten()
        .map(|t| {
            let p = t.path();
            (
                std::fs::read_to_string(p.join("stat")).unwrap_or_default(),
                std::fs::read(p.join("cmdline")).unwrap_or_default(),
            )
        })
        .collect()
}

/// `PF_EXITING` in /proc/PID/stat's flags: the task is in exit().
const PF_EXITING: u64 = 0x4;

/// A /proc stat line's state letter and flags. The state and flags follow
/// the parenthesised comm, which may itself contain ") ".
fn state_and_flags(stat: &str) -> (&str, u64) {
    let mut fields = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_ascii_whitespace())
        .into_iter()
        .flatten();
    let state = fields.next().unwrap_or("X");
    let flags = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    (state, flags)
}

fn is_dead(state: &str) -> bool {
    state.starts_with('Z') || state.starts_with('X')
}

/// Whether every thread of a process has exited (none left, or only its
/// zombie leader).
fn threads_exited(threads: &[(String, Vec<u8>)]) -> bool {
    threads
        .iter()
        .all(|(stat, _)| is_dead(state_and_flags(stat).0))
}

/// The rule of [`is_alive`] on the /proc stat lines and command lines of a
/// process's threads. Threads share one memory and so one command line; a
/// thread that has left its memory in exit(), or a zombie leader, reads an
/// empty one. A process with a thread that still reads its command line is
/// ours when that names `marker`. One whose threads are all in exit() or
/// zombies is ours while any thread has not finished exiting: it still
/// holds its files and sockets (a recycled pid caught in exit() is taken
/// for ours for the moments that lasts, which only makes a wait longer).
/// Anything else with no command line (a kernel thread) is not ours.
fn threads_run_as_ours(threads: &[(String, Vec<u8>)], marker: &str) -> bool {
    if let Some((_, cmdline)) = threads.iter().find(|(_, c)| !c.is_empty()) {
        return String::from_utf8_lossy(cmdline).contains(marker);
    }
    let exiting = threads.iter().all(|(stat, _)| {
        let (state, flags) = state_and_flags(stat);
        is_dead(state) || flags & PF_EXITING != 0
    });
    exiting && !threads_exited(threads)
}

/// How much of a log's end [`tail`] reads.
const TAIL_BYTES: u64 = 64 << 10;

/// The last `n` lines of a log, for error messages. Bytes that are not
/// UTF-8 (a guest console prints anything) become U+FFFD.
pub fn tail(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
        let _ = f.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of a finished command's stdout then stderr, for
/// error messages (a failed `make`).
pub fn output_tail(out: &std::process::Output, n: usize) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Watches a growing log for a line of text, reading only what was
/// appended since the last look; works on bytes, so invalid UTF-8 in the
/// log does not hide the text.
#[derive(Debug)]
pub struct LogWatch {
    path: PathBuf,
    needle: Vec<u8>,
    offset: u64,
    /// The end of what was read, kept so text split across reads is found.
    carry: Vec<u8>,
    found: bool,
}

impl LogWatch {
    pub fn new(path: &Path, needle: &str) -> LogWatch {
        LogWatch {
            path: path.to_owned(),
            needle: needle.as_bytes().to_vec(),
            offset: 0,
            carry: Vec::new(),
            found: false,
        }
    }

    /// True once the log has contained the text.
    pub fn seen(&mut self) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        if self.found {
            return true;
        }
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return false;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated or replaced: start again.
            self.offset = 0;
            self.carry.clear();
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut buf = std::mem::take(&mut self.carry);
        let before = buf.len();
        if f.read_to_end(&mut buf).is_err() {
            self.carry = buf;
            return false;
        }
        self.offset += (buf.len() - before) as u64;
        self.found = buf.windows(self.needle.len()).any(|w| w == self.needle);
        let keep = self.needle.len().saturating_sub(1).min(buf.len());
        self.carry = buf[buf.len() - keep..].to_vec();
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_process_is_exiting_until_it_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        assert!(!is_exiting(pid), "a running process is not exiting");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        // Not reaped yet: a zombie, on its way out.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !is_exiting(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_exiting(pid), "a killed, unreaped process is exiting");
        child.wait().expect("reaping");
    }

    fn wait_for(mut f: impl FnMut() -> bool) -> bool {
        (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            f()
        })
    }

    #[test]
    fn liveness_from_the_threads_stat_and_command_line() {
        let stat = |state: &str, flags: u64| {
            format!("42 (qemu) x) {state} 1 42 42 0 -1 {flags} 5 0 0 0 1 2 0 0 20 0 1 0 99")
        };
        let ours = b"qemu-system-x86_64\0-name\0/run/lab-1\0".to_vec();
        let t = |state: &str, flags: u64, cmdline: &[u8]| (stat(state, flags), cmdline.to_vec());
        let one = |state, flags, cmdline: &[u8]| vec![t(state, flags, cmdline)];
        assert!(threads_run_as_ours(
            &one("S", 0x400000, &ours),
            "/run/lab-1"
        ));
        assert!(!threads_run_as_ours(
            &one("S", 0x400000, &ours),
            "/run/lab-2"
        ));
        // A zombie whose threads are all gone is gone.
        assert!(!threads_run_as_ours(&one("Z", 0x400004, b""), "/run/lab-1"));
        // In exit(): memory gone, files not yet closed.
        assert!(threads_run_as_ours(&one("R", 0x400004, b""), "/run/lab-1"));
        // The leader is a zombie while another thread runs: ours by the
        // other thread's command line.
        let leader_gone = vec![t("Z", 0x400004, b""), t("S", 0x400040, &ours)];
        assert!(threads_run_as_ours(&leader_gone, "/run/lab-1"));
        assert!(!threads_run_as_ours(&leader_gone, "/run/lab-2"));
        // ... or while the last thread tears down the memory.
        let tearing_down = vec![t("Z", 0x400004, b""), t("D", 0x400044, b"")];
        assert!(threads_run_as_ours(&tearing_down, "/run/lab-1"));
        assert!(!threads_exited(&tearing_down));
        assert!(threads_exited(&[t("Z", 0x400004, b"")]));
        // A kernel thread or anything else with no command line is not ours.
        assert!(!threads_run_as_ours(&one("S", 0x208040, b""), "/run/lab-1"));
        assert!(!threads_run_as_ours(&[], "/run/lab-1"));
        assert!(!threads_run_as_ours(
            &[(String::new(), vec![])],
            "/run/lab-1"
        ));
    }

    /// A process whose leader thread exits (a zombie in /proc) while
    /// another thread runs on, as QEMU's does while a thread frees the
    /// guest memory: alive until the last thread is gone.
    #[test]
    fn alive_until_the_last_thread_exits() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("x.log");
        let marker = d.path().display().to_string();
        let script = "import ctypes, threading, time\n\
            threading.Thread(target=lambda: time.sleep(1.5)).start()\n\
            ctypes.CDLL(None).pthread_exit(None)\n";
        let argv = ["python3", "-c", script, &marker].map(String::from);
        let mut child = spawn_detached(&argv, &log).unwrap();
        let pid = child.id();
        let leader_zombie = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            state_and_flags(&stat).0 == "Z"
        };
        assert!(wait_for(leader_zombie), "the leader thread exits");
        let t = Instant::now();
        assert!(
            is_alive(pid, &marker),
            "alive while a thread runs: {}",
            tail(&log, 5)
        );
        assert!(!is_alive(pid, "/some/other/run"));
        assert!(wait_gone(pid, &marker, Duration::from_secs(10)));
        let waited = t.elapsed();
        assert!(
            waited > Duration::from_millis(500),
            "gone only with its last thread, waited {waited:?}"
        );
        assert!(!is_alive(pid, &marker));
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "reaped: our child is no zombie"
        );
        assert!(!child_running(&mut child));
        assert_eq!(
            terminate(pid, &marker, Duration::from_secs(1)),
            Ended::NotRunning
        );
    }

    #[test]
    fn a_process_that_ignores_sigterm_is_killed() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("x.log");
        let marker = d.path().display().to_string();
        let argv = ["sh", "-c", "trap '' TERM; echo started; sleep 30", &marker].map(String::from);
        let mut child = spawn_detached(&argv, &log).unwrap();
        let pid = child.id();
        assert!(wait_for(|| tail(&log, 1) == "started"));
        let p = Process::find(pid, &marker).expect("running");
        assert_eq!(p.terminate(Duration::from_millis(200)), Ended::Killed);
        assert!(!is_alive(pid, &marker));
        assert!(!child_running(&mut child), "reaped");
    }

    #[test]
    fn log_watch_finds_text_across_reads_and_invalid_utf8() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        let mut w = LogWatch::new(&log, "agent on");
        assert!(!w.seen(), "no file yet");
        let mut f = std::fs::File::create(&log).unwrap();
        f.write_all(b"boot \xff\xfe garbage\nag").unwrap();
        assert!(!w.seen());
        f.write_all(b"ent o").unwrap();
        assert!(!w.seen());
        f.write_all(b"n /dev/vport1p1\n").unwrap();
        assert!(w.seen(), "found across three reads");
        assert!(w.seen());
        let t = tail(&log, 1);
        assert_eq!(t, "agent on /dev/vport1p1");
        assert!(tail(&log, 2).starts_with("boot \u{fffd}\u{fffd} garbage"));
    }

    #[test]
    fn spawn_watch_and_terminate() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("x.log");
        let marker = d.path().display().to_string();
        // The marker is sh's $0, so it shows in the shell's command line.
        let argv = ["sh", "-c", "echo started; sleep 30; echo done", &marker].map(String::from);
        let mut child = spawn_detached(&argv, &log).unwrap();
        let pid = child.id();
        assert!(child_running(&mut child));
        assert!(wait_for(|| is_alive(pid, &marker)));
        assert!(!is_alive(pid, "/some/other/run"));
        assert_eq!(
            terminate(pid, &marker, Duration::from_secs(2)),
            Ended::Terminated
        );
        assert!(!is_alive(pid, &marker));
        assert_eq!(
            terminate(pid, &marker, Duration::from_secs(1)),
            Ended::NotRunning
        );
        assert_eq!(tail(&log, 5), "started");
        // terminate reaped it.
        assert!(!child_running(&mut child));
    }
}
