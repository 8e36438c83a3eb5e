//! What the verbs return and `lab` prints (as JSON, or as text through
//! `text.rs`): the lab summary with its devices, and the reports of
//! `status`, `down`, `run` and `bench boot`.

use std::path::PathBuf;

use serde::Serialize;

use cxl_topology::{DeviceKind, Topology};

use crate::qemu::{self, Accel};
use crate::rundir::{LabState, LabStatus, RunDir, Timings};

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

/// One region the guest built, as the kernel decodes it.
#[derive(Debug, Clone, Serialize)]
pub struct RegionSummary {
    /// The topology's name (a device's name for its own region).
    pub name: String,
    /// The kernel's (`region0`).
    pub region: String,
    pub ways: u64,
    pub granularity: u64,
    /// Host physical start and size.
    pub start: u64,
    pub size: u64,
    /// Member devices in interleave position order.
    pub devices: Vec<String>,
    pub dax: Option<String>,
    /// `/dev/pmemN` of an fsdax region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pmem: Option<String>,
    pub numa_node: Option<i64>,
}

/// What `lab up` and `lab status` print.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub status: LabStatus,
    pub run_dir: PathBuf,
    pub accel: Accel,
    pub image_key: String,
    /// `uname -r` of the guest kernel.
    pub kernel_release: Option<String>,
    /// The kernel config checked before boot (suites skip by it).
    pub kernel_config: Option<PathBuf>,
    /// Where the kernel came from: the image, or `--kernel` (its path).
    pub kernel_origin: Option<crate::kernel::KernelOrigin>,
    /// The image's out-of-tree modules this kernel cannot load (built for
    /// the image's kernel release).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub foreign_built_modules: Vec<String>,
    pub devices: Vec<DeviceSummary>,
    pub regions: Vec<RegionSummary>,
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

/// The summary of a lab from its run directory, saved state and topology.
pub fn summarize(run: &RunDir, state: &LabState, topology: &Topology) -> Summary {
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
    let regions = state
        .regions
        .iter()
        .flat_map(|o| &o.regions)
        .map(|r| RegionSummary {
            name: r.name.clone(),
            region: r.region.clone(),
            ways: r.ways,
            granularity: r.granularity,
            start: r.start,
            size: r.size,
            devices: r.members.iter().map(|m| m.device.clone()).collect(),
            dax: r.dax.clone(),
            pmem: r.pmem.clone(),
            numa_node: r.numa_node,
        })
        .collect();
    Summary {
        name: run.name.clone(),
        status: state.status,
        run_dir: run.dir.clone(),
        accel: state.accel,
        image_key: state.image_key.clone(),
        kernel_release: state.kernel_release.clone(),
        kernel_config: state.kernel_config.clone(),
        kernel_origin: state.kernel_origin.clone(),
        foreign_built_modules: state.foreign_built_modules.clone(),
        devices,
        regions,
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

/// `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    #[serde(flatten)]
    pub summary: Summary,
    pub qemu_running: bool,
    pub simulator_running: bool,
    pub vm_status: Option<String>,
    pub agent_answers: bool,
    /// What is wrong with the lab, each with its consequence and fix
    /// (a process gone, the agent silent, a backing file deleted).
    pub problems: Vec<String>,
}

/// What `lab down` did.
#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    pub name: String,
    pub was_up: bool,
    pub qemu: String,
    pub simulator: String,
    /// From QMP quit until every thread of QEMU was gone.
    pub qemu_ms: u64,
    /// From SIGTERM until every thread of cxl-memsim was gone.
    pub simulator_ms: u64,
    /// The whole `lab down`, files removed.
    pub elapsed_ms: u64,
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    /// Persistent backing files deleted under the running lab and written
    /// back from cxl-memsim's open descriptor.
    pub recovered: Vec<String>,
    /// Persistent backing files deleted under the lab that could not be
    /// written back, and why.
    pub lost: Vec<String>,
}

