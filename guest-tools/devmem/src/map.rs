//! Reading `/proc/iomem` and mapping `/dev/mem`, with raw system calls:
//! the fio preload exports libc's file calls itself, so calling libc's
//! `open` from inside it would call its own interposer.

use core::fmt;

/// Most bytes of `/proc/iomem` read (a large server's is a few tens of KiB).
pub const IOMEM_MAX: usize = 256 << 10;

/// An errno value shown as text and number, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.0 {
            libc::EPERM => "Operation not permitted",
            libc::ENOENT => "No such file or directory",
            libc::EAGAIN => "Resource temporarily unavailable",
            libc::ENOMEM => "Cannot allocate memory",
            libc::EACCES => "Permission denied",
            libc::EINVAL => "Invalid argument",
            libc::ENXIO => "No such device or address",
            libc::ENODEV => "No such device",
            _ => "error",
        };
        write!(f, "{text} (errno {})", self.0)
    }
}

/// Why `/proc/iomem` could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("Cannot open /proc/iomem: {0}; mount /proc.")]
    Open(Errno),
    #[error("Cannot read /proc/iomem: {0}.")]
    Read(Errno),
    #[error("/proc/iomem is larger than the {IOMEM_MAX} bytes this tool reads of it, so the /dev/mem range cannot be checked.")]
    TooLarge,
    #[error("/proc/iomem is not text.")]
    NotText,
}

/// Reads `/proc/iomem` into `buf` (at most [`IOMEM_MAX`] bytes are needed).
pub fn read_iomem(buf: &mut [u8]) -> Result<&str, ReadError> {
    // SAFETY: openat of a NUL-terminated literal; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/proc/iomem".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(ReadError::Open(Errno::last()));
    }
    let mut len = 0;
    let result = loop {
        if len == buf.len() {
            break Err(ReadError::TooLarge);
        }
        let room = &mut buf[len..];
        // SAFETY: read(2) writes at most `room.len()` bytes into `room`.
        let n = unsafe { libc::syscall(libc::SYS_read, fd, room.as_mut_ptr(), room.len()) };
        match n {
            0 => break Ok(()),
            n if n > 0 => len += n as usize,
            _ if Errno::last().0 == libc::EINTR => {}
            _ => break Err(ReadError::Read(Errno::last())),
        }
    };
    // SAFETY: closes the descriptor opened above, which nothing else holds.
    unsafe { libc::syscall(libc::SYS_close, fd) };
    result?;
    core::str::from_utf8(&buf[..len]).map_err(|_| ReadError::NotText)
}

/// `/dev/mem`'s device number: major 1, minor 1 (mem(4)).
pub fn is_dev_mem(rdev: libc::dev_t) -> bool {
    libc::major(rdev) == 1 && libc::minor(rdev) == 1
}

/// Why the kernel refused to map a checked range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("The kernel refused to map {len:#x} bytes of /dev/mem at {phys:#x} ({errno}): with STRICT_DEVMEM and IO_STRICT_DEVMEM (Debian's kernel) /dev/mem maps memory a driver has claimed, such as a dax device's, only when the kernel was booted with iomem=relaxed. Add iomem=relaxed to the kernel command line (the lab's guest has it; see /proc/cmdline).")]
    Strict { phys: u64, len: u64, errno: Errno },
    #[error("The kernel's page attribute table refused to map {len:#x} bytes of /dev/mem at {phys:#x} ({errno}): the memory is already mapped with another cache mode (dmesg: \"x86/PAT: ... map pfn expected mapping type\"). Open /dev/mem without O_SYNC, which asks for uncached memory.")]
    CacheMode { phys: u64, len: u64, errno: Errno },
    #[error("Cannot map {len:#x} bytes of /dev/mem at {phys:#x}: {errno}.")]
    Other { phys: u64, len: u64, errno: Errno },
}

/// Maps `len` bytes of physical memory at `phys` (both page-aligned)
/// shared, readable and writable, from `fd`, an open `/dev/mem`. The
/// mapping is the caller's to unmap.
pub fn map(fd: i32, phys: u64, len: u64) -> Result<*mut u8, MapError> {
    // SAFETY: a new mapping with no address hint replaces nothing; the
    // result is checked against MAP_FAILED.
    let addr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            phys as libc::off_t,
        )
    };
    if addr != libc::MAP_FAILED {
        return Ok(addr.cast());
    }
    let errno = Errno::last();
    Err(match errno.0 {
        libc::EPERM => MapError::Strict { phys, len, errno },
        libc::EAGAIN => MapError::CacheMode { phys, len, errno },
        _ => MapError::Other { phys, len, errno },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_s_iomem_reads_and_parses() {
        let mut buf = vec![0u8; IOMEM_MAX];
        let text = read_iomem(&mut buf).expect("/proc/iomem reads");
        let iomem = crate::Iomem::new(text);
        assert!(iomem.entries().any(|e| e.is_system_ram()), "{text}");
    }

    #[test]
    fn a_short_buffer_is_reported() {
        let mut buf = [0u8; 16];
        assert_eq!(read_iomem(&mut buf), Err(ReadError::TooLarge));
    }

    #[test]
    fn dev_mem_is_known_by_its_device_number() {
        assert!(is_dev_mem(libc::makedev(1, 1)));
        assert!(!is_dev_mem(libc::makedev(1, 3)));
        assert!(!is_dev_mem(libc::makedev(252, 1)));
    }

    #[test]
    fn refusals_explain_the_kernel_s_reason() {
        let e = |errno| match errno {
            libc::EPERM => MapError::Strict {
                phys: 0x1000,
                len: 0x1000,
                errno: Errno(errno),
            },
            _ => MapError::CacheMode {
                phys: 0x1000,
                len: 0x1000,
                errno: Errno(errno),
            },
        };
        assert!(e(libc::EPERM).to_string().contains("iomem=relaxed"));
        assert!(e(libc::EAGAIN).to_string().contains("without O_SYNC"));
    }
}
