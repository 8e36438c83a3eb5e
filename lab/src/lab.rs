//! The verbs: `up`, `down`, `status`, `exec`, `args`. Each step reports
//! progress through [`Events`]; every failure during `up` tears down what
//! was started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use cxl_topology::{DeviceKind, Topology, TopologyError};

use crate::events::{Event, Events, Step};
use crate::image::{self, ImageError, ImageOptions};
use crate::memsim::{self, MemsimError};
use crate::process::{self, ProcessError};
use crate::qemu::{self, Accel, DeviceFiles, QemuConfig};
use crate::qga::{Agent, ExecOutput, QgaError};
use crate::qmp::Qmp;
use crate::regions::{self, RegionError};
use crate::rundir::{LabState, LabStatus, RunDir, RunDirError, Timings};

/// Errors of the verbs.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error("Building the guest image failed.")]
    Image(#[from] ImageError),
    #[error(transparent)]
    Memsim(#[from] MemsimError),
    #[error("Starting QEMU failed.")]
    Process(#[from] ProcessError),
    #[error("Creating regions in the guest failed; the console log is {console}.")]
    Regions {
        console: PathBuf,
        #[source]
        source: Box<RegionError>,
    },
    #[error("Lab '{0}' is already up; run `lab down --name {0}` first.")]
    AlreadyUp(String),
    #[error("Lab '{0}' is not up; start it with `lab up --name {0}`.")]
    NotUp(String),
    #[error("QEMU exited during boot; {log} ends with:\n{qemu_tail}\nand the console ({console}) with:\n{console_tail}")]
    QemuDied {
        log: PathBuf,
        qemu_tail: String,
        console: PathBuf,
        console_tail: String,
    },
    #[error("The guest agent did not answer within {timeout:?}; the console ({console}) ends with:\n{console_tail}")]
    BootTimeout {
        timeout: Duration,
        console: PathBuf,
        console_tail: String,
        #[source]
        source: Box<QgaError>,
    },
    #[error("Cannot reach the guest agent of lab '{name}'.")]
    Agent {
        name: String,
        #[source]
        source: Box<QgaError>,
    },
    /// A guest command (`lab exec`) that could not run or finish.
    #[error(transparent)]
    Guest(Box<QgaError>),
    #[error(transparent)]
    Suite(#[from] crate::suites::SuiteError),
    #[error("Timing mode could not start.")]
    Timing(#[from] crate::timing::TimingError),
    #[error("The label storage area {path} of device {device} has {found} bytes but the topology says lsa_size = {expected}; move the file away (its namespace labels belong to another topology) or fix the device's lsa_size.")]
    LsaSizeMismatch {
        device: String,
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("The label storage area {} of persistent device {device} holds namespace labels, but its backing file {} is gone, so the guest would find labels for data that is not there and region set-up would fail; put the backing file back, or move the label area away too for a fresh device.", lsa.display(), memory.display())]
    OrphanLabels {
        device: String,
        lsa: PathBuf,
        memory: PathBuf,
    },
    #[error("Lab '{name}' is running, so `lab args` prints the command line it runs with, which {option} cannot change ({why}); leave {option} out to see it, or run `lab down --name {name}` first to see the command line {option} gives.")]
    ArgsOfRunning {
        name: String,
        option: &'static str,
        why: &'static str,
    },
    #[error("Cannot create {path}.")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the guest /init prints on the console once qemu-ga runs.
const AGENT_STARTED: &str = "cxl-lab: guest agent on";

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
        }
    }
}

/// One device in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    pub name: String,
    pub kind: DeviceKind,
    pub size: u64,
    pub mode: String,
    pub memdev: Option<String>,
    pub dax: Option<String>,
    pub numa_node: Option<i64>,
    pub backing: PathBuf,
    /// Offset of the device in the simulator's flat address space.
    pub simulator_base: u64,
    /// The device's vhost-user-blk view, when the topology asks for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vhost_user_blk: Option<BlockViewSummary>,
}

/// A device's memory served as a virtio disk by the simulator.
#[derive(Debug, Clone, Serialize)]
pub struct BlockViewSummary {
    /// The simulator's vhost-user socket QEMU is connected to.
    pub socket: PathBuf,
    /// The disk's serial in the guest (`/sys/block/vdX/serial`).
    pub serial: String,
    pub read_only: bool,
}

/// What `lab up` and `lab status` print.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub status: LabStatus,
    pub run_dir: PathBuf,
    pub accel: Accel,
    pub image_key: String,
    pub devices: Vec<DeviceSummary>,
    pub qmp_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub console_log: PathBuf,
    pub simulator_tcp: Option<String>,
    pub simulator_control: PathBuf,
    pub qemu_pid: Option<u32>,
    pub simulator_pid: Option<u32>,
    pub timings: Timings,
    /// Timing mode: the TCG plugin, its socket, windows and regions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<crate::timing::TimingState>,
}

