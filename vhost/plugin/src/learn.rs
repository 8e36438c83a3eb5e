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
//! after a re-translation in between). Each arm starts the counts over,
//! and every audit (a periodic reset) those of one share of the
//! instructions, which are instrumented again until seen anew; an
//! instruction that was left out and then
//! touches a window under instrumentation counts in [`Counters::relearned`]:
//! its accesses before that may have gone uncounted.
//!
//! An instruction is known by its host address (where its bytes lie in
//! guest RAM, so its physical place) and its first 16 bytes, not by its
//! virtual address: a program run again, or a shared library in another
//! process, is the same code at another address (ASLR), and what one run
//! learned holds for the next instead of every run paying its learning and
//! the prunes again (measured: a new process each run kept
//! `data-generator` at 2.3–3.7× armed). Other code at a reused page differs
//! in its bytes, or, with the very same bytes and place, is the same code.
//! The price: a routine seen on RAM in one process (libc's `memcpy`) stays
//! left out when another process uses it on CXL memory, until an audit.
//!
//! This module is QEMU-free so that its tests link without QEMU.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// RAM accesses an instruction makes under instrumentation, with none to a
/// watched window, before it is left out. 1024 learned a program in fewer
/// runs (its per-page kernel code runs about 4096 times in a 16 MiB
/// `data-generator`), but left out three times as many of `mem-probe`'s
/// CXL accesses (13.9 % against 4.6 %) for no clear gain in the bench.
pub const HOT_AT: u32 = 4096;
/// Instructions tracked at once; past that the table starts over at the
/// next reset (every instruction instrumented again).
pub const CAPACITY: usize = 1 << 20;

/// An instruction's identity across translations and processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub haddr: u64,
    pub bytes: [u8; 16],
}

/// A multiply-rotate hash of whole words (the Fx hash): every translated
/// instruction is looked up under the table's lock, and SipHash's
/// resistance to chosen keys buys nothing against guest code addresses.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Index = HashMap<Key, u32, BuildHasherDefault<WordHasher>>;

/// An audit starts over the counts of one share of the instructions (by
/// slot), in turn: all of them at once made every audit as costly as a
/// new arm (every instruction instrumented until seen again, and the
/// prunes after), which undid the learning of repeatedly run programs
/// every `audit_ms`. With 8 shares each instruction is watched anew every
/// 8 audits.
pub const AUDIT_SHARES: u64 = 8;

/// Which counts a reset starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    Nothing,
    /// An audit: the next share.
    Share,
    /// An arm: every count.
    All,
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
    index: Mutex<Index>,
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
    /// Audits so far: which share the next one starts over.
    audits: AtomicU64,
}

impl Learner {
    pub fn new(on: bool) -> Learner {
        Learner::with_capacity(on, CAPACITY)
    }

    pub fn with_capacity(on: bool, capacity: usize) -> Learner {
        Learner {
            index: Mutex::new(Index::default()),
            ram: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            flags: (0..capacity).map(|_| AtomicU8::new(0)).collect(),
            capacity,
            on: AtomicBool::new(on),
            cache_left_out: AtomicBool::new(false),
            full: AtomicBool::new(false),
            left_out: AtomicU64::new(0),
            relearned: AtomicU64::new(0),
            prunes: AtomicU64::new(0),
            audits: AtomicU64::new(0),
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
    /// leave seen instructions out, `forget` to start counts over (all of
    /// them at an arm, one share at an audit). Runs with every vCPU stopped.
    pub fn reset(&self, prune: bool, forget: Forget) {
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
        } else if forget != Forget::Nothing {
            let used = self.index.lock().unwrap_or_else(|p| p.into_inner()).len();
            let share = match forget {
                Forget::Share => Some(self.audits.fetch_add(1, Ordering::Relaxed) % AUDIT_SHARES),
                _ => None,
            };
            for (i, c) in self.ram[..used].iter().enumerate() {
                if share.is_none_or(|s| i as u64 % AUDIT_SHARES == s) {
                    c.store(0, Ordering::Relaxed);
                }
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

    fn key(place: u64) -> Key {
        Key {
            haddr: 0x1000 + place,
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
        l.reset(true, Forget::All);
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
        assert_eq!(l.slot(key(7)), Some(a), "the same bytes and place");
        assert!(
            !l.instrument(Some(a), false),
            "another run of the program (its pages, at any virtual address) is left out"
        );
    }

    #[test]
    fn the_word_hasher_spreads_keys_that_differ_in_one_word() {
        let h = |k: Key| {
            use std::hash::Hash;
            let mut s = WordHasher::default();
            k.hash(&mut s);
            s.finish()
        };
        let a = key(0x1000);
        let mut b = a;
        b.bytes[15] = 0x90;
        let mut c = a;
        c.haddr += 1;
        assert_ne!(h(a), h(b));
        assert_ne!(h(a), h(c));
        assert_ne!(h(b), h(c));
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
        l.reset(true, Forget::Nothing);
        assert!(!l.cache_left_out(), "the reset flushed the cache");
        assert!(!l.instrument(s, false), "still seen after a prune");
        // An arm starts every count over: instrumented again.
        l.reset(false, Forget::All);
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
    fn each_audit_starts_over_one_share_of_the_instructions_in_turn() {
        let l = Learner::new(true);
        let n = 2 * AUDIT_SHARES as u32;
        let slots: Vec<u32> = (0..n).map(|i| l.slot(key(u64::from(i))).unwrap()).collect();
        for &s in &slots {
            see(&l, s, HOT_AT);
        }
        let watched = |l: &Learner| {
            slots
                .iter()
                .filter(|&&s| l.instrument(Some(s), false))
                .count()
        };
        assert_eq!(watched(&l), 0, "all seen");
        l.reset(false, Forget::Share);
        assert_eq!(watched(&l), 2, "one share watched anew");
        for _ in 1..AUDIT_SHARES {
            l.reset(false, Forget::Share);
        }
        assert_eq!(
            watched(&l),
            slots.len(),
            "every share after AUDIT_SHARES audits"
        );
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
        l.reset(false, Forget::Nothing);
        assert_eq!(l.counters().relearned, 0, "never left out");
        assert_eq!(l.slot(key(12)), Some(0), "the table started over");
        assert!(l.instrument(Some(0), false));
        assert!(!see(&l, 0, HOT_AT - 1), "its counts too");
        assert!(l.ram_access(0), "seen at HOT_AT");
    }
}
