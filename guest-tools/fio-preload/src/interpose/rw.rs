//! `read` and `write` at the description's offset, `pread`, `pread64`,
//! `pwrite` and `pwrite64` at a given one.

use core::ffi::{c_int, c_void};

use libc::{off64_t, off_t, size_t, ssize_t};

use super::ret_size;
use crate::counters::Call;
use crate::io::{ctx, Ctx};
use crate::real;
use crate::state::count;

/// Defines calls that move `n` bytes between `buf` and the file:
/// `fn name(fd, buf, n, ...) -> ssize_t = |c| serve;` evaluates `serve` with
/// `c` the intercepted descriptor's context, and otherwise calls the next
/// `name` with the same arguments.
macro_rules! transfers {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident($fd:ident: c_int, $buf:ident: $buf_ty:ty, $n:ident: size_t
            $(, $arg:ident: $ty:ty)*) = |$c:ident| $serve:expr;
    )*) => {$(
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// The C function's contract: `buf` is valid for `n` bytes, writable
        /// for the reads and readable for the writes.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            $fd: c_int, $buf: $buf_ty, $n: size_t $(, $arg: $ty)*
        ) -> ssize_t {
            if let Some($c) = ctx($fd) {
                // SAFETY: `serve` moves at most `n` bytes through `buf` in
                // the call's direction, which the contract above allows.
                return unsafe { $serve };
            }
            // SAFETY: the caller's arguments, passed on unchanged, meet the
            // next definition's contract, which is this same C function's.
            unsafe { real::$name($fd, $buf, $n $(, $arg)*) }
        }
    )*};
}

/// `pread` at `off`, which must not be negative.
///
/// # Safety
/// `buf` is valid for writes of `n` bytes.
unsafe fn read_at(c: &Ctx, buf: *mut c_void, n: size_t, off: i64) -> ssize_t {
    if off < 0 {
        return ret_size(Err(libc::EINVAL));
    }
    // SAFETY: passed on from this function's contract.
    ret_size(unsafe { c.read_at(off as u64, buf.cast(), n) })
}

/// `pwrite` at `off`, which must not be negative.
///
/// # Safety
/// `buf` is valid for reads of `n` bytes.
unsafe fn write_at(c: &Ctx, buf: *const c_void, n: size_t, off: i64) -> ssize_t {
    if off < 0 {
        return ret_size(Err(libc::EINVAL));
    }
    // SAFETY: passed on from this function's contract.
    ret_size(unsafe { c.write_at(off as u64, buf.cast(), n) })
}

transfers! {
    /// `read(2)`: at the description's offset, which advances.
    fn read(fd: c_int, buf: *mut c_void, n: size_t) = |c| {
        count(Call::Read, "read", fd);
        ret_size(c.read(buf.cast(), n))
    };
    /// `write(2)`: at the description's offset (or the end, with `O_APPEND`).
    fn write(fd: c_int, buf: *const c_void, n: size_t) = |c| {
        count(Call::Write, "write", fd);
        ret_size(c.write(buf.cast(), n))
    };
    /// `pread(2)`.
    fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) = |c| {
        count(Call::Pread, "pread", fd);
        read_at(&c, buf, n, off)
    };
    /// `pread64`: `pread`.
    fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: off64_t) = |c| {
        count(Call::Pread, "pread64", fd);
        read_at(&c, buf, n, off)
    };
    /// `pwrite(2)`.
    fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) = |c| {
        count(Call::Pwrite, "pwrite", fd);
        write_at(&c, buf, n, off)
    };
    /// `pwrite64`: `pwrite`.
    fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off64_t) = |c| {
        count(Call::Pwrite, "pwrite64", fd);
        write_at(&c, buf, n, off)
    };
}