fn summarize(run: &RunDir, state: &LabState, topology: &Topology) -> Summary {
    let offsets = topology.flat_offsets();
    let views = topology.block_views();
    let devices = topology
        .devices
        .iter()
        .map(|d| {
            let outcome = state
                .regions
                .as_ref()
                .and_then(|o| o.devices.iter().find(|x| x.name == d.name));
            let files = state.devices.iter().find(|f| f.name == d.name);
            DeviceSummary {
                name: d.name.clone(),
                kind: d.kind,
                size: d.size.bytes(),
                mode: serde_json::to_value(d.effective_mode())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                memdev: outcome.map(|o| o.memdev.clone()),
                dax: outcome.and_then(|o| o.dax.clone()),
                numa_node: outcome.and_then(|o| o.numa_node),
                backing: files.map(|f| f.memory.clone()).unwrap_or_default(),
                simulator_base: offsets
                    .iter()
                    .find(|(x, _)| x.name == d.name)
                    .map(|(_, o)| *o)
                    .unwrap_or(0),
                vhost_user_blk: views.iter().find(|(v, _)| v.name == d.name).map(
                    |(v, read_only)| BlockViewSummary {
                        socket: qemu::vhost_user_blk_socket(&run.sockets, &v.name),
                        serial: v.name.clone(),
                        read_only: *read_only,
                    },
                ),
            }
        })
        .collect();
    Summary {
        name: run.name.clone(),
        status: state.status,
        run_dir: run.dir.clone(),
        accel: state.accel,
        image_key: state.image_key.clone(),
        devices,
        qmp_socket: qemu::qmp_socket(&run.sockets),
        agent_socket: qemu::agent_socket(&run.sockets),
        console_log: qemu::console_log(&run.dir),
        simulator_tcp: state.memsim_listen.clone(),
        simulator_control: run.memsim_control(),
        qemu_pid: state.qemu_pid,
        simulator_pid: state.memsim_pid,
        timings: state.timings.clone(),
        timing: state.timing.clone(),
    }
}

/// An error and its sources as one text: sentences follow each other, a
/// message that does not end a sentence is followed by ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let sep = if msg.trim_end().ends_with(['.', '!', '?', ':']) {
            " "
        } else {
            ": "
        };
        msg = format!("{}{sep}{s}", msg.trim_end());
        src = s.source();
    }
    msg
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_owned(),
        source,
    }
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
            if found > 0
                && !f.memory.exists()
                && std::fs::read(path)
                    .map_err(io_err(path))?
                    .iter()
                    .any(|&b| b != 0)
            {
                return Err(LabError::OrphanLabels {
                    device: d.name.clone(),
                    lsa: path.clone(),
                    memory: f.memory.clone(),
                });
            }
        }
    }
    Ok(())
}

fn resolve_accel(
    choice: AccelChoice,
    img: &image::Image,
    events: &Events,
) -> Result<Accel, LabError> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Auto => Ok(match crate::kvm::cached() {
            Some(v) if v.usable => Accel::Kvm,
            _ => Accel::Tcg,
        }),
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
                Ok(Accel::Kvm)
            } else {
                events.emit(Event::Skipped {
                    step: Step::QemuStart,
                    reason: format!("KVM cannot run guests here ({}); using TCG", v.reason),
                });
                Ok(Accel::Tcg)
            }
        }
    }
}

