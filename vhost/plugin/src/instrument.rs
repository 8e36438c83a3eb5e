//! The QEMU callbacks and the arm/disarm state machine.
//!
//! Disarmed: a translation callback and vCPU idle/resume callbacks that only
//! look for a pending request. Armed: every translated block also counts
//! its instructions into a per-vCPU scoreboard (an inline add, no call;
//! not with learning) and every instruction not yet seen (`learn`) gets a
//! memory callback; the
//! callback asks QEMU for the physical address and keeps it when it falls
//! in a watched window. Once instructions are seen (many RAM accesses, none
//! to a window) the plugin resets itself so that QEMU re-translates the
//! blocks without their callbacks (a prune, at most every
//! [`MIN_PRUNE_GAP`]); every `audit_ms` it resets with one share of the
//! counts started over, so that left-out instructions are watched again
//! for a while, each in turn.
//!
//! `qemu_plugin_reset` must be called from a vCPU thread (it queues the
//! swap as exclusive work on the current vCPU; from another thread QEMU
//! would assert), hence requests are posted by the command thread and
//! picked up by the next vCPU callback.

use std::ffi::{c_uint, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cxl_memsim_wire::args::{self, MAX_WINDOWS};
use cxl_memsim_wire::{AccessRecord, Command, Kind, LearnCounts, Window, FLAG_WRITE};
use qemu_plugin_sys::{
    qemu_plugin_cb_flags, qemu_plugin_get_hwaddr, qemu_plugin_hwaddr_phys_addr, qemu_plugin_id_t,
    qemu_plugin_insn_data, qemu_plugin_insn_haddr, qemu_plugin_mem_is_store, qemu_plugin_mem_rw,
    qemu_plugin_mem_size_shift, qemu_plugin_meminfo_t, qemu_plugin_op,
    qemu_plugin_register_atexit_cb, qemu_plugin_register_vcpu_idle_cb,
    qemu_plugin_register_vcpu_mem_cb, qemu_plugin_register_vcpu_resume_cb,
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu, qemu_plugin_register_vcpu_tb_trans_cb,
    qemu_plugin_reset, qemu_plugin_scoreboard_new, qemu_plugin_tb, qemu_plugin_tb_get_insn,
    qemu_plugin_tb_n_insns, qemu_plugin_u64, qemu_plugin_u64_get,
};

use crate::learn::{Forget, Key, Learner};
use crate::link::Link;
use crate::stall::Stall;

const NONE: u8 = 0;
const ARM: u8 = 1;
const DISARM: u8 = 2;

/// Maintenance resets (bits of `State::maint`), armed state unchanged:
/// re-translate so that seen instructions lose their callbacks;
const PRUNE: u8 = 1;
/// start one share of the instructions' counts over (an audit);
const AUDIT: u8 = 2;
/// re-translate with every instruction instrumented, then acknowledge the
/// stall table (stall mode charges every user-space access).
const STALL_ACK: u8 = 4;

/// A prune flushes QEMU's whole code cache, whose hot part every vCPU
/// then translates again: it is worth it only once seen instructions that
/// still have their callback made this many accesses on one vCPU since
/// the last reset (pruning as soon as any one was seen made a storm of
/// prunes: measured 1703 in 10 minutes, each lukewarm kernel instruction
/// reaching its count asking for one, and the guest crawled; 2 Mi and
/// 300 ms made fewer prunes and ran faster than 64 Ki and 50 ms, or 512 Ki
/// and 100 ms, in `data-generator` runs here) ...
pub const PRUNE_AFTER: u64 = 1 << 21;
/// ... and at most one per 300 ms.
pub const MIN_PRUNE_GAP: Duration = Duration::from_millis(300);

/// A vCPU's count of accesses by seen instructions that still have their
/// callback, on a cache line of its own.
#[repr(align(64))]
#[derive(Default)]
struct Waste(AtomicU64);

struct State {
    id: qemu_plugin_id_t,
    link: Link,
    /// The watched windows: `n_windows` (base, size) pairs. Written only
    /// inside the reset callback, when every vCPU is stopped.
    windows: [(AtomicU64, AtomicU64); MAX_WINDOWS],
    n_windows: AtomicUsize,
    /// Windows of the pending `arm`.
    next_windows: Mutex<Vec<Window>>,
    pending: AtomicU8,
    resetting: AtomicBool,
    /// Per-vCPU count of executed instructions while armed.
    icount: ScoreEntry,
    /// Stall mode's costs and debts (off until a `stall` command).
    stall: Stall,
    /// Which instructions are instrumented.
    learn: Learner,
    /// Pending maintenance resets (`PRUNE`, `AUDIT`, `STALL_ACK`).
    maint: AtomicU8,
    /// No prune before this, in nanoseconds since `epoch`.
    next_prune_ns: AtomicU64,
    /// Per vCPU since the last reset: see [`PRUNE_AFTER`].
    waste: Box<[Waste]>,
    epoch: Instant,
}

/// The scoreboard entry; QEMU owns the memory and keeps it valid for the
/// plugin's lifetime.
struct ScoreEntry(qemu_plugin_u64);
// SAFETY: the entry is a scoreboard pointer and an offset that Rust never
// dereferences: the plugin only passes it by value to QEMU's API, which may
// be called from any vCPU thread, so moving it to another thread is sound.
unsafe impl Send for ScoreEntry {}
// SAFETY: shared references only copy the entry out to pass it to QEMU
// (see Send); the counters it names are per vCPU, each written by QEMU on
// its own vCPU thread.
unsafe impl Sync for ScoreEntry {}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get().expect("the plugin is installed")
}

