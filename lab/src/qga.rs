//! The QEMU guest agent (QGA) over its virtio-serial socket, through the
//! `qapi` crate: sync, guest-exec with captured output, file transfer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qapi::futures::{QapiService, QgaStreamTokio};
use qapi::qga;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;

/// Errors talking to the guest agent.
#[derive(Debug, thiserror::Error)]
pub enum QgaError {
    #[error("Cannot connect to the guest agent socket {path}.")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The guest agent did not answer guest-sync within {0:?}: the guest is hung or too busy, or its qemu-ga is stopped or hung. `lab status` says whether QEMU runs and the agent answers; `lab down` then `lab up` restarts the guest.")]
    NoSync(Duration),
    #[error("QEMU never created the guest agent socket {0}.")]
    NoSocket(PathBuf),
    #[error("The guest agent never started in the guest: the guest's /init did not report it on the console.")]
    NotStarted,
    #[error("The guest has no program `{program}`; if it is one of the lab's guest tools, build it with `cargo build --workspace` and the image picks it up at the next `lab up`.")]
    NoProgram {
        program: String,
        #[source]
        source: qapi::Error,
    },
    #[error("Guest agent command {command} failed.")]
    Command {
        command: &'static str,
        #[source]
        source: qapi::ExecuteError,
    },
    #[error("Guest command `{command}` did not finish within {timeout:?}; {} If it needs longer, give it a longer timeout (`lab exec --timeout SECONDS`); if it hangs, the guest console (`lab console`) may say why.", killed_text(*.pid, *.killed))]
    ExecTimeout {
        command: String,
        timeout: Duration,
        /// The command's pid in the guest.
        pid: i64,
        /// Whether lab killed it.
        killed: bool,
    },
    #[error("Guest command `{command}` wrote more to {streams} than the guest agent captures (16 MiB), so that output is cut off; have the command write to a file in the guest instead, or print less.")]
    OutputTruncated {
        command: String,
        /// `stdout`, `stderr` or both.
        streams: &'static str,
        /// What was captured.
        output: Box<ExecOutput>,
    },
    #[error("This guest agent connection gave up waiting for an earlier answer, so its next answers cannot be told apart; connect again (every `lab` command does).")]
    Abandoned,
    #[error("The guest agent did not answer {command} within {timeout:?}.")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },
}

type Service = QapiService<QgaStreamTokio<WriteHalf<UnixStream>>>;

/// A synchronised guest agent connection.
pub struct Agent {
    service: Service,
    _reader: tokio::task::JoinHandle<()>,
    /// Set once a call gave up waiting for its answer: qapi pairs answers
    /// with requests by order on a guest agent connection, so the late
    /// answer would be taken for the next request's (and qapi panics on
    /// the next request while the abandoned one is still pending).
    abandoned: std::sync::atomic::AtomicBool,
}

/// What a guest command did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// The signal that ended it, if one did.
    pub signal: Option<i64>,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none()
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn killed_text(pid: i64, killed: bool) -> String {
    if killed {
        format!("lab killed it (guest pid {pid}).")
    } else {
        format!("lab could not kill it, so it may still run (guest pid {pid}).")
    }
}

/// True when guest-exec failed because the program does not exist
/// (qemu-ga reports GLib's spawn error).
fn is_missing_program(e: &qapi::Error) -> bool {
    e.desc.contains("Failed to execute child process")
        && e.desc.contains("No such file or directory")
}

/// What qemu-ga captures of each stream of a guest-exec command.
const CAPTURE_LIMIT: usize = 16 << 20;

/// Whether qemu-ga cut a stream off: its flag says so, or it captured the
/// whole limit (qemu-ga before the 2025 fix sends the flag as false when
/// it truncates).
fn was_truncated(flag: Option<bool>, captured: usize) -> bool {
    flag == Some(true) || captured >= CAPTURE_LIMIT
}

/// Which captured streams qemu-ga cut off, if any.
fn truncated_streams(out: bool, err: bool) -> Option<&'static str> {
    match (out, err) {
        (false, false) => None,
        (true, false) => Some("stdout"),
        (false, true) => Some("stderr"),
        (true, true) => Some("stdout and stderr"),
    }
}

