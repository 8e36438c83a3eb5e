//! File semantics on a slot: reads and writes at an offset, the per-fd
//! offset, O_APPEND, truncate, fallocate and sync, all on the mapped window.

use core::sync::atomic::Ordering;

use crate::dirty::Dirty;
use crate::table::{desc, flags, lookup_fd, Desc, Slot, SlotTable, SpinGuard};
use crate::window::Window;

/// An intercepted descriptor with everything needed to serve it.
/// `slot_no < w.slots` always: slots are only given out by
/// `SlotTable::get_or_assign` with the window's slot count as capacity.
pub struct Ctx {
    pub w: &'static Window,
    pub t: &'static SlotTable,
    pub d: &'static Dirty,
    pub desc: &'static Desc,
    pub slot_no: u32,
}

/// The context of `fd` when it is intercepted.
#[inline]
pub fn ctx(fd: i32) -> Option<Ctx> {
    let di = lookup_fd(fd)?;
    let (w, t, d) = crate::state::ready().ok()?;
    let desc = desc(di);
    Some(Ctx {
        w,
        t,
        d,
        desc,
        slot_no: desc.slot.load(Ordering::Relaxed),
    })
}

type Res = Result<usize, i32>;

impl Ctx {
    /// The context of description `di` on `slot`.
    pub fn for_desc(w: &'static Window, t: &'static SlotTable, di: u32, slot: u32) -> Ctx {
        let (_, _, d) = crate::state::ready().expect("called only when ready");
        Ctx {
            w,
            t,
            d,
            desc: desc(di),
            slot_no: slot,
        }
    }

