//! The guest kernel's configuration, checked before boot. [`OPTIONS`] is
//! the one table of what the lab needs from a kernel: each option, whether
//! the boot needs it (`lab up` refuses a kernel without it, listing every
//! missing one and why) or only some suites (they report "skipped" naming
//! it), and why. The config is read from a `.config`/`config-*` file, a
//! kernel build tree, or the `CONFIG_IKCONFIG` copy embedded in a vmlinux,
//! a `configs.ko` or a bzImage (its compressed payload unpacked first).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// Whether an option stops the boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// `lab up` refuses a kernel without it.
    Required,
    /// The suites named need it; they are skipped without it.
    Optional,
}

/// What the lab wants of an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Want {
    /// `=y` or `=m`.
    Enabled,
    /// Not set.
    Disabled,
}

/// One kernel option the lab depends on.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigOption {
    /// Without the `CONFIG_` prefix.
    pub name: &'static str,
    pub want: Want,
    pub need: Need,
    /// The `lab run` suites that need it (none: every boot, or a topology
    /// feature as `why` says).
    pub suites: &'static [&'static str],
    pub why: &'static str,
}

const fn required(name: &'static str, why: &'static str) -> ConfigOption {
    ConfigOption {
        name,
        want: Want::Enabled,
        need: Need::Required,
        suites: &[],
        why,
    }
}

const fn optional(
    name: &'static str,
    suites: &'static [&'static str],
    why: &'static str,
) -> ConfigOption {
    ConfigOption {
        name,
        want: Want::Enabled,
        need: Need::Optional,
        suites,
        why,
    }
}

