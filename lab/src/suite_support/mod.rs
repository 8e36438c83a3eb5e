//! What several suites share: the context a suite runs in (guest commands
//! and their errors), numbers from the JSON guest tools print, keeping a
//! persistent device's data while a suite overwrites it (`device_data`),
//! and a filesystem on CXL memory (`pmemfs`). The suites themselves are in
//! `suites/`.

pub mod device_data;
pub mod pmemfs;

use std::time::Duration;

use serde_json::Value;

use cxl_topology::Topology;

use crate::qga::{Agent, ExecOutput, QgaError};
use crate::summary::Summary;

/// Errors of a suite.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("Guest command `{command}` could not be run.")]
    Agent {
        command: String,
        #[source]
        source: QgaError,
    },
    #[error("Guest command `{command}` failed with exit {code}.\n{stderr}")]
    Command {
        command: String,
        code: i64,
        stderr: String,
    },
    #[error("Guest command `{command}` printed output that is not the JSON expected.\n{output}")]
    Output {
        command: String,
        output: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Guest command `{command}` printed JSON without the number `{field}`: {output}")]
    MissingField {
        command: String,
        field: String,
        output: String,
    },
    #[error("The guest has no {path}: the image includes {tool} only when it is built next to `lab`; run `cargo build -p {package}` (or `cargo build --workspace`), then `lab down` and `lab up` so the image is rebuilt with it.")]
    MissingGuestTool {
        tool: &'static str,
        path: &'static str,
        package: &'static str,
    },
    #[error("The lab has no device in devdax mode; suite '{0}' needs a /dev/daxX.Y (check the topology's modes).")]
    NoDax(&'static str),
    #[error("The lab has no persistent device in devdax mode; suite '{0}' needs one for a filesystem on CXL memory (add a `kind = \"persistent\"` device to the topology).")]
    NoPmem(&'static str),
    #[error("The lab has no {kind} device with a memdev; suite '{suite}' needs a volatile and a persistent CXL device (the default topology has vmem0 and pmem0).")]
    NoMemdev {
        suite: &'static str,
        kind: &'static str,
    },
    #[error("The lab has no dynamic capacity device with a memdev; suite '{0}' needs one: `lab up --topology dcd` (or a device with kind = \"dynamic\").")]
    NoDynamic(&'static str),
    #[error("The suite cannot talk to QEMU over QMP.")]
    Qmp(#[source] crate::qmp::QmpError),
    #[error("{what} (pid {pid}) of lab '{lab}' is gone: it ended while the suite ran (killed or crashed), so the suite's outcome cannot be trusted{}. Its log {} ends with:\n{tail}\nRun `lab down --name {lab}` to clean up, then `lab up --name {lab}`.", gone_effect(what), log.display())]
    LabProcessGone {
        lab: String,
        /// `cxl-memsim` or `QEMU`.
        what: &'static str,
        pid: u32,
        log: std::path::PathBuf,
        tail: String,
    },
    #[error("Could not {what} (the guest printed: {detail}).")]
    Setup { what: String, detail: String },
    #[error("Could not {what} the contents of persistent device {device} ({path}); {hint}")]
    Preserve {
        what: &'static str,
        device: String,
        path: std::path::PathBuf,
        hint: String,
        #[source]
        source: std::io::Error,
    },
}

/// What losing a process of the lab does to the guest.
fn gone_effect(what: &str) -> &'static str {
    if what == "cxl-memsim" {
        " (the guest still maps the backing files, but the simulator's model, statistics, TCP server and vhost-user-blk disks are gone)"
    } else {
        " (the guest is gone with it)"
    }
}

/// What a suite gets: the guest agent, the lab summary (devices and their
/// dax paths, the QMP socket) and the lab's topology. `lab run` writes the
/// suite's JSON to the results directory.
pub struct SuiteContext<'a> {
    pub agent: &'a Agent,
    pub summary: &'a Summary,
    pub topology: &'a Topology,
}

/// How long one guest command of a suite may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(900);

impl SuiteContext<'_> {
    /// The result of `suite` when the guest kernel lacks an option it
    /// needs (`kconfig::OPTIONS`): `{"suite", "passed": false, "skipped":
    /// reason, "missing_options"}`, which `lab run` reports as skipped, not
    /// failed. None when the suite can run (or the lab recorded no config).
    pub fn skipped_for_kernel(&self, suite: &'static str) -> Option<Value> {
        let config =
            crate::kconfig::KernelConfig::read(self.summary.kernel_config.as_ref()?).ok()?;
        let reason = config.skip_reason(suite)?;
        let missing: Vec<String> = config
            .missing_for(suite)
            .iter()
            .map(|o| format!("CONFIG_{}", o.name))
            .collect();
        Some(serde_json::json!({
            "suite": suite,
            "passed": false,
            "skipped": reason,
            "missing_options": missing,
        }))
    }

    /// Runs a guest command and returns its output, whatever its exit code.
    pub async fn exec(&self, argv: &[String]) -> Result<ExecOutput, SuiteError> {
        self.agent
            .exec(&argv[0], &argv[1..], COMMAND_TIMEOUT)
            .await
            .map_err(|source| SuiteError::Agent {
                command: argv.join(" "),
                source,
            })
    }

    /// The guest kernel's log, a line each.
    pub async fn dmesg(&self) -> Result<Vec<String>, SuiteError> {
        Ok(self
            .exec_checked(&["dmesg".into()])
            .await?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Runs a guest command that must succeed and returns what it printed;
    /// a non-zero exit is an error carrying its stderr and stdout.
    pub async fn exec_checked(&self, argv: &[String]) -> Result<String, SuiteError> {
        let out = self.exec(argv).await?;
        if !out.success() {
            return Err(SuiteError::Command {
                command: argv.join(" "),
                code: out.exit_code,
                stderr: output_tails(&out.stderr, &out.stdout),
            });
        }
        Ok(out.stdout)
    }

    /// Runs a guest command that prints JSON; a non-zero exit with JSON on
    /// stdout still returns the JSON (tools exit 1 when a check fails), and
    /// `exit_code` tells the caller.
    pub async fn exec_json(&self, argv: &[String]) -> Result<(Value, i64), SuiteError> {
        let out = self.exec(argv).await?;
        let command = argv.join(" ");
        match serde_json::from_str::<Value>(out.stdout.trim()) {
            Ok(v) => Ok((v, out.exit_code)),
            Err(_) if !out.success() => Err(SuiteError::Command {
                command,
                code: out.exit_code,
                stderr: output_tails(&out.stderr, &out.stdout),
            }),
            Err(source) => Err(SuiteError::Output {
                command,
                output: output_tails(&out.stderr, &out.stdout),
                source,
            }),
        }
    }
}

/// How many lines of a guest command's stderr and stdout an error shows.
const TAIL_LINES: usize = 20;
/// And how many characters of each, at most.
const TAIL_CHARS: usize = 2000;

/// The end of one stream, labelled, or None when it printed nothing.
fn labelled_tail(label: &str, text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut cut = lines.len() > TAIL_LINES;
    let mut tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    let chars = tail.chars().count();
    if chars > TAIL_CHARS {
        cut = true;
        tail = tail.chars().skip(chars - TAIL_CHARS).collect();
    }
    let head = if cut {
        format!("{label} (its end):")
    } else {
        format!("{label}:")
    };
    Some(format!("{head}\n{tail}"))
}

/// A guest command's stderr and stdout for an error message: each
/// labelled, each cut to its last lines.
fn output_tails(stderr: &str, stdout: &str) -> String {
    let parts: Vec<String> = [("stderr", stderr), ("stdout", stdout)]
        .iter()
        .filter_map(|(l, t)| labelled_tail(l, t))
        .collect();
    if parts.is_empty() {
        "It printed nothing.".into()
    } else {
        parts.join("\n")
    }
}

/// A guest shell line as an argv.
pub fn sh(script: impl Into<String>) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// A number a guest tool printed; its absence is an error, never 0.
pub fn number(v: &Value, field: &str, command: &str) -> Result<f64, SuiteError> {
    v[field].as_f64().ok_or_else(|| SuiteError::MissingField {
        command: command.to_owned(),
        field: field.to_owned(),
        output: v.to_string(),
    })
}

/// `x / base`, or `None` (JSON null) when `base` is not positive: no
/// ratio can be formed, and 0 would read as a result.
pub fn ratio(x: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| x / base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_output_in_errors_is_labelled_and_bounded() {
        assert_eq!(
            output_tails("oops\n", "{\"partial\": 1"),
            "stderr:\noops\nstdout:\n{\"partial\": 1"
        );
        assert_eq!(output_tails(" ", ""), "It printed nothing.");
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = output_tails("", &long);
        assert!(t.starts_with("stdout (its end):\nline 80\n"), "{t}");
        assert!(t.ends_with("line 99"), "{t}");
        let wide = "x".repeat(10_000);
        assert_eq!(
            output_tails(&wide, "").chars().count(),
            "stderr (its end):\n".len() + TAIL_CHARS
        );
        let e = SuiteError::Command {
            command: "dax-tester".into(),
            code: 2,
            stderr: output_tails("bad offset", ""),
        };
        assert_eq!(
            e.to_string(),
            "Guest command `dax-tester` failed with exit 2.\nstderr:\nbad offset"
        );
    }
}
