//! `lab inject`: what can be injected into a running lab's CXL devices (the
//! arguments, clap-parsed), the checks made against the lab's topology
//! before QEMU sees anything, and the typed QMP command each one becomes.
//!
//! [`plan`] is a pure function of the topology and the arguments, so every
//! refusal is tested without QEMU; [`inject`] plans and sends, for the
//! `lab inject` verb and the suites alike; [`send`] sends a command as it
//! is (the `dcd` suite uses it to see what QEMU itself refuses).

use std::path::Path;

use clap::{Args, Subcommand, ValueEnum};
use cxl_topology::{Device, DeviceKind, Topology};
use qapi::qmp;
use serde::Serialize;

use crate::qmp::{Qmp, QmpError};

/// CXL addresses poison and event records in 64-byte lines.
pub const LINE: u64 = 64;

/// A number on the command line: decimal, or hex with `0x`.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a number (decimal, or hex with 0x)"))
}

fn parse_small<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let v = parse_u64(s)?;
    T::try_from(v).map_err(|_| {
        format!(
            "{s} is too large for this field ({} bits)",
            std::mem::size_of::<T>() * 8
        )
    })
}

fn parse_u8(s: &str) -> Result<u8, String> {
    parse_small(s)
}
fn parse_u16(s: &str) -> Result<u16, String> {
    parse_small(s)
}
fn parse_u32(s: &str) -> Result<u32, String> {
    parse_small(s)
}

/// An extent `OFFSET:LENGTH` (each decimal or 0x hex), the offset counted
/// from the start of its DC region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

fn parse_extent(s: &str) -> Result<Extent, String> {
    let (o, l) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not OFFSET:LENGTH (e.g. 0x0:0x200000)"))?;
    Ok(Extent {
        offset: parse_u64(o)?,
        len: parse_u64(l)?,
    })
}

/// The event log an event record goes to (QEMU's `CxlEventLog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventLog {
    Informational,
    Warning,
    Failure,
    Fatal,
}

impl EventLog {
    fn qapi(self) -> qmp::CxlEventLog {
        match self {
            EventLog::Informational => qmp::CxlEventLog::informational,
            EventLog::Warning => qmp::CxlEventLog::warning,
            EventLog::Failure => qmp::CxlEventLog::failure,
            EventLog::Fatal => qmp::CxlEventLog::fatal,
        }
    }

    /// The Event Record Severity (flags bits 1:0) that matches the log.
    fn severity(self) -> u8 {
        self as u8
    }
}

/// A correctable error type (QEMU's `CxlCorErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorrectableType {
    CacheDataEcc,
    MemDataEcc,
    CrcThreshold,
    RetryThreshold,
    CachePoisonReceived,
    MemPoisonReceived,
    Physical,
}

impl CorrectableType {
    fn qapi(self) -> qmp::CxlCorErrorType {
        use qmp::CxlCorErrorType as Q;
        match self {
            CorrectableType::CacheDataEcc => Q::cache_data_ecc,
            CorrectableType::MemDataEcc => Q::mem_data_ecc,
            CorrectableType::CrcThreshold => Q::crc_threshold,
            CorrectableType::RetryThreshold => Q::retry_threshold,
            CorrectableType::CachePoisonReceived => Q::cache_poison_received,
            CorrectableType::MemPoisonReceived => Q::mem_poison_received,
            CorrectableType::Physical => Q::physical,
        }
    }
}

/// An uncorrectable error type (QEMU's `CxlUncorErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UncorrectableType {
    CacheDataParity,
    CacheAddressParity,
    CacheBeParity,
    CacheDataEcc,
    MemDataParity,
    MemAddressParity,
    MemBeParity,
    MemDataEcc,
    ReinitThreshold,
    RsvdEncoding,
    PoisonReceived,
    ReceiverOverflow,
    Internal,
    CxlIdeTx,
    CxlIdeRx,
}

impl UncorrectableType {
    fn qapi(self) -> qmp::CxlUncorErrorType {
        use qmp::CxlUncorErrorType as Q;
        use UncorrectableType as U;
        match self {
            U::CacheDataParity => Q::cache_data_parity,
            U::CacheAddressParity => Q::cache_address_parity,
            U::CacheBeParity => Q::cache_be_parity,
            U::CacheDataEcc => Q::cache_data_ecc,
            U::MemDataParity => Q::mem_data_parity,
            U::MemAddressParity => Q::mem_address_parity,
            U::MemBeParity => Q::mem_be_parity,
            U::MemDataEcc => Q::mem_data_ecc,
            U::ReinitThreshold => Q::reinit_threshold,
            U::RsvdEncoding => Q::rsvd_encoding,
            U::PoisonReceived => Q::poison_received,
            U::ReceiverOverflow => Q::receiver_overflow,
            U::Internal => Q::internal,
            U::CxlIdeTx => Q::cxl_ide_tx,
            U::CxlIdeRx => Q::cxl_ide_rx,
        }
    }
}

