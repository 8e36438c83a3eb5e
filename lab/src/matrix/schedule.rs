//! How many cells of a matrix run at once: one lab per host core (a TCG
//! guest's vCPU threads rarely all run at once, and a lab spends part of
//! its time booting and waiting on its guest agent), and no more labs than
//! the memory the host has available holds, each counted at its guest's
//! RAM, its devices' backing memory (which the guest's accesses bring
//! into the page cache) and what QEMU and cxl-memsim take besides.
//! `--jobs` overrides both.

use cxl_topology::{Topology, MIB};
use serde::Serialize;

/// What a lab takes besides its guest's RAM and its backing files: QEMU's
/// own memory (device models, TCG's translation cache, which grows with
/// the code the guest runs) and cxl-memsim's. Measured here during `lab
/// run dax` on the default and switched presets (1 GiB guests): QEMU 440
/// to 510 MiB resident, the guest's touched RAM and CXL memory included,
/// cxl-memsim 6 MiB; the estimate (guest RAM + backing + this) stays
/// above that for a guest that touches all of its memory.
pub const LAB_OVERHEAD: u64 = 512 * MIB;

/// The host as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Host {
    pub cores: usize,
    /// `MemAvailable` of /proc/meminfo, bytes.
    pub memory_available: u64,
}

impl Host {
    /// This machine now.
    pub fn now() -> Host {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_available = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| mem_available(&t))
            .unwrap_or(0);
        Host {
            cores,
            memory_available,
        }
    }
}

/// `MemAvailable` of a /proc/meminfo text, bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let kib = l.strip_prefix("MemAvailable:")?.trim().strip_suffix("kB")?;
        kib.trim().parse::<u64>().ok().map(|k| k * 1024)
    })
}

/// The memory one lab of `topology` needs: guest RAM, every device's
/// backing memory but the sparse ones' (the guest writes only a part of
/// those), and [`LAB_OVERHEAD`].
pub fn lab_memory(topology: &Topology) -> u64 {
    let backing: u64 = topology
        .devices
        .iter()
        .filter(|d| !d.sparse)
        .map(|d| d.size.bytes())
        .sum();
    topology.guest.memory.bytes() + backing + LAB_OVERHEAD
}

/// What bounds the number of labs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    Cores,
    Memory,
    /// Fewer cells than either bound.
    Cells,
    /// `--jobs`.
    Jobs,
}

/// How many labs run at once, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Jobs {
    pub jobs: usize,
    pub bound: Bound,
    pub host: Host,
    /// The most one cell's lab needs ([`lab_memory`]), bytes.
    pub lab_memory: u64,
    /// Labs that fit in the available memory.
    pub by_memory: usize,
}

/// The labs to run at once for cells that need `lab_memory` bytes each
/// at most: the fewest of cores, labs that fit the available memory (at
/// least one: a lab that does not fit fails at `lab up` with the reason)
/// and cells; `jobs` instead when given (at most the cells).
pub fn jobs(host: Host, lab_memory: u64, cells: usize, jobs: Option<usize>) -> Jobs {
    let by_memory = (host.memory_available / lab_memory.max(1)) as usize;
    let cells = cells.max(1);
    let (jobs, bound) = match jobs {
        Some(n) => (n.clamp(1, cells), Bound::Jobs),
        None => [
            (host.cores.max(1), Bound::Cores),
            (by_memory.max(1), Bound::Memory),
            (cells, Bound::Cells),
        ]
        .into_iter()
        .min_by_key(|(n, _)| *n)
        .expect("three bounds"),
    };
    Jobs {
        jobs,
        bound,
        host,
        lab_memory,
        by_memory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxl_topology::GIB;

    fn host(cores: usize, gib: u64) -> Host {
        Host {
            cores,
            memory_available: gib * GIB,
        }
    }

    #[test]
    fn a_lab_needs_guest_ram_backing_and_overhead_but_not_sparse_backing() {
        let default = Topology::embedded_default();
        assert_eq!(lab_memory(&default), GIB + 512 * MIB + LAB_OVERHEAD);
        let p = cxl_topology::preset("seed-dax").unwrap();
        let seed = Topology::parse(p.toml, "seed-dax").unwrap();
        assert!(seed.devices[0].sparse && seed.devices[0].size.bytes() == 16 * GIB);
        assert_eq!(lab_memory(&seed), seed.guest.memory.bytes() + LAB_OVERHEAD);
        let p = cxl_topology::preset("switched").unwrap();
        let switched = Topology::parse(p.toml, "switched").unwrap();
        assert_eq!(lab_memory(&switched), GIB + GIB + LAB_OVERHEAD);
    }

    #[test]
    fn the_fewest_of_cores_memory_and_cells() {
        let lab = 2 * GIB;
        // Two cores, plenty of memory: two at once.
        let j = jobs(host(2, 24), lab, 4, None);
        assert_eq!((j.jobs, j.bound, j.by_memory), (2, Bound::Cores, 12));
        // Memory for three labs on 8 cores.
        let j = jobs(host(8, 7), lab, 6, None);
        assert_eq!((j.jobs, j.bound), (3, Bound::Memory));
        // Fewer cells than cores.
        assert_eq!(jobs(host(8, 64), lab, 2, None).bound, Bound::Cells);
        // Not even one lab fits: one runs, and its `lab up` says why.
        let j = jobs(host(2, 1), lab, 2, None);
        assert_eq!((j.jobs, j.by_memory, j.bound), (1, 0, Bound::Memory));
        // --jobs wins, at most the cells, at least one.
        assert_eq!(jobs(host(2, 24), lab, 4, Some(1)).jobs, 1);
        assert_eq!(jobs(host(2, 24), lab, 4, Some(9)).jobs, 4);
        assert_eq!(jobs(host(2, 24), lab, 4, Some(0)).jobs, 1);
        assert_eq!(jobs(host(2, 24), lab, 4, Some(3)).bound, Bound::Jobs);
    }

    #[test]
    fn mem_available_is_read_from_meminfo() {
        let text = "MemTotal:       24683520 kB\nMemFree:        16846372 kB\nMemAvailable:   23703552 kB\n";
        assert_eq!(mem_available(text), Some(23_703_552 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }
}
