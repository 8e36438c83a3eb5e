//! Whether a physical range may be mapped from `/dev/mem` for a test: it
//! must lie in one CXL region's device-dax memory (or in a region nothing
//! has claimed yet), and never overlap System RAM, which belongs to the
//! kernel's page allocator (a region in system-ram mode included). A
//! persistent region's namespace metadata, or a whole fsdax namespace, is
//! refused too: writing there would corrupt the namespace.

use core::fmt;

use crate::iomem::{Entry, Iomem, Region};

/// An inclusive physical range, shown as `[0x110000000-0x11fffffff]
/// (256 MiB)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    /// `[offset, offset + size)`, or `None` when empty or past 2^64.
    pub fn new(offset: u64, size: u64) -> Option<Span> {
        let end = offset.checked_add(size.checked_sub(1)?)?;
        Some(Span { start: offset, end })
    }

    pub fn size(&self) -> u64 {
        (self.end - self.start).saturating_add(1)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:#x}-{:#x}] ({})",
            self.start,
            self.end,
            Bytes(self.size())
        )
    }
}

/// A byte count in the largest binary unit that divides it.
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (unit, shift) in UNITS {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{} {unit}", self.0 >> shift);
            }
        }
        match self.0 {
            1 => f.write_str("1 byte"),
            n => write!(f, "{n} bytes"),
        }
    }
}

/// Where an accepted range lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<'a> {
    pub window: Entry<'a>,
    pub region: Entry<'a>,
    /// The device-dax instance holding the range; `None` in a region that
    /// nothing has claimed.
    pub dax: Option<Entry<'a>>,
}

impl<'a> Placement<'a> {
    /// The innermost entry holding the range: the dax device, else the region.
    pub fn area(&self) -> Entry<'a> {
        self.dax.unwrap_or(self.region)
    }
}

/// `dax0.0 of region0 [0x110000000-0x11fffffff] in CXL Window 0`.
impl fmt::Display for Placement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dax) = self.dax {
            write!(f, "{} of ", dax.name)?;
        }
        write!(f, "{} in {}", self.region, self.window.name)
    }
}

/// Why a range is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError<'a> {
    #[error("The /dev/mem range is empty: give a size greater than zero.")]
    Empty,
    #[error("The /dev/mem range {offset:#x} + {size:#x} runs past the end of the 64-bit physical address space; give a smaller offset or size.")]
    Overflow { offset: u64, size: u64 },
    #[error(
        "/proc/iomem lists no resource, so the /dev/mem range cannot be checked; mount /proc."
    )]
    NoEntries,
    #[error("/proc/iomem shows every address as 0, as the kernel does for a reader without CAP_SYS_ADMIN, so the /dev/mem range cannot be checked; run as root (/dev/mem needs root too).")]
    AddressesHidden,
    #[error("The /dev/mem range {range} overlaps {ram}{}: System RAM belongs to the kernel's page allocator and is never mapped from /dev/mem. {fix}", InRegion(*region))]
    SystemRam {
        range: Span,
        ram: Entry<'a>,
        /// The region onlined as that memory (system-ram mode), if any.
        region: Option<Entry<'a>>,
        fix: Fix<'a>,
    },
    #[error("The /dev/mem range {range} lies in {region} but overlaps {other}, which {}. {fix}", Claimant(*other))]
    NotDax {
        range: Span,
        region: Entry<'a>,
        other: Entry<'a>,
        fix: Fix<'a>,
    },
    #[error(
        "The /dev/mem range {range} is not inside one CXL region: it overlaps {overlaps}. {fix}"
    )]
    NotInRegion {
        range: Span,
        overlaps: Overlaps<'a>,
        fix: Fix<'a>,
    },
}