/// How the device picks the extents of added capacity (QEMU's
/// `CxlExtentSelectionPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionPolicy {
    Free,
    Contiguous,
    Prescriptive,
    EnableSharedAccess,
}

/// Which extents a release covers (QEMU's `CxlExtentRemovalPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemovalPolicy {
    TagBased,
    Prescriptive,
}

/// The common header fields of an event record.
#[derive(Debug, Clone, Args)]
pub struct EventHeader {
    /// Event log the record goes to.
    #[arg(long, value_enum, default_value = "informational")]
    pub log: EventLog,
    /// Event Record Flags (CXL r3.0 Table 8-42); default: the log's
    /// severity in bits 1:0 (informational 0, warning 1, failure 2, fatal 3).
    #[arg(long, value_parser = parse_u8)]
    pub flags: Option<u8>,
}

impl EventHeader {
    fn flags(&self) -> u8 {
        self.flags.unwrap_or_else(|| self.log.severity())
    }
}

/// The fields of a General Media or DRAM event record they share.
#[derive(Debug, Clone, Args)]
pub struct MediaEvent {
    /// The device (its topology name).
    #[arg(long)]
    pub device: String,
    /// Device physical address, 64-byte aligned, inside the device.
    #[arg(long, value_parser = parse_u64)]
    pub dpa: u64,
    #[command(flatten)]
    pub header: EventHeader,
    /// Memory Event Descriptor bits (0x1 uncorrectable, 0x2 threshold,
    /// 0x4 poison list overflow).
    #[arg(long, value_parser = parse_u8, default_value = "0")]
    pub descriptor: u8,
    /// Memory Event Type (0 media ECC error, 1 invalid address, 2 data
    /// path error).
    #[arg(long = "type", value_parser = parse_u8, default_value = "0")]
    pub event_type: u8,
    /// Transaction Type (0 unknown, 1 host read, 2 host write, 3 host scan
    /// media, 4 host inject poison, 5 internal media scrub, 6 internal
    /// media management).
    #[arg(long, value_parser = parse_u8, default_value = "1")]
    pub transaction_type: u8,
    /// Channel of the event location (left out of the record when absent).
    #[arg(long, value_parser = parse_u8)]
    pub channel: Option<u8>,
    /// Rank of the event location (left out when absent).
    #[arg(long, value_parser = parse_u8)]
    pub rank: Option<u8>,
}

/// `lab inject poison`.
#[derive(Debug, Clone, Args)]
pub struct PoisonArgs {
    /// The device (its topology name).
    #[arg(long)]
    pub device: String,
    /// Device physical address of the first poisoned byte, 64-byte aligned.
    #[arg(long, value_parser = parse_u64)]
    pub dpa: u64,
    /// Bytes to poison: a positive multiple of 64 within the device.
    #[arg(long, value_parser = parse_u64, default_value = "64")]
    pub length: u64,
}

/// `lab inject general-media`.
#[derive(Debug, Clone, Args)]
pub struct GeneralMediaArgs {
    #[command(flatten)]
    pub event: MediaEvent,
    /// Bitmask of the devices in the rank (left out when absent).
    #[arg(long, value_parser = parse_u32)]
    pub device_mask: Option<u32>,
    /// Component identifier, at most 16 bytes (left out when absent).
    #[arg(long)]
    pub component_id: Option<String>,
}

/// `lab inject dram`.
#[derive(Debug, Clone, Args)]
pub struct DramArgs {
    #[command(flatten)]
    pub event: MediaEvent,
    /// Nibbles the error affects (left out when absent).
    #[arg(long, value_parser = parse_u32)]
    pub nibble_mask: Option<u32>,
    #[arg(long, value_parser = parse_u8)]
    pub bank_group: Option<u8>,
    #[arg(long, value_parser = parse_u8)]
    pub bank: Option<u8>,
    #[arg(long, value_parser = parse_u32)]
    pub row: Option<u32>,
    #[arg(long, value_parser = parse_u16)]
    pub column: Option<u16>,
    /// Correction mask words, one per affected nibble in nibble-mask order,
    /// at most 4 (repeat the option).
    #[arg(long, value_parser = parse_u64)]
    pub correction_mask: Vec<u64>,
}

