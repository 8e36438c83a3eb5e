//! vhost-user-blk requests: a descriptor table and guest memory from the
//! input, the chain popped off a split virtqueue by virtio-queue as the
//! backend does, served by `BlockDisk::handle`. Guest memory has two
//! 64 KiB regions with a hole between them. Checked: guest memory changes
//! only inside the chain's device-writable buffers (and not at all when the
//! chain has no status byte); the status byte is the one reported; device
//! memory around the request's sectors changes only where an accepted
//! write, discard or write-zeroes says, with the data it says; a read
//! hands back the device's bytes.
//!
//! Input: byte 0 picks the disk (bit 0: vmem0 read-write or pmem0
//! read-only) and the head descriptor (bits 4..8); 256 bytes of descriptor
//! table (16 raw descriptors, at guest address 0); the rest is guest memory
//! from 0x1000.
#![no_main]

use std::sync::{Arc, OnceLock};

use cxl_lab_fuzz::changed_offsets;
use cxl_memsim::blk::{BlockDisk, DiscardWriteZeroes, SECTOR};
use cxl_memsim::simulator::Simulator;
use libfuzzer_sys::fuzz_target;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_OK, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const QUEUE_SIZE: u16 = 16;
const TABLE: usize = QUEUE_SIZE as usize * 16;
const REGIONS: [(u64, usize); 2] = [(0, 0x1_0000), (0x2_0000, 0x1_0000)];
const DATA_AT: u64 = 0x1000;
/// Device bytes checked on each side of a range the request names.
const GUARD: u64 = 4096;
static ZEROS: [u8; 2 * GUARD as usize] = [0; 2 * GUARD as usize];

struct Disks {
    sim: Arc<Simulator>,
    rw: BlockDisk,
    ro: BlockDisk,
}

fn disks() -> &'static Disks {
    static DISKS: OnceLock<Disks> = OnceLock::new();
    DISKS.get_or_init(|| {
        let sim = cxl_lab_fuzz::simulator(0);
        Disks {
            rw: BlockDisk::new(sim.clone(), "vmem0", false).expect("vmem0"),
            ro: BlockDisk::new(sim.clone(), "pmem0", true).expect("pmem0"),
            sim,
        }
    })
}

fn snapshot(mem: &GuestMemoryMmap) -> Vec<Vec<u8>> {
    REGIONS
        .iter()
        .map(|&(at, len)| {
            let mut b = vec![0u8; len];
            mem.read_slice(&mut b, GuestAddress(at)).unwrap();
            b
        })
        .collect()
}

/// The bytes of `descs` read from guest memory, concatenated; None if one
/// does not resolve.
fn gather(mem: &GuestMemoryMmap, descs: &[(u64, u64)]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for &(addr, len) in descs {
        let mut b = vec![0u8; usize::try_from(len).ok()?];
        mem.read_slice(&mut b, GuestAddress(addr)).ok()?;
        out.extend(b);
    }
    Some(out)
}

