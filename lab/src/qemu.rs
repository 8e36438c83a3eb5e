//! The QEMU command line, built from a topology: [`argv`] concatenates one
//! small function per part (machine and windows, CPU and RAM, boot, console
//! and control sockets, plugin, extras, scratch disk, block views, memory
//! backends, host bridges, ports, type-3 devices), each given only the
//! topology part and paths it needs.
//!
//! Measured facts it encodes (DESIGN.md): region commit needs the guest CPU
//! to hide the hypervisor bit (`-cpu max,hypervisor=off`); every
//! `cxl-type3` needs a distinct `sn=`; the CXL memory is a
//! `memory-backend-file,share=on` over a file the simulator owns. A device
//! the topology also serves as a vhost-user-blk disk becomes a
//! `vhost-user-blk-pci` on the simulator's socket; vhost-user needs the
//! guest RAM shared with the back end, so only then is the RAM a
//! `memory-backend-memfd,share=on` (the default boot is untouched).

use std::path::Path;

use cxl_topology::{Device, DeviceKind, Guest, HostBridge, RootPort, Switch, Topology, Window};

// The run's file names are spelled in `runfiles`; re-exported here, where
// callers building or inspecting the command line have long found them.
pub use crate::runfiles::{
    agent_socket, console_log, pid_file, qmp_socket, scratch_disk, vhost_user_blk_socket,
    DeviceFiles,
};

/// The accelerator QEMU runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// Everything the command line depends on besides the topology.
#[derive(Debug, Clone)]
pub struct QemuConfig<'a> {
    pub topology: &'a Topology,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// The image's extras directory, shared read-only over virtio-9p.
    pub extras: &'a Path,
    /// The run directory: console log and scratch disk.
    pub run_dir: &'a Path,
    /// The run's socket directory: sockets and the pid file.
    pub socket_dir: &'a Path,
    pub devices: &'a [DeviceFiles],
    pub accel: Accel,
    /// Extra kernel command line words.
    pub extra_append: &'a [String],
    /// The `-plugin` value (timing mode): the TCG plugin and its arguments.
    pub plugin: Option<String>,
}

pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// The first line of `qemu-system-x86_64 --version` (empty when QEMU
/// cannot be run).
pub fn qemu_version() -> String {
    std::process::Command::new(QEMU_BINARY)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}
/// The virtio-serial port name qemu-ga listens on in the guest.
pub const AGENT_PORT_NAME: &str = "org.qemu.guest_agent.0";

/// The id of the shared guest RAM backend (only with vhost-user-blk views).
const GUEST_RAM_ID: &str = "guest-ram";
/// The serial of the scratch disk (`/sys/block/vdX/serial` in the guest).
pub const SCRATCH_SERIAL: &str = "cxl-lab-scratch";

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The full argv, program first.
pub fn argv(cfg: &QemuConfig) -> Vec<String> {
    let t = cfg.topology;
    let views = t.block_views();
    // vhost-user back ends map the guest RAM, so it must be shareable.
    let shared_ram = !views.is_empty();
    // A system-ram region is a NUMA node only when the guest has NUMA.
    let numa = t
        .region_layouts()
        .iter()
        .any(|r| r.mode == cxl_topology::DeviceMode::SystemRam);
    let view_names: Vec<&str> = views.iter().map(|(d, _)| d.name.as_str()).collect();
    [
        vec![QEMU_BINARY.to_owned()],
        name_args(cfg.run_dir),
        machine_args(&t.windows, shared_ram && !numa),
        cpu_and_ram_args(cfg.accel, &t.guest, shared_ram, numa),
        no_defaults_args(),
        boot_args(cfg.kernel, cfg.initrd, cfg.extra_append),
        console_args(cfg.run_dir),
        control_args(cfg.socket_dir),
        plugin_args(cfg.plugin.as_deref()),
        extras_args(cfg.extras),
        scratch_disk_args(&t.guest, cfg.run_dir),
        block_view_args(&view_names, cfg.socket_dir),
        memory_backend_args(&t.devices, cfg.devices),
        host_bridge_args(&t.host_bridges, &t.root_ports),
        port_args(&t.host_bridges, &t.root_ports, &t.switches),
        type3_args(&t.devices),
    ]
    .concat()
}

