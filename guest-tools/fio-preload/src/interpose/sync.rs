//! `fsync`, `fdatasync` and `sync_file_range`: flush the slot's dirty lines.

use core::ffi::{c_int, c_uint};

use libc::off64_t;

use super::ret_int;
use crate::counters::Call;
use crate::io::Ctx;
use crate::log::say;
use crate::state::count;

/// Flushes every line of the slot written since its last sync (the whole
/// slot, whatever range was asked for: a superset is still durable).
fn sync(c: &Ctx, fd: c_int, call: Call, name: &str) -> c_int {
    count(call, name, fd);
    let lines = c.sync();
    if crate::state::debug() > 1 {
        say!(
            "{name}(fd {fd}) flushed {lines} dirty line(s) with {}",
            c.w.flush.name()
        );
    }
    0
}

fd_calls! {
    /// `fsync(2)`.
    fn fsync(fd: c_int) -> c_int = |c| sync(&c, fd, Call::Fsync, "fsync");
    /// `fdatasync(2)`.
    fn fdatasync(fd: c_int) -> c_int = |c| sync(&c, fd, Call::Fdatasync, "fdatasync");
    /// `sync_file_range(2)`.
    fn sync_file_range(fd: c_int, off: off64_t, n: off64_t, fl: c_uint) -> c_int = |c| {
        if off < 0 || n < 0 {
            ret_int(Err(libc::EINVAL))
        } else {
            sync(&c, fd, Call::SyncFileRange, "sync_file_range")
        }
    };
}
