//! Stall mode (`lab up --timing=stall`, `[simulator] timing = "stall"`):
//! timing mode whose plugin also holds each vCPU for the latency the
//! model charges its CXL accesses, so a program in the guest feels it.
//!
//! Under TCG the guest runs far slower than a real CPU, and QEMU serves
//! CXL windows through MMIO callbacks, so a CXL load already costs several
//! times a local one (measured: 31-128 ns per local dependent load armed,
//! 550-1860 ns per CXL load, on a loaded 2-core machine, moving by 2x
//! within minutes). Stall mode therefore keeps *ratios*, not nanoseconds,
//! by dilating time: one model nanosecond becomes `k` wall nanoseconds,
//! and the plugin paces each vCPU so that every user-space local access
//! takes at least `k * local_latency_ns` and every read of device `d` at
//! least `k * modelled_read(d)` (plus `k` times the model's per-byte link
//! time) of wall time, TCG's own time included (the plugin measures it
//! per access). A CXL load then takes `modelled(d) / local_latency_ns`
//! times a local one as long as TCG is not slower than the model's wall
//! time on either side. Hence the calibration: right after arming,
//! `mem-probe` measures in the guest the wall time of a dependent local
//! load (`t_local`) and of a CXL load (`t_cxl`), both armed and unstalled,
//! taking the slowest of its rounds, and `k = 4 * max(t_local /
//! local_latency_ns, t_cxl / modelled_load(d) for each device d)`: TCG may
//! run 4 times as slow as at calibration before a ratio suffers (measured
//! here at load 7 to 11: TCG's CXL load cost went from 566 to 2930 ns
//! between two probes, and margin 2 gave 8.65 for a 3x model).
//!
//! An earlier version held each access for the model's time *less* TCG's
//! calibrated cost (`k * modelled_read(d) - t_cxl`, with `k` 1.5 times
//! the least). Every later change in TCG's cost of a CXL access then went
//! straight into the CXL side: with every device at the local latency
//! the guest measured a CXL/local ratio of 2.00 instead of 1.

use std::path::Path;
use std::time::Duration;

use cxl_memsim_wire::control::ControlError;
use cxl_memsim_wire::{Command, StallCost, StallTable, Window};
use cxl_regions::plan::Outcome;
use cxl_topology::{Modelled, Topology};
use serde::{Deserialize, Serialize};

use crate::qga::{Agent, QgaError};

/// Errors of stall mode.
#[derive(Debug, thiserror::Error)]
pub enum StallError {
    #[error("Stall mode calibrates on a CXL region the guest can map (devdax or system-ram), and this topology's regions have none; give a device mode = \"devdax\" or \"system-ram\".")]
    NoProbeTarget,
    #[error("Cannot run the calibration probe `{0}` in the guest; is mem-probe in the image (cargo build -p mem-probe)?")]
    Probe(String, #[source] QgaError),
    #[error("The guest command `{command}` failed (exit {code}): {stderr}")]
    GuestFailed {
        command: String,
        code: i64,
        stderr: String,
    },
    #[error("The calibration probe's report is not what stall mode reads: {0}")]
    BadReport(String),
    #[error("The simulator's control socket did not answer.")]
    Control(#[from] ControlError),
    #[error("The simulator refused '{command}': {error}")]
    Refused { command: String, error: String },
}

/// Sends one line to the simulator's control socket; its error answer
/// becomes [`StallError::Refused`].
pub async fn control(path: &Path, line: &str) -> Result<(), StallError> {
    let v = cxl_memsim_wire::control::request(path, line).await?;
    match v.get("error").and_then(|e| e.as_str()) {
        Some(e) => Err(StallError::Refused {
            command: line.to_owned(),
            error: e.to_owned(),
        }),
        None => Ok(()),
    }
}

/// What the calibration measured: TCG's cost of one dependent load,
/// armed and not stalled (the slowest round).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Where the probe's CXL buffer was (`dax:/dev/dax0.0`, `node:1`).
    pub placement: String,
    pub local_ns_per_load: f64,
    pub cxl_ns_per_load: f64,
    /// Wall nanoseconds per model nanosecond (`k`).
    pub wall_ns_per_model_ns: f64,
    /// The wall time each user-space local access takes at least
    /// (`k * local_latency_ns`), TCG's own time included. (Defaults to 0
    /// in a state saved before it existed; `lab up` calibrates anew.)
    #[serde(default)]
    pub local_wall_ns: f64,
}

impl Calibration {
    /// The dilation for these TCG costs and this topology's figures.
    pub fn new(placement: String, t_local: f64, t_cxl: f64, topology: &Topology) -> Calibration {
        let local = topology.simulator.local_latency_ns() as f64;
        let k = DILATION_MARGIN
            * topology
                .devices
                .iter()
                .map(|d| t_cxl / load_ns(&topology.modelled(d)))
                .fold(t_local / local, f64::max);
        Calibration {
            placement,
            local_ns_per_load: t_local,
            cxl_ns_per_load: t_cxl,
            wall_ns_per_model_ns: k,
            local_wall_ns: k * local,
        }
    }
}

/// `k` is this much above the least that would do, so that TCG may run
/// this many times slower than at calibration (the machine's load moves)
/// before its own cost exceeds the model's wall time and a ratio suffers.
/// The price: stall mode runs programs' memory accesses that much slower.
pub const DILATION_MARGIN: f64 = 4.0;

/// The model's latency of one probe load (8 bytes).
fn load_ns(m: &Modelled) -> f64 {
    m.read_ns as f64 + PROBE_LOAD_BYTES * m.ns_per_byte
}

/// One device's figures and stalls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStall {
    pub device: String,
    /// What the model charges an access on idle links.
    pub modelled: Modelled,
    /// The model's latency of an 8-byte load over the local latency: the
    /// CXL/local ratio the guest should see.
    pub model_latency_ratio: f64,
    /// The wall time a read (write) takes at least, plus per byte, TCG's
    /// own time included (`k` times the model's). (0 in a state saved
    /// before they existed.)
    #[serde(default)]
    pub read_wall_ns: f64,
    #[serde(default)]
    pub write_wall_ns: f64,
    #[serde(default)]
    pub wall_ns_per_byte: f64,
    /// False when TCG's own cost of an access (measured on loads) already
    /// exceeds a write's wall time: writes then take TCG's time.
    pub write_reachable: bool,
}