/// `-name cxl-lab-<run>`: the run directory's name tells QEMUs apart in `ps`.
fn name_args(run_dir: &Path) -> Vec<String> {
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    vec!["-name".into(), format!("cxl-lab-{name}")]
}

/// `-machine q35,cxl=on` with one CXL fixed memory window per topology
/// window (its host bridge targets, size and interleave granularity), and
/// the shared guest RAM backend when vhost-user needs it.
fn machine_args(windows: &[Window], shared_ram: bool) -> Vec<String> {
    let mut machine = "q35,cxl=on".to_owned();
    for (i, w) in windows.iter().enumerate() {
        for (j, target) in w.targets.iter().enumerate() {
            machine.push_str(&format!(",cxl-fmw.{i}.targets.{j}={target}"));
        }
        machine.push_str(&format!(
            ",cxl-fmw.{i}.size={},cxl-fmw.{i}.interleave-granularity={}",
            w.size, w.interleave_granularity
        ));
    }
    if shared_ram {
        machine.push_str(&format!(",memory-backend={GUEST_RAM_ID}"));
    }
    vec!["-machine".into(), machine]
}

/// Accelerator, CPU model, CPUs and RAM. `hypervisor=off`: region commit
/// fails with the hypervisor bit set. Shared RAM is a memfd backend.
///
/// `numa`: the guest RAM is NUMA node 0 (`-numa node`), so QEMU writes an
/// SRAT. Without one the kernel ignores NUMA altogether, and the node it
/// makes for each CXL window (from the CEDT, after the SRAT) is dropped:
/// system-ram regions would land in node 0 instead of a node of their own.
fn cpu_and_ram_args(accel: Accel, guest: &Guest, shared_ram: bool, numa: bool) -> Vec<String> {
    let mut a = owned(&[
        "-accel",
        accel.as_str(),
        "-cpu",
        "max,hypervisor=off",
        "-smp",
        &guest.cpus.to_string(),
        "-m",
        &guest.memory.to_string(),
    ]);
    if shared_ram {
        a.extend([
            "-object".into(),
            format!(
                "memory-backend-memfd,id={GUEST_RAM_ID},size={},share=on",
                guest.memory
            ),
        ]);
    } else if numa {
        a.extend([
            "-object".into(),
            format!("memory-backend-ram,id={GUEST_RAM_ID},size={}", guest.memory),
        ]);
    }
    if numa {
        a.extend([
            "-numa".into(),
            format!(
                "node,nodeid=0,cpus=0-{},memdev={GUEST_RAM_ID}",
                guest.cpus.saturating_sub(1)
            ),
        ]);
    }
    a
}

/// Nothing QEMU would add by itself (default devices, a config file, a
/// display), and exit rather than reboot, so a guest panic ends the run.
fn no_defaults_args() -> Vec<String> {
    owned(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
}

/// The kernel, initrd and kernel command line (the lab's words, then
/// `extra_append`).
fn boot_args(kernel: &Path, initrd: &Path, extra_append: &[String]) -> Vec<String> {
    let mut append = owned(&[
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "memhp_default_state=online",
        // Debian's kernel has STRICT_DEVMEM and IO_STRICT_DEVMEM: without
        // this, /dev/mem refuses to map a CXL range a dax device claims
        // (`dax-tester /dev/mem PHYS …`, FIO_MEM_DEVICE=/dev/mem). System
        // RAM stays refused either way.
        "iomem=relaxed",
        // Under TCG on a busy host the kernel's IO-APIC timer check can
        // miss its ticks and panic ("IO-APIC + timer doesn't work!"), seen
        // at load 15; the emulated timer is known to work.
        "no_timer_check",
    ]);
    append.extend(extra_append.iter().cloned());
    vec![
        "-kernel".into(),
        p(kernel),
        "-initrd".into(),
        p(initrd),
        "-append".into(),
        append.join(" "),
    ]
}

/// The serial console, logged to a file in the run directory.
fn console_args(run_dir: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("file,id=console,path={}", p(&console_log(run_dir))),
        "-serial".into(),
        "chardev:console".into(),
    ]
}

