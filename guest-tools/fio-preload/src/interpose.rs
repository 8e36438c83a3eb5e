//! The exported libc entry points. Each one serves intercepted descriptors or
//! claimed paths from the window and passes everything else to the next
//! definition (`dlsym(RTLD_NEXT, ...)`). The variadic `open` family is defined
//! with an explicit `mode` argument, as the x86_64 calling convention allows.

use core::ffi::{c_char, c_int, c_uint, c_void};

use libc::{iovec, mode_t, off64_t, off_t, size_t, ssize_t};

use crate::counters::Call;
use crate::errno::set as set_errno;
use crate::io::{ctx, set_size, Ctx};
use crate::log::{say, Bytes, ErrnoText};
use crate::path::{claimed, AbsPath};
use crate::state::{count, ready};
use crate::table::{bind, flags, lookup_fd, new_desc, release_desc, unbind, MAX_FDS};
use crate::{real, stat};

fn ret_int(r: Result<(), i32>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

fn ret_size(r: Result<usize, i32>) -> ssize_t {
    match r {
        Ok(n) => n as ssize_t,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// Reports a claimed path that cannot be served because setup failed.
fn setup_failed(call: &str, path: &AbsPath, why: &[u8]) -> c_int {
    say!(
        "{call} {} refused: interception is enabled but not usable: {}",
        Bytes(path.as_bytes()),
        Bytes(why)
    );
    set_errno(libc::ENODEV);
    -1
}

unsafe fn open_common(
    dirfd: c_int,
    path: *const c_char,
    oflags: c_int,
    mode: mode_t,
    pass: impl FnOnce() -> c_int,
) -> c_int {
    if oflags & (libc::O_DIRECTORY | libc::O_PATH) != 0 {
        return pass();
    }
    // SAFETY: path comes from the caller of open.
    let Some(abs) = (unsafe { claimed(dirfd, path) }) else {
        return pass();
    };
    let _ = mode;
    crate::state::count_path(Call::Open, "open", abs.as_bytes());
    let (w, t, _) = match ready() {
        Ok(x) => x,
        Err(why) => return setup_failed("open", &abs, why),
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
                set_errno(match e {
                    crate::table::SlotError::Full(_) => libc::ENOSPC,
                    crate::table::SlotError::PathTooLong => libc::ENAMETOOLONG,
                });
                return -1;
            }
        };
    if !new && oflags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL {
        set_errno(libc::EEXIST);
        return -1;
    }
    // A placeholder descriptor: fcntl, fadvise and close work on it, and no
    // file is created on disk.
    let mfd_flags = if oflags & libc::O_CLOEXEC != 0 {
        libc::MFD_CLOEXEC
    } else {
        0
    };
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_create, c"fio-intercept".as_ptr(), mfd_flags) }
        as c_int;
    if fd < 0 {
        let e = crate::errno::get();
        say!(
            "open {} refused: cannot create a placeholder descriptor: {}",
            Bytes(abs.as_bytes()),
            ErrnoText(e)
        );
        set_errno(e);
        return -1;
    }
    if fd as usize >= MAX_FDS {
        // SAFETY: closing the descriptor just created.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        say!(
            "open {} refused: descriptor {fd} is above the {MAX_FDS} the table covers",
            Bytes(abs.as_bytes())
        );
        set_errno(libc::EMFILE);
        return -1;
    }
    let Some(di) = new_desc(slot, fl) else {
        // SAFETY: closing the descriptor just created.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        say!(
            "open {} refused: too many intercepted files open at once",
            Bytes(abs.as_bytes())
        );
        set_errno(libc::EMFILE);
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

