//! CPU features from CPUID and the instructions that use them: cache-line
//! flushes, fences, PAUSE, UMONITOR/UMWAIT and MONITORX/MWAITX.

use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};

use serde::Serialize;

/// The features this tool cares about, as CPUID reports them.
#[derive(Debug, Clone, Serialize)]
pub struct CpuFeatures {
    pub vendor: String,
    pub clflush: bool,
    pub clflushopt: bool,
    pub clwb: bool,
    /// CPUID.(EAX=7,ECX=0):ECX[5]: UMONITOR/UMWAIT/TPAUSE.
    pub waitpkg: bool,
    /// CPUID.80000001H:ECX[29]: MONITORX/MWAITX.
    pub monitorx: bool,
    /// CPUID.80000001H:EDX[27].
    pub rdtscp: bool,
    /// CPUID.80000007H:EDX[8].
    pub invariant_tsc: bool,
}

impl CpuFeatures {
    pub fn detect() -> CpuFeatures {
        let v = __cpuid(0);
        let mut vendor = Vec::with_capacity(12);
        for r in [v.ebx, v.edx, v.ecx] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        let max_ext = __cpuid(0x8000_0000).eax;
        let l1 = __cpuid(1);
        let l7 = if v.eax >= 7 {
            __cpuid_count(7, 0)
        } else {
            __cpuid(0)
        };
        let e1 = if max_ext >= 0x8000_0001 {
            __cpuid(0x8000_0001)
        } else {
            __cpuid(0)
        };
        let e7 = if max_ext >= 0x8000_0007 {
            __cpuid(0x8000_0007)
        } else {
            __cpuid(0)
        };
        let has7 = v.eax >= 7;
        CpuFeatures {
            vendor: String::from_utf8_lossy(&vendor).into_owned(),
            clflush: l1.edx & (1 << 19) != 0,
            clflushopt: has7 && l7.ebx & (1 << 23) != 0,
            clwb: has7 && l7.ebx & (1 << 24) != 0,
            waitpkg: has7 && l7.ecx & (1 << 5) != 0,
            monitorx: max_ext >= 0x8000_0001 && e1.ecx & (1 << 29) != 0,
            rdtscp: max_ext >= 0x8000_0001 && e1.edx & (1 << 27) != 0,
            invariant_tsc: max_ext >= 0x8000_0007 && e7.edx & (1 << 8) != 0,
        }
    }
}

/// A cache-line write-back instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flush {
    Clwb,
    Clflushopt,
    Clflush,
}

impl Flush {
    /// The best write-back instruction available, and why it was chosen.
    pub fn select(cpu: &CpuFeatures) -> (Flush, &'static str) {
        if cpu.clwb {
            (Flush::Clwb, "CPUID.(EAX=7,ECX=0):EBX[24] CLWB is set")
        } else if cpu.clflushopt {
            (
                Flush::Clflushopt,
                "CLWB absent; CPUID.(EAX=7,ECX=0):EBX[23] CLFLUSHOPT is set",
            )
        } else {
            (
                Flush::Clflush,
                "neither CLWB nor CLFLUSHOPT in CPUID; using CLFLUSH (serialising, slower)",
            )
        }
    }

    /// An instruction that evicts the line (for uncached read latency).
    pub fn evicting(cpu: &CpuFeatures) -> Flush {
        if cpu.clflushopt {
            Flush::Clflushopt
        } else {
            Flush::Clflush
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flush::Clwb => "clwb",
            Flush::Clflushopt => "clflushopt",
            Flush::Clflush => "clflush",
        }
    }