impl State {
    fn set_windows(&self, ws: &[Window]) {
        for (slot, w) in self.windows.iter().zip(ws) {
            slot.0.store(w.base, Ordering::Relaxed);
            slot.1.store(w.size, Ordering::Relaxed);
        }
        self.n_windows
            .store(ws.len().min(MAX_WINDOWS), Ordering::Relaxed);
    }

    #[inline]
    fn watched(&self, addr: u64) -> bool {
        let n = self.n_windows.load(Ordering::Relaxed);
        self.windows[..n]
            .iter()
            .any(|(b, s)| addr.wrapping_sub(b.load(Ordering::Relaxed)) < s.load(Ordering::Relaxed))
    }
}

/// Installs the plugin: connects, starts the I/O threads and registers the
/// disarmed (or, with `armed=on`, armed) callbacks.
pub fn install(id: qemu_plugin_id_t, raw: &[String], vcpus: usize) -> Result<(), String> {
    let a = args::parse(raw).map_err(|e| e.to_string())?;
    let audit_every = a.audit_every;
    let (link, reader) = Link::connect(&a.socket, vcpus, a.batch)?;
    // SAFETY: allocating a scoreboard has no precondition; QEMU sizes it
    // for every vCPU (and grows it for new ones) with one u64 each, which
    // the entry below names at offset 0. It is never freed: the plugin
    // uses it until QEMU exits.
    let score = unsafe { qemu_plugin_scoreboard_new(std::mem::size_of::<u64>()) };
    let st = State {
        id,
        link,
        windows: Default::default(),
        n_windows: AtomicUsize::new(0),
        next_windows: Mutex::new(Vec::new()),
        pending: AtomicU8::new(NONE),
        resetting: AtomicBool::new(false),
        icount: ScoreEntry(qemu_plugin_u64 { score, offset: 0 }),
        stall: Stall::new(vcpus),
        learn: Learner::new(a.learn),
        maint: AtomicU8::new(0),
        next_prune_ns: AtomicU64::new(0),
        waste: (0..vcpus).map(|_| Waste::default()).collect(),
        epoch: Instant::now(),
    };
    if STATE.set(st).is_err() {
        return Err("the plugin is loaded twice".into());
    }
    let st = state();
    st.link.spawn_flusher(a.flush_every);
    st.link.spawn_reader(
        reader,
        |cmd| match cmd {
            Command::Arm(ws) => {
                *state()
                    .next_windows
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = ws;
                state().pending.store(ARM, Ordering::Release);
            }
            Command::Disarm => state().pending.store(DISARM, Ordering::Release),
            // Sent before the flushed message, so stats read after a
            // `flush` show the latest counters.
            Command::Flush => state().send_counters(),
            // Costs change without re-translation: the memory callbacks
            // read them on every access. But blocks that leave seen
            // instructions out would charge none of their accesses: those
            // are re-translated first, and the table acknowledged after.
            Command::Stall(t) => {
                let st = state();
                st.stall.set(&t);
                if st.stall.is_on() && st.learn.cache_left_out() {
                    st.maint.fetch_or(STALL_ACK, Ordering::Release);
                } else {
                    st.link.send_event(Kind::Stalled);
                }
            }
        },
        // Without a simulator the instrumentation is pure cost, and the
        // stalls have no model behind them.
        || {
            state().stall.set(&Default::default());
            state().pending.store(DISARM, Ordering::Release)
        },
    );
    if !audit_every.is_zero() {
        std::thread::Builder::new()
            .name("cxl-plugin-audit".into())
            .spawn(move || loop {
                std::thread::sleep(audit_every);
                let st = state();
                if st.learn.cache_left_out() {
                    st.maint.fetch_or(AUDIT, Ordering::Release);
                }
            })
            .map_err(|e| format!("cannot start the plugin's audit thread: {e}"))?;
    }
    if a.armed {
        st.set_windows(&a.windows);
        register(true);
    } else {
        register(false);
    }
    Ok(())
}

