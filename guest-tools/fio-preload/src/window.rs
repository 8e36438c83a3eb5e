//! The device window: `FIO_MEM_DEVICE` opened and mapped at
//! `FIO_MEM_OFFSET` for `FIO_MEM_SIZE` bytes, and how its lines are flushed.
//! `/dev/mem` takes a physical `FIO_MEM_OFFSET`, checked against
//! `/proc/iomem` and mapped by the `devmem` crate (shared with dax-tester).

use core::cell::UnsafeCell;
use core::fmt::{self, Write as _};

use crate::config::Config;
use crate::log::Line;

/// Alignment assumed for device-dax when sysfs does not say.
const DEFAULT_DAX_ALIGN: u64 = 2 << 20;
const PAGE: u64 = 4096;

/// Why the window could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("Cannot open FIO_MEM_DEVICE: {0}. Set FIO_MEM_DEVICE to a device-dax device (/dev/daxX.Y, see `daxctl list`) or a regular file this process can open for reading and writing.")]
    Open(crate::log::ErrnoText),
    #[error("FIO_MEM_DEVICE is neither a regular file, a device-dax character device nor /dev/mem. Set it to a device-dax device (/dev/daxX.Y; a /dev/pmemN block device's namespace must be made devdax), /dev/mem with a physical FIO_MEM_OFFSET in a CXL region, or a regular file.")]
    NotMappable,
    #[error("Cannot read the size of the device-dax from /sys/dev/char/{major}:{minor}/size. Check that sysfs is mounted and that FIO_MEM_DEVICE is a device-dax device.")]
    DaxSize { major: u32, minor: u32 },
    #[error("FIO_MEM_OFFSET {offset:#x} is past the end of FIO_MEM_DEVICE ({device_size:#x} bytes). Set FIO_MEM_OFFSET below the device size.")]
    OffsetPastEnd { offset: u64, device_size: u64 },
    #[error("The window (FIO_MEM_OFFSET {offset:#x} + FIO_MEM_SIZE {size:#x}) runs past the end of FIO_MEM_DEVICE ({device_size:#x} bytes). Lower FIO_MEM_OFFSET or FIO_MEM_SIZE (unset FIO_MEM_SIZE to use the rest of the device).")]
    PastEnd {
        offset: u64,
        size: u64,
        device_size: u64,
    },
    #[error(
        "The window is empty: FIO_MEM_SIZE is 0 or FIO_MEM_OFFSET is at the end of the device. Set FIO_MEM_SIZE above 0 and FIO_MEM_OFFSET below the device size."
    )]
    Empty,
    #[error("FIO_FILE_SIZE ({file_size:#x}) is larger than the window ({window:#x}). Lower FIO_FILE_SIZE or raise FIO_MEM_SIZE.")]
    FileTooLarge { file_size: u64, window: u64 },
    #[error("Cannot map {len:#x} bytes of FIO_MEM_DEVICE at offset {offset:#x}: {err}. Check that this process may map FIO_MEM_DEVICE read-write and that FIO_MEM_OFFSET and FIO_MEM_SIZE lie in memory the device lets it map.")]
    Map {
        offset: u64,
        len: u64,
        err: crate::log::ErrnoText,
    },
    #[error(transparent)]
    Iomem(devmem::ReadError),
    /// Borrows the `/proc/iomem` text kept in [`IOMEM`].
    #[error(transparent)]
    DevMemRange(devmem::RangeError<'static>),
    #[error(transparent)]
    DevMemMap(devmem::MapError),
}

/// `/proc/iomem`'s text, read for a `/dev/mem` window; a refusal or the
/// placement borrows it for the life of the process.
struct IomemText(UnsafeCell<[u8; devmem::IOMEM_MAX]>);

// SAFETY: written only by `iomem_text`, which runs at most once per process
// (see there), before any reader can exist.
unsafe impl Sync for IomemText {}

static IOMEM: IomemText = IomemText(UnsafeCell::new([0; devmem::IOMEM_MAX]));

/// Reads `/proc/iomem` into [`IOMEM`].
///
/// # Safety
/// Called at most once per process: from the load-time constructor
/// (single-threaded, before main), through [`Window::map`] of `/dev/mem`.
unsafe fn iomem_text() -> Result<devmem::Iomem<'static>, WindowError> {
    // SAFETY: by the contract above no other reference to IOMEM exists.
    let buf = unsafe { &mut *IOMEM.0.get() };
    devmem::read_iomem(buf)
        .map(devmem::Iomem::new)
        .map_err(WindowError::Iomem)
}

/// What the window maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    File,
    DeviceDax,
    /// Physical memory through `/dev/mem`, and where it lies.
    DevMem(devmem::Placement<'static>),
}

/// `file`, `device-dax`, or `dev-mem: dax0.0 of region0 [...] in CXL Window 0`.
impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::File => f.write_str("file"),
            Backing::DeviceDax => f.write_str("device-dax"),
            Backing::DevMem(p) => write!(f, "dev-mem: {p}"),
        }
    }
}

/// How written lines are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    Clwb,
    ClflushOpt,
    Clflush,
    /// `msync(MS_SYNC)` on the page range: a plain file mapping.
    Msync,
}

