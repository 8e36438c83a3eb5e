//! Turning every planned region into a `/dev/daxX.Y`, a `/dev/pmemN` or a
//! system-ram NUMA node.
//!
//! Regions are built through sysfs as Documentation/ABI/testing/sysfs-bus-cxl
//! describes, for ram and pmem alike: Debian 12's ndctl 76.1 cannot create
//! ram regions ("region type 'ram' not supported yet"), and its
//! `cxl create-region` exits 0 with no output when the kernel refuses a
//! step. Through sysfs every refusal names the attribute, and interleaved
//! regions get their targets at exactly the planned positions.
//!
//! Order matters to the kernel: regions that share a port must be created
//! in increasing host physical address order ("HPA order violation",
//! EBUSY, otherwise), so they are built window by window in the order the
//! host allocated them; and ram regions that should stay devdax must exist
//! before `kmem` is loaded, so system-ram ones are onlined last.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::discover::{self, DecoderUse};
use crate::plan::{
    DeviceOutcome, Kind, MemberOutcome, Mode, Outcome, Plan, PlannedDevice, PlannedRegion,
    RegionOutcome,
};
use crate::sysfs::{parse_num, Sysfs, SysfsError};
use crate::tools::{self, ToolError};

/// Errors while setting up regions.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{file} did not appear within {timeout_ms} ms; the guest /init reports why on the console (lab console).")]
    NotReady { file: String, timeout_ms: u64 },
    #[error("Memdevs with serials {missing:?} did not appear within {timeout_ms} ms; is cxl_pci loaded and the device in the QEMU command line?")]
    MemdevsMissing {
        missing: Vec<String>,
        timeout_ms: u64,
    },
    #[error("Device {device} ({memdev}) has no endpoint port; is cxl_mem loaded?")]
    NoEndpoint { device: String, memdev: String },
    #[error("Device {device} ({memdev}) has no free endpoint decoder.")]
    NoFreeDecoder { device: String, memdev: String },
    #[error("Region {region} names device {device}, which the plan does not list.")]
    UnknownDevice { region: String, device: String },
    #[error("Region {region} cannot use its window: {reason}; check the topology's windows.")]
    Window { region: String, reason: String },
    #[error("Region {region}'s devices are in different kernel regions ({found}); stop the lab and start it again.")]
    Mixed { region: String, found: String },
    #[error("Setting up region {region} failed.{kernel_log}")]
    Sysfs {
        region: String,
        /// The kernel's last CXL messages, when it logged any.
        kernel_log: String,
        #[source]
        source: SysfsError,
    },
    #[error("Setting up region {region} failed.")]
    Tool {
        region: String,
        #[source]
        source: ToolError,
    },
    #[error("Region {region} ({kernel}) did not produce {what} within {timeout_ms} ms.")]
    Timeout {
        region: String,
        kernel: String,
        what: &'static str,
        timeout_ms: u64,
    },
}

/// One sysfs write of the region sequence, relative to the sysfs root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsWrite {
    pub path: String,
    pub value: String,
}

/// The writes that build, commit and enable region `region` (already
/// created under its root decoder) over `ep_decoders` in position order,
/// each giving `device_size` bytes. A pmem region needs its `uuid` first.
pub fn region_writes(
    kind: Kind,
    region: &str,
    uuid: Option<&str>,
    ep_decoders: &[String],
    device_size: u64,
    granularity: u64,
) -> Vec<SysfsWrite> {
    let r = format!("bus/cxl/devices/{region}");
    let w = |path: String, value: String| SysfsWrite { path, value };
    let mode = match kind {
        Kind::Persistent => "pmem",
        Kind::Volatile | Kind::Dynamic => "ram",
    };
    let mut out = Vec::new();
    if let Some(u) = uuid {
        // uuid_store() takes exactly 36 characters and a newline.
        out.push(w(format!("{r}/uuid"), format!("{u}\n")));
    }
    out.push(w(
        format!("{r}/interleave_granularity"),
        granularity.to_string(),
    ));
    out.push(w(
        format!("{r}/interleave_ways"),
        ep_decoders.len().to_string(),
    ));
    for e in ep_decoders {
        let e = format!("bus/cxl/devices/{e}");
        out.push(w(format!("{e}/mode"), mode.into()));
        out.push(w(format!("{e}/dpa_size"), format!("{device_size:#x}")));
    }
    let size = device_size * ep_decoders.len() as u64;
    out.push(w(format!("{r}/size"), format!("{size:#x}")));
    for (p, e) in ep_decoders.iter().enumerate() {
        out.push(w(format!("{r}/target{p}"), e.clone()));
    }
    out.push(w(format!("{r}/commit"), "1".into()));
    out.push(w("bus/cxl/drivers/cxl_region/bind".into(), region.into()));
    out
}

