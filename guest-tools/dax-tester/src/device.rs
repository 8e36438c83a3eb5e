//! Opening a device-dax (or any mappable file), checking the range against
//! its size and alignment, and mapping it (MAP_SYNC first, then MAP_SHARED).
//! `/dev/mem` takes a physical offset: the range is checked against
//! `/proc/iomem` (one CXL region's device-dax memory, never System RAM)
//! and mapped MAP_SHARED by the `devmem` crate.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

const PAGE: u64 = 4096;
const DEFAULT_DAX_ALIGN: u64 = 2 << 20;

/// Why the device range cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("Device {0} does not exist.")]
    Missing(PathBuf),
    #[error("Cannot open {path} for reading and writing")]
    Open { path: PathBuf, source: io::Error },
    #[error("{0} is neither a regular file, a device-dax character device (no size in /sys/dev/char/MAJ:MIN/size) nor /dev/mem.")]
    NotDax(PathBuf),
    #[error(
        "The range {offset:#x} + {size:#x} runs past the end of {path} ({device_size:#x} bytes)."
    )]
    PastEnd {
        path: PathBuf,
        offset: u64,
        size: u64,
        device_size: u64,
    },
    #[error("The range is empty: give a size greater than zero.")]
    Empty,
    #[error(transparent)]
    Iomem(#[from] devmem::ReadError),
    /// The refusal borrows the `/proc/iomem` text, kept for the life of
    /// the process; boxed, as it is large.
    #[error(transparent)]
    DevMemRange(Box<devmem::RangeError<'static>>),
    #[error(transparent)]
    DevMemMap(#[from] devmem::MapError),
    #[error("Cannot map {len:#x} bytes of {path} at offset {offset:#x} (alignment {align:#x})")]
    Map {
        path: PathBuf,
        offset: u64,
        len: u64,
        align: u64,
        source: io::Error,
    },
}

/// What kind of object is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    DeviceDax,
    File,
    /// `/dev/mem`: the offset is a physical address.
    DevMem,
}

/// How the range was mapped, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct MapInfo {
    /// `MAP_SHARED_VALIDATE|MAP_SYNC` or `MAP_SHARED`.
    pub flags: &'static str,
    pub map_sync: bool,
    /// Why MAP_SYNC was not used, when it was not.
    pub fallback_reason: Option<String>,
    /// Device offset and length actually mapped (aligned).
    pub mapped_offset: u64,
    pub mapped_len: u64,
}

/// The device and the range under test.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub path: String,
    pub kind: Kind,
    pub device_size: u64,
    pub align: u64,
    pub offset: u64,
    pub size: u64,
    pub map: MapInfo,
    /// For `/dev/mem`: where the range lies in `/proc/iomem`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical: Option<Physical>,
}

/// A `/proc/iomem` entry: name and inclusive range.
#[derive(Debug, Clone, Serialize)]
pub struct IomemEntry {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

impl From<devmem::Entry<'_>> for IomemEntry {
    fn from(e: devmem::Entry<'_>) -> Self {
        IomemEntry {
            name: e.name.to_owned(),
            start: e.start,
            end: e.end,
        }
    }
}

/// The CXL window, region and device-dax a `/dev/mem` range lies in.
#[derive(Debug, Clone, Serialize)]
pub struct Physical {
    pub window: IomemEntry,
    pub region: IomemEntry,
    /// `None` in a region nothing has claimed.
    pub dax: Option<IomemEntry>,
}

/// One shared mapping; unmapped on drop.
pub struct Mapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: a Mapping owns its address range, which is process-wide shared
// memory usable from any thread; through `&Mapping` nothing dereferences
// `addr`, and `drop` unmaps it once. Accesses to the memory go through raw
// pointers whose users synchronise (atomics, or one thread per slice).
unsafe impl Send for Mapping {}
// SAFETY: as for Send: `&Mapping` gives no access to the memory itself.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `map` builds a Mapping only from a successful mmap of
        // exactly `len` bytes at `addr`, and this is its only unmap; pointers
        // into it are documented as valid only while it lives.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// The opened device with the range under test mapped.
pub struct Device {
    file: File,
    mapping: Mapping,
    /// Address of the first byte of the range.
    base: *mut u8,
    pub info: DeviceInfo,
}

// SAFETY: a Device is a File (Send and Sync), a Mapping (see above) and
// `base`, a pointer into that mapping that the Device never dereferences
// itself; the modes that do synchronise their own accesses.
unsafe impl Send for Device {}
// SAFETY: as for Send: `&Device` reads only `base`'s value, never its target.
unsafe impl Sync for Device {}

/// Size and alignment of the object behind `file`.
fn geometry(path: &Path, file: &File) -> Result<(Kind, u64, u64), DeviceError> {
    let meta = file.metadata().map_err(|source| DeviceError::Open {
        path: path.into(),
        source,
    })?;
    if meta.file_type().is_file() {
        return Ok((Kind::File, meta.len(), PAGE));
    }
    if meta.file_type().is_char_device() && devmem::is_dev_mem(meta.rdev()) {
        // The range is checked against /proc/iomem, not a size.
        return Ok((Kind::DevMem, u64::MAX, PAGE));
    }
    if meta.file_type().is_char_device() {
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let dir = format!("/sys/dev/char/{major}:{minor}");
        let read = |name: &str| -> Option<u64> {
            let text = std::fs::read_to_string(format!("{dir}/{name}")).ok()?;
            crate::size::parse_size(text.trim()).ok()
        };
        let size = read("size").ok_or_else(|| DeviceError::NotDax(path.into()))?;
        let align = read("align")
            .filter(|a| a.is_power_of_two())
            .unwrap_or(DEFAULT_DAX_ALIGN)
            .max(PAGE);
        return Ok((Kind::DeviceDax, size, align));
    }
    Err(DeviceError::NotDax(path.into()))
}