impl State {
    fn send_counters(&self) {
        let c = self.learn.counters();
        self.link.send_learning(LearnCounts {
            left_out: c.left_out,
            relearned: c.relearned,
            prunes: c.prunes,
        });
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A seen instruction still has its callback (on `vcpu`): prune once
    /// such accesses reached [`PRUNE_AFTER`], unless a prune ran less than
    /// [`MIN_PRUNE_GAP`] ago (then a later access asks again).
    #[inline]
    fn want_prune(&self, vcpu: usize) {
        let Some(w) = self.waste.get(vcpu) else {
            return;
        };
        let n = w.0.load(Ordering::Relaxed) + 1;
        w.0.store(n, Ordering::Relaxed);
        if n >= PRUNE_AFTER {
            self.prune();
        }
    }

    #[cold]
    fn prune(&self) {
        if self.maint.load(Ordering::Relaxed) & PRUNE != 0
            || self.now_ns() < self.next_prune_ns.load(Ordering::Relaxed)
        {
            return;
        }
        self.maint.fetch_or(PRUNE, Ordering::Release);
        poll_pending(self);
    }
}

/// Registers the callbacks of one state (a reset removed all of them).
fn register(armed: bool) {
    let id = state().id;
    // SAFETY: `id` is the one QEMU gave this plugin at install; the API
    // allows registering callbacks from install and from the reset
    // callback, the only callers. Each callback is a function of the
    // signature the API declares (the bindings' types check it) and lives
    // as long as the program; on_exit takes no user data, so null is fine.
    unsafe {
        qemu_plugin_register_vcpu_tb_trans_cb(
            id,
            Some(if armed { on_tb_armed } else { on_tb_disarmed }),
        );
        qemu_plugin_register_vcpu_idle_cb(id, Some(on_idle));
        qemu_plugin_register_vcpu_resume_cb(id, Some(on_resume));
        qemu_plugin_register_atexit_cb(id, Some(on_exit), std::ptr::null_mut());
    }
}

/// Starts a pending arm/disarm, from a vCPU thread.
#[inline]
fn poll_pending(st: &State) {
    if st.pending.load(Ordering::Relaxed) == NONE && st.maint.load(Ordering::Relaxed) == 0 {
        return;
    }
    if st
        .resetting
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        // SAFETY: `id` is this plugin's; poll_pending runs only in vCPU
        // callbacks, and qemu_plugin_reset must be called on a vCPU thread
        // (it queues exclusive work there). `resetting` keeps a second
        // reset from starting before on_reset ran.
        unsafe { qemu_plugin_reset(st.id, Some(on_reset)) };
    }
}

