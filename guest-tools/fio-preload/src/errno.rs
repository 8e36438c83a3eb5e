//! The calling thread's `errno`, read and set around raw system calls and
//! by the interposed calls that fail.

/// The calling thread's errno.
pub fn get() -> i32 {
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // valid for reads for the thread's lifetime.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
pub fn set(e: i32) {
    // SAFETY: as in `get`; the slot is the calling thread's own, so no other
    // thread writes it.
    unsafe { *libc::__errno_location() = e };
}
