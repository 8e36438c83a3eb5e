//! Stall mode: each vCPU is paced so that every access it makes takes at
//! least the wall time the simulator's model gives it, so time in the
//! guest shows CXL memory's latency.
//!
//! The costs come from a `stall` command (a [`StallTable`]: per CXL range,
//! and for every other user-space access), each the *whole* wall time an
//! access should take. TCG's own time counts towards it: the vCPU's wall
//! time since its previous charged access (the access itself, the guest
//! code before it, an interrupt) is measured, and only what is missing is
//! added to a per-vCPU debt in picoseconds; where TCG took longer, the
//! excess is credit towards the next accesses, at most [`MAX_CARRY_PS`]
//! (a slow access is paid for by the next few; more would carry a slow
//! stretch of CXL accesses into the local ones measured after it, as it
//! did with 20 ms). The time a vCPU spends halted (guest idle) is no
//! credit. So the stall never
//! depends on a TCG cost measured once: under
//! TCG a CXL access goes through QEMU's MMIO path, whose cost moved by 2x
//! within minutes on this shared machine, and subtracting a calibrated
//! figure put every change of it into the CXL/local ratio.
//!
//! The debt is paid once it reaches [`PAY_AT_PS`] by putting the vCPU
//! thread to sleep (`nanosleep`, with the thread's timer slack cut to
//! 1 ns), and the time actually slept, overshoot included, is taken off
//! the debt, so over a run the stalls add up to the model's total.
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
/// TCG's time beyond the accesses' costs kept as credit: 1 ms.
pub const MAX_CARRY_PS: i64 = 1_000_000_000;
/// A payment's overshoot kept as credit, at most 20 ms. On a loaded host a sleeping vCPU thread waits for
/// a core when it wakes (measured at load 15 on 2 cores: local loads held
/// 364 ns took 470-790 ns more with a 2 ms cap), and that wait is stall
/// time the guest already saw.
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
    /// When its previous charged access ended (or its last payment did),
    /// in nanoseconds since [`Stall::epoch`]; 0 before the first.
    last_ns: AtomicU64,
    /// The vCPU thread's timer slack is cut (once, on its first payment).
    slack_set: AtomicBool,
}

pub struct Stall {
    on: AtomicBool,
    ranges: [Range; MAX_STALL_RANGES],
    n_ranges: AtomicUsize,
    local: Cost,
    debts: Box<[Debt]>,
    /// The clock the vCPUs' access times are measured against.
    epoch: Instant,
}

