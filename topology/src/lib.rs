//! The CXL lab topology: what `lab up` builds and what `cxl-memsim` models.
//!
//! A topology is a TOML file (see `examples/default.toml`, the embedded
//! default, and the other presets in `examples/`) with
//! host bridges, root ports, optional switches, type-3 devices, fixed memory
//! windows and the guest's CPUs and RAM. [`Topology::load`] parses and
//! validates; every validation error names the file, the field and the reason.

pub mod interleave;
pub mod region;
mod size;
mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use interleave::{Interleave, Placement};
pub use region::RegionLayout;
pub use size::{ByteSize, ParseSizeError, GIB, KIB, MIB};

/// The embedded default topology's text.
pub const DEFAULT_TOPOLOGY_TOML: &str = include_str!("../examples/default.toml");

/// A topology shipped with cxl-lab, usable by name (`lab up --topology
/// switched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    /// One line for `lab topologies`.
    pub summary: &'static str,
    pub toml: &'static str,
}

/// Every preset, the files under `topology/examples/`.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "default",
        summary: "one host bridge, two root ports, a volatile and a persistent device, one region each",
        toml: DEFAULT_TOPOLOGY_TOML,
    },
    Preset {
        name: "switched",
        summary: "a switch with four downstream ports, four volatile devices in one 4-way region at 4K",
        toml: include_str!("../examples/switched.toml"),
    },
    Preset {
        name: "two-bridges",
        summary: "two host bridges, one volatile device each, a 2-way region through a window over both",
        toml: include_str!("../examples/two-bridges.toml"),
    },
    Preset {
        name: "run-qemu",
        summary: "run_qemu's --cxl layout: 2 host bridges, 4 root ports, 2 switches, 2 pmem + 2 vmem, x1 and x2 windows at 8K",
        toml: include_str!("../examples/run-qemu.toml"),
    },
    Preset {
        name: "tiering",
        summary: "a 512 MiB volatile device onlined as system RAM: a CPU-less NUMA node",
        toml: include_str!("../examples/tiering.toml"),
    },
    Preset {
        name: "dcd",
        summary: "a dynamic capacity device with two DC regions and no region at boot",
        toml: include_str!("../examples/dcd.toml"),
    },
    Preset {
        name: "persistent",
        summary: "the default without its volatile device: one persistent device (for kernels before 6.3, which make no volatile regions)",
        toml: include_str!("../examples/persistent.toml"),
    },
    Preset {
        name: "seed-dax",
        summary: "one 16 GiB volatile devdax device (sparse backing) for the DAX tester's documented 16G run on /dev/mem",
        toml: include_str!("../examples/seed-dax.toml"),
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}
/// The name used for the embedded default in messages.
pub const DEFAULT_ORIGIN: &str = "<embedded default topology>";

/// Every HDM decoder and window size is a multiple of this.
pub const CXL_GRANULE: u64 = 256 * MIB;

/// Errors while loading a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "Cannot read topology file {path}; it is not a preset name either (presets: {presets})."
    )]
    Read {
        path: String,
        presets: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: the topology is not valid TOML for cxl-lab.")]
    Parse {
        file: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{file}: {field}: {reason}")]
    Invalid {
        file: String,
        field: String,
        reason: String,
    },
}

/// Guest machine resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guest {
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// Size of a blank virtio-blk scratch disk (`/dev/vda` in the guest,
    /// recreated empty at every `lab up`) for tests that need a real block
    /// device, e.g. page-cache faults on ext4; "0" for none.
    #[serde(default = "default_scratch_disk")]
    pub scratch_disk: ByteSize,
    /// The kernel to boot instead of the image's, as `lab up --kernel`
    /// takes it (a .deb, a bzImage/vmlinuz or a kernel build tree); a
    /// relative path is relative to the topology file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Its `lib/modules/<release>` tree, as `lab up --modules` (for a
    /// bzImage/vmlinuz only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
}