/// Runs with every vCPU stopped and the plugin's callbacks removed.
extern "C" fn on_reset(_id: qemu_plugin_id_t) {
    let st = state();
    let want = st.pending.swap(NONE, Ordering::AcqRel);
    let maint = st.maint.swap(0, Ordering::AcqRel);
    // Records of the old state go out before the new state is announced.
    st.link.flush_all();
    let armed = match want {
        ARM if st.link.connected() => {
            let ws = st
                .next_windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            st.set_windows(&ws);
            true
        }
        ARM | DISARM => false,
        // A request raced with this reset: keep what the windows say.
        _ => st.n_windows.load(Ordering::Relaxed) > 0,
    };
    if !armed {
        st.set_windows(&[]);
    }
    // The code cache is empty: no block refers to an instruction slot.
    let forget = if want == ARM {
        Forget::All
    } else if maint & AUDIT != 0 {
        Forget::Share
    } else {
        Forget::Nothing
    };
    st.learn.reset(maint & PRUNE != 0, forget);
    for w in st.waste.iter() {
        w.0.store(0, Ordering::Relaxed);
    }
    if maint & PRUNE != 0 {
        let next = st.now_ns().saturating_add(MIN_PRUNE_GAP.as_nanos() as u64);
        st.next_prune_ns.store(next, Ordering::Relaxed);
    }
    register(armed);
    // A maintenance reset keeps the state: announcing it could pass for
    // the answer to an arm or disarm still pending.
    if want != NONE || maint == 0 {
        st.link
            .send_event(if armed { Kind::Armed } else { Kind::Disarmed });
    }
    if maint & STALL_ACK != 0 {
        st.link.send_event(Kind::Stalled);
    }
    st.send_counters();
    st.resetting.store(false, Ordering::Release);
}

extern "C" fn on_tb_disarmed(_id: qemu_plugin_id_t, _tb: *mut qemu_plugin_tb) {
    poll_pending(state());
}

/// Instruments a translated block while armed.
///
/// # Safety
///
/// `tb` is the block QEMU is translating, valid for this call: QEMU's
/// translation callback contract.
unsafe extern "C" fn on_tb_armed(_id: qemu_plugin_id_t, tb: *mut qemu_plugin_tb) {
    let st = state();
    poll_pending(st);
    // SAFETY: tb is valid for this call (the caller's contract), and so are
    // the instruction handles taken from it for i < n. The scoreboard entry
    // is valid for QEMU's lifetime; on_mem has the memory callback's
    // signature, and its user data is a count, never dereferenced.
    unsafe {
        let n = qemu_plugin_tb_n_insns(tb);
        // Learning off (the default), no instruction gets a slot: each is
        // instrumented, and its accesses skip the learning counters.
        let learning = st.learn.is_on();
        if !learning {
            // Counted when the block starts: an access of instruction i
            // sees the count after the block, so it subtracts n - i (its
            // userdata). Learning is the cheap mode and counts nothing per
            // block: this add on every block executed cost about 15 % of
            // a learned `data-generator` run (records then carry icount 0).
            qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
                tb,
                qemu_plugin_op::QEMU_PLUGIN_INLINE_ADD_U64,
                st.icount.0,
                n as u64,
            );
        }
        let stalling = st.stall.is_on();
        for i in 0..n {
            let insn = qemu_plugin_tb_get_insn(tb, i);
            let slot = if learning {
                let mut key = Key {
                    haddr: qemu_plugin_insn_haddr(insn) as u64,
                    bytes: [0; 16],
                };
                qemu_plugin_insn_data(insn, key.bytes.as_mut_ptr().cast(), key.bytes.len());
                let slot = st.learn.slot(key);
                if slot.is_none() {
                    // The table is full: an audit's reset starts it over.
                    st.maint.fetch_or(AUDIT, Ordering::Release);
                }
                if !st.learn.instrument(slot, stalling) {
                    continue;
                }
                slot
            } else {
                None
            };
            qemu_plugin_register_vcpu_mem_cb(
                insn,
                Some(on_mem),
                qemu_plugin_cb_flags::QEMU_PLUGIN_CB_NO_REGS,
                qemu_plugin_mem_rw::QEMU_PLUGIN_MEM_RW,
                Site::encode(slot, (n - i) as u64) as *mut c_void,
            );
        }
    }
}