/// `lab up`: image, simulator, QEMU, guest agent, regions.
pub async fn up(opts: &UpOptions, events: &Events) -> Result<Summary, LabError> {
    let run = RunDir::new(&opts.name)?;
    run.check_legacy()?;
    if let Some(state) = run.load()? {
        let alive = state
            .qemu_pid
            .is_some_and(|p| process::is_alive(p, &run.marker()));
        if alive && state.status != LabStatus::Down {
            return Err(LabError::AlreadyUp(run.name.clone()));
        }
        // A previous run died (QEMU killed, host rebooted): clean it up.
        down_run(&run, events).await?;
    }
    let topology = Topology::load(opts.topology.as_deref())?;
    run.check_socket_paths(&topology)?;
    run.create()?;
    let t0 = Instant::now();
    let ms = |t: Instant| t.elapsed().as_millis() as u64;

    let timing = opts.timing || topology.simulator.timing;
    if timing && opts.accel == AccelChoice::Kvm {
        return Err(crate::timing::TimingError::NeedsTcg.into());
    }
    let plugin = crate::timing::library();
    if timing && !plugin.is_file() {
        return Err(crate::timing::TimingError::NoPlugin(plugin).into());
    }
    let plugin_option = if timing {
        Some(crate::timing::plugin_option(&plugin, &run.sockets)?)
    } else {
        None
    };
    let img = image::build(&opts.image, events)?;
    let image_ms = ms(t0);
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
        resolve_accel(opts.accel, &img, events)?
    };

    // The simulator reads the effective topology (defaults filled in).
    let topo_file = run.topology_file();
    std::fs::write(&topo_file, topology.to_toml()).map_err(io_err(&topo_file))?;
    let mut devices = DeviceFiles::in_dir(&topology, &run.backing_dir());
    label_areas(&topology, &devices)?;
    let scratch = qemu::scratch_disk(&run.dir);
    let _ = std::fs::remove_file(&scratch);
    if topology.guest.scratch_disk.bytes() > 0 {
        let f = std::fs::File::create(&scratch).map_err(io_err(&scratch))?;
        f.set_len(topology.guest.scratch_disk.bytes())
            .map_err(io_err(&scratch))?;
    }
    for message in memsim::block_view_warnings(&topology) {
        events.emit(Event::Warning {
            step: Step::SimulatorStart,
            message,
        });
    }
    let sim = events.step(Step::SimulatorStart, "", || {
        let socket = run.plugin_socket();
        memsim::start(
            &run,
            &topo_file,
            &topology,
            timing.then_some(socket.as_path()),
            Duration::from_secs(20),
        )
    })?;
    // The simulator says where it put each device's memory.
    for f in &mut devices {
        if let Some(r) = sim.ready.devices.iter().find(|r| r.name == f.name) {
            f.memory = r.path.clone();
        }
    }
    let simulator_ms = ms(t0);

    for f in ["qmp.sock", "qga.sock", "qemu.pid"] {
        let _ = std::fs::remove_file(run.socket(f));
    }
    for f in ["console.log", "qemu.log"] {
        let _ = std::fs::remove_file(run.path(f));
    }
    let argv = qemu::argv(&QemuConfig {
        topology: &topology,
        kernel: &img.kernel,
        initrd: &img.initrd,
        extras: &img.extras,
        run_dir: &run.dir,
        socket_dir: &run.sockets,
        devices: &devices,
        accel,
        extra_append: &[],
        plugin: plugin_option,
    });
    let mut state = LabState {
        name: run.name.clone(),
        status: LabStatus::Starting,
        topology_origin: topology.origin.clone(),
        image_key: img.manifest.key.clone(),
        kernel: img.kernel.clone(),
        initrd: img.initrd.clone(),
        accel,
        argv: argv.clone(),
        devices,
        qemu_pid: None,
        memsim_pid: Some(sim.pid),
        memsim_listen: Some(sim.ready.listen.clone()),
        regions: None,
        timings: Timings {
            image_ms,
            simulator_ms,
            ..Timings::default()
        },
        timing: timing.then(|| crate::timing::TimingState {
            plugin: plugin.clone(),
            plugin_socket: run.plugin_socket(),
            ..Default::default()
        }),
    };
    run.save(&state)?;

    let result = boot(&run, &topology, &mut state, &argv, opts, events, t0).await;
    match result {
        Ok(()) => Ok(summarize(&run, &state, &topology)),
        Err(e) => {
            let _ = down_run(&run, events).await;
            Err(e)
        }
    }
}