/// What `lab up` recorded about stall mode (in the lab's state and
/// summary JSON: `lab up --json`, `lab status --json`, `state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallState {
    pub local_latency_ns: u64,
    pub calibration: Calibration,
    pub devices: Vec<DeviceStall>,
    /// The table sent to the plugin (`plugin stall …`).
    pub command: String,
}

/// The load size the probe chases with.
const PROBE_LOAD_BYTES: f64 = 8.0;

/// Each device's stall from the calibration: pure, so it is tested alone.
pub fn device_stalls(topology: &Topology, c: &Calibration) -> Vec<DeviceStall> {
    let local = topology.simulator.local_latency_ns() as f64;
    let k = c.wall_ns_per_model_ns;
    topology
        .devices
        .iter()
        .map(|d| {
            let m = topology.modelled(d);
            let write = k * m.write_ns as f64;
            DeviceStall {
                device: d.name.clone(),
                modelled: m,
                model_latency_ratio: load_ns(&m) / local,
                read_wall_ns: k * m.read_ns as f64,
                write_wall_ns: write,
                wall_ns_per_byte: k * m.ns_per_byte,
                write_reachable: write >= c.cxl_ns_per_load,
            }
        })
        .collect()
}

/// The plugin's table: each region's range with the mean stall of its
/// devices (the plugin charges by address; an interleaved region of
/// unequal devices gets their mean), and the local stall.
pub fn table(outcome: &Outcome, c: &Calibration, devices: &[DeviceStall]) -> StallTable {
    let ps = |ns: f64| (ns * 1000.0).round() as u64;
    let ranges = outcome
        .regions
        .iter()
        .filter(|r| r.size > 0)
        .filter_map(|r| {
            let members: Vec<&DeviceStall> = r
                .members
                .iter()
                .filter_map(|m| devices.iter().find(|d| d.device == m.device))
                .collect();
            if members.is_empty() {
                return None;
            }
            let mean = |f: fn(&DeviceStall) -> f64| {
                members.iter().map(|d| f(d)).sum::<f64>() / members.len() as f64
            };
            Some((
                Window {
                    base: r.start,
                    size: r.size,
                },
                StallCost {
                    read_ps: ps(mean(|d| d.read_wall_ns)),
                    write_ps: ps(mean(|d| d.write_wall_ns)),
                    ps_per_byte: ps(mean(|d| d.wall_ns_per_byte)),
                },
            ))
        })
        .collect();
    let local = ps(c.local_wall_ns);
    StallTable {
        local: StallCost {
            read_ps: local,
            write_ps: local,
            ps_per_byte: 0,
        },
        ranges,
    }
}

