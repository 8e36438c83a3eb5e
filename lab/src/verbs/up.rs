//! `lab up`: image, simulator, QEMU, guest agent, regions. Each step reports
//! progress through [`Events`]; every failure tears down what was started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cxl_topology::{TimingMode, Topology};

use super::down::{down_run, lock};
use super::launch::plan;
use crate::error::{error_chain, io_err, LabError};
use crate::events::{Event, Events, Step};
use crate::memsim;
use crate::process;
use crate::qemu::{self, DeviceFiles};
use crate::qga::Agent;
use crate::regions;
use crate::rundir::{BootKind, LabState, LabStatus, RunDir, Timings};
use crate::snapshot::{self, Saved, SnapshotKey, SnapshotMeta};
use crate::summary::{summarize, Summary};

/// What the guest /init prints on the console once qemu-ga runs.
const AGENT_STARTED: &str = "cxl-lab: guest agent on";

pub use super::launch::UpOptions;

/// Emits that `step` failed with `error` and hands the error back, for
/// `map_err` on a step run by hand.
fn failed<E: Into<LabError>>(events: &Events, step: Step, error: E) -> LabError {
    let e = error.into();
    events.emit(Event::Failed {
        step,
        error: error_chain(&e),
    });
    e
}

/// Creates the label storage areas that persistent devices need (kept
/// across restarts, like the device memory).
fn label_areas(topology: &Topology, files: &[DeviceFiles]) -> Result<(), LabError> {
    for (d, f) in topology.devices.iter().zip(files) {
        if let (Some(size), Some(path)) = (d.lsa_size, &f.lsa) {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            // A new file is empty; an existing one holds namespace labels,
            // which resizing would cut or misplace.
            let found = file.metadata().map_err(io_err(path))?.len();
            if found == 0 {
                file.set_len(size.bytes()).map_err(io_err(path))?;
            } else if found != size.bytes() {
                return Err(LabError::LsaSizeMismatch {
                    device: d.name.clone(),
                    path: path.clone(),
                    found,
                    expected: size.bytes(),
                });
            }
            let labelled = found > 0
                && std::fs::read(path)
                    .map_err(io_err(path))?
                    .iter()
                    .any(|&b| b != 0);
            if labelled && !f.memory.exists() {
                return Err(LabError::OrphanLabels {
                    device: d.name.clone(),
                    lsa: path.clone(),
                    memory: f.memory.clone(),
                });
            }
            // Namespace labels belong to the region shape they were written
            // in (the interleave set): a device moved into another shape
            // would fail deep in region set-up.
            let record = region_record(&f.memory);
            let now = region_shape(topology, &d.name);
            if labelled {
                if let Ok(was) = std::fs::read_to_string(&record) {
                    if was.trim() != now {
                        return Err(LabError::RegionShapeChanged {
                            device: d.name.clone(),
                            was: was.trim().to_owned(),
                            now,
                            lsa: path.clone(),
                            memory: f.memory.clone(),
                        });
                    }
                }
            }
            std::fs::write(&record, format!("{now}\n")).map_err(io_err(&record))?;
        }
    }
    Ok(())
}

/// Beside a persistent device's backing file: the region shape its labels
/// were written in.
fn region_record(memory: &Path) -> PathBuf {
    memory.with_extension("region")
}

/// A device's place in its region: what its namespace labels depend on
/// (ways, granularity, its position and every member's serial number).
fn region_shape(topology: &Topology, device: &str) -> String {
    match topology.region_of(device) {
        None => "in no region".to_owned(),
        Some((r, position)) => {
            let members: Vec<String> = r
                .devices
                .iter()
                .map(|&i| {
                    let m = &topology.devices[i];
                    format!("{} (serial {:#x})", m.name, m.serial_number())
                })
                .collect();
            format!(
                "position {position} of a {}-way region at {} B over {}",
                r.ways(),
                r.granularity,
                members.join(", ")
            )
        }
    }
}

/// Checks that cxl-memsim created each device's memory where QEMU is told
/// to map it.
fn backing_files_agree(devices: &[DeviceFiles], ready: &memsim::Ready) -> Result<(), LabError> {
    for r in &ready.devices {
        if let Some(f) = devices.iter().find(|f| f.name == r.name) {
            if f.memory != r.path {
                return Err(LabError::BackingFileElsewhere {
                    device: r.name.clone(),
                    expected: f.memory.clone(),
                    reported: r.path.clone(),
                });
            }
        }
    }
    Ok(())
}