struct Ctx<'a> {
    sys: &'a Sysfs,
    timeout: Duration,
}

impl Ctx<'_> {
    fn wait<T>(&self, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(v) = probe() {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn timeout_ms(&self) -> u64 {
        self.timeout.as_millis() as u64
    }
}

/// A member device found in sysfs.
struct Member<'p> {
    device: &'p PlannedDevice,
    memdev: String,
    decoder: DecoderUse,
}

/// Sets up every region of `plan` and reports every device and region.
pub fn run(plan: &Plan, sys: &Sysfs) -> Result<Outcome, SetupError> {
    let started = Instant::now();
    let ctx = Ctx {
        sys,
        timeout: Duration::from_millis(plan.timeout_ms),
    };
    if let Some(f) = &plan.ready_file {
        ctx.wait(|| Path::new(f).exists().then_some(()))
            .ok_or_else(|| SetupError::NotReady {
                file: f.clone(),
                timeout_ms: plan.timeout_ms,
            })?;
    }
    let wanted: Vec<u64> = plan.devices.iter().map(|d| d.serial).collect();
    let memdevs = ctx
        .wait(|| {
            let m = discover::memdevs_by_serial(sys);
            wanted.iter().all(|s| m.contains_key(s)).then_some(m)
        })
        .ok_or_else(|| {
            let m = discover::memdevs_by_serial(sys);
            SetupError::MemdevsMissing {
                missing: wanted
                    .iter()
                    .filter(|s| !m.contains_key(s))
                    .map(|s| format!("{s:#x}"))
                    .collect(),
                timeout_ms: plan.timeout_ms,
            }
        })?;
    // The region driver explains its refusals only in debug messages.
    enable_cxl_debug_log();

    // Build in window order, then the order the host allocated them in.
    let mut order: Vec<&PlannedRegion> = plan.regions.iter().collect();
    order.sort_by_key(|r| r.window);
    let mut regions = Vec::new();
    for r in order {
        let members = r
            .devices
            .iter()
            .map(|name| {
                let device = plan
                    .devices
                    .iter()
                    .find(|d| &d.name == name)
                    .ok_or_else(|| SetupError::UnknownDevice {
                        region: r.name.clone(),
                        device: name.clone(),
                    })?;
                let memdev = memdevs[&device.serial].clone();
                let decoder = decoder_for(&ctx, device, &memdev)?;
                Ok(Member {
                    device,
                    memdev,
                    decoder,
                })
            })
            .collect::<Result<Vec<_>, SetupError>>()?;
        regions.push(build_region(&ctx, r, &members)?);
    }
    if let Some(f) = &plan.finally_wait_for {
        ctx.wait(|| Path::new(f).exists().then_some(()))
            .ok_or_else(|| SetupError::NotReady {
                file: f.clone(),
                timeout_ms: plan.timeout_ms,
            })?;
    }
    // System RAM last: with kmem loaded, every new ram region's dax
    // device would be onlined, devdax ones included. And after the guest's
    // /init has loaded its late modules: onlining memory while modprobe
    // runs stalled the module load past every timeout (seen under TCG).
    for out in regions.iter_mut() {
        let planned = plan.regions.iter().find(|r| r.name == out.name);
        if let Some(r) = planned.filter(|r| r.mode == Mode::SystemRam) {
            online_system_ram(&ctx, r, out)?;
        }
    }
    // Report in plan order.
    regions.sort_by_key(|o| plan.regions.iter().position(|r| r.name == o.name));
    let devices = plan
        .devices
        .iter()
        .map(|d| device_outcome(d, &memdevs[&d.serial], &regions))
        .collect();
    Ok(Outcome {
        devices,
        regions,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// A device's view of its region (the same dax device for every member).
fn device_outcome(d: &PlannedDevice, memdev: &str, regions: &[RegionOutcome]) -> DeviceOutcome {
    let found = regions.iter().find_map(|r| {
        r.members
            .iter()
            .position(|m| m.device == d.name)
            .map(|p| (r, p))
    });
    match found {
        Some((r, position)) => DeviceOutcome {
            name: d.name.clone(),
            serial: d.serial,
            memdev: memdev.to_owned(),
            mode: r.mode,
            region: Some(r.region.clone()),
            dax: r.dax.clone(),
            dax_size: r.dax_size,
            region_start: Some(r.start),
            numa_node: r.numa_node,
            reused: r.reused,
            region_name: Some(r.name.clone()),
            position: Some(position),
        },
        None => DeviceOutcome {
            name: d.name.clone(),
            serial: d.serial,
            memdev: memdev.to_owned(),
            mode: Mode::None,
            region: None,
            dax: None,
            dax_size: None,
            region_start: None,
            numa_node: None,
            reused: false,
            region_name: None,
            position: None,
        },
    }
}

/// Turns on the CXL core's debug messages (best effort: it needs debugfs
/// and CONFIG_DYNAMIC_DEBUG), so a refusal can be explained from the log.
fn enable_cxl_debug_log() {
    let control = Path::new("/sys/kernel/debug/dynamic_debug/control");
    if !control.exists() {
        let _ = tools::run("mount", &["-t", "debugfs", "debugfs", "/sys/kernel/debug"]);
    }
    let _ = std::fs::write(control, "module cxl_core +p\n");
}

/// The kernel's last CXL messages, as lines to append to an error.
fn kernel_cxl_log() -> String {
    let Ok(log) = tools::run("dmesg", &[]) else {
        return String::new();
    };
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cxl") || l.contains("region") || l.contains("decoder"))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(12)..];
    format!(" The kernel's last CXL messages:\n  {}", tail.join("\n  "))
}

fn sysfs_err(region: &PlannedRegion) -> impl Fn(SysfsError) -> SetupError + '_ {
    move |source| SetupError::Sysfs {
        region: region.name.clone(),
        kernel_log: kernel_cxl_log(),
        source,
    }
}

fn tool_err(region: &PlannedRegion) -> impl Fn(ToolError) -> SetupError + '_ {
    move |source| SetupError::Tool {
        region: region.name.clone(),
        source,
    }
}

/// The endpoint decoder to use, or the region the device is already in.
fn decoder_for(ctx: &Ctx, d: &PlannedDevice, memdev: &str) -> Result<DecoderUse, SetupError> {
    let endpoint =
        discover::endpoint_of(ctx.sys, memdev).ok_or_else(|| SetupError::NoEndpoint {
            device: d.name.clone(),
            memdev: memdev.into(),
        })?;
    discover::endpoint_decoder(ctx.sys, &endpoint).ok_or_else(|| SetupError::NoFreeDecoder {
        device: d.name.clone(),
        memdev: memdev.into(),
    })
}

fn read_num(ctx: &Ctx, path: &Path) -> Option<u64> {
    ctx.sys.read(path).ok().and_then(|s| parse_num(&s))
}

/// A random UUID from the kernel, for a pmem region.
fn new_uuid() -> Result<String, SysfsError> {
    let path = Path::new("/proc/sys/kernel/random/uuid");
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| SysfsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Creates (or finds) the kernel region of `r`, then its dax device or
/// namespace (system-ram is onlined later).
fn build_region(
    ctx: &Ctx,
    r: &PlannedRegion,
    members: &[Member],
) -> Result<RegionOutcome, SetupError> {
    let sys = ctx.sys;
    let in_regions: Vec<&str> = members
        .iter()
        .filter_map(|m| match &m.decoder {
            DecoderUse::InRegion { region, .. } => Some(region.as_str()),
            DecoderUse::Free(_) => None,
        })
        .collect();
    let (region, reused) = if in_regions.is_empty() {
        let root = discover::root_decoder_of_window(sys, r.window, &r.window_targets, r.kind)
            .map_err(|reason| SetupError::Window {
                region: r.name.clone(),
                reason,
            })?;
        let create = sys.cxl_dev(&root).join(match r.kind {
            Kind::Persistent => "create_pmem_region",
            Kind::Volatile | Kind::Dynamic => "create_ram_region",
        });
        let region = sys.read(&create).map_err(sysfs_err(r))?;
        sys.write(&create, &region).map_err(sysfs_err(r))?;
        let uuid = match r.kind {
            Kind::Persistent => Some(new_uuid().map_err(sysfs_err(r))?),
            _ => None,
        };
        let decoders: Vec<String> = members
            .iter()
            .map(|m| match &m.decoder {
                DecoderUse::Free(d) | DecoderUse::InRegion { decoder: d, .. } => d.clone(),
            })
            .collect();
        for w in region_writes(
            r.kind,
            &region,
            uuid.as_deref(),
            &decoders,
            r.device_size,
            r.granularity,
        ) {
            sys.write(&sys.path(&w.path), &w.value)
                .map_err(sysfs_err(r))?;
        }
        (region, false)
    } else if in_regions.len() == members.len() && in_regions.iter().all(|x| *x == in_regions[0]) {
        (in_regions[0].to_owned(), true)
    } else {
        return Err(SetupError::Mixed {
            region: r.name.clone(),
            found: in_regions.join(", "),
        });
    };
    let dir = sys.cxl_dev(&region);
    let timeout = |what| SetupError::Timeout {
        region: r.name.clone(),
        kernel: region.clone(),
        what,
        timeout_ms: ctx.timeout_ms(),
    };
    let start = read_num(ctx, &dir.join("resource")).ok_or_else(|| timeout("a start address"))?;
    let size = read_num(ctx, &dir.join("size")).unwrap_or(0);
    let mut targets = Vec::new();
    for (p, m) in members.iter().enumerate() {
        let decoder = sys
            .read(&dir.join(format!("target{p}")))
            .unwrap_or_default();
        let dpa_base = read_num(ctx, &sys.cxl_dev(&decoder).join("dpa_resource")).unwrap_or(0);
        targets.push(MemberOutcome {
            device: m.device.name.clone(),
            memdev: m.memdev.clone(),
            decoder,
            dpa_base,
        });
    }
    let mut out = RegionOutcome {
        name: r.name.clone(),
        region: region.clone(),
        mode: r.mode,
        start,
        size,
        ways: read_num(ctx, &dir.join("interleave_ways")).unwrap_or(0),
        granularity: read_num(ctx, &dir.join("interleave_granularity")).unwrap_or(0),
        members: targets,
        dax: None,
        dax_size: None,
        pmem: None,
        numa_node: None,
        reused,
    };
    match (r.kind, r.mode) {
        (Kind::Persistent, mode) => pmem_namespace(ctx, r, &mut out, mode)?,
        (_, Mode::SystemRam) => {}
        _ => ram_devdax(ctx, r, &mut out)?,
    }
    Ok(out)
}

fn dax_of(ctx: &Ctx, r: &PlannedRegion, out: &RegionOutcome) -> Result<String, SetupError> {
    ctx.wait(|| discover::dax_below(ctx.sys, &out.region))
        .ok_or_else(|| SetupError::Timeout {
            region: r.name.clone(),
            kernel: out.region.clone(),
            what: "a dax device",
            timeout_ms: ctx.timeout_ms(),
        })
}

fn ram_devdax(ctx: &Ctx, r: &PlannedRegion, out: &mut RegionOutcome) -> Result<(), SetupError> {
    let sys = ctx.sys;
    let dax = dax_of(ctx, r, out)?;
    let dax_dir = sys.path("bus/dax/devices").join(&dax);
    // Until device_dax binds, opening /dev/daxN.M fails with ENXIO.
    if sys.link_name(&dax_dir.join("driver")).as_deref() != Some("device_dax") {
        tools::run(
            "daxctl",
            &["reconfigure-device", "-m", "devdax", "-f", &dax],
        )
        .map_err(tool_err(r))?;
    }
    out.dax_size = read_num(ctx, &dax_dir.join("size"));
    out.dax = Some(format!("/dev/{dax}"));
    Ok(())
}

fn online_system_ram(
    ctx: &Ctx,
    r: &PlannedRegion,
    out: &mut RegionOutcome,
) -> Result<(), SetupError> {
    let sys = ctx.sys;
    let dax = dax_of(ctx, r, out)?;
    let dax_dir = sys.path("bus/dax/devices").join(&dax);
    if sys.link_name(&dax_dir.join("driver")).as_deref() != Some("kmem") {
        if !Path::new("/sys/bus/dax/drivers/kmem").exists() {
            tools::run("modprobe", &["kmem"]).map_err(tool_err(r))?;
        }
        if sys.link_name(&dax_dir.join("driver")).as_deref() != Some("kmem") {
            tools::run(
                "daxctl",
                &["reconfigure-device", "-m", "system-ram", "-f", &dax],
            )
            .map_err(tool_err(r))?;
        }
    }
    out.dax_size = read_num(ctx, &dax_dir.join("size"));
    out.numa_node = sys
        .read(&dax_dir.join("target_node"))
        .ok()
        .and_then(|s| s.parse().ok());
    Ok(())
}

/// The region's namespace in `mode` (devdax or fsdax): found again from
/// its labels, converted from another mode, or created.
fn pmem_namespace(
    ctx: &Ctx,
    r: &PlannedRegion,
    out: &mut RegionOutcome,
    mode: Mode,
) -> Result<(), SetupError> {
    let sys = ctx.sys;
    let timeout = |what| SetupError::Timeout {
        region: r.name.clone(),
        kernel: out.region.clone(),
        what,
        timeout_ms: ctx.timeout_ms(),
    };
    let nd_region = ctx
        .wait(|| discover::nd_region_at(sys, out.start))
        .ok_or_else(|| timeout("an nvdimm region"))?;
    let mode_name = if mode == Mode::Fsdax {
        "fsdax"
    } else {
        "devdax"
    };
    let find = |list: &[serde_json::Value]| match mode {
        Mode::Fsdax => tools::fsdax_blockdev(list),
        _ => tools::devdax_chardev(list),
    };
    let list = |nd: &str| -> Result<Vec<serde_json::Value>, SetupError> {
        let listed = tools::run("ndctl", &["list", "-N", "-X", "-r", nd]).map_err(tool_err(r))?;
        tools::json_list("ndctl list", &listed).map_err(tool_err(r))
    };
    let listed = list(&nd_region)?;
    // A namespace written before (its label is in the LSA) comes back by
    // itself; creating another would fail with ENOSPC.
    let (dev, size) = match find(&listed) {
        Some(found) => {
            out.reused = true;
            found
        }
        None => {
            // A namespace left in another mode (a suite's fsdax) is
            // changed in place; otherwise a new one takes the region.
            let created = match tools::other_namespace(&listed, mode_name) {
                Some((ns, map)) => tools::run(
                    "ndctl",
                    &[
                        "create-namespace",
                        "-f",
                        "-e",
                        &ns,
                        "-m",
                        mode_name,
                        &format!("--map={map}"),
                    ],
                ),
                // The page map in RAM (`--map=mem`), not on the device:
                // under TCG every store to CXL memory is an emulated
                // access, and the namespace's 4 MiB of struct pages made
                // its every probe (each boot, each restore) take 0.6-0.7 s
                // instead of 0.08 s. A namespace made before keeps its map.
                None => tools::run(
                    "ndctl",
                    &[
                        "create-namespace",
                        "-m",
                        mode_name,
                        "--map=mem",
                        "-r",
                        &nd_region,
                    ],
                ),
            }
            .map_err(tool_err(r))?;
            let created =
                tools::json_list("ndctl create-namespace", &created).map_err(tool_err(r))?;
            match find(&created) {
                Some(c) => c,
                None => find(&list(&nd_region)?).ok_or_else(|| timeout("a namespace"))?,
            }
        }
    };
    ctx.wait(|| Path::new("/dev").join(&dev).exists().then_some(()));
    match mode {
        Mode::Fsdax => {
            out.pmem = Some(format!("/dev/{dev}"));
            out.dax_size = None;
        }
        _ => {
            let dax_size = read_num(ctx, &sys.path("bus/dax/devices").join(&dev).join("size"));
            out.dax = Some(format!("/dev/{dev}"));
            out.dax_size = dax_size.or(Some(size));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `path <- value`, one per write.
    fn as_lines(writes: &[SysfsWrite]) -> Vec<String> {
        writes
            .iter()
            .map(|w| format!("{} <- {}", w.path, w.value))
            .collect()
    }

    #[test]
    fn ram_region_sequence_follows_the_sysfs_abi_order() {
        let w = region_writes(
            Kind::Volatile,
            "region0",
            None,
            &["decoder3.0".into()],
            256 << 20,
            256,
        );
        let lines = as_lines(&w);
        assert_eq!(
            lines,
            [
                "bus/cxl/devices/region0/interleave_granularity <- 256",
                "bus/cxl/devices/region0/interleave_ways <- 1",
                "bus/cxl/devices/decoder3.0/mode <- ram",
                "bus/cxl/devices/decoder3.0/dpa_size <- 0x10000000",
                "bus/cxl/devices/region0/size <- 0x10000000",
                "bus/cxl/devices/region0/target0 <- decoder3.0",
                "bus/cxl/devices/region0/commit <- 1",
                "bus/cxl/drivers/cxl_region/bind <- region0",
            ]
        );
    }

    #[test]
    fn interleaved_pmem_region_sets_uuid_then_every_target_in_position_order() {
        let w = region_writes(
            Kind::Persistent,
            "region2",
            Some("c0ffee00-0000-4000-8000-000000000000"),
            &["decoder5.0".into(), "decoder6.0".into()],
            256 << 20,
            4096,
        );
        let lines = as_lines(&w);
        assert_eq!(
            lines,
            [
                "bus/cxl/devices/region2/uuid <- c0ffee00-0000-4000-8000-000000000000\n",
                "bus/cxl/devices/region2/interleave_granularity <- 4096",
                "bus/cxl/devices/region2/interleave_ways <- 2",
                "bus/cxl/devices/decoder5.0/mode <- pmem",
                "bus/cxl/devices/decoder5.0/dpa_size <- 0x10000000",
                "bus/cxl/devices/decoder6.0/mode <- pmem",
                "bus/cxl/devices/decoder6.0/dpa_size <- 0x10000000",
                "bus/cxl/devices/region2/size <- 0x20000000",
                "bus/cxl/devices/region2/target0 <- decoder5.0",
                "bus/cxl/devices/region2/target1 <- decoder6.0",
                "bus/cxl/devices/region2/commit <- 1",
                "bus/cxl/drivers/cxl_region/bind <- region2",
            ]
        );
    }

    #[test]
    fn missing_memdevs_time_out_with_their_serials() {
        let t = tempfile::tempdir().unwrap();
        let plan = Plan {
            devices: vec![PlannedDevice {
                name: "vmem0".into(),
                serial: 0x1000,
                kind: Kind::Volatile,
                size: 256 << 20,
                mode: Mode::Devdax,
                host_bridge_uid: 12,
            }],
            regions: Vec::new(),
            ready_file: None,
            finally_wait_for: None,
            timeout_ms: 50,
        };
        let e = run(&plan, &Sysfs::new(t.path())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Memdevs with serials [\"0x1000\"] did not appear within 50 ms; is cxl_pci loaded and the device in the QEMU command line?"
        );
    }
}