impl FlushMode {
    pub fn name(self) -> &'static str {
        match self {
            FlushMode::Clwb => "clwb+sfence",
            FlushMode::ClflushOpt => "clflushopt+sfence",
            FlushMode::Clflush => "clflush+sfence",
            FlushMode::Msync => "msync",
        }
    }
}

/// The mapped window.
pub struct Window {
    /// Address of device offset `FIO_MEM_OFFSET`.
    pub base: *mut u8,
    pub len: u64,
    pub file_size: u64,
    pub slots: u64,
    pub dev_id: u64,
    pub backing: Backing,
    pub map_sync: bool,
    pub flush: FlushMode,
    pub device_size: u64,
}

// SAFETY: the fields are set once by `map` and never changed; `base` points
// into a shared mapping that is never unmapped and whose bytes are only
// accessed through raw pointers (other processes write them too), never
// through references.
unsafe impl Sync for Window {}
// SAFETY: nothing in a Window belongs to the thread that made it.
unsafe impl Send for Window {}

impl Window {
    /// Opens and maps the device described by `cfg`.
    pub fn map(cfg: &Config, max_slots: u64) -> Result<Window, WindowError> {
        // SAFETY: openat of a NUL-terminated path (`device_c` keeps the NUL).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                cfg.device_c().as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC,
            )
        } as i32;
        if fd < 0 {
            return Err(WindowError::Open(
                crate::log::ErrnoText(crate::errno::get()),
            ));
        }
        let result = Self::map_fd(cfg, fd, max_slots);
        // SAFETY: closing the descriptor opened above; the mapping stays.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        result
    }

    fn map_fd(cfg: &Config, fd: i32, max_slots: u64) -> Result<Window, WindowError> {
        // SAFETY: all-zero bytes are a valid `struct stat`.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: fstat writes one `struct stat` into the local.
        if unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st) } != 0 {
            return Err(WindowError::Open(
                crate::log::ErrnoText(crate::errno::get()),
            ));
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFCHR && devmem::is_dev_mem(st.st_rdev) {
            return Self::map_dev_mem(cfg, fd, st.st_rdev, max_slots);
        }
        let (device_size, align, is_dax, dev_id) = if kind == libc::S_IFREG {
            (st.st_size as u64, PAGE, false, st.st_dev)
        } else if kind == libc::S_IFCHR {
            let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
            let size =
                sysfs_number(major, minor, "size").ok_or(WindowError::DaxSize { major, minor })?;
            let align = sysfs_number(major, minor, "align")
                .filter(|a| a.is_power_of_two())
                .unwrap_or(DEFAULT_DAX_ALIGN)
                .max(PAGE);
            (size, align, true, st.st_rdev)
        } else {
            return Err(WindowError::NotMappable);
        };
        let offset = cfg.mem_offset;
        if offset > device_size {
            return Err(WindowError::OffsetPastEnd {
                offset,
                device_size,
            });
        }
        let len = cfg.mem_size.unwrap_or(device_size - offset);
        if offset.checked_add(len).is_none_or(|end| end > device_size) {
            return Err(WindowError::PastEnd {
                offset,
                size: len,
                device_size,
            });
        }
        if len == 0 {
            return Err(WindowError::Empty);
        }
        let file_size = file_size(cfg, len)?;
        let map_start = offset & !(align - 1);
        let map_end = (offset + len).div_ceil(align) * align;
        let map_end = if is_dax {
            map_end
        } else {
            map_end.min(device_size.div_ceil(PAGE) * PAGE)
        };
        let map_len = map_end - map_start;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let mut map_sync = true;
        // SAFETY: a new mapping (no address hint) of a descriptor we own
        // touches no existing memory; failure is checked.
        let mut addr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                map_len as usize,
                prot,
                libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
                fd,
                map_start as i64,
            )
        };
        if addr == libc::MAP_FAILED {
            map_sync = false;
            // SAFETY: as above, without MAP_SYNC.
            addr = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    map_len as usize,
                    prot,
                    libc::MAP_SHARED,
                    fd,
                    map_start as i64,
                )
            };
        }
        if addr == libc::MAP_FAILED {
            return Err(WindowError::Map {
                offset: map_start,
                len: map_len,
                err: crate::log::ErrnoText(crate::errno::get()),
            });
        }
        let flush = if is_dax || map_sync {
            cpu_flush_mode()
        } else {
            FlushMode::Msync
        };
        Ok(Window {
            // SAFETY: offset - map_start < map_len.
            base: unsafe { addr.cast::<u8>().add((offset - map_start) as usize) },
            len,
            file_size,
            slots: (len / file_size).min(max_slots),
            dev_id,
            backing: if is_dax {
                Backing::DeviceDax
            } else {
                Backing::File
            },
            map_sync,
            flush,
            device_size,
        })
    }

    /// `/dev/mem`: `FIO_MEM_OFFSET` is a physical address; the window (by
    /// default the rest of the dax device or region it starts in) must lie
    /// in one CXL region's device-dax memory, never System RAM.
    fn map_dev_mem(
        cfg: &Config,
        fd: i32,
        rdev: libc::dev_t,
        max_slots: u64,
    ) -> Result<Window, WindowError> {
        // SAFETY: `map` runs once, from the constructor (state::init).
        let iomem = unsafe { iomem_text() }?;
        let offset = cfg.mem_offset;
        let len = match cfg.mem_size {
            Some(len) => len,
            None => {
                let area = devmem::check(iomem, offset, 1)
                    .map_err(WindowError::DevMemRange)?
                    .area();
                area.end - offset + 1
            }
        };
        let placement = devmem::check(iomem, offset, len).map_err(WindowError::DevMemRange)?;
        let file_size = file_size(cfg, len)?;
        let map_start = offset & !(PAGE - 1);
        let map_len = (offset + len).div_ceil(PAGE) * PAGE - map_start;
        let addr = devmem::map(fd, map_start, map_len).map_err(WindowError::DevMemMap)?;
        Ok(Window {
            // SAFETY: offset - map_start < PAGE <= map_len.
            base: unsafe { addr.add((offset - map_start) as usize) },
            len,
            file_size,
            slots: (len / file_size).min(max_slots),
            dev_id: rdev,
            backing: Backing::DevMem(placement),
            map_sync: false,
            flush: cpu_flush_mode(),
            device_size: placement.area().size(),
        })
    }

    /// Address of byte `off` of slot `slot`.
    ///
    /// # Safety
    /// `slot < self.slots` and `off <= self.file_size`, so the address is in
    /// (or one past) the window.
    #[inline]
    pub unsafe fn slot_ptr(&self, slot: u32, off: u64) -> *mut u8 {
        // SAFETY: by the contract above the offset is at most
        // `slots * file_size <= len`, inside the mapping `base` points into.
        unsafe { self.base.add((slot as u64 * self.file_size + off) as usize) }
    }

    /// Makes `[addr, addr + len)` of the window durable.
    ///
    /// # Safety
    /// The range, rounded out to whole 64-byte lines, lies in this window's
    /// mapping (which is itself rounded out to whole pages).
    pub unsafe fn flush_range(&self, addr: *const u8, len: usize) {
        if len == 0 {
            return;
        }
        match self.flush {
            FlushMode::Msync => {
                let start = addr as usize & !(PAGE as usize - 1);
                let end = (addr as usize + len).div_ceil(PAGE as usize) * PAGE as usize;
                // SAFETY: msync only writes back pages; they are pages of
                // our mapping by the contract above.
                unsafe { libc::msync(start as *mut libc::c_void, end - start, libc::MS_SYNC) };
            }
            mode => {
                let mut line = addr as usize & !63;
                let end = addr as usize + len;
                while line < end {
                    // SAFETY: the line is in our mapping (contract above);
                    // these instructions only write back or evict it.
                    unsafe { flush_line(mode, line as *const u8) };
                    line += 64;
                }
                // SAFETY: a store fence has no memory operands.
                unsafe { core::arch::asm!("sfence", options(nostack, preserves_flags)) };
            }
        }
    }
}