/// Checks `[offset, offset + size)` against `iomem`.
pub fn check(iomem: Iomem<'_>, offset: u64, size: u64) -> Result<Placement<'_>, RangeError<'_>> {
    if size == 0 {
        return Err(RangeError::Empty);
    }
    let range = Span::new(offset, size).ok_or(RangeError::Overflow { offset, size })?;
    if iomem.entries().next().is_none() {
        return Err(RangeError::NoEntries);
    }
    if iomem.addresses_hidden() {
        return Err(RangeError::AddressesHidden);
    }
    let fix = Fix { iomem };
    let overlapping = |e: &Entry| e.overlaps(range.start, range.end);
    if let Some(ram) = iomem
        .entries()
        .find(|e| e.is_system_ram() && overlapping(e))
    {
        return Err(RangeError::SystemRam {
            range,
            ram,
            region: iomem.region_of(ram).map(|r| r.region),
            fix,
        });
    }
    let Some(Region { window, region }) = iomem
        .regions()
        .find(|r| r.region.contains(range.start, range.end))
    else {
        return Err(RangeError::NotInRegion {
            range,
            overlaps: Overlaps { iomem, range },
            fix,
        });
    };
    let users = || iomem.descendants(region);
    if users().next().is_none() {
        return Ok(Placement {
            window,
            region,
            dax: None,
        });
    }
    if let Some(dax) = users().find(|e| e.is_dax() && e.contains(range.start, range.end)) {
        return Ok(Placement {
            window,
            region,
            dax: Some(dax),
        });
    }
    // Name what is in the way: a non-dax user first (the namespace's
    // metadata), else the dax device the range runs out of.
    let other = users()
        .find(|e| !e.is_dax() && e.depth == region.depth + 1 && overlapping(e))
        .or_else(|| users().find(|e| e.is_dax() && overlapping(e)))
        .or_else(|| users().find(overlapping))
        .unwrap_or(region);
    Err(RangeError::NotDax {
        range,
        region,
        other,
        fix,
    })
}

/// ` in region0 [...] (system-ram mode)`, or nothing.
struct InRegion<'a>(Option<Entry<'a>>);

impl fmt::Display for InRegion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(region) => write!(f, " in {region}, a CXL region in system-ram mode (onlined by kmem; make its device mode devdax to map it from /dev/mem)"),
            None => Ok(()),
        }
    }
}

/// What a region's non-dax user is, after "which".
struct Claimant<'a>(Entry<'a>);

impl fmt::Display for Claimant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_dax() {
            f.write_str("holds only part of the range")
        } else if self.0.name.starts_with("namespace") {
            f.write_str("is a pmem namespace's own space (its devdax metadata, or all of an fsdax namespace, whose filesystem it would corrupt)")
        } else {
            f.write_str("is not device-dax memory")
        }
    }
}

/// The top-level entries a range overlaps, for a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlaps<'a> {
    iomem: Iomem<'a>,
    range: Span,
}

impl fmt::Display for Overlaps<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 4;
        let Span { start, end } = self.range;
        let top = || {
            self.iomem
                .entries()
                .filter(move |e| e.depth == 0 && e.overlaps(start, end))
        };
        let mut any = false;
        for e in top().take(SHOWN) {
            if any {
                f.write_str(", ")?;
            }
            any = true;
            write!(f, "{e}")?;
            if e.is_cxl_window() {
                let mut parts = self
                    .iomem
                    .regions()
                    .filter(|r| r.window == e && r.region.overlaps(start, end));
                match parts.next() {
                    None => f.write_str(" outside its regions")?,
                    Some(first) => {
                        write!(f, " (only partly in {}", first.region)?;
                        for r in parts {
                            write!(f, ", {}", r.region)?;
                        }
                        f.write_str(")")?;
                    }
                }
            }
        }
        match top().count() {
            0 => f.write_str("no /proc/iomem resource (unclaimed physical addresses)"),
            n if n > SHOWN => write!(f, " and {} more", n - SHOWN),
            _ => Ok(()),
        }
    }
}

/// The ranges that would be accepted, for a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fix<'a> {
    iomem: Iomem<'a>,
}