/// QMP, the guest agent's virtio-serial port and the pid file, all in the
/// socket directory.
fn control_args(socket_dir: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            p(&qmp_socket(socket_dir))
        ),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
        "-chardev".into(),
        format!(
            "socket,id=qga,path={},server=on,wait=off",
            p(&agent_socket(socket_dir))
        ),
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-device".into(),
        format!("virtserialport,bus=vser0.0,chardev=qga,name={AGENT_PORT_NAME}"),
        "-pidfile".into(),
        p(&pid_file(socket_dir)),
    ]
}

/// `-plugin` in timing mode, nothing otherwise.
fn plugin_args(plugin: Option<&str>) -> Vec<String> {
    plugin
        .map(|plugin| owned(&["-plugin", plugin]))
        .unwrap_or_default()
}

/// The image's extras directory, shared read-only over virtio-9p.
fn extras_args(extras: &Path) -> Vec<String> {
    vec![
        "-virtfs".into(),
        format!(
            "local,path={},mount_tag={},security_model=none,readonly=on",
            p(extras),
            crate::image::EXTRAS_TAG
        ),
    ]
}

/// The scratch disk in the run directory, when the guest has one; the
/// guest finds it by its serial.
fn scratch_disk_args(guest: &Guest, run_dir: &Path) -> Vec<String> {
    if guest.scratch_disk.bytes() == 0 {
        return Vec::new();
    }
    vec![
        "-drive".into(),
        format!(
            "file={},if=none,format=raw,id=scratch,cache=unsafe",
            p(&scratch_disk(run_dir))
        ),
        "-device".into(),
        format!("virtio-blk-pci,drive=scratch,serial={SCRATCH_SERIAL}"),
    ]
}

/// A vhost-user-blk disk per named device, on the simulator's socket. The
/// disks' serial is the device name: the simulator answers GET_ID.
fn block_view_args(devices: &[&str], socket_dir: &Path) -> Vec<String> {
    devices
        .iter()
        .flat_map(|name| {
            [
                "-chardev".into(),
                format!(
                    "socket,id=vublk-{name},path={}",
                    p(&vhost_user_blk_socket(socket_dir, name))
                ),
                "-device".into(),
                format!("vhost-user-blk-pci,chardev=vublk-{name},id=blk-{name}"),
            ]
        })
        .collect()
}

/// The shared file backends of every device's memory (`mem-<name>`) and
/// label storage area (`lsa-<name>`) over the files the simulator owns.
fn memory_backend_args(devices: &[Device], files: &[DeviceFiles]) -> Vec<String> {
    let mut a = Vec::new();
    for d in devices {
        let files = files
            .iter()
            .find(|f| f.name == d.name)
            .expect("backing files for every device");
        a.extend([
            "-object".into(),
            format!(
                "memory-backend-file,id=mem-{},share=on,mem-path={},size={}",
                d.name,
                p(&files.memory),
                d.size
            ),
        ]);
        if let (Some(lsa), Some(size)) = (&files.lsa, d.lsa_size) {
            a.extend([
                "-object".into(),
                format!(
                    "memory-backend-file,id=lsa-{},share=on,mem-path={},size={size}",
                    d.name,
                    p(lsa)
                ),
            ]);
        }
    }
    a
}

/// A `pxb-cxl` per host bridge on the root bus. A host bridge with one
/// root port has no HDM decoders in QEMU unless asked
/// (`hdm_for_passthrough`): the kernel then emulates one pass-through
/// decoder, and a second region below the bridge finds none free.
fn host_bridge_args(host_bridges: &[HostBridge], root_ports: &[RootPort]) -> Vec<String> {
    host_bridges
        .iter()
        .flat_map(|h| {
            let ports = root_ports
                .iter()
                .filter(|r| r.host_bridge == h.name)
                .count();
            [
                "-device".into(),
                format!(
                    "pxb-cxl,bus_nr={},bus=pcie.0,id={}{}",
                    h.bus_nr.expect("validated"),
                    h.name,
                    if ports == 1 {
                        ",hdm_for_passthrough=true"
                    } else {
                        ""
                    }
                ),
            ]
        })
        .collect()
}

