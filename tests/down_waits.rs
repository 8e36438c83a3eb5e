//! `lab down` returns only once the lab's QEMU and cxl-memsim are gone
//! (every thread of them) and their sockets and pid files removed; a
//! second `lab up` of a lab that is being started is refused at once.
//!
//! Runs the `lab` binary, as a person would: QEMU then outlives the `lab up`
//! that started it and is nobody's child here, as in real use.
//!
//! Up to `CXL_LAB_DOWN_CYCLES` (default [`CYCLES`], kept small so CI stays
//! short; 20 for the full check) `lab up` + `lab down` in a row, no new one
//! started after [`BUDGET`] (`CXL_LAB_DOWN_BUDGET_S`): a cycle takes 11 to
//! 25 s on the 2-core machine under TCG, depending on what else runs (17
//! cycles in 188 s when measured, on a machine shared with another build),
//! and at least [`MIN_CYCLES`] must fit.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab_e2e::tools_dir;

const NAME: &str = "e2e-down-waits";
const CYCLES: usize = 4;
const BUDGET: Duration = Duration::from_secs(180);

/// A setting from the environment, or its default.
fn setting(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const MIN_CYCLES: usize = 3;

fn lab(args: &[&str]) -> Command {
    let mut c = Command::new(tools_dir().join("lab"));
    c.args(args).args(["--name", NAME]).stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    lab(args).output().expect("running lab")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "lab {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("lab --json prints JSON")
}

/// `lab down` when the test ends, however it ends.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run(&["down"]);
    }
}

/// A process of the lab: its pid and its start time (field 22 of
/// /proc/PID/stat), so a recycled pid is not taken for it.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: u32,
    start: u64,
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    Some(rest.split_whitespace().map(String::from).collect())
}

impl Proc {
    fn of(pid: u32) -> Proc {
        let start = stat_fields(pid).expect("a running process")[19]
            .parse()
            .unwrap();
        Proc { pid, start }
    }

    /// Threads of it that have not exited (a zombie leader has).
    fn live_threads(&self) -> Vec<String> {
        if stat_fields(self.pid).is_none_or(|f| f[19].parse::<u64>().ok() != Some(self.start)) {
            return vec![];
        }
        lab_e2e::live_threads(self.pid)
    }
}

/// Processes whose command line names `run_dir`, like `pgrep -f` would
/// find (QEMU's and cxl-memsim's do).
fn processes_naming(run_dir: &Path) -> Vec<String> {
    let needle = run_dir.display().to_string();
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(&needle).then(|| {
                format!(
                    "{} {}",
                    e.file_name().to_string_lossy(),
                    &text[..text.len().min(120)]
                )
            })
        })
        .collect()
}

/// Sockets and pid files left in `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_socket())
                || e.file_name().to_string_lossy().ends_with(".pid")
        })
        .map(|e| e.path())
        .collect()
}

/// What `lab up --json` said: run directory, socket directory, QEMU and
/// cxl-memsim.
struct Up {
    run_dir: PathBuf,
    socket_dir: PathBuf,
    procs: Vec<Proc>,
}

fn parse_up(summary: &serde_json::Value) -> Up {
    let path = |k: &str| PathBuf::from(summary[k].as_str().unwrap_or_else(|| panic!("{k}")));
    let pid = |k: &str| summary[k].as_u64().unwrap_or_else(|| panic!("{k}")) as u32;
    Up {
        run_dir: path("run_dir"),
        socket_dir: path("qmp_socket").parent().unwrap().to_owned(),
        procs: vec![Proc::of(pid("qemu_pid")), Proc::of(pid("simulator_pid"))],
    }
}

/// Right after `lab down` returned: nothing of the lab runs or is left.
fn assert_all_gone(up: &Up, cycle: usize) {
    for p in &up.procs {
        let live = p.live_threads();
        assert!(
            live.is_empty(),
            "cycle {cycle}: pid {} still has running threads after lab down: {live:?}",
            p.pid
        );
    }
    let procs = processes_naming(&up.run_dir);
    assert!(
        procs.is_empty(),
        "cycle {cycle}: processes of the lab remain after lab down: {procs:?}"
    );
    for dir in [&up.socket_dir, &up.run_dir] {
        let left = leftovers(dir);
        assert!(
            left.is_empty(),
            "cycle {cycle}: sockets or pid files left: {left:?}"
        );
    }
}

#[test]
fn down_waits_for_every_thread_and_a_second_up_is_refused() {
    tools_dir();
    let _cleanup = Cleanup;
    let _ = run(&["down"]);
    let lock = cxl_lab::verbs::run_dir(NAME).unwrap().lock_file();

    // Two `lab up` at once: the second is refused while the first runs.
    let first = lab(&["up", "--accel", "tcg", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting lab up");
    let holder = format!("{} up\n", first.id());
    let t = Instant::now();
    while std::fs::read_to_string(&lock).ok().as_deref() != Some(&holder) {
        assert!(t.elapsed() < Duration::from_secs(30), "lab up took no lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let second = run(&["up", "--accel", "tcg", "--json"]);
    let refused_in = t.elapsed();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second lab up ran: {err}");
    assert!(
        err.contains(&format!(
            "Lab '{NAME}' is being started by `lab up` (pid {})",
            first.id()
        )),
        "{err}"
    );
    assert!(
        refused_in < Duration::from_secs(5),
        "refused in {refused_in:?}"
    );
    let down = run(&["down"]);
    assert!(!down.status.success(), "lab down raced lab up");
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("is being started by `lab up`"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the first lab up failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let up = parse_up(&serde_json::from_slice(&out.stdout).unwrap());
    let qemus: Vec<String> = processes_naming(&up.run_dir)
        .into_iter()
        .filter(|p| p.contains("qemu-system"))
        .collect();
    assert_eq!(qemus.len(), 1, "one QEMU on the run directory: {qemus:?}");
    ok_json(&["down", "--json"]);
    assert_all_gone(&up, 0);

    // `lab up` then `lab down`, again and again.
    let t = Instant::now();
    let mut downs = vec![];
    let cycles = setting("CXL_LAB_DOWN_CYCLES", CYCLES as u64) as usize;
    let budget = Duration::from_secs(setting("CXL_LAB_DOWN_BUDGET_S", BUDGET.as_secs()));
    for cycle in 1..=cycles {
        if t.elapsed() > budget {
            break;
        }
        let up = parse_up(&ok_json(&["up", "--accel", "tcg", "--json"]));
        let report = ok_json(&["down", "--json"]);
        assert_all_gone(&up, cycle);
        assert_eq!(report["qemu"], "quit", "{report}");
        assert_eq!(report["simulator"], "terminated", "{report}");
        downs.push((
            report["elapsed_ms"].as_u64().unwrap(),
            report["qemu_ms"].as_u64().unwrap(),
            report["simulator_ms"].as_u64().unwrap(),
        ));
    }
    eprintln!(
        "{} cycles in {:.0?}; lab down (total, QEMU, cxl-memsim) in ms: {downs:?}",
        downs.len(),
        t.elapsed()
    );
    assert!(
        downs.len() >= MIN_CYCLES,
        "only {} cycles fit in {budget:?}",
        downs.len()
    );
}