/// `FIO_FILE_SIZE`, by default the whole window, checked against it.
fn file_size(cfg: &Config, len: u64) -> Result<u64, WindowError> {
    let file_size = cfg.file_size.unwrap_or(len);
    if file_size > len {
        return Err(WindowError::FileTooLarge {
            file_size,
            window: len,
        });
    }
    Ok(file_size)
}

/// Writes back (or evicts) the cache line at `p` with `mode`'s instruction.
///
/// # Safety
/// `p` is a mapped address.
#[inline]
unsafe fn flush_line(mode: FlushMode, p: *const u8) {
    // SAFETY: `p` is mapped (caller's contract), so the instruction cannot
    // fault; it changes no memory contents.
    unsafe {
        match mode {
            FlushMode::Clwb => {
                core::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
            FlushMode::ClflushOpt => {
                core::arch::asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
            _ => core::arch::asm!("clflush [{0}]", in(reg) p, options(nostack, preserves_flags)),
        }
    }
}

/// The best cache-line write-back instruction CPUID reports.
fn cpu_flush_mode() -> FlushMode {
    let leaf7 = core::arch::x86_64::__cpuid_count(7, 0);
    if leaf7.ebx & (1 << 24) != 0 {
        FlushMode::Clwb
    } else if leaf7.ebx & (1 << 23) != 0 {
        FlushMode::ClflushOpt
    } else {
        FlushMode::Clflush
    }
}

/// Reads `/sys/dev/char/MAJ:MIN/<name>` as a number.
fn sysfs_number(major: u32, minor: u32, name: &str) -> Option<u64> {
    let mut path = Line::empty();
    let _ = write!(path, "/sys/dev/char/{major}:{minor}/{name}\0");
    let mut buf = [0u8; 64];
    // SAFETY: raw system calls on a NUL-terminated path and a local buffer.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_bytes().as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len());
        libc::syscall(libc::SYS_close, fd);
        if n <= 0 {
            return None;
        }
        crate::num::parse_size(&buf[..n as usize]).ok()
    }
}