/// `lab inject memory-module`.
#[derive(Debug, Clone, Args)]
pub struct MemoryModuleArgs {
    /// The device (its topology name).
    #[arg(long)]
    pub device: String,
    #[command(flatten)]
    pub header: EventHeader,
    /// Device Event Type (0 health status change, 1 media status change,
    /// 2 life used change, 3 temperature change, 4 data path error, 5 LSA
    /// error).
    #[arg(long = "type", value_parser = parse_u8, default_value = "0")]
    pub event_type: u8,
    /// Health Status bits (0x1 maintenance needed, 0x2 performance
    /// degraded, 0x4 hardware replacement needed).
    #[arg(long, value_parser = parse_u8, default_value = "0")]
    pub health_status: u8,
    /// Media Status (0 normal, 1 not ready, 2 write persistency lost, …).
    #[arg(long, value_parser = parse_u8, default_value = "0")]
    pub media_status: u8,
    /// Additional Status (life used, temperature, shutdown, error counters).
    #[arg(long, value_parser = parse_u8, default_value = "0")]
    pub additional_status: u8,
    /// Percent (0-100) of the expected life used.
    #[arg(long, value_parser = parse_u8, default_value = "0")]
    pub life_used: u8,
    /// Device temperature in degrees Celsius.
    #[arg(long, default_value_t = 25, allow_negative_numbers = true)]
    pub temperature: i16,
    #[arg(long, value_parser = parse_u32, default_value = "0")]
    pub dirty_shutdown_count: u32,
    #[arg(long, value_parser = parse_u32, default_value = "0")]
    pub corrected_volatile_error_count: u32,
    #[arg(long, value_parser = parse_u32, default_value = "0")]
    pub corrected_persistent_error_count: u32,
}

/// `lab inject uncorrectable`.
#[derive(Debug, Clone, Args)]
pub struct UncorrectableArgs {
    /// The device (its topology name).
    #[arg(long)]
    pub device: String,
    /// Error type; repeat it to inject several errors in one go.
    #[arg(long = "type", value_enum, required = true)]
    pub types: Vec<UncorrectableType>,
    /// Header log DWORDs of every error, at most 32 (repeat the option;
    /// all zero when absent).
    #[arg(long, value_parser = parse_u32)]
    pub header: Vec<u32>,
}

/// `lab inject correctable`.
#[derive(Debug, Clone, Args)]
pub struct CorrectableArgs {
    /// The device (its topology name).
    #[arg(long)]
    pub device: String,
    /// Error type.
    #[arg(long = "type", value_enum)]
    pub error_type: CorrectableType,
}

/// `lab inject dc-add`.
#[derive(Debug, Clone, Args)]
pub struct DcAddArgs {
    /// A dynamic capacity device (its topology name).
    #[arg(long)]
    pub device: String,
    /// DC region number (the device's size split evenly over its
    /// dc_regions).
    #[arg(long, value_parser = parse_u8, default_value = "0")]
    pub region: u8,
    /// Extent OFFSET:LENGTH from the region's start, 64-byte aligned
    /// (QEMU also wants the region's block size, 2 MiB); repeat it.
    #[arg(long = "extent", value_parser = parse_extent, required = true)]
    pub extents: Vec<Extent>,
    #[arg(long, value_parser = parse_u16, default_value = "0")]
    pub host_id: u16,
    #[arg(long, value_enum, default_value = "prescriptive")]
    pub selection_policy: SelectionPolicy,
    /// Tag of the added capacity (a UUID; none when absent).
    #[arg(long)]
    pub tag: Option<String>,
}

/// `lab inject dc-release`.
#[derive(Debug, Clone, Args)]
pub struct DcReleaseArgs {
    /// A dynamic capacity device (its topology name).
    #[arg(long)]
    pub device: String,
    /// DC region number.
    #[arg(long, value_parser = parse_u8, default_value = "0")]
    pub region: u8,
    /// Extent OFFSET:LENGTH from the region's start; repeat it (none with
    /// --removal-policy tag-based).
    #[arg(long = "extent", value_parser = parse_extent)]
    pub extents: Vec<Extent>,
    #[arg(long, value_parser = parse_u16, default_value = "0")]
    pub host_id: u16,
    #[arg(long, value_enum, default_value = "prescriptive")]
    pub removal_policy: RemovalPolicy,
    /// The host loses the capacity at once, without its release.
    #[arg(long)]
    pub forced_removal: bool,
    /// The device sanitizes the released capacity.
    #[arg(long)]
    pub sanitize_on_release: bool,
    #[arg(long)]
    pub tag: Option<String>,
}

/// What `lab inject` injects.
#[derive(Debug, Clone, Subcommand)]
pub enum Injection {
    /// Poison a DPA range (cxl-inject-poison); the guest sees it in the
    /// device's poison list.
    Poison(PoisonArgs),
    /// A General Media event record (cxl-inject-general-media-event).
    GeneralMedia(GeneralMediaArgs),
    /// A DRAM event record (cxl-inject-dram-event).
    Dram(DramArgs),
    /// A Memory Module event record (cxl-inject-memory-module-event).
    MemoryModule(MemoryModuleArgs),
    /// Uncorrectable protocol errors, reported through AER
    /// (cxl-inject-uncorrectable-errors).
    Uncorrectable(UncorrectableArgs),
    /// A correctable protocol error, reported through AER
    /// (cxl-inject-correctable-error).
    Correctable(CorrectableArgs),
    /// Offer dynamic capacity extents to the host (cxl-add-dynamic-capacity;
    /// dynamic devices only).
    DcAdd(DcAddArgs),
    /// Take dynamic capacity extents back (cxl-release-dynamic-capacity;
    /// dynamic devices only).
    DcRelease(DcReleaseArgs),
}

