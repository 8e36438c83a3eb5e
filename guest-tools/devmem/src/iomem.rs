//! `/proc/iomem`'s text: one resource a line, `START-END : NAME` in hex
//! (END is the last byte), indented two spaces per level of nesting. The
//! CXL driver's entries: a top-level `CXL Window N` per fixed memory
//! window, a `regionN` inside it (below `Persistent Memory` for a pmem
//! region), and the region's users below that: `daxN.M` (device-dax),
//! `namespaceN.M` (a pmem namespace: all of it in fsdax mode, its metadata
//! in devdax mode), `System RAM (kmem)` (a region onlined as memory).
//!
//! Parsing borrows the text and never allocates.

use core::fmt;

/// One resource line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The line's index in the text: tells apart entries that look alike.
    /// (32 bits keep a refusal small: it is returned by value, never boxed.)
    pub line: u32,
    /// Nesting level (0: a child of the root).
    pub depth: u32,
    pub start: u64,
    /// The last byte, as `/proc/iomem` prints it.
    pub end: u64,
    pub name: &'a str,
}

impl Entry<'_> {
    /// Whether `[start, end]` (inclusive) shares a byte with this entry.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    /// Whether `[start, end]` (inclusive) lies inside this entry.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        self.start <= start && end <= self.end
    }

    /// Bytes covered (saturating for a whole 64-bit space).
    pub fn size(&self) -> u64 {
        (self.end - self.start).saturating_add(1)
    }

    /// `System RAM`, or a region onlined by kmem: `System RAM (kmem)`.
    pub fn is_system_ram(&self) -> bool {
        self.name.starts_with("System RAM")
    }

    /// A CXL fixed memory window, `CXL Window N`.
    pub fn is_cxl_window(&self) -> bool {
        self.name.starts_with("CXL Window")
    }

    /// A CXL region, `regionN`.
    pub fn is_region(&self) -> bool {
        numbered(self.name, "region")
    }

    /// A device-dax instance, `daxN.M`.
    pub fn is_dax(&self) -> bool {
        self.name
            .strip_prefix("dax")
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(n, m)| digits(n) && digits(m))
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(digits)
}

/// `region0 [0x110000000-0x11fffffff]`.
impl fmt::Display for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{:#x}-{:#x}]", self.name, self.start, self.end)
    }
}

/// A `/proc/iomem` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iomem<'a> {
    text: &'a str,
}

/// A CXL region and the window it lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region<'a> {
    pub window: Entry<'a>,
    pub region: Entry<'a>,
}

impl<'a> Iomem<'a> {
    pub fn new(text: &'a str) -> Self {
        Iomem { text }
    }

    /// Every well-formed line, in order (others are skipped).
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + 'a {
        self.text
            .lines()
            .enumerate()
            .filter_map(|(line, text)| parse_line(line, text))
    }

    /// Whether the kernel hid the addresses: it prints every range as
    /// `00000000-00000000` to a reader without CAP_SYS_ADMIN.
    pub fn addresses_hidden(&self) -> bool {
        let mut entries = self.entries().peekable();
        entries.peek().is_some() && entries.all(|e| e.start == 0 && e.end == 0)
    }

    /// The entries nested inside `parent`, at any depth.
    pub fn descendants(&self, parent: Entry<'a>) -> impl Iterator<Item = Entry<'a>> + 'a {
        self.entries()
            .skip_while(move |e| e.line <= parent.line)
            .take_while(move |e| e.depth > parent.depth)
    }

    /// Every CXL region: a `regionN` below a top-level `CXL Window`.
    pub fn regions(&self) -> impl Iterator<Item = Region<'a>> + 'a {
        let mut top: Option<Entry<'a>> = None;
        self.entries().filter_map(move |e| {
            if e.depth == 0 {
                top = Some(e);
            }
            let window = top.filter(|w| w.is_cxl_window())?;
            e.is_region().then_some(Region { window, region: e })
        })
    }

    /// The region that `e` lies in (or is), if any.
    pub fn region_of(&self, e: Entry<'a>) -> Option<Region<'a>> {
        self.regions()
            .find(|r| r.region.line <= e.line && r.region.contains(e.start, e.end))
    }
}

impl<'a> Region<'a> {
    /// The device-dax instances inside the region.
    pub fn dax(&self, iomem: Iomem<'a>) -> impl Iterator<Item = Entry<'a>> + 'a {
        iomem.descendants(self.region).filter(|e| e.is_dax())
    }

