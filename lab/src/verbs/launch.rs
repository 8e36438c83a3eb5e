//! What QEMU is started with. [`plan`] gathers every input of
//! `qemu::argv` (topology, image, accelerator, run-directory paths, backing
//! files, sockets, the timing plugin) for `lab up` and for `lab args` alike,
//! so `lab args` prints the command line `lab up` runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cxl_topology::Topology;

use crate::error::LabError;
use crate::events::{Event, Events, Step};
use crate::image::{self, Image, ImageOptions};
use crate::kernel::{BootKernel, KernelInput};
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

/// Options of `lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub topology: Option<PathBuf>,
    pub accel: AccelChoice,
    pub image: ImageOptions,
    pub boot_timeout: Duration,
    /// Timing mode: load the TCG plugin and arm it once regions are up
    /// (also on when the topology says `[simulator] timing = true`).
    pub timing: bool,
    /// Stall mode (implies timing): the plugin also holds the vCPUs for
    /// the model's extra latency, calibrated after arming (also on when
    /// the topology says `[simulator] timing = "stall"`).
    pub stall: bool,
    /// Boot from the kernel even when a saved state of this lab's key
    /// exists (`crate::snapshot`); without it such a state is restored.
    pub cold: bool,
    /// After a cold boot, save the state for the next `lab up` of the same
    /// key (replacing an older one).
    pub save: bool,
    /// Boot this kernel instead of the image's: a Debian kernel package,
    /// a bzImage/vmlinuz or a kernel build tree (`crate::kernel`).
    pub kernel: Option<PathBuf>,
    /// The `lib/modules/<release>` tree of a bzImage/vmlinuz `kernel`.
    pub modules: Option<PathBuf>,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            name: "default".into(),
            topology: None,
            accel: AccelChoice::Auto,
            image: ImageOptions::default(),
            boot_timeout: Duration::from_secs(180),
            timing: false,
            stall: false,
            cold: false,
            save: true,
            kernel: None,
            modules: None,
        }
    }
}

/// Timing mode's TCG plugin.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub library: PathBuf,
    /// The value of QEMU's `-plugin` option.
    pub option: String,
    /// `[simulator] timing_learn`: the plugin leaves out instructions seen
    /// on RAM only.
    pub learning: bool,
}

/// Everything QEMU's command line is built from, for one run directory.
#[derive(Debug, Clone)]
pub struct QemuLaunch {
    /// The effective topology (defaults filled in).
    pub topology: Topology,
    pub image: Image,
    /// What QEMU boots: the image's kernel, or the user's (`--kernel`)
    /// with the image's initramfs and its modules layer.
    pub kernel: BootKernel,
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
            kernel: &self.kernel.kernel,
            initrd: &self.kernel.initrd,
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
/// image, checks and caches the user's kernel (`--kernel`, or the
/// topology's `[guest] kernel`) and resolves the accelerator, which may
/// run a KVM probe boot. Touches nothing in the run directory.
pub fn plan(run: &RunDir, opts: &UpOptions, events: &Events) -> Result<QemuLaunch, LabError> {
    let (accel, image_options) = (opts.accel, &opts.image);
    let mut topology = Topology::load(opts.topology.as_deref())?;
    let kernel_input = kernel_input(opts, &mut topology)?;
    run.check_socket_paths(&topology)?;
    let timing = opts.timing || opts.stall || topology.simulator.timing.is_on();
    if timing && accel == AccelChoice::Kvm {
        return Err(TimingError::NeedsTcg.into());
    }
    let plugin = if timing {
        let library = timing::library();
        if !library.is_file() {
            return Err(TimingError::NoPlugin(library).into());
        }
        let learning = topology.simulator.timing_learn();
        let option = timing::plugin_option(&library, &run.sockets, learning)?;
        Some(Plugin {
            library,
            option,
            learning,
        })
    } else {
        None
    };
    let image = image::build(image_options, events)?;
    let kernel = match &kernel_input {
        None => BootKernel::of_image(&image),
        Some(input) => events.step(Step::Kernel, input.paths().0.display().to_string(), || {
            crate::kernel::prepare(input, &image, &image_options.cache_dir)
        })?,
    };
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
        kernel,
        accel,
        run_dir: run.dir.clone(),
        socket_dir: run.sockets.clone(),
        devices,
        plugin,
    })
}