/// Where the probe puts its CXL buffer: the first region with a dax
/// device, else the first onlined as a NUMA node.
pub fn probe_target(outcome: &Outcome) -> Option<String> {
    let dax = outcome
        .regions
        .iter()
        .find_map(|r| r.dax.as_ref().map(|d| format!("dax:{d}")));
    dax.or_else(|| {
        outcome
            .regions
            .iter()
            .find_map(|r| r.numa_node.map(|n| format!("node:{n}")))
    })
}

/// Runs `mem-probe` in the guest and returns its JSON report.
pub async fn probe(agent: &Agent, args: &[String]) -> Result<serde_json::Value, StallError> {
    let command = format!("mem-probe {}", args.join(" "));
    let out = agent
        .exec("mem-probe", args, Duration::from_secs(600))
        .await
        .map_err(|e| StallError::Probe(command.clone(), e))?;
    if !out.success() {
        return Err(StallError::GuestFailed {
            command,
            code: out.exit_code,
            stderr: out.stderr.trim().to_owned(),
        });
    }
    serde_json::from_str(&out.stdout).map_err(|e| StallError::BadReport(e.to_string()))
}

/// The probe's arguments for a calibration on `target`.
pub fn calibration_args(target: &str) -> Vec<String> {
    probe_args(target, 3)
}