/// The outcome of one suite of `lab run`.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteResult {
    pub suite: String,
    pub passed: bool,
    pub seconds: f64,
    /// `results/<run id>/<suite>.json`.
    pub result_file: PathBuf,
    /// The error when the suite could not run at all.
    pub error: Option<String>,
    /// Why the suite did not run on this lab (`all` left it out, or the
    /// kernel lacks an option it needs): not a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Its headline figures (`gate::figures::headline`).
    pub headline: String,
}

impl SuiteResult {
    /// Ran and did not pass (a skipped suite did not fail).
    pub fn failed(&self) -> bool {
        !self.passed && self.skipped.is_none()
    }
}

/// What `lab run` did: the run kept in `results/<run id>/`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub suites: Vec<SuiteResult>,
}

/// `lab bench boot`: boot timings over several `up`/`down` cycles with a
/// cached image.
#[derive(Debug, Clone, Serialize)]
pub struct BootBench {
    /// Every run in order, cold ones first; each says how it came up.
    pub runs: Vec<Timings>,
    pub cold: BootStats,
    /// None when no state could be saved (the warnings of `lab up` say why).
    pub restored: Option<BootStats>,
    /// Cold median regions-ready over restored median regions-ready.
    pub speedup: Option<f64>,
}

/// Medians of one kind of boot in `lab bench boot`.
#[derive(Debug, Clone, Serialize)]
pub struct BootStats {
    pub runs: usize,
    pub median_agent_ready_ms: u64,
    pub median_regions_ready_ms: u64,
    pub min_regions_ready_ms: u64,
    pub max_regions_ready_ms: u64,
}

/// `lab bench timing`'s parts.
/// One workload armed and disarmed, host wall time around `lab exec`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSlowdown {
    pub workload: String,
    /// Medians over the runs after the first, in seconds.
    pub armed_s: f64,
    pub disarmed_s: f64,
    pub slowdown: f64,
    /// Each way's first run, not in the medians (with learning, the armed
    /// one pays the learning of the workload's code).
    pub first_armed_s: f64,
    pub first_disarmed_s: f64,
}

/// The guest's CXL/local ratios at one model setting.
#[derive(Debug, Clone, Serialize)]
pub struct RatioRow {
    /// `stall off` (observe only), or the devices' read latency as a
    /// multiple of the local latency (`2x`).
    pub setting: String,
    /// The model's CXL/local latency of an 8-byte load; none with stall off.
    pub model_latency_ratio: Option<f64>,
    /// The model's CXL/local bandwidth of a stream of 8-byte loads, one at
    /// a time as TCG runs them: the inverse of the latency ratio.
    pub model_bandwidth_ratio: Option<f64>,
    pub guest_latency_ratio: f64,
    pub guest_bandwidth_ratio: f64,
    pub guest_local_ns_per_load: f64,
    pub guest_cxl_ns_per_load: f64,
    pub guest_local_mb_per_s: f64,
    pub guest_cxl_mb_per_s: f64,
}

/// The application experiment: one guest workload with its memory bound
/// to local RAM and to the CXL NUMA node, stall mode on (the lab's own
/// calibration and model), times as the guest measures them.
#[derive(Debug, Clone, Serialize)]
pub struct AppExperiment {
    /// The workload (run under `numactl --membind=NODE`).
    pub workload: String,
    pub local_node: i64,
    pub cxl_node: i64,
    /// The CXL node's device (an interleaved region: its first member).
    pub device: String,
    /// The model's CXL/local latency of that device.
    pub model_latency_ratio: f64,
    /// The workload's own elapsed time, each run, in milliseconds.
    pub local_ms: Vec<f64>,
    pub cxl_ms: Vec<f64>,
    /// The medians' ratio, CXL over local.
    pub slowdown: f64,
}