/// The user's kernel: `--kernel`/`--modules`, else the topology's
/// `[guest] kernel`/`modules` (relative to the topology file), which are
/// made absolute in the effective topology.
fn kernel_input(
    opts: &UpOptions,
    topology: &mut Topology,
) -> Result<Option<KernelInput>, LabError> {
    let base = Path::new(&topology.origin)
        .parent()
        .filter(|_| Path::new(&topology.origin).is_file())
        .map(Path::to_owned)
        .unwrap_or_default();
    let from_topology = |p: &Option<String>| p.as_ref().map(|p| base.join(p));
    let (kernel, modules) = match &opts.kernel {
        Some(k) => (Some(k.clone()), opts.modules.clone()),
        None => (
            from_topology(&topology.guest.kernel),
            opts.modules
                .clone()
                .or_else(|| from_topology(&topology.guest.modules)),
        ),
    };
    let Some(kernel) = kernel else {
        if let Some(m) = modules {
            return Err(crate::kernel::KernelError::ModulesWithoutKernel(m).into());
        }
        return Ok(None);
    };
    let input = KernelInput::detect(&kernel, modules.as_deref())?;
    let (k, m) = input.paths();
    topology.guest.kernel = Some(k.display().to_string());
    topology.guest.modules = m.map(|m| m.display().to_string());
    Ok(Some(input))
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
        let opts = UpOptions {
            topology: Some(file.clone()),
            accel: AccelChoice::Kvm,
            ..UpOptions::default()
        };
        let planned = plan(&run, &opts, &Events::none());
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

    #[test]
    fn the_topology_s_kernel_is_relative_to_its_file_and_kernel_wins() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("k")).unwrap();
        std::fs::write(d.path().join("k/vmlinuz"), b"kernel").unwrap();
        std::fs::write(d.path().join("other"), b"kernel").unwrap();
        let text = cxl_topology::DEFAULT_TOPOLOGY_TOML.replace(
            "[guest]\n",
            "[guest]\nkernel = \"k/vmlinuz\"\nmodules = \"k/lib/modules/6.1.0\"\n",
        );
        let file = d.path().join("topo.toml");
        std::fs::write(&file, text).unwrap();
        let opts = UpOptions {
            topology: Some(file.clone()),
            ..UpOptions::default()
        };
        let mut t = Topology::load(Some(&file)).unwrap();
        let input = kernel_input(&opts, &mut t).unwrap().unwrap();
        assert_eq!(
            input,
            KernelInput::Bzimage {
                image: d.path().join("k/vmlinuz"),
                modules: Some(d.path().join("k/lib/modules/6.1.0")),
            }
        );
        assert_eq!(
            t.guest.kernel.as_deref(),
            Some(d.path().join("k/vmlinuz").to_str().unwrap()),
            "made absolute in the effective topology"
        );

        let mut t = Topology::load(Some(&file)).unwrap();
        let over = UpOptions {
            kernel: Some(d.path().join("other")),
            ..opts.clone()
        };
        let input = kernel_input(&over, &mut t).unwrap().unwrap();
        assert_eq!(input.paths(), (d.path().join("other"), None));

        let mut plain = Topology::embedded_default();
        assert_eq!(
            kernel_input(&UpOptions::default(), &mut plain).unwrap(),
            None
        );
        let lone = UpOptions {
            modules: Some("/m".into()),
            ..UpOptions::default()
        };
        let e = kernel_input(&lone, &mut plain).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--modules /m names no kernel; give the kernel with it (`--kernel PATH --modules DIR`)."
        );
    }
}