/// Every option the lab depends on, from what images/init, cxl-regions,
/// the recipe's module lists and the suites use. `=y` and `=m` both do:
/// the guest /init loads what is modular.
pub const OPTIONS: &[ConfigOption] = &[
    // The image and /init.
    required("BLK_DEV_INITRD", "the guest's root filesystem is the lab's initramfs"),
    required("RD_LZ4", "the initramfs is lz4-compressed (legacy frame)"),
    required("BINFMT_ELF", "busybox, qemu-ga, ndctl and the guest tools are ELF programs"),
    required("BINFMT_SCRIPT", "/init is a busybox shell script (#!/bin/busybox sh)"),
    required("DEVTMPFS", "/init mounts devtmpfs on /dev (there is no udev)"),
    required("TMPFS", "/init mounts tmpfs on /run, /tmp and /dev/shm"),
    required("SERIAL_8250_CONSOLE", "the kernel and /init write to console=ttyS0, the lab's console log, where lab up waits for the guest agent's start"),
    required("VIRTIO_PCI", "the guest agent's virtio-serial port, the scratch disk and the 9p share are virtio PCI devices"),
    required("VIRTIO_CONSOLE", "qemu-ga talks to lab over a virtio-serial port (org.qemu.guest_agent.0)"),
    // CXL and DAX: regions and their dax devices (cxl-regions).
    required("CXL_BUS", "the CXL core (cxl_core): memdevs, ports, decoders in /sys/bus/cxl"),
    required("CXL_ACPI", "cxl_acpi enumerates the host bridges and windows QEMU describes in the CEDT"),
    required("CXL_PCI", "cxl_pci drives the type-3 devices (cxl-type3)"),
    required("CXL_PORT", "cxl_port enumerates root ports, switches and their HDM decoders"),
    required("CXL_MEM", "cxl_mem turns each type-3 device into a memdev with endpoint decoders"),
    required("CXL_PMEM", "cxl_pmem bridges persistent memdevs to libnvdimm (pmem regions)"),
    required("CXL_REGION", "cxl-regions creates and commits every region through the region driver's sysfs"),
    required("LIBNVDIMM", "persistent regions become nvdimm regions and namespaces (ndctl)"),
    required("BLK_DEV_PMEM", "nd_pmem: /dev/pmemN of a persistent region's namespace (fsdax mode, the ioriot filesystem)"),
    // What the dax options depend on: absent from a defconfig base, and
    // merge_config.sh does not pull dependencies in, so a fragment without
    // them silently loses every dax option below.
    required("TRANSPARENT_HUGEPAGE", "device_dax depends on it (DEV_DAX is hidden without it): its mappings are 2 MiB pages"),
    required("MEMORY_HOTPLUG", "kmem onlines a system-ram region with add_memory(), and ZONE_DEVICE depends on it"),
    required("MEMORY_HOTREMOVE", "ZONE_DEVICE depends on it"),
    required("ZONE_DEVICE", "devdax and fsdax namespaces (NVDIMM_PFN) and FS_DAX map device memory as ZONE_DEVICE pages"),
    required("NVDIMM_DAX", "ndctl create-namespace -m devdax: the default topology's pmem0 is a dax device"),
    required("DEV_DAX", "device_dax: /dev/daxX.Y of every devdax region"),
    required("DEV_DAX_PMEM", "dax_pmem: the dax device of a devdax pmem namespace"),
    optional("DEV_DAX_CXL", &[], "dax_cxl: volatile (ram) CXL regions and their dax devices (Linux 6.3 and later); lab up refuses a topology with volatile devices on a kernel without it"),
    required("DEV_DAX_KMEM", "kmem onlines a system-ram region as a NUMA node; the image carries the module (recipe extra_modules)"),
    // The recipe's late modules.
    required("VIRTIO_BLK", "the scratch disk and the simulator's vhost-user-blk views"),
    required("EXT4_FS", "the faults suite's scratch filesystem and the ioriot replay filesystem"),
    required("CRYPTO_CRC32C", "ext4 asks the crypto API for crc32c when it mounts"),
    required("NET_9P", "the image's extras (fio's libraries) reach the guest over virtio-9p at /extras"),
    required("NET_9P_VIRTIO", "the virtio transport of the /extras 9p share"),
    required("9P_FS", "mounting the /extras 9p share"),
    // Suites.
    optional("BPF_SYSCALL", &["faults", "ioriot"], "fault-monitor, madvise-collector and the ioriot capture are eBPF programs"),
    optional("BPF_EVENTS", &["faults", "ioriot"], "attaching eBPF programs to kprobes and tracepoints"),
    optional("PERF_EVENTS", &["faults", "ioriot"], "eBPF kprobes and tracepoints are attached through perf events"),
    optional("DEBUG_INFO_BTF", &["faults"], "fault-monitor reads the fault bits (VM_FAULT_*) from the running kernel's BTF"),
    optional("KPROBES", &["faults"], "fault-monitor and madvise-collector probe handle_mm_fault"),
    optional("KPROBE_EVENTS", &["faults"], "the kprobe event source (/sys/bus/event_source/devices/kprobe) the probes attach through"),
    optional("EVENT_TRACING", &["faults", "ioriot", "ras"], "tracepoints: sched_process_exit (madvise-collector, ioriot), the cxl trace events (ras)"),
    optional("FTRACE_SYSCALLS", &["ioriot"], "the capture attaches to the raw_syscalls sys_enter/sys_exit tracepoints"),
    optional("NVDIMM_PFN", &["ioriot"], "the replay filesystem sits on the persistent device's namespace in fsdax mode"),
    optional("PCIEAER", &["ras"], "correctable and uncorrectable CXL errors arrive as PCIe AER internal errors"),
    optional("PCIEAER_CXL", &["ras"], "the kernel reads CXL RAS capability errors on AER (cxl_aer_* trace events)"),
    optional("NUMA", &[], "system-ram regions (the tiering topology) become NUMA nodes"),
    optional("FS_DAX", &[], "ioriot mounts its replay filesystem with -o dax when the kernel allows; without it, without DAX"),
    ConfigOption {
        name: "IO_STRICT_DEVMEM",
        want: Want::Disabled,
        need: Need::Optional,
        suites: &[],
        why: "reading CXL memory through /dev/mem: with it, /dev/mem refuses ranges a driver claims (every CXL region)",
    },
];