async fn boot(
    run: &RunDir,
    topology: &Topology,
    state: &mut LabState,
    argv: &[String],
    opts: &UpOptions,
    events: &Events,
    t0: Instant,
) -> Result<(), LabError> {
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
            events.emit(Event::Failed {
                step: Step::AgentWait,
                error: err.to_string(),
            });
            return Err(err);
        }
    };
    events.emit(Event::Finished {
        step: Step::AgentWait,
        elapsed: t.elapsed(),
        detail: String::new(),
    });
    state.timings.agent_ready_ms = t0.elapsed().as_millis() as u64;

    let plan = regions::plan(topology);
    let t = Instant::now();
    events.emit(Event::Started {
        step: Step::Regions,
        detail: format!("{} devices", plan.devices.len()),
    });
    let outcome = regions::create(&agent, &plan).await.map_err(|source| {
        let e = LabError::Regions {
            console: console.clone(),
            source: Box::new(source),
        };
        events.emit(Event::Failed {
            step: Step::Regions,
            error: error_chain(&e),
        });
        e
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
    if let Some(ts) = state.timing.clone() {
        let t = Instant::now();
        events.emit(Event::Started {
            step: Step::Timing,
            detail: String::new(),
        });
        let armed = crate::timing::arm(
            &run.memsim_control(),
            &agent,
            &outcome,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| {
            events.emit(Event::Failed {
                step: Step::Timing,
                error: e.to_string(),
            });
            LabError::from(e)
        })?;
        events.emit(Event::Finished {
            step: Step::Timing,
            elapsed: t.elapsed(),
            detail: armed.windows.join(" "),
        });
        state.timing = Some(crate::timing::TimingState {
            plugin: ts.plugin,
            plugin_socket: ts.plugin_socket,
            ..armed
        });
    }
    state.regions = Some(outcome);
    state.status = LabStatus::Up;
    run.save(state)?;
    Ok(())
}

/// What `lab down` did.
#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    pub name: String,
    pub was_up: bool,
    pub qemu: String,
    pub simulator: String,
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

/// `lab down`: QMP quit, then SIGTERM/SIGKILL; removes sockets, pid files
/// and volatile backing files; keeps persistent ones. Idempotent.
pub async fn down(name: &str, events: &Events) -> Result<DownReport, LabError> {
    let run = RunDir::new(name)?;
    down_run(&run, events).await
}

async fn down_run(run: &RunDir, events: &Events) -> Result<DownReport, LabError> {
    let t = Instant::now();
    events.emit(Event::Started {
        step: Step::Shutdown,
        detail: run.name.clone(),
    });
    let state = run.load()?;
    let marker = run.marker();
    let mut report = DownReport {
        name: run.name.clone(),
        was_up: false,
        qemu: "not running".into(),
        simulator: "not running".into(),
        removed: vec![],
        kept: vec![],
    };
    if let Some(pid) = state.as_ref().and_then(|s| s.qemu_pid) {
        if process::is_alive(pid, &marker) {
            report.was_up = true;
            let qmp = qemu::qmp_socket(&run.sockets);
            let quit = async {
                if let Ok(q) = Qmp::connect(&qmp).await {
                    let _ = q.quit().await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), quit).await;
            report.qemu = if process::wait_gone(pid, &marker, Duration::from_secs(5)) {
                "quit".into()
            } else {
                process::terminate(pid, &marker, Duration::from_secs(3)).into()
            };
        }
    }
    if let Some(pid) = state.as_ref().and_then(|s| s.memsim_pid) {
        // SIGTERM makes cxl-memsim print its final report into memsim.log.
        report.simulator = process::terminate(pid, &marker, Duration::from_secs(3)).into();
    }
    for f in [
        "qmp.sock",
        "qga.sock",
        "memsim.sock",
        "plugin.sock",
        "qemu.pid",
        "memsim.pid",
    ] {
        if std::fs::remove_file(run.socket(f)).is_ok() {
            report.removed.push(f.into());
        }
    }
    let topology = Topology::load(Some(&run.topology_file())).ok();
    // The simulator removes its vhost-user sockets when it exits cleanly;
    // one it was killed will not have.
    for (d, _) in topology.iter().flat_map(|t| t.block_views()) {
        let socket = qemu::vhost_user_blk_socket(&run.sockets, &d.name);
        if std::fs::remove_file(&socket).is_ok() {
            report.removed.push(socket.display().to_string());
        }
    }
    if let Some(state) = &state {
        for f in &state.devices {
            // The kind cxl-memsim recorded beside the file decides, not the
            // topology file: a failed `lab up` may have left a new topology
            // that makes a persistent device volatile.
            let recorded = std::fs::read_to_string(f.memory.with_extension("kind")).ok();
            let persistent = match recorded.as_deref().map(str::trim) {
                Some(kind) => kind == "persistent",
                // No record (or no topology): keep the file.
                None => topology
                    .as_ref()
                    .and_then(|t| t.device(&f.name))
                    .is_none_or(|d| d.kind == DeviceKind::Persistent),
            };
            if persistent {
                report.kept.push(f.memory.display().to_string());
                if let Some(l) = &f.lsa {
                    report.kept.push(l.display().to_string());
                }
            } else if std::fs::remove_file(&f.memory).is_ok() {
                report.removed.push(f.memory.display().to_string());
            }
        }
    }
    if run.sockets != run.dir {
        // Only when empty: it holds nothing else of the lab's.
        let _ = std::fs::remove_dir(&run.sockets);
    }
    if let Some(mut s) = state {
        s.status = LabStatus::Down;
        s.qemu_pid = None;
        s.memsim_pid = None;
        run.save(&s)?;
    }
    events.emit(Event::Finished {
        step: Step::Shutdown,
        elapsed: t.elapsed(),
        detail: report.qemu.clone(),
    });
    Ok(report)
}

/// `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    #[serde(flatten)]
    pub summary: Summary,
    pub qemu_running: bool,
    pub simulator_running: bool,
    pub vm_status: Option<String>,
    pub agent_answers: bool,
}