    pub fn slot(&self) -> &'static Slot {
        self.t.slot(self.slot_no)
    }

    fn flags(&self) -> u32 {
        self.desc.flags.load(Ordering::Relaxed)
    }

    /// Window offset of file offset `off`.
    fn win_off(&self, off: u64) -> u64 {
        self.slot_no as u64 * self.w.file_size + off
    }

    pub fn size(&self) -> u64 {
        self.slot().size.load(Ordering::Acquire)
    }

    /// Reads at `off`; short at the logical end of the file.
    ///
    /// # Safety
    /// `buf` is valid for writes of `n` bytes (read(2)'s contract).
    pub unsafe fn read_at(&self, off: u64, buf: *mut u8, n: usize) -> Res {
        if self.flags() & flags::READ == 0 {
            return Err(libc::EBADF);
        }
        let size = self.size();
        if off >= size || n == 0 {
            return Ok(0);
        }
        let n = (n as u64).min(size - off) as usize;
        // SAFETY: off + n <= size <= file_size and slot_no < slots, so the
        // source is inside the slot; `buf` holds n bytes (contract above) and
        // is the caller's memory, not the window's.
        unsafe { core::ptr::copy_nonoverlapping(self.w.slot_ptr(self.slot_no, off), buf, n) };
        Ok(n)
    }

    /// Writes at `off`; short at the end of the slot, EFBIG past it.
    ///
    /// # Safety
    /// `buf` is valid for reads of `n` bytes (write(2)'s contract).
    pub unsafe fn write_at(&self, off: u64, buf: *const u8, n: usize) -> Res {
        if self.flags() & flags::WRITE == 0 {
            return Err(libc::EBADF);
        }
        if n == 0 {
            return Ok(0);
        }
        let cap = self.w.file_size;
        if off >= cap {
            return Err(libc::EFBIG);
        }
        let n = (n as u64).min(cap - off) as usize;
        if off + n as u64 <= self.size() {
            // SAFETY: off + n <= file_size (n was cut to the slot); `buf`
            // holds at least n bytes (contract above).
            unsafe { self.copy_in(off, buf, n) };
        } else {
            let _g = SpinGuard::lock(&self.slot().lock);
            // SAFETY: as above.
            unsafe { self.write_locked(off, buf, n) };
        }
        Ok(n)
    }

    /// Writes with the slot lock held, extending the file (zero-filling a gap).
    ///
    /// # Safety
    /// As `copy_in`.
    unsafe fn write_locked(&self, off: u64, buf: *const u8, n: usize) {
        let slot = self.slot();
        let size = slot.size.load(Ordering::Acquire);
        if off > size {
            self.zero(size, off);
        }
        // SAFETY: passed on from this function's contract.
        unsafe { self.copy_in(off, buf, n) };
        let end = off + n as u64;
        if end > size {
            slot.size.store(end, Ordering::Release);
        }
    }

    /// Copies `n` bytes from `buf` to file offset `off` and marks them dirty.
    ///
    /// # Safety
    /// `off + n <= file_size`, and `buf` is valid for reads of `n` bytes.
    unsafe fn copy_in(&self, off: u64, buf: *const u8, n: usize) {
        // SAFETY: slot_no < slots and off + n <= file_size (contract above),
        // so the destination is inside the slot; `buf` is the caller's memory.
        unsafe { crate::stream::copy(buf, self.w.slot_ptr(self.slot_no, off), n) };
        self.d.mark(self.win_off(off), n as u64);
        if self.flags() & flags::SYNC != 0 {
            self.sync();
        }
    }

    /// Zero-fills file bytes `[from, to)`; every caller has checked
    /// `to <= file_size` first.
    fn zero(&self, from: u64, to: u64) {
        if to > from {
            // SAFETY: slot_no < slots and from < to <= file_size (all callers
            // bound `to` by the slot capacity), so the range is in the slot.
            unsafe {
                core::ptr::write_bytes(self.w.slot_ptr(self.slot_no, from), 0, (to - from) as usize)
            };
            self.d.mark(self.win_off(from), to - from);
        }
    }

    /// `read`: at the description's offset, which advances.
    ///
    /// # Safety
    /// As `read_at`.
    pub unsafe fn read(&self, buf: *mut u8, n: usize) -> Res {
        let _g = SpinGuard::lock(&self.desc.lock);
        let off = self.desc.offset.load(Ordering::Relaxed);
        // SAFETY: passed on from this function's contract.
        let r = unsafe { self.read_at(off, buf, n) }?;
        self.desc.offset.store(off + r as u64, Ordering::Relaxed);
        Ok(r)
    }

    /// `write`: at the description's offset, or at the end with O_APPEND.
    ///
    /// # Safety
    /// As `write_at`.
    pub unsafe fn write(&self, buf: *const u8, n: usize) -> Res {
        let _g = SpinGuard::lock(&self.desc.lock);
        let r = if self.flags() & flags::APPEND != 0 {
            if self.flags() & flags::WRITE == 0 {
                return Err(libc::EBADF);
            }
            let _s = SpinGuard::lock(&self.slot().lock);
            let off = self.size();
            if n == 0 {
                return Ok(0);
            }
            if off >= self.w.file_size {
                return Err(libc::EFBIG);
            }
            let n = (n as u64).min(self.w.file_size - off) as usize;
            // SAFETY: off + n <= file_size; `buf` holds n bytes (contract).
            unsafe { self.write_locked(off, buf, n) };
            self.desc.offset.store(off + n as u64, Ordering::Relaxed);
            return Ok(n);
        } else {
            let off = self.desc.offset.load(Ordering::Relaxed);
            // SAFETY: passed on from this function's contract.
            let r = unsafe { self.write_at(off, buf, n) }?;
            self.desc.offset.store(off + r as u64, Ordering::Relaxed);
            r
        };
        Ok(r)
    }

    /// `preadv`-style: fills the buffers in order from `off`.
    ///
    /// # Safety
    /// `iov` points to `cnt` iovecs, each valid for writes of `iov_len` bytes.
    pub unsafe fn readv_at(&self, off: u64, iov: *const libc::iovec, cnt: i32) -> Res {
        // SAFETY: passed on from this function's contract.
        let iovs = unsafe { iovecs(iov, cnt) }?;
        vectored(iovs, off, |at, v| {
            // SAFETY: each iovec describes a buffer the caller lets us write.
            unsafe { self.read_at(at, v.iov_base.cast(), v.iov_len) }
        })
    }

    /// `pwritev`-style: writes the buffers in order from `off`.
    ///
    /// # Safety
    /// `iov` points to `cnt` iovecs, each valid for reads of `iov_len` bytes.
    pub unsafe fn writev_at(&self, off: u64, iov: *const libc::iovec, cnt: i32) -> Res {
        // SAFETY: passed on from this function's contract.
        let iovs = unsafe { iovecs(iov, cnt) }?;
        vectored(iovs, off, |at, v| {
            // SAFETY: each iovec describes a buffer the caller lets us read.
            unsafe { self.write_at(at, v.iov_base.cast(), v.iov_len) }
        })
    }

    /// `readv`: vectored read at the description's offset.
    ///
    /// # Safety
    /// As `readv_at`.
    pub unsafe fn readv(&self, iov: *const libc::iovec, cnt: i32) -> Res {
        let _g = SpinGuard::lock(&self.desc.lock);
        let off = self.desc.offset.load(Ordering::Relaxed);
        // SAFETY: passed on from this function's contract.
        let r = unsafe { self.readv_at(off, iov, cnt) }?;
        self.desc.offset.store(off + r as u64, Ordering::Relaxed);
        Ok(r)
    }

    /// `writev`: vectored write at the description's offset (or the end).
    ///
    /// # Safety
    /// As `writev_at`.
    pub unsafe fn writev(&self, iov: *const libc::iovec, cnt: i32) -> Res {
        // SAFETY: passed on from this function's contract.
        let iovs = unsafe { iovecs(iov, cnt) }?;
        if self.flags() & flags::APPEND != 0 {
            // Each buffer goes to the end as it is then; the offset is unused.
            return vectored(iovs, 0, |_, v| {
                // SAFETY: each iovec describes a buffer the caller lets us read.
                unsafe { self.write(v.iov_base.cast(), v.iov_len) }
            });
        }
        let _g = SpinGuard::lock(&self.desc.lock);
        let off = self.desc.offset.load(Ordering::Relaxed);
        // SAFETY: passed on from this function's contract.
        let r = unsafe { self.writev_at(off, iov, cnt) }?;
        self.desc.offset.store(off + r as u64, Ordering::Relaxed);
        Ok(r)
    }

    /// `lseek` with SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA and SEEK_HOLE.
    pub fn lseek(&self, off: i64, whence: i32) -> Result<i64, i32> {
        let _g = SpinGuard::lock(&self.desc.lock);
        let cur = self.desc.offset.load(Ordering::Relaxed) as i64;
        let size = self.size() as i64;
        let new = match whence {
            libc::SEEK_SET => Some(off),
            libc::SEEK_CUR => cur.checked_add(off),
            libc::SEEK_END => size.checked_add(off),
            libc::SEEK_DATA | libc::SEEK_HOLE => {
                if off < 0 {
                    return Err(libc::EINVAL);
                }
                if off >= size {
                    return Err(libc::ENXIO);
                }
                Some(if whence == libc::SEEK_DATA { off } else { size })
            }
            _ => return Err(libc::EINVAL),
        };
        match new {
            Some(n) if n >= 0 => {
                self.desc.offset.store(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Some(_) => Err(libc::EINVAL),
            None => Err(libc::EOVERFLOW),
        }
    }

    /// Flushes every line of this slot written since the last sync.
    pub fn sync(&self) -> u64 {
        let base = self.win_off(0);
        self.d.drain(base, self.w.file_size, |o, l| {
            // SAFETY: drain reports whole lines that `mark` saw written, and
            // only slot bytes (inside the window) are ever marked.
            unsafe { self.w.flush_range(self.w.base.add(o as usize), l as usize) }
        })
    }

    /// `ftruncate`: sets the logical size (zero-filling when it grows).
    pub fn truncate(&self, len: i64) -> Result<(), i32> {
        if len < 0 {
            return Err(libc::EINVAL);
        }
        if self.flags() & flags::WRITE == 0 {
            return Err(libc::EINVAL);
        }
        set_size(self, len as u64)
    }

    /// `fallocate` modes 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE.
    pub fn fallocate(&self, mode: i32, off: i64, len: i64) -> Result<(), i32> {
        if off < 0 || len <= 0 {
            return Err(libc::EINVAL);
        }
        if self.flags() & flags::WRITE == 0 {
            return Err(libc::EBADF);
        }
        let (off, len) = (off as u64, len as u64);
        let end = off.checked_add(len).ok_or(libc::EFBIG)?;
        if end > self.w.file_size {
            return Err(libc::EFBIG);
        }
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let _g = SpinGuard::lock(&self.slot().lock);
        let size = self.size();
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => {}
            libc::FALLOC_FL_PUNCH_HOLE if keep => self.zero(off, end.min(size)),
            libc::FALLOC_FL_ZERO_RANGE => self.zero(off, if keep { end.min(size) } else { end }),
            _ => return Err(libc::EOPNOTSUPP),
        }
        if !keep && end > size {
            self.zero(size, end);
            self.slot().size.store(end, Ordering::Release);
        }
        Ok(())
    }
}

