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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub devices: Vec<PlannedDevice>,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub devices: Vec<DeviceOutcome>,
    pub elapsed_ms: u64,
}
