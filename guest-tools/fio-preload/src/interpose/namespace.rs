//! `unlink`, `unlinkat`, `access` and `faccessat` of claimed paths: the
//! device window is the file, so it always exists and is never removed.

use core::ffi::{c_char, c_int};

use super::{ret_int, setup_failed};
use crate::counters::Call;
use crate::path::AbsPath;
use crate::state::{count_path, ready};

/// unlink of a claimed path succeeds and leaves the slot and its data: the
/// device window is the file.
fn unlink_claimed(abs: &AbsPath) -> c_int {
    count_path(Call::Unlink, "unlink", abs.as_bytes());
    match ready() {
        Ok(_) => 0,
        Err(why) => setup_failed("unlink", abs, why),
    }
}

/// A claimed path always exists and is readable and writable.
fn access_claimed(abs: &AbsPath, mode: c_int) -> c_int {
    count_path(Call::Access, "access", abs.as_bytes());
    match ready() {
        Ok(_) if mode & libc::X_OK != 0 => ret_int(Err(libc::EACCES)),
        Ok(_) => 0,
        Err(why) => setup_failed("access", abs, why),
    }
}

path_calls! {
    /// `unlink(2)`.
    fn unlink(path: *const c_char) -> c_int;
        claims (libc::AT_FDCWD, path) => |abs| unlink_claimed(&abs);
    /// `unlinkat(2)`; `AT_REMOVEDIR` never names a claimed file.
    fn unlinkat(dirfd: c_int, path: *const c_char, at: c_int) -> c_int;
        claims (dirfd, path) if at & libc::AT_REMOVEDIR == 0 => |abs| unlink_claimed(&abs);
    /// `access(2)`.
    fn access(path: *const c_char, mode: c_int) -> c_int;
        claims (libc::AT_FDCWD, path) => |abs| access_claimed(&abs, mode);
    /// `faccessat(2)`.
    fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, at: c_int) -> c_int;
        claims (dirfd, path) => |abs| access_claimed(&abs, mode);
}
