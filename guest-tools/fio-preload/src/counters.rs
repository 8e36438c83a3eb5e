//! The interposed calls counted for `FIO_DEBUG` and the counters themselves,
//! which live in the slot table's shared mapping so that the process that
//! loaded the library also sees the calls of its forked fio jobs.

use core::sync::atomic::{AtomicU64, Ordering};

/// Defines `Call` with one variant per counted call, its `ALL` list in
/// counter order and its report names, from one list, so none of them can
/// fall out of step with the others.
macro_rules! calls {
    ($($variant:ident = $name:literal,)*) => {
        /// Interposed functions counted for `FIO_DEBUG`.
        #[derive(Clone, Copy)]
        #[repr(usize)]
        pub enum Call {
            $($variant,)*
        }

        impl Call {
            /// Every counted call, in counter (and report) order.
            pub const ALL: &'static [Call] = &[$(Call::$variant,)*];

            /// The name shown in the `FIO_DEBUG` report.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Call::$variant => $name,)*
                }
            }
        }
    };
}

calls! {
    Open = "open",
    Close = "close",
    Read = "read",
    Write = "write",
    Pread = "pread",
    Pwrite = "pwrite",
    Readv = "readv",
    Writev = "writev",
    Preadv = "preadv",
    Pwritev = "pwritev",
    Lseek = "lseek",
    Fsync = "fsync",
    Fdatasync = "fdatasync",
    SyncFileRange = "sync_file_range",
    Fstat = "fstat",
    Stat = "stat",
    Statx = "statx",
    Ftruncate = "ftruncate",
    Fallocate = "fallocate",
    Fadvise = "fadvise",
    Dup = "dup",
    Unlink = "unlink",
    Access = "access",
}

/// Number of counted calls.
pub const CALLS: usize = Call::ALL.len();

/// One counter per call; all-zero bytes are a valid, zeroed set.
#[repr(transparent)]
pub struct Counters([AtomicU64; CALLS]);

impl Counters {
    /// Counts one `call`.
    #[inline]
    pub fn add(&self, call: Call) {
        self.0[call as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Each call's report name and count, in report order.
    pub fn each(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Call::ALL
            .iter()
            .zip(&self.0)
            .map(|(call, n)| (call.name(), n.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::Call;

    #[test]
    fn each_call_indexes_its_own_counter_and_keeps_its_report_name() {
        for (i, call) in Call::ALL.iter().enumerate() {
            assert_eq!(*call as usize, i);
        }
        // The FIO_DEBUG report (`open=2 pread=16384 ...`) is read by scripts.
        let names: Vec<_> = Call::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "open",
                "close",
                "read",
                "write",
                "pread",
                "pwrite",
                "readv",
                "writev",
                "preadv",
                "pwritev",
                "lseek",
                "fsync",
                "fdatasync",
                "sync_file_range",
                "fstat",
                "stat",
                "statx",
                "ftruncate",
                "fallocate",
                "fadvise",
                "dup",
                "unlink",
                "access",
            ]
        );
    }
}