fn default_scratch_disk() -> ByteSize {
    ByteSize(GIB)
}

fn default_cpus() -> u32 {
    2
}
fn default_memory() -> ByteSize {
    ByteSize(GIB)
}

impl Default for Guest {
    fn default() -> Self {
        Guest {
            cpus: default_cpus(),
            memory: default_memory(),
            scratch_disk: default_scratch_disk(),
            kernel: None,
            modules: None,
        }
    }
}

/// A CXL host bridge (`pxb-cxl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostBridge {
    pub name: String,
    /// PCI bus number of the expander bridge; assigned when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_nr: Option<u8>,
    /// Modelled latency of the link from the CPU to this bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_latency_ns: Option<u64>,
    /// Modelled bandwidth of that link in GB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_bandwidth_gbps: Option<f64>,
}

/// A CXL root port (`cxl-rp`) on a host bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootPort {
    pub name: String,
    pub host_bridge: String,
}

/// A CXL switch (`cxl-upstream` below a root port, `cxl-downstream` ports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    pub name: String,
    pub root_port: String,
    /// Names of the downstream ports; devices attach to these.
    pub downstream_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_latency_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_bandwidth_gbps: Option<f64>,
}

/// The kind of memory a type-3 device exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Volatile,
    Persistent,
    /// Dynamic capacity (DCD).
    Dynamic,
}

impl DeviceKind {
    /// The name used in topology files and in the backing file's record.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Volatile => "volatile",
            DeviceKind::Persistent => "persistent",
            DeviceKind::Dynamic => "dynamic",
        }
    }

    /// What the guest may make of a region of this kind, the default first.
    pub fn modes(self) -> &'static [DeviceMode] {
        match self {
            DeviceKind::Volatile => &[DeviceMode::Devdax, DeviceMode::SystemRam],
            DeviceKind::Persistent => &[DeviceMode::Devdax, DeviceMode::Fsdax],
            DeviceKind::Dynamic => &[DeviceMode::None],
        }
    }
}

/// What the guest makes of a device's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceMode {
    /// A `/dev/daxX.Y` character device.
    Devdax,
    /// Onlined as system RAM: a new NUMA node (volatile devices only).
    SystemRam,
    /// No region is created (dynamic capacity devices).
    None,
    /// A persistent region's namespace in fsdax mode: a `/dev/pmemN` block
    /// device a DAX filesystem can be made on.
    Fsdax,
}

impl DeviceMode {
    /// The name used in topology files.
    pub fn name(self) -> &'static str {
        match self {
            DeviceMode::Devdax => "devdax",
            DeviceMode::SystemRam => "system-ram",
            DeviceMode::None => "none",
            DeviceMode::Fsdax => "fsdax",
        }
    }
}

/// A CXL type-3 memory device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    pub kind: DeviceKind,
    pub size: ByteSize,
    /// Root port or switch downstream port the device sits on.
    pub port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeviceMode>,
    /// Label storage area size (persistent devices; default 1M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsa_size: Option<ByteSize>,
    /// Number of dynamic capacity regions (dynamic devices; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dc_regions: Option<u8>,
    /// Serial number; distinct per device, assigned when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// Modelled media latency of a read, in ns (1 to 100000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nanoseconds"
    )]
    pub read_latency_ns: Option<u64>,
    /// Modelled media latency of a write, in ns (1 to 100000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nanoseconds"
    )]
    pub write_latency_ns: Option<u64>,
    /// Leave the backing file sparse: `cxl-memsim` does not reserve its
    /// disk blocks at start (it does by default, so a full disk fails
    /// `lab up` instead of the guest's first write to a page). For devices
    /// far larger than what the guest will write, such as the 16 GiB of
    /// the `seed-dax` preset; a full disk then shows as a SIGBUS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
}