/// No two of `spans` share a byte.
fn disjoint(spans: &[(u64, u64)]) -> bool {
    let mut sorted = spans.to_vec();
    sorted.sort();
    sorted.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 1 + TABLE {
        return;
    }
    let (pick, table, rest) = (data[0], &data[1..1 + TABLE], &data[1 + TABLE..]);
    let d = disks();
    let (disk, dev) = if pick & 1 == 0 {
        (&d.rw, 0)
    } else {
        (&d.ro, 1)
    };
    let device_size = d.sim.devices()[dev].size;
    let device = || d.sim.devices()[dev].bytes();

    let ranges: Vec<(GuestAddress, usize)> =
        REGIONS.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges).expect("guest memory");
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    mem.write_slice(table, GuestAddress(0)).unwrap();
    let rest = &rest[..rest.len().min(REGIONS[0].1 - DATA_AT as usize)];
    mem.write_slice(rest, GuestAddress(DATA_AT)).unwrap();
    q.avail()
        .ring()
        .ref_at(0)
        .unwrap()
        .store(u16::from(pick >> 4));
    q.avail().idx().store(1);
    let mut queue: Queue = q.create_queue().expect("queue");
    let Some(chain) = queue.pop_descriptor_chain(&mem) else {
        return;
    };
    let descs: Vec<Descriptor> = chain.clone().collect();
    if descs.is_empty() {
        return;
    }
    let span = |d: &Descriptor| (d.addr().0, u64::from(d.len()));
    let writable: Vec<(u64, u64)> = descs
        .iter()
        .filter(|d| d.is_write_only())
        .map(span)
        .collect();
    let readable: Vec<(u64, u64)> = descs
        .iter()
        .take_while(|d| !d.is_write_only())
        .map(span)
        .collect();

    // What the request names, read as the spec lays it out: the header in
    // the first 16 readable bytes, then data out (or discard segments).
    let out_bytes = gather(&mem, &readable).filter(|b| b.len() >= 16);
    let header = out_bytes.as_ref().map(|b| {
        (
            u32::from_le_bytes(b[0..4].try_into().unwrap()),
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
        )
    });
    let segments: Vec<DiscardWriteZeroes> = out_bytes
        .as_ref()
        .map(|b| {
            b[16..]
                .chunks_exact(DiscardWriteZeroes::SIZE)
                .take(16)
                .map(|c| DiscardWriteZeroes::from_le_bytes(c.try_into().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    // Device windows to watch: around the header's sectors and each
    // segment's start and end.
    let mut windows: Vec<(u64, u64)> = Vec::new();
    let mut watch = |at: u64, len: u64| {
        if at < device_size {
            let start = at.saturating_sub(GUARD);
            let end = at
                .saturating_add(len)
                .saturating_add(GUARD)
                .min(device_size);
            windows.push((start, end));
        }
    };
    if let Some((_, sector)) = header {
        watch(sector.saturating_mul(SECTOR), 2 * REGIONS[0].1 as u64);
    }
    for s in &segments {
        let at = s.sector.saturating_mul(SECTOR);
        watch(at, 0);
        watch(at.saturating_add(u64::from(s.num_sectors) * SECTOR), 0);
    }
    let device_before: Vec<Vec<u8>> = windows
        .iter()
        .map(|&(s, e)| device()[s as usize..e as usize].to_vec())
        .collect();
    let guest_before = snapshot(&mem);

    let c = disk.handle(&mem, chain);

    // Guest memory: only writable buffers change.
    let guest_after = snapshot(&mem);
    for (r, (before, after)) in guest_before.iter().zip(&guest_after).enumerate() {
        for i in changed_offsets(before, after) {
            let addr = REGIONS[r].0 + i as u64;
            assert!(c.status.is_some(), "no status, but {addr:#x} changed");
            assert!(
                writable.iter().any(|&(s, l)| addr >= s && addr - s < l),
                "{addr:#x} changed outside the writable buffers {writable:x?}"
            );
        }
    }
    let last = descs.last().unwrap();
    let ok = c.status == Some(VIRTIO_BLK_S_OK as u8);
    match c.status {
        None => assert_eq!(c.used_len, 0),
        Some(s) => {
            let at = last.addr().0 + u64::from(last.len()) - 1;
            assert_eq!(mem.read_obj::<u8>(GuestAddress(at)).unwrap(), s);
            let room: u64 = writable.iter().map(|w| w.1).sum();
            assert!(u64::from(c.used_len) <= room, "{} > {room}", c.used_len);
        }
    }

    // Device memory: what may have changed, and to what.
    let mut changed: Vec<(u64, u64)> = Vec::new();
    if let (true, Some((kind, sector)), Some(out)) = (ok, header, &out_bytes) {
        // Only reads and writes address the header's sector (a discard's
        // may be anything).
        let offset = sector.wrapping_mul(SECTOR);
        match kind {
            VIRTIO_BLK_T_OUT => {
                let data = &out[16..];
                assert_eq!(&device()[offset as usize..][..data.len()], data);
                changed.push((offset, data.len() as u64));
            }
            // Overlapping buffers keep the last copy only: compare when
            // each byte was written once.
            VIRTIO_BLK_T_IN if disjoint(&writable) => {
                let mut wr = writable.clone();
                let tail = wr.last_mut().unwrap();
                tail.1 -= 1; // the status byte
                let got = gather(&mem, &wr).unwrap();
                assert_eq!(&device()[offset as usize..][..got.len()], &got[..]);
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                for s in &segments {
                    let at = s.sector * SECTOR;
                    let len = u64::from(s.num_sectors) * SECTOR;
                    let head = len.min(2 * GUARD) as usize;
                    assert!(device()[at as usize..][..head] == ZEROS[..head]);
                    changed.push((at, len));
                }
            }
            _ => {}
        }
    }
    for (&(start, end), before) in windows.iter().zip(&device_before) {
        let after = &device()[start as usize..end as usize];
        for i in changed_offsets(before, after) {
            let at = start + i as u64;
            assert!(
                changed.iter().any(|&(s, l)| at >= s && at - s < l),
                "device byte {at:#x} changed (status {:?}, header {header:?})",
                c.status
            );
        }
    }
});