/// Errors reading or checking a kernel config.
#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    #[error("Cannot read the kernel config {path}.")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a kernel config (.config, config-*) nor a kernel image or module with an embedded config.")]
    NotAConfig { path: PathBuf },
    #[error("{path} has no embedded config (the kernel was built without CONFIG_IKCONFIG); give its .config or /boot/config-* file instead.")]
    NoEmbeddedConfig { path: PathBuf },
    #[error("Cannot unpack the {what} in {path} (is the tool installed? run ci/install-deps).")]
    Unpack {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("The topology {topology} has volatile devices ({}), but the kernel (config: {origin}) cannot make volatile CXL regions: it lacks CONFIG_DEV_DAX_CXL (dax_cxl, Linux 6.3 and later). Use a topology with persistent devices only (`--topology persistent`) or a kernel with it.", devices.join(", "))]
    VolatileRegions {
        origin: String,
        topology: String,
        devices: Vec<String>,
    },
    #[error("The kernel (config: {origin}) lacks options the lab needs to boot:\n{}\nEnable them (`lab kernel config` prints a fragment for scripts/kconfig/merge_config.sh) and rebuild the kernel.", list_missing(.missing))]
    Missing {
        origin: String,
        missing: Vec<&'static ConfigOption>,
    },
}

fn describe(o: &ConfigOption) -> String {
    match o.want {
        Want::Enabled => format!("CONFIG_{} (y or m): {}", o.name, o.why),
        Want::Disabled => format!("CONFIG_{} (not set): {}", o.name, o.why),
    }
}