/// The root ports of each host bridge (numbered per bridge), then each
/// switch's upstream port and its downstream ports (numbered per switch).
/// Slots are unique per chassis, so every root and downstream port gets
/// its own, counted across both.
fn port_args(
    host_bridges: &[HostBridge],
    root_ports: &[RootPort],
    switches: &[Switch],
) -> Vec<String> {
    let mut a = Vec::new();
    let mut slot = 2;
    for h in host_bridges {
        for (port, r) in root_ports
            .iter()
            .filter(|r| r.host_bridge == h.name)
            .enumerate()
        {
            a.extend([
                "-device".into(),
                format!(
                    "cxl-rp,port={port},bus={},id={},chassis=0,slot={slot}",
                    h.name, r.name
                ),
            ]);
            slot += 1;
        }
    }
    for s in switches {
        a.extend([
            "-device".into(),
            format!("cxl-upstream,bus={},id={}", s.root_port, s.name),
        ]);
        for (port, dsp) in s.downstream_ports.iter().enumerate() {
            a.extend([
                "-device".into(),
                format!(
                    "cxl-downstream,port={port},bus={},id={dsp},chassis=0,slot={slot}",
                    s.name
                ),
            ]);
            slot += 1;
        }
    }
    a
}

/// A `cxl-type3` per device on its port, its memory by kind (the backends
/// of [`memory_backend_args`]), and a distinct serial number: QEMU needs one
/// per device.
fn type3_args(devices: &[Device]) -> Vec<String> {
    devices
        .iter()
        .flat_map(|d| {
            let memory = match d.kind {
                DeviceKind::Volatile => format!("volatile-memdev=mem-{}", d.name),
                DeviceKind::Persistent => {
                    format!("persistent-memdev=mem-{0},lsa=lsa-{0}", d.name)
                }
                DeviceKind::Dynamic => {
                    format!(
                        "volatile-dc-memdev=mem-{},num-dc-regions={}",
                        d.name,
                        d.dc_regions.unwrap_or(1)
                    )
                }
            };
            [
                "-device".into(),
                format!(
                    "cxl-type3,bus={},{memory},id={},sn={}",
                    d.port,
                    d.name,
                    d.serial_number()
                ),
            ]
        })
        .collect()
}

/// The argv as one shell-quoted line for manual sessions.
pub fn shell_line(argv: &[String]) -> String {
    shell_words::join(argv)
}

#[cfg(test)]
pub(crate) mod tests {
    use cxl_topology::{ByteSize, GIB};

    use super::*;

    /// The default topology with a writable view of pmem0 and a read-only
    /// one of vmem0.
    pub(crate) fn with_block_views() -> Topology {
        Topology::parse(
            &format!(
                "{}\n[simulator]\nvhost_user_blk = [\"pmem0\", \"vmem0\"]\nvhost_user_blk_read_only = [\"vmem0\"]\n",
                cxl_topology::DEFAULT_TOPOLOGY_TOML
            ),
            "blk.toml",
        )
        .unwrap()
    }

    fn argv_for(t: &Topology) -> Vec<String> {
        argv_with(t, None)
    }

    fn argv_with(t: &Topology, plugin: Option<String>) -> Vec<String> {
        let run = Path::new("/run/cxl-lab/test");
        let devices = DeviceFiles::in_dir(t, &run.join("backing"));
        argv(&QemuConfig {
            topology: t,
            kernel: Path::new("/cache/images/KEY/vmlinuz"),
            initrd: Path::new("/cache/images/KEY/initrd.lz4"),
            extras: Path::new("/cache/images/KEY/extras"),
            run_dir: run,
            socket_dir: run,
            devices: &devices,
            accel: Accel::Tcg,
            extra_append: &[],
            plugin,
        })
    }

    #[test]
    fn default_topology_argv() {
        insta::assert_snapshot!(argv_for(&Topology::embedded_default()).join("\n"));
    }

