//! Region set-up, host side: the plan sent to the guest's `cxl-regions`
//! tool (which does the sysfs, `cxl` and `ndctl` work) and its outcome.

use std::time::Duration;

use cxl_regions::plan::{Kind, Mode, Outcome, Plan, PlannedDevice, PlannedRegion};
use cxl_topology::{DeviceKind, DeviceMode, Topology};

use crate::qga::{Agent, QgaError};

/// Errors creating regions.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("Cannot run cxl-regions in the guest.")]
    Agent(#[from] QgaError),
    #[error("cxl-regions failed in the guest (exit {code}): {stderr}")]
    Failed { code: i64, stderr: String },
    #[error("cxl-regions printed an outcome the lab cannot read: {output}")]
    Output {
        output: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Created by the guest /init once the CXL and DAX modules are loaded.
pub const READY_FILE: &str = "/run/cxl-lab-modules-loaded";

/// Created by the guest /init once the image extras (9p) are mounted.
pub const EXTRAS_READY_FILE: &str = "/run/cxl-lab-extras-ready";

/// The guest path of the region tool.
pub const TOOL: &str = "/usr/bin/cxl-regions";

fn kind(k: DeviceKind) -> Kind {
    match k {
        DeviceKind::Volatile => Kind::Volatile,
        DeviceKind::Persistent => Kind::Persistent,
        DeviceKind::Dynamic => Kind::Dynamic,
    }
}

fn mode(m: DeviceMode) -> Mode {
    match m {
        DeviceMode::Devdax => Mode::Devdax,
        DeviceMode::SystemRam => Mode::SystemRam,
        DeviceMode::None => Mode::None,
        DeviceMode::Fsdax => Mode::Fsdax,
    }
}

/// The ACPI UID the guest sees for a host bridge: QEMU uses its bus_nr.
fn uid(t: &Topology, host_bridge: &str) -> u64 {
    t.host_bridges
        .iter()
        .find(|h| h.name == host_bridge)
        .and_then(|h| h.bus_nr)
        .map(u64::from)
        .expect("validated: window targets are host bridges with a bus number")
}

/// Every topology device, and every region in the order its window space
/// was allocated.
pub fn plan(t: &Topology) -> Plan {
    let devices = t
        .devices
        .iter()
        .map(|d| PlannedDevice {
            name: d.name.clone(),
            serial: d.serial_number(),
            kind: kind(d.kind),
            size: d.size.bytes(),
            mode: mode(d.effective_mode()),
            host_bridge_uid: u64::from(t.path_of(d).host_bridge.bus_nr.expect("validated")),
        })
        .collect();
    let regions = t
        .region_layouts()
        .into_iter()
        .map(|r| PlannedRegion {
            name: r.name.clone(),
            kind: kind(r.kind),
            mode: mode(r.mode),
            granularity: r.granularity,
            window: r.window,
            window_targets: t.windows[r.window]
                .targets
                .iter()
                .map(|h| uid(t, h))
                .collect(),
            devices: r
                .devices
                .iter()
                .map(|&i| t.devices[i].name.clone())
                .collect(),
            device_size: r.device_size,
        })
        .collect();
    Plan {
        devices,
        regions,
        ready_file: Some(READY_FILE.into()),
        finally_wait_for: Some(EXTRAS_READY_FILE.into()),
        timeout_ms: 30_000,
    }
}

/// Runs the plan in the guest.
pub async fn create(agent: &Agent, plan: &Plan) -> Result<Outcome, RegionError> {
    let json = serde_json::to_string(plan).expect("plan serialises");
    let out = agent
        .exec(TOOL, &["--plan".into(), json], Duration::from_secs(90))
        .await?;
    if !out.success() {
        return Err(RegionError::Failed {
            code: out.exit_code,
            stderr: out.stderr.trim().to_owned(),
        });
    }
    serde_json::from_str(out.stdout.trim()).map_err(|source| RegionError::Output {
        output: out.stdout.trim().to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_maps_serials_modes_and_host_bridge_uid() {
        let p = plan(&Topology::embedded_default());
        assert_eq!(p.devices.len(), 2);
        assert_eq!(p.devices[0].kind, Kind::Volatile);
        assert_eq!(p.devices[0].mode, Mode::Devdax);
        assert_eq!(p.devices[1].kind, Kind::Persistent);
        assert_eq!(p.devices[0].host_bridge_uid, 12);
        assert_ne!(p.devices[0].serial, p.devices[1].serial);
        let regions: Vec<(&str, usize, &[u64], &[String])> = p
            .regions
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.window,
                    r.window_targets.as_slice(),
                    r.devices.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            regions,
            [
                ("vmem0", 0, &[12][..], &["vmem0".to_owned()][..]),
                ("pmem0", 0, &[12][..], &["pmem0".to_owned()][..]),
            ]
        );
    }
}