/// A latency in nanoseconds: a negative one is refused with the fix
/// (serde's own message would only say it expected a u64).
fn nanoseconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<i64>::deserialize(d)? {
        Some(n) if n < 0 => Err(serde::de::Error::custom(format!(
            "{n} ns is negative; a latency is a count of nanoseconds, e.g. 250"
        ))),
        n => Ok(n.map(|n| n as u64)),
    }
}

/// A CXL fixed memory window (CFMWS) in the host physical address space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// How regions refer to the window; `window<N>` (its index) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub size: ByteSize,
    /// Host bridges interleaved by this window; ways = number of targets.
    pub targets: Vec<String>,
    #[serde(default = "default_granularity")]
    pub interleave_granularity: ByteSize,
}

fn default_granularity() -> ByteSize {
    ByteSize(8 * KIB)
}

impl Window {
    /// The window's name, or `window<index>` when it has none.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("window{index}"))
    }
}

/// A region the guest builds across several devices: the CXL decoders
/// stripe its host physical range over `devices` in `granularity` units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: String,
    /// The devices, in interleave-position order.
    pub devices: Vec<String>,
    /// Interleave granularity; the window's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<ByteSize>,
    /// devdax or system-ram (volatile), devdax or fsdax (persistent);
    /// devdax when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeviceMode>,
    /// The window's name; the first window that can decode the region and
    /// has room when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// Parameters of the simulator's model that are not per device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Simulator {
    /// Seed of the model's jitter PRNG.
    #[serde(default)]
    pub seed: u64,
    /// Maximum jitter added to each modelled latency (0 = none).
    #[serde(default)]
    pub jitter_ns: u64,
    /// Devices whose memory the simulator also serves as a vhost-user-blk
    /// disk; lab adds each to the guest as a virtio disk whose serial is the
    /// device name (and then gives the guest shared RAM, which vhost-user
    /// needs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vhost_user_blk: Vec<String>,
    /// Those of `vhost_user_blk` the guest may only read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vhost_user_blk_read_only: Vec<String>,
    /// Timing mode: QEMU loads the TCG plugin that streams guest accesses
    /// to the CXL windows to the simulator (`true`, as `lab up --timing`),
    /// and with `"stall"` (`lab up --timing=stall`) also holds each vCPU for
    /// the latency the model charges its CXL accesses.
    #[serde(default, skip_serializing_if = "TimingMode::is_off")]
    pub timing: TimingMode,
    /// Stall mode's baseline: the latency of the guest's local DRAM that
    /// CXL latencies are compared with (default [`DEFAULT_LOCAL_LATENCY_NS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_latency_ns: Option<u64>,
    /// Timing mode's plugin leaves instructions it has seen on RAM only out
    /// of its instrumentation (`true`: cheaper, but an instruction left out
    /// that later touches CXL memory goes uncounted); the default, false,
    /// instruments every access, so counts are exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing_learn: Option<bool>,
}

/// Local DRAM's load latency when the topology does not say: about what
/// Pond (ASPLOS'23) and the CXL measurements cited in the README put
/// local DDR at, to which a CXL device adds 70-90 ns or more.
pub const DEFAULT_LOCAL_LATENCY_NS: u64 = 100;

impl Simulator {
    pub fn timing_learn(&self) -> bool {
        self.timing_learn.unwrap_or(false)
    }

    pub fn local_latency_ns(&self) -> u64 {
        self.local_latency_ns.unwrap_or(DEFAULT_LOCAL_LATENCY_NS)
    }
}

/// A device's media latencies when the topology does not say: those of
/// CXLMemSim's simple server (a 64-byte read costs 201 ns with the default
/// link), within the 170-500 ns that published CXL devices measure.
pub const DEFAULT_READ_LATENCY_NS: u64 = 200;
pub const DEFAULT_WRITE_LATENCY_NS: u64 = 100;
/// A link's bandwidth when the topology does not say: about a PCIe 5.0
/// x16 link's.
pub const DEFAULT_LINK_GBPS: f64 = 64.0;

