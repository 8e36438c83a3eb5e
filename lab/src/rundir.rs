//! A lab instance's run directory and its saved state.
//!
//! `<state root>/<name>/`: `state.json`, the effective `topology.toml`,
//! `qmp.sock`, `qga.sock`, `console.log`, `qemu.log`, `qemu.pid`,
//! `memsim.log`, `memsim.sock`, `plugin.sock` (timing mode), `backing/` (device memory and label areas)
//! and `results/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::qemu::{Accel, DeviceFiles};

/// Errors of the run directory.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("'{0}' is not a usable lab name; use letters, digits, '-' and '_'.")]
    BadName(String),
    #[error("Cannot write {path}.")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The state file {path} is damaged; remove the run directory after checking no QEMU of it runs.")]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Where a lab instance lives.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub name: String,
    pub dir: PathBuf,
}

/// Boot timings of `lab up`, in milliseconds from its start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub image_ms: u64,
    pub simulator_ms: u64,
    pub agent_ready_ms: u64,
    pub regions_ready_ms: u64,
}

/// What `lab up` started and found, saved as state.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub status: String,
    pub topology_origin: String,
    pub image_key: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub accel: Accel,
    pub argv: Vec<String>,
    pub devices: Vec<DeviceFiles>,
    pub qemu_pid: Option<u32>,
    pub memsim_pid: Option<u32>,
    pub memsim_listen: Option<String>,
    pub regions: Option<cxl_regions::plan::Outcome>,
    pub timings: Timings,
    /// Timing mode: the plugin and what it was armed with.
    #[serde(default)]
    pub timing: Option<crate::timing::TimingState>,
}

impl RunDir {
    pub fn new(name: &str) -> Result<RunDir, RunDirError> {
        RunDir::under(&crate::paths::state_root(), name)
    }

    pub fn under(root: &Path, name: &str) -> Result<RunDir, RunDirError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(RunDirError::BadName(name.to_owned()));
        }
        Ok(RunDir {
            name: name.to_owned(),
            dir: root.join(name),
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
    pub fn state_file(&self) -> PathBuf {
        self.path("state.json")
    }
    pub fn backing_dir(&self) -> PathBuf {
        self.path("backing")
    }
    pub fn results_dir(&self) -> PathBuf {
        self.path("results")
    }
    pub fn topology_file(&self) -> PathBuf {
        self.path("topology.toml")
    }
    pub fn memsim_control(&self) -> PathBuf {
        self.path("memsim.sock")
    }
    pub fn plugin_socket(&self) -> PathBuf {
        crate::timing::plugin_socket(&self.dir)
    }
    pub fn memsim_log(&self) -> PathBuf {
        self.path("memsim.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.path("qemu.log")
    }
    /// The string that marks a process as started for this run.
    pub fn marker(&self) -> String {
        self.dir.display().to_string()
    }

    pub fn create(&self) -> Result<(), RunDirError> {
        for d in [self.dir.clone(), self.backing_dir(), self.results_dir()] {
            std::fs::create_dir_all(&d).map_err(|source| RunDirError::Write {
                path: d.clone(),
                source,
            })?;
        }
        Ok(())
    }

    pub fn load(&self) -> Result<Option<LabState>, RunDirError> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RunDirError::Damaged { path, source }),
            Err(_) => Ok(None),
        }
    }

    pub fn save(&self, state: &LabState) -> Result<(), RunDirError> {
        let path = self.state_file();
        let tmp = self.path("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| RunDirError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let root = Path::new("/tmp/x");
        assert!(RunDir::under(root, "default").is_ok());
        let e = RunDir::under(root, "../etc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'../etc' is not a usable lab name; use letters, digits, '-' and '_'."
        );
    }
}