#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, oflags: c_int, mode: mode_t) -> c_int {
    unsafe {
        open_common(libc::AT_FDCWD, path, oflags, mode, || {
            real::open(path, oflags, mode)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, oflags: c_int, mode: mode_t) -> c_int {
    unsafe {
        open_common(libc::AT_FDCWD, path, oflags, mode, || {
            real::open64(path, oflags, mode)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, oflags: c_int) -> c_int {
    unsafe {
        open_common(libc::AT_FDCWD, path, oflags, 0, || {
            real::open(path, oflags, 0)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, oflags: c_int) -> c_int {
    unsafe {
        open_common(libc::AT_FDCWD, path, oflags, 0, || {
            real::open64(path, oflags, 0)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    oflags: c_int,
    mode: mode_t,
) -> c_int {
    unsafe {
        open_common(dirfd, path, oflags, mode, || {
            real::openat(dirfd, path, oflags, mode)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    oflags: c_int,
    mode: mode_t,
) -> c_int {
    unsafe {
        open_common(dirfd, path, oflags, mode, || {
            real::openat64(dirfd, path, oflags, mode)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn creat(path: *const c_char, mode: mode_t) -> c_int {
    let f = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    unsafe { open_common(libc::AT_FDCWD, path, f, mode, || real::creat(path, mode)) }
}

#[no_mangle]
pub unsafe extern "C" fn creat64(path: *const c_char, mode: mode_t) -> c_int {
    let f = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    unsafe { open_common(libc::AT_FDCWD, path, f, mode, || real::creat64(path, mode)) }
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if let Some(di) = unbind(fd) {
        count(Call::Close, "close", fd);
        release_desc(di);
    }
    unsafe { real::close(fd) }
}

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Read, "read", fd);
        return ret_size(unsafe { c.read(buf.cast(), n) });
    }
    unsafe { real::read(fd, buf, n) }
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Write, "write", fd);
        return ret_size(unsafe { c.write(buf.cast(), n) });
    }
    unsafe { real::write(fd, buf, n) }
}

unsafe fn pread_impl(c: &Ctx, buf: *mut c_void, n: size_t, off: i64) -> ssize_t {
    if off < 0 {
        return ret_size(Err(libc::EINVAL));
    }
    ret_size(unsafe { c.read_at(off as u64, buf.cast(), n) })
}

unsafe fn pwrite_impl(c: &Ctx, buf: *const c_void, n: size_t, off: i64) -> ssize_t {
    if off < 0 {
        return ret_size(Err(libc::EINVAL));
    }
    ret_size(unsafe { c.write_at(off as u64, buf.cast(), n) })
}

#[no_mangle]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Pread, "pread", fd);
        return unsafe { pread_impl(&c, buf, n, off) };
    }
    unsafe { real::pread(fd, buf, n, off) }
}

#[no_mangle]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: off64_t) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Pread, "pread64", fd);
        return unsafe { pread_impl(&c, buf, n, off) };
    }
    unsafe { real::pread64(fd, buf, n, off) }
}

#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Pwrite, "pwrite", fd);
        return unsafe { pwrite_impl(&c, buf, n, off) };
    }
    unsafe { real::pwrite(fd, buf, n, off) }
}

#[no_mangle]
pub unsafe extern "C" fn pwrite64(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    off: off64_t,
) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Pwrite, "pwrite64", fd);
        return unsafe { pwrite_impl(&c, buf, n, off) };
    }
    unsafe { real::pwrite64(fd, buf, n, off) }
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Readv, "readv", fd);
        return ret_size(unsafe { c.readv(iov, cnt) });
    }
    unsafe { real::readv(fd, iov, cnt) }
}

#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Writev, "writev", fd);
        return ret_size(unsafe { c.writev(iov, cnt) });
    }
    unsafe { real::writev(fd, iov, cnt) }
}

/// preadv/preadv2: offset -1 (preadv2 only) means the file offset.
unsafe fn preadv_impl(
    c: &Ctx,
    iov: *const iovec,
    cnt: c_int,
    off: i64,
    current_ok: bool,
) -> ssize_t {
    match off {
        -1 if current_ok => ret_size(unsafe { c.readv(iov, cnt) }),
        o if o < 0 => ret_size(Err(libc::EINVAL)),
        o => ret_size(unsafe { c.readv_at(o as u64, iov, cnt) }),
    }
}

/// pwritev/pwritev2; RWF_SYNC/RWF_DSYNC flush what was written.
unsafe fn pwritev_impl(
    c: &Ctx,
    iov: *const iovec,
    cnt: c_int,
    off: i64,
    rwf: c_int,
    current_ok: bool,
) -> ssize_t {
    let r = match off {
        -1 if current_ok => ret_size(unsafe { c.writev(iov, cnt) }),
        o if o < 0 => ret_size(Err(libc::EINVAL)),
        o => ret_size(unsafe { c.writev_at(o as u64, iov, cnt) }),
    };
    if r > 0 && rwf & (libc::RWF_SYNC | libc::RWF_DSYNC) != 0 {
        c.sync();
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn preadv(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Preadv, "preadv", fd);
        return unsafe { preadv_impl(&c, iov, cnt, off, false) };
    }
    unsafe { real::preadv(fd, iov, cnt, off) }
}

