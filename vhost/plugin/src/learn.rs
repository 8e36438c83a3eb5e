//! Which guest instructions get a memory callback: the learning scheme.
//!
//! Every guest memory access of an instrumented instruction calls the
//! plugin, RAM ones included (plugin API 4 has no conditional memory
//! callbacks), which made memory-heavy guest code 1.7–2.6× slower armed. So
//! an instruction is instrumented until it has been *seen*: once it made
//! [`HOT_AT`] RAM accesses under instrumentation and not one to a watched
//! window, it is left out of the blocks translated from then on, and the
//! plugin asks for a re-translation (`qemu_plugin_reset`) so that the hot
//! blocks lose its callback. An instruction that touched a window once is
//! instrumented for good; one never seen (a new program, new code) is
//! instrumented at its first translation.
//!
//! What can go uncounted: an instruction left out that later touches a
//! window (a `memcpy` used on RAM for 4096 accesses, then on CXL memory,
//! after a re-translation in between). Each arm and every audit (a
//! periodic reset that instruments everything again until it is seen
//! anew) start the counts over; an instruction that was left out and then
//! touches a window under instrumentation counts in [`Counters::relearned`]:
//! its accesses before that may have gone uncounted.
//!
//! An instruction is known by its virtual address, its host address (the
//! guest page its bytes are in) and its first 16 bytes: the same code
//! mapped at another address (another process, ASLR) is new code, and
//! other code at a reused page and address differs in its bytes (or, with
//! the very same bytes and place, is the same code).
//!
//! This module is QEMU-free so that its tests link without QEMU.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// RAM accesses an instruction makes under instrumentation, with none to a
/// watched window, before it is left out.
pub const HOT_AT: u32 = 4096;
/// Instructions tracked at once; past that the table starts over at the
/// next reset (every instruction instrumented again).
pub const CAPACITY: usize = 1 << 20;

/// An instruction's identity across translations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub vaddr: u64,
    pub haddr: u64,
    pub bytes: [u8; 16],
}

/// The instruction touched a watched window.
const CXL: u8 = 1;
/// The instruction was left out of a translation (since the table began).
const LEFT_OUT: u8 = 2;

/// What the plugin reports in its learning messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Distinct instructions left out of a translation at least once.
    pub left_out: u64,
    /// Instructions left out that later touched a watched window under
    /// instrumentation (an audit or a new arm): accesses of theirs made
    /// while left out were not counted.
    pub relearned: u64,
    /// Re-translations asked for to leave seen instructions out.
    pub prunes: u64,
}

pub struct Learner {
    index: Mutex<HashMap<Key, u32>>,
    ram: Box<[AtomicU32]>,
    flags: Box<[AtomicU8]>,
    capacity: usize,
    /// Learning on: seen instructions are left out. Off: all instrumented.
    on: AtomicBool,
    /// Some block in QEMU's code cache was translated without an
    /// instruction's callback (cleared when a reset flushes the cache).
    cache_left_out: AtomicBool,
    /// The table is full: start over at the next reset.
    full: AtomicBool,
    left_out: AtomicU64,
    relearned: AtomicU64,
    prunes: AtomicU64,
}

impl Learner {
    pub fn new(on: bool) -> Learner {
        Learner::with_capacity(on, CAPACITY)
    }

    pub fn with_capacity(on: bool, capacity: usize) -> Learner {
        Learner {
            index: Mutex::new(HashMap::new()),
            ram: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            flags: (0..capacity).map(|_| AtomicU8::new(0)).collect(),
            capacity,
            on: AtomicBool::new(on),
            cache_left_out: AtomicBool::new(false),
            full: AtomicBool::new(false),
            left_out: AtomicU64::new(0),
            relearned: AtomicU64::new(0),
            prunes: AtomicU64::new(0),
        }
    }

