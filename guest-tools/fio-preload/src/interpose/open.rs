//! `open`, `open64`, `__open_2`, `__open64_2`, `openat`, `openat64`, `creat`
//! and `creat64`: a claimed path gets a slot and a placeholder descriptor.

use core::ffi::{c_char, c_int};

use libc::mode_t;

use super::setup_failed;
use crate::counters::Call;
use crate::errno;
use crate::io::{set_size, Ctx};
use crate::log::{say, Bytes, ErrnoText};
use crate::path::AbsPath;
use crate::real;
use crate::state::ready;
use crate::table::{bind, flags, new_desc, MAX_FDS};

/// Flags `creat` opens with.
const CREAT: c_int = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;

/// Whether `open` may claim the path at all: directories and `O_PATH`
/// handles are never files of the window.
fn claims_files(oflags: c_int) -> bool {
    oflags & (libc::O_DIRECTORY | libc::O_PATH) == 0
}

path_calls! {
    /// `open(2)`.
    fn open(path: *const c_char, oflags: c_int, mode: mode_t) -> c_int;
        claims (libc::AT_FDCWD, path) if claims_files(oflags)
        => |abs| open_claimed(&abs, oflags, mode);
    /// `open64`: `open` (off_t is 64-bit).
    fn open64(path: *const c_char, oflags: c_int, mode: mode_t) -> c_int;
        claims (libc::AT_FDCWD, path) if claims_files(oflags)
        => |abs| open_claimed(&abs, oflags, mode);
    /// `__open_2`: fortified `open` without a mode.
    fn __open_2(path: *const c_char, oflags: c_int) -> c_int;
        claims (libc::AT_FDCWD, path) if claims_files(oflags)
        => |abs| open_claimed(&abs, oflags, 0),
        else real::open(path, oflags, 0);
    /// `__open64_2`: fortified `open64` without a mode.
    fn __open64_2(path: *const c_char, oflags: c_int) -> c_int;
        claims (libc::AT_FDCWD, path) if claims_files(oflags)
        => |abs| open_claimed(&abs, oflags, 0),
        else real::open64(path, oflags, 0);
    /// `openat(2)`.
    fn openat(dirfd: c_int, path: *const c_char, oflags: c_int, mode: mode_t) -> c_int;
        claims (dirfd, path) if claims_files(oflags)
        => |abs| open_claimed(&abs, oflags, mode);
    /// `openat64`: `openat`.
    fn openat64(dirfd: c_int, path: *const c_char, oflags: c_int, mode: mode_t) -> c_int;
        claims (dirfd, path) if claims_files(oflags)
        => |abs| open_claimed(&abs, oflags, mode);
    /// `creat(2)`: `open` with `O_CREAT|O_WRONLY|O_TRUNC`.
    fn creat(path: *const c_char, mode: mode_t) -> c_int;
        claims (libc::AT_FDCWD, path) => |abs| open_claimed(&abs, CREAT, mode);
    /// `creat64`: `creat`.
    fn creat64(path: *const c_char, mode: mode_t) -> c_int;
        claims (libc::AT_FDCWD, path) => |abs| open_claimed(&abs, CREAT, mode);
}

/// Opens claimed path `abs`: gives it a slot (or finds its slot) and binds a
/// placeholder descriptor to a new description of it. `mode` is ignored: the
/// file has no owner or permissions on disk.
fn open_claimed(abs: &AbsPath, oflags: c_int, _mode: mode_t) -> c_int {
    crate::state::count_path(Call::Open, "open", abs.as_bytes());
    let (w, t, _) = match ready() {
        Ok(x) => x,
        Err(why) => return setup_failed("open", abs, why),
    };
    let acc = oflags & libc::O_ACCMODE;
    let mut fl = 0;
    if acc == libc::O_RDONLY || acc == libc::O_RDWR {
        fl |= flags::READ;
    }
    if acc == libc::O_WRONLY || acc == libc::O_RDWR {
        fl |= flags::WRITE;
    }
    if oflags & libc::O_APPEND != 0 {
        fl |= flags::APPEND;
    }
    if oflags & libc::O_DSYNC != 0 {
        fl |= flags::SYNC;
    }
    let trunc = oflags & libc::O_TRUNC != 0 && fl & flags::WRITE != 0;
    let (slot, new) =
        match t.get_or_assign(abs.as_bytes(), w.slots, if trunc { 0 } else { w.file_size }) {
            Ok(x) => x,
            Err(e) => {
                say!("open {} refused: {e}", Bytes(abs.as_bytes()));
                errno::set(match e {
                    crate::table::SlotError::Full(_) => libc::ENOSPC,
                    crate::table::SlotError::PathTooLong => libc::ENAMETOOLONG,
                });
                return -1;
            }
        };
    if !new && oflags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL {
        errno::set(libc::EEXIST);
        return -1;
    }
    // A placeholder descriptor: fcntl, fadvise and close work on it, and no
    // file is created on disk.
    let mfd_flags = if oflags & libc::O_CLOEXEC != 0 {
        libc::MFD_CLOEXEC
    } else {
        0
    };
    // SAFETY: memfd_create reads only the NUL-terminated name literal.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_create, c"fio-intercept".as_ptr(), mfd_flags) }
        as c_int;
    if fd < 0 {
        let e = crate::errno::get();
        say!(
            "open {} refused: cannot create a placeholder descriptor: {}",
            Bytes(abs.as_bytes()),
            ErrnoText(e)
        );
        errno::set(e);
        return -1;
    }
    if fd as usize >= MAX_FDS {
        // SAFETY: closes the descriptor just created, which nothing else has.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        say!(
            "open {} refused: descriptor {fd} is above the {MAX_FDS} the table covers",
            Bytes(abs.as_bytes())
        );
        errno::set(libc::EMFILE);
        return -1;
    }
    let Some(di) = new_desc(slot, fl) else {
        // SAFETY: closes the descriptor just created, which nothing else has.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        say!(
            "open {} refused: too many intercepted files open at once",
            Bytes(abs.as_bytes())
        );
        errno::set(libc::EMFILE);
        return -1;
    };
    if trunc && !new {
        let c = Ctx::for_desc(w, t, di, slot);
        let _ = set_size(&c, 0);
    }
    bind(fd, di, false);
    if crate::state::debug() > 0 {
        say!(
            "open {} -> fd {fd}: slot {slot} at device offset {:#x}, size {:#x}{}",
            Bytes(abs.as_bytes()),
            crate::state::mem_offset() + slot as u64 * w.file_size,
            t.slot(slot)
                .size
                .load(core::sync::atomic::Ordering::Acquire),
            if new { " (new slot)" } else { "" }
        );
    }
    fd
}
