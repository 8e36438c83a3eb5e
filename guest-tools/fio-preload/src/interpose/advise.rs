//! `posix_fadvise` and `posix_fadvise64`: accepted and ignored, since the
//! window has no page cache to manage.

use core::ffi::c_int;

use libc::{off64_t, off_t};

use crate::counters::Call;
use crate::state::count;

/// Checks the advice (returned as the error number, not in errno).
fn advise(fd: c_int, advice: c_int) -> c_int {
    count(Call::Fadvise, "posix_fadvise", fd);
    if (libc::POSIX_FADV_NORMAL..=libc::POSIX_FADV_NOREUSE).contains(&advice) {
        0
    } else {
        libc::EINVAL
    }
}

fd_calls! {
    /// `posix_fadvise(3)`.
    fn posix_fadvise(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int =
        |_c| advise(fd, advice);
    /// `posix_fadvise64`: `posix_fadvise`.
    fn posix_fadvise64(fd: c_int, off: off64_t, len: off64_t, advice: c_int) -> c_int =
        |_c| advise(fd, advice);
}