    /// The region's first `System RAM` entry: the region is onlined as
    /// memory (system-ram mode).
    pub fn system_ram(&self, iomem: Iomem<'a>) -> Option<Entry<'a>> {
        iomem.descendants(self.region).find(|e| e.is_system_ram())
    }

    /// Whether anything (a dax device, a namespace) has claimed part of the
    /// region.
    pub fn has_users(&self, iomem: Iomem<'a>) -> bool {
        iomem.descendants(self.region).next().is_some()
    }
}

fn parse_line(line: usize, text: &str) -> Option<Entry<'_>> {
    let line = u32::try_from(line).ok()?;
    let body = text.trim_start_matches(' ');
    let indent = text.len() - body.len();
    let (range, name) = body.split_once(" : ")?;
    let (a, b) = range.split_once('-')?;
    let start = u64::from_str_radix(a, 16).ok()?;
    let end = u64::from_str_radix(b, 16).ok()?;
    (start <= end).then_some(Entry {
        line,
        depth: (indent / 2) as u32,
        start,
        end,
        name: name.trim_end(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../fixtures/default.iomem");
    const TIERING: &str = include_str!("../fixtures/tiering.iomem");
    const FSDAX: &str = include_str!("../fixtures/fsdax.iomem");
    const HIDDEN: &str = include_str!("../fixtures/default-unprivileged.iomem");

    fn names<'a>(it: impl Iterator<Item = Entry<'a>>) -> Vec<String> {
        it.map(|e| e.to_string()).collect()
    }

    #[test]
    fn lines_parse_with_their_nesting() {
        let iomem = Iomem::new(DEFAULT);
        assert_eq!(iomem.entries().count(), DEFAULT.lines().count());
        let code = iomem.entries().find(|e| e.name == "Kernel code").unwrap();
        assert_eq!(
            (code.depth, code.start, code.end),
            (1, 0x1920_0000, 0x1a1f_ffff)
        );
        let ns = iomem.entries().find(|e| e.name == "namespace1.0").unwrap();
        assert_eq!((ns.depth, ns.size()), (3, 6 << 20));
        assert!(!iomem.addresses_hidden());
    }

    #[test]
    fn regions_are_the_region_entries_inside_cxl_windows() {
        let iomem = Iomem::new(DEFAULT);
        let regions: Vec<String> = iomem
            .regions()
            .map(|r| format!("{} in {}", r.region, r.window.name))
            .collect();
        assert_eq!(
            regions,
            [
                "region0 [0x110000000-0x11fffffff] in CXL Window 0",
                "region1 [0x120000000-0x12fffffff] in CXL Window 0"
            ]
        );
        let r1 = iomem.regions().nth(1).unwrap();
        assert_eq!(names(r1.dax(iomem)), ["dax1.0 [0x120600000-0x12fffffff]"]);
        assert_eq!(
            names(iomem.descendants(r1.region)),
            [
                "namespace1.0 [0x120000000-0x1205fffff]",
                "dax1.0 [0x120600000-0x12fffffff]"
            ]
        );
        assert!(r1.system_ram(iomem).is_none());
        let dax = iomem.entries().find(|e| e.name == "dax1.0").unwrap();
        assert_eq!(iomem.region_of(dax), Some(r1));
        let port = iomem.entries().find(|e| e.name == "port1").unwrap();
        assert_eq!(iomem.region_of(port), None);
    }

    #[test]
    fn a_kmem_region_holds_system_ram_and_an_fsdax_one_no_dax() {
        let tiering = Iomem::new(TIERING);
        let r = tiering.regions().next().unwrap();
        assert_eq!(
            r.system_ram(tiering).unwrap().to_string(),
            "System RAM (kmem) [0x110000000-0x12fffffff]"
        );
        let fsdax = Iomem::new(FSDAX);
        let r1 = fsdax.regions().nth(1).unwrap();
        assert_eq!(r1.dax(fsdax).count(), 0);
        assert!(r1.has_users(fsdax));
    }

    #[test]
    fn an_unprivileged_reader_sees_every_address_as_zero() {
        let iomem = Iomem::new(HIDDEN);
        assert!(iomem.addresses_hidden());
        assert!(!Iomem::new("").addresses_hidden());
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let iomem = Iomem::new("garbage\n1000-0fff : backwards\n  2000-2fff : ok\n");
        assert_eq!(names(iomem.entries()), ["ok [0x2000-0x2fff]"]);
    }
}