fn map(file: &File, offset: u64, len: u64, sync: bool) -> io::Result<Mapping> {
    let flags = if sync {
        libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC
    } else {
        libc::MAP_SHARED
    };
    // SAFETY: a null hint lets the kernel pick an unused range, so no
    // existing mapping is replaced; `file` keeps the fd open for the call, and
    // the result is checked against MAP_FAILED before use.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Mapping {
        addr: addr.cast(),
        len: len as usize,
    })
}

/// Checks a `/dev/mem` range against `/proc/iomem`.
fn place_physical(offset: u64, size: u64) -> Result<devmem::Placement<'static>, DeviceError> {
    // Kept for the life of the process (256 KiB per /dev/mem open): a
    // refusal borrows the text and travels up to main.
    let buf = Vec::leak(vec![0u8; devmem::IOMEM_MAX]);
    let text = devmem::read_iomem(buf)?;
    devmem::check(devmem::Iomem::new(text), offset, size)
        .map_err(|e| DeviceError::DevMemRange(Box::new(e)))
}

impl Device {
    /// Opens `path` and maps `[offset, offset + size)`, aligned outwards to
    /// the device alignment.
    pub fn open(path: &Path, offset: u64, size: u64) -> Result<Device, DeviceError> {
        if size == 0 {
            return Err(DeviceError::Empty);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    DeviceError::Missing(path.into())
                } else {
                    DeviceError::Open {
                        path: path.into(),
                        source,
                    }
                }
            })?;
        let (kind, mut device_size, align) = geometry(path, &file)?;
        let physical = match kind {
            Kind::DevMem => {
                let placement = place_physical(offset, size)?;
                device_size = placement.area().size();
                Some(placement)
            }
            _ => None,
        };
        let limit = match kind {
            Kind::DevMem => u64::MAX,
            _ => device_size,
        };
        let end = offset
            .checked_add(size)
            .filter(|&e| e <= limit)
            .ok_or(DeviceError::PastEnd {
                path: path.into(),
                offset,
                size,
                device_size,
            })?;
        let map_start = offset / align * align;
        let mut map_end = end.div_ceil(align) * align;
        if kind == Kind::File {
            map_end = map_end.min(device_size.div_ceil(PAGE) * PAGE);
        }
        let map_len = map_end - map_start;
        let mapped = match kind {
            Kind::DevMem => Err(None),
            _ => map(&file, map_start, map_len, true).map_err(Some),
        };
        let (mapping, map_sync, fallback_reason) = match mapped {
            Ok(m) => (m, true, None),
            Err(None) => {
                let addr = devmem::map(file.as_raw_fd(), map_start, map_len)?;
                let m = Mapping {
                    addr,
                    len: map_len as usize,
                };
                let why = "/dev/mem maps physical memory directly and has no MAP_SYNC; the persist check's CPU flushes write the lines back".to_owned();
                (m, false, Some(why))
            }
            Err(Some(sync_err)) => {
                let m =
                    map(&file, map_start, map_len, false).map_err(|source| DeviceError::Map {
                        path: path.into(),
                        offset: map_start,
                        len: map_len,
                        align,
                        source,
                    })?;
                let why = match sync_err.raw_os_error() {
                    Some(libc::EOPNOTSUPP) => format!(
                        "MAP_SHARED_VALIDATE|MAP_SYNC refused with EOPNOTSUPP: this {} is not DAX-capable for MAP_SYNC; CPU flushes alone do not guarantee persistence here",
                        if kind == Kind::File { "file's filesystem" } else { "device" }
                    ),
                    _ => format!("MAP_SHARED_VALIDATE|MAP_SYNC failed ({sync_err}); mapped with MAP_SHARED"),
                };
                (m, false, Some(why))
            }
        };
        // SAFETY: map_start <= offset < end <= map_end, so `offset - map_start`
        // is inside the `map_len` bytes just mapped at `mapping.addr`.
        let base = unsafe { mapping.addr.add((offset - map_start) as usize) };
        Ok(Device {
            file,
            mapping,
            base,
            info: DeviceInfo {
                path: path.display().to_string(),
                kind,
                device_size,
                align,
                offset,
                size,
                physical: physical.map(|p| Physical {
                    window: p.window.into(),
                    region: p.region.into(),
                    dax: p.dax.map(Into::into),
                }),
                map: MapInfo {
                    flags: if map_sync {
                        "MAP_SHARED_VALIDATE|MAP_SYNC"
                    } else {
                        "MAP_SHARED"
                    },
                    map_sync,
                    fallback_reason,
                    mapped_offset: map_start,
                    mapped_len: map_len,
                },
            },
        })
    }

    /// First byte of the range under test; valid for `len()` bytes while
    /// the Device lives.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Length of the range under test.
    pub fn len(&self) -> usize {
        self.info.size as usize
    }

    /// Whether the range is empty (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.info.size == 0
    }

    /// A second, independent mapping of the same range (for persistence
    /// checks), with the address of the range's first byte, valid while the
    /// returned Mapping lives.
    pub fn map_again(&self) -> io::Result<(Mapping, *const u8)> {
        let m = map(
            &self.file,
            self.info.map.mapped_offset,
            self.info.map.mapped_len,
            false,
        )?;
        let delta = self.base as usize - self.mapping.addr as usize;
        // SAFETY: `m` maps the same offset and length as `self.mapping`, and
        // `delta` is `base`'s offset inside that one, so it is inside `m` too.
        let p = unsafe { m.addr.add(delta) };
        Ok((m, p))
    }
}
