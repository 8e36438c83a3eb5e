//! Turning every planned device into a region and a `/dev/daxX.Y` (or a
//! system-ram NUMA node).
//!
//! Debian 12's ndctl 76.1 cannot create ram regions ("region type 'ram' not
//! supported yet"), so those are made through sysfs as
//! Documentation/ABI/testing/sysfs-bus-cxl describes; pmem regions use
//! `cxl create-region` and `ndctl create-namespace -m devdax`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::discover::{self, DecoderUse};
use crate::plan::{DeviceOutcome, Kind, Mode, Outcome, Plan, PlannedDevice};
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
    #[error("No one-way {kind:?} root decoder targets host bridge {uid} for device {device}; check the topology's windows.")]
    NoRootDecoder {
        device: String,
        uid: u64,
        kind: Kind,
    },
    #[error("Setting up device {device} failed.")]
    Sysfs {
        device: String,
        #[source]
        source: SysfsError,
    },
    #[error("Setting up device {device} failed.")]
    Tool {
        device: String,
        #[source]
        source: ToolError,
    },
    #[error("Region {region} of device {device} did not produce {what} within {timeout_ms} ms.")]
    Timeout {
        device: String,
        region: String,
        what: &'static str,
        timeout_ms: u64,
    },
}

/// One sysfs write of the ram-region sequence, relative to the sysfs root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsWrite {
    pub path: String,
    pub value: String,
}

/// The writes that build and commit a one-way ram region `region` (already
/// created under `root_decoder`) over endpoint decoder `ep_decoder`.
pub fn ram_region_writes(
    region: &str,
    ep_decoder: &str,
    size: u64,
    granularity: u64,
) -> Vec<SysfsWrite> {
    let r = format!("bus/cxl/devices/{region}");
    let e = format!("bus/cxl/devices/{ep_decoder}");
    let w = |path: String, value: String| SysfsWrite { path, value };
    vec![
        w(
            format!("{r}/interleave_granularity"),
            granularity.to_string(),
        ),
        w(format!("{r}/interleave_ways"), "1".into()),
        w(format!("{e}/mode"), "ram".into()),
        w(format!("{e}/dpa_size"), format!("{size:#x}")),
        w(format!("{r}/size"), format!("{size:#x}")),
        w(format!("{r}/target0"), ep_decoder.into()),
        w(format!("{r}/commit"), "1".into()),
        w("bus/cxl/drivers/cxl_region/bind".into(), region.into()),
    ]
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
}