pub async fn status(name: &str) -> Result<StatusReport, LabError> {
    let run = RunDir::new(name)?;
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    let topology = Topology::load(Some(&run.topology_file()))?;
    let marker = run.marker();
    let qemu_running = state
        .qemu_pid
        .is_some_and(|p| process::is_alive(p, &marker));
    let simulator_running = state
        .memsim_pid
        .is_some_and(|p| process::is_alive(p, &marker));
    let mut vm_status = None;
    let mut agent_answers = false;
    if qemu_running {
        if let Ok(q) = Qmp::connect(&qemu::qmp_socket(&run.sockets)).await {
            vm_status = q.status().await.ok();
        }
        if let Ok(a) =
            Agent::connect(&qemu::agent_socket(&run.sockets), Duration::from_secs(3)).await
        {
            agent_answers = a.ping().await.is_ok();
        }
    }
    Ok(StatusReport {
        summary: summarize(&run, &state, &topology),
        qemu_running,
        simulator_running,
        vm_status,
        agent_answers,
    })
}

/// Connects to a running lab's guest agent.
pub async fn agent(name: &str) -> Result<Agent, LabError> {
    let run = RunDir::new(name)?;
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    if !state
        .qemu_pid
        .is_some_and(|p| process::is_alive(p, &run.marker()))
    {
        return Err(LabError::NotUp(name.to_owned()));
    }
    Agent::connect(&qemu::agent_socket(&run.sockets), Duration::from_secs(5))
        .await
        .map_err(|source| LabError::Agent {
            name: name.to_owned(),
            source: Box::new(source),
        })
}