    #[test]
    fn timing_mode_loads_the_plugin() {
        let plugin = crate::timing::plugin_option(
            Path::new("/target/debug/libcxl_memsim_plugin.so"),
            Path::new("/run/cxl-lab/test"),
            false,
        )
        .unwrap();
        insta::assert_snapshot!(argv_with(&Topology::embedded_default(), Some(plugin)).join("\n"));
    }

    /// Two host bridges, a switch under one, all three device kinds, and an
    /// interleaved window.
    fn switch_topology() -> Topology {
        Topology::parse(
            r#"
[guest]
cpus = 4
memory = "2G"
[[host_bridge]]
name = "hb0"
[[host_bridge]]
name = "hb1"
[[root_port]]
name = "rp0"
host_bridge = "hb0"
[[root_port]]
name = "rp1"
host_bridge = "hb1"
[[switch]]
name = "sw0"
root_port = "rp0"
downstream_ports = ["dsp0", "dsp1"]
[[device]]
name = "ram0"
kind = "volatile"
size = "512M"
port = "dsp0"
mode = "system-ram"
[[device]]
name = "pm0"
kind = "persistent"
size = "256M"
port = "dsp1"
[[device]]
name = "dcd0"
kind = "dynamic"
size = "512M"
port = "rp1"
dc_regions = 2
[[window]]
size = "4G"
targets = ["hb0"]
[[window]]
size = "8G"
targets = ["hb0", "hb1"]
interleave_granularity = "4K"
"#,
            "switch.toml",
        )
        .unwrap()
    }

    #[test]
    fn switch_topology_argv() {
        let t = switch_topology();
        insta::assert_snapshot!(argv_for(&t).join("\n"));
    }

    #[test]
    fn vhost_user_blk_topology_argv() {
        let t = with_block_views();
        let with = argv_for(&t);
        let without = argv_for(&Topology::embedded_default());
        // Only the shared RAM (and the machine's memory-backend=) and the
        // two disks (a chardev and a device each) are added.
        let added: Vec<&String> = with.iter().filter(|a| !without.contains(a)).collect();
        assert_eq!(added.len(), 6, "{added:#?}");
        assert_eq!(with.len(), without.len() + 2 + 2 * 4);
        insta::assert_snapshot!(with.join("\n"));
    }

    #[test]
    fn the_name_is_the_run_directory_s() {
        assert_eq!(
            name_args(Path::new("/run/cxl-lab/test")),
            ["-name", "cxl-lab-test"]
        );
    }

    #[test]
    fn each_window_becomes_a_fixed_memory_window_of_its_targets() {
        let t = switch_topology();
        assert_eq!(
            machine_args(&t.windows, false),
            [
                "-machine",
                "q35,cxl=on,\
                 cxl-fmw.0.targets.0=hb0,cxl-fmw.0.size=4G,cxl-fmw.0.interleave-granularity=8K,\
                 cxl-fmw.1.targets.0=hb0,cxl-fmw.1.targets.1=hb1,cxl-fmw.1.size=8G,\
                 cxl-fmw.1.interleave-granularity=4K"
            ]
        );
        assert_eq!(
            machine_args(&[], true),
            ["-machine", "q35,cxl=on,memory-backend=guest-ram"]
        );
    }

    #[test]
    fn a_numa_guest_has_its_ram_as_node_0() {
        let guest = Guest {
            cpus: 2,
            memory: ByteSize(GIB),
            ..Guest::default()
        };
        let numa = cpu_and_ram_args(Accel::Tcg, &guest, false, true);
        assert_eq!(
            numa[8..],
            [
                "-object",
                "memory-backend-ram,id=guest-ram,size=1G",
                "-numa",
                "node,nodeid=0,cpus=0-1,memdev=guest-ram"
            ]
        );
        let shared = cpu_and_ram_args(Accel::Tcg, &guest, true, true);
        assert_eq!(
            shared[9],
            "memory-backend-memfd,id=guest-ram,size=1G,share=on"
        );
        assert_eq!(shared[11], "node,nodeid=0,cpus=0-1,memdev=guest-ram");
        let tiering = Topology::load(Some(std::path::Path::new("tiering"))).unwrap();
        assert!(argv_for(&tiering).iter().any(|a| a == "-numa"));
        assert!(!argv_for(&Topology::embedded_default())
            .iter()
            .any(|a| a == "-numa"));
    }

