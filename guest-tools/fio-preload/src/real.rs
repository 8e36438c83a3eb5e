//! The next definitions of the interposed functions (normally glibc's),
//! found once with `dlsym(RTLD_NEXT, name)` and cached in atomics.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

/// A lazily resolved pointer to the next definition of a symbol.
pub struct NextFn {
    name: &'static [u8],
    ptr: AtomicPtr<c_void>,
}

impl NextFn {
    pub const fn new(name: &'static [u8]) -> Self {
        NextFn {
            name,
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The resolved address, or null when no later object defines it.
    pub fn get(&self) -> *mut c_void {
        let p = self.ptr.load(Ordering::Acquire);
        if !p.is_null() {
            return p;
        }
        // SAFETY: `name` is a NUL-terminated literal.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr().cast()) };
        self.ptr.store(p, Ordering::Release);
        p
    }
}

/// Sets errno and returns -1 (for a symbol no later object defines).
pub fn missing() -> i64 {
    crate::errno::set(libc::ENOSYS);
    -1
}

/// Declares `pub unsafe fn $name(args) -> ret` calling the next definition of
/// the C symbol `$sym`, returning -1 with ENOSYS when there is none.
macro_rules! next_fns {
    ($( $name:ident = $sym:literal fn($($arg:ident : $ty:ty),*) -> $ret:ty; )*) => {
        $(
            #[doc = concat!("The next definition of `", $sym, "`.")]
            ///
            /// # Safety
            #[doc = concat!("The arguments meet the C contract of `", $sym, "` (its man page).")]
            #[allow(dead_code)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                static F: NextFn = NextFn::new(concat!($sym, "\0").as_bytes());
                let p = F.get();
                if p.is_null() {
                    return missing() as $ret;
                }
                // SAFETY: `p` is the address dlsym gave for `$sym`, a C
                // function with this signature in glibc (and in anything
                // that interposes it, as this library does).
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                // SAFETY: the arguments meet `$sym`'s contract (ours, above).
                unsafe { f($($arg),*) }
            }
        )*
    };
}

use libc::{c_char, c_int, c_uint, iovec, mode_t, off64_t, off_t, size_t, ssize_t};

next_fns! {
    open = "open" fn(path: *const c_char, flags: c_int, mode: mode_t) -> c_int;
    open64 = "open64" fn(path: *const c_char, flags: c_int, mode: mode_t) -> c_int;
    openat = "openat" fn(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int;
    openat64 = "openat64" fn(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int;
    creat = "creat" fn(path: *const c_char, mode: mode_t) -> c_int;
    creat64 = "creat64" fn(path: *const c_char, mode: mode_t) -> c_int;
    close = "close" fn(fd: c_int) -> c_int;
    read = "read" fn(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    write = "write" fn(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    pread = "pread" fn(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t;
    pread64 = "pread64" fn(fd: c_int, buf: *mut c_void, n: size_t, off: off64_t) -> ssize_t;
    pwrite = "pwrite" fn(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t;
    pwrite64 = "pwrite64" fn(fd: c_int, buf: *const c_void, n: size_t, off: off64_t) -> ssize_t;
    readv = "readv" fn(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t;
    writev = "writev" fn(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t;
    preadv = "preadv" fn(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t;
    preadv64 = "preadv64" fn(fd: c_int, iov: *const iovec, cnt: c_int, off: off64_t) -> ssize_t;
    pwritev = "pwritev" fn(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t;
    pwritev64 = "pwritev64" fn(fd: c_int, iov: *const iovec, cnt: c_int, off: off64_t) -> ssize_t;
    preadv2 = "preadv2" fn(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t, flags: c_int) -> ssize_t;
    preadv64v2 = "preadv64v2" fn(fd: c_int, iov: *const iovec, cnt: c_int, off: off64_t, flags: c_int) -> ssize_t;
    pwritev2 = "pwritev2" fn(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t, flags: c_int) -> ssize_t;
    pwritev64v2 = "pwritev64v2" fn(fd: c_int, iov: *const iovec, cnt: c_int, off: off64_t, flags: c_int) -> ssize_t;
    lseek = "lseek" fn(fd: c_int, off: off_t, whence: c_int) -> off_t;
    lseek64 = "lseek64" fn(fd: c_int, off: off64_t, whence: c_int) -> off64_t;
    fsync = "fsync" fn(fd: c_int) -> c_int;
    fdatasync = "fdatasync" fn(fd: c_int) -> c_int;
    sync_file_range = "sync_file_range" fn(fd: c_int, off: off64_t, n: off64_t, flags: c_uint) -> c_int;
    fstat = "fstat" fn(fd: c_int, st: *mut libc::stat) -> c_int;
    fstat64 = "fstat64" fn(fd: c_int, st: *mut libc::stat64) -> c_int;
    stat = "stat" fn(path: *const c_char, st: *mut libc::stat) -> c_int;
    stat64 = "stat64" fn(path: *const c_char, st: *mut libc::stat64) -> c_int;
    lstat = "lstat" fn(path: *const c_char, st: *mut libc::stat) -> c_int;
    lstat64 = "lstat64" fn(path: *const c_char, st: *mut libc::stat64) -> c_int;
    fstatat = "fstatat" fn(dirfd: c_int, path: *const c_char, st: *mut libc::stat, flags: c_int) -> c_int;
    fstatat64 = "fstatat64" fn(dirfd: c_int, path: *const c_char, st: *mut libc::stat64, flags: c_int) -> c_int;
    statx = "statx" fn(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, st: *mut libc::statx) -> c_int;
    __fxstat = "__fxstat" fn(ver: c_int, fd: c_int, st: *mut libc::stat) -> c_int;
    __fxstat64 = "__fxstat64" fn(ver: c_int, fd: c_int, st: *mut libc::stat64) -> c_int;
    __xstat = "__xstat" fn(ver: c_int, path: *const c_char, st: *mut libc::stat) -> c_int;
    __xstat64 = "__xstat64" fn(ver: c_int, path: *const c_char, st: *mut libc::stat64) -> c_int;
    __lxstat = "__lxstat" fn(ver: c_int, path: *const c_char, st: *mut libc::stat) -> c_int;
    __lxstat64 = "__lxstat64" fn(ver: c_int, path: *const c_char, st: *mut libc::stat64) -> c_int;
    __fxstatat = "__fxstatat" fn(ver: c_int, dirfd: c_int, path: *const c_char, st: *mut libc::stat, flags: c_int) -> c_int;
    __fxstatat64 = "__fxstatat64" fn(ver: c_int, dirfd: c_int, path: *const c_char, st: *mut libc::stat64, flags: c_int) -> c_int;
    ftruncate = "ftruncate" fn(fd: c_int, len: off_t) -> c_int;
    ftruncate64 = "ftruncate64" fn(fd: c_int, len: off64_t) -> c_int;
    truncate = "truncate" fn(path: *const c_char, len: off_t) -> c_int;
    truncate64 = "truncate64" fn(path: *const c_char, len: off64_t) -> c_int;
    fallocate = "fallocate" fn(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int;
    fallocate64 = "fallocate64" fn(fd: c_int, mode: c_int, off: off64_t, len: off64_t) -> c_int;
    posix_fallocate = "posix_fallocate" fn(fd: c_int, off: off_t, len: off_t) -> c_int;
    posix_fallocate64 = "posix_fallocate64" fn(fd: c_int, off: off64_t, len: off64_t) -> c_int;
    posix_fadvise = "posix_fadvise" fn(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int;
    posix_fadvise64 = "posix_fadvise64" fn(fd: c_int, off: off64_t, len: off64_t, advice: c_int) -> c_int;
    dup = "dup" fn(fd: c_int) -> c_int;
    dup2 = "dup2" fn(fd: c_int, newfd: c_int) -> c_int;
    dup3 = "dup3" fn(fd: c_int, newfd: c_int, flags: c_int) -> c_int;
    unlink = "unlink" fn(path: *const c_char) -> c_int;
    unlinkat = "unlinkat" fn(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    access = "access" fn(path: *const c_char, mode: c_int) -> c_int;
    faccessat = "faccessat" fn(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int;
}