impl fmt::Display for Fix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let iomem = self.iomem;
        let mut any = false;
        for r in iomem.regions() {
            if r.system_ram(iomem).is_some() {
                continue;
            }
            let mut put = |name: &str, span: Entry| -> fmt::Result {
                f.write_str(if any {
                    ", "
                } else {
                    "The physical offset must lie in a CXL region's device-dax memory: "
                })?;
                any = true;
                write!(
                    f,
                    "{name} [{:#x}-{:#x}] ({})",
                    span.start,
                    span.end,
                    Bytes(span.size())
                )
            };
            if !r.has_users(iomem) {
                put(r.region.name, r.region)?;
            }
            for dax in r.dax(iomem) {
                put(dax.name, dax)?;
            }
        }
        if any {
            f.write_str(" (offset = its start plus the offset inside it).")
        } else {
            f.write_str("This machine has no CXL region with device-dax memory: create a region in devdax mode (`cxl create-region`, `daxctl reconfigure-device -m devdax`).")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../fixtures/default.iomem");
    const TIERING: &str = include_str!("../fixtures/tiering.iomem");
    const FSDAX: &str = include_str!("../fixtures/fsdax.iomem");
    const SEED_DAX: &str = include_str!("../fixtures/seed-dax.iomem");
    const HIDDEN: &str = include_str!("../fixtures/default-unprivileged.iomem");

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn refusal(text: &str, offset: u64, size: u64) -> String {
        check(Iomem::new(text), offset, size)
            .unwrap_err()
            .to_string()
    }

    const DEFAULT_FIX: &str = "The physical offset must lie in a CXL region's device-dax memory: dax0.0 [0x110000000-0x11fffffff] (256 MiB), dax1.0 [0x120600000-0x12fffffff] (250 MiB) (offset = its start plus the offset inside it).";

    #[test]
    fn a_range_in_a_dax_device_is_placed_there() {
        let iomem = Iomem::new(DEFAULT);
        let p = check(iomem, 0x1_1000_0000, 20 * MIB).unwrap();
        assert_eq!(
            p.to_string(),
            "dax0.0 of region0 [0x110000000-0x11fffffff] in CXL Window 0"
        );
        assert_eq!(p.area().start, 0x1_1000_0000);
        // The whole persistent device's data, after its namespace metadata.
        let p = check(iomem, 0x1_2060_0000, 250 * MIB).unwrap();
        assert_eq!(p.dax.unwrap().name, "dax1.0");
        assert_eq!(p.region.name, "region1");
    }

    #[test]
    fn the_seed_run_fits_the_seed_dax_region() {
        let p = check(Iomem::new(SEED_DAX), 0x1_1000_0000, 16 * GIB).unwrap();
        assert_eq!(
            p.to_string(),
            "dax0.0 of region0 [0x110000000-0x50fffffff] in CXL Window 0"
        );
        // The documented offset is the host bridge's registers here.
        assert_eq!(
            refusal(SEED_DAX, 0x1_0000_0000, 16 * GIB),
            "The /dev/mem range [0x100000000-0x4ffffffff] (16 GiB) is not inside one CXL region: it overlaps port1 [0x100001128-0x1000011b7], CXL Window 0 [0x110000000-0x50fffffff] (only partly in region0 [0x110000000-0x50fffffff]). The physical offset must lie in a CXL region's device-dax memory: dax0.0 [0x110000000-0x50fffffff] (16 GiB) (offset = its start plus the offset inside it)."
        );
    }

    #[test]
    fn system_ram_is_refused() {
        assert_eq!(
            refusal(DEFAULT, 0x100_0000, MIB),
            format!("The /dev/mem range [0x1000000-0x10fffff] (1 MiB) overlaps System RAM [0x100000-0x3ffdcfff]: System RAM belongs to the kernel's page allocator and is never mapped from /dev/mem. {DEFAULT_FIX}")
        );
    }

    #[test]
    fn a_region_in_system_ram_mode_is_refused() {
        assert_eq!(
            refusal(TIERING, 0x1_1000_0000, 16 * MIB),
            "The /dev/mem range [0x110000000-0x110ffffff] (16 MiB) overlaps System RAM (kmem) [0x110000000-0x12fffffff] in region0 [0x110000000-0x12fffffff], a CXL region in system-ram mode (onlined by kmem; make its device mode devdax to map it from /dev/mem): System RAM belongs to the kernel's page allocator and is never mapped from /dev/mem. This machine has no CXL region with device-dax memory: create a region in devdax mode (`cxl create-region`, `daxctl reconfigure-device -m devdax`)."
        );
    }

    #[test]
    fn outside_every_region_is_refused_with_what_is_there() {
        // In the window, past both regions.
        assert_eq!(
            refusal(DEFAULT, 0x1_3000_0000, MIB),
            format!("The /dev/mem range [0x130000000-0x1300fffff] (1 MiB) is not inside one CXL region: it overlaps CXL Window 0 [0x110000000-0x20fffffff] outside its regions. {DEFAULT_FIX}")
        );
        // Running off the end of the volatile region into the persistent one.
        assert_eq!(
            refusal(DEFAULT, 0x1_1ff0_0000, 2 * MIB),
            format!("The /dev/mem range [0x11ff00000-0x1200fffff] (2 MiB) is not inside one CXL region: it overlaps CXL Window 0 [0x110000000-0x20fffffff] (only partly in region0 [0x110000000-0x11fffffff], region1 [0x120000000-0x12fffffff]). {DEFAULT_FIX}")
        );
        // A hole of the address space.
        assert_eq!(
            refusal(DEFAULT, 0x2_1000_0000, MIB),
            format!("The /dev/mem range [0x210000000-0x2100fffff] (1 MiB) is not inside one CXL region: it overlaps no /proc/iomem resource (unclaimed physical addresses). {DEFAULT_FIX}")
        );
    }

    #[test]
    fn namespace_space_is_refused() {
        assert_eq!(
            refusal(DEFAULT, 0x1_2000_0000, MIB),
            format!("The /dev/mem range [0x120000000-0x1200fffff] (1 MiB) lies in region1 [0x120000000-0x12fffffff] but overlaps namespace1.0 [0x120000000-0x1205fffff], which is a pmem namespace's own space (its devdax metadata, or all of an fsdax namespace, whose filesystem it would corrupt). {DEFAULT_FIX}")
        );
        let fsdax = refusal(FSDAX, 0x1_2060_0000, MIB);
        assert!(
            fsdax.contains("but overlaps namespace1.0 [0x120000000-0x12fffffff], which is a pmem namespace's own space")
                && fsdax.ends_with("dax0.0 [0x110000000-0x11fffffff] (256 MiB) (offset = its start plus the offset inside it)."),
            "{fsdax}"
        );
    }

    #[test]
    fn a_region_nothing_claimed_is_accepted_whole() {
        let text = "110000000-20fffffff : CXL Window 0\n  110000000-11fffffff : region0\n";
        let p = check(Iomem::new(text), 0x1_1000_0000, 256 * MIB).unwrap();
        assert_eq!((p.region.name, p.dax), ("region0", None));
        assert_eq!(p.area().size(), 256 * MIB);
    }

    #[test]
    fn unusable_input_says_why() {
        assert_eq!(
            refusal(DEFAULT, 0x1_1000_0000, 0),
            "The /dev/mem range is empty: give a size greater than zero."
        );
        assert!(refusal(DEFAULT, u64::MAX, 2).contains("runs past the end"));
        assert!(refusal(HIDDEN, 0x1_1000_0000, MIB).contains("run as root"));
        assert!(refusal("", 0x1_1000_0000, MIB).contains("lists no resource"));
    }

    #[test]
    fn sizes_print_in_their_largest_whole_unit() {
        assert_eq!(Bytes(16 * GIB).to_string(), "16 GiB");
        assert_eq!(Bytes(250 * MIB).to_string(), "250 MiB");
        assert_eq!(Bytes(0x90).to_string(), "144 bytes");
        assert_eq!(Bytes(1).to_string(), "1 byte");
    }
}
