//! SIGINT/SIGTERM end the guest tools' loops cleanly (fault-monitor,
//! madvise-collector, ioriot capture), so their final report (the JSON the
//! lab's suites read) is still written: `install` once, then poll
//! `requested` in the loop.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the stop flag instead of ending the process.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)`, the handler type
        // signal(2) expects, and only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether SIGINT or SIGTERM has arrived since `install`.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_sets_the_flag_instead_of_ending_the_process() {
        install();
        assert!(!requested());
        // SAFETY: raise(3) takes no pointers; with the handler installed
        // SIGTERM only sets the flag instead of ending the test process.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        assert!(requested());
    }
}