/// Sets the logical size of the context's slot to `len`.
pub fn set_size(c: &Ctx, len: u64) -> Result<(), i32> {
    if len > c.w.file_size {
        return Err(libc::EFBIG);
    }
    let _g = SpinGuard::lock(&c.slot().lock);
    let size = c.size();
    if len > size {
        c.zero(size, len);
    }
    c.slot().size.store(len, Ordering::Release);
    Ok(())
}
/// Runs `one` on each buffer in order from `off`, as the vectored calls do:
/// stops after a short transfer; an error after some bytes moved ends the
/// call with those bytes, an error on the first buffer is the call's error.
fn vectored(iovs: &[libc::iovec], off: u64, mut one: impl FnMut(u64, &libc::iovec) -> Res) -> Res {
    let mut done = 0usize;
    for v in iovs {
        let r = match one(off + done as u64, v) {
            Ok(r) => r,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        done += r;
        if r < v.iov_len {
            break;
        }
    }
    Ok(done)
}

/// The `cnt` iovecs at `iov`, or EINVAL for a count readv(2) refuses.
///
/// # Safety
/// `iov` points to `cnt` valid iovecs that outlive `'a`.
unsafe fn iovecs<'a>(iov: *const libc::iovec, cnt: i32) -> Result<&'a [libc::iovec], i32> {
    if !(0..=libc::UIO_MAXIOV).contains(&cnt) {
        return Err(libc::EINVAL);
    }
    if cnt == 0 {
        return Ok(&[]);
    }
    // SAFETY: 0 < cnt, and `iov` holds `cnt` iovecs (contract above).
    Ok(unsafe { core::slice::from_raw_parts(iov, cnt as usize) })
}
