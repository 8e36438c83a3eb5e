//! `ftruncate`, `truncate`, `fallocate` and `posix_fallocate` (and their
//! `64` forms): the logical size of a slot.

use core::ffi::{c_char, c_int};

use libc::{off64_t, off_t};

use super::{ret_int, setup_failed};
use crate::counters::Call;
use crate::io::{set_size, Ctx};
use crate::log::{say, Bytes};
use crate::path::AbsPath;
use crate::state::{count, count_path, ready};
use crate::table::{desc, flags, new_desc, release_desc};

fn ftruncate_on(c: &Ctx, fd: c_int, len: i64) -> c_int {
    count(Call::Ftruncate, "ftruncate", fd);
    ret_int(c.truncate(len))
}

/// truncate(2) of a claimed path: sets its slot's size (giving it a slot).
fn truncate_path(abs: &AbsPath, len: i64) -> c_int {
    count_path(Call::Ftruncate, "truncate", abs.as_bytes());
    let (w, t, d) = match ready() {
        Ok(x) => x,
        Err(why) => return setup_failed("truncate", abs, why),
    };
    if len < 0 {
        return ret_int(Err(libc::EINVAL));
    }
    let slot = match t.get_or_assign(abs.as_bytes(), w.slots, w.file_size) {
        Ok((s, _)) => s,
        Err(e) => {
            say!("truncate {} refused: {e}", Bytes(abs.as_bytes()));
            return ret_int(Err(libc::ENOSPC));
        }
    };
    let Some(di) = new_desc(slot, flags::WRITE) else {
        return ret_int(Err(libc::ENFILE));
    };
    let c = Ctx {
        w,
        t,
        d,
        desc: desc(di),
        slot_no: slot,
    };
    let r = set_size(&c, len as u64);
    release_desc(di);
    ret_int(r)
}

/// posix_fallocate returns the error number instead of setting errno.
fn posix_fallocate_on(c: &Ctx, fd: c_int, off: i64, len: i64) -> c_int {
    count(Call::Fallocate, "posix_fallocate", fd);
    match c.fallocate(0, off, len) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fd_calls! {
    /// `ftruncate(2)`.
    fn ftruncate(fd: c_int, len: off_t) -> c_int = |c| ftruncate_on(&c, fd, len);
    /// `ftruncate64`: `ftruncate`.
    fn ftruncate64(fd: c_int, len: off64_t) -> c_int = |c| ftruncate_on(&c, fd, len);
    /// `fallocate(2)` modes 0, `KEEP_SIZE`, `PUNCH_HOLE|KEEP_SIZE` and
    /// `ZERO_RANGE`.
    fn fallocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int = |c| {
        count(Call::Fallocate, "fallocate", fd);
        ret_int(c.fallocate(mode, off, len))
    };
    /// `fallocate64`: `fallocate`.
    fn fallocate64(fd: c_int, mode: c_int, off: off64_t, len: off64_t) -> c_int = |c| {
        count(Call::Fallocate, "fallocate64", fd);
        ret_int(c.fallocate(mode, off, len))
    };
    /// `posix_fallocate(3)`.
    fn posix_fallocate(fd: c_int, off: off_t, len: off_t) -> c_int =
        |c| posix_fallocate_on(&c, fd, off, len);
    /// `posix_fallocate64`: `posix_fallocate`.
    fn posix_fallocate64(fd: c_int, off: off64_t, len: off64_t) -> c_int =
        |c| posix_fallocate_on(&c, fd, off, len);
}

path_calls! {
    /// `truncate(2)`.
    fn truncate(path: *const c_char, len: off_t) -> c_int;
        claims (libc::AT_FDCWD, path) => |abs| truncate_path(&abs, len);
    /// `truncate64`: `truncate`.
    fn truncate64(path: *const c_char, len: off64_t) -> c_int;
        claims (libc::AT_FDCWD, path) => |abs| truncate_path(&abs, len);
}