#[no_mangle]
pub unsafe extern "C" fn preadv64(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off64_t,
) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Preadv, "preadv64", fd);
        return unsafe { preadv_impl(&c, iov, cnt, off, false) };
    }
    unsafe { real::preadv64(fd, iov, cnt, off) }
}

#[no_mangle]
pub unsafe extern "C" fn preadv2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    rwf: c_int,
) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Preadv, "preadv2", fd);
        return unsafe { preadv_impl(&c, iov, cnt, off, true) };
    }
    unsafe { real::preadv2(fd, iov, cnt, off, rwf) }
}

#[no_mangle]
pub unsafe extern "C" fn preadv64v2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off64_t,
    rwf: c_int,
) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Preadv, "preadv64v2", fd);
        return unsafe { preadv_impl(&c, iov, cnt, off, true) };
    }
    unsafe { real::preadv64v2(fd, iov, cnt, off, rwf) }
}

#[no_mangle]
pub unsafe extern "C" fn pwritev(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Pwritev, "pwritev", fd);
        return unsafe { pwritev_impl(&c, iov, cnt, off, 0, false) };
    }
    unsafe { real::pwritev(fd, iov, cnt, off) }
}

#[no_mangle]
pub unsafe extern "C" fn pwritev64(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off64_t,
) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Pwritev, "pwritev64", fd);
        return unsafe { pwritev_impl(&c, iov, cnt, off, 0, false) };
    }
    unsafe { real::pwritev64(fd, iov, cnt, off) }
}

#[no_mangle]
pub unsafe extern "C" fn pwritev2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    rwf: c_int,
) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Pwritev, "pwritev2", fd);
        return unsafe { pwritev_impl(&c, iov, cnt, off, rwf, true) };
    }
    unsafe { real::pwritev2(fd, iov, cnt, off, rwf) }
}

#[no_mangle]
pub unsafe extern "C" fn pwritev64v2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off64_t,
    rwf: c_int,
) -> ssize_t {
    if let Some(c) = ctx(fd) {
        count(Call::Pwritev, "pwritev64v2", fd);
        return unsafe { pwritev_impl(&c, iov, cnt, off, rwf, true) };
    }
    unsafe { real::pwritev64v2(fd, iov, cnt, off, rwf) }
}

fn lseek_impl(c: &Ctx, off: i64, whence: c_int) -> i64 {
    match c.lseek(off, whence) {
        Ok(n) => n,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    if let Some(c) = ctx(fd) {
        count(Call::Lseek, "lseek", fd);
        return lseek_impl(&c, off, whence);
    }
    unsafe { real::lseek(fd, off, whence) }
}

#[no_mangle]
pub unsafe extern "C" fn lseek64(fd: c_int, off: off64_t, whence: c_int) -> off64_t {
    if let Some(c) = ctx(fd) {
        count(Call::Lseek, "lseek64", fd);
        return lseek_impl(&c, off, whence);
    }
    unsafe { real::lseek64(fd, off, whence) }
}

fn sync_impl(c: &Ctx, fd: c_int, call: Call, name: &str) -> c_int {
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

#[no_mangle]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    if let Some(c) = ctx(fd) {
        return sync_impl(&c, fd, Call::Fsync, "fsync");
    }
    unsafe { real::fsync(fd) }
}

#[no_mangle]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    if let Some(c) = ctx(fd) {
        return sync_impl(&c, fd, Call::Fdatasync, "fdatasync");
    }
    unsafe { real::fdatasync(fd) }
}

#[no_mangle]
pub unsafe extern "C" fn sync_file_range(fd: c_int, off: off64_t, n: off64_t, fl: c_uint) -> c_int {
    if let Some(c) = ctx(fd) {
        if off < 0 || n < 0 {
            return ret_int(Err(libc::EINVAL));
        }
        return sync_impl(&c, fd, Call::SyncFileRange, "sync_file_range");
    }
    unsafe { real::sync_file_range(fd, off, n, fl) }
}