impl Injection {
    /// The device named on the command line.
    pub fn device(&self) -> &str {
        match self {
            Injection::Poison(a) => &a.device,
            Injection::GeneralMedia(a) => &a.event.device,
            Injection::Dram(a) => &a.event.device,
            Injection::MemoryModule(a) => &a.device,
            Injection::Uncorrectable(a) => &a.device,
            Injection::Correctable(a) => &a.device,
            Injection::DcAdd(a) => &a.device,
            Injection::DcRelease(a) => &a.device,
        }
    }

    /// The `lab inject` form.
    pub fn form(&self) -> &'static str {
        match self {
            Injection::Poison(_) => "poison",
            Injection::GeneralMedia(_) => "general-media",
            Injection::Dram(_) => "dram",
            Injection::MemoryModule(_) => "memory-module",
            Injection::Uncorrectable(_) => "uncorrectable",
            Injection::Correctable(_) => "correctable",
            Injection::DcAdd(_) => "dc-add",
            Injection::DcRelease(_) => "dc-release",
        }
    }
}

/// A typed QMP command, checked against the topology and ready to send.
#[derive(Debug, Clone)]
pub enum Command {
    Poison(qmp::cxl_inject_poison),
    GeneralMedia(qmp::cxl_inject_general_media_event),
    Dram(qmp::cxl_inject_dram_event),
    MemoryModule(qmp::cxl_inject_memory_module_event),
    Uncorrectable(qmp::cxl_inject_uncorrectable_errors),
    Correctable(qmp::cxl_inject_correctable_error),
    DcAdd(qmp::cxl_add_dynamic_capacity),
    DcRelease(qmp::cxl_release_dynamic_capacity),
}

impl Command {
    /// The QMP command's name.
    pub fn name(&self) -> &'static str {
        use qapi::Command as _;
        match self {
            Command::Poison(_) => qmp::cxl_inject_poison::NAME,
            Command::GeneralMedia(_) => qmp::cxl_inject_general_media_event::NAME,
            Command::Dram(_) => qmp::cxl_inject_dram_event::NAME,
            Command::MemoryModule(_) => qmp::cxl_inject_memory_module_event::NAME,
            Command::Uncorrectable(_) => qmp::cxl_inject_uncorrectable_errors::NAME,
            Command::Correctable(_) => qmp::cxl_inject_correctable_error::NAME,
            Command::DcAdd(_) => qmp::cxl_add_dynamic_capacity::NAME,
            Command::DcRelease(_) => qmp::cxl_release_dynamic_capacity::NAME,
        }
    }

    /// The command's arguments as QMP receives them.
    pub fn arguments(&self) -> serde_json::Value {
        let v = match self {
            Command::Poison(c) => serde_json::to_value(c),
            Command::GeneralMedia(c) => serde_json::to_value(c),
            Command::Dram(c) => serde_json::to_value(c),
            Command::MemoryModule(c) => serde_json::to_value(c),
            Command::Uncorrectable(c) => serde_json::to_value(c),
            Command::Correctable(c) => serde_json::to_value(c),
            Command::DcAdd(c) => serde_json::to_value(c),
            Command::DcRelease(c) => serde_json::to_value(c),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// Why an injection was not made: refused before QEMU saw it (nothing
/// sent), refused by QEMU, or QMP failed.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("The lab has no device '{device}' (--device); name one of its devices: {known}.")]
    UnknownDevice { device: String, known: String },
    #[error("`lab inject {form}` applies to dynamic capacity devices, but {device} is {kind} (--device); {fix}.")]
    NotDynamic {
        form: &'static str,
        device: String,
        kind: &'static str,
        fix: String,
    },
    #[error("{field} {} is not a multiple of 64 bytes (CXL poisons and reports memory in 64-byte lines); use {} or {}.", num(*value, *hex), num(*down, *hex), num(*up, *hex))]
    Unaligned {
        field: String,
        value: u64,
        down: u64,
        up: u64,
        /// Addresses read in hex, lengths in decimal.
        hex: bool,
    },
    #[error("{field} is 0; give a positive multiple of 64 bytes.")]
    ZeroLength { field: String },
    #[error("{what} ends at {end:#x}, past the end of {place} ({size:#x} bytes, {size_mib} MiB); keep it below {size:#x}.")]
    PastEnd {
        what: String,
        end: u128,
        place: String,
        size: u64,
        size_mib: u64,
    },
    #[error("--region {region} is not a DC region of {device}, which has {count} (numbered 0 to {}); use one of them.", count - 1)]
    NoSuchDcRegion {
        device: String,
        region: u8,
        count: u8,
    },
    #[error(
        "{form} needs at least one --extent OFFSET:LENGTH (unless --removal-policy tag-based)."
    )]
    NoExtents { form: &'static str },
    #[error("{field} has {count} values, more than QEMU takes ({max}); give at most {max}.")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("--component-id '{value}' has {len} bytes, more than the record's 16; shorten it.")]
    ComponentIdTooLong { value: String, len: usize },
    #[error("--life-used {0} is not a percentage; give 0 to 100.")]
    LifeUsed(u8),
    /// QEMU's own refusal; its source is QEMU's error text.
    #[error("QEMU refused {command} on device {device}")]
    QemuRefused {
        command: &'static str,
        device: String,
        #[source]
        source: qapi::Error,
    },
    #[error("{command} on device {device} did not reach QEMU.")]
    Qmp {
        command: &'static str,
        device: String,
        #[source]
        source: QmpError,
    },
}

