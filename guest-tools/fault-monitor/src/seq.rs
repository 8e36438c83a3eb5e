//! The sequential-fault rule of `madvise_collector.bpf.c`, mirrored in Rust
//! so that it can be tested without a kernel: per process, a fault is
//! sequential when its page is the process's previous fault page + 1; a
//! fault on the same page as the previous one (the retry of a fault that
//! had to drop the mmap lock) is not a new fault.

use std::collections::BTreeMap;

pub const PAGE_SHIFT: u32 = 12;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcState {
    pub last_page: u64,
    pub faults: u64,
    pub sequential: u64,
}

#[derive(Debug, Default)]
pub struct SeqDetector {
    procs: BTreeMap<u32, ProcState>,
}

impl SeqDetector {
    /// Feeds one fault; returns whether it counted as sequential.
    pub fn fault(&mut self, pid: u32, address: u64) -> bool {
        let page = address >> PAGE_SHIFT;
        let Some(p) = self.procs.get_mut(&pid) else {
            self.procs.insert(
                pid,
                ProcState {
                    last_page: page,
                    faults: 1,
                    sequential: 0,
                },
            );
            return false;
        };
        if page == p.last_page {
            return false;
        }
        let seq = page == p.last_page.wrapping_add(1);
        p.sequential += u64::from(seq);
        p.faults += 1;
        p.last_page = page;
        seq
    }

    pub fn get(&self, pid: u32) -> Option<ProcState> {
        self.procs.get(&pid).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn consecutive_pages_are_sequential() {
        let mut d = SeqDetector::default();
        assert!(!d.fault(1, BASE), "the first fault has no predecessor");
        assert!(d.fault(1, BASE + 4096 + 17), "any address in the next page");
        assert!(d.fault(1, BASE + 2 * 4096));
        assert!(!d.fault(1, BASE + 4 * 4096), "a gap breaks the run");
        assert!(d.fault(1, BASE + 5 * 4096));
        assert!(!d.fault(1, BASE + 4 * 4096), "backwards is not sequential");
        assert_eq!(
            d.get(1),
            Some(ProcState {
                last_page: (BASE >> 12) + 4,
                faults: 6,
                sequential: 3
            })
        );
    }

    #[test]
    fn a_retry_of_the_same_page_is_not_a_new_fault() {
        let mut d = SeqDetector::default();
        d.fault(1, BASE);
        assert!(d.fault(1, BASE + 4096));
        assert!(!d.fault(1, BASE + 4096 + 8), "the retry");
        assert!(d.fault(1, BASE + 2 * 4096), "the run goes on after a retry");
        assert_eq!(d.get(1).unwrap().faults, 3);
    }

    #[test]
    fn processes_are_kept_apart() {
        let mut d = SeqDetector::default();
        d.fault(1, BASE);
        d.fault(2, BASE + 4096);
        assert!(!d.fault(2, BASE + 3 * 4096));
        assert!(
            d.fault(1, BASE + 4096),
            "pid 2's faults do not break pid 1's run"
        );
        assert_eq!(d.get(3), None);
    }

    #[test]
    fn a_scan_is_sequential_and_random_pages_are_not() {
        let mut d = SeqDetector::default();
        for p in 0..1000 {
            d.fault(1, BASE + p * 4096);
        }
        // A fixed pseudo-random walk (LCG) over 8192 pages.
        let mut x = 12345u64;
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            d.fault(2, BASE + ((x >> 33) % 8192) * 4096);
        }
        let (s, r) = (d.get(1).unwrap(), d.get(2).unwrap());
        assert_eq!(s.sequential, 999);
        assert!(r.sequential <= 2, "random: {}", r.sequential);
    }
}