/// `lab exec -- CMD ARGS…`.
pub async fn exec(
    name: &str,
    command: &[String],
    timeout: Duration,
) -> Result<ExecOutput, LabError> {
    let a = agent(name).await?;
    a.exec(&command[0], &command[1..], timeout)
        .await
        .map_err(|e| LabError::Guest(Box::new(e)))
}

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

/// The run directory of a lab (for `lab console` and results).
pub fn run_dir(name: &str) -> Result<RunDir, LabError> {
    Ok(RunDir::new(name)?)
}

/// The outcome of one suite of `lab run`.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteResult {
    pub suite: String,
    pub passed: bool,
    pub seconds: f64,
    pub result_file: PathBuf,
    /// The error when the suite could not run at all.
    pub error: Option<String>,
}

/// Writes a suite's outcome to `file` and returns (passed, error). A suite
/// that could not run still replaces the file of an earlier run, with
/// `{"suite", "passed": false, "error"}`, so no stale PASS is left behind.
fn record_result(
    file: &Path,
    suite: &str,
    result: Result<serde_json::Value, crate::suites::SuiteError>,
) -> Result<(bool, Option<String>), LabError> {
    let (passed, error, v) = match result {
        Ok(v) => {
            let passed = v
                .get("passed")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            (passed, None, v)
        }
        Err(e) => {
            let msg = error_chain(&e);
            let v = serde_json::json!({ "suite": suite, "passed": false, "error": msg });
            (false, Some(msg), v)
        }
    };
    std::fs::write(
        file,
        serde_json::to_vec_pretty(&v).expect("JSON serialises"),
    )
    .map_err(io_err(file))?;
    Ok((passed, error))
}

/// `lab run <suite>…`: runs suites in the guest; each one's JSON goes to
/// `results/<suite>.json` in the run directory (see `record_result`).
pub async fn run_suites(
    name: &str,
    suites: &[String],
    events: &Events,
) -> Result<Vec<SuiteResult>, LabError> {
    let list = crate::suites::expand(suites)?;
    let run = RunDir::new(name)?;
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    let topology = Topology::load(Some(&run.topology_file()))?;
    let summary = summarize(&run, &state, &topology);
    let agent = agent(name).await?;
    std::fs::create_dir_all(run.results_dir()).map_err(io_err(&run.results_dir()))?;
    let ctx = crate::suites::SuiteContext {
        agent: &agent,
        summary: &summary,
    };
    let mut out = Vec::new();
    for suite in list {
        let t = Instant::now();
        events.emit(Event::Started {
            step: Step::Command,
            detail: format!("suite {suite}"),
        });
        let file = run.results_dir().join(format!("{suite}.json"));
        let result = crate::suites::run(suite, &ctx).await;
        let (passed, error) = record_result(&file, suite, result)?;
        let detail = format!("suite {suite} {}", if passed { "passed" } else { "FAILED" });
        events.emit(Event::Finished {
            step: Step::Command,
            elapsed: t.elapsed(),
            detail,
        });
        out.push(SuiteResult {
            suite: suite.into(),
            passed,
            seconds: t.elapsed().as_secs_f64(),
            result_file: file,
            error,
        });
    }
    Ok(out)
}

/// `lab bench boot`: boot timings over several `up`/`down` cycles with a
/// cached image.
#[derive(Debug, Clone, Serialize)]
pub struct BootBench {
    pub runs: Vec<Timings>,
    pub median_agent_ready_ms: u64,
    pub median_regions_ready_ms: u64,
    pub min_regions_ready_ms: u64,
    pub max_regions_ready_ms: u64,
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        0
    } else {
        v[v.len() / 2]
    }
}