impl InjectError {
    /// Whether the lab refused the injection itself, before QEMU saw it.
    pub fn refused_before_qemu(&self) -> bool {
        !matches!(
            self,
            InjectError::QemuRefused { .. } | InjectError::Qmp { .. }
        )
    }
}

/// An injection QEMU took: the command and what it answered.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    /// The QMP command sent.
    pub command: &'static str,
    /// The topology device, and its QOM path.
    pub device: String,
    pub path: String,
    /// The command's arguments as QMP received them.
    pub fields: serde_json::Value,
    /// QEMU's answer (`{}` for these commands).
    pub answer: serde_json::Value,
}

/// Sends a command as it is, with no check against the topology.
pub async fn send(qmp: &Qmp, command: Command) -> Result<serde_json::Value, QmpError> {
    let answer = match command {
        Command::Poison(c) => qmp.execute(c).await?,
        Command::GeneralMedia(c) => qmp.execute(c).await?,
        Command::Dram(c) => qmp.execute(c).await?,
        Command::MemoryModule(c) => qmp.execute(c).await?,
        Command::Uncorrectable(c) => qmp.execute(c).await?,
        Command::Correctable(c) => qmp.execute(c).await?,
        Command::DcAdd(c) => qmp.execute(c).await?,
        Command::DcRelease(c) => qmp.execute(c).await?,
    };
    Ok(serde_json::to_value(answer).unwrap_or(serde_json::Value::Null))
}

/// Checks `injection` against the lab's `topology` ([`plan`]; a refusal
/// sends nothing), then sends it to the QEMU whose QMP socket is
/// `qmp_socket`.
pub async fn inject(
    qmp_socket: &Path,
    topology: &Topology,
    injection: &Injection,
) -> Result<Injected, InjectError> {
    let command = plan(topology, injection)?;
    let device = injection.device().to_owned();
    let name = command.name();
    let fields = command.arguments();
    let qmp_failed = |source| InjectError::Qmp {
        command: name,
        device: device.clone(),
        source,
    };
    let qmp = Qmp::connect(qmp_socket).await.map_err(qmp_failed)?;
    let answer = send(&qmp, command).await.map_err(|e| match e {
        QmpError::Refused { command, source } => InjectError::QemuRefused {
            command,
            device: device.clone(),
            source,
        },
        other => qmp_failed(other),
    })?;
    Ok(Injected {
        command: name,
        path: qom_path(&device),
        device,
        fields,
        answer,
    })
}

fn num(v: u64, hex: bool) -> String {
    if hex {
        format!("{v:#x}")
    } else {
        v.to_string()
    }
}

/// The QOM path of a topology device (QEMU's device id is its name).
pub fn qom_path(device: &str) -> String {
    format!("/machine/peripheral/{device}")
}

fn find<'a>(topology: &'a Topology, name: &str) -> Result<&'a Device, InjectError> {
    topology
        .device(name)
        .ok_or_else(|| InjectError::UnknownDevice {
            device: name.to_owned(),
            known: topology
                .devices
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn aligned(field: &str, value: u64) -> Result<(), InjectError> {
    if value.is_multiple_of(LINE) {
        return Ok(());
    }
    Err(InjectError::Unaligned {
        field: field.to_owned(),
        value,
        down: value / LINE * LINE,
        up: (value / LINE + 1) * LINE,
        hex: !field.contains("length"),
    })
}

/// `start..start+len` (len > 0, both aligned) inside `0..size`.
fn range_inside(
    what: String,
    start_field: &str,
    start: u64,
    len_field: &str,
    len: u64,
    place: String,
    size: u64,
) -> Result<(), InjectError> {
    aligned(start_field, start)?;
    if len == 0 {
        return Err(InjectError::ZeroLength {
            field: len_field.to_owned(),
        });
    }
    aligned(len_field, len)?;
    let end = start as u128 + len as u128;
    if end > size as u128 {
        return Err(InjectError::PastEnd {
            what,
            end,
            place,
            size,
            size_mib: size >> 20,
        });
    }
    Ok(())
}

fn media_dpa(dev: &Device, dpa: u64) -> Result<(), InjectError> {
    range_inside(
        format!("--dpa {dpa:#x} (a 64-byte line)"),
        "--dpa",
        dpa,
        "--dpa's line",
        LINE,
        dev.name.clone(),
        dev.size.0,
    )
}

fn dynamic<'a>(
    topology: &'a Topology,
    form: &'static str,
    name: &str,
) -> Result<&'a Device, InjectError> {
    let dev = find(topology, name)?;
    if dev.kind == DeviceKind::Dynamic {
        return Ok(dev);
    }
    let dynamic: Vec<&str> = topology
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Dynamic)
        .map(|d| d.name.as_str())
        .collect();
    let fix = if dynamic.is_empty() {
        "this topology has none: boot one with a device of kind = \"dynamic\" (e.g. `lab up --topology dcd`)".to_owned()
    } else {
        format!("name one of {}", dynamic.join(", "))
    };
    Err(InjectError::NotDynamic {
        form,
        device: name.to_owned(),
        kind: dev.kind.name(),
        fix,
    })
}

