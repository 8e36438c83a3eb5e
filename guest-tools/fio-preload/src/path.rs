//! Turning the path given to an interposed call into the key of its slot and
//! resolving it; whether it is claimed is `crate::state::claimed`.

use core::ffi::{c_char, CStr};

/// Room for an absolute path.
pub const PATH_BUF: usize = 4096 + 256;

/// An absolute path built on the stack.
pub struct AbsPath {
    buf: [u8; PATH_BUF],
    len: usize,
}

impl AbsPath {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The last component.
    pub fn basename(&self) -> &[u8] {
        let b = self.as_bytes();
        match b.iter().rposition(|&c| c == b'/') {
            Some(i) => &b[i + 1..],
            None => b,
        }
    }

    fn push(&mut self, s: &[u8]) -> bool {
        if self.len + s.len() > self.buf.len() {
            return false;
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
        true
    }

    /// Builds the absolute form of `path` relative to `dirfd` (AT_FDCWD for
    /// the working directory). `.` components and repeated `/` are removed so
    /// that `./x` and `x` name the same slot. None when it does not fit or
    /// the directory cannot be resolved.
    ///
    /// # Safety
    /// `path` must be a valid C string.
    pub unsafe fn resolve(dirfd: i32, path: *const c_char) -> Option<AbsPath> {
        if path.is_null() {
            return None;
        }
        // SAFETY: caller's contract.
        let p = unsafe { CStr::from_ptr(path) }.to_bytes();
        let mut raw = AbsPath {
            buf: [0; PATH_BUF],
            len: 0,
        };
        if p.first() != Some(&b'/') {
            let n = if dirfd == libc::AT_FDCWD {
                // SAFETY: getcwd writes at most len bytes into our buffer.
                let r = unsafe { libc::syscall(libc::SYS_getcwd, raw.buf.as_mut_ptr(), 4096) };
                if r <= 0 {
                    return None;
                }
                raw.buf.iter().position(|&c| c == 0)?
            } else {
                let mut link = crate::log::Line::empty();
                let _ =
                    core::fmt::Write::write_fmt(&mut link, format_args!("/proc/self/fd/{dirfd}\0"));
                // SAFETY: readlink into our buffer, bounded by its length.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_readlinkat,
                        libc::AT_FDCWD,
                        link.as_bytes().as_ptr(),
                        raw.buf.as_mut_ptr(),
                        4096,
                    )
                };
                if r <= 0 {
                    return None;
                }
                r as usize
            };
            raw.len = n;
            if !raw.push(b"/") {
                return None;
            }
        }
        if !raw.push(p) {
            return None;
        }
        Self::normalize(raw.as_bytes())
    }

    /// The absolute form of `path` relative to the absolute directory `dir`
    /// (`path` itself when it is absolute), normalised as by `resolve`.
    pub fn join(dir: &[u8], path: &[u8]) -> Option<AbsPath> {
        let mut raw = AbsPath {
            buf: [0; PATH_BUF],
            len: 0,
        };
        if path.first() != Some(&b'/') && !(raw.push(dir) && raw.push(b"/")) {
            return None;
        }
        if !raw.push(path) {
            return None;
        }
        Self::normalize(raw.as_bytes())
    }

    /// `raw` without empty and `.` components (`..` is kept: both sides of
    /// every comparison are normalised the same way, without the file system).
    fn normalize(raw: &[u8]) -> Option<AbsPath> {
        let mut out = AbsPath {
            buf: [0; PATH_BUF],
            len: 0,
        };
        for comp in raw.split(|&c| c == b'/') {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            if !out.push(b"/") || !out.push(comp) {
                return None;
            }
        }
        if out.len == 0 {
            out.push(b"/");
        }
        Some(out)
    }

    /// Whether this path is claimed by the pattern: a pattern containing `/`
    /// is matched against the whole absolute path, otherwise against the
    /// last component.
    pub fn matches(&self, pattern: &[u8]) -> bool {
        if pattern.contains(&b'/') {
            crate::glob::matches(pattern, self.as_bytes())
        } else {
            crate::glob::matches(pattern, self.basename())
        }
    }

    /// Whether a directory exists at this path (directories are never claimed).
    pub fn is_directory(&mut self) -> bool {
        if !self.push(b"\0") {
            return false;
        }
        self.len -= 1;
        // SAFETY: stat of a NUL-terminated path into a local.
        unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            libc::syscall(
                libc::SYS_newfstatat,
                libc::AT_FDCWD,
                self.buf.as_ptr(),
                &mut st,
                0,
            ) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFDIR
        }
    }
}
