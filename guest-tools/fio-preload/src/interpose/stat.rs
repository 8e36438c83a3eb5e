//! The `stat` families: `fstat`, `fstat64`, `__fxstat`, `__fxstat64` (by
//! descriptor); `stat`, `stat64`, `lstat`, `lstat64`, `__xstat`, `__xstat64`,
//! `__lxstat`, `__lxstat64` (by path); `fstatat`, `fstatat64`, `__fxstatat`,
//! `__fxstatat64` (either); and `statx`. An intercepted file is a regular
//! file whose size is its slot's logical size (see `crate::stat`).

use core::ffi::{c_char, c_int, c_uint};

use super::setup_failed;
use crate::counters::Call;
use crate::io::{ctx, Ctx};
use crate::path::AbsPath;
use crate::real;
use crate::stat::{describe, describe_slot, fill_stat, fill_statx};
use crate::state::claimed;
use crate::state::{count, count_path, ready};

/// fstat of an intercepted descriptor.
///
/// # Safety
/// `st` is valid for writes of a `struct stat`.
unsafe fn fstat_on(c: &Ctx, fd: c_int, st: *mut libc::stat) -> c_int {
    count(Call::Fstat, "fstat", fd);
    let (size, ino) = describe_slot(c.t, c.slot_no);
    // SAFETY: passed on from this function's contract.
    unsafe { fill_stat(st, c.w, size, ino) };
    0
}

/// stat of a claimed path.
///
/// # Safety
/// `st` is valid for writes of a `struct stat`.
unsafe fn stat_path(abs: &AbsPath, st: *mut libc::stat) -> c_int {
    count_path(Call::Stat, "stat", abs.as_bytes());
    match ready() {
        Ok((w, t, _)) => {
            let (size, ino) = describe(w, t, abs.as_bytes());
            // SAFETY: passed on from this function's contract.
            unsafe { fill_stat(st, w, size, ino) };
            0
        }
        Err(why) => setup_failed("stat", abs, why),
    }
}

/// Defines the descriptor `stat` calls: `fn name[ver](fd, st: *mut T);`,
/// where `[ver]` names glibc's leading version argument of the `__` forms.
macro_rules! fd_stats {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident$([$ver:ident])?(fd: c_int, st: *mut $st:ty);
    )*) => {$(
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// The C function's contract: `st` is valid for writes of one `T`.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($ver: c_int,)? fd: c_int, st: *mut $st) -> c_int {
            if let Some(c) = ctx(fd) {
                // SAFETY: `st` is writable for a `T` (contract above), and
                // `stat` and `stat64` are one layout on x86_64 (asserted in
                // `crate::stat`), so it is writable for a `struct stat`.
                return unsafe { fstat_on(&c, fd, st.cast()) };
            }
            // SAFETY: the caller's arguments, passed on unchanged, meet the
            // next definition's contract, which is this same C function's.
            unsafe { real::$name($($ver,)? fd, st) }
        }
    )*};
}

fd_stats! {
    /// `fstat(2)`.
    fn fstat(fd: c_int, st: *mut libc::stat);
    /// `fstat64`: `fstat`.
    fn fstat64(fd: c_int, st: *mut libc::stat64);
    /// `__fxstat`: glibc's versioned `fstat` (before 2.33).
    fn __fxstat[ver](fd: c_int, st: *mut libc::stat);
    /// `__fxstat64`: glibc's versioned `fstat64` (before 2.33).
    fn __fxstat64[ver](fd: c_int, st: *mut libc::stat64);
}

/// Defines the path `stat` calls: `fn name[ver](path, st: *mut T);` (`[ver]`
/// as in `fd_stats`).
/// `lstat` is `stat` here: a claimed path is never a symbolic link.
macro_rules! path_stats {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident$([$ver:ident])?(path: *const c_char, st: *mut $st:ty);
    )*) => {$(
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// The C function's contract: `path` is null or a NUL-terminated
        /// string, and `st` is valid for writes of one `T`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            $($ver: c_int,)? path: *const c_char, st: *mut $st
        ) -> c_int {
            // SAFETY: `path` is null or a C string (contract above), all
            // that `claimed` requires.
            if let Some(abs) = unsafe { claimed(libc::AT_FDCWD, path) } {
                // SAFETY: `st` is writable for a `T`, one layout with
                // `struct stat` on x86_64 (asserted in `crate::stat`).
                return unsafe { stat_path(&abs, st.cast()) };
            }
            // SAFETY: the caller's arguments, passed on unchanged, meet the
            // next definition's contract, which is this same C function's.
            unsafe { real::$name($($ver,)? path, st) }
        }
    )*};
}