unsafe fn fstat_impl(c: &Ctx, fd: c_int, st: *mut libc::stat) -> c_int {
    count(Call::Fstat, "fstat", fd);
    let (size, ino) = stat::describe_slot(c.t, c.slot_no);
    unsafe { stat::fill_stat(st, c.w, size, ino) };
    0
}

#[no_mangle]
pub unsafe extern "C" fn fstat(fd: c_int, st: *mut libc::stat) -> c_int {
    if let Some(c) = ctx(fd) {
        return unsafe { fstat_impl(&c, fd, st) };
    }
    unsafe { real::fstat(fd, st) }
}

#[no_mangle]
pub unsafe extern "C" fn fstat64(fd: c_int, st: *mut libc::stat64) -> c_int {
    if let Some(c) = ctx(fd) {
        return unsafe { fstat_impl(&c, fd, st.cast()) };
    }
    unsafe { real::fstat64(fd, st) }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstat(ver: c_int, fd: c_int, st: *mut libc::stat) -> c_int {
    if let Some(c) = ctx(fd) {
        return unsafe { fstat_impl(&c, fd, st) };
    }
    unsafe { real::__fxstat(ver, fd, st) }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstat64(ver: c_int, fd: c_int, st: *mut libc::stat64) -> c_int {
    if let Some(c) = ctx(fd) {
        return unsafe { fstat_impl(&c, fd, st.cast()) };
    }
    unsafe { real::__fxstat64(ver, fd, st) }
}

/// stat of a claimed path.
unsafe fn stat_path(abs: &AbsPath, st: *mut libc::stat) -> c_int {
    crate::state::count_path(Call::Stat, "stat", abs.as_bytes());
    match ready() {
        Ok((w, t, _)) => {
            let (size, ino) = stat::describe(w, t, abs.as_bytes());
            unsafe { stat::fill_stat(st, w, size, ino) };
            0
        }
        Err(why) => setup_failed("stat", abs, why),
    }
}

macro_rules! path_stat {
    ($name:ident, $ty:ty, ($($pre:ident: $pty:ty),*)) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($pre: $pty,)* path: *const c_char, st: *mut $ty) -> c_int {
            if let Some(abs) = unsafe { claimed(libc::AT_FDCWD, path) } {
                return unsafe { stat_path(&abs, st.cast()) };
            }
            unsafe { real::$name($($pre,)* path, st) }
        }
    };
}

path_stat!(stat, libc::stat, ());
path_stat!(stat64, libc::stat64, ());
path_stat!(lstat, libc::stat, ());
path_stat!(lstat64, libc::stat64, ());
path_stat!(__xstat, libc::stat, (ver: c_int));
path_stat!(__xstat64, libc::stat64, (ver: c_int));
path_stat!(__lxstat, libc::stat, (ver: c_int));
path_stat!(__lxstat64, libc::stat64, (ver: c_int));

/// `*at` stat: an fd with AT_EMPTY_PATH and "", or a path relative to dirfd.
unsafe fn fstatat_impl(
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat,
    at: c_int,
) -> Option<c_int> {
    if at & libc::AT_EMPTY_PATH != 0 && !path.is_null() && unsafe { *path } == 0 {
        let c = ctx(dirfd)?;
        return Some(unsafe { fstat_impl(&c, dirfd, st) });
    }
    let abs = unsafe { claimed(dirfd, path) }?;
    Some(unsafe { stat_path(&abs, st) })
}

#[no_mangle]
pub unsafe extern "C" fn fstatat(
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat,
    at: c_int,
) -> c_int {
    if let Some(r) = unsafe { fstatat_impl(dirfd, path, st, at) } {
        return r;
    }
    unsafe { real::fstatat(dirfd, path, st, at) }
}

