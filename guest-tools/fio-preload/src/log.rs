//! Messages on stderr written with one `write(2)` system call from a stack
//! buffer: no allocation, no stdio lock, and errno is preserved.

use core::fmt::{self, Write};

/// A fixed stack buffer that silently truncates long messages.
pub struct Line {
    data: [u8; 1024],
    len: usize,
}

impl Line {
    pub const fn empty() -> Self {
        Line {
            data: [0; 1024],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.data.len() - self.len;
        let n = s.len().min(room);
        self.data[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes `fio-intercept: <message>\n` to stderr.
pub fn emit(args: fmt::Arguments<'_>) {
    let mut line = Line::empty();
    let _ = line.write_str("fio-intercept: ");
    let _ = line.write_fmt(args);
    if line.len == line.data.len() {
        line.len -= 1;
    }
    line.data[line.len] = b'\n';
    line.len += 1;
    // A failed write to stderr must not change the errno the caller sees.
    let saved = crate::errno::get();
    // SAFETY: write(2) reads `len` initialised bytes of the buffer.
    unsafe { libc::syscall(libc::SYS_write, 2, line.data.as_ptr(), line.len) };
    crate::errno::set(saved);
}

/// `format!`-style message to stderr, prefixed with `fio-intercept: `.
macro_rules! say {
    ($($arg:tt)*) => { $crate::log::emit(format_args!($($arg)*)) };
}
pub(crate) use say;

/// A byte string shown as text (lossy, for paths).
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{fffd}")?;
            }
        }
        Ok(())
    }
}

/// An errno value shown as text and number, e.g. `No such file or directory (errno 2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrnoText(pub i32);

impl fmt::Display for ErrnoText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.0 {
            libc::ENOENT => "No such file or directory",
            libc::EACCES => "Permission denied",
            libc::ENXIO => "No such device or address",
            libc::ENODEV => "No such device",
            libc::EINVAL => "Invalid argument",
            libc::ENOMEM => "Cannot allocate memory",
            libc::ENOSPC => "No space left on device",
            libc::EOPNOTSUPP => "Operation not supported",
            libc::EISDIR => "Is a directory",
            libc::EMFILE => "Too many open files",
            libc::EFBIG => "File too large",
            libc::EPERM => "Operation not permitted",
            _ => "error",
        };
        write!(f, "{text} (errno {})", self.0)
    }
}
