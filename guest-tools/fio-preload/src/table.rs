//! Slots (one per intercepted path, shared across forked processes), open
//! file descriptions (offset and flags, per process) and the fd table.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::counters::Counters;

/// Most intercepted paths per process tree.
pub const MAX_SLOTS: usize = 1024;
/// Longest intercepted path kept (longer paths are refused with ENAMETOOLONG).
pub const SLOT_PATH_MAX: usize = 1024;
/// Most intercepted open file descriptions at once per process.
pub const MAX_DESCS: usize = 4096;
/// File descriptors at or above this number are never intercepted.
pub const MAX_FDS: usize = 65536;

/// One intercepted file: its path and logical size.
#[repr(C)]
pub struct Slot {
    /// Logical file size; at most FIO_FILE_SIZE.
    pub size: AtomicU64,
    /// Serializes size changes (extending writes, truncate, O_APPEND).
    pub lock: AtomicU32,
    path_len: AtomicU32,
    path: UnsafeCell<[u8; SLOT_PATH_MAX]>,
}

/// The slot table, placed in a shared anonymous mapping.
#[repr(C)]
pub struct SlotTable {
    lock: AtomicU32,
    count: AtomicU32,
    counters: Counters,
    slots: [Slot; MAX_SLOTS],
}

// SAFETY: a slot's path is written only before `count` publishes it, and
// read only after; everything else is atomic.
unsafe impl Sync for SlotTable {}

/// Why a slot could not be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("All {0} slots of the window are taken: FIO_MEM_SIZE / FIO_FILE_SIZE files fit; raise FIO_MEM_SIZE or lower FIO_FILE_SIZE.")]
    Full(u64),
    #[error("The path is longer than {SLOT_PATH_MAX} bytes.")]
    PathTooLong,
}

/// A simple spin lock on an atomic word (valid across processes).
pub struct SpinGuard<'a>(&'a AtomicU32);

impl<'a> SpinGuard<'a> {
    pub fn lock(word: &'a AtomicU32) -> Self {
        while word
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        SpinGuard(word)
    }
}

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl SlotTable {
    /// Maps a zeroed table shared with future children.
    pub fn new() -> Result<&'static SlotTable, i32> {
        // SAFETY: an anonymous shared mapping; zeroed memory is a valid table.
        unsafe {
            let p = libc::mmap(
                core::ptr::null_mut(),
                core::mem::size_of::<SlotTable>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(crate::errno::get());
            }
            Ok(&*p.cast::<SlotTable>())
        }
    }

    /// Per-call counters for FIO_DEBUG, shared by forked processes.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn slot(&self, i: u32) -> &Slot {
        &self.slots[i as usize]
    }

    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    fn find(&self, path: &[u8], upto: u32) -> Option<u32> {
        (0..upto).find(|&i| {
            let s = &self.slots[i as usize];
            let n = s.path_len.load(Ordering::Acquire) as usize;
            // SAFETY: published slots are never written again.
            unsafe { (&(*s.path.get()))[..n] == *path }
        })
    }

    /// The slot of `path`, if it has one.
    pub fn lookup(&self, path: &[u8]) -> Option<u32> {
        self.find(path, self.count())
    }

    /// The slot of `path`, given a new one (with logical size `initial_size`)
    /// when it has none. The flag says whether it was new.
    pub fn get_or_assign(
        &self,
        path: &[u8],
        capacity: u64,
        initial_size: u64,
    ) -> Result<(u32, bool), SlotError> {
        if let Some(i) = self.lookup(path) {
            return Ok((i, false));
        }
        if path.len() > SLOT_PATH_MAX {
            return Err(SlotError::PathTooLong);
        }
        let _g = SpinGuard::lock(&self.lock);
        let n = self.count.load(Ordering::Acquire);
        if let Some(i) = self.find(path, n) {
            return Ok((i, false));
        }
        if n as u64 >= capacity {
            return Err(SlotError::Full(capacity));
        }
        // The slot is not visible until `count` is raised, so it is ours to
        // fill; it lives in shared memory so it is written through a pointer.
        let slot = &self.slots[n as usize];
        // SAFETY: no other thread or process reads slot n before count > n.
        unsafe {
            let dst = slot.path.get().cast::<u8>();
            core::ptr::copy_nonoverlapping(path.as_ptr(), dst, path.len());
        }
        slot.path_len.store(path.len() as u32, Ordering::Release);
        slot.size.store(initial_size, Ordering::Release);
        self.count.store(n + 1, Ordering::Release);
        Ok((n, true))
    }
}

/// Flags kept per open file description.
pub mod flags {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const APPEND: u32 = 4;
    /// O_SYNC or O_DSYNC: flush after every write.
    pub const SYNC: u32 = 8;
}

/// An intercepted open file description.
pub struct Desc {
    refs: AtomicU32,
    pub slot: AtomicU32,
    pub flags: AtomicU32,
    pub offset: AtomicU64,
    /// Serializes reads, writes and seeks that use the file offset.
    pub lock: AtomicU32,
}

impl Desc {
    const fn new() -> Self {
        Desc {
            refs: AtomicU32::new(0),
            slot: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            offset: AtomicU64::new(0),
            lock: AtomicU32::new(0),
        }
    }
}

static DESCS: [Desc; MAX_DESCS] = [const { Desc::new() }; MAX_DESCS];
/// fd -> description index + 1 (0: not intercepted).
static FDS: [AtomicU32; MAX_FDS] = [const { AtomicU32::new(0) }; MAX_FDS];
/// Whether any fd was ever intercepted (fast path for pass-through).
static ANY: AtomicBool = AtomicBool::new(false);

/// Takes a free description for `slot` with `flags`, or None when all are used.
pub fn new_desc(slot: u32, fl: u32) -> Option<u32> {
    for (i, d) in DESCS.iter().enumerate() {
        if d.refs
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            d.slot.store(slot, Ordering::Relaxed);
            d.flags.store(fl, Ordering::Relaxed);
            d.offset.store(0, Ordering::Relaxed);
            d.lock.store(0, Ordering::Release);
            return Some(i as u32);
        }
    }
    None
}

/// Drops one reference to description `i`.
pub fn release_desc(i: u32) {
    DESCS[i as usize].refs.fetch_sub(1, Ordering::AcqRel);
}

pub fn desc(i: u32) -> &'static Desc {
    &DESCS[i as usize]
}

/// Binds `fd` to description `i` (taking a reference for dup'ed fds).
pub fn bind(fd: i32, i: u32, add_ref: bool) {
    if add_ref {
        DESCS[i as usize].refs.fetch_add(1, Ordering::AcqRel);
    }
    ANY.store(true, Ordering::Release);
    FDS[fd as usize].store(i + 1, Ordering::Release);
}

/// Unbinds `fd`, returning its description.
pub fn unbind(fd: i32) -> Option<u32> {
    if !(0..MAX_FDS as i32).contains(&fd) {
        return None;
    }
    match FDS[fd as usize].swap(0, Ordering::AcqRel) {
        0 => None,
        i => Some(i - 1),
    }
}

/// The description behind `fd`, if it is intercepted.
#[inline]
pub fn lookup_fd(fd: i32) -> Option<u32> {
    if !ANY.load(Ordering::Relaxed) || !(0..MAX_FDS as i32).contains(&fd) {
        return None;
    }
    match FDS[fd as usize].load(Ordering::Acquire) {
        0 => None,
        i => Some(i - 1),
    }
}
