//! The QEMU command line, built from a topology in one place.
//!
//! Measured facts it encodes (DESIGN.md): region commit needs the guest CPU
//! to hide the hypervisor bit (`-cpu max,hypervisor=off`); every
//! `cxl-type3` needs a distinct `sn=`; the CXL memory is a
//! `memory-backend-file,share=on` over a file the simulator owns. A device
//! the topology also serves as a vhost-user-blk disk becomes a
//! `vhost-user-blk-pci` on the simulator's socket; vhost-user needs the
//! guest RAM shared with the back end, so only then is the RAM a
//! `memory-backend-memfd,share=on` (the default boot is untouched).

use std::path::{Path, PathBuf};

use cxl_topology::{DeviceKind, Topology};

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

/// Backing files of one type-3 device.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceFiles {
    pub name: String,
    /// The device memory (created by cxl-memsim).
    pub memory: PathBuf,
    /// The label storage area of persistent devices.
    pub lsa: Option<PathBuf>,
}

impl DeviceFiles {
    /// Every device's files in the run's backing directory: `<name>.mem`
    /// (the name cxl-memsim gives the memory it creates there) and, for a
    /// device with a label storage area, `<name>.lsa`.
    pub fn in_dir(topology: &Topology, backing_dir: &Path) -> Vec<DeviceFiles> {
        topology
            .devices
            .iter()
            .map(|d| DeviceFiles {
                name: d.name.clone(),
                memory: backing_dir.join(format!("{}.mem", d.name)),
                lsa: d
                    .lsa_size
                    .map(|_| backing_dir.join(format!("{}.lsa", d.name))),
            })
            .collect()
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
/// The virtio-serial port name qemu-ga listens on in the guest.
pub const AGENT_PORT_NAME: &str = "org.qemu.guest_agent.0";

/// Paths of the sockets (in the socket directory) and logs (in the run
/// directory).
pub fn qmp_socket(socket_dir: &Path) -> PathBuf {
    socket_dir.join("qmp.sock")
}
pub fn agent_socket(socket_dir: &Path) -> PathBuf {
    socket_dir.join("qga.sock")
}
pub fn console_log(run_dir: &Path) -> PathBuf {
    run_dir.join("console.log")
}
pub fn pid_file(socket_dir: &Path) -> PathBuf {
    socket_dir.join("qemu.pid")
}
pub fn scratch_disk(run_dir: &Path) -> PathBuf {
    run_dir.join("scratch.img")
}
/// The vhost-user socket on which the simulator serves `device` as a disk.
pub fn vhost_user_blk_socket(socket_dir: &Path, device: &str) -> PathBuf {
    socket_dir.join(format!("vublk-{device}.sock"))
}
/// The id of the shared guest RAM backend (only with vhost-user-blk views).
const GUEST_RAM_ID: &str = "guest-ram";
/// The serial of the scratch disk (`/sys/block/vdX/serial` in the guest).
pub const SCRATCH_SERIAL: &str = "cxl-lab-scratch";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The full argv, program first.
pub fn argv(cfg: &QemuConfig) -> Vec<String> {
    let t = cfg.topology;
    let mut a: Vec<String> = vec![QEMU_BINARY.into()];
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    let name = cfg
        .run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let views = t.block_views();
    let mut machine = "q35,cxl=on".to_owned();
    for (i, w) in t.windows.iter().enumerate() {
        for (j, target) in w.targets.iter().enumerate() {
            machine.push_str(&format!(",cxl-fmw.{i}.targets.{j}={target}"));
        }
        machine.push_str(&format!(
            ",cxl-fmw.{i}.size={},cxl-fmw.{i}.interleave-granularity={}",
            w.size, w.interleave_granularity
        ));
    }
    if !views.is_empty() {
        machine.push_str(&format!(",memory-backend={GUEST_RAM_ID}"));
    }
    let mut append = vec![
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "memhp_default_state=online",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    append.extend(cfg.extra_append.iter().cloned());

    push(&["-name", &format!("cxl-lab-{name}")]);
    push(&["-machine", &machine]);
    push(&["-accel", cfg.accel.as_str()]);
    push(&["-cpu", "max,hypervisor=off"]);
    push(&["-smp", &t.guest.cpus.to_string()]);
    push(&["-m", &t.guest.memory.to_string()]);
    if !views.is_empty() {
        push(&[
            "-object",
            &format!(
                "memory-backend-memfd,id={GUEST_RAM_ID},size={},share=on",
                t.guest.memory
            ),
        ]);
    }
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&[
        "-kernel",
        &p(cfg.kernel),
        "-initrd",
        &p(cfg.initrd),
        "-append",
        &append.join(" "),
    ]);
    push(&[
        "-chardev",
        &format!("file,id=console,path={}", p(&console_log(cfg.run_dir))),
    ]);
    push(&["-serial", "chardev:console"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=qmp,path={},server=on,wait=off",
            p(&qmp_socket(cfg.socket_dir))
        ),
    ]);
    push(&["-mon", "chardev=qmp,mode=control"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=qga,path={},server=on,wait=off",
            p(&agent_socket(cfg.socket_dir))
        ),
    ]);
    push(&["-device", "virtio-serial-pci,id=vser0"]);
    push(&[
        "-device",
        &format!("virtserialport,bus=vser0.0,chardev=qga,name={AGENT_PORT_NAME}"),
    ]);
    push(&["-pidfile", &p(&pid_file(cfg.socket_dir))]);
    if let Some(plugin) = &cfg.plugin {
        push(&["-plugin", plugin]);
    }
    push(&[
        "-virtfs",
        &format!(
            "local,path={},mount_tag={},security_model=none,readonly=on",
            p(cfg.extras),
            crate::image::EXTRAS_TAG
        ),
    ]);
    if t.guest.scratch_disk.bytes() > 0 {
        push(&[
            "-drive",
            &format!(
                "file={},if=none,format=raw,id=scratch,cache=unsafe",
                p(&scratch_disk(cfg.run_dir))
            ),
        ]);
        push(&[
            "-device",
            &format!("virtio-blk-pci,drive=scratch,serial={SCRATCH_SERIAL}"),
        ]);
    }