impl Stall {
    pub fn new(vcpus: usize) -> Stall {
        Stall {
            on: AtomicBool::new(false),
            ranges: Default::default(),
            n_ranges: AtomicUsize::new(0),
            local: Cost::default(),
            debts: (0..vcpus).map(|_| Debt::default()).collect(),
            epoch: Instant::now(),
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
            d.last_ns.store(0, Ordering::Relaxed);
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
    /// `vaddr`): what its cost exceeds the vCPU's wall time since its
    /// previous charged access is added to the debt, which is paid once it
    /// is due. The local cost is only charged to user-space accesses
    /// (`vaddr` in the lower half): it slows programs' local memory to
    /// keep the model's ratios, while the guest kernel (timers, the guest
    /// agent, page faults) keeps TCG's speed.
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
        // Only this vCPU's thread touches its debt (set() aside), so plain
        // loads and stores are enough.
        let now = self.now_ns();
        let last = debt.last_ns.swap(now, Ordering::Relaxed);
        let d = owed(debt.ps.load(Ordering::Relaxed), missing_ps(cost, last, now));
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
        // The sleep is not TCG's time towards the next access.
        debt.last_ns.store(self.now_ns(), Ordering::Relaxed);
    }

    /// `vcpu` leaves a halt: the time it was idle is not TCG's time
    /// towards its next access.
    pub fn resumed(&self, vcpu: usize) {
        if let Some(debt) = self.debts.get(vcpu) {
            debt.last_ns.store(0, Ordering::Relaxed);
        }
    }

    fn now_ns(&self) -> u64 {
        // Never 0, which means "no previous access".
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }
}

/// The debt after an access that still needs `missing` (negative: TCG's
/// excess): the excess adds at most [`MAX_CARRY_PS`] of credit, and takes
/// none of a payment's overshoot away.
#[inline]
fn owed(debt: i64, missing: i64) -> i64 {
    if missing >= 0 {
        debt + missing
    } else {
        (debt + missing).max(debt.min(-MAX_CARRY_PS))
    }
}

/// What an access of `cost_ps` still needs after TCG took the wall time
/// from `last_ns` (the vCPU's previous charged access; 0: none) to
/// `now_ns` (negative: TCG took longer), each side at most one credit's
/// or payment's worth.
#[inline]
fn missing_ps(cost_ps: u64, last_ns: u64, now_ns: u64) -> i64 {
    let took_ps = if last_ns == 0 {
        0
    } else {
        now_ns
            .saturating_sub(last_ns)
            .saturating_mul(1000)
            .min(MAX_CREDIT_PS as u64) as i64
    };
    cost_ps.min(PAY_AT_PS as u64) as i64 - took_ps
}

/// Sleeps for `debt_ps`; the picoseconds that actually passed.
fn pay(debt_ps: i64) -> i64 {
    let start = Instant::now();
    std::thread::sleep(Duration::from_nanos((debt_ps / 1000) as u64));
    start.elapsed().as_nanos().min(i64::MAX as u128 / 1000) as i64 * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_time_counts_towards_an_access_and_its_excess_is_credit() {
        // 500 ns wanted, TCG took 120: 380 ns missing.
        assert_eq!(missing_ps(500_000, 1_000, 1_120), 380_000);
        // TCG took longer than the access should: credit.
        assert_eq!(missing_ps(500_000, 1_000, 3_000), -1_500_000);
        // At most the credit a vCPU keeps.
        assert_eq!(missing_ps(500_000, 1, u64::MAX), 500_000 - MAX_CREDIT_PS);
        // TCG's excess is credit up to 1 ms; overshoot credit stays.
        assert_eq!(owed(0, -5_000_000_000), -MAX_CARRY_PS);
        assert_eq!(owed(-300, -200), -500);
        assert_eq!(owed(-3 * MAX_CARRY_PS, -7), -3 * MAX_CARRY_PS);
        assert_eq!(owed(-300, 500), 200);
        // The first access has no previous one to measure from.
        assert_eq!(missing_ps(500_000, 0, 9_000), 500_000);
        // One access owes at most one payment.
        assert_eq!(missing_ps(u64::MAX, 0, 1), PAY_AT_PS);
    }

    #[test]
    fn a_vcpu_is_held_until_its_accesses_costs_have_passed() {
        let s = Stall::new(1);
        // Every user-space local access takes at least 100 µs.
        let t = StallTable {
            local: StallCost {
                read_ps: 100_000_000,
                write_ps: 100_000_000,
                ps_per_byte: 0,
            },
            ranges: Vec::new(),
        };
        s.set(&t);
        let start = Instant::now();
        for _ in 0..40 {
            s.charge(0, 0x1000, 0x1000, false, 8);
        }
        // 4 ms owed, less the last debt that waits for the next payment.
        let took = start.elapsed();
        assert!(took >= Duration::from_micros(3_800), "{took:?}");
        // Kernel accesses (upper-half addresses) are neither held nor
        // counted as the previous access.
        let (ps, last) = (
            s.debts[0].ps.load(Ordering::Relaxed),
            s.debts[0].last_ns.load(Ordering::Relaxed),
        );
        for _ in 0..20 {
            s.charge(0, 0x1000, 0xffff_8000_0000_1000, false, 8);
        }
        assert_eq!(s.debts[0].ps.load(Ordering::Relaxed), ps);
        assert_eq!(s.debts[0].last_ns.load(Ordering::Relaxed), last);
    }

    #[test]
    fn a_halt_is_no_credit() {
        let s = Stall::new(1);
        let cost = StallCost {
            read_ps: 50_000_000,
            write_ps: 50_000_000,
            ps_per_byte: 0,
        };
        s.set(&StallTable {
            local: cost,
            ranges: Vec::new(),
        });
        s.charge(0, 0x1000, 0x1000, false, 8);
        std::thread::sleep(Duration::from_millis(2));
        s.resumed(0);
        // The 2 ms the vCPU was halted do not pay for this access.
        s.charge(0, 0x1000, 0x1000, false, 8);
        assert_eq!(s.debts[0].ps.load(Ordering::Relaxed), 100_000_000);
    }
}