#[no_mangle]
pub unsafe extern "C" fn fstatat64(
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat64,
    at: c_int,
) -> c_int {
    if let Some(r) = unsafe { fstatat_impl(dirfd, path, st.cast(), at) } {
        return r;
    }
    unsafe { real::fstatat64(dirfd, path, st, at) }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstatat(
    ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat,
    at: c_int,
) -> c_int {
    if let Some(r) = unsafe { fstatat_impl(dirfd, path, st, at) } {
        return r;
    }
    unsafe { real::__fxstatat(ver, dirfd, path, st, at) }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstatat64(
    ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat64,
    at: c_int,
) -> c_int {
    if let Some(r) = unsafe { fstatat_impl(dirfd, path, st.cast(), at) } {
        return r;
    }
    unsafe { real::__fxstatat64(ver, dirfd, path, st, at) }
}

#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    at: c_int,
    mask: c_uint,
    st: *mut libc::statx,
) -> c_int {
    if at & libc::AT_EMPTY_PATH != 0 && !path.is_null() && unsafe { *path } == 0 {
        if let Some(c) = ctx(dirfd) {
            count(Call::Statx, "statx", dirfd);
            let (size, ino) = stat::describe_slot(c.t, c.slot_no);
            unsafe { stat::fill_statx(st, c.w, size, ino) };
            return 0;
        }
    } else if let Some(abs) = unsafe { claimed(dirfd, path) } {
        crate::state::count_path(Call::Statx, "statx", abs.as_bytes());
        return match ready() {
            Ok((w, t, _)) => {
                let (size, ino) = stat::describe(w, t, abs.as_bytes());
                unsafe { stat::fill_statx(st, w, size, ino) };
                0
            }
            Err(why) => setup_failed("statx", &abs, why),
        };
    }
    unsafe { real::statx(dirfd, path, at, mask, st) }
}

fn ftruncate_impl(c: &Ctx, fd: c_int, len: i64) -> c_int {
    count(Call::Ftruncate, "ftruncate", fd);
    ret_int(c.truncate(len))
}

#[no_mangle]
pub unsafe extern "C" fn ftruncate(fd: c_int, len: off_t) -> c_int {
    if let Some(c) = ctx(fd) {
        return ftruncate_impl(&c, fd, len);
    }
    unsafe { real::ftruncate(fd, len) }
}

#[no_mangle]
pub unsafe extern "C" fn ftruncate64(fd: c_int, len: off64_t) -> c_int {
    if let Some(c) = ctx(fd) {
        return ftruncate_impl(&c, fd, len);
    }
    unsafe { real::ftruncate64(fd, len) }
}

/// truncate(2) of a claimed path: sets its slot's size (giving it a slot).
fn truncate_path(abs: &AbsPath, len: i64) -> c_int {
    crate::state::count_path(Call::Ftruncate, "truncate", abs.as_bytes());
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
        desc: crate::table::desc(di),
        slot_no: slot,
    };
    let r = set_size(&c, len as u64);
    release_desc(di);
    ret_int(r)
}

#[no_mangle]
pub unsafe extern "C" fn truncate(path: *const c_char, len: off_t) -> c_int {
    if let Some(abs) = unsafe { claimed(libc::AT_FDCWD, path) } {
        return truncate_path(&abs, len);
    }
    unsafe { real::truncate(path, len) }
}

#[no_mangle]
pub unsafe extern "C" fn truncate64(path: *const c_char, len: off64_t) -> c_int {
    if let Some(abs) = unsafe { claimed(libc::AT_FDCWD, path) } {
        return truncate_path(&abs, len);
    }
    unsafe { real::truncate64(path, len) }
}

#[no_mangle]
pub unsafe extern "C" fn fallocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    if let Some(c) = ctx(fd) {
        count(Call::Fallocate, "fallocate", fd);
        return ret_int(c.fallocate(mode, off, len));
    }
    unsafe { real::fallocate(fd, mode, off, len) }
}

#[no_mangle]
pub unsafe extern "C" fn fallocate64(fd: c_int, mode: c_int, off: off64_t, len: off64_t) -> c_int {
    if let Some(c) = ctx(fd) {
        count(Call::Fallocate, "fallocate64", fd);
        return ret_int(c.fallocate(mode, off, len));
    }
    unsafe { real::fallocate64(fd, mode, off, len) }
}

