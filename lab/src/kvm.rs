//! Whether KVM can run guests here. `/dev/kvm` existing is not enough: on
//! these machines a KVM guest dies with "KVM internal error". A short probe
//! boot decides, and the verdict is cached per host.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The cached verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub host: String,
    pub usable: bool,
    pub reason: String,
}

/// Boots under KVM, watching the output: Ok(true) when the guest's marker
/// appears, Err(line) as soon as QEMU reports a KVM error (it would
/// otherwise sit paused until the timeout).
fn probe_boot(kernel: &Path, initrd: &Path) -> Result<bool, String> {
    let log = std::env::temp_dir().join(format!("cxl-lab-kvm-probe-{}.log", std::process::id()));
    let file =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut child = Command::new(crate::qemu::QEMU_BINARY)
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "max,hypervisor=off",
            "-m",
            "512M",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args([
            "-bios",
            "qboot.rom",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1 cxl_lab.probe=1"])
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("cannot run QEMU: {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let result = loop {
        // The guest console is in this log: any byte may appear.
        let bytes = std::fs::read(&log).unwrap_or_default();
        let out = String::from_utf8_lossy(&bytes);
        if out.contains("CXL_LAB_PROBE_OK") {
            break Ok(true);
        }
        if let Some(line) = out.lines().find(|l| l.contains("KVM") || l.contains("kvm")) {
            break Err(line.trim().to_owned());
        }
        if matches!(child.try_wait(), Ok(Some(_))) || std::time::Instant::now() >= deadline {
            break Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    result
}

/// Identifies the host: kernel release, QEMU version and CPU model.
pub fn host_id() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or_default()
        .to_owned();
    let qemu = crate::qemu::qemu_version();
    format!("{} | {} | {}", release.trim(), qemu, cpu)
}

fn cache_file() -> std::path::PathBuf {
    crate::paths::cache_dir().join("kvm-verdict.json")
}

/// The cached verdict for this host, if any.
pub fn cached() -> Option<Verdict> {
    let v: Verdict = serde_json::from_slice(&std::fs::read(cache_file()).ok()?).ok()?;
    (v.host == host_id()).then_some(v)
}

/// Boots the image under KVM with `cxl_lab.probe=1` (the guest /init prints
/// a marker and powers off) and caches the verdict.
pub fn probe(kernel: &Path, initrd: &Path) -> Verdict {
    let host = host_id();
    let verdict = |usable: bool, reason: String| Verdict {
        host: host.clone(),
        usable,
        reason,
    };
    let v = if !Path::new("/dev/kvm").exists() {
        verdict(false, "/dev/kvm does not exist".into())
    } else {
        match probe_boot(kernel, initrd) {
            Ok(true) => verdict(true, "probe boot under KVM reached userspace".into()),
            Ok(false) => verdict(
                false,
                "the probe guest did not reach userspace within 30 s".into(),
            ),
            Err(line) => verdict(false, line),
        }
    };
    let _ = std::fs::create_dir_all(crate::paths::cache_dir());
    let _ = std::fs::write(
        cache_file(),
        serde_json::to_vec_pretty(&v).expect("verdict serialises"),
    );
    v
}