fn list_missing(v: &[&ConfigOption]) -> String {
    v.iter()
        .map(|o| format!("  {}", describe(o)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A kernel's options as its config sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// Where it was read from.
    pub origin: String,
    /// Option (without `CONFIG_`) -> value (`y`, `m`, a number or a
    /// quoted string); unset options are absent.
    pub values: BTreeMap<String, String>,
}

const IKCFG_START: &[u8] = b"IKCFG_ST";

impl KernelConfig {
    /// Parses `.config` text: `CONFIG_X=v` lines; `# CONFIG_X is not set`
    /// and other comments set nothing.
    pub fn parse(text: &str, origin: &str) -> KernelConfig {
        let values = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("CONFIG_")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        KernelConfig {
            origin: origin.to_owned(),
            values,
        }
    }

    /// Reads a kernel's config from a `.config`/`config-*` file, a kernel
    /// build tree (its `.config`), or the embedded copy
    /// (`CONFIG_IKCONFIG`) in a vmlinux, a `configs.ko` or a bzImage.
    pub fn read(path: &Path) -> Result<KernelConfig, KconfigError> {
        let file = if path.is_dir() {
            path.join(".config")
        } else {
            path.to_owned()
        };
        let bytes = std::fs::read(&file).map_err(|source| KconfigError::Read {
            path: file.clone(),
            source,
        })?;
        let origin = file.display().to_string();
        if let Some(text) = embedded_config(&bytes) {
            return Ok(KernelConfig::parse(&text, &format!("{origin} (embedded)")));
        }
        if is_bzimage(&bytes) {
            let vmlinux = unpack_bzimage(&bytes, &file)?;
            return embedded_config(&vmlinux)
                .map(|text| KernelConfig::parse(&text, &format!("{origin} (embedded)")))
                .ok_or(KconfigError::NoEmbeddedConfig { path: file });
        }
        if bytes.starts_with(b"\x7fELF") {
            return Err(KconfigError::NoEmbeddedConfig { path: file });
        }
        match std::str::from_utf8(&bytes) {
            Ok(text)
                if text
                    .lines()
                    .any(|l| l.starts_with("CONFIG_") || l.starts_with("# CONFIG_")) =>
            {
                Ok(KernelConfig::parse(text, &origin))
            }
            _ => Err(KconfigError::NotAConfig { path: file }),
        }
    }

    /// The option's value, when set.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn satisfies(&self, o: &ConfigOption) -> bool {
        let on = matches!(self.value(o.name), Some("y" | "m"));
        match o.want {
            Want::Enabled => on,
            Want::Disabled => !on,
        }
    }

    /// Every option of [`OPTIONS`] this config does not satisfy.
    pub fn unsatisfied(&self) -> Vec<&'static ConfigOption> {
        OPTIONS.iter().filter(|o| !self.satisfies(o)).collect()
    }

    /// Ok when the kernel has every option the boot needs; else the list
    /// of missing ones, each with why it is needed.
    pub fn check_boot(&self) -> Result<(), KconfigError> {
        let missing: Vec<_> = self
            .unsatisfied()
            .into_iter()
            .filter(|o| o.need == Need::Required)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(KconfigError::Missing {
                origin: self.origin.clone(),
                missing,
            })
        }
    }

    /// Ok when this kernel can make the regions of `topology`: volatile
    /// devices need ram regions (`DEV_DAX_CXL`, which arrived with them in
    /// Linux 6.3).
    pub fn check_topology(&self, topology: &cxl_topology::Topology) -> Result<(), KconfigError> {
        if matches!(self.value("DEV_DAX_CXL"), Some("y" | "m")) {
            return Ok(());
        }
        let devices: Vec<String> = topology
            .devices
            .iter()
            .filter(|d| d.kind == cxl_topology::DeviceKind::Volatile)
            .map(|d| d.name.clone())
            .collect();
        if devices.is_empty() {
            return Ok(());
        }
        Err(KconfigError::VolatileRegions {
            origin: self.origin.clone(),
            topology: topology.origin.clone(),
            devices,
        })
    }

    /// The options `suite` (a `lab run` suite name) needs that this kernel
    /// lacks: the suite is skipped, naming them, when any are.
    pub fn missing_for(&self, suite: &str) -> Vec<&'static ConfigOption> {
        self.unsatisfied()
            .into_iter()
            .filter(|o| o.suites.contains(&suite))
            .collect()
    }

    /// Why a suite is skipped on this kernel, when it is.
    pub fn skip_reason(&self, suite: &str) -> Option<String> {
        let missing = self.missing_for(suite);
        (!missing.is_empty()).then(|| {
            format!(
                "the guest kernel lacks {}",
                missing
                    .iter()
                    .map(|o| describe(o))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
    }
}

/// The config `scripts/extract-ikconfig` would find: the gzip stream after
/// the `IKCFG_ST` marker.
fn embedded_config(bytes: &[u8]) -> Option<String> {
    let at = bytes
        .windows(IKCFG_START.len())
        .position(|w| w == IKCFG_START)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[at + IKCFG_START.len()..])
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// An x86 boot image: the setup header's `HdrS` magic.
fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(0x202..0x206) == Some(b"HdrS")
}

fn le32(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// The vmlinux inside a bzImage: the payload the setup header points at
/// (boot protocol 2.08+: `payload_offset` and `payload_length` from the
/// start of the protected-mode code), decompressed by its magic. Only a
/// gzip payload is unpacked in-process; the others go through the
/// compressor's own tool, as modules do.
fn unpack_bzimage(bytes: &[u8], path: &Path) -> Result<Vec<u8>, KconfigError> {
    let bad = |what: &str| KconfigError::Unpack {
        path: path.to_owned(),
        what: "kernel payload".into(),
        source: std::io::Error::other(what.to_owned()),
    };
    let setup_sects = match bytes[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512
        + le32(bytes, 0x248).ok_or_else(|| bad("no payload_offset in the setup header"))?;
    let len = le32(bytes, 0x24c).ok_or_else(|| bad("no payload_length in the setup header"))?;
    let payload = bytes
        .get(start..start + len)
        .ok_or_else(|| bad("the payload lies outside the file"))?;
    if payload.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .map_err(|source| KconfigError::Unpack {
                path: path.to_owned(),
                what: "gzip kernel payload".into(),
                source,
            })?;
        return Ok(out);
    }
    let tool = [
        (&b"\x28\xb5\x2f\xfd"[..], "zstd"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x02\x21\x4c\x18", "lz4"),
        (b"BZh", "bzip2"),
        (b"\x5d\x00\x00", "lzma"),
    ]
    .iter()
    .find(|(magic, _)| payload.starts_with(magic))
    .map(|(_, t)| *t)
    .ok_or_else(|| {
        bad("the payload's compression is not one of gzip, zstd, xz, lz4, bzip2, lzma")
    })?;
    // The build appends the uncompressed size (4 bytes) to all but gzip.
    let stream = &payload[..payload.len().saturating_sub(4)];
    decompress_with(tool, stream).map_err(|source| KconfigError::Unpack {
        path: path.to_owned(),
        what: format!("{tool} kernel payload"),
        source,
    })
}

fn decompress_with(tool: &str, input: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(["-dc", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        // The tool may stop reading at the end of its stream.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = feeder.join();
    // Trailing bytes after the stream make some tools exit non-zero after
    // writing everything: what they wrote is the kernel.
    if out.stdout.is_empty() {
        return Err(std::io::Error::other(format!(
            "{tool} produced nothing ({})",
            out.status
        )));
    }
    Ok(out.stdout)
}

/// The fragment `lab kernel config` prints, for
/// `scripts/kconfig/merge_config.sh`: the required options, then the
/// optional ones, each with why as a comment.
pub fn fragment() -> String {
    let mut out = String::from(
        "# cxl-lab kernel config fragment (lab kernel config).\n\
         # Merge into a kernel tree: scripts/kconfig/merge_config.sh -m .config <this file>\n\
         # then `make olddefconfig`. =m works wherever =y is written, except for bool options.\n",
    );
    for (need, title) in [
        (
            Need::Required,
            "Required: lab up refuses a kernel without these.",
        ),
        (
            Need::Optional,
            "Optional: without these, the suites named are skipped.",
        ),
    ] {
        out.push_str(&format!("\n# {title}\n"));
        for o in OPTIONS.iter().filter(|o| o.need == need) {
            let suites = if o.suites.is_empty() {
                String::new()
            } else {
                format!("[{}] ", o.suites.join(", "))
            };
            out.push_str(&format!("# {suites}{}\n", o.why));
            match o.want {
                Want::Enabled => out.push_str(&format!("CONFIG_{}=y\n", o.name)),
                Want::Disabled => out.push_str(&format!("# CONFIG_{} is not set\n", o.name)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Debian's 6.12.118 amd64 config (linux-image-6.12.118+deb12-amd64),
    /// trimmed to the lines of the options the lab looks at.
    const DEBIAN_6_12: &str = include_str!("kconfig/debian-6.12.118-amd64.config");

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn debians_6_12_config_boots_and_runs_every_suite() {
        let c = KernelConfig::parse(DEBIAN_6_12, "debian");
        assert_eq!(c.value("CXL_REGION"), Some("y"));
        assert_eq!(c.value("CXL_PCI"), Some("m"));
        assert_eq!(c.value("IKCONFIG"), None, "`# … is not set` sets nothing");
        c.check_boot().unwrap();
        for suite in ["dax", "fio", "faults", "ioriot", "ras"] {
            assert!(c.missing_for(suite).is_empty(), "{suite}");
        }
        c.check_topology(&cxl_topology::Topology::embedded_default())
            .unwrap();
        // Debian restricts /dev/mem: recorded, not fatal.
        let names: Vec<&str> = c.unsatisfied().iter().map(|o| o.name).collect();
        assert_eq!(names, ["IO_STRICT_DEVMEM"]);
    }

    #[test]
    fn a_config_without_cxl_region_is_refused_with_the_reason() {
        let trimmed =
            DEBIAN_6_12.replace("CONFIG_CXL_REGION=y\n", "# CONFIG_CXL_REGION is not set\n");
        let c = KernelConfig::parse(&trimmed, "/k/.config");
        let msg = c.check_boot().unwrap_err().to_string();
        assert_eq!(
            msg,
            "The kernel (config: /k/.config) lacks options the lab needs to boot:\n  \
             CONFIG_CXL_REGION (y or m): cxl-regions creates and commits every region through the region driver's sysfs\n\
             Enable them (`lab kernel config` prints a fragment for scripts/kconfig/merge_config.sh) and rebuild the kernel."
        );
    }

    #[test]
    fn suites_are_skipped_naming_what_they_lack() {
        let trimmed = DEBIAN_6_12
            .replace("CONFIG_DEBUG_INFO_BTF=y\n", "")
            .replace("CONFIG_FTRACE_SYSCALLS=y\n", "");
        let c = KernelConfig::parse(&trimmed, "t");
        c.check_boot().unwrap();
        let faults: Vec<&str> = c.missing_for("faults").iter().map(|o| o.name).collect();
        assert_eq!(faults, ["DEBUG_INFO_BTF"]);
        let ioriot: Vec<&str> = c.missing_for("ioriot").iter().map(|o| o.name).collect();
        assert_eq!(ioriot, ["FTRACE_SYSCALLS"]);
        assert!(c.missing_for("dax").is_empty());
        assert!(c.skip_reason("dax").is_none());
        assert!(c
            .skip_reason("faults")
            .unwrap()
            .starts_with("the guest kernel lacks CONFIG_DEBUG_INFO_BTF (y or m): fault-monitor"));
    }

    #[test]
    fn a_kernel_without_volatile_regions_refuses_volatile_devices_only() {
        let c = KernelConfig::parse(
            &DEBIAN_6_12.replace("CONFIG_DEV_DAX_CXL=m\n", ""),
            "/b/config-6.1",
        );
        c.check_boot().unwrap();
        let e = c
            .check_topology(&cxl_topology::Topology::embedded_default())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "The topology <embedded default topology> has volatile devices (vmem0), but the kernel (config: /b/config-6.1) cannot make volatile CXL regions: it lacks CONFIG_DEV_DAX_CXL (dax_cxl, Linux 6.3 and later). Use a topology with persistent devices only (`--topology persistent`) or a kernel with it."
        );
        let persistent = cxl_topology::Topology::load(Some(Path::new("persistent"))).unwrap();
        c.check_topology(&persistent).unwrap();
    }

    #[test]
    fn several_missing_options_are_all_listed() {
        let c = KernelConfig::parse("CONFIG_CXL_BUS=y\n", "t");
        let KconfigError::Missing { missing, .. } = c.check_boot().unwrap_err() else {
            panic!("expected Missing");
        };
        let required = OPTIONS.iter().filter(|o| o.need == Need::Required).count();
        assert_eq!(missing.len(), required - 1);
    }

    #[test]
    fn reads_files_trees_and_embedded_configs() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("linux");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join(".config"), DEBIAN_6_12).unwrap();
        let from_tree = KernelConfig::read(&tree).unwrap();
        assert_eq!(
            from_tree.values,
            KernelConfig::parse(DEBIAN_6_12, "").values
        );

        // A vmlinux (or configs.ko) with CONFIG_IKCONFIG: gzip after IKCFG_ST.
        let mut vmlinux = b"\x7fELF....kernel text....IKCFG_ST".to_vec();
        vmlinux.extend(gzip(DEBIAN_6_12.as_bytes()));
        vmlinux.extend(b"IKCFG_ED more kernel");
        let v = d.path().join("vmlinux");
        std::fs::write(&v, &vmlinux).unwrap();
        let c = KernelConfig::read(&v).unwrap();
        assert!(c.origin.ends_with("vmlinux (embedded)"));
        assert_eq!(c.values, from_tree.values);

        // A bzImage whose gzip payload is that vmlinux.
        let payload = gzip(&vmlinux);
        let mut bz = vec![0u8; 2 * 512];
        bz[0x1f1] = 1;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.extend([0u8; 16]);
        bz.extend(&payload);
        let b = d.path().join("bzImage");
        std::fs::write(&b, &bz).unwrap();
        assert_eq!(KernelConfig::read(&b).unwrap().values, from_tree.values);

        // Without IKCONFIG: named as such; not a kernel at all: named too.
        let plain = d.path().join("vmlinux-plain");
        std::fs::write(&plain, b"\x7fELF no config here").unwrap();
        let e = KernelConfig::read(&plain).unwrap_err();
        assert!(matches!(e, KconfigError::NoEmbeddedConfig { .. }), "{e}");
        let junk = d.path().join("notes.txt");
        std::fs::write(&junk, "hello\n").unwrap();
        let e = KernelConfig::read(&junk).unwrap_err();
        assert!(matches!(e, KconfigError::NotAConfig { .. }), "{e}");
    }

    #[test]
    fn the_fragment_lists_required_then_optional_with_reasons() {
        let f = fragment();
        let req = f.find("# Required").unwrap();
        let opt = f.find("# Optional").unwrap();
        assert!(req < opt);
        let region = f.find("CONFIG_CXL_REGION=y\n").unwrap();
        assert!(req < region && region < opt);
        let btf = f.find("CONFIG_DEBUG_INFO_BTF=y\n").unwrap();
        assert!(opt < btf);
        assert!(f.contains("# [faults] fault-monitor reads the fault bits"));
        assert!(f.contains("# CONFIG_IO_STRICT_DEVMEM is not set\n"));
        // Every option once; the fragment parses back as a config that passes.
        for o in OPTIONS {
            assert_eq!(
                f.matches(&format!("CONFIG_{}=", o.name)).count()
                    + f.matches(&format!("# CONFIG_{} is not set", o.name))
                        .count(),
                1,
                "{}",
                o.name
            );
        }
        let back = KernelConfig::parse(&f, "fragment");
        assert!(back.unsatisfied().is_empty());
    }
}