    // The disks' serial is the device name: the simulator answers GET_ID.
    for (d, _read_only) in &views {
        push(&[
            "-chardev",
            &format!(
                "socket,id=vublk-{},path={}",
                d.name,
                p(&vhost_user_blk_socket(cfg.socket_dir, &d.name))
            ),
        ]);
        push(&[
            "-device",
            &format!("vhost-user-blk-pci,chardev=vublk-{0},id=blk-{0}", d.name),
        ]);
    }

    for d in &t.devices {
        let files = cfg
            .devices
            .iter()
            .find(|f| f.name == d.name)
            .expect("backing files for every device");
        push(&[
            "-object",
            &format!(
                "memory-backend-file,id=mem-{},share=on,mem-path={},size={}",
                d.name,
                p(&files.memory),
                d.size
            ),
        ]);
        if let (Some(lsa), Some(size)) = (&files.lsa, d.lsa_size) {
            push(&[
                "-object",
                &format!(
                    "memory-backend-file,id=lsa-{},share=on,mem-path={},size={size}",
                    d.name,
                    p(lsa)
                ),
            ]);
        }
    }
    for h in &t.host_bridges {
        // A host bridge with one root port has no HDM decoders in QEMU
        // unless asked: the kernel then emulates a single pass-through
        // decoder, and a second region below the bridge finds none free.
        let passthrough = t
            .root_ports
            .iter()
            .filter(|r| r.host_bridge == h.name)
            .count()
            == 1;
        push(&[
            "-device",
            &format!(
                "pxb-cxl,bus_nr={},bus=pcie.0,id={}{}",
                h.bus_nr.expect("validated"),
                h.name,
                if passthrough {
                    ",hdm_for_passthrough=true"
                } else {
                    ""
                }
            ),
        ]);
    }
    // Slots are unique per chassis; every port gets its own.
    let mut slot = 2;
    for h in &t.host_bridges {
        for (port, r) in t
            .root_ports
            .iter()
            .filter(|r| r.host_bridge == h.name)
            .enumerate()
        {
            push(&[
                "-device",
                &format!(
                    "cxl-rp,port={port},bus={},id={},chassis=0,slot={slot}",
                    h.name, r.name
                ),
            ]);
            slot += 1;
        }
    }
    for s in &t.switches {
        push(&[
            "-device",
            &format!("cxl-upstream,bus={},id={}", s.root_port, s.name),
        ]);
        for (port, dsp) in s.downstream_ports.iter().enumerate() {
            push(&[
                "-device",
                &format!(
                    "cxl-downstream,port={port},bus={},id={dsp},chassis=0,slot={slot}",
                    s.name
                ),
            ]);
            slot += 1;
        }
    }
    for d in &t.devices {
        let memory = match d.kind {
            DeviceKind::Volatile => format!("volatile-memdev=mem-{}", d.name),
            DeviceKind::Persistent => format!("persistent-memdev=mem-{0},lsa=lsa-{0}", d.name),
            DeviceKind::Dynamic => {
                format!(
                    "volatile-dc-memdev=mem-{},num-dc-regions={}",
                    d.name,
                    d.dc_regions.unwrap_or(1)
                )
            }
        };
        push(&[
            "-device",
            &format!(
                "cxl-type3,bus={},{memory},id={},sn={}",
                d.port,
                d.name,
                d.serial_number()
            ),
        ]);
    }
    a
}

/// The argv as one shell-quoted line for manual sessions.
pub fn shell_line(argv: &[String]) -> String {
    shell_words::join(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        )
        .unwrap();
        insta::assert_snapshot!(argv_with(&Topology::embedded_default(), Some(plugin)).join("\n"));
    }

    #[test]
    fn switch_topology_argv() {
        let t = Topology::parse(
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
        .unwrap();
        insta::assert_snapshot!(argv_for(&t).join("\n"));
    }

    #[test]
    fn vhost_user_blk_topology_argv() {
        let t = crate::memsim::tests::with_block_views();
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
    fn device_files_live_in_the_backing_dir_and_only_persistent_ones_have_a_label_area() {
        let t = Topology::embedded_default();
        let files = DeviceFiles::in_dir(&t, Path::new("/r/backing"));
        assert_eq!(files.len(), t.devices.len());
        for (d, f) in t.devices.iter().zip(&files) {
            assert_eq!(f.name, d.name);
            assert_eq!(
                f.memory,
                Path::new("/r/backing").join(format!("{}.mem", d.name))
            );
            assert_eq!(
                f.lsa,
                d.lsa_size
                    .map(|_| Path::new("/r/backing").join(format!("{}.lsa", d.name)))
            );
        }
        assert!(
            files.iter().any(|f| f.lsa.is_some()) && files.iter().any(|f| f.lsa.is_none()),
            "the default topology has a volatile and a persistent device: {files:?}"
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
