//! `readv` and `writev` at the description's offset; `preadv`, `preadv64`,
//! `preadv2`, `preadv64v2`, `pwritev`, `pwritev64`, `pwritev2` and
//! `pwritev64v2` at a given one (or, for the `2` forms, offset -1: the
//! description's).

use core::ffi::c_int;

use libc::{iovec, off64_t, off_t, ssize_t};

use super::ret_size;
use crate::counters::Call;
use crate::io::{ctx, Ctx};
use crate::real;
use crate::state::count;

/// Defines calls that move data between the `cnt` buffers of `iov` and the
/// file: `fn name(fd, iov, cnt, ...) = |c| serve;` evaluates `serve` with `c`
/// the intercepted descriptor's context, and otherwise calls the next `name`
/// with the same arguments.
macro_rules! vectored {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident($fd:ident: c_int, $iov:ident: *const iovec, $cnt:ident: c_int
            $(, $arg:ident: $ty:ty)*) = |$c:ident| $serve:expr;
    )*) => {$(
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// The C function's contract: `iov` points to `cnt` iovecs (when
        /// `cnt` is in `1..=IOV_MAX`), each valid for `iov_len` bytes,
        /// writable for the reads and readable for the writes.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            $fd: c_int, $iov: *const iovec, $cnt: c_int $(, $arg: $ty)*
        ) -> ssize_t {
            if let Some($c) = ctx($fd) {
                // SAFETY: `serve` hands `iov` and `cnt` to the `Ctx` vectored
                // methods, whose contract is the one above.
                return unsafe { $serve };
            }
            // SAFETY: the caller's arguments, passed on unchanged, meet the
            // next definition's contract, which is this same C function's.
            unsafe { real::$name($fd, $iov, $cnt $(, $arg)*) }
        }
    )*};
}

/// preadv/preadv2: offset -1 (preadv2 only) means the file offset.
///
/// # Safety
/// As `Ctx::readv_at`.
unsafe fn read_vectored(
    c: &Ctx,
    iov: *const iovec,
    cnt: c_int,
    off: i64,
    current_ok: bool,
) -> ssize_t {
    let r = match off {
        // SAFETY: passed on from this function's contract.
        -1 if current_ok => unsafe { c.readv(iov, cnt) },
        o if o < 0 => Err(libc::EINVAL),
        // SAFETY: passed on from this function's contract.
        o => unsafe { c.readv_at(o as u64, iov, cnt) },
    };
    ret_size(r)
}

/// pwritev/pwritev2; RWF_SYNC/RWF_DSYNC flush what was written.
///
/// # Safety
/// As `Ctx::writev_at`.
unsafe fn write_vectored(
    c: &Ctx,
    iov: *const iovec,
    cnt: c_int,
    off: i64,
    rwf: c_int,
    current_ok: bool,
) -> ssize_t {
    let r = ret_size(match off {
        // SAFETY: passed on from this function's contract.
        -1 if current_ok => unsafe { c.writev(iov, cnt) },
        o if o < 0 => Err(libc::EINVAL),
        // SAFETY: passed on from this function's contract.
        o => unsafe { c.writev_at(o as u64, iov, cnt) },
    });
    if r > 0 && rwf & (libc::RWF_SYNC | libc::RWF_DSYNC) != 0 {
        c.sync();
    }
    r
}

vectored! {
    /// `readv(2)`: at the description's offset, which advances.
    fn readv(fd: c_int, iov: *const iovec, cnt: c_int) = |c| {
        count(Call::Readv, "readv", fd);
        ret_size(c.readv(iov, cnt))
    };
    /// `writev(2)`: at the description's offset (or the end, with `O_APPEND`).
    fn writev(fd: c_int, iov: *const iovec, cnt: c_int) = |c| {
        count(Call::Writev, "writev", fd);
        ret_size(c.writev(iov, cnt))
    };
    /// `preadv(2)`.
    fn preadv(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) = |c| {
        count(Call::Preadv, "preadv", fd);
        read_vectored(&c, iov, cnt, off, false)
    };
    /// `preadv64`: `preadv`.
    fn preadv64(fd: c_int, iov: *const iovec, cnt: c_int, off: off64_t) = |c| {
        count(Call::Preadv, "preadv64", fd);
        read_vectored(&c, iov, cnt, off, false)
    };
    /// `preadv2(2)`; the `RWF_*` flags ask nothing of a read from memory.
    fn preadv2(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t, rwf: c_int) = |c| {
        count(Call::Preadv, "preadv2", fd);
        read_vectored(&c, iov, cnt, off, true)
    };
    /// `preadv64v2`: `preadv2`.
    fn preadv64v2(fd: c_int, iov: *const iovec, cnt: c_int, off: off64_t, rwf: c_int) = |c| {
        count(Call::Preadv, "preadv64v2", fd);
        read_vectored(&c, iov, cnt, off, true)
    };
    /// `pwritev(2)`.
    fn pwritev(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) = |c| {
        count(Call::Pwritev, "pwritev", fd);
        write_vectored(&c, iov, cnt, off, 0, false)
    };
    /// `pwritev64`: `pwritev`.
    fn pwritev64(fd: c_int, iov: *const iovec, cnt: c_int, off: off64_t) = |c| {
        count(Call::Pwritev, "pwritev64", fd);
        write_vectored(&c, iov, cnt, off, 0, false)
    };
    /// `pwritev2(2)`.
    fn pwritev2(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t, rwf: c_int) = |c| {
        count(Call::Pwritev, "pwritev2", fd);
        write_vectored(&c, iov, cnt, off, rwf, true)
    };
    /// `pwritev64v2`: `pwritev2`.
    fn pwritev64v2(fd: c_int, iov: *const iovec, cnt: c_int, off: off64_t, rwf: c_int) = |c| {
        count(Call::Pwritev, "pwritev64v2", fd);
        write_vectored(&c, iov, cnt, off, rwf, true)
    };
}