/// One idle-link access to a device as the model charges it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Modelled {
    pub read_ns: u64,
    pub write_ns: u64,
    /// Transfer time per byte over the path's links (1 / GB/s summed).
    pub ns_per_byte: f64,
    /// The narrowest link's bandwidth.
    pub bandwidth_gbps: f64,
}

/// Whether and how the TCG plugin runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimingMode {
    #[default]
    Off,
    /// Accesses to CXL memory are charged to the model and stats.
    Observe,
    /// Observe, and hold the vCPUs for the model's extra latency.
    Stall,
}

impl TimingMode {
    pub fn is_off(&self) -> bool {
        *self == TimingMode::Off
    }

    pub fn is_on(&self) -> bool {
        !self.is_off()
    }
}

impl Serialize for TimingMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TimingMode::Off => s.serialize_bool(false),
            TimingMode::Observe => s.serialize_bool(true),
            TimingMode::Stall => s.serialize_str("stall"),
        }
    }
}

impl<'de> Deserialize<'de> for TimingMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TimingMode, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(TimingMode::Off),
            Raw::Bool(true) => Ok(TimingMode::Observe),
            Raw::Name(n) => match n.as_str() {
                "off" => Ok(TimingMode::Off),
                "observe" => Ok(TimingMode::Observe),
                "stall" => Ok(TimingMode::Stall),
                _ => Err(serde::de::Error::custom(format!(
                    "timing = \"{n}\" is not a timing mode; write true (observe), \"stall\" or false"
                ))),
            },
        }
    }
}

/// A validated topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub guest: Guest,
    #[serde(default, rename = "host_bridge")]
    pub host_bridges: Vec<HostBridge>,
    #[serde(default, rename = "root_port")]
    pub root_ports: Vec<RootPort>,
    #[serde(default, rename = "switch")]
    pub switches: Vec<Switch>,
    #[serde(default, rename = "device")]
    pub devices: Vec<Device>,
    #[serde(default, rename = "window")]
    pub windows: Vec<Window>,
    #[serde(default, rename = "region", skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<Region>,
    #[serde(default)]
    pub simulator: Simulator,
    /// Where this topology came from (a path or [`DEFAULT_ORIGIN`]).
    #[serde(skip)]
    pub origin: String,
}

/// Where a device sits: host bridge, root port and optional switch.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePath<'a> {
    pub host_bridge: &'a HostBridge,
    pub root_port: &'a RootPort,
    pub switch: Option<&'a Switch>,
}

impl Topology {
    /// The embedded default topology.
    pub fn embedded_default() -> Topology {
        Topology::parse(DEFAULT_TOPOLOGY_TOML, DEFAULT_ORIGIN)
            .expect("the embedded default topology is valid")
    }