pub async fn bench_boot(
    opts: &UpOptions,
    runs: usize,
    events: &Events,
) -> Result<BootBench, LabError> {
    // Build (or find) the image first so every run measures a cached start.
    image::build(&opts.image, events)?;
    let mut timings = Vec::new();
    for _ in 0..runs {
        let s = up(opts, events).await?;
        down(&opts.name, events).await?;
        timings.push(s.timings);
    }
    let regions: Vec<u64> = timings.iter().map(|t| t.regions_ready_ms).collect();
    Ok(BootBench {
        median_agent_ready_ms: median(timings.iter().map(|t| t.agent_ready_ms).collect()),
        median_regions_ready_ms: median(regions.clone()),
        min_regions_ready_ms: regions.iter().copied().min().unwrap_or(0),
        max_regions_ready_ms: regions.iter().copied().max().unwrap_or(0),
        runs: timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suite_that_errors_replaces_an_earlier_pass() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dax.json");
        let ok = record_result(&file, "dax", Ok(serde_json::json!({"passed": true}))).unwrap();
        assert_eq!(ok, (true, None));
        let err = crate::suites::SuiteError::NoDax("dax");
        let (passed, error) = record_result(&file, "dax", Err(err)).unwrap();
        assert!(!passed);
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"suite": "dax", "passed": false, "error": error.unwrap()})
        );
        assert!(written["error"]
            .as_str()
            .unwrap()
            .starts_with("The lab has no device in devdax mode"));
    }

    /// A saved state of lab "t" with no processes.
    fn test_state(
        status: LabStatus,
        topology_origin: String,
        argv: Vec<String>,
        devices: Vec<DeviceFiles>,
    ) -> LabState {
        LabState {
            name: "t".into(),
            status,
            topology_origin,
            image_key: "k".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            accel: Accel::Tcg,
            argv,
            devices,
            qemu_pid: None,
            memsim_pid: None,
            memsim_listen: None,
            regions: None,
            timings: Timings::default(),
            timing: None,
        }
    }

    #[test]
    fn args_of_a_running_lab_refuse_options_that_would_change_it() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::under(d.path(), "t").unwrap();
        run.create().unwrap();
        let t = Topology::embedded_default();
        std::fs::write(run.topology_file(), t.to_toml()).unwrap();
        let state = test_state(
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

    #[tokio::test]
    async fn down_keeps_a_file_recorded_persistent_whatever_the_topology_file_says() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::under(d.path(), "t").unwrap();
        run.create().unwrap();
        let mut t = Topology::embedded_default();
        let devices = DeviceFiles::in_dir(&t, &run.backing_dir());
        for f in &devices {
            std::fs::write(&f.memory, b"data").unwrap();
        }
        std::fs::write(run.backing_dir().join("vmem0.kind"), "volatile\n").unwrap();
        std::fs::write(run.backing_dir().join("pmem0.kind"), "persistent\n").unwrap();
        // A `lab up` that failed left a topology making pmem0 volatile.
        for dev in &mut t.devices {
            dev.kind = DeviceKind::Volatile;
            dev.lsa_size = None;
        }
        std::fs::write(run.topology_file(), t.to_toml()).unwrap();
        let state = test_state(LabStatus::Down, String::new(), vec![], devices.clone());
        run.save(&state).unwrap();
        down_run(&run, &Events::none()).await.unwrap();
        let pmem = devices.iter().find(|f| f.name == "pmem0").unwrap();
        let vmem = devices.iter().find(|f| f.name == "vmem0").unwrap();
        assert_eq!(std::fs::read(&pmem.memory).unwrap(), b"data", "kept");
        assert!(!vmem.memory.exists(), "volatile memory removed");
    }

    #[test]
    fn error_chains_read_as_sentences() {
        let e = crate::suites::SuiteError::Agent {
            command: "dax-tester /dev/dax0.0".into(),
            source: QgaError::NotStarted,
        };
        assert_eq!(
            error_chain(&e),
            "Guest command `dax-tester /dev/dax0.0` could not be run. The guest agent never started in the guest: the guest's /init did not report it on the console."
        );
        let io = std::io::Error::other("disk full");
        let e = LabError::Io {
            path: "/x".into(),
            source: io,
        };
        assert_eq!(error_chain(&e), "Cannot create /x. disk full");
    }

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
}
