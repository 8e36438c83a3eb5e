//! `close`, `dup`, `dup2` and `dup3`: the descriptor table follows the
//! kernel's, so an intercepted description lives as long as a descriptor of
//! it does.

use core::ffi::c_int;

use crate::counters::Call;
use crate::real;
use crate::state::count;
use crate::table::{bind, lookup_fd, release_desc, unbind, MAX_FDS};

/// `close(2)`: drops the descriptor's reference to its description, then
/// closes the descriptor (the placeholder, for an intercepted one).
///
/// # Safety
/// None beyond `close`'s own: it takes no pointers, so `fd` may be anything
/// (a bad descriptor is `EBADF`).
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if let Some(di) = unbind(fd) {
        count(Call::Close, "close", fd);
        release_desc(di);
    }
    // SAFETY: the caller's argument, passed on unchanged, meets the next
    // `close`'s contract, which is this function's.
    unsafe { real::close(fd) }
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

/// Defines `dup`-like calls: the kernel duplicates the descriptor (the
/// placeholder, for an intercepted one) and the copy shares the description.
macro_rules! dups {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident(fd: c_int $(, $arg:ident: c_int)*);
    )*) => {$(
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// None beyond the C function's own: it takes no pointers, so the
        /// descriptors and flags may be anything (bad ones are `EBADF`).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int $(, $arg: c_int)*) -> c_int {
            // SAFETY: the caller's arguments, passed on unchanged, meet the
            // next definition's contract, which is this same C function's.
            let r = unsafe { real::$name(fd $(, $arg)*) };
            dup_bind(fd, r);
            r
        }
    )*};
}

dups! {
    /// `dup(2)`.
    fn dup(fd: c_int);
    /// `dup2(2)`.
    fn dup2(fd: c_int, newfd: c_int);
    /// `dup3(2)`.
    fn dup3(fd: c_int, newfd: c_int, fl: c_int);
}