    /// Loads `path`, or the embedded default when `path` is `None`. A
    /// `path` that names no file but a preset (`switched`) loads the preset.
    pub fn load(path: Option<&Path>) -> Result<Topology, TopologyError> {
        match path {
            None => Ok(Topology::embedded_default()),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => Topology::parse(&text, &p.display().to_string()),
                Err(source) => match p.to_str().and_then(preset) {
                    Some(found) if source.kind() == std::io::ErrorKind::NotFound => {
                        Topology::parse(found.toml, &format!("<preset {}>", found.name))
                    }
                    _ => Err(TopologyError::Read {
                        path: p.display().to_string(),
                        presets: preset_names(),
                        source,
                    }),
                },
            },
        }
    }

    /// Parses and validates topology text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Topology, TopologyError> {
        let mut t: Topology = toml::from_str(text).map_err(|e| TopologyError::Parse {
            file: origin.to_owned(),
            source: Box::new(e),
        })?;
        t.origin = origin.to_owned();
        validate::validate_and_fill(&mut t)?;
        Ok(t)
    }

    /// The TOML text of this topology, with assigned defaults filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a topology serialises to TOML")
    }

    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// What the simulator's model charges one access to `device` that
    /// finds its links idle (a closed loop: one access at a time): media
    /// latency, plus each link's latency on the path, plus the bytes over
    /// each link's bandwidth. The same defaults as `cxl-memsim`'s model.
    pub fn modelled(&self, device: &Device) -> Modelled {
        let p = self.path_of(device);
        let mut links = vec![(
            p.host_bridge.link_latency_ns,
            p.host_bridge.link_bandwidth_gbps,
        )];
        if let Some(s) = p.switch {
            links.push((s.link_latency_ns, s.link_bandwidth_gbps));
        }
        let link_ns: u64 = links.iter().map(|l| l.0.unwrap_or(0)).sum();
        let gbps: Vec<f64> = links
            .iter()
            .map(|l| l.1.unwrap_or(DEFAULT_LINK_GBPS))
            .collect();
        Modelled {
            read_ns: device.read_latency_ns.unwrap_or(DEFAULT_READ_LATENCY_NS) + link_ns,
            write_ns: device.write_latency_ns.unwrap_or(DEFAULT_WRITE_LATENCY_NS) + link_ns,
            ns_per_byte: gbps.iter().map(|g| 1.0 / g).sum(),
            bandwidth_gbps: gbps.iter().copied().fold(f64::INFINITY, f64::min),
        }
    }

    /// The path from the host bridge to `device`.
    pub fn path_of(&self, device: &Device) -> DevicePath<'_> {
        let (root_port_name, switch) = match self
            .switches
            .iter()
            .find(|s| s.downstream_ports.contains(&device.port))
        {
            Some(s) => (s.root_port.as_str(), Some(s)),
            None => (device.port.as_str(), None),
        };
        let root_port = self
            .root_ports
            .iter()
            .find(|r| r.name == root_port_name)
            .expect("validated: device port leads to a root port");
        let host_bridge = self
            .host_bridges
            .iter()
            .find(|h| h.name == root_port.host_bridge)
            .expect("validated: root port is on a host bridge");
        DevicePath {
            host_bridge,
            root_port,
            switch,
        }
    }

    /// Every region the guest builds: declared `[[region]]`s first, then a
    /// one-device region for each device no region names.
    pub fn region_layouts(&self) -> Vec<RegionLayout> {
        region::layouts(self).expect("validated topologies resolve their regions")
    }

    /// The region that holds `device`, with the device's position in it.
    pub fn region_of(&self, device: &str) -> Option<(RegionLayout, usize)> {
        let i = self.devices.iter().position(|d| d.name == device)?;
        self.region_layouts()
            .into_iter()
            .find_map(|r| r.devices.iter().position(|&d| d == i).map(|p| (r, p)))
    }

    /// The devices served as vhost-user-blk disks, in the order listed,
    /// each with whether it is read-only.
    pub fn block_views(&self) -> Vec<(&Device, bool)> {
        self.simulator
            .vhost_user_blk
            .iter()
            .filter_map(|n| self.device(n))
            .map(|d| {
                let ro = self.simulator.vhost_user_blk_read_only.contains(&d.name);
                (d, ro)
            })
            .collect()
    }

    /// Offset of each device in the simulator's flat address space: devices
    /// back to back from 0 in topology order.
    pub fn flat_offsets(&self) -> Vec<(&Device, u64)> {
        let mut off = 0;
        self.devices
            .iter()
            .map(|d| {
                let here = off;
                off += d.size.bytes();
                (d, here)
            })
            .collect()
    }
}

impl Device {
    /// The mode, with the default for the kind applied.
    pub fn effective_mode(&self) -> DeviceMode {
        self.mode.unwrap_or(match self.kind {
            DeviceKind::Volatile | DeviceKind::Persistent => DeviceMode::Devdax,
            DeviceKind::Dynamic => DeviceMode::None,
        })
    }

    /// The serial number (assigned during validation when absent).
    pub fn serial_number(&self) -> u64 {
        self.serial
            .expect("validated topologies have a serial for every device")
    }
}

#[cfg(test)]
mod tests;