/// The size of each DC region of a dynamic device.
pub fn dc_region_size(dev: &Device) -> u64 {
    dev.size.0 / u64::from(dev.dc_regions.unwrap_or(1).max(1))
}

fn dc_extents(
    dev: &Device,
    form: &'static str,
    region: u8,
    extents: &[Extent],
    allow_none: bool,
) -> Result<Vec<qmp::CxlDynamicCapacityExtent>, InjectError> {
    let count = dev.dc_regions.unwrap_or(1).max(1);
    if region >= count {
        return Err(InjectError::NoSuchDcRegion {
            device: dev.name.clone(),
            region,
            count,
        });
    }
    if extents.is_empty() && !allow_none {
        return Err(InjectError::NoExtents { form });
    }
    let size = dc_region_size(dev);
    extents
        .iter()
        .map(|e| {
            range_inside(
                format!("--extent {:#x}:{:#x}", e.offset, e.len),
                "--extent's offset",
                e.offset,
                "--extent's length",
                e.len,
                format!("DC region {region} of {}", dev.name),
                size,
            )?;
            Ok(qmp::CxlDynamicCapacityExtent {
                offset: e.offset,
                len: e.len,
            })
        })
        .collect()
}

/// Checks an injection against the lab's topology and builds its QMP
/// command; nothing is sent.
pub fn plan(topology: &Topology, injection: &Injection) -> Result<Command, InjectError> {
    Ok(match injection {
        Injection::Poison(a) => {
            let dev = find(topology, &a.device)?;
            range_inside(
                format!("--dpa {:#x} with --length {}", a.dpa, a.length),
                "--dpa",
                a.dpa,
                "--length",
                a.length,
                dev.name.clone(),
                dev.size.0,
            )?;
            Command::Poison(qmp::cxl_inject_poison {
                path: qom_path(&dev.name),
                start: a.dpa,
                length: a.length,
            })
        }
        Injection::GeneralMedia(a) => {
            let e = &a.event;
            let dev = find(topology, &e.device)?;
            media_dpa(dev, e.dpa)?;
            if let Some(id) = &a.component_id {
                if id.len() > 16 {
                    return Err(InjectError::ComponentIdTooLong {
                        value: id.clone(),
                        len: id.len(),
                    });
                }
            }
            Command::GeneralMedia(qmp::cxl_inject_general_media_event {
                path: qom_path(&dev.name),
                log: e.header.log.qapi(),
                flags: e.header.flags(),
                dpa: e.dpa,
                descriptor: e.descriptor,
                type_: e.event_type,
                transaction_type: e.transaction_type,
                channel: e.channel,
                rank: e.rank,
                device: a.device_mask,
                component_id: a.component_id.clone(),
            })
        }
        Injection::Dram(a) => {
            let e = &a.event;
            let dev = find(topology, &e.device)?;
            media_dpa(dev, e.dpa)?;
            if a.correction_mask.len() > 4 {
                return Err(InjectError::TooMany {
                    field: "--correction-mask",
                    count: a.correction_mask.len(),
                    max: 4,
                });
            }
            Command::Dram(qmp::cxl_inject_dram_event {
                path: qom_path(&dev.name),
                log: e.header.log.qapi(),
                flags: e.header.flags(),
                dpa: e.dpa,
                descriptor: e.descriptor,
                type_: e.event_type,
                transaction_type: e.transaction_type,
                channel: e.channel,
                rank: e.rank,
                nibble_mask: a.nibble_mask,
                bank_group: a.bank_group,
                bank: a.bank,
                row: a.row,
                column: a.column,
                correction_mask: (!a.correction_mask.is_empty()).then(|| a.correction_mask.clone()),
            })
        }
        Injection::MemoryModule(a) => {
            let dev = find(topology, &a.device)?;
            if a.life_used > 100 {
                return Err(InjectError::LifeUsed(a.life_used));
            }
            Command::MemoryModule(qmp::cxl_inject_memory_module_event {
                path: qom_path(&dev.name),
                log: a.header.log.qapi(),
                flags: a.header.flags(),
                type_: a.event_type,
                health_status: a.health_status,
                media_status: a.media_status,
                additional_status: a.additional_status,
                life_used: a.life_used,
                temperature: a.temperature,
                dirty_shutdown_count: a.dirty_shutdown_count,
                corrected_volatile_error_count: a.corrected_volatile_error_count,
                corrected_persistent_error_count: a.corrected_persistent_error_count,
            })
        }
        Injection::Uncorrectable(a) => {
            let dev = find(topology, &a.device)?;
            if a.header.len() > 32 {
                return Err(InjectError::TooMany {
                    field: "--header",
                    count: a.header.len(),
                    max: 32,
                });
            }
            Command::Uncorrectable(qmp::cxl_inject_uncorrectable_errors {
                path: qom_path(&dev.name),
                errors: a
                    .types
                    .iter()
                    .map(|t| qmp::CXLUncorErrorRecord {
                        type_: t.qapi(),
                        header: a.header.clone(),
                    })
                    .collect(),
            })
        }
        Injection::Correctable(a) => {
            let dev = find(topology, &a.device)?;
            Command::Correctable(qmp::cxl_inject_correctable_error {
                path: qom_path(&dev.name),
                type_: a.error_type.qapi(),
            })
        }
        Injection::DcAdd(a) => {
            let dev = dynamic(topology, "dc-add", &a.device)?;
            let extents = dc_extents(dev, "dc-add", a.region, &a.extents, false)?;
            Command::DcAdd(qmp::cxl_add_dynamic_capacity {
                path: qom_path(&dev.name),
                host_id: a.host_id,
                selection_policy: match a.selection_policy {
                    SelectionPolicy::Free => qmp::CxlExtentSelectionPolicy::free,
                    SelectionPolicy::Contiguous => qmp::CxlExtentSelectionPolicy::contiguous,
                    SelectionPolicy::Prescriptive => qmp::CxlExtentSelectionPolicy::prescriptive,
                    SelectionPolicy::EnableSharedAccess => {
                        qmp::CxlExtentSelectionPolicy::enable_shared_access
                    }
                },
                region: a.region,
                tag: a.tag.clone(),
                extents,
            })
        }
        Injection::DcRelease(a) => {
            let dev = dynamic(topology, "dc-release", &a.device)?;
            let tag_based = a.removal_policy == RemovalPolicy::TagBased;
            let extents = dc_extents(dev, "dc-release", a.region, &a.extents, tag_based)?;
            Command::DcRelease(qmp::cxl_release_dynamic_capacity {
                path: qom_path(&dev.name),
                host_id: a.host_id,
                removal_policy: if tag_based {
                    qmp::CxlExtentRemovalPolicy::tag_based
                } else {
                    qmp::CxlExtentRemovalPolicy::prescriptive
                },
                forced_removal: a.forced_removal.then_some(true),
                sanitize_on_release: a.sanitize_on_release.then_some(true),
                region: a.region,
                tag: a.tag.clone(),
                extents,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        what: Injection,
    }

    fn parse(args: &str) -> Result<Injection, clap::Error> {
        Cli::try_parse_from(std::iter::once("inject").chain(args.split_whitespace()))
            .map(|c| c.what)
    }

    fn default_topology() -> Topology {
        Topology::embedded_default()
    }

    fn dcd_topology() -> Topology {
        let p = cxl_topology::preset("dcd").expect("the dcd preset");
        Topology::parse(p.toml, "dcd").expect("the dcd preset parses")
    }

    fn refused(topology: &Topology, args: &str) -> String {
        let inj = parse(args).unwrap_or_else(|e| panic!("{args}: {e}"));
        match plan(topology, &inj) {
            Ok(c) => panic!("{args} was accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn refused_injections_name_the_field_and_the_fix() {
        let d = default_topology();
        let dcd = dcd_topology();
        let table: &[(&Topology, &str, &str)] = &[
            (
                &d,
                "poison --device vmem0 --dpa 0x1001 --length 64",
                "--dpa 0x1001 is not a multiple of 64 bytes (CXL poisons and reports memory in 64-byte lines); use 0x1000 or 0x1040.",
            ),
            (
                &d,
                "poison --device vmem0 --dpa 0xfffffc0 --length 128",
                "--dpa 0xfffffc0 with --length 128 ends at 0x10000040, past the end of vmem0 (0x10000000 bytes, 256 MiB); keep it below 0x10000000.",
            ),
            (
                &d,
                "poison --device vmem9 --dpa 0x1000",
                "The lab has no device 'vmem9' (--device); name one of its devices: vmem0, pmem0.",
            ),
            (
                &d,
                "poison --device vmem0 --dpa 0x1000 --length 0",
                "--length is 0; give a positive multiple of 64 bytes.",
            ),
            (
                &d,
                "poison --device pmem0 --dpa 0x0 --length 100",
                "--length 100 is not a multiple of 64 bytes (CXL poisons and reports memory in 64-byte lines); use 64 or 128.",
            ),
            (
                &d,
                "general-media --device vmem0 --dpa 0x10000000",
                "--dpa 0x10000000 (a 64-byte line) ends at 0x10000040, past the end of vmem0 (0x10000000 bytes, 256 MiB); keep it below 0x10000000.",
            ),
            (
                &d,
                "dc-add --device vmem0 --extent 0:0x200000",
                "`lab inject dc-add` applies to dynamic capacity devices, but vmem0 is volatile (--device); this topology has none: boot one with a device of kind = \"dynamic\" (e.g. `lab up --topology dcd`).",
            ),
            (
                &dcd,
                "dc-add --device dcd0 --region 2 --extent 0:0x200000",
                "--region 2 is not a DC region of dcd0, which has 2 (numbered 0 to 1); use one of them.",
            ),
            (
                &dcd,
                "dc-add --device dcd0 --region 1 --extent 0xfe00000:0x400000",
                "--extent 0xfe00000:0x400000 ends at 0x10200000, past the end of DC region 1 of dcd0 (0x10000000 bytes, 256 MiB); keep it below 0x10000000.",
            ),
            (
                &dcd,
                "dc-release --device dcd0",
                "dc-release needs at least one --extent OFFSET:LENGTH (unless --removal-policy tag-based).",
            ),
            (
                &d,
                "memory-module --device pmem0 --life-used 101",
                "--life-used 101 is not a percentage; give 0 to 100.",
            ),
        ];
        for (topology, args, want) in table {
            assert_eq!(&refused(topology, args), want, "{args}");
        }
    }

    #[test]
    fn unknown_enum_values_are_refused_by_the_parser() {
        for (args, bad) in [
            (
                "general-media --device vmem0 --dpa 0 --log severe",
                "severe",
            ),
            ("correctable --device vmem0 --type mem-ecc", "mem-ecc"),
            ("uncorrectable --device vmem0 --type parity", "parity"),
            (
                "dc-add --device dcd0 --extent 0:64 --selection-policy any",
                "any",
            ),
        ] {
            let e = parse(args).err().unwrap_or_else(|| panic!("{args} parsed"));
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{args}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("invalid value '{bad}'"))
                    && text.contains("possible values"),
                "{args}: {text}"
            );
        }
        let e = parse("poison --device vmem0 --dpa 0x1g").expect_err("refused");
        assert!(e.to_string().contains("'0x1g' is not a number"), "{e}");
    }

    #[test]
    fn accepted_injections_become_typed_qmp_commands() {
        let d = default_topology();
        let c = plan(
            &d,
            &parse("poison --device vmem0 --dpa 0x2000 --length 64").unwrap(),
        )
        .unwrap();
        assert_eq!(c.name(), "cxl-inject-poison");
        assert_eq!(
            c.arguments(),
            serde_json::json!({"path": "/machine/peripheral/vmem0", "start": 0x2000, "length": 64})
        );
        let c = plan(
            &d,
            &parse("general-media --device vmem0 --dpa 4096 --log warning --channel 3").unwrap(),
        )
        .unwrap();
        assert_eq!(c.name(), "cxl-inject-general-media-event");
        assert_eq!(
            c.arguments(),
            serde_json::json!({"path": "/machine/peripheral/vmem0", "log": "warning", "flags": 1,
                "dpa": 4096, "descriptor": 0, "type": 0, "transaction-type": 1, "channel": 3})
        );
        let c = plan(
            &d,
            &parse("correctable --device pmem0 --type mem-data-ecc").unwrap(),
        )
        .unwrap();
        assert_eq!(
            c.arguments(),
            serde_json::json!({"path": "/machine/peripheral/pmem0", "type": "mem-data-ecc"})
        );
        let c = plan(
            &d,
            &parse("uncorrectable --device pmem0 --type cxl-ide-tx --type internal --header 7")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            c.arguments()["errors"],
            serde_json::json!([{"type": "cxl-ide-tx", "header": [7]}, {"type": "internal", "header": [7]}])
        );
        let c = plan(
            &dcd_topology(),
            &parse(
                "dc-add --device dcd0 --region 1 --extent 0x0:0x200000 --extent 0x400000:0x200000",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            c.arguments(),
            serde_json::json!({"path": "/machine/peripheral/dcd0", "host-id": 0,
                "selection-policy": "prescriptive", "region": 1,
                "extents": [{"offset": 0, "len": 0x200000}, {"offset": 0x400000, "len": 0x200000}]})
        );
        let c = plan(
            &dcd_topology(),
            &parse("dc-release --device dcd0 --removal-policy tag-based --tag 00000000-0000-0000-0000-000000000001").unwrap(),
        )
        .unwrap();
        assert_eq!(c.name(), "cxl-release-dynamic-capacity");
    }
}
