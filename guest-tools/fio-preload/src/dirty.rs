//! Which 64-byte lines of the window were written since the last sync: a
//! line bitmap plus a summary bitmap (one bit per 64 lines, i.e. 4 KiB), both
//! in a shared anonymous mapping so that forked fio jobs see each other's.

use core::sync::atomic::{AtomicU64, Ordering};

const LINE: u64 = 64;
const GROUP: u64 = LINE * 64;

/// The two bitmaps for a window of `len` bytes.
pub struct Dirty {
    /// One word per group: bit i is line i of the group.
    lines: &'static [AtomicU64],
    /// One bit per group: whether its line word may be non-zero.
    summary: &'static [AtomicU64],
    groups: u64,
}

impl Dirty {
    /// Maps zeroed bitmaps for `len` bytes, or returns the mmap errno.
    pub fn new(len: u64) -> Result<Dirty, i32> {
        let groups = len.div_ceil(GROUP);
        let summary_words = groups.div_ceil(64);
        let bytes = (groups + summary_words) * 8;
        // SAFETY: an anonymous shared mapping; failure is checked.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                bytes as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(crate::errno::get());
        }
        // SAFETY: the mapping is `bytes` long, page-aligned, zeroed (a valid
        // AtomicU64 is any bit pattern), never unmapped, and only ever
        // accessed through these atomics, so a shared 'static slice is sound.
        let words = unsafe {
            core::slice::from_raw_parts(p.cast::<AtomicU64>(), (groups + summary_words) as usize)
        };
        let (lines, summary) = words.split_at(groups as usize);
        Ok(Dirty {
            lines,
            summary,
            groups,
        })
    }

    fn line_word(&self, i: u64) -> &AtomicU64 {
        &self.lines[i as usize]
    }

    fn summary_word(&self, i: u64) -> &AtomicU64 {
        &self.summary[i as usize]
    }

    /// Marks window bytes `[off, off + len)` dirty.
    #[inline]
    pub fn mark(&self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = off / LINE;
        let last = (off + len - 1) / LINE;
        let mut line = first;
        while line <= last {
            let group = line / 64;
            let bit = line % 64;
            let n = (last - line + 1).min(64 - bit);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            let w = self.line_word(group);
            if w.load(Ordering::Relaxed) & mask != mask {
                w.fetch_or(mask, Ordering::Release);
            }
            let s = self.summary_word(group / 64);
            let sbit = 1u64 << (group % 64);
            if s.load(Ordering::Relaxed) & sbit == 0 {
                s.fetch_or(sbit, Ordering::Release);
            }
            line += n;
        }
    }

    /// Clears the dirty lines of window bytes `[off, off + len)` and calls
    /// `flush(window_offset, bytes)` for each contiguous dirty run.
    /// Returns the number of dirty lines found.
    pub fn drain(&self, off: u64, len: u64, mut flush: impl FnMut(u64, u64)) -> u64 {
        if len == 0 {
            return 0;
        }
        let g_first = off / GROUP;
        let g_last = ((off + len - 1) / GROUP).min(self.groups - 1);
        let mut found = 0;
        let mut run: Option<(u64, u64)> = None;
        let mut sw = g_first / 64;
        while sw <= g_last / 64 {
            let s = self.summary_word(sw);
            let mut mask = u64::MAX;
            if sw == g_first / 64 {
                mask &= u64::MAX << (g_first % 64);
            }
            if sw == g_last / 64 && g_last % 64 != 63 {
                mask &= (1u64 << (g_last % 64 + 1)) - 1;
            }
            let mut bits = s.fetch_and(!mask, Ordering::AcqRel) & mask;
            while bits != 0 {
                let group = sw * 64 + bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let mut lines = self.line_word(group).swap(0, Ordering::AcqRel);
                found += lines.count_ones() as u64;
                while lines != 0 {
                    let start = lines.trailing_zeros() as u64;
                    let ones = (lines >> start).trailing_ones() as u64;
                    let a = (group * 64 + start) * LINE;
                    let n = ones * LINE;
                    run = match run {
                        Some((rs, rn)) if rs + rn == a => Some((rs, rn + n)),
                        Some((rs, rn)) => {
                            flush(rs, rn);
                            Some((a, n))
                        }
                        None => Some((a, n)),
                    };
                    if start + ones >= 64 {
                        break;
                    }
                    lines &= !(((1u64 << ones) - 1) << start);
                }
            }
            sw += 1;
        }
        if let Some((rs, rn)) = run {
            flush(rs, rn);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::Dirty;

    #[test]
    fn marks_and_drains_runs() {
        let d = Dirty::new(1 << 20).unwrap();
        d.mark(100, 300); // lines 1..=6
        d.mark(8192, 1); // line 128
        let mut runs = Vec::new();
        let n = d.drain(0, 1 << 20, |o, l| runs.push((o, l)));
        assert_eq!(n, 7);
        assert_eq!(runs, vec![(64, 384), (8192, 64)]);
        assert_eq!(d.drain(0, 1 << 20, |_, _| panic!("still dirty")), 0);
        d.mark(0, 1 << 20);
        let mut total = 0;
        assert_eq!(d.drain(4096, 4096, |_, l| total += l), 64);
        assert_eq!(total, 4096);
    }
}