    /// Whether instructions are learned and left out (`learn=on`), fixed
    /// when the plugin loads.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The instruction's slot, made on first sight; `None` when the table
    /// is full (the instruction is then always instrumented).
    pub fn slot(&self, key: Key) -> Option<u32> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = index.get(&key) {
            return Some(i);
        }
        if index.len() >= self.capacity {
            self.full.store(true, Ordering::Relaxed);
            return None;
        }
        let i = u32::try_from(index.len()).ok()?;
        index.insert(key, i);
        Some(i)
    }

    /// Whether a translation gives the instruction in `slot` its memory
    /// callback. Stall mode charges every user-space access, so while it
    /// is on every instruction is instrumented.
    pub fn instrument(&self, slot: Option<u32>, stalling: bool) -> bool {
        let Some(i) = slot.map(|i| i as usize) else {
            return true;
        };
        if stalling || !self.on.load(Ordering::Relaxed) {
            return true;
        }
        if self.flags[i].load(Ordering::Relaxed) & CXL != 0
            || self.ram[i].load(Ordering::Relaxed) < HOT_AT
        {
            return true;
        }
        if self.flags[i].fetch_or(LEFT_OUT, Ordering::Relaxed) & LEFT_OUT == 0 {
            self.left_out.fetch_add(1, Ordering::Relaxed);
        }
        self.cache_left_out.store(true, Ordering::Relaxed);
        false
    }

    /// A RAM access of the instruction in `slot`; true when the
    /// instruction is seen (and would be left out by a re-translation).
    /// Racing vCPUs may lose an increment: the count is a threshold, not
    /// a figure, and the CXL mark lives apart so no store clobbers it.
    #[inline]
    pub fn ram_access(&self, slot: u32) -> bool {
        let c = &self.ram[slot as usize];
        let n = c.load(Ordering::Relaxed);
        if n < HOT_AT {
            c.store(n + 1, Ordering::Relaxed);
            if n + 1 < HOT_AT {
                return false;
            }
        }
        self.on.load(Ordering::Relaxed)
            && self.flags[slot as usize].load(Ordering::Relaxed) & CXL == 0
    }

    /// An access of the instruction in `slot` to a watched window.
    #[inline]
    pub fn window_access(&self, slot: u32) {
        let f = &self.flags[slot as usize];
        if f.load(Ordering::Relaxed) & CXL != 0 {
            return;
        }
        if f.fetch_or(CXL, Ordering::Relaxed) & (CXL | LEFT_OUT) == LEFT_OUT {
            self.relearned.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the code cache holds a block that leaves an instruction out.
    pub fn cache_left_out(&self) -> bool {
        self.cache_left_out.load(Ordering::Relaxed)
    }

    /// A reset flushed QEMU's code cache; `prune` when it was asked for to
    /// leave seen instructions out, `forget` to start every count over
    /// (an arm, an audit). Runs with every vCPU stopped.
    pub fn reset(&self, prune: bool, forget: bool) {
        self.cache_left_out.store(false, Ordering::Relaxed);
        if prune {
            self.prunes.fetch_add(1, Ordering::Relaxed);
        }
        if self.full.swap(false, Ordering::Relaxed) {
            // No block refers to a slot any more: start the table over.
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            let used = index.len();
            index.clear();
            for i in 0..used {
                self.ram[i].store(0, Ordering::Relaxed);
                self.flags[i].store(0, Ordering::Relaxed);
            }
        } else if forget {
            let used = self.index.lock().unwrap_or_else(|p| p.into_inner()).len();
            for c in &self.ram[..used] {
                c.store(0, Ordering::Relaxed);
            }
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            left_out: self.left_out.load(Ordering::Relaxed),
            relearned: self.relearned.load(Ordering::Relaxed),
            prunes: self.prunes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(vaddr: u64) -> Key {
        Key {
            vaddr,
            haddr: 0x1000 + vaddr,
            bytes: [0x48; 16],
        }
    }

    fn see(l: &Learner, slot: u32, n: u32) -> bool {
        (0..n).map(|_| l.ram_access(slot)).last().unwrap_or(false)
    }

    #[test]
    fn an_instruction_is_left_out_only_after_hot_at_ram_accesses() {
        let l = Learner::new(true);
        let s = l.slot(key(0x400000));
        assert_eq!(s, l.slot(key(0x400000)), "the same key, the same slot");
        assert!(l.instrument(s, false), "new code is instrumented");
        assert!(!see(&l, s.unwrap(), HOT_AT - 1), "not seen before HOT_AT");
        assert!(l.instrument(s, false));
        assert!(l.ram_access(s.unwrap()), "seen: a re-translation is wanted");
        assert!(!l.instrument(s, false), "seen: left out");
        assert!(l.cache_left_out());
        assert_eq!(l.counters().left_out, 1);
        assert!(!l.instrument(s, false));
        assert_eq!(l.counters().left_out, 1, "counted once per instruction");
    }

    #[test]
    fn a_window_access_keeps_an_instruction_instrumented_for_good() {
        let l = Learner::new(true);
        let s = l.slot(key(1)).unwrap();
        l.window_access(s);
        assert!(!see(&l, s, 10 * HOT_AT), "a window instruction never asks");
        assert!(l.instrument(Some(s), false));
        l.reset(true, true);
        assert!(l.instrument(Some(s), false), "an audit keeps the mark");
        assert_eq!(l.counters().relearned, 0);
    }

    #[test]
    fn other_code_at_the_same_address_is_new() {
        let l = Learner::new(true);
        let a = l.slot(key(7)).unwrap();
        see(&l, a, HOT_AT + 1);
        let mut other = key(7);
        other.bytes[0] = 0x8b;
        let b = l.slot(other);
        assert_ne!(Some(a), b);
        assert!(l.instrument(b, false));
        let mut moved = key(7);
        moved.vaddr = 0x7f00_0000_0007;
        assert!(l.instrument(l.slot(moved), false), "ASLR: new code");
    }

    #[test]
    fn stall_mode_and_learning_off_instrument_everything() {
        let l = Learner::new(true);
        let s = l.slot(key(2));
        see(&l, s.unwrap(), HOT_AT + 1);
        assert!(l.instrument(s, true), "stall mode charges every access");
        assert_eq!(l.counters().left_out, 0);
        let off = Learner::new(false);
        let s = off.slot(key(2));
        assert!(!see(&off, s.unwrap(), HOT_AT + 1), "off: never asks");
        assert!(off.instrument(s, false));
    }

    #[test]
    fn a_left_out_instruction_that_touches_a_window_is_relearned() {
        let l = Learner::new(true);
        let s = l.slot(key(3));
        see(&l, s.unwrap(), HOT_AT);
        assert!(!l.instrument(s, false));
        l.reset(true, false);
        assert!(!l.cache_left_out(), "the reset flushed the cache");
        assert!(!l.instrument(s, false), "still seen after a prune");
        // An audit starts the counts over: instrumented again.
        l.reset(false, true);
        assert!(l.instrument(s, false));
        l.window_access(s.unwrap());
        l.window_access(s.unwrap());
        assert_eq!(
            l.counters(),
            Counters {
                left_out: 1,
                relearned: 1,
                prunes: 1
            }
        );
        assert!(l.instrument(s, false), "instrumented for good");
    }

    #[test]
    fn a_full_table_instruments_the_rest_and_starts_over_at_a_reset() {
        let l = Learner::with_capacity(true, 2);
        let a = l.slot(key(10)).unwrap();
        l.slot(key(11)).unwrap();
        assert_eq!(l.slot(key(12)), None);
        assert!(l.instrument(None, false), "untracked: instrumented");
        see(&l, a, HOT_AT);
        l.window_access(a);
        l.reset(false, false);
        assert_eq!(l.counters().relearned, 0, "never left out");
        assert_eq!(l.slot(key(12)), Some(0), "the table started over");
        assert!(l.instrument(Some(0), false));
        assert!(!see(&l, 0, HOT_AT - 1), "its counts too");
        assert!(l.ram_access(0), "seen at HOT_AT");
    }
}