fn cmd_err(command: &'static str) -> impl Fn(qapi::ExecuteError) -> QgaError {
    move |source| QgaError::Command { command, source }
}

impl Agent {
    /// Connects and synchronises with a fresh id
    /// ([`sync_delimited`]): answers and partial requests left over from
    /// earlier connections are skipped, so none is taken for ours.
    pub async fn connect(path: &Path, sync_timeout: Duration) -> Result<Agent, QgaError> {
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|source| QgaError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let id = (std::process::id() as i32)
            .wrapping_mul(31)
            .wrapping_add(sync_id_seed());
        match tokio::time::timeout(sync_timeout, sync_delimited(&mut stream, id)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(QgaError::NoSync(sync_timeout)),
        }
        let (service, reader) = QgaStreamTokio::open(stream).spawn_tokio();
        Ok(Agent {
            service,
            _reader: reader,
            abandoned: Default::default(),
        })
    }

    /// Connects, retrying until `deadline`, while `alive()` says the VM
    /// still runs. No request is sent before `started()` says the agent
    /// runs in the guest: requests sent earlier queue up and their late
    /// answers would be taken for those of later requests.
    pub async fn wait(
        path: &Path,
        deadline: Instant,
        mut alive: impl FnMut() -> bool,
        mut started: impl FnMut() -> bool,
    ) -> Result<Agent, QgaError> {
        let mut last = QgaError::NoSocket(path.to_owned());
        // Each attempt waits longer (1 s, doubling up to 8 s): a guest too
        // busy to answer within one attempt's wait would otherwise never
        // be reached, each attempt giving up before its answer comes.
        let mut sync_timeout = Duration::from_secs(1);
        while Instant::now() < deadline && alive() {
            if !path.exists() {
                last = QgaError::NoSocket(path.to_owned());
            } else if !started() {
                last = QgaError::NotStarted;
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                match Agent::connect(path, sync_timeout.min(left).max(Duration::from_millis(100)))
                    .await
                {
                    Ok(a) => return Ok(a),
                    Err(e) => last = e,
                }
                sync_timeout = (sync_timeout * 2).min(Duration::from_secs(8));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    pub async fn ping(&self) -> Result<(), QgaError> {
        self.call("guest-ping", qga::guest_ping {}).await.map(drop)
    }

    /// Sends one command and waits up to [`CALL_TIMEOUT`] for its answer;
    /// a connection that gave up on an answer sends nothing more.
    async fn timed<C>(
        &self,
        name: &'static str,
        command: C,
    ) -> Result<Result<C::Ok, qapi::ExecuteError>, QgaError>
    where
        C: qapi::Command + qga::QgaCommand,
    {
        self.timed_within(name, command, CALL_TIMEOUT).await
    }

    async fn timed_within<C>(
        &self,
        name: &'static str,
        command: C,
        limit: Duration,
    ) -> Result<Result<C::Ok, qapi::ExecuteError>, QgaError>
    where
        C: qapi::Command + qga::QgaCommand,
    {
        use std::sync::atomic::Ordering;
        if self.abandoned.load(Ordering::Relaxed) {
            return Err(QgaError::Abandoned);
        }
        tokio::time::timeout(limit, self.service.execute(command))
            .await
            .map_err(|_| {
                self.abandoned.store(true, Ordering::Relaxed);
                QgaError::Timeout {
                    command: name,
                    timeout: limit,
                }
            })
    }

    /// Runs `program args…` in the guest and waits for it to end.
    pub async fn exec(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, QgaError> {
        let started = self
            .timed(
                "guest-exec",
                qga::guest_exec {
                    path: program.to_owned(),
                    arg: Some(args.to_vec()),
                    env: Some(vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()]),
                    input_data: None,
                    capture_output: Some(qga::GuestExecCaptureOutput::flag(true)),
                },
            )
            .await?
            .map_err(|source| match source {
                qapi::ExecuteError::Qapi(e) if is_missing_program(&e) => QgaError::NoProgram {
                    program: program.to_owned(),
                    source: e,
                },
                source => QgaError::Command {
                    command: "guest-exec",
                    source,
                },
            })?;
        let command = || {
            std::iter::once(program.to_owned())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let begun = Instant::now();
        let deadline = begun + timeout;
        let mut delay = Duration::from_millis(5);
        loop {
            let st = self
                .call(
                    "guest-exec-status",
                    qga::guest_exec_status { pid: started.pid },
                )
                .await?;
            if st.exited {
                let out_data = st.out_data.unwrap_or_default();
                let err_data = st.err_data.unwrap_or_default();
                let truncated = truncated_streams(
                    was_truncated(st.out_truncated, out_data.len()),
                    was_truncated(st.err_truncated, err_data.len()),
                );
                let output = ExecOutput {
                    exit_code: st
                        .exitcode
                        .unwrap_or(if st.signal.is_some() { 128 } else { 0 }),
                    signal: st.signal,
                    stdout: String::from_utf8_lossy(&out_data).into_owned(),
                    stderr: String::from_utf8_lossy(&err_data).into_owned(),
                };
                return match truncated {
                    None => Ok(output),
                    Some(streams) => Err(QgaError::OutputTruncated {
                        command: command(),
                        streams,
                        output: Box::new(output),
                    }),
                };
            }
            if Instant::now() >= deadline {
                let killed = self.kill(started.pid).await;
                return Err(QgaError::ExecTimeout {
                    command: command(),
                    timeout,
                    pid: started.pid,
                    killed,
                });
            }
            tokio::time::sleep(delay).await;
            // Short commands (a lab up's steps) are seen ending within
            // 20 ms; long ones (suites) are asked 10 times a second, as
            // each question takes the guest's CPU from what it measures.
            let cap = if begun.elapsed() < Duration::from_secs(1) {
                Duration::from_millis(20)
            } else {
                Duration::from_millis(100)
            };
            delay = (delay * 2).min(cap);
        }
    }

    /// Kills a guest process that guest-exec started, with every process
    /// it started (the agent has no kill command, so through the guest's
    /// shell; a child left running would keep the command's output pipes
    /// open, and the agent would report it running for ever), and collects
    /// its status so the agent forgets it. True when it is gone.
    async fn kill(&self, pid: i64) -> bool {
        let kill = async {
            let k = self
                .service
                .execute(qga::guest_exec {
                    path: "sh".into(),
                    arg: Some(vec!["-c".into(), kill_tree_script(pid)]),
                    env: Some(vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()]),
                    input_data: None,
                    capture_output: Some(qga::GuestExecCaptureOutput::flag(true)),
                })
                .await
                .ok()?;
            for _ in 0..50 {
                let st = self
                    .service
                    .execute(qga::guest_exec_status { pid })
                    .await
                    .ok()?;
                if st.exited {
                    // Reap the kill command too.
                    let _ = self
                        .service
                        .execute(qga::guest_exec_status { pid: k.pid })
                        .await;
                    return Some(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        };
        if self.abandoned.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        match tokio::time::timeout(CALL_TIMEOUT, kill).await {
            Ok(done) => done.is_some(),
            Err(_) => {
                // A request of it may still wait for its answer.
                self.abandoned
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// Reads a whole guest file.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, QgaError> {
        let handle = self
            .call(
                "guest-file-open",
                qga::guest_file_open {
                    path: path.into(),
                    mode: Some("r".into()),
                },
            )
            .await?;
        let mut out = Vec::new();
        let result = async {
            loop {
                let r = self
                    .call(
                        "guest-file-read",
                        qga::guest_file_read {
                            handle,
                            count: Some(1 << 20),
                        },
                    )
                    .await?;
                out.extend_from_slice(&r.buf_b64);
                if r.eof || r.count == 0 {
                    return Ok::<(), QgaError>(());
                }
            }
        }
        .await;
        let _ = self
            .call("guest-file-close", qga::guest_file_close { handle })
            .await;
        result.map(|()| out)
    }

    /// Writes a whole guest file (created or truncated).
    pub async fn write_file(&self, path: &str, data: &[u8]) -> Result<(), QgaError> {
        let handle = self
            .call(
                "guest-file-open",
                qga::guest_file_open {
                    path: path.into(),
                    mode: Some("w".into()),
                },
            )
            .await?;
        let result = async {
            for chunk in data.chunks(1 << 20) {
                self.call(
                    "guest-file-write",
                    qga::guest_file_write {
                        handle,
                        buf_b64: chunk.to_vec(),
                        count: None,
                    },
                )
                .await?;
            }
            Ok::<(), QgaError>(())
        }
        .await;
        let _ = self
            .call("guest-file-close", qga::guest_file_close { handle })
            .await;
        result
    }

    async fn call<C>(&self, name: &'static str, command: C) -> Result<C::Ok, QgaError>
    where
        C: qapi::Command + qga::QgaCommand,
    {
        self.timed(name, command).await?.map_err(cmd_err(name))
    }
}

/// What qemu-ga puts before the answer to guest-sync-delimited; sent to
/// qemu-ga, it makes its parser drop a partial request. Never in JSON text.
const SENTINEL: u8 = 0xff;

/// The longest answer line [`sync_delimited`] keeps while looking for its
/// own (stale answers, such as guest-exec-status with captured output,
/// can be long; only their length is skipped).
const SYNC_LINE_MAX: usize = 4096;

/// qemu-ga's protocol for a fresh connection (its schema, at
/// guest-sync-delimited): send the sentinel (qemu-ga drops any request a
/// client that went away left half-written), then guest-sync-delimited
/// with `id`, and skip everything up to the sentinel before the answer
/// that carries `id`. qemu-ga answers every request it read, in order, to
/// whoever is connected when it writes; when it could not answer while no
/// client was connected (stopped, hung, or busy past the client's
/// timeout), the waiting answers go to the next client first. Taking the
/// first answer for ours (what qapi's `guest_sync` does) then fails every
/// connection, each leaving its own request for the next one: the agent
/// never comes back. Reads one byte at a time, so nothing after our
/// answer is consumed here.
async fn sync_delimited(stream: &mut UnixStream, id: i32) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = vec![SENTINEL];
    request.extend_from_slice(
        format!(r#"{{"execute":"guest-sync-delimited","arguments":{{"id":{id}}}}}"#).as_bytes(),
    );
    request.push(b'\n');
    stream.write_all(&request).await?;
    let mut scanner = SyncScanner::new(id);
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if scanner.push(byte[0]) {
            return Ok(());
        }
    }
}

/// Finds the answer to guest-sync-delimited `id` in the agent's output,
/// fed one byte at a time: a line after the sentinel whose `return` is
/// `id`.
struct SyncScanner {
    id: i64,
    /// After a sentinel: the line so far (None: skipping to the next
    /// sentinel).
    line: Option<Vec<u8>>,
}

impl SyncScanner {
    fn new(id: i32) -> SyncScanner {
        SyncScanner {
            id: id.into(),
            line: None,
        }
    }

    /// True once the byte ends our answer.
    fn push(&mut self, b: u8) -> bool {
        if b == SENTINEL {
            self.line = Some(Vec::new());
            return false;
        }
        let Some(line) = self.line.as_mut() else {
            return false;
        };
        if b != b'\n' {
            if line.len() < SYNC_LINE_MAX {
                line.push(b);
            }
            return false;
        }
        let ours = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("return").and_then(serde_json::Value::as_i64))
            == Some(self.id);
        self.line = None;
        ours
    }
}

/// A guest shell function, `tree PID`, that SIGKILLs a process and all
/// its descendants, found by their parent in /proc/N/stat (the guest's
/// busybox has no pgrep): each process is stopped before its children are
/// listed, so none can start another one unseen.
const KILL_TREE: &str = r#"tree() { local p=$1 s l c; kill -STOP $p 2>/dev/null; for s in /proc/[0-9]*/stat; do read -r l < $s 2>/dev/null || continue; set -- ${l##*) }; [ "$2" = "$p" ] || continue; c=${s#/proc/}; tree ${c%/stat}; done; kill -KILL $p 2>/dev/null; };"#;

/// The guest shell script that kills `pid` and its descendants.
fn kill_tree_script(pid: i64) -> String {
    format!("{KILL_TREE} tree {pid}")
}

fn sync_id_seed() -> i32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() & 0x7fff_ffff) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_told_apart_from_other_exec_failures() {
        let err = |desc: &str| qapi::Error {
            class: qapi::ErrorClass::GenericError,
            desc: desc.into(),
            id: None,
        };
        assert!(is_missing_program(&err(
            "Guest agent command failed, error was 'Failed to execute child process \u{201c}dax-tester\u{201d} (No such file or directory)'"
        )));
        assert!(!is_missing_program(&err(
            "Guest agent command failed, error was 'Failed to execute child process \u{201c}x\u{201d} (Permission denied)'"
        )));
        let e = QgaError::NoProgram {
            program: "dax-tester".into(),
            source: err("x"),
        };
        assert!(e.to_string().contains("cargo build --workspace"), "{e}");
    }

    #[test]
    fn sync_skips_stale_answers_up_to_its_own() {
        let mut s = SyncScanner::new(42);
        let mut feed = |bytes: &[u8]| bytes.iter().map(|&b| s.push(b)).collect::<Vec<_>>();
        // Answers to earlier clients' requests: plain, an error for their
        // sentinel, a delimited one with another id, a long one.
        let stale = [
            &b"{\"return\": 100}\n"[..],
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n",
            b"\xff{\"return\": 7}\n",
            b"{\"return\": 42}\n",
        ]
        .concat();
        assert!(feed(&stale).iter().all(|d| !d), "only after a sentinel");
        let long = format!(
            "{{\"return\": {{\"out-data\": \"{}\"}}}}\n",
            "A".repeat(10_000)
        );
        let long = [&[SENTINEL][..], long.as_bytes()].concat();
        assert!(!feed(&long).iter().any(|d| *d));
        // A sentinel in the middle of a line starts a new one.
        let done = feed(b"\xff{\"ret\xff{\"return\": 42}\n");
        assert_eq!(done.iter().filter(|d| **d).count(), 1);
        assert!(*done.last().unwrap(), "done at the newline");
    }

    #[tokio::test]
    async fn a_connection_that_gave_up_on_an_answer_sends_nothing_more() {
        // An agent that reads requests and never answers (stopped, hung).
        let (ours, mut silent) = UnixStream::pair().unwrap();
        let drain = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut got = Vec::new();
            let _ = silent.read_to_end(&mut got).await;
            got
        });
        let (service, reader) = QgaStreamTokio::open(ours).spawn_tokio();
        let agent = Agent {
            service,
            _reader: reader,
            abandoned: Default::default(),
        };
        let e = agent
            .timed_within("guest-ping", qga::guest_ping {}, Duration::from_millis(50))
            .await
            .expect_err("no answer");
        assert!(
            matches!(
                e,
                QgaError::Timeout {
                    command: "guest-ping",
                    ..
                }
            ),
            "{e}"
        );
        // qapi would pair the late answer with the next request (and
        // panics on it while the first is pending): refused instead.
        assert!(matches!(agent.ping().await, Err(QgaError::Abandoned)));
        assert!(matches!(
            agent.read_file("/x").await,
            Err(QgaError::Abandoned)
        ));
        assert!(!agent.kill(1).await);
        drop(agent);
        let sent = String::from_utf8(drain.await.unwrap()).unwrap();
        assert_eq!(sent.matches("guest-ping").count(), 1, "{sent}");
        assert!(!sent.contains("guest-file-open"), "{sent}");
    }

    #[test]
    fn timeouts_and_truncation_say_what_happened_and_the_fix() {
        let e = QgaError::ExecTimeout {
            command: "sleep 99".into(),
            timeout: Duration::from_secs(2),
            pid: 42,
            killed: true,
        };
        let msg = e.to_string();
        assert!(
            msg.contains("within 2s; lab killed it (guest pid 42)."),
            "{msg}"
        );
        assert!(msg.contains("lab exec --timeout"), "{msg}");
        assert!(kill_tree_script(42).ends_with("2>/dev/null; }; tree 42"));
        assert!(!was_truncated(None, 10));
        assert!(!was_truncated(Some(false), 10));
        assert!(was_truncated(Some(true), 10));
        assert!(was_truncated(Some(false), 16 << 20), "older qemu-ga");
        assert_eq!(truncated_streams(false, false), None);
        assert_eq!(truncated_streams(true, true), Some("stdout and stderr"));
        let e = QgaError::OutputTruncated {
            command: "cat big".into(),
            streams: "stdout",
            output: Box::default(),
        };
        assert!(e
            .to_string()
            .contains("wrote more to stdout than the guest agent captures"));
        assert_eq!(
            QgaError::NotStarted.to_string(),
            "The guest agent never started in the guest: the guest's /init did not report it on the console."
        );
    }
}
