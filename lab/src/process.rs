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

/// True when `pid` runs and its command line mentions `marker` (the run
/// directory), so a recycled pid is never mistaken for ours. Reaps it when
/// it is a zombie child of this process.
pub fn is_alive(pid: u32, marker: &str) -> bool {
    let p = Pid::from_raw(pid as i32);
    let _ = waitpid(p, Some(WaitPidFlag::WNOHANG));
    if kill(p, None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    runs_as_ours(&stat, &cmdline, marker)
}

/// `PF_EXITING` in /proc/PID/stat's flags: the task is in exit().
const PF_EXITING: u64 = 0x4;

/// The liveness rule of [`is_alive`] on a process's /proc stat line and
/// command line. A zombie is gone. A process in exit() has already dropped
/// its memory, so its command line reads empty; it still holds its files
/// and sockets, so it counts as alive (a recycled pid caught in exit() is
/// taken for ours for the milliseconds that lasts, which only makes a wait
/// longer). Otherwise the command line must name `marker`.
fn runs_as_ours(stat: &str, cmdline: &[u8], marker: &str) -> bool {
    // The state and flags follow the parenthesised comm, which may itself
    // contain ") ".
    let mut fields = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_ascii_whitespace())
        .into_iter()
        .flatten();
    let state = fields.next().unwrap_or("Z");
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    if state.starts_with('Z') || state.starts_with('X') {
        return false;
    }
    if cmdline.is_empty() && flags & PF_EXITING != 0 {
        return true;
    }
    String::from_utf8_lossy(cmdline).contains(marker)
}

/// Waits up to `timeout` for `pid` to end.
pub fn wait_gone(pid: u32, marker: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_alive(pid, marker) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !is_alive(pid, marker)
}

/// SIGTERM, then SIGKILL after `grace`. Returns how it ended.
pub fn terminate(pid: u32, marker: &str, grace: Duration) -> &'static str {
    if !is_alive(pid, marker) {
        return "not running";
    }
    let p = Pid::from_raw(pid as i32);
    let _ = kill(p, Signal::SIGTERM);
    if wait_gone(pid, marker, grace) {
        return "terminated";
    }
    let _ = kill(p, Signal::SIGKILL);
    wait_gone(pid, marker, Duration::from_secs(5));
    "killed"
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

    fn wait_for(mut f: impl FnMut() -> bool) -> bool {
        (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            f()
        })
    }

    #[test]
    fn liveness_from_stat_and_command_line() {
        let stat = |state: &str, flags: u64| {
            format!("42 (qemu) x) {state} 1 42 42 0 -1 {flags} 5 0 0 0 1 2 0 0 20 0 1 0 99")
        };
        let ours = b"qemu-system-x86_64\0-name\0/run/lab-1\0";
        assert!(runs_as_ours(&stat("S", 0x400000), ours, "/run/lab-1"));
        assert!(!runs_as_ours(&stat("S", 0x400000), ours, "/run/lab-2"));
        assert!(!runs_as_ours(&stat("Z", 0x400000), ours, "/run/lab-1"));
        // In exit(): memory gone, files not yet closed.
        assert!(runs_as_ours(&stat("R", 0x400004), b"", "/run/lab-1"));
        // A kernel thread or anything else with no command line is not ours.
        assert!(!runs_as_ours(&stat("S", 0x208040), b"", "/run/lab-1"));
        assert!(!runs_as_ours("", b"", "/run/lab-1"));
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
            "terminated"
        );
        assert!(!is_alive(pid, &marker));
        assert_eq!(
            terminate(pid, &marker, Duration::from_secs(1)),
            "not running"
        );
        assert_eq!(tail(&log, 5), "started");
        // Its command line is gone once its memory is released, a moment
        // before it is a zombie: wait for the exit itself.
        assert!(wait_for(|| !child_running(&mut child)));
    }
}