    #[test]
    fn shared_ram_is_a_memfd_backend_of_the_guest_s_size() {
        let guest = Guest {
            cpus: 4,
            memory: ByteSize(2 * GIB),
            ..Guest::default()
        };
        let plain = [
            "-accel",
            "kvm",
            "-cpu",
            "max,hypervisor=off",
            "-smp",
            "4",
            "-m",
            "2G",
        ];
        assert_eq!(cpu_and_ram_args(Accel::Kvm, &guest, false, false), plain);
        let shared = cpu_and_ram_args(Accel::Kvm, &guest, true, false);
        assert_eq!(shared[..plain.len()], plain);
        assert_eq!(
            shared[plain.len()..],
            [
                "-object",
                "memory-backend-memfd,id=guest-ram,size=2G,share=on"
            ]
        );
    }

    #[test]
    fn no_default_devices_no_display_no_reboot() {
        assert_eq!(
            no_defaults_args(),
            [
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot"
            ]
        );
    }

    #[test]
    fn extra_kernel_words_follow_the_lab_s() {
        assert_eq!(
            boot_args(
                Path::new("/k/vmlinuz"),
                Path::new("/k/initrd"),
                &["cxl_acpi.dyndbg=+p".to_owned()]
            ),
            [
                "-kernel",
                "/k/vmlinuz",
                "-initrd",
                "/k/initrd",
                "-append",
                "console=ttyS0 quiet panic=-1 memhp_default_state=online iomem=relaxed no_timer_check cxl_acpi.dyndbg=+p"
            ]
        );
    }

    #[test]
    fn the_console_is_logged_in_the_run_dir_and_the_sockets_are_in_the_socket_dir() {
        assert_eq!(
            console_args(Path::new("/r")),
            [
                "-chardev",
                "file,id=console,path=/r/console.log",
                "-serial",
                "chardev:console"
            ]
        );
        assert_eq!(
            control_args(Path::new("/s")),
            [
                "-chardev",
                "socket,id=qmp,path=/s/qmp.sock,server=on,wait=off",
                "-mon",
                "chardev=qmp,mode=control",
                "-chardev",
                "socket,id=qga,path=/s/qga.sock,server=on,wait=off",
                "-device",
                "virtio-serial-pci,id=vser0",
                "-device",
                "virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0",
                "-pidfile",
                "/s/qemu.pid"
            ]
        );
    }

    #[test]
    fn the_plugin_only_in_timing_mode() {
        assert!(plugin_args(None).is_empty());
        assert_eq!(
            plugin_args(Some("/t/libp.so,socket=/s/plugin.sock")),
            ["-plugin", "/t/libp.so,socket=/s/plugin.sock"]
        );
    }

    #[test]
    fn extras_are_shared_read_only() {
        assert_eq!(
            extras_args(Path::new("/x")),
            [
                "-virtfs",
                "local,path=/x,mount_tag=cxl-lab-extras,security_model=none,readonly=on"
            ]
        );
    }

    #[test]
    fn a_scratch_disk_of_size_zero_is_left_out() {
        let none = Guest {
            scratch_disk: ByteSize(0),
            ..Guest::default()
        };
        assert!(scratch_disk_args(&none, Path::new("/r")).is_empty());
        assert_eq!(
            scratch_disk_args(&Guest::default(), Path::new("/r")),
            [
                "-drive",
                "file=/r/scratch.img,if=none,format=raw,id=scratch,cache=unsafe",
                "-device",
                "virtio-blk-pci,drive=scratch,serial=cxl-lab-scratch"
            ]
        );
    }