/// `lab bench timing`.
#[derive(Debug, Clone, Serialize)]
pub struct TimingBench {
    /// The host's /proc/loadavg when the bench started and ended (the
    /// figures are only as quiet as the machine).
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub runs: usize,
    pub stall: crate::stall::StallState,
    /// Empty when the lab has no devdax region (the workloads write one).
    pub workloads: Vec<WorkloadSlowdown>,
    /// How the armed runs observed: None with learning off (every access
    /// called the plugin, every CXL access counted).
    pub learning: Option<LearningCounts>,
    pub ratios: Vec<RatioRow>,
    /// None when the lab has no system-ram (NUMA node) region.
    pub application: Option<AppExperiment>,
}

/// The plugin's learning after the armed runs (`[simulator] timing_learn`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LearningCounts {
    /// Distinct instructions left out of the instrumentation once seen.
    pub left_out: u64,
    /// Re-translations made to leave them out.
    pub prunes: u64,
    /// Left-out instructions later caught touching a window: their
    /// accesses while left out went uncounted.
    pub relearned: u64,
}

/// `lab inject`: what was injected and what QEMU answered.
#[derive(Debug, Clone, Serialize)]
pub struct InjectReport {
    /// The lab.
    pub name: String,
    /// The `lab inject` form (`poison`, `general-media`, …).
    pub form: String,
    /// The QMP command sent.
    pub command: String,
    /// The topology device, and its QOM path.
    pub device: String,
    pub path: String,
    /// The command's arguments as QMP received them.
    pub fields: serde_json::Value,
    /// QEMU's answer (`{}` for these commands).
    pub answer: serde_json::Value,
}

/// `lab bench rebuild`: today's cold path against the kernel developer's
/// rebuild loop, from one run.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildBench {
    /// The host's /proc/loadavg when the bench started and ended.
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// How `lab` was built: `debug` or `release`.
    pub profile: String,
    /// The packages the image pins, and how many of them were already
    /// downloaded (reused by the scratch cache, not downloaded again).
    pub debs_pinned: usize,
    pub debs_reused: usize,
    /// Today's cold path: the image built from scratch, then a cold
    /// `lab up` of the image's kernel.
    pub cold: RebuildPath,
    /// The kernel the rebuild loop boots, and how it was made.
    pub new_kernel: NewKernel,
    /// The rebuild loop: `lab up --kernel` of that kernel, which the lab
    /// has never seen, `--cold`.
    pub rebuild: RebuildPath,
    /// `cold.total_s` over `rebuild.total_s`.
    pub ratio: f64,
}

/// One way to regions ready, in seconds, and its parts.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildPath {
    /// Everything before QEMU: the cold path's image build and `lab up`
    /// finding it; the loop's kernel preparation in `lab up` (its
    /// modules_install, modules layer and config check).
    pub prepare_s: f64,
    /// The cold image build alone (none in the loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_build_s: Option<f64>,
    /// `lab up`'s kernel step alone (none for the image's own kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_s: Option<f64>,
    /// From the end of preparation to the guest agent: simulator, QEMU,
    /// the guest kernel and /init.
    pub boot_to_agent_s: f64,
    /// From the guest agent to regions ready.
    pub regions_s: f64,
    /// prepare + boot to agent + regions.
    pub total_s: f64,
    /// `lab up`'s own timings (milliseconds from its start).
    pub up: Timings,
    /// Each step of the path that finished before regions were ready, in
    /// order, in seconds.
    pub steps: Vec<StepTime>,
    /// `uname -r` of the kernel booted.
    pub kernel_release: String,
}

/// One finished step and its seconds.
#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    pub step: crate::events::Step,
    pub seconds: f64,
}

/// The kernel of the rebuild loop.
#[derive(Debug, Clone, Serialize)]
pub struct NewKernel {
    /// `tree` (`--kernel TREE`: a file touched, the tree's make run) or
    /// `stand-in` (the image's kernel as a vmlinuz and a modules
    /// directory, new to the bench's scratch cache).
    pub kind: String,
    /// What changed: the file touched (a tree), or nothing (the stand-in).
    pub changed: String,
    /// The build command run (`make -j2`), or how the stand-in was made.
    pub build: String,
    /// Its seconds: the developer's compile (or the stand-in's making),
    /// not counted in the loop.
    pub build_s: f64,
}
