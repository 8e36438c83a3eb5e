//! The CXL devices' memory: one file per type-3 device, mapped MAP_SHARED.
//! QEMU maps the same files (`memory-backend-file,share=on`), so guest
//! stores are visible here and our writes are visible to the guest.
//! Persistent devices keep their file across restarts; volatile and dynamic
//! ones start zeroed. Beside each file, `<device>.kind` records the kind
//! the file was made for, so a persistent file is never truncated because
//! the topology now calls its device volatile.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use cxl_topology::{DeviceKind, Topology};
use memmap2::MmapMut;

/// Errors preparing backing memory.
#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    #[error("Cannot create or open the backing file {path}.")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The backing file {path} of persistent device {device} has {found} bytes but the topology says {expected}; move the file away (its data belongs to another topology) or fix the device size.")]
    SizeMismatch {
        device: String,
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("The backing file {path} holds persistent data of device {device}, which the topology now makes {kind}; move the file away or rename the device.")]
    HoldsPersistentData {
        device: String,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("There is no room for the backing file {path} of device {device} ({size} bytes) on its filesystem; free that much space there, or run the lab on a filesystem with room (`lab` puts its run directories under $CXL_LAB_STATE). The files this start made are removed.")]
    NoSpace {
        device: String,
        path: PathBuf,
        size: u64,
    },
    #[error("Cannot reserve the blocks of the backing file {path}.")]
    Allocate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot map the backing file {path}.")]
    Map {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One device's memory.
pub struct DeviceMemory {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Start in the flat address space (devices back to back from 0).
    pub base: u64,
    pub persistent: bool,
    map: MmapMut,
    /// Kept open while the simulator runs: if the file is deleted under a
    /// running lab, `lab down` copies a persistent device's data back from
    /// this descriptor (/proc/PID/fd).
    _file: std::fs::File,
}

impl DeviceMemory {
    /// The memory as a slice: for setting up and checking files, not while
    /// the simulator serves (then the guest and the block view write it
    /// concurrently, which a shared reference must not see).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Raw base pointer, for the server's concurrent access (the guest
    /// writes this memory concurrently anyway; accesses are bytewise copies).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr() as *mut u8
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }
}

/// The path of a device's backing file in `dir`.
pub fn backing_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.mem"))
}

/// The file beside a device's backing file that records its kind.
pub fn kind_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.kind"))
}