/// `lab up`: image, simulator, QEMU, guest agent, regions.
pub async fn up(opts: &UpOptions, events: &Events) -> Result<Summary, LabError> {
    let run = RunDir::new(&opts.name)?;
    run.check_legacy()?;
    // Held until `lab up` returns: a second `lab up` (or a `lab down`) of
    // this lab fails at once instead of starting a second QEMU here.
    let _lock = lock(&run, "up")?;
    if let Some(state) = run.load()? {
        // A QEMU killed a moment ago is still alive while it frees its
        // guest memory, but it is a crashed lab: down_run waits for it.
        let running = state
            .qemu_pid
            .is_some_and(|p| process::is_alive(p, &run.marker()) && !process::is_exiting(p));
        if running && state.status != LabStatus::Down {
            return Err(LabError::AlreadyUp(run.name.clone()));
        }
        // A previous run died (QEMU killed, host rebooted): clean it up.
        down_run(&run, events).await?;
    }
    let t0 = Instant::now();
    let ms = |t: Instant| t.elapsed().as_millis() as u64;
    let launch = plan(&run, opts, events)?;
    let image_ms = ms(t0);
    // Before anything starts: a kernel without what the lab needs would
    // fail deep in boot or region set-up.
    let config = crate::kconfig::KernelConfig::read(&launch.kernel.config)?;
    config.check_boot()?;
    config.check_topology(&launch.topology)?;
    run.create()?;
    let topology = &launch.topology;

    // The simulator reads the effective topology (defaults filled in).
    let topo_file = run.topology_file();
    std::fs::write(&topo_file, topology.to_toml()).map_err(io_err(&topo_file))?;
    // Label areas this start makes: a simulator that cannot start (a full
    // disk) leaves none of them behind.
    let fresh: Vec<PathBuf> = launch
        .devices
        .iter()
        .flat_map(|f| f.lsa.iter().cloned().chain([region_record(&f.memory)]))
        .filter(|p| !p.exists())
        .collect();
    let remove_fresh = || {
        for p in &fresh {
            let _ = std::fs::remove_file(p);
        }
    };
    label_areas(topology, &launch.devices).inspect_err(|_| remove_fresh())?;
    let scratch = qemu::scratch_disk(&run.dir);
    let _ = std::fs::remove_file(&scratch);
    if topology.guest.scratch_disk.bytes() > 0 {
        let f = std::fs::File::create(&scratch).map_err(io_err(&scratch))?;
        f.set_len(topology.guest.scratch_disk.bytes())
            .map_err(io_err(&scratch))?;
    }
    for message in memsim::block_view_warnings(topology) {
        events.emit(Event::Warning {
            step: Step::SimulatorStart,
            message,
        });
    }
    let sim = events
        .step(Step::SimulatorStart, "", || {
            let socket = run.plugin_socket();
            memsim::start(
                &run,
                &topo_file,
                topology,
                launch.plugin.is_some().then_some(socket.as_path()),
                Duration::from_secs(20),
            )
        })
        .inspect_err(|_| remove_fresh())?;
    let simulator_ms = ms(t0);
    // QEMU maps the files where the launch plan (and so `lab args`) says.
    let backing_agrees = backing_files_agree(&launch.devices, &sim.ready);

    for f in ["qmp.sock", "qga.sock", "qemu.pid"] {
        let _ = std::fs::remove_file(run.socket(f));
    }
    for f in ["console.log", "qemu.log"] {
        let _ = std::fs::remove_file(run.path(f));
    }
    let argv = launch.argv();
    let mut state = LabState {
        name: run.name.clone(),
        status: LabStatus::Starting,
        topology_origin: topology.origin.clone(),
        image_key: launch.image.manifest.key.clone(),
        kernel: launch.kernel.kernel.clone(),
        kernel_release: Some(launch.kernel.release.clone()),
        kernel_config: Some(launch.kernel.config.clone()),
        kernel_origin: Some(launch.kernel.origin.clone()),
        foreign_built_modules: launch.kernel.foreign_built_modules.clone(),
        initrd: launch.kernel.initrd.clone(),
        accel: launch.accel,
        argv: argv.clone(),
        devices: launch.devices.clone(),
        qemu_pid: None,
        memsim_pid: Some(sim.pid),
        memsim_listen: Some(sim.ready.listen.clone()),
        regions: None,
        timings: Timings {
            image_ms,
            simulator_ms,
            ..Timings::default()
        },
        timing: launch.plugin.as_ref().map(|p| crate::timing::TimingState {
            plugin: p.library.clone(),
            plugin_socket: run.plugin_socket(),
            learning: p.learning,
            ..Default::default()
        }),
    };
    run.save(&state)?;

    let key = SnapshotKey {
        image_key: launch.image.manifest.key.clone(),
        // What QEMU boots: the image's kernel or the user's (`--kernel`),
        // and the initramfs with its modules layer.
        kernel: format!(
            "{}; {}",
            snapshot::kernel_identity(&launch.kernel.kernel),
            snapshot::kernel_identity(&launch.kernel.initrd)
        ),
        topology: snapshot::topology_digest(&topology.to_toml()),
        qemu_version: snapshot::qemu_version(),
        lab_version: env!("CARGO_PKG_VERSION").to_owned(),
        machine: snapshot::machine_digest(&argv, &[&run.dir, &run.sockets]),
        cpus: topology.guest.cpus,
        memory: topology.guest.memory.to_string(),
        timing: launch.plugin.is_some(),
        accel: launch.accel.as_str().to_owned(),
    };
    let saved = if opts.cold {
        None
    } else {
        usable_snapshot(&key, events)
    };

    let result = match backing_agrees {
        Ok(()) => {
            bring_up(
                &run,
                topology,
                &mut state,
                &argv,
                opts,
                events,
                t0,
                (&key, saved),
            )
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(summarize(&run, &state, topology)),
        Err(e) => {
            let _ = down_run(&run, events).await;
            Err(e)
        }
    }
}

/// The saved state of this lab's key, if one exists; one that cannot be
/// read is reported and the lab boots cold.
fn usable_snapshot(key: &SnapshotKey, events: &Events) -> Option<Saved> {
    match snapshot::find(&snapshot::root(), key) {
        Ok(s) => s,
        Err(e) => {
            events.emit(Event::Warning {
                step: Step::Restore,
                message: format!("{}; booting cold", error_chain(&LabError::from(e))),
            });
            None
        }
    }
}

/// Restores the saved state when there is one and creates the regions
/// in it (falling back to a cold boot if either fails), else boots cold,
/// saves the state before the regions and creates them; then arms timing
/// mode.
#[allow(clippy::too_many_arguments)]
async fn bring_up(
    run: &RunDir,
    topology: &Topology,
    state: &mut LabState,
    argv: &[String],
    opts: &UpOptions,
    events: &Events,
    t0: Instant,
    (key, saved): (&SnapshotKey, Option<Saved>),
) -> Result<(), LabError> {
    if let Some(saved) = saved {
        let restored = async {
            let agent = restore(run, state, argv, &saved, topology, opts, events, t0).await?;
            let outcome = create_regions(run, topology, state, &agent, events, t0).await?;
            Ok::<_, LabError>((agent, outcome))
        }
        .await;
        match restored {
            Ok((agent, outcome)) => {
                state.timings.boot = BootKind::Restored;
                return finish(run, topology, state, &agent, outcome, opts, events).await;
            }
            Err(e) => {
                events.emit(Event::Warning {
                    step: Step::Restore,
                    message: format!(
                        "dropped the saved lab state ({}); booting cold",
                        error_chain(&e)
                    ),
                });
                saved.discard();
                stop_qemu(run, state);
                state.argv = argv.to_vec();
            }
        }
    }
    let agent = boot(run, state, argv, opts, events, t0).await?;
    if opts.save {
        let t = Instant::now();
        save_snapshot(run, key, &agent, events).await;
        state.timings.save_ms = Some(t.elapsed().as_millis() as u64);
    }
    let outcome = create_regions(run, topology, state, &agent, events, t0).await?;
    finish(run, topology, state, &agent, outcome, opts, events).await
}

/// Stops the QEMU of a failed restore, so a cold boot can start its own.
fn stop_qemu(run: &RunDir, state: &mut LabState) {
    if let Some(pid) = state.qemu_pid.take() {
        process::terminate(pid, &run.marker(), Duration::from_secs(5));
    }
    for f in ["qmp.sock", "qga.sock", "qemu.pid"] {
        let _ = std::fs::remove_file(run.socket(f));
    }
    let _ = std::fs::remove_file(run.path("console.log"));
}

/// Saves the freshly booted lab (modules loaded, no region yet) for the
/// next `lab up` of the same key; a failure only costs the next `lab up` a
/// cold boot, so it is a warning.
async fn save_snapshot(run: &RunDir, key: &SnapshotKey, agent: &Agent, events: &Events) {
    let root = snapshot::root();
    let dir = snapshot::dir_for(&root, key);
    let t = Instant::now();
    events.emit(Event::Started {
        step: Step::Save,
        detail: String::new(),
    });
    let meta = SnapshotMeta {
        key: key.clone(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        lab: run.name.clone(),
    };
    let saved = snapshot::save(
        &qemu::qmp_socket(&run.sockets),
        agent,
        regions::EXTRAS_READY_FILE,
        &dir,
        &meta,
    )
    .await;
    match saved {
        Ok(bytes) => {
            snapshot::prune(&root, &dir);
            events.emit(Event::Finished {
                step: Step::Save,
                elapsed: t.elapsed(),
                detail: format!("{} MiB", bytes >> 20),
            });
        }
        Err(e) => events.emit(Event::Warning {
            step: Step::Save,
            message: format!(
                "the lab state was not saved, so the next lab up boots cold: {}",
                error_chain(&LabError::from(e))
            ),
        }),
    }
}

/// Starts QEMU with `-incoming` and loads the saved state into it; the
/// guest then runs as it was when saved, with its clock set, extras
/// mounted and its CXL hierarchy enumerated again, ready for regions.
#[allow(clippy::too_many_arguments)]
async fn restore(
    run: &RunDir,
    state: &mut LabState,
    argv: &[String],
    saved: &Saved,
    topology: &Topology,
    opts: &UpOptions,
    events: &Events,
    t0: Instant,
) -> Result<Agent, LabError> {
    let t = Instant::now();
    events.emit(Event::Started {
        step: Step::Restore,
        detail: String::new(),
    });
    let result = async {
        let mut argv = argv.to_vec();
        argv.extend(["-incoming".to_owned(), "defer".to_owned()]);
        let mut child = process::spawn_detached(&argv, &run.qemu_log())?;
        state.qemu_pid = Some(child.id());
        // `lab args` of a running lab is the argv its QEMU runs with.
        state.argv = argv;
        run.save(state)?;
        let deadline = Instant::now() + opts.boot_timeout;
        let qmp_socket = qemu::qmp_socket(&run.sockets);
        let qmp_conn = loop {
            if qmp_socket.exists() {
                if let Ok(c) = crate::qmp::Qmp::connect(&qmp_socket).await {
                    break c;
                }
            }
            if !process::child_running(&mut child) || Instant::now() >= deadline {
                return Err(LabError::QemuDied {
                    log: run.qemu_log(),
                    qemu_tail: process::tail(&run.qemu_log(), 10),
                    console: qemu::console_log(&run.dir),
                    console_tail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        snapshot::incoming(&qmp_conn, saved).await?;
        // Retried until the boot timeout, as after a cold boot: on a busy
        // machine the restored guest's agent took more than one 10 s sync
        // (the end-to-end suites test then dropped the state and booted
        // cold). The agent runs already in the saved guest, and the
        // delimited sync skips the answers to earlier attempts.
        let agent = Agent::wait(
            &qemu::agent_socket(&run.sockets),
            deadline,
            || process::child_running(&mut child),
            || true,
        )
        .await
        .map_err(snapshot::SnapshotError::from)?;
        state.timings.agent_ready_ms = t0.elapsed().as_millis() as u64;
        let buses: Vec<u8> = topology
            .host_bridges
            .iter()
            .filter_map(|h| h.bus_nr)
            .collect();
        snapshot::resume_guest(&agent, &buses).await?;
        Ok(agent)
    }
    .await;
    match &result {
        Ok(_) => events.emit(Event::Finished {
            step: Step::Restore,
            elapsed: t.elapsed(),
            detail: String::new(),
        }),
        Err(e) => events.emit(Event::Failed {
            step: Step::Restore,
            error: error_chain(e),
        }),
    }
    result
}

/// Cold boot: QEMU from the kernel, up to the guest agent.
async fn boot(
    run: &RunDir,
    state: &mut LabState,
    argv: &[String],
    opts: &UpOptions,
    events: &Events,
    t0: Instant,
) -> Result<Agent, LabError> {
    let mut qemu_child = events.step(Step::QemuStart, state.accel.as_str(), || {
        process::spawn_detached(argv, &run.qemu_log())
    })?;
    let pid = qemu_child.id();
    state.qemu_pid = Some(pid);
    run.save(state)?;

    let marker = run.marker();
    let console = qemu::console_log(&run.dir);
    let t = Instant::now();
    events.emit(Event::Started {
        step: Step::AgentWait,
        detail: String::new(),
    });
    let agent = Agent::wait(
        &qemu::agent_socket(&run.sockets),
        Instant::now() + opts.boot_timeout,
        || process::child_running(&mut qemu_child),
        {
            let mut watch = process::LogWatch::new(&console, AGENT_STARTED);
            move || watch.seen()
        },
    )
    .await;
    let agent = match agent {
        Ok(a) => a,
        Err(source) => {
            let err = if process::is_alive(pid, &marker) {
                LabError::BootTimeout {
                    timeout: opts.boot_timeout,
                    console: console.clone(),
                    console_tail: process::tail(&console, 15),
                    source: Box::new(source),
                }
            } else {
                LabError::QemuDied {
                    log: run.qemu_log(),
                    qemu_tail: process::tail(&run.qemu_log(), 10),
                    console: console.clone(),
                    console_tail: process::tail(&console, 15),
                }
            };
            return Err(failed(events, Step::AgentWait, err));
        }
    };
    events.emit(Event::Finished {
        step: Step::AgentWait,
        elapsed: t.elapsed(),
        detail: String::new(),
    });
    state.timings.agent_ready_ms = t0.elapsed().as_millis() as u64;
    Ok(agent)
}

/// The lab's regions, after either way up.
async fn create_regions(
    run: &RunDir,
    topology: &Topology,
    state: &mut LabState,
    agent: &Agent,
    events: &Events,
    t0: Instant,
) -> Result<cxl_regions::plan::Outcome, LabError> {
    let console = qemu::console_log(&run.dir);
    let plan = regions::plan(topology);
    let t = Instant::now();
    events.emit(Event::Started {
        step: Step::Regions,
        detail: format!("{} devices", plan.devices.len()),
    });
    let outcome = regions::create(agent, &plan).await.map_err(|source| {
        let e = LabError::Regions {
            console: console.clone(),
            source: Box::new(source),
        };
        failed(events, Step::Regions, e)
    })?;
    let daxes: Vec<String> = outcome
        .devices
        .iter()
        .filter_map(|d| d.dax.clone())
        .collect();
    events.emit(Event::Finished {
        step: Step::Regions,
        elapsed: t.elapsed(),
        detail: daxes.join(" "),
    });
    state.timings.regions_ready_ms = t0.elapsed().as_millis() as u64;
    Ok(outcome)
}

/// After either way up: timing mode armed, the lab marked up.
async fn finish(
    run: &RunDir,
    topology: &Topology,
    state: &mut LabState,
    agent: &Agent,
    outcome: cxl_regions::plan::Outcome,
    opts: &UpOptions,
    events: &Events,
) -> Result<(), LabError> {
    if let Some(ts) = state.timing.clone() {
        let t = Instant::now();
        events.emit(Event::Started {
            step: Step::Timing,
            detail: String::new(),
        });
        let armed = crate::timing::arm(
            &run.memsim_control(),
            agent,
            &outcome,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| failed(events, Step::Timing, e))?;
        let stall = if opts.stall || topology.simulator.timing == TimingMode::Stall {
            let s = crate::stall::apply(&run.memsim_control(), agent, topology, &outcome)
                .await
                .map_err(|e| failed(events, Step::Timing, e))?;
            Some(s)
        } else {
            None
        };
        events.emit(Event::Finished {
            step: Step::Timing,
            elapsed: t.elapsed(),
            detail: armed.windows.join(" "),
        });
        state.timing = Some(crate::timing::TimingState {
            plugin: ts.plugin,
            plugin_socket: ts.plugin_socket,
            learning: ts.learning,
            stall,
            ..armed
        });
    }
    state.regions = Some(outcome);
    state.status = LabStatus::Up;
    run.save(state)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_area_of_another_size_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t = Topology::embedded_default();
        let files = DeviceFiles::in_dir(&t, dir.path());
        let lsa = files
            .iter()
            .find_map(|f| f.lsa.clone())
            .expect("the default topology has a label area");
        label_areas(&t, &files).unwrap();
        let size = std::fs::metadata(&lsa).unwrap().len();
        assert!(size > 0, "a new label area is sized");
        label_areas(&t, &files).expect("the same size is fine");

        std::fs::write(&lsa, [7u8; 4096]).unwrap();
        let e = label_areas(&t, &files).expect_err("size mismatch");
        let msg = e.to_string();
        assert!(
            msg.contains("has 4096 bytes but the topology says lsa_size"),
            "{msg}"
        );
        assert!(msg.contains("move the file away"), "{msg}");
        assert_eq!(std::fs::read(&lsa).unwrap(), [7u8; 4096], "no label lost");

        // Labels without their data file: refused, both kept as they are.
        let size = t.devices.iter().find_map(|d| d.lsa_size).unwrap().bytes();
        let mut labels = vec![0u8; size as usize];
        labels[100] = 1;
        std::fs::write(&lsa, &labels).unwrap();
        let memory = &files.iter().find(|f| f.lsa.is_some()).unwrap().memory;
        assert!(!memory.exists());
        let msg = label_areas(&t, &files).unwrap_err().to_string();
        assert!(
            msg.contains("holds namespace labels, but its backing file"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&lsa).unwrap(), labels);
        // With the data file there, the labels are its own.
        std::fs::write(memory, b"data").unwrap();
        label_areas(&t, &files).expect("labels with their data");
    }

    #[test]
    fn labels_written_in_another_region_shape_are_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let base = r#"
[[host_bridge]]
name = "hb0"
[[host_bridge]]
name = "hb1"
[[root_port]]
name = "rp0"
host_bridge = "hb0"
[[root_port]]
name = "rp1"
host_bridge = "hb1"
[[device]]
name = "pmem0"
kind = "persistent"
size = "256M"
port = "rp0"
[[device]]
name = "pmem1"
kind = "persistent"
size = "256M"
port = "rp1"
[[window]]
size = "4G"
targets = ["hb0"]
[[window]]
size = "4G"
targets = ["hb1"]
[[window]]
size = "4G"
targets = ["hb0", "hb1"]
"#;
        let one_way = Topology::parse(
            &format!("{base}[[region]]\nname = \"pair\"\ndevices = [\"pmem0\", \"pmem1\"]\n"),
            "pair.toml",
        )
        .unwrap();
        // The same devices, each in a region of its own.
        let alone = Topology::parse(base, "alone.toml").unwrap();
        let files = DeviceFiles::in_dir(&one_way, dir.path());
        label_areas(&one_way, &files).expect("a new device");
        let pmem0 = files.iter().find(|f| f.name == "pmem0").unwrap();
        let lsa = pmem0.lsa.clone().unwrap();
        let mut labels = std::fs::read(&lsa).unwrap();
        labels[64] = 1;
        std::fs::write(&lsa, &labels).unwrap();
        std::fs::write(&pmem0.memory, b"data").unwrap();
        label_areas(&one_way, &files).expect("the same shape again");
        let files_alone = DeviceFiles::in_dir(&alone, dir.path());
        let msg = label_areas(&alone, &files_alone).unwrap_err().to_string();
        assert!(
            msg.contains("written when the device was position 0 of a 2-way region at 8192 B over pmem0 (serial")
                && msg.contains("but the topology now makes it position 0 of a 1-way region"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&lsa).unwrap(), labels, "no label lost");
        // Without labels a device may change shape freely.
        std::fs::write(&lsa, vec![0u8; labels.len()]).unwrap();
        label_areas(&alone, &files_alone).expect("an empty label area");
    }
}
