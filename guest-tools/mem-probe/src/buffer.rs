//! Where a probe's buffer lives: anonymous local memory, anonymous memory
//! bound to a NUMA node (`mbind`), or a device-dax mapping.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Device-dax maps only in multiples of its alignment; 2 MiB is the
/// kernel's default for CXL regions (1 GiB alignments also are 2 MiB
/// multiples only when asked for, which `daxctl` does not do by default).
pub const DAX_ALIGN: usize = 2 << 20;

/// Where the buffer is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Anonymous memory with the default policy (the guest's local RAM).
    Local,
    /// Anonymous memory bound to a NUMA node (a system-ram CXL region).
    Node(u32),
    /// A device-dax device, mapped shared from offset 0.
    Dax(PathBuf),
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Local => write!(f, "local"),
            Placement::Node(n) => write!(f, "node:{n}"),
            Placement::Dax(p) => write!(f, "dax:{}", p.display()),
        }
    }
}

impl std::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Placement, String> {
        if s == "local" {
            return Ok(Placement::Local);
        }
        if let Some(n) = s.strip_prefix("node:") {
            return n
                .parse()
                .map(Placement::Node)
                .map_err(|_| format!("'{n}' is not a NUMA node number; write e.g. node:1"));
        }
        if let Some(p) = s.strip_prefix("dax:") {
            if p.is_empty() {
                return Err("dax: needs a device path; write e.g. dax:/dev/dax0.0".into());
            }
            return Ok(Placement::Dax(PathBuf::from(p)));
        }
        Err(format!(
            "'{s}' is not a placement; write local, node:N (a NUMA node) or dax:PATH (a device-dax device)"
        ))
    }
}

/// Errors placing a buffer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("Cannot open {0} for reading and writing; is it a device-dax device (daxctl list)?")]
    Open(PathBuf, #[source] std::io::Error),
    #[error("Cannot map {len} bytes of {what}.")]
    Map {
        what: String,
        len: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot bind the buffer to NUMA node {node}; is the node online (numactl --hardware) and does it have {len} bytes free?")]
    Bind {
        node: u32,
        len: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("NUMA node {0} is beyond the 64 nodes the probe's node mask holds.")]
    NodeTooHigh(u32),
}

/// A mapped buffer, unmapped on drop.
pub struct Buffer {
    ptr: *mut u8,
    len: usize,
}

impl Buffer {
    /// Maps `len` bytes (rounded up to the dax alignment for a dax device)
    /// where `placement` says, and touches every page so that first-touch
    /// faults stay out of the measurements.
    pub fn place(placement: &Placement, len: usize) -> Result<Buffer, BufferError> {
        let b = match placement {
            Placement::Local => anonymous(len, "anonymous memory")?,
            Placement::Node(n) => {
                let b = anonymous(len, "anonymous memory")?;
                bind(&b, *n)?;
                b
            }
            Placement::Dax(p) => dax(p, len.div_ceil(DAX_ALIGN) * DAX_ALIGN)?,
        };
        for off in (0..b.len).step_by(4096) {
            // SAFETY: off < len, inside the mapping, which is readable and
            // writable; a volatile write so the touch is not optimised away.
            unsafe { b.ptr.add(off).write_volatile(0) };
        }
        Ok(b)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer as 64-bit words (the mapping is page aligned).
    pub fn words(&mut self) -> &mut [u64] {
        // SAFETY: the mapping is len bytes, readable and writable, page
        // aligned (so u64 aligned), owned by self for the borrow's life and
        // not aliased by any other Rust reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u64>(), self.len / 8) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in place(), unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn anonymous(len: usize, what: &str) -> Result<Buffer, BufferError> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is
    // affected and the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(BufferError::Map {
            what: what.into(),
            len,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Buffer { ptr: p.cast(), len })
}

/// `mbind(MPOL_BIND)` before the first touch, so every page is allocated
/// on the node (libc has no wrapper for it; the system call has no
/// glibc-side state).
fn bind(b: &Buffer, node: u32) -> Result<(), BufferError> {
    if node >= 64 {
        return Err(BufferError::NodeTooHigh(node));
    }
    const MPOL_BIND: libc::c_long = 2;
    const MPOL_MF_STRICT: libc::c_long = 1;
    let mask: u64 = 1 << node;
    // SAFETY: the range is this buffer's own mapping; the node mask is a
    // u64 that lives across the call and maxnode (65) covers its 64 bits.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            b.ptr,
            b.len,
            MPOL_BIND,
            &mask as *const u64,
            65 as libc::c_ulong,
            MPOL_MF_STRICT,
        )
    };
    if r != 0 {
        return Err(BufferError::Bind {
            node,
            len: b.len,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn dax(path: &Path, len: usize) -> Result<Buffer, BufferError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| BufferError::Open(path.to_owned(), e))?;
    // SAFETY: maps the open device shared; the kernel checks the length
    // and alignment against the device and the result is checked. The
    // mapping outlives the file descriptor, as mmap allows.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(BufferError::Map {
            what: path.display().to_string(),
            len,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Buffer { ptr: p.cast(), len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_parse_and_print_back() {
        for s in ["local", "node:1", "dax:/dev/dax0.0"] {
            assert_eq!(s.parse::<Placement>().unwrap().to_string(), s);
        }
        assert!("node:x"
            .parse::<Placement>()
            .unwrap_err()
            .contains("node:1"));
        assert!("dax:"
            .parse::<Placement>()
            .unwrap_err()
            .contains("dax:/dev/dax0.0"));
        assert!("cxl"
            .parse::<Placement>()
            .unwrap_err()
            .contains("local, node:N"));
    }

    #[test]
    fn a_local_buffer_is_mapped_and_touched() {
        let mut b = Buffer::place(&Placement::Local, 1 << 20).unwrap();
        assert_eq!(b.len(), 1 << 20);
        assert!(b.words().iter().all(|w| *w == 0));
    }

    #[test]
    fn a_missing_dax_device_is_named() {
        let e = Buffer::place(&Placement::Dax("/nonexistent/dax9.9".into()), 4096)
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/dax9.9"), "{e}");
    }
}