/// The probe's arguments for `rounds` rounds on `target` (1 MiB, 100000
/// dependent loads and one streaming pass per round).
pub fn probe_args(target: &str, rounds: u32) -> Vec<String> {
    let rounds = rounds.to_string();
    [
        "--cxl", target, "--size", "1M", "--loads", "100000", "--passes", "1", "--rounds", &rounds,
        "--json",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// TCG's cost of one load on `side` of a probe report: its slowest chase
/// round, so the margin covers TCG slowing down on top of that.
pub fn ns_per_load(report: &serde_json::Value, side: &str) -> Result<f64, StallError> {
    report[side]["chase_rounds_ns"]
        .as_array()
        .and_then(|rounds| rounds.iter().filter_map(|r| r.as_f64()).reduce(f64::max))
        .filter(|v| *v > 0.0)
        .ok_or_else(|| StallError::BadReport(format!("no {side}.chase_rounds_ns in {report}")))
}

/// Measures TCG's costs (stall off), computes each device's stall and
/// sends the table to the plugin.
pub async fn apply(
    control_socket: &Path,
    agent: &Agent,
    topology: &Topology,
    outcome: &Outcome,
) -> Result<StallState, StallError> {
    let target = probe_target(outcome).ok_or(StallError::NoProbeTarget)?;
    // TCG's own costs are measured unstalled.
    control(control_socket, "plugin stall off").await?;
    let report = probe(agent, &calibration_args(&target)).await?;
    let local = ns_per_load(&report, "local")?;
    let cxl = ns_per_load(&report, "cxl")?;
    let calibration = Calibration::new(target, local, cxl, topology);
    let devices = device_stalls(topology, &calibration);
    let command = format!(
        "plugin {}",
        Command::Stall(table(outcome, &calibration, &devices))
    );
    control(control_socket, &command).await?;
    Ok(StallState {
        local_latency_ns: topology.simulator.local_latency_ns(),
        calibration,
        devices,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxl_regions::plan::{MemberOutcome, Mode, RegionOutcome};

    fn region(start: u64, devices: &[&str], dax: Option<&str>, node: Option<i64>) -> RegionOutcome {
        RegionOutcome {
            name: devices.join("+"),
            region: "region0".into(),
            mode: Mode::Devdax,
            start,
            size: 0x1000_0000,
            ways: devices.len() as u64,
            granularity: 4096,
            members: devices
                .iter()
                .map(|d| MemberOutcome {
                    device: (*d).into(),
                    memdev: "mem0".into(),
                    decoder: "decoder2.0".into(),
                    dpa_base: 0,
                })
                .collect(),
            dax: dax.map(str::to_owned),
            dax_size: None,
            pmem: None,
            numa_node: node,
            reused: false,
        }
    }

    fn topology(extra: &str) -> Topology {
        Topology::parse(
            &format!(
                r#"
[[host_bridge]]
name = "hb0"
[[root_port]]
name = "rp0"
host_bridge = "hb0"
[[root_port]]
name = "rp1"
host_bridge = "hb0"
[[device]]
name = "fast"
kind = "volatile"
size = "256M"
port = "rp0"
read_latency_ns = 150
[[device]]
name = "slow"
kind = "volatile"
size = "256M"
port = "rp1"
read_latency_ns = 300
write_latency_ns = 120
[[window]]
size = "4G"
targets = ["hb0"]
{extra}"#
            ),
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn stalls_make_the_guest_ratio_the_models() {
        let t = topology("");
        // TCG: 20 ns per local load, 600 per CXL load; local DRAM is 100
        // ns. fast (150 ns, plus 8 bytes at 64 GB/s) needs the most
        // dilation: k = 4 * 600 / 150.125.
        let c = Calibration::new("dax:/dev/dax0.0".into(), 20.0, 600.0, &t);
        assert!(
            (c.wall_ns_per_model_ns - 4.0 * 600.0 / 150.125).abs() < 1e-9,
            "{c:?}"
        );
        let k = c.wall_ns_per_model_ns;
        assert!((c.local_wall_ns - k * 100.0).abs() < 1e-9);
        let d = device_stalls(&t, &c);
        // A local load takes k * 100 of wall time and a load of each
        // device k times its latency, whatever TCG's own share of it:
        // the model's ratios.
        for (dev, model) in [(&d[0], 150.125), (&d[1], 300.125)] {
            let cxl = dev.read_wall_ns + 8.0 * dev.wall_ns_per_byte;
            assert!(
                (cxl / c.local_wall_ns - model / 100.0).abs() < 1e-9,
                "{dev:?}"
            );
            assert!((dev.model_latency_ratio - model / 100.0).abs() < 1e-9);
            // TCG's own cost fits in it 4 times over.
            assert!(cxl >= 4.0 * c.cxl_ns_per_load - 1e-9, "{dev:?}");
        }
        assert!((d[1].model_latency_ratio - 3.00125).abs() < 1e-9, "{d:?}");
        // slow's writes (120 ns: 1918 wall) take more than TCG's 600.
        assert!((d[1].write_wall_ns - k * 120.0).abs() < 1e-9);
        assert!(d[1].write_reachable);
        // fast's (100 ns: 1599 wall) too; a write at 30 ns (480) would not.
        assert!(d[0].write_reachable);
        let mut cheap = t.clone();
        cheap.devices[0].write_latency_ns = Some(30);
        assert!(!device_stalls(&cheap, &c)[0].write_reachable);
        let o = Outcome {
            devices: Vec::new(),
            regions: vec![
                region(0x1_1000_0000, &["slow"], Some("/dev/dax0.0"), None),
                region(0x1_2000_0000, &["fast", "slow"], None, Some(1)),
            ],
            elapsed_ms: 0,
        };
        let tbl = table(&o, &c, &d);
        assert_eq!(tbl.local.read_ps, (c.local_wall_ns * 1000.0).round() as u64);
        assert_eq!(
            tbl.ranges[0].1.read_ps,
            (d[1].read_wall_ns * 1000.0).round() as u64
        );
        // The interleaved region gets its members' mean.
        let mean = (d[0].read_wall_ns + d[1].read_wall_ns) / 2.0;
        assert_eq!(tbl.ranges[1].1.read_ps, (mean * 1000.0).round() as u64);
        assert_eq!(tbl.ranges[1].0.base, 0x1_2000_0000);
        let cmd = Command::Stall(tbl.clone());
        assert_eq!(Command::parse(&cmd.to_string()).unwrap(), cmd);
        assert_eq!(probe_target(&o).as_deref(), Some("dax:/dev/dax0.0"));
        let numa = Outcome {
            regions: vec![region(0x1_1000_0000, &["slow"], None, Some(1))],
            ..o
        };
        assert_eq!(probe_target(&numa).as_deref(), Some("node:1"));
    }

    #[test]
    fn the_calibration_takes_the_slowest_round() {
        let report = serde_json::json!({
            "local": {"chase_ns_per_load": 50.0, "chase_rounds_ns": [50.0, 40.0, 90.0]},
            "cxl": {"chase_ns_per_load": 600.0, "chase_rounds_ns": []},
        });
        assert_eq!(ns_per_load(&report, "local").unwrap(), 90.0);
        assert!(matches!(
            ns_per_load(&report, "cxl"),
            Err(StallError::BadReport(_))
        ));
    }

    #[test]
    fn the_local_baseline_comes_from_the_topology() {
        let t = topology("[simulator]\nlocal_latency_ns = 150\n");
        let c = Calibration::new("node:1".into(), 30.0, 30.0, &t);
        // TCG's local load is the slowest relative to the model here.
        assert!((c.wall_ns_per_model_ns - 0.8).abs() < 1e-9, "{c:?}");
        assert!((c.local_wall_ns - 120.0).abs() < 1e-9, "{c:?}");
        let d = device_stalls(&t, &c);
        assert!((d[1].model_latency_ratio - 2.000_833).abs() < 1e-3, "{d:?}");
    }
}