/// A memory callback's user data: the instruction's learning slot (plus
/// one; 0: untracked) in the high half, the instructions from it to the
/// block's end in the low half (at most 512).
struct Site;

impl Site {
    fn encode(slot: Option<u32>, back: u64) -> u64 {
        (slot.map_or(0, |s| u64::from(s) + 1) << 32) | (back & 0xffff_ffff)
    }

    #[inline]
    fn decode(v: u64) -> (Option<u32>, u64) {
        ((v >> 32).checked_sub(1).map(|s| s as u32), v & 0xffff_ffff)
    }
}

/// Every guest memory access while armed: the hot path.
///
/// # Safety
///
/// `info` describes the access being made on vCPU `vcpu`, valid for this
/// call: QEMU's memory callback contract.
unsafe extern "C" fn on_mem(
    vcpu: c_uint,
    info: qemu_plugin_meminfo_t,
    vaddr: u64,
    userdata: *mut c_void,
) {
    let st = state();
    // SAFETY: info is valid for this call (the caller's contract); the
    // returned handle is valid until the callback returns, and null (which
    // is checked) under user-mode emulation.
    let addr = unsafe {
        let hw = qemu_plugin_get_hwaddr(info, vaddr);
        if hw.is_null() {
            return;
        }
        qemu_plugin_hwaddr_phys_addr(hw)
    };
    let stalling = st.stall.is_on();
    let watched = st.watched(addr);
    let (slot, back) = Site::decode(userdata as u64);
    if let Some(slot) = slot {
        if watched {
            st.learn.window_access(slot);
        } else if st.learn.ram_access(slot) && !stalling {
            st.want_prune(vcpu as usize);
        }
    }
    if st.maint.load(Ordering::Relaxed) != 0 {
        poll_pending(st);
    }
    // Most accesses are local ones outside stall mode: they end here,
    // before any further call into QEMU.
    if !stalling && !watched {
        return;
    }
    // SAFETY: info is valid for this call (the caller's contract).
    let (size_shift, store) = unsafe {
        (
            qemu_plugin_mem_size_shift(info),
            qemu_plugin_mem_is_store(info),
        )
    };
    let size = 1u16 << size_shift.min(15);
    if stalling {
        // Local accesses carry a stall too (the calibrated baseline).
        st.stall
            .charge(vcpu as usize, addr, vaddr, store, u64::from(size));
    }
    if !watched {
        return;
    }
    let icount = if st.learn.is_on() {
        0
    } else {
        // SAFETY: the scoreboard entry is valid for QEMU's lifetime and
        // has a counter for every vCPU index QEMU passes.
        unsafe { qemu_plugin_u64_get(st.icount.0, vcpu) }.wrapping_sub(back)
    };
    let rec = AccessRecord {
        addr,
        icount,
        vcpu,
        size,
        flags: if store { FLAG_WRITE } else { 0 },
    };
    st.link.push(vcpu as usize, rec);
}

extern "C" fn on_idle(_id: qemu_plugin_id_t, vcpu: c_uint) {
    let st = state();
    // An idle vCPU's records would otherwise wait for the flusher.
    st.link.flush_vcpu(vcpu as usize);
    poll_pending(st);
}

extern "C" fn on_resume(_id: qemu_plugin_id_t, vcpu: c_uint) {
    let st = state();
    st.stall.resumed(vcpu as usize);
    poll_pending(st);
}

extern "C" fn on_exit(_id: qemu_plugin_id_t, _userdata: *mut c_void) {
    state().link.flush_all();
}
