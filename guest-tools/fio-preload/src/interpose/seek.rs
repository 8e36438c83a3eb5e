//! `lseek` and `lseek64`: the description's offset.

use core::ffi::c_int;

use libc::{off64_t, off_t};

use crate::counters::Call;
use crate::errno;
use crate::io::Ctx;
use crate::state::count;

fn seek(c: &Ctx, off: i64, whence: c_int) -> i64 {
    match c.lseek(off, whence) {
        Ok(n) => n,
        Err(e) => {
            errno::set(e);
            -1
        }
    }
}

fd_calls! {
    /// `lseek(2)` with `SEEK_SET`, `SEEK_CUR`, `SEEK_END`, `SEEK_DATA` and
    /// `SEEK_HOLE`.
    fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t = |c| {
        count(Call::Lseek, "lseek", fd);
        seek(&c, off, whence)
    };
    /// `lseek64`: `lseek`.
    fn lseek64(fd: c_int, off: off64_t, whence: c_int) -> off64_t = |c| {
        count(Call::Lseek, "lseek64", fd);
        seek(&c, off, whence)
    };
}
