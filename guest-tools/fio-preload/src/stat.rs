//! Synthetic `stat`/`statx` results for intercepted files: a regular file
//! whose size is the slot's logical size.

use crate::table::SlotTable;
use crate::window::Window;

const _: () = assert!(core::mem::size_of::<libc::stat>() == core::mem::size_of::<libc::stat64>());

/// Inode number reported for slot `slot` (stable within a window).
fn inode(slot: Option<u32>, path: &[u8]) -> u64 {
    match slot {
        Some(s) => 0x4649_4f00_0000 + s as u64,
        // Not opened yet: a hash of the path, clear of the slot range.
        None => {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in path {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
            h | (1 << 63)
        }
    }
}

/// The size and inode of `path`: its slot's, or a fresh slot's (FIO_FILE_SIZE).
pub fn describe(w: &Window, t: &SlotTable, path: &[u8]) -> (u64, u64) {
    match t.lookup(path) {
        Some(s) => (
            t.slot(s).size.load(core::sync::atomic::Ordering::Acquire),
            inode(Some(s), path),
        ),
        None => (w.file_size, inode(None, path)),
    }
}

/// Size and inode of an open slot.
pub fn describe_slot(t: &SlotTable, slot: u32) -> (u64, u64) {
    (
        t.slot(slot)
            .size
            .load(core::sync::atomic::Ordering::Acquire),
        inode(Some(slot), b""),
    )
}

/// Fills a `struct stat` (same layout as `stat64` on x86_64).
///
/// # Safety
/// `st` must be valid for writes of a `struct stat`.
pub unsafe fn fill_stat(st: *mut libc::stat, w: &Window, size: u64, ino: u64) {
    // SAFETY: caller's contract; all-zero is a valid struct stat.
    unsafe {
        core::ptr::write_bytes(st, 0, 1);
        let s = &mut *st;
        s.st_dev = w.dev_id;
        s.st_ino = ino;
        s.st_mode = libc::S_IFREG | 0o644;
        s.st_nlink = 1;
        s.st_uid = libc::getuid();
        s.st_gid = libc::getgid();
        s.st_size = size as i64;
        s.st_blksize = 4096;
        s.st_blocks = size.div_ceil(512) as i64;
    }
}

/// Fills a `struct statx`.
///
/// # Safety
/// `st` must be valid for writes of a `struct statx`.
pub unsafe fn fill_statx(st: *mut libc::statx, w: &Window, size: u64, ino: u64) {
    // SAFETY: caller's contract; all-zero is a valid struct statx.
    unsafe {
        core::ptr::write_bytes(st, 0, 1);
        let s = &mut *st;
        s.stx_mask = libc::STATX_BASIC_STATS;
        s.stx_blksize = 4096;
        s.stx_nlink = 1;
        s.stx_uid = libc::getuid();
        s.stx_gid = libc::getgid();
        s.stx_mode = (libc::S_IFREG | 0o644) as u16;
        s.stx_ino = ino;
        s.stx_size = size;
        s.stx_blocks = size.div_ceil(512);
        s.stx_dev_major = libc::major(w.dev_id);
        s.stx_dev_minor = libc::minor(w.dev_id);
    }
}
