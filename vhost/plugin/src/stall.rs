//! Stall mode: each vCPU is held for the extra time the simulator's model
//! charges its accesses, so time in the guest shows CXL memory's latency.
//!
//! The costs come from a `stall` command (a [`StallTable`]: per CXL range,
//! and for every other access) and are added to a per-vCPU debt in
//! picoseconds. The debt is paid once it reaches [`PAY_AT_PS`] by putting
//! the vCPU thread to sleep (`nanosleep`, with the thread's timer slack
//! cut to 1 ns), and the time actually slept, overshoot included, is taken
//! off the debt, so over a run the stalls add up to the model's total.
//!
//! Why a sleep and not a busy-wait: measured on this shared 2-core
//! machine (load 15), busy-waiting 1 µs per access made each CXL load
//! 3.5 µs slower, because the scheduler charges the spin to the vCPU
//! thread's CPU share and then runs its guest code that much less. A
//! sleep costs no share, but it overshoots (wake-up latency), so debts
//! batch up to [`PAY_AT_PS`] first: small debts would be dwarfed by the
//! overshoot and by the system call. A guest program that times many
//! accesses sees the right total; one that times a single access sees 0
//! or a whole payment.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cxl_memsim_wire::{StallCost, StallTable, MAX_STALL_RANGES};

/// A debt is paid once it reaches 200 µs.
pub const PAY_AT_PS: i64 = 200_000_000;
/// Overshoot kept as credit, at most 20 ms. On a loaded host a sleeping
/// vCPU thread waits for a core when it wakes (measured at load 15 on 2
/// cores: local loads held 364 ns took 470-790 ns more with a 2 ms cap),
/// and that wait is stall time the guest already saw.
pub const MAX_CREDIT_PS: i64 = 20_000_000_000;

/// One cost, readable while another thread replaces it.
#[derive(Default)]
struct Cost {
    read_ps: AtomicU64,
    write_ps: AtomicU64,
    ps_per_byte: AtomicU64,
}

impl Cost {
    fn set(&self, c: &StallCost) {
        self.read_ps.store(c.read_ps, Ordering::Relaxed);
        self.write_ps.store(c.write_ps, Ordering::Relaxed);
        self.ps_per_byte.store(c.ps_per_byte, Ordering::Relaxed);
    }

    #[inline]
    fn of(&self, store: bool, size: u64) -> u64 {
        let fixed = if store {
            self.write_ps.load(Ordering::Relaxed)
        } else {
            self.read_ps.load(Ordering::Relaxed)
        };
        fixed.saturating_add(
            self.ps_per_byte
                .load(Ordering::Relaxed)
                .saturating_mul(size),
        )
    }
}

#[derive(Default)]
struct Range {
    base: AtomicU64,
    size: AtomicU64,
    cost: Cost,
}

/// A vCPU's debt in picoseconds (negative: credit), on a cache line of
/// its own so vCPUs do not share one.
#[repr(align(64))]
#[derive(Default)]
struct Debt {
    ps: AtomicI64,
    /// The vCPU thread's timer slack is cut (once, on its first payment).
    slack_set: AtomicBool,
}

pub struct Stall {
    on: AtomicBool,
    ranges: [Range; MAX_STALL_RANGES],
    n_ranges: AtomicUsize,
    local: Cost,
    debts: Box<[Debt]>,
}

impl Stall {
    pub fn new(vcpus: usize) -> Stall {
        Stall {
            on: AtomicBool::new(false),
            ranges: Default::default(),
            n_ranges: AtomicUsize::new(0),
            local: Cost::default(),
            debts: (0..vcpus).map(|_| Debt::default()).collect(),
        }
    }

    /// Replaces the table. vCPUs may charge meanwhile: one access may see
    /// a mix of the old and new tables, which is one access's stall.
    pub fn set(&self, t: &StallTable) {
        self.on.store(false, Ordering::Release);
        let n = t.ranges.len().min(MAX_STALL_RANGES);
        self.n_ranges.store(0, Ordering::Release);
        for (slot, (w, c)) in self.ranges.iter().zip(&t.ranges) {
            slot.base.store(w.base, Ordering::Relaxed);
            slot.size.store(w.size, Ordering::Relaxed);
            slot.cost.set(c);
        }
        self.local.set(&t.local);
        self.n_ranges.store(n, Ordering::Release);
        for d in self.debts.iter() {
            d.ps.store(0, Ordering::Relaxed);
        }
        self.on.store(!t.is_off(), Ordering::Release);
    }

    /// Whether a table is in force (one relaxed load: asked on every
    /// access).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Charges one access of `vcpu` (guest physical `addr`, virtual
    /// `vaddr`) and pays the debt once it is due. The local cost is only
    /// charged to user-space accesses (`vaddr` in the lower half): it
    /// slows programs' local memory to keep the model's ratios, while the
    /// guest kernel (timers, the guest agent, page faults) keeps TCG's
    /// speed.
    #[inline]
    pub fn charge(&self, vcpu: usize, addr: u64, vaddr: u64, store: bool, size: u64) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let n = self.n_ranges.load(Ordering::Acquire);
        let cost = match self.ranges[..n].iter().find(|r| {
            addr.wrapping_sub(r.base.load(Ordering::Relaxed)) < r.size.load(Ordering::Relaxed)
        }) {
            Some(r) => r.cost.of(store, size),
            None if vaddr >> 47 == 0 => self.local.of(store, size),
            None => return,
        };
        let Some(debt) = self.debts.get(vcpu) else {
            return;
        };
        // Only this vCPU's thread touches its debt (set() aside), so a
        // plain load and store is enough.
        let d = debt.ps.load(Ordering::Relaxed) + cost.min(PAY_AT_PS as u64) as i64;
        if d < PAY_AT_PS {
            debt.ps.store(d, Ordering::Relaxed);
            return;
        }
        if !debt.slack_set.swap(true, Ordering::Relaxed) {
            // SAFETY: PR_SET_TIMERSLACK only sets the calling thread's
            // timer slack (here 1 ns instead of 50 µs); no memory is passed.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        }
        let paid = pay(d);
        debt.ps
            .store((d - paid).max(-MAX_CREDIT_PS), Ordering::Relaxed);
    }
}

/// Sleeps for `debt_ps`; the picoseconds that actually passed.
fn pay(debt_ps: i64) -> i64 {
    let start = Instant::now();
    std::thread::sleep(Duration::from_nanos((debt_ps / 1000) as u64));
    start.elapsed().as_nanos().min(i64::MAX as u128 / 1000) as i64 * 1000
}
