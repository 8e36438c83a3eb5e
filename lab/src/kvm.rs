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

/// Identifies the host: kernel release, QEMU version and CPU model.
pub fn host_id() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or_default()
        .to_owned();
    let qemu = Command::new(crate::qemu::QEMU_BINARY)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default();
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
        let out = Command::new("timeout")
            .arg(Duration::from_secs(30).as_secs().to_string())
            .arg(crate::qemu::QEMU_BINARY)
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
            .args(["-no-reboot", "-serial", "stdio", "-kernel"])
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1 cxl_lab.probe=1"])
            .output();
        match out {
            Err(e) => verdict(false, format!("cannot run QEMU: {e}")),
            Ok(o) => {
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                if all.contains("CXL_LAB_PROBE_OK") {
                    verdict(true, "probe boot under KVM reached userspace".into())
                } else {
                    let line = all
                        .lines()
                        .find(|l| l.contains("KVM") || l.contains("kvm"))
                        .unwrap_or("the probe guest did not reach userspace")
                        .trim()
                        .to_owned();
                    verdict(false, line)
                }
            }
        }
    };
    let _ = std::fs::create_dir_all(crate::paths::cache_dir());
    let _ = std::fs::write(
        cache_file(),
        serde_json::to_vec_pretty(&v).expect("verdict serialises"),
    );
    v
}