    /// Writes back (or evicts) every line of `[p, p + len)`; no fence.
    #[inline]
    pub fn range(self, p: *const u8, len: usize) {
        let mut line = p as usize & !63;
        let end = p as usize + len;
        while line < end {
            // SAFETY: CLWB, CLFLUSHOPT and CLFLUSH only write a cache line
            // back to memory (and maybe evict it): no memory contents or
            // registers change, so nothing Rust assumes is disturbed. `self`
            // comes from `select` or `evicting`, which pick an instruction
            // CPUID reports (CLFLUSH is baseline x86_64). A line that is not
            // mapped faults (SIGSEGV) rather than touching anything.
            unsafe {
                match self {
                    Flush::Clwb => {
                        asm!("clwb [{0}]", in(reg) line, options(nostack, preserves_flags))
                    }
                    Flush::Clflushopt => {
                        asm!("clflushopt [{0}]", in(reg) line, options(nostack, preserves_flags))
                    }
                    Flush::Clflush => {
                        asm!("clflush [{0}]", in(reg) line, options(nostack, preserves_flags))
                    }
                }
            }
            line += 64;
        }
    }
}

#[inline]
pub fn sfence() {
    // SAFETY: SFENCE (SSE, baseline x86_64) has no operands and only orders
    // stores; it reads and writes no memory or registers.
    unsafe { asm!("sfence", options(nostack, preserves_flags)) };
}

#[inline]
pub fn mfence() {
    // SAFETY: MFENCE (SSE2, baseline x86_64) has no operands and only orders
    // loads and stores; it reads and writes no memory or registers.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
}

/// Arms UMONITOR on the line of `addr`.
///
/// # Safety
/// CPUID must report WAITPKG and `addr` must be mapped.
#[inline]
pub unsafe fn umonitor(addr: *const u8) {
    // SAFETY: the caller guarantees WAITPKG (so the instruction exists) and a
    // mapped `addr`; UMONITOR only arms address monitoring on its line and
    // writes no memory.
    unsafe { asm!("umonitor {0}", in(reg) addr, options(nostack, preserves_flags)) };
}

/// UMWAIT in C0.1 until the monitored line is written or the TSC passes
/// `deadline`.
///
/// # Safety
/// CPUID must report WAITPKG.
#[inline]
pub unsafe fn umwait(deadline: u64) {
    // C0.1: faster wake-up.
    let ctrl: u32 = 1;
    // SAFETY: the caller guarantees WAITPKG, so UMWAIT exists; it only waits
    // (bounded by the deadline in EDX:EAX) and writes no memory.
    unsafe {
        asm!(
            "umwait {ctrl:e}",
            ctrl = in(reg) ctrl,
            in("eax") deadline as u32,
            in("edx") (deadline >> 32) as u32,
            options(nostack),
        )
    };
}

/// Arms MONITORX on the line of `addr`.
///
/// # Safety
/// CPUID must report MONITORX and `addr` must be mapped.
#[inline]
pub unsafe fn monitorx(addr: *const u8) {
    // SAFETY: the caller guarantees MONITORX (so the instruction exists) and
    // a mapped `addr`; MONITORX only arms monitoring on its line and writes no
    // memory.
    unsafe {
        asm!("monitorx", in("rax") addr, in("ecx") 0u32, in("edx") 0u32, options(nostack, preserves_flags))
    };
}

/// MWAITX with its timer enabled for `timeout` TSC ticks. EBX (the timeout)
/// is reserved by LLVM, so it is swapped in and out around the instruction.
///
/// # Safety
/// CPUID must report MONITORX.
#[inline]
pub unsafe fn mwaitx(timeout: u32) {
    // SAFETY: the caller guarantees MONITORX, so MWAITX exists; it only waits
    // (bounded by its timer) and writes no memory. RBX, which LLVM reserves,
    // holds the timeout only between the two XCHGs and is restored after.
    unsafe {
        asm!(
            "xchg {t:r}, rbx",
            "mwaitx",
            "xchg {t:r}, rbx",
            t = inout(reg) timeout as u64 => _,
            in("eax") 0xf0u32, // C0 hint: no deep sleep
            in("ecx") 2u32,    // timer enable
            options(nostack),
        )
    };
}

/// Reads the TSC (not ordered; see `clock`).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: every x86_64 CPU has a TSC, and Linux lets user code read it
    // (CR4.TSD clear); RDTSC only writes EDX:EAX, which the intrinsic returns.
    unsafe { core::arch::x86_64::_rdtsc() }
}