    #[test]
    fn each_block_view_is_a_vhost_user_blk_disk_on_its_socket() {
        assert!(block_view_args(&[], Path::new("/s")).is_empty());
        assert_eq!(
            block_view_args(&["pmem0", "vmem0"], Path::new("/s")),
            [
                "-chardev",
                "socket,id=vublk-pmem0,path=/s/vublk-pmem0.sock",
                "-device",
                "vhost-user-blk-pci,chardev=vublk-pmem0,id=blk-pmem0",
                "-chardev",
                "socket,id=vublk-vmem0,path=/s/vublk-vmem0.sock",
                "-device",
                "vhost-user-blk-pci,chardev=vublk-vmem0,id=blk-vmem0"
            ]
        );
    }

    #[test]
    fn devices_with_a_label_area_get_a_second_backend() {
        let t = Topology::embedded_default();
        let files = DeviceFiles::in_dir(&t, Path::new("/b"));
        assert_eq!(
            memory_backend_args(&t.devices, &files),
            [
                "-object",
                "memory-backend-file,id=mem-vmem0,share=on,mem-path=/b/vmem0.mem,size=256M",
                "-object",
                "memory-backend-file,id=mem-pmem0,share=on,mem-path=/b/pmem0.mem,size=256M",
                "-object",
                "memory-backend-file,id=lsa-pmem0,share=on,mem-path=/b/pmem0.lsa,size=1M"
            ]
        );
    }

    #[test]
    fn host_bridges_are_on_the_root_bus_at_their_bus_numbers() {
        let t = switch_topology();
        assert_eq!(
            host_bridge_args(&t.host_bridges, &t.root_ports),
            [
                "-device",
                "pxb-cxl,bus_nr=12,bus=pcie.0,id=hb0,hdm_for_passthrough=true",
                "-device",
                "pxb-cxl,bus_nr=44,bus=pcie.0,id=hb1,hdm_for_passthrough=true"
            ]
        );
        // Two root ports: the bridge has HDM decoders of its own.
        let t = Topology::embedded_default();
        assert_eq!(
            host_bridge_args(&t.host_bridges, &t.root_ports),
            ["-device", "pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1"]
        );
    }

    #[test]
    fn ports_are_numbered_per_parent_and_slots_across_all_ports() {
        let t = switch_topology();
        assert_eq!(
            port_args(&t.host_bridges, &t.root_ports, &t.switches),
            [
                "-device",
                "cxl-rp,port=0,bus=hb0,id=rp0,chassis=0,slot=2",
                "-device",
                "cxl-rp,port=0,bus=hb1,id=rp1,chassis=0,slot=3",
                "-device",
                "cxl-upstream,bus=rp0,id=sw0",
                "-device",
                "cxl-downstream,port=0,bus=sw0,id=dsp0,chassis=0,slot=4",
                "-device",
                "cxl-downstream,port=1,bus=sw0,id=dsp1,chassis=0,slot=5"
            ]
        );
        let t = Topology::embedded_default();
        assert_eq!(
            port_args(&t.host_bridges, &t.root_ports, &t.switches),
            [
                "-device",
                "cxl-rp,port=0,bus=cxl.1,id=rp0,chassis=0,slot=2",
                "-device",
                "cxl-rp,port=1,bus=cxl.1,id=rp1,chassis=0,slot=3"
            ]
        );
    }

    #[test]
    fn each_device_kind_names_its_backends_and_has_its_own_serial() {
        let t = switch_topology();
        assert_eq!(
            type3_args(&t.devices),
            [
                "-device",
                "cxl-type3,bus=dsp0,volatile-memdev=mem-ram0,id=ram0,sn=4096",
                "-device",
                "cxl-type3,bus=dsp1,persistent-memdev=mem-pm0,lsa=lsa-pm0,id=pm0,sn=4097",
                "-device",
                "cxl-type3,bus=rp1,volatile-dc-memdev=mem-dcd0,num-dc-regions=2,id=dcd0,sn=4098"
            ]
        );
    }

    #[test]
    fn shell_line_quotes_what_needs_it() {
        let line = shell_line(&[
            "qemu".into(),
            "-append".into(),
            "console=ttyS0 quiet".into(),
        ]);
        assert_eq!(line, "qemu -append 'console=ttyS0 quiet'");
    }
}
