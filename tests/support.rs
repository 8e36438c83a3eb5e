//! Shared helpers of the end-to-end tests: a booted lab that is torn down
//! even when a check panics, and guest command helpers that panic with
//! context.

use std::path::PathBuf;
use std::time::Duration;

pub use cxl_lab::error::error_chain;
use cxl_lab::events::{Events, Recorder};
use cxl_lab::qga::ExecOutput;
use cxl_lab::summary::{DownReport, Summary};
use cxl_lab::verbs::{self, AccelChoice, UpOptions};

/// The directory with the workspace binaries the lab needs (cxl-memsim and
/// the guest tools): cargo's target dir of this test binary.
pub fn tools_dir() -> PathBuf {
    let dir = cxl_lab::paths::tools_dir();
    for tool in ["cxl-memsim", "cxl-regions", "dax-pattern"] {
        assert!(
            dir.join(tool).is_file(),
            "{} is missing in {}: run `cargo build --workspace` before the end-to-end tests (ci/test does)",
            tool,
            dir.display()
        );
    }
    dir
}

/// A lab instance for one test; `lab down` runs when it is dropped.
pub struct TestLab {
    pub name: String,
    pub rt: tokio::runtime::Runtime,
    pub recorder: Recorder,
}

impl TestLab {
    pub fn new(name: &str) -> TestLab {
        tools_dir();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let lab = TestLab {
            name: name.to_owned(),
            rt,
            recorder: Recorder::default(),
        };
        // A run left over by an interrupted test would make `up` refuse.
        lab.rt
            .block_on(verbs::down(name, &Events::none()))
            .expect("cleaning up an earlier run");
        lab
    }

    /// `lab up`'s options for this lab: TCG, restoring the saved state of
    /// its key when there is one (saved states are shared by lab names, so
    /// the first test of a key boots cold and saves, and later tests of
    /// that key restore), as a user's `lab up` does. Tests about the boot
    /// itself set `cold` (and `save: false`).
    pub fn options(&self) -> UpOptions {
        UpOptions {
            name: self.name.clone(),
            accel: AccelChoice::Tcg,
            cold: false,
            save: true,
            ..UpOptions::default()
        }
    }

    pub fn up(&self) -> Summary {
        let events = Events::new(self.recorder.clone());
        self.rt
            .block_on(verbs::up(&self.options(), &events))
            .unwrap_or_else(|e| panic!("lab up {} failed: {}", self.name, error_chain(&e)))
    }

    /// Writes `topology` to a file of this lab's in the temp directory (the
    /// same path for the same lab; the test removes it when done).
    pub fn topology_file(&self, topology: &cxl_topology::Topology) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{}-{}", self.name, std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("topology.toml");
        std::fs::write(&file, topology.to_toml()).expect("topology file");
        file
    }

    /// `lab up` on a topology file instead of the embedded default.
    pub fn up_with_topology(&self, topology: &std::path::Path) -> Summary {
        let events = Events::new(self.recorder.clone());
        let opts = UpOptions {
            topology: Some(topology.to_owned()),
            ..self.options()
        };
        self.rt
            .block_on(verbs::up(&opts, &events))
            .unwrap_or_else(|e| panic!("lab up {} failed: {}", self.name, error_chain(&e)))
    }

    pub fn down(&self) -> DownReport {
        self.rt
            .block_on(verbs::down(&self.name, &Events::none()))
            .unwrap_or_else(|e| panic!("lab down {} failed: {}", self.name, error_chain(&e)))
    }

    /// Runs a guest command; panics with its output when it fails.
    pub fn run(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.success(),
            "guest command {argv:?} failed with exit {}:\nstdout: {}\nstderr: {}",
            out.exit_code,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    pub fn exec(&self, argv: &[&str]) -> ExecOutput {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        self.rt
            .block_on(verbs::exec(&self.name, &argv, Duration::from_secs(300)))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {argv:?} in lab {}: {}",
                    self.name,
                    error_chain(&e)
                )
            })
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let _ = self.rt.block_on(verbs::down(&self.name, &Events::none()));
    }
}

/// The threads of `pid` that have not exited (`/proc/PID/task/TID` and
/// their state): a zombie leader thread while another thread still frees
/// the process's memory does not make it gone.
pub fn live_threads(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let state = stat.rsplit_once(") ")?.1.split_whitespace().next()?;
            (!state.starts_with(['Z', 'X'])).then(|| format!("{} {state}", t.path().display()))
        })
        .collect()
}

/// Whether any thread of `pid` still runs.
pub fn pid_alive(pid: u32) -> bool {
    !live_threads(pid).is_empty()
}
