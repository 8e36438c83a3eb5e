//! `lab args`.

use cxl_topology::Topology;

use super::launch::{plan, AccelChoice};
use super::up::UpOptions;
use crate::error::LabError;
use crate::events::Events;
use crate::qemu::Accel;
use crate::rundir::{LabStatus, RunDir};

/// `lab args`: the argv of the running lab, or the one `lab up` with `opts`
/// would run (the same launch plan; `boot_timeout` plays no part). For a
/// running lab, a topology other than its own, timing mode it was not
/// started with or an accelerator (other than auto) it does not run under
/// is refused rather than ignored. The argv names backing files and
/// sockets that exist only while the lab's cxl-memsim runs.
pub fn args(opts: &UpOptions) -> Result<Vec<String>, LabError> {
    args_in(&RunDir::new(&opts.name)?, opts)
}

fn args_in(run: &RunDir, opts: &UpOptions) -> Result<Vec<String>, LabError> {
    let name = &run.name;
    if let Some(state) = run.load()? {
        if state.status != LabStatus::Down {
            if let Some(path) = &opts.topology {
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
            if let Some(k) = &opts.kernel {
                let asked = std::path::absolute(k).unwrap_or_else(|_| k.clone());
                let running = state.kernel_origin.as_ref().and_then(|o| o.path.as_ref());
                if running != Some(&asked) {
                    return Err(LabError::ArgsOfRunning {
                        name: name.to_owned(),
                        option: "--kernel",
                        why: "it runs another kernel",
                    });
                }
            }
            if opts.timing && state.timing.is_none() {
                return Err(LabError::ArgsOfRunning {
                    name: name.to_owned(),
                    option: "--timing",
                    why: "it runs without timing mode",
                });
            }
            let other_accel = match (opts.accel, state.accel) {
                (AccelChoice::Tcg, Accel::Kvm) => Some("it runs under KVM"),
                (AccelChoice::Kvm, Accel::Tcg) => Some("it runs under TCG"),
                _ => None,
            };
            if let Some(why) = other_accel {
                return Err(LabError::ArgsOfRunning {
                    name: name.to_owned(),
                    option: "--accel",
                    why,
                });
            }
            return Ok(state.argv);
        }
    }
    let launch = plan(run, opts, &Events::none())?;
    Ok(launch.argv())
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
        let opts = |topology: Option<&std::path::Path>, timing, accel| UpOptions {
            name: "t".into(),
            topology: topology.map(ToOwned::to_owned),
            accel,
            timing,
            ..UpOptions::default()
        };
        let auto = AccelChoice::Auto;
        assert_eq!(args_in(&run, &opts(None, false, auto)).unwrap(), state.argv);
        let same = d.path().join("same.toml");
        std::fs::write(&same, t.to_toml()).unwrap();
        assert_eq!(
            args_in(&run, &opts(Some(&same), false, auto)).unwrap(),
            state.argv
        );

        let mut other = t.clone();
        other.guest.cpus += 1;
        let other_file = d.path().join("other.toml");
        std::fs::write(&other_file, other.to_toml()).unwrap();
        let e = args_in(&run, &opts(Some(&other_file), false, auto))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Lab 't' is running"), "{e}");
        assert!(
            e.contains("--topology cannot change (it runs with another topology)"),
            "{e}"
        );
        assert!(e.contains("lab down --name t"), "{e}");
        let e = args_in(&run, &opts(None, true, auto))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--timing cannot change (it runs without timing mode)"),
            "{e}"
        );
        let tcg = args_in(&run, &opts(None, false, AccelChoice::Tcg)).unwrap();
        assert_eq!(tcg, state.argv, "it runs under TCG");
        let e = args_in(&run, &opts(None, false, AccelChoice::Kvm))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--accel cannot change (it runs under TCG)"),
            "{e}"
        );
    }
}