/// posix_fallocate returns the error number instead of setting errno.
fn posix_fallocate_impl(c: &Ctx, fd: c_int, off: i64, len: i64) -> c_int {
    count(Call::Fallocate, "posix_fallocate", fd);
    match c.fallocate(0, off, len) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

#[no_mangle]
pub unsafe extern "C" fn posix_fallocate(fd: c_int, off: off_t, len: off_t) -> c_int {
    if let Some(c) = ctx(fd) {
        return posix_fallocate_impl(&c, fd, off, len);
    }
    unsafe { real::posix_fallocate(fd, off, len) }
}

#[no_mangle]
pub unsafe extern "C" fn posix_fallocate64(fd: c_int, off: off64_t, len: off64_t) -> c_int {
    if let Some(c) = ctx(fd) {
        return posix_fallocate_impl(&c, fd, off, len);
    }
    unsafe { real::posix_fallocate64(fd, off, len) }
}

/// Advice is accepted and ignored: the window has no page cache to manage.
fn fadvise_impl(fd: c_int, advice: c_int) -> c_int {
    count(Call::Fadvise, "posix_fadvise", fd);
    if (libc::POSIX_FADV_NORMAL..=libc::POSIX_FADV_NOREUSE).contains(&advice) {
        0
    } else {
        libc::EINVAL
    }
}

#[no_mangle]
pub unsafe extern "C" fn posix_fadvise(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int {
    if lookup_fd(fd).is_some() {
        return fadvise_impl(fd, advice);
    }
    unsafe { real::posix_fadvise(fd, off, len, advice) }
}

#[no_mangle]
pub unsafe extern "C" fn posix_fadvise64(
    fd: c_int,
    off: off64_t,
    len: off64_t,
    advice: c_int,
) -> c_int {
    if lookup_fd(fd).is_some() {
        return fadvise_impl(fd, advice);
    }
    unsafe { real::posix_fadvise64(fd, off, len, advice) }
}

/// After a successful dup onto `newfd`, shares `fd`'s description with it.
fn dup_bind(fd: c_int, newfd: c_int) {
    if newfd < 0 {
        return;
    }
    if newfd != fd {
        if let Some(old) = unbind(newfd) {
            release_desc(old);
        }
    }
    if let Some(di) = lookup_fd(fd) {
        count(Call::Dup, "dup", fd);
        if (newfd as usize) < MAX_FDS && newfd != fd {
            bind(newfd, di, true);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let r = unsafe { real::dup(fd) };
    dup_bind(fd, r);
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, newfd: c_int) -> c_int {
    let r = unsafe { real::dup2(fd, newfd) };
    dup_bind(fd, r);
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, newfd: c_int, fl: c_int) -> c_int {
    let r = unsafe { real::dup3(fd, newfd, fl) };
    dup_bind(fd, r);
    r
}

/// unlink of a claimed path succeeds and leaves the slot and its data: the
/// device window is the file.
fn unlink_claimed(abs: &AbsPath) -> c_int {
    crate::state::count_path(Call::Unlink, "unlink", abs.as_bytes());
    match ready() {
        Ok(_) => 0,
        Err(why) => setup_failed("unlink", abs, why),
    }
}

#[no_mangle]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    if let Some(abs) = unsafe { claimed(libc::AT_FDCWD, path) } {
        return unlink_claimed(&abs);
    }
    unsafe { real::unlink(path) }
}

#[no_mangle]
pub unsafe extern "C" fn unlinkat(dirfd: c_int, path: *const c_char, at: c_int) -> c_int {
    if at & libc::AT_REMOVEDIR == 0 {
        if let Some(abs) = unsafe { claimed(dirfd, path) } {
            return unlink_claimed(&abs);
        }
    }
    unsafe { real::unlinkat(dirfd, path, at) }
}

/// A claimed path always exists and is readable and writable.
fn access_claimed(abs: &AbsPath, mode: c_int) -> c_int {
    crate::state::count_path(Call::Access, "access", abs.as_bytes());
    match ready() {
        Ok(_) if mode & libc::X_OK != 0 => ret_int(Err(libc::EACCES)),
        Ok(_) => 0,
        Err(why) => setup_failed("access", abs, why),
    }
}

#[no_mangle]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    if let Some(abs) = unsafe { claimed(libc::AT_FDCWD, path) } {
        return access_claimed(&abs, mode);
    }
    unsafe { real::access(path, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    at: c_int,
) -> c_int {
    if let Some(abs) = unsafe { claimed(dirfd, path) } {
        return access_claimed(&abs, mode);
    }
    unsafe { real::faccessat(dirfd, path, mode, at) }
}
