//! `lab args`.

use std::path::Path;

use cxl_topology::Topology;

use crate::error::LabError;
use crate::events::Events;
use crate::image::{self, ImageOptions};
use crate::qemu::{self, Accel, DeviceFiles, QemuConfig};
use crate::rundir::{LabStatus, RunDir};

/// `lab args`: the argv of the running lab, or the one `lab up` would use.
/// For a running lab, a `topology` other than its own or `timing` it was
/// not started with is refused rather than ignored. The argv names backing
/// files and sockets that exist only while the lab's cxl-memsim runs.
pub fn args(
    name: &str,
    topology: Option<&Path>,
    image_opts: &ImageOptions,
    timing: bool,
) -> Result<Vec<String>, LabError> {
    args_in(&RunDir::new(name)?, topology, image_opts, timing)
}

fn args_in(
    run: &RunDir,
    topology: Option<&Path>,
    image_opts: &ImageOptions,
    timing: bool,
) -> Result<Vec<String>, LabError> {
    let name = &run.name;
    if let Some(state) = run.load()? {
        if state.status != LabStatus::Down {
            if let Some(path) = topology {
                let asked = Topology::load(Some(path))?;
                let running = Topology::load(Some(&run.topology_file()))?;
                if asked.to_toml() != running.to_toml() {
                    return Err(LabError::ArgsOfRunning {
                        name: name.to_owned(),
                        option: "--topology",
                        why: "it runs with another topology",
                    });
                }
            }
            if timing && state.timing.is_none() {
                return Err(LabError::ArgsOfRunning {
                    name: name.to_owned(),
                    option: "--timing",
                    why: "it runs without timing mode",
                });
            }
            return Ok(state.argv);
        }
    }
    let topology = Topology::load(topology)?;
    let img = image::build(image_opts, &Events::none())?;
    let devices = DeviceFiles::in_dir(&topology, &run.backing_dir());
    Ok(qemu::argv(&QemuConfig {
        topology: &topology,
        kernel: &img.kernel,
        initrd: &img.initrd,
        extras: &img.extras,
        run_dir: &run.dir,
        socket_dir: &run.sockets,
        devices: &devices,
        accel: Accel::Tcg,
        extra_append: &[],
        plugin: (timing || topology.simulator.timing)
            .then(|| crate::timing::plugin_option(&crate::timing::library(), &run.sockets))
            .transpose()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::LabState;

    #[test]
    fn args_of_a_running_lab_refuse_options_that_would_change_it() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::under(d.path(), "t").unwrap();
        run.create().unwrap();
        let t = Topology::embedded_default();
        std::fs::write(run.topology_file(), t.to_toml()).unwrap();
        let state = LabState::of_test_lab(
            LabStatus::Up,
            t.origin.clone(),
            vec!["qemu-system-x86_64".into(), "-S".into()],
            vec![],
        );
        run.save(&state).unwrap();
        let img = ImageOptions::default();
        assert_eq!(args_in(&run, None, &img, false).unwrap(), state.argv);
        let same = d.path().join("same.toml");
        std::fs::write(&same, t.to_toml()).unwrap();
        assert_eq!(args_in(&run, Some(&same), &img, false).unwrap(), state.argv);

        let mut other = t.clone();
        other.guest.cpus += 1;
        let other_file = d.path().join("other.toml");
        std::fs::write(&other_file, other.to_toml()).unwrap();
        let e = args_in(&run, Some(&other_file), &img, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Lab 't' is running"), "{e}");
        assert!(
            e.contains("--topology cannot change (it runs with another topology)"),
            "{e}"
        );
        assert!(e.contains("lab down --name t"), "{e}");
        let e = args_in(&run, None, &img, true).unwrap_err().to_string();
        assert!(
            e.contains("--timing cannot change (it runs without timing mode)"),
            "{e}"
        );
    }
}