/// Refuses to let a non-persistent device reuse (and so truncate) a file
/// that holds persistent data: one recorded as persistent, or a non-empty
/// one with no record (made before records were kept). Then records the
/// device's kind, before the data file is created or truncated.
fn check_and_record_kind(
    dir: &Path,
    device: &str,
    kind: DeviceKind,
    path: &Path,
) -> Result<(), BackingError> {
    let record = kind_path(dir, device);
    let recorded = std::fs::read_to_string(&record).ok();
    let recorded = recorded.as_deref().map(str::trim);
    if kind != DeviceKind::Persistent {
        let found = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let held_persistent = match recorded {
            Some(k) => k == "persistent",
            None => found > 0,
        };
        if held_persistent && found > 0 {
            return Err(BackingError::HoldsPersistentData {
                device: device.to_owned(),
                path: path.to_owned(),
                kind: kind.name(),
            });
        }
    }
    if recorded != Some(kind.name()) {
        std::fs::write(&record, format!("{}\n", kind.name())).map_err(|source| {
            BackingError::Open {
                path: record.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Reserves the disk blocks of `size` bytes of `file`, so that a full
/// filesystem fails here rather than as a SIGBUS in QEMU or the simulator
/// when the guest first writes a page. Keeps the file's data.
fn allocate(file: &std::fs::File, size: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        libc::off_t::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: posix_fallocate takes a descriptor that is open for the call
    // and two integers; it touches no memory of this process.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// Creates or opens every device's backing file, reserves its blocks and
/// maps it. On failure nothing it made is left: the files and kind records
/// it created are removed, and so are volatile devices' files (they hold
/// nothing to keep); persistent files that were there are kept as they were.
pub fn open_all(topology: &Topology, dir: &Path) -> Result<Vec<DeviceMemory>, BackingError> {
    std::fs::create_dir_all(dir).map_err(|source| BackingError::Open {
        path: dir.to_owned(),
        source,
    })?;
    let mut made = Vec::new();
    let result: Result<Vec<DeviceMemory>, BackingError> = topology
        .flat_offsets()
        .into_iter()
        .map(|(d, base)| open_one(dir, d, base, &mut made))
        .collect();
    if result.is_err() {
        for path in made {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

/// One device's file for [`open_all`]; pushes to `made` what a failure
/// must remove.
fn open_one(
    dir: &Path,
    d: &cxl_topology::Device,
    base: u64,
    made: &mut Vec<PathBuf>,
) -> Result<DeviceMemory, BackingError> {
    let path = backing_path(dir, &d.name);
    let persistent = d.kind == DeviceKind::Persistent;
    let size = d.size.bytes();
    let open_err = |source| BackingError::Open {
        path: path.clone(),
        source,
    };
    let record = kind_path(dir, &d.name);
    if !record.exists() {
        made.push(record);
    }
    check_and_record_kind(dir, &d.name, d.kind, &path)?;
    if !persistent || !path.exists() {
        made.push(path.clone());
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(!persistent)
        .open(&path)
        .map_err(open_err)?;
    let found = file.metadata().map_err(open_err)?.len();
    if persistent && found != 0 && found != size {
        return Err(BackingError::SizeMismatch {
            device: d.name.clone(),
            path,
            found,
            expected: size,
        });
    }
    if found != size {
        file.set_len(size).map_err(open_err)?;
    }
    let reserved = if d.sparse {
        Ok(())
    } else {
        allocate(&file, size)
    };
    reserved.map_err(|source| {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            BackingError::NoSpace {
                device: d.name.clone(),
                path: path.clone(),
                size,
            }
        } else {
            BackingError::Allocate {
                path: path.clone(),
                source,
            }
        }
    })?;
    // SAFETY: a file mapping is sound while the file is not
    // truncated under it and no reference sees its bytes change. The
    // file was sized above and nothing resizes a mapped file (QEMU
    // maps it at this size); its bytes do change under the map
    // (QEMU's stores are the point of sharing it), so while serving
    // the simulator accesses it through volatile slices, not
    // references.
    let map = unsafe { MmapMut::map_mut(&file) }.map_err(|source| BackingError::Map {
        path: path.clone(),
        source,
    })?;
    Ok(DeviceMemory {
        name: d.name.clone(),
        path,
        size,
        base,
        persistent,
        map,
        _file: file,
    })
}

/// Finds the device holding flat address `addr .. addr + len`.
pub fn locate(devices: &[DeviceMemory], addr: u64, len: u64) -> Option<(usize, u64)> {
    locate_in(devices.iter().map(|d| (d.base, d.size)), addr, len)
}

/// Finds the range holding `addr .. addr + len` among `ranges` of
/// (start, size): its index and the offset of `addr` in it.
pub fn locate_in(
    ranges: impl IntoIterator<Item = (u64, u64)>,
    addr: u64,
    len: u64,
) -> Option<(usize, u64)> {
    ranges
        .into_iter()
        .enumerate()
        .find_map(|(i, (start, size))| {
            let off = addr.checked_sub(start)?;
            (off.checked_add(len)? <= size).then_some((i, off))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_removes_what_it_made_and_keeps_persistent_data() {
        let dir = tempfile::tempdir().unwrap();
        let t = Topology::embedded_default();
        // pmem0 (made after vmem0) holds data of another size: refused.
        std::fs::write(backing_path(dir.path(), "pmem0"), [7u8; 4096]).unwrap();
        std::fs::write(kind_path(dir.path(), "pmem0"), "persistent\n").unwrap();
        let e = open_all(&t, dir.path()).err().expect("refused");
        assert!(matches!(e, BackingError::SizeMismatch { .. }), "{e}");
        assert!(
            !backing_path(dir.path(), "vmem0").exists(),
            "vmem0's file removed"
        );
        assert!(!kind_path(dir.path(), "vmem0").exists(), "and its record");
        assert_eq!(
            std::fs::read(backing_path(dir.path(), "pmem0")).unwrap(),
            [7u8; 4096]
        );
        assert!(kind_path(dir.path(), "pmem0").exists());
        // A file is allocated, not sparse: a full disk fails at start.
        std::fs::remove_file(backing_path(dir.path(), "pmem0")).unwrap();
        let devs = open_all(&t, dir.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&devs[0].path).unwrap();
        assert!(
            m.blocks() * 512 >= m.len(),
            "{} blocks for {} bytes",
            m.blocks(),
            m.len()
        );
        let e = BackingError::NoSpace {
            device: "pmem0".into(),
            path: "/s/pmem0.mem".into(),
            size: 1 << 28,
        };
        assert!(e.to_string().starts_with("There is no room for the backing file /s/pmem0.mem of device pmem0 (268435456 bytes) on its filesystem; free that much space there"), "{e}");
    }

    #[test]
    fn a_sparse_device_reserves_no_blocks() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut t = Topology::embedded_default();
        for d in &mut t.devices {
            d.sparse = d.name == "vmem0";
        }
        let devs = open_all(&t, dir.path()).unwrap();
        for d in &devs {
            let m = std::fs::metadata(&d.path).unwrap();
            let name = d.path.file_stem().unwrap().to_string_lossy().into_owned();
            assert_eq!(m.len(), d.size, "{name}");
            assert_eq!(
                m.blocks() == 0,
                name == "vmem0",
                "{name}: {} blocks",
                m.blocks()
            );
        }
    }

    #[test]
    fn persistent_files_keep_data_and_volatile_ones_are_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let t = Topology::embedded_default();
        {
            let mut devs = open_all(&t, dir.path()).unwrap();
            assert_eq!(devs.len(), 2);
            assert_eq!(devs[1].base, 256 << 20);
            devs[0].bytes_mut()[10] = 1;
            devs[1].bytes_mut()[10] = 2;
            devs[0].flush().unwrap();
            devs[1].flush().unwrap();
        }
        let devs = open_all(&t, dir.path()).unwrap();
        assert_eq!(devs[0].bytes()[10], 0, "volatile memory starts zeroed");
        assert_eq!(devs[1].bytes()[10], 2, "persistent memory keeps its data");
        assert_eq!(locate(&devs, (256 << 20) + 5, 8), Some((1, 5)));
        assert_eq!(locate(&devs, (512 << 20) - 4, 8), None);
        assert_eq!(
            locate(&devs, (256 << 20) - 4, 8),
            None,
            "across two devices"
        );
        assert_eq!(locate(&devs, u64::MAX, 2), None);
    }

    fn with_kind(t: &Topology, device: &str, kind: DeviceKind) -> Topology {
        let mut t = t.clone();
        for d in &mut t.devices {
            if d.name == device {
                d.kind = kind;
            }
        }
        t
    }

    #[test]
    fn a_persistent_file_is_not_truncated_when_its_device_turns_volatile() {
        let dir = tempfile::tempdir().unwrap();
        let t = Topology::embedded_default();
        {
            let mut devs = open_all(&t, dir.path()).unwrap();
            devs[1].bytes_mut()[10] = 2;
            devs[1].flush().unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(kind_path(dir.path(), "pmem0")).unwrap(),
            "persistent\n"
        );
        let volatile = with_kind(&t, "pmem0", DeviceKind::Volatile);
        let e = open_all(&volatile, dir.path()).err().expect("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("holds persistent data of device pmem0"),
            "{msg}"
        );
        assert!(msg.contains("now makes volatile"), "{msg}");
        assert!(
            msg.contains("move the file away or rename the device"),
            "{msg}"
        );
        let kept = std::fs::read(backing_path(dir.path(), "pmem0")).unwrap();
        assert_eq!(kept.len(), 256 << 20, "not truncated");
        assert_eq!(kept[10], 2, "data kept");

        // Once moved away, the device starts afresh as volatile.
        std::fs::rename(
            backing_path(dir.path(), "pmem0"),
            dir.path().join("saved.mem"),
        )
        .unwrap();
        let devs = open_all(&volatile, dir.path()).unwrap();
        assert_eq!(devs[1].bytes()[10], 0);
        assert_eq!(
            std::fs::read_to_string(kind_path(dir.path(), "pmem0")).unwrap(),
            "volatile\n"
        );
    }

    #[test]
    fn an_unrecorded_file_is_taken_as_persistent_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(backing_path(dir.path(), "vmem0"), [1u8; 4096]).unwrap();
        let e = open_all(&Topology::embedded_default(), dir.path())
            .err()
            .expect("refused");
        assert!(
            e.to_string()
                .contains("holds persistent data of device vmem0"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(backing_path(dir.path(), "vmem0")).unwrap(),
            [1u8; 4096]
        );
    }

    #[test]
    fn a_persistent_file_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pmem0.mem"), [0u8; 4096]).unwrap();
        let e = open_all(&Topology::embedded_default(), dir.path())
            .err()
            .expect("size mismatch");
        assert!(
            e.to_string()
                .contains("has 4096 bytes but the topology says 268435456"),
            "{e}"
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("pmem0.mem"))
                .unwrap()
                .len(),
            4096,
            "no data lost"
        );
    }
}
