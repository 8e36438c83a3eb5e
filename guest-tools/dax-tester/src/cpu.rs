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
            // SAFETY: the caller passes mapped memory; these only write back or evict.
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
    // SAFETY: a fence has no operands.
    unsafe { asm!("sfence", options(nostack, preserves_flags)) };
}

#[inline]
pub fn mfence() {
    // SAFETY: a fence has no operands.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
}

/// Arms UMONITOR on the line of `addr`.
///
/// # Safety
/// CPUID must report WAITPKG and `addr` must be mapped.
#[inline]
pub unsafe fn umonitor(addr: *const u8) {
    // SAFETY: caller checked CPUID.WAITPKG; addr is mapped.
    unsafe { asm!("umonitor {0}", in(reg) addr, options(nostack, preserves_flags)) };
}

/// UMWAIT in C0.1 until the monitored line is written or the TSC passes
/// `deadline`.
///
/// # Safety
/// CPUID must report WAITPKG.
#[inline]
pub unsafe fn umwait(deadline: u64) {
    let ctrl: u32 = 1; // C0.1: faster wake-up
                       // SAFETY: caller checked CPUID.WAITPKG.
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
    // SAFETY: caller checked CPUID.MONITORX; addr is mapped.
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
    // SAFETY: caller checked CPUID.MONITORX; rbx is restored.
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
    // SAFETY: RDTSC is unprivileged on Linux.
    unsafe { core::arch::x86_64::_rdtsc() }
}
