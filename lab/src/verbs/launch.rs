//! What QEMU is started with. [`plan`] gathers every input of
//! `qemu::argv` (topology, image, accelerator, run-directory paths, backing
//! files, sockets, the timing plugin) for `lab up` and for `lab args` alike,
//! so `lab args` prints the command line `lab up` runs.

use std::path::{Path, PathBuf};

use cxl_topology::Topology;

use crate::error::LabError;
use crate::events::{Event, Events, Step};
use crate::image::{self, Image, ImageOptions};
use crate::qemu::{self, Accel, DeviceFiles, QemuConfig};
use crate::rundir::RunDir;
use crate::timing::{self, TimingError};

/// How to pick the accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM where a cached probe says it works, else TCG.
    Auto,
    Tcg,
    /// KVM after a probe boot passes (verdict cached per host); TCG with a
    /// message otherwise.
    Kvm,
}

/// Timing mode's TCG plugin.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub library: PathBuf,
    /// The value of QEMU's `-plugin` option.
    pub option: String,
}

/// Everything QEMU's command line is built from, for one run directory.
#[derive(Debug, Clone)]
pub struct QemuLaunch {
    /// The effective topology (defaults filled in).
    pub topology: Topology,
    pub image: Image,
    pub accel: Accel,
    /// The run directory: console log and scratch disk.
    pub run_dir: PathBuf,
    /// The socket directory: sockets and the pid file.
    pub socket_dir: PathBuf,
    /// Each device's memory and label area, where cxl-memsim creates them.
    pub devices: Vec<DeviceFiles>,
    /// Timing mode: the plugin QEMU loads.
    pub plugin: Option<Plugin>,
}

impl QemuLaunch {
    /// The full QEMU argv, program first.
    pub fn argv(&self) -> Vec<String> {
        qemu::argv(&QemuConfig {
            topology: &self.topology,
            kernel: &self.image.kernel,
            initrd: &self.image.initrd,
            extras: &self.image.extras,
            run_dir: &self.run_dir,
            socket_dir: &self.socket_dir,
            devices: &self.devices,
            accel: self.accel,
            extra_append: &[],
            plugin: self.plugin.as_ref().map(|p| p.option.clone()),
        })
    }
}

/// What QEMU starts with in `run` for `lab up` with these options: loads
/// the topology, checks its socket paths, checks timing mode (`timing`, or
/// the topology's `[simulator] timing`) can run, builds (or finds) the
/// image and resolves the accelerator, which may run a KVM probe boot.
/// Touches nothing in the run directory.
pub fn plan(
    run: &RunDir,
    topology: Option<&Path>,
    accel: AccelChoice,
    image_options: &ImageOptions,
    timing: bool,
    events: &Events,
) -> Result<QemuLaunch, LabError> {
    let topology = Topology::load(topology)?;
    run.check_socket_paths(&topology)?;
    let timing = timing || topology.simulator.timing.is_on();
    if timing && accel == AccelChoice::Kvm {
        return Err(TimingError::NeedsTcg.into());
    }
    let plugin = if timing {
        let library = timing::library();
        if !library.is_file() {
            return Err(TimingError::NoPlugin(library).into());
        }
        let option = timing::plugin_option(&library, &run.sockets)?;
        Some(Plugin { library, option })
    } else {
        None
    };
    let image = image::build(image_options, events)?;
    // QEMU plugins instrument translated code: timing mode is TCG.
    let accel = if timing {
        if crate::kvm::cached().is_some_and(|v| v.usable) {
            events.emit(Event::Skipped {
                step: Step::QemuStart,
                reason: "timing mode runs under TCG, not KVM".into(),
            });
        }
        Accel::Tcg
    } else {
        resolve_accel(accel, &image, events)
    };
    let devices = DeviceFiles::in_dir(&topology, &run.backing_dir());
    Ok(QemuLaunch {
        topology,
        image,
        accel,
        run_dir: run.dir.clone(),
        socket_dir: run.sockets.clone(),
        devices,
        plugin,
    })
}

fn resolve_accel(choice: AccelChoice, img: &Image, events: &Events) -> Accel {
    match choice {
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto => match crate::kvm::cached() {
            Some(v) if v.usable => Accel::Kvm,
            _ => Accel::Tcg,
        },
        AccelChoice::Kvm => {
            let v = match crate::kvm::cached() {
                Some(v) => v,
                None => {
                    events.emit(Event::Started {
                        step: Step::QemuStart,
                        detail: "KVM probe boot".into(),
                    });
                    crate::kvm::probe(&img.kernel, &img.initrd)
                }
            };
            if v.usable {
                Accel::Kvm
            } else {
                events.emit(Event::Skipped {
                    step: Step::QemuStart,
                    reason: format!("KVM cannot run guests here ({}); using TCG", v.reason),
                });
                Accel::Tcg
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_mode_with_kvm_is_refused_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::under(dir.path(), "stall-kvm").unwrap();
        let mut t = Topology::embedded_default();
        t.simulator.timing = cxl_topology::TimingMode::Stall;
        let file = dir.path().join("stall.toml");
        std::fs::write(&file, t.to_toml()).unwrap();
        let planned = plan(
            &run,
            Some(&file),
            AccelChoice::Kvm,
            &ImageOptions::default(),
            false,
            &Events::none(),
        );
        let Err(e) = planned else {
            panic!("stall mode under KVM was not refused");
        };
        assert!(
            matches!(e, LabError::Timing(TimingError::NeedsTcg)),
            "{e:?}"
        );
        assert!(e.to_string().contains("Timing mode"), "{e}");
        assert!(
            crate::error::error_chain(&e).contains("drop --accel kvm"),
            "{}",
            crate::error::error_chain(&e)
        );
        // Nothing was made in the run directory.
        assert!(!run.dir.exists());
    }
}