/// Sets up every device of `plan`; devdax devices first, then system-ram
/// ones (loading kmem first would make every ram region system RAM).
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

    let mut order: Vec<&PlannedDevice> = plan.devices.iter().collect();
    order.sort_by_key(|d| d.mode == Mode::SystemRam);
    let mut outcomes = Vec::new();
    for d in order {
        let memdev = memdevs[&d.serial].clone();
        let out = match (d.kind, d.mode) {
            (_, Mode::None) => DeviceOutcome {
                name: d.name.clone(),
                serial: d.serial,
                memdev,
                mode: Mode::None,
                region: None,
                dax: None,
                dax_size: None,
                region_start: None,
                numa_node: None,
                reused: false,
            },
            (Kind::Persistent, _) => pmem_device(&ctx, d, memdev)?,
            _ => ram_device(&ctx, d, memdev)?,
        };
        outcomes.push(out);
    }
    if let Some(f) = &plan.finally_wait_for {
        ctx.wait(|| Path::new(f).exists().then_some(()))
            .ok_or_else(|| SetupError::NotReady {
                file: f.clone(),
                timeout_ms: plan.timeout_ms,
            })?;
    }
    // Report in plan order.
    outcomes.sort_by_key(|o| plan.devices.iter().position(|d| d.name == o.name));
    Ok(Outcome {
        devices: outcomes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

fn sysfs_err(d: &PlannedDevice) -> impl Fn(SysfsError) -> SetupError + '_ {
    move |source| SetupError::Sysfs {
        device: d.name.clone(),
        source,
    }
}

fn tool_err(d: &PlannedDevice) -> impl Fn(ToolError) -> SetupError + '_ {
    move |source| SetupError::Tool {
        device: d.name.clone(),
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

fn root_decoder(ctx: &Ctx, d: &PlannedDevice) -> Result<String, SetupError> {
    discover::root_decoder_for(ctx.sys, d.host_bridge_uid, d.kind).ok_or(
        SetupError::NoRootDecoder {
            device: d.name.clone(),
            uid: d.host_bridge_uid,
            kind: d.kind,
        },
    )
}

fn region_start(ctx: &Ctx, region: &str) -> Option<u64> {
    ctx.sys
        .read(&ctx.sys.cxl_dev(region).join("resource"))
        .ok()
        .and_then(|s| parse_num(&s))
}

fn ram_device(ctx: &Ctx, d: &PlannedDevice, memdev: String) -> Result<DeviceOutcome, SetupError> {
    let sys = ctx.sys;
    let (region, reused) = match decoder_for(ctx, d, &memdev)? {
        DecoderUse::InRegion { region, .. } => (region, true),
        DecoderUse::Free(ep_decoder) => {
            let root = root_decoder(ctx, d)?;
            let create = sys.cxl_dev(&root).join("create_ram_region");
            let region = sys.read(&create).map_err(sysfs_err(d))?;
            sys.write(&create, &region).map_err(sysfs_err(d))?;
            let granularity = sys
                .read(&sys.cxl_dev(&root).join("interleave_granularity"))
                .ok()
                .and_then(|s| parse_num(&s))
                .unwrap_or(256);
            for w in ram_region_writes(&region, &ep_decoder, d.size, granularity) {
                sys.write(&sys.path(&w.path), &w.value)
                    .map_err(sysfs_err(d))?;
            }
            (region, false)
        }
    };
    let dax = ctx
        .wait(|| discover::dax_below(sys, &region))
        .ok_or_else(|| SetupError::Timeout {
            device: d.name.clone(),
            region: region.clone(),
            what: "a dax device",
            timeout_ms: ctx.timeout.as_millis() as u64,
        })?;
    let dax_dir = sys.path("bus/dax/devices").join(&dax);
    let driver = sys.link_name(&dax_dir.join("driver"));
    let mut numa_node = None;
    match d.mode {
        Mode::SystemRam => {
            if driver.as_deref() != Some("kmem") {
                load_kmem(d)?;
                if sys.link_name(&dax_dir.join("driver")).as_deref() != Some("kmem") {
                    tools::run(
                        "daxctl",
                        &["reconfigure-device", "-m", "system-ram", "-f", &dax],
                    )
                    .map_err(tool_err(d))?;
                }
            }
            numa_node = sys
                .read(&dax_dir.join("target_node"))
                .ok()
                .and_then(|s| s.parse().ok());
        }
        _ => {
            // Until device_dax binds, opening /dev/daxN.M fails with ENXIO.
            if driver.as_deref() != Some("device_dax") {
                tools::run(
                    "daxctl",
                    &["reconfigure-device", "-m", "devdax", "-f", &dax],
                )
                .map_err(tool_err(d))?;
            }
        }
    }
    let dax_size = sys
        .read(&dax_dir.join("size"))
        .ok()
        .and_then(|s| parse_num(&s));
    Ok(DeviceOutcome {
        name: d.name.clone(),
        serial: d.serial,
        memdev,
        mode: d.mode,
        region_start: region_start(ctx, &region),
        region: Some(region),
        dax: (d.mode == Mode::Devdax).then(|| format!("/dev/{dax}")),
        dax_size,
        numa_node,
        reused,
    })
}

fn load_kmem(d: &PlannedDevice) -> Result<(), SetupError> {
    if Path::new("/sys/bus/dax/drivers/kmem").exists() {
        return Ok(());
    }
    tools::run("modprobe", &["kmem"])
        .map(drop)
        .map_err(tool_err(d))
}

fn pmem_device(ctx: &Ctx, d: &PlannedDevice, memdev: String) -> Result<DeviceOutcome, SetupError> {
    let sys = ctx.sys;
    let (region, mut reused) = match decoder_for(ctx, d, &memdev)? {
        DecoderUse::InRegion { region, .. } => (region, true),
        DecoderUse::Free(_) => {
            let root = root_decoder(ctx, d)?;
            let out = tools::run(
                "cxl",
                &["create-region", "-t", "pmem", "-d", &root, "-m", &memdev],
            )
            .map_err(tool_err(d))?;
            (tools::created_region(&out).map_err(tool_err(d))?, false)
        }
    };
    let timeout = |what| SetupError::Timeout {
        device: d.name.clone(),
        region: region.clone(),
        what,
        timeout_ms: ctx.timeout.as_millis() as u64,
    };
    let start = region_start(ctx, &region).ok_or_else(|| timeout("a start address"))?;
    let nd_region = ctx
        .wait(|| discover::nd_region_at(sys, start))
        .ok_or_else(|| timeout("an nvdimm region"))?;
    // A namespace written before (its label is in the LSA) comes back by
    // itself; creating another would fail with ENOSPC.
    let list = |nd: &str| -> Result<Vec<serde_json::Value>, SetupError> {
        let out = tools::run("ndctl", &["list", "-N", "-X", "-r", nd]).map_err(tool_err(d))?;
        tools::json_list("ndctl list", &out).map_err(tool_err(d))
    };
    let listed = list(&nd_region)?;
    let (chardev, size) = match tools::devdax_chardev(&listed) {
        Some(found) => {
            reused = true;
            found
        }
        None => {
            // A namespace left in another mode (a suite's fsdax) is made
            // devdax again in place; otherwise a new one takes the region.
            let out = match tools::other_namespace(&listed) {
                Some(ns) => tools::run(
                    "ndctl",
                    &["create-namespace", "-f", "-e", &ns, "-m", "devdax"],
                ),
                None => tools::run(
                    "ndctl",
                    &["create-namespace", "-m", "devdax", "-r", &nd_region],
                ),
            }
            .map_err(tool_err(d))?;
            let created = tools::json_list("ndctl create-namespace", &out).map_err(tool_err(d))?;
            match tools::devdax_chardev(&created) {
                Some(c) => c,
                None => tools::devdax_chardev(&list(&nd_region)?)
                    .ok_or_else(|| timeout("a devdax namespace"))?,
            }
        }
    };
    ctx.wait(|| Path::new("/dev").join(&chardev).exists().then_some(()));
    let dax_size = sys
        .read(&sys.path("bus/dax/devices").join(&chardev).join("size"))
        .ok()
        .and_then(|s| parse_num(&s));
    Ok(DeviceOutcome {
        name: d.name.clone(),
        serial: d.serial,
        memdev,
        mode: Mode::Devdax,
        region: Some(region),
        dax: Some(format!("/dev/{chardev}")),
        dax_size: dax_size.or(Some(size)),
        region_start: Some(start),
        numa_node: None,
        reused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_region_sequence_follows_the_sysfs_abi_order() {
        let w = ram_region_writes("region0", "decoder3.0", 256 << 20, 256);
        let lines: Vec<String> = w
            .iter()
            .map(|w| format!("{} <- {}", w.path, w.value))
            .collect();
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
