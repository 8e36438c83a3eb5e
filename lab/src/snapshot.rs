//! Saved post-boot lab states: the first cold boot of a [`SnapshotKey`]
//! saves the VM to a file (QEMU file migration) once the guest has loaded
//! its modules and before any region exists; later `lab up` runs with the
//! same key start QEMU with `-incoming` from it, re-enumerate the guest's
//! CXL hierarchy and create the regions as after a cold boot.
//!
//! Why before regions: QEMU 10.0.2 has no migration state for any CXL
//! device (`-dump-vmstate` lists no `cxl-rp`, `cxl-type3`, switch ports
//! nor the pxb-cxl bridge), so after `-incoming` the CXL hierarchy is at
//! reset (root-port bus numbers and windows, type-3 BARs and command
//! register, every HDM decoder) while the guest kernel believes its old
//! enumeration: its CXL memory reads zero and drops writes. Memory onlined
//! as system RAM cannot be given back, so the guest must not have regions
//! yet; it then tears down its CXL side (cxl_acpi unbound, the devices
//! below the CXL host bridges removed), rescans PCI so the kernel
//! enumerates the reset hardware, binds cxl_acpi again, and the lab's
//! region set-up runs. Everything the guest caches about the devices
//! (memdevs, namespace labels, regions) is read again from the backing, so
//! it agrees with it by construction: persistent devices keep the data and
//! labels they hold now, and volatile devices are empty, as at save time.
//!
//! Measured with QEMU 10.0: the CXL device memory and label areas are
//! `memory-backend-file,share=on` over cxl-memsim's files, and the
//! `x-ignore-shared` capability leaves them out of the state file (a
//! default lab saves about 160 MB of guest RAM, not its 512 MiB of CXL
//! memory). `mapped-ram` together with `x-ignore-shared` saves, but the
//! load fails ("Error reading ramblock pc.ram pages, region has bad
//! alignment"), so the state is a plain stream. The 9p extras export
//! blocks migration while mounted: the guest unmounts it before the save
//! and mounts it again after either side resumes. The guest clock stood
//! still while saved: it is set after a restore.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qapi::qmp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::qga::{Agent, QgaError};
use crate::qmp::{Qmp, QmpError};

