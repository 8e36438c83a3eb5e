//! What the host asks for (a [`Plan`]) and what the guest reports back
//! (an [`Outcome`]); both travel as JSON through the guest agent.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Volatile,
    Persistent,
    Dynamic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Devdax,
    SystemRam,
    None,
    /// A persistent region's namespace as a `/dev/pmemN` block device.
    Fsdax,
}

/// One type-3 device as the topology describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedDevice {
    pub name: String,
    pub serial: u64,
    pub kind: Kind,
    pub size: u64,
    pub mode: Mode,
    /// ACPI UID of the device's host bridge (QEMU's `bus_nr`); root
    /// decoders list it in `target_list`.
    pub host_bridge_uid: u64,
}

/// A region to build: its devices in interleave-position order, striped
/// at `granularity` through the root decoder of window `window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRegion {
    /// The topology's name for it (a device's name for its own region).
    pub name: String,
    pub kind: Kind,
    pub mode: Mode,
    pub granularity: u64,
    /// Index of the fixed memory window: root decoders appear in the
    /// order of QEMU's `cxl-fmw.N`, so this is `decoder0.N`'s position.
    pub window: usize,
    /// ACPI UIDs of the window's host bridges, in target order: the root
    /// decoder found must list exactly these.
    pub window_targets: Vec<u64>,
    /// Member device names, position 0 first.
    pub devices: Vec<String>,
    /// Bytes each member contributes.
    pub device_size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub devices: Vec<PlannedDevice>,
    /// The regions, in the order the host allocated their window space.
    #[serde(default)]
    pub regions: Vec<PlannedRegion>,
    /// A file whose existence says the CXL modules are loaded (the guest
    /// /init creates it); waited for before anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_file: Option<String>,
    /// A file waited for after the regions are up (the image extras mount),
    /// so that everything the lab promises is there when `lab up` returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finally_wait_for: Option<String>,
    /// How long to wait for memdevs, regions and namespaces to appear.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    20_000
}

/// What became of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceOutcome {
    pub name: String,
    pub serial: u64,
    pub memdev: String,
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub region: Option<String>,
    /// `/dev/daxX.Y` for devdax devices.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dax: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dax_size: Option<u64>,
    /// Host physical address where the region starts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub region_start: Option<u64>,
    /// NUMA node of system-ram devices.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub numa_node: Option<i64>,
    /// True when an existing region or namespace was found and kept
    /// (a pmem namespace is found again from its labels after a restart).
    pub reused: bool,
    /// The topology name of the device's region and its interleave
    /// position in it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub region_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub position: Option<usize>,
}

/// One member of a region as the kernel decodes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberOutcome {
    pub device: String,
    pub memdev: String,
    /// The endpoint decoder (`decoder5.0`).
    pub decoder: String,
    /// Where the region's part starts on the device (`dpa_resource`).
    pub dpa_base: u64,
}

/// What became of one region, read back from the kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionOutcome {
    /// The topology's name.
    pub name: String,
    /// The kernel's (`region0`).
    pub region: String,
    pub mode: Mode,
    /// Host physical start and size (`resource`, `size`).
    pub start: u64,
    pub size: u64,
    /// `interleave_ways` and `interleave_granularity` as the kernel has them.
    pub ways: u64,
    pub granularity: u64,
    /// Members in position order (`target0`, `target1`, ...).
    pub members: Vec<MemberOutcome>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dax: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dax_size: Option<u64>,
    /// `/dev/pmemN` of an fsdax region.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pmem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub numa_node: Option<i64>,
    pub reused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub devices: Vec<DeviceOutcome>,
    #[serde(default)]
    pub regions: Vec<RegionOutcome>,
    pub elapsed_ms: u64,
}