path_stats! {
    /// `stat(2)`.
    fn stat(path: *const c_char, st: *mut libc::stat);
    /// `stat64`: `stat`.
    fn stat64(path: *const c_char, st: *mut libc::stat64);
    /// `lstat(2)`.
    fn lstat(path: *const c_char, st: *mut libc::stat);
    /// `lstat64`: `lstat`.
    fn lstat64(path: *const c_char, st: *mut libc::stat64);
    /// `__xstat`: glibc's versioned `stat` (before 2.33).
    fn __xstat[ver](path: *const c_char, st: *mut libc::stat);
    /// `__xstat64`: glibc's versioned `stat64` (before 2.33).
    fn __xstat64[ver](path: *const c_char, st: *mut libc::stat64);
    /// `__lxstat`: glibc's versioned `lstat` (before 2.33).
    fn __lxstat[ver](path: *const c_char, st: *mut libc::stat);
    /// `__lxstat64`: glibc's versioned `lstat64` (before 2.33).
    fn __lxstat64[ver](path: *const c_char, st: *mut libc::stat64);
}

/// `*at` stat: an fd with AT_EMPTY_PATH and "", or a path relative to dirfd.
///
/// # Safety
/// `path` is null or a C string; `st` is valid for writes of a `struct stat`.
unsafe fn fstatat_on(
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat,
    at: c_int,
) -> Option<c_int> {
    // SAFETY: `path` is not null, so it is a C string (contract above),
    // whose first byte is readable.
    if at & libc::AT_EMPTY_PATH != 0 && !path.is_null() && unsafe { *path } == 0 {
        let c = ctx(dirfd)?;
        // SAFETY: passed on from this function's contract.
        return Some(unsafe { fstat_on(&c, dirfd, st) });
    }
    // SAFETY: passed on from this function's contract.
    let abs = unsafe { claimed(dirfd, path) }?;
    // SAFETY: passed on from this function's contract.
    Some(unsafe { stat_path(&abs, st) })
}

/// Defines the `*at` stat calls: `fn name[ver](dirfd, path, st: *mut T, at);`
/// (`[ver]` as in `fd_stats`).
macro_rules! at_stats {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident$([$ver:ident])?(
            dirfd: c_int, path: *const c_char, st: *mut $st:ty, at: c_int
        );
    )*) => {$(
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// The C function's contract: `path` is null or a NUL-terminated
        /// string, and `st` is valid for writes of one `T`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            $($ver: c_int,)? dirfd: c_int, path: *const c_char, st: *mut $st, at: c_int
        ) -> c_int {
            // SAFETY: `path` is null or a C string and `st` is writable for a
            // `T` (contract above), one layout with `struct stat` on x86_64
            // (asserted in `crate::stat`).
            if let Some(r) = unsafe { fstatat_on(dirfd, path, st.cast(), at) } {
                return r;
            }
            // SAFETY: the caller's arguments, passed on unchanged, meet the
            // next definition's contract, which is this same C function's.
            unsafe { real::$name($($ver,)? dirfd, path, st, at) }
        }
    )*};
}

at_stats! {
    /// `fstatat(2)`.
    fn fstatat(dirfd: c_int, path: *const c_char, st: *mut libc::stat, at: c_int);
    /// `fstatat64`: `fstatat`.
    fn fstatat64(dirfd: c_int, path: *const c_char, st: *mut libc::stat64, at: c_int);
    /// `__fxstatat`: glibc's versioned `fstatat` (before 2.33).
    fn __fxstatat[ver](dirfd: c_int, path: *const c_char, st: *mut libc::stat, at: c_int);
    /// `__fxstatat64`: glibc's versioned `fstatat64` (before 2.33).
    fn __fxstatat64[ver](dirfd: c_int, path: *const c_char, st: *mut libc::stat64, at: c_int);
}

/// `statx(2)`.
///
/// # Safety
/// The C function's contract: `path` is null or a NUL-terminated string,
/// and `st` is valid for writes of a `struct statx`.
#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    at: c_int,
    mask: c_uint,
    st: *mut libc::statx,
) -> c_int {
    // SAFETY: `path` is not null, so it is a C string (contract above), whose
    // first byte is readable.
    if at & libc::AT_EMPTY_PATH != 0 && !path.is_null() && unsafe { *path } == 0 {
        if let Some(c) = ctx(dirfd) {
            count(Call::Statx, "statx", dirfd);
            let (size, ino) = describe_slot(c.t, c.slot_no);
            // SAFETY: `st` is writable for a `struct statx` (contract above).
            unsafe { fill_statx(st, c.w, size, ino) };
            return 0;
        }
    // SAFETY: `path` is null or a C string (contract above).
    } else if let Some(abs) = unsafe { claimed(dirfd, path) } {
        count_path(Call::Statx, "statx", abs.as_bytes());
        return match ready() {
            Ok((w, t, _)) => {
                let (size, ino) = describe(w, t, abs.as_bytes());
                // SAFETY: `st` is writable for a `struct statx` (contract above).
                unsafe { fill_statx(st, w, size, ino) };
                0
            }
            Err(why) => setup_failed("statx", &abs, why),
        };
    }
    // SAFETY: the caller's arguments, passed on unchanged, meet the next
    // `statx`'s contract, which is this function's.
    unsafe { real::statx(dirfd, path, at, mask, st) }
}