/// Errors saving, finding or restoring a saved lab state.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("Cannot read or write the saved lab state at {path}.")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The saved lab state description {path} cannot be read; remove it with `lab image snapshots --remove`.")]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("QEMU refused a migration command.")]
    Qmp(#[from] QmpError),
    #[error("QEMU's migration {direction} the state file ended as `{status}`: {error}")]
    Migration {
        direction: &'static str,
        status: String,
        error: String,
    },
    #[error("QEMU did not finish migrating {direction} the state file within {timeout:?}.")]
    Timeout {
        direction: &'static str,
        timeout: Duration,
    },
    #[error("The guest agent failed while preparing or resuming the guest.")]
    Agent(#[from] QgaError),
    #[error("`{command}` failed in the guest: {stderr}")]
    Guest { command: String, stderr: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Everything a saved state depends on: a state whose key differs from
/// the lab's is never used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotKey {
    pub image_key: String,
    /// The kernel file, with its size and modification time.
    pub kernel: String,
    /// SHA-256 of the effective topology (defaults filled in).
    pub topology: String,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu_version: String,
    pub lab_version: String,
    /// SHA-256 of QEMU's command line without what is the lab's own (its
    /// `-name`, run directory and socket paths): the machine, devices and
    /// kernel command line the guest was booted with ([`machine_digest`]).
    #[serde(default)]
    pub machine: String,
    pub cpus: u32,
    pub memory: String,
    pub timing: bool,
    pub accel: String,
}

impl SnapshotKey {
    /// The key's short digest: the name of its directory.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a key serialises");
        hex::encode(&Sha256::digest(json)[..10])
    }
}

/// The kernel file as a key part: path, size and modification time.
pub fn kernel_identity(kernel: &Path) -> String {
    let meta = std::fs::metadata(kernel).ok();
    let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{} ({size} B, mtime {mtime})", kernel.display())
}

/// SHA-256 of QEMU's `argv` with every `own` path (the lab's run and
/// socket directories) replaced by a placeholder and its `-name` left out:
/// two labs that differ only in name share it, while any change of the
/// machine, a device or the kernel command line (which a restored guest
/// would not see) changes it.
pub fn machine_digest(argv: &[String], own: &[&Path]) -> String {
    let mut hash = Sha256::new();
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if arg == "-name" {
            args.next();
            continue;
        }
        let mut arg = arg.clone();
        for (i, path) in own.iter().enumerate() {
            arg = arg.replace(&*path.to_string_lossy(), &format!("<own {i}>"));
        }
        hash.update(arg.as_bytes());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// SHA-256 of a topology's effective TOML.
pub fn topology_digest(toml: &str) -> String {
    hex::encode(Sha256::digest(toml.as_bytes()))
}

/// The first line of `qemu-system-x86_64 --version` (empty if it fails to
/// run: QEMU's start then reports the problem).
pub fn qemu_version() -> String {
    std::process::Command::new(crate::qemu::QEMU_BINARY)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// What a saved state needs besides the VM: its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub key: SnapshotKey,
    /// Seconds since the epoch.
    pub created: u64,
    /// The lab whose cold boot saved it (pruning keeps the newest few per
    /// lab; `lab image snapshots --name` filters on it). Any lab of the
    /// same key restores it.
    #[serde(default)]
    pub lab: String,
}

/// The root of every lab's saved states.
pub fn root() -> PathBuf {
    crate::paths::cache_dir().join("snapshots")
}

/// A saved state on disk.
#[derive(Debug, Clone)]
pub struct Saved {
    pub dir: PathBuf,
    pub meta: SnapshotMeta,
}

const META: &str = "meta.json";
const STATE: &str = "vm.state";

impl Saved {
    pub fn state_file(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    /// Removes this saved state.
    pub fn discard(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the state for `key` lives. States are shared by every lab of the
/// same key, whatever its name: the key holds everything the guest's RAM
/// depends on (the lab's name, sockets and backing files are not in it:
/// QEMU is started with the restoring lab's own, and the state is saved
/// before any region, so the CXL side is read again from that lab's
/// backing).
pub fn dir_for(root: &Path, key: &SnapshotKey) -> PathBuf {
    root.join(key.digest())
}

/// The saved state for exactly `key`, if there is one.
pub fn find(root: &Path, key: &SnapshotKey) -> Result<Option<Saved>, SnapshotError> {
    let dir = dir_for(root, key);
    let meta_path = dir.join(META);
    let text = match std::fs::read_to_string(&meta_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&meta_path)(e)),
    };
    let meta: SnapshotMeta = serde_json::from_str(&text).map_err(|source| SnapshotError::Meta {
        path: meta_path.clone(),
        source,
    })?;
    if meta.key != *key || !dir.join(STATE).is_file() {
        return Ok(None);
    }
    Ok(Some(Saved { dir, meta }))
}

/// The guest's 9p mount of the image extras (it blocks migration).
const EXTRAS_MOUNT: &str = "grep -q ' /extras 9p ' /proc/mounts || mount -t 9p -o trans=virtio,version=9p2000.L,ro cxl-lab-extras /extras";
const EXTRAS_UNMOUNT: &str = "! grep -q ' /extras 9p ' /proc/mounts || umount /extras";

async fn guest_sh(agent: &Agent, script: &str) -> Result<(), SnapshotError> {
    let out = agent
        .exec(
            "sh",
            &["-c".to_owned(), script.to_owned()],
            Duration::from_secs(30),
        )
        .await?;
    if out.success() {
        Ok(())
    } else {
        Err(SnapshotError::Guest {
            command: script.to_owned(),
            stderr: out.stderr.trim().to_owned(),
        })
    }
}

/// The capabilities both sides of the migration use.
fn capabilities() -> qmp::migrate_set_capabilities {
    qmp::migrate_set_capabilities {
        capabilities: vec![qmp::MigrationCapabilityStatus {
            capability: qmp::MigrationCapability::x_ignore_shared,
            state: true,
        }],
    }
}

/// Polls `query-migrate` until the migration ends.
async fn wait_migration(
    qmp_conn: &Qmp,
    direction: &'static str,
    timeout: Duration,
) -> Result<(), SnapshotError> {
    let deadline = Instant::now() + timeout;
    loop {
        let info = qmp_conn.execute(qmp::query_migrate {}).await?;
        match info.status {
            Some(qmp::MigrationStatus::completed) => return Ok(()),
            Some(
                s @ (qmp::MigrationStatus::failed
                | qmp::MigrationStatus::cancelled
                | qmp::MigrationStatus::cancelling),
            ) => {
                return Err(SnapshotError::Migration {
                    direction,
                    status: serde_json::to_value(s)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    error: info.error_desc.unwrap_or_default(),
                })
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(SnapshotError::Timeout { direction, timeout });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Saves the running lab into `dir` (made whole only at the end: a state
/// cut short is never found) once the guest has settled: its modules
/// loaded and the extras mounted (`settled_file` exists), and no region
/// made yet. The guest runs again afterwards, whether or not the save
/// worked.
pub async fn save(
    qmp_socket: &Path,
    agent: &Agent,
    settled_file: &str,
    dir: &Path,
    meta: &SnapshotMeta,
) -> Result<u64, SnapshotError> {
    guest_sh(
        agent,
        &format!("i=0; until [ -e {settled_file} ]; do i=$((i+1)); [ $i -le 600 ] || exit 1; sleep 0.1; done"),
    )
    .await?;
    guest_sh(agent, EXTRAS_UNMOUNT).await?;
    let result = save_stopped(qmp_socket, dir, meta).await;
    // The extras come back whatever the save did.
    let remount = guest_sh(agent, EXTRAS_MOUNT).await;
    let bytes = result?;
    remount?;
    Ok(bytes)
}

async fn save_stopped(
    qmp_socket: &Path,
    dir: &Path,
    meta: &SnapshotMeta,
) -> Result<u64, SnapshotError> {
    // Labs of different names may save the same key at once: each writes
    // a partial directory of its own (a stale one of a crashed lab is
    // pruned once old).
    let partial = partial_dir(dir);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(io_err(&partial))?;
    let qmp_conn = Qmp::connect(qmp_socket).await?;
    qmp_conn.execute(capabilities()).await?;
    qmp_conn.execute(qmp::stop {}).await?;
    let migrated = async {
        let uri = format!("file:{}", partial.join(STATE).display());
        qmp_conn
            .execute(qmp::migrate {
                uri: Some(uri),
                channels: None,
                detach: None,
                resume: None,
            })
            .await?;
        wait_migration(&qmp_conn, "to", Duration::from_secs(120)).await
    }
    .await;
    let cont = qmp_conn.execute(qmp::cont {}).await;
    if let Err(e) = migrated {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    cont?;
    let meta_path = partial.join(META);
    std::fs::write(
        &meta_path,
        serde_json::to_vec_pretty(meta).expect("meta serialises"),
    )
    .map_err(io_err(&meta_path))?;
    // A lab that saved the same key meanwhile is replaced: the newest cold
    // boot wins (a lab restoring the old one has its file open already).
    if std::fs::rename(&partial, dir).is_err() {
        let _ = std::fs::remove_dir_all(dir);
        if let Err(e) = std::fs::rename(&partial, dir) {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(io_err(dir)(e));
        }
    }
    Ok(dir_size(dir))
}

/// The directory a save writes before it is made whole under `dir`: one
/// per process, so two labs saving one key never share it.
fn partial_dir(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!("{name}{PARTIAL}{}", std::process::id()))
}

/// What names a partial state directory (`<digest>.partial-<pid>`).
const PARTIAL: &str = ".partial-";
/// A partial state older than this belongs to a lab that died saving.
const STALE_PARTIAL: Duration = Duration::from_secs(600);

/// Loads a saved state into a QEMU started with `-incoming defer`, and
/// lets the guest run.
pub async fn incoming(qmp_conn: &Qmp, saved: &Saved) -> Result<(), SnapshotError> {
    qmp_conn.execute(capabilities()).await?;
    qmp_conn
        .execute(qmp::migrate_incoming {
            uri: Some(format!("file:{}", saved.state_file().display())),
            channels: None,
            exit_on_error: None,
        })
        .await?;
    wait_migration(qmp_conn, "from", Duration::from_secs(120)).await?;
    // The state was saved stopped, so the guest comes back paused.
    qmp_conn.execute(qmp::cont {}).await?;
    Ok(())
}

/// The guest script that makes the kernel enumerate the CXL hierarchy
/// again, as QEMU has reset it: cxl_acpi unbound (the CXL root, its ports
/// and decoders go), every PCI device below the CXL host bridges (root
/// buses `host_bridge_buses`) removed, those root buses rescanned (bus
/// numbers, windows and BARs assigned anew; cxl_pci probes the memdevs:
/// a bus's own rescan, not the whole PCI tree's, which reads every other
/// device's config space again under TCG), cxl_acpi bound again (its
/// probe rescans the CXL bus, so cxl_mem finds the ports).
pub fn reenumerate_script(host_bridge_buses: &[u8]) -> String {
    let devices: Vec<String> = host_bridge_buses
        .iter()
        .map(|b| format!("/sys/bus/pci/devices/0000:{b:02x}:*"))
        .collect();
    let buses: Vec<String> = host_bridge_buses
        .iter()
        .map(|b| format!("/sys/class/pci_bus/0000:{b:02x}"))
        .collect();
    format!(
        "set -e; drv=/sys/bus/platform/drivers/cxl_acpi; \
root=$(cd $drv && ls -d ACPI0017:* | head -n 1); \
[ -n \"$root\" ] || {{ echo 'cxl_acpi is bound to no ACPI0017 device' >&2; exit 1; }}; \
echo \"$root\" > $drv/unbind; \
for d in {}; do [ ! -e \"$d/remove\" ] || echo 1 > \"$d/remove\"; done; \
all=; for b in {}; do if [ -e \"$b/rescan\" ]; then echo 1 > \"$b/rescan\"; else all=1; fi; done; \
[ -z \"$all\" ] || echo 1 > /sys/bus/pci/rescan; \
echo \"$root\" > $drv/bind",
        devices.join(" "),
        buses.join(" ")
    )
}

/// After a restore: the guest clock to the host's, the extras mounted
/// (beside the rest: the mount takes a tenth of a second under TCG), and
/// the CXL hierarchy enumerated again ([`reenumerate_script`]).
pub async fn resume_guest(agent: &Agent, host_bridge_buses: &[u8]) -> Result<(), SnapshotError> {
    // Not guest-set-time: after setting the clock qemu-ga runs
    // /sbin/hwclock, which the image lacks, and reports failure.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    guest_sh(
        agent,
        &format!(
            "{{ {EXTRAS_MOUNT}; }} & mount=$!; date -u -s @{now} >/dev/null; {}; wait $mount",
            reenumerate_script(host_bridge_buses)
        ),
    )
    .await
}

fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                // Allocated bytes: the state and memory copies are sparse.
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// One saved state, as `lab image snapshots` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub lab: String,
    pub dir: PathBuf,
    pub created: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// Every saved state under `root`, with stale partial ones (`created`
/// 0, so pruning removes them first); a partial state still being
/// written is left out.
pub fn list(root: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let Ok(states) = std::fs::read_dir(root) else {
        return out;
    };
    for s in states.flatten() {
        let dir = s.path();
        if !dir.is_dir() {
            continue;
        }
        let name = s.file_name().to_string_lossy().into_owned();
        let meta = std::fs::read_to_string(dir.join(META))
            .ok()
            .and_then(|t| serde_json::from_str::<SnapshotMeta>(&t).ok());
        // Without a description it is a partial state, or a lab directory
        // of the layout before states were shared by lab names (which no
        // `lab up` finds any more): both are listed as created 0.
        if meta.is_none() && name.contains(PARTIAL) {
            let age = s
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if age < STALE_PARTIAL {
                continue;
            }
        }
        out.push(Entry {
            lab: meta.as_ref().map(|m| m.lab.clone()).unwrap_or_default(),
            bytes: dir_size(&dir),
            created: meta.map(|m| m.created).unwrap_or(0),
            dir,
        });
    }
    out.sort_by(|a, b| (&a.lab, b.created).cmp(&(&b.lab, a.created)));
    out
}

/// Saved states kept per lab.
pub const KEEP_PER_LAB: usize = 3;
/// The most bytes all saved states may take.
pub const SIZE_CAP: u64 = 4 << 30;

/// Which entries pruning removes: beyond the newest `keep` of each lab,
/// then the oldest overall until the rest fit in `cap` bytes.
pub fn prune_plan(entries: &[Entry], keep: usize, cap: u64) -> Vec<PathBuf> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.created));
    let mut kept: Vec<&Entry> = Vec::new();
    let mut removed = Vec::new();
    for e in sorted {
        let same_lab = kept.iter().filter(|k| k.lab == e.lab).count();
        if e.created == 0 || same_lab >= keep {
            removed.push(e.dir.clone());
        } else {
            kept.push(e);
        }
    }
    // `kept` is newest first: drop from its end.
    let mut total: u64 = kept.iter().map(|e| e.bytes).sum();
    while total > cap {
        let Some(e) = kept.pop() else { break };
        total -= e.bytes;
        removed.push(e.dir.clone());
    }
    removed
}

/// Prunes the saved states under `root`, never the one at `keep_dir`;
/// returns what it removed.
pub fn prune(root: &Path, keep_dir: &Path) -> Vec<PathBuf> {
    let removed: Vec<PathBuf> = prune_plan(&list(root), KEEP_PER_LAB, SIZE_CAP)
        .into_iter()
        .filter(|d| d != keep_dir)
        .collect();
    for d in &removed {
        let _ = std::fs::remove_dir_all(d);
    }
    removed
}

/// Removes every saved state (those lab `lab` saved, when it is given).
pub fn remove(root: &Path, lab: Option<&str>) -> Vec<Entry> {
    let gone: Vec<Entry> = list(root)
        .into_iter()
        .filter(|e| lab.is_none_or(|l| e.lab == l))
        .collect();
    for e in &gone {
        let _ = std::fs::remove_dir_all(&e.dir);
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SnapshotKey {
        SnapshotKey {
            image_key: "img".into(),
            kernel: "/k (1 B, mtime 2)".into(),
            topology: topology_digest("a = 1"),
            qemu_version: "QEMU emulator version 10.0.2".into(),
            lab_version: "0.1.0".into(),
            machine: "m".into(),
            cpus: 2,
            memory: "1G".into(),
            timing: false,
            accel: "tcg".into(),
        }
    }

    #[test]
    fn every_key_part_changes_the_digest() {
        let base = key();
        let variants = [
            SnapshotKey {
                image_key: "other".into(),
                ..base.clone()
            },
            SnapshotKey {
                kernel: "/k (1 B, mtime 3)".into(),
                ..base.clone()
            },
            SnapshotKey {
                topology: topology_digest("a = 2"),
                ..base.clone()
            },
            SnapshotKey {
                qemu_version: "QEMU emulator version 10.1.0".into(),
                ..base.clone()
            },
            SnapshotKey {
                lab_version: "0.2.0".into(),
                ..base.clone()
            },
            SnapshotKey {
                machine: "n".into(),
                ..base.clone()
            },
            SnapshotKey {
                cpus: 4,
                ..base.clone()
            },
            SnapshotKey {
                memory: "2G".into(),
                ..base.clone()
            },
            SnapshotKey {
                timing: true,
                ..base.clone()
            },
            SnapshotKey {
                accel: "kvm".into(),
                ..base.clone()
            },
        ];
        for v in &variants {
            assert_ne!(v.digest(), base.digest(), "{v:?}");
        }
        assert_eq!(key().digest(), base.digest(), "a key's digest is stable");
    }

    fn meta(k: SnapshotKey) -> SnapshotMeta {
        SnapshotMeta {
            key: k,
            created: 1,
            lab: "lab".into(),
        }
    }

    #[test]
    fn a_state_of_another_key_is_never_found() {
        let root = tempfile::tempdir().unwrap();
        let k = key();
        let dir = dir_for(root.path(), &k);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE), b"state").unwrap();
        std::fs::write(
            dir.join(META),
            serde_json::to_vec(&meta(k.clone())).unwrap(),
        )
        .unwrap();
        assert!(find(root.path(), &k).unwrap().is_some());
        let changed = SnapshotKey {
            topology: topology_digest("b = 1"),
            ..k.clone()
        };
        assert!(find(root.path(), &changed).unwrap().is_none());
        // A description whose key differs from its directory's digest.
        std::fs::write(
            dir.join(META),
            serde_json::to_vec(&meta(changed.clone())).unwrap(),
        )
        .unwrap();
        assert!(find(root.path(), &k).unwrap().is_none());
        std::fs::remove_file(dir.join(STATE)).unwrap();
        assert!(
            find(root.path(), &changed).unwrap().is_none(),
            "no state file"
        );
    }

    #[test]
    fn reenumeration_removes_only_the_cxl_host_bridges_devices() {
        let script = reenumerate_script(&[12, 44]);
        assert!(
            script.contains(
                "for d in /sys/bus/pci/devices/0000:0c:* /sys/bus/pci/devices/0000:2c:*;"
            ),
            "{script}"
        );
        assert!(
            script.contains("for b in /sys/class/pci_bus/0000:0c /sys/class/pci_bus/0000:2c;"),
            "each host bridge's root bus is rescanned: {script}"
        );
        assert_eq!(
            script.matches("/sys/bus/pci/rescan").count(),
            1,
            "the whole tree's rescan at most once, for buses without their own: {script}"
        );
        // cxl_acpi goes before the devices and comes back after the rescan.
        let at = |what: &str| {
            script
                .find(what)
                .unwrap_or_else(|| panic!("{what} in {script}"))
        };
        assert!(
            at("/unbind") < at("/remove")
                && at("/remove") < at("/rescan")
                && at("/rescan") < at("/bind")
        );
    }

    #[test]
    fn listing_names_the_saving_lab_and_skips_a_save_in_progress() {
        let root = tempfile::tempdir().unwrap();
        let k = key();
        let dir = dir_for(root.path(), &k);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE), b"state").unwrap();
        std::fs::write(dir.join(META), serde_json::to_vec(&meta(k)).unwrap()).unwrap();
        // Another lab saving right now.
        let saving = partial_dir(&dir);
        std::fs::create_dir_all(&saving).unwrap();
        let listed = list(root.path());
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!((listed[0].lab.as_str(), listed[0].created), ("lab", 1));
        assert_eq!(listed[0].dir, dir);
        // A partial directory of a lab that died saving long ago is listed
        // as created 0, which pruning removes first.
        let old = std::time::SystemTime::now() - STALE_PARTIAL - Duration::from_secs(1);
        std::fs::File::open(&saving)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let listed = list(root.path());
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed.iter().any(|e| e.dir == saving && e.created == 0));
        assert_eq!(remove(root.path(), Some("other")).len(), 0);
        assert_eq!(remove(root.path(), Some("lab")).len(), 1);
        assert!(!dir.exists());
    }

    #[test]
    fn the_machine_digest_ignores_only_what_is_the_labs_own() {
        let argv = |name: &str, dir: &str, append: &str| -> Vec<String> {
            [
                "qemu-system-x86_64",
                "-name",
                &format!("cxl-lab-{name}"),
                "-append",
                append,
                "-chardev",
                &format!("socket,id=qmp,path={dir}/qmp.sock,server=on"),
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let (a, b) = (Path::new("/state/a"), Path::new("/state/b"));
        let one = machine_digest(&argv("a", "/state/a", "quiet"), &[a]);
        assert_eq!(one, machine_digest(&argv("b", "/state/b", "quiet"), &[b]));
        assert_ne!(
            one,
            machine_digest(&argv("a", "/state/a", "quiet no_timer_check"), &[a]),
            "a changed kernel command line is another key"
        );
    }

    fn entry(lab: &str, created: u64, bytes: u64) -> Entry {
        Entry {
            lab: lab.into(),
            dir: PathBuf::from(format!("/s/{lab}/{created}")),
            created,
            bytes,
        }
    }

    #[test]
    fn pruning_keeps_the_newest_per_lab_within_the_cap() {
        let entries = vec![
            entry("a", 1, 10),
            entry("a", 2, 10),
            entry("a", 3, 10),
            entry("b", 4, 10),
            entry("b", 0, 10),
        ];
        let removed = prune_plan(&entries, 2, 1000);
        assert_eq!(
            removed,
            vec![PathBuf::from("/s/a/1"), PathBuf::from("/s/b/0")],
            "a partial state and the oldest beyond two per lab"
        );
        // Over the cap: the oldest kept go until the rest fit.
        let removed = prune_plan(&entries, 2, 20);
        assert_eq!(
            removed,
            vec![
                PathBuf::from("/s/a/1"),
                PathBuf::from("/s/b/0"),
                PathBuf::from("/s/a/2")
            ]
        );
    }
}
