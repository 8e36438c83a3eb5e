//! virtio-blk requests over one device's memory: the request engine of the
//! vhost-user-blk view (`blk_backend.rs` wires it to vhost-user).
//!
//! The disk is the device's backing mapping itself (the file QEMU maps with
//! `memory-backend-file,share=on`), so a block write is a store into the CXL
//! memory and a block read sees what the guest stored there. Every data
//! request is charged to the model and the stats like a TCP access; its
//! completion is due `latency` simulated nanoseconds after it was taken off
//! the ring, where simulated time is wall time since the simulator started
//! ([`Simulator::epoch`]).
//!
//! A request is checked whole before any byte moves: every guest buffer must
//! resolve in guest memory, the sector range must lie inside the disk, and
//! the layout must be a header, data, then a status byte. A bad one is
//! answered `VIRTIO_BLK_S_IOERR` (or `_UNSUPP` for an unknown type) and
//! touches no device memory; a chain with no writable status byte is
//! returned with nothing written.
//!
//! `DISCARD` and `WRITE_ZEROES` carry a list of 16-byte segments
//! ([`DiscardWriteZeroes`]) as their data. Both zero their ranges: device
//! memory has nothing to deallocate, and a discard that leaves the old bytes
//! readable would hand them back to whoever reads the sectors next (the
//! spec allows either; zeroing also makes a discarded range read the same
//! on every path: block, TCP, dax). Each segment is charged to the model as
//! a write of its length.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions, VolatileSlice,
};

use crate::simulator::Simulator;
use crate::stats::BlockOp;

pub const SECTOR: u64 = 512;
/// virtio-blk's request header: u32 type, u32 reserved, u64 sector.
const HEADER: usize = 16;

/// Sectors one discard or write-zeroes segment may cover (16 MiB):
/// `max_discard_sectors` and `max_write_zeroes_sectors` in the config space.
pub const MAX_ZEROING_SECTORS: u32 = 1 << 15;
/// Segments one discard or write-zeroes request may carry: `max_discard_seg`
/// and `max_write_zeroes_seg`.
pub const MAX_ZEROING_SEGMENTS: u32 = 16;
/// `discard_sector_alignment`: memory is zeroed byte by byte, so any sector.
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 1;

/// One segment of a `VIRTIO_BLK_T_DISCARD` or `VIRTIO_BLK_T_WRITE_ZEROES`
/// request (`struct virtio_blk_discard_write_zeroes`, little endian).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscardWriteZeroes {
    pub sector: u64,
    pub num_sectors: u32,
    /// Bit 0: unmap (write zeroes only); the others are reserved, 0.
    pub flags: u32,
}

impl DiscardWriteZeroes {
    pub const SIZE: usize = std::mem::size_of::<DiscardWriteZeroes>();

    pub fn from_le_bytes(b: &[u8; Self::SIZE]) -> DiscardWriteZeroes {
        DiscardWriteZeroes {
            sector: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            num_sectors: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            flags: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
        }
    }

    pub fn to_le_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.sector.to_le_bytes());
        b[8..12].copy_from_slice(&self.num_sectors.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b
    }
}

/// Errors choosing the device of a block view.
#[derive(Debug, thiserror::Error)]
pub enum BlkError {
    #[error("No device is called '{name}'; the topology has: {known}.")]
    UnknownDevice { name: String, known: String },
}

/// One device's memory seen as a disk of 512-byte sectors.
pub struct BlockDisk {
    sim: Arc<Simulator>,
    dev: usize,
    size: u64,
    read_only: bool,
    /// What GET_ID returns: the device name, NUL padded.
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub head: u16,
    /// Bytes written into the chain's device-writable buffers (used ring len).
    pub used_len: u32,
    /// The status byte written, or `None` when the chain had no place for it.
    pub status: Option<u8>,
    /// The modelled latency (0 for requests that touch no memory).
    pub latency_ns: u64,
    /// When the completion may be signalled.
    pub due: Instant,
}

/// A request whose layout was checked and whose buffers all resolve.
struct Parsed<'a> {
    kind: u32,
    sector: u64,
    /// Device-readable data after the header.
    data_out: Vec<VolatileSlice<'a>>,
    /// Device-writable data before the status byte.
    data_in: Vec<VolatileSlice<'a>>,
}

/// Why a request failed, named in the stats' error counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    BadLayout,
    BadBuffer,
    OutOfRange,
    ReadOnly,
    Unsupported,
    FlushFailed,
    /// A discard or write-zeroes segment list of a bad length, too many
    /// segments, or a segment over the sector limit.
    BadSegment,
}

impl Fail {
    fn name(self) -> &'static str {
        match self {
            Fail::BadLayout => "BlkBadLayout",
            Fail::BadBuffer => "BlkBadBuffer",
            Fail::OutOfRange => "BlkOutOfRange",
            Fail::ReadOnly => "BlkReadOnly",
            Fail::Unsupported => "BlkUnsupported",
            Fail::FlushFailed => "BlkFlushFailed",
            Fail::BadSegment => "BlkBadSegment",
        }
    }

    fn status(self) -> u8 {
        match self {
            Fail::Unsupported => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// Zeroes device memory, a page at a time (volatile stores: QEMU maps the
/// same memory).
fn zero(slice: &VolatileSlice) -> Result<(), Fail> {
    static ZEROS: [u8; 4096] = [0; 4096];
    let mut at = 0;
    while at < slice.len() {
        let n = (slice.len() - at).min(ZEROS.len());
        slice
            .subslice(at, n)
            .map_err(|_| Fail::BadBuffer)?
            .copy_from(&ZEROS[..n]);
        at += n;
    }
    Ok(())
}

fn len_of(slices: &[VolatileSlice]) -> u64 {
    slices.iter().map(|s| s.len() as u64).sum()
}

/// Resolves `addr .. addr + len` in guest memory into host slices.
fn resolve<'a>(
    mem: &'a GuestMemoryMmap,
    addr: GuestAddress,
    len: usize,
    access: Permissions,
    out: &mut Vec<VolatileSlice<'a>>,
) -> Option<()> {
    if len == 0 {
        return Some(());
    }
    for s in mem.get_slices(addr, len, access).ok()? {
        out.push(s.ok()?);
    }
    Some(())
}

impl BlockDisk {
    /// The disk view of the device called `name`.
    pub fn new(sim: Arc<Simulator>, name: &str, read_only: bool) -> Result<BlockDisk, BlkError> {
        let dev = sim
            .device_index(name)
            .ok_or_else(|| BlkError::UnknownDevice {
                name: name.to_owned(),
                known: sim
                    .devices()
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let size = sim.devices()[dev].size;
        let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = name.len().min(serial.len());
        serial[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(BlockDisk {
            sim,
            dev,
            size,
            read_only,
            serial,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.size / SECTOR
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Serves one descriptor chain: checks it, moves the data, writes the
    /// status byte, charges the model. Never touches memory outside the
    /// device or the chain's buffers.
    pub fn handle<M>(&self, mem: &GuestMemoryMmap, chain: DescriptorChain<M>) -> Completion
    where
        M: Deref<Target = GuestMemoryMmap>,
    {
        let arrival_ns = self.sim.now_ns();
        let head = chain.head_index();
        let descs: Vec<_> = chain.collect();
        // The status byte is the last byte of the last descriptor, which
        // must be device-writable.
        let status_at = descs
            .last()
            .filter(|d| d.is_write_only() && d.len() > 0)
            .and_then(|d| d.addr().checked_add(u64::from(d.len()) - 1))
            .filter(|&a| GuestMemory::check_range(mem, a, 1, Permissions::Write));
        let Some(status_at) = status_at else {
            self.sim
                .record_block(self.dev, BlockOp::Failed(Fail::BadLayout.name()));
            return Completion {
                head,
                used_len: 0,
                status: None,
                latency_ns: 0,
                due: Instant::now(),
            };
        };
        let (status, data_written, latency_ns) = match self.parse(mem, &descs) {
            Err(fail) => {
                self.sim
                    .record_block(self.dev, BlockOp::Failed(fail.name()));
                (fail.status(), 0, 0)
            }
            Ok(req) => match self.execute(&req, arrival_ns) {
                Ok((written, latency)) => (VIRTIO_BLK_S_OK as u8, written, latency),
                Err(fail) => {
                    self.sim
                        .record_block(self.dev, BlockOp::Failed(fail.name()));
                    (fail.status(), 0, 0)
                }
            },
        };
        // Checked above that the byte resolves; a write can fail only if
        // the guest removed the memory meanwhile, and then nobody reads it.
        let _ = mem.write_obj(status, status_at);
        // No cap needed: no client can leave the model's links busy beyond
        // its clock (foreign timestamps are clamped, see `model::Arrival`),
        // so the delay is this request's own work plus real queueing.
        let due = self.sim.epoch() + Duration::from_nanos(arrival_ns.saturating_add(latency_ns));
        Completion {
            head,
            used_len: data_written + 1,
            status: Some(status),
            latency_ns,
            due,
        }
    }

    /// Checks the layout and resolves every buffer (the status byte, known
    /// good, excluded).
    fn parse<'a>(
        &self,
        mem: &'a GuestMemoryMmap,
        descs: &[Descriptor],
    ) -> Result<Parsed<'a>, Fail> {
        let mut readable = Vec::new();
        let mut writable = Vec::new();
        let mut seen_writable = false;
        let last = descs.len() - 1;
        for (i, d) in descs.iter().enumerate() {
            let mut len = d.len() as usize;
            if i == last {
                len -= 1; // the status byte
            }
            if d.is_write_only() {
                seen_writable = true;
                resolve(mem, d.addr(), len, Permissions::Write, &mut writable)
                    .ok_or(Fail::BadBuffer)?;
            } else if !seen_writable {
                resolve(mem, d.addr(), len, Permissions::Read, &mut readable)
                    .ok_or(Fail::BadBuffer)?;
            } else {
                // virtio: every device-readable buffer comes first.
                return Err(Fail::BadLayout);
            }
        }
        // The header: the first 16 readable bytes, wherever they are split.
        if len_of(&readable) < HEADER as u64 {
            return Err(Fail::BadLayout);
        }
        let mut header = [0u8; HEADER];
        let mut got = 0;
        let mut data_out = Vec::new();
        for s in readable {
            let take = (HEADER - got).min(s.len());
            if take > 0 {
                s.subslice(0, take)
                    .map_err(|_| Fail::BadBuffer)?
                    .copy_to(&mut header[got..got + take]);
                got += take;
            }
            if take < s.len() {
                data_out.push(s.offset(take).map_err(|_| Fail::BadBuffer)?);
            }
        }
        let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        Ok(Parsed {
            kind,
            sector,
            data_out,
            data_in: writable,
        })
    }

    /// The device bytes `offset .. offset + len`, checked to be inside.
    fn device_range(&self, sector: u64, len: u64) -> Result<(u64, VolatileSlice<'_>), Fail> {
        if !len.is_multiple_of(SECTOR) {
            return Err(Fail::BadLayout);
        }
        let offset = sector.checked_mul(SECTOR).ok_or(Fail::OutOfRange)?;
        let end = offset.checked_add(len).ok_or(Fail::OutOfRange)?;
        if end > self.size {
            return Err(Fail::OutOfRange);
        }
        let base = self.sim.devices()[self.dev].as_ptr();
        // SAFETY: offset + len <= the device size, checked above, so the
        // range is inside the mapping; the mapping lives as long as the
        // simulator, which self keeps alive, and the slice borrows self. In
        // this process device memory is only accessed through VolatileSlice
        // (here and in simulator.rs), as its contract asks; QEMU stores into
        // the same file through its own mapping, which is the point of
        // sharing it.
        let slice = unsafe { VolatileSlice::new(base.add(offset as usize), len as usize) };
        Ok((offset, slice))
    }

    /// Runs a parsed request; returns the bytes written into the chain's
    /// data buffers and the modelled latency.
    fn execute(&self, req: &Parsed, arrival_ns: u64) -> Result<(u32, u64), Fail> {
        match req.kind {
            VIRTIO_BLK_T_IN => {
                let len = len_of(&req.data_in);
                let (offset, mut src) = self.device_range(req.sector, len)?;
                for dst in &req.data_in {
                    src.subslice(0, dst.len())
                        .map_err(|_| Fail::BadBuffer)?
                        .copy_to_volatile_slice(*dst);
                    src = src.offset(dst.len()).map_err(|_| Fail::BadBuffer)?;
                }
                let latency = self
                    .sim
                    .charge_block_io(self.dev, offset, len, false, arrival_ns);
                Ok((len as u32, latency))
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(Fail::ReadOnly);
                }
                let len = len_of(&req.data_out);
                let (offset, mut dst) = self.device_range(req.sector, len)?;
                for src in &req.data_out {
                    src.copy_to_volatile_slice(
                        dst.subslice(0, src.len()).map_err(|_| Fail::BadBuffer)?,
                    );
                    dst = dst.offset(src.len()).map_err(|_| Fail::BadBuffer)?;
                }
                let latency = self
                    .sim
                    .charge_block_io(self.dev, offset, len, true, arrival_ns);
                Ok((0, latency))
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                if self.read_only {
                    return Err(Fail::ReadOnly);
                }
                let discard = req.kind == VIRTIO_BLK_T_DISCARD;
                let ranges = self.zeroing_ranges(req, discard)?;
                for (_, slice) in &ranges {
                    zero(slice)?;
                }
                let bytes: u64 = ranges.iter().map(|(_, s)| s.len() as u64).sum();
                let op = if discard {
                    BlockOp::Discard(bytes)
                } else {
                    BlockOp::WriteZeroes(bytes)
                };
                let spans: Vec<(u64, u64)> = ranges
                    .iter()
                    .map(|(offset, s)| (*offset, s.len() as u64))
                    .collect();
                Ok((
                    0,
                    self.sim
                        .charge_block_zeroing(self.dev, &spans, op, arrival_ns),
                ))
            }
            VIRTIO_BLK_T_FLUSH => {
                // Stores into the mapping are already in the shared file;
                // a flush makes a persistent device's file durable.
                let d = &self.sim.devices()[self.dev];
                if d.persistent {
                    if let Err(e) = d.flush() {
                        tracing::warn!(device = %d.name, "msync of {} failed: {e}", d.path.display());
                        return Err(Fail::FlushFailed);
                    }
                }
                Ok((0, self.sim.charge_block_flush(self.dev, arrival_ns)))
            }
            VIRTIO_BLK_T_GET_ID => {
                let mut written = 0;
                for dst in &req.data_in {
                    let n = dst.len().min(self.serial.len() - written);
                    dst.subslice(0, n)
                        .map_err(|_| Fail::BadBuffer)?
                        .copy_from(&self.serial[written..written + n]);
                    written += n;
                }
                self.sim.record_block(self.dev, BlockOp::GetId);
                Ok((written as u32, 0))
            }
            _ => Err(Fail::Unsupported),
        }
    }

    /// The segments of a discard or write-zeroes request, each checked (its
    /// flags, its length, inside the disk) before any is zeroed: its device
    /// offset and device memory per segment.
    fn zeroing_ranges<'s>(
        &'s self,
        req: &Parsed,
        discard: bool,
    ) -> Result<Vec<(u64, VolatileSlice<'s>)>, Fail> {
        let len = len_of(&req.data_out);
        let size = DiscardWriteZeroes::SIZE as u64;
        if len == 0 || !len.is_multiple_of(size) || len / size > u64::from(MAX_ZEROING_SEGMENTS) {
            return Err(Fail::BadSegment);
        }
        let mut bytes = vec![0u8; len as usize];
        let mut at = 0;
        for s in &req.data_out {
            s.copy_to(&mut bytes[at..at + s.len()]);
            at += s.len();
        }
        // Unknown flags, and unmap on a discard, are UNSUPP (the virtio 1.2
        // block device requirements): checked for every segment before any
        // other error.
        let allowed = if discard {
            0
        } else {
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        };
        let segments: Vec<DiscardWriteZeroes> = bytes
            .chunks_exact(DiscardWriteZeroes::SIZE)
            .map(|c| DiscardWriteZeroes::from_le_bytes(c.try_into().expect("16 bytes")))
            .collect();
        if segments.iter().any(|s| s.flags & !allowed != 0) {
            return Err(Fail::Unsupported);
        }
        segments
            .iter()
            .map(|s| {
                if s.num_sectors > MAX_ZEROING_SECTORS {
                    return Err(Fail::BadSegment);
                }
                self.device_range(s.sector, u64::from(s.num_sectors) * SECTOR)
            })
            .collect()
    }

    /// The virtio-blk config space (`struct virtio_blk_config`, little
    /// endian), 96 bytes: capacity, seg_max, blk_size, num_queues, the
    /// discard and write-zeroes limits (`write_zeroes_may_unmap` 0: nothing
    /// is ever deallocated); the rest 0.
    pub fn config_space(&self, seg_max: u32, num_queues: u16) -> [u8; 96] {
        let mut c = [0u8; 96];
        c[0..8].copy_from_slice(&self.capacity_sectors().to_le_bytes());
        c[12..16].copy_from_slice(&seg_max.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        c[34..36].copy_from_slice(&num_queues.to_le_bytes());
        c[36..40].copy_from_slice(&MAX_ZEROING_SECTORS.to_le_bytes());
        c[40..44].copy_from_slice(&MAX_ZEROING_SEGMENTS.to_le_bytes());
        c[44..48].copy_from_slice(&DISCARD_SECTOR_ALIGNMENT.to_le_bytes());
        c[48..52].copy_from_slice(&MAX_ZEROING_SECTORS.to_le_bytes());
        c[52..56].copy_from_slice(&MAX_ZEROING_SEGMENTS.to_le_bytes());
        c[56] = 0; // write_zeroes_may_unmap
        c
    }
}

/// Helpers shared by the tests of this module and of `blk_backend.rs`.
#[cfg(test)]
pub(crate) mod test_support {
    /// One volatile device behind a 0.1 GB/s host-bridge link: 1 MiB takes
    /// 10.5 ms to transfer, so completion due times are easy to see.
    pub const SLOW_LINK: &str = r#"
[[host_bridge]]
name = "hb0"
link_bandwidth_gbps = 0.1
[[root_port]]
name = "rp0"
host_bridge = "hb0"
[[device]]
name = "mem0"
kind = "volatile"
size = "256M"
port = "rp0"
[[window]]
size = "4G"
targets = ["hb0"]
"#;

    use std::sync::Arc;

    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use crate::simulator::Simulator;

    /// Where the tests put request buffers (the mock queue sits at 0).
    pub const HEADER_AT: u64 = 0x10_0000;
    pub const DATA_AT: u64 = 0x10_1000;
    pub const STATUS_AT: u64 = 0x30_0000;
    pub const GUEST_MEMORY: usize = 0x40_0000;

    /// A simulator on temporary backing files (default topology unless
    /// `topology` is given) and 4 MiB of guest memory.
    pub fn setup(topology: Option<&str>) -> (tempfile::TempDir, Arc<Simulator>, GuestMemoryMmap) {
        let dir = tempfile::tempdir().expect("tempdir");
        let topology = topology.map(|text| {
            let path = dir.path().join("topology.toml");
            std::fs::write(&path, text).expect("topology file");
            path
        });
        let sim = Simulator::open(
            topology.as_deref(),
            &dir.path().join("backing"),
            None,
            None,
            0,
        )
        .expect("simulator");
        let mem =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_MEMORY)]).expect("guest memory");
        (dir, Arc::new(sim), mem)
    }

    /// A descriptor, device-writable if `write`, chained to `next` (for
    /// `MockSplitQueue::add_desc_chains`; `build_desc_chain` chains itself).
    pub fn desc(addr: u64, len: u32, write: bool, next: Option<u16>) -> RawDescriptor {
        let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
        if next.is_some() {
            flags |= VRING_DESC_F_NEXT as u16;
        }
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next.unwrap_or(0)))
    }

    pub fn readable(addr: u64, len: u32) -> RawDescriptor {
        desc(addr, len, false, None)
    }

    pub fn writable(addr: u64, len: u32) -> RawDescriptor {
        desc(addr, len, true, None)
    }

    /// The 16 bytes of a request header: u32 type, u32 reserved, u64 sector.
    pub fn header_bytes(kind: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        h
    }

    /// Writes a request header into guest memory at [`HEADER_AT`].
    pub fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        mem.write_slice(&header_bytes(kind, sector), GuestAddress(HEADER_AT))
            .expect("header");
    }

    /// Header, one data buffer of `len` bytes (device-writable for reads),
    /// status.
    pub fn request(
        mem: &GuestMemoryMmap,
        kind: u32,
        sector: u64,
        len: u32,
        write_data: bool,
    ) -> Vec<RawDescriptor> {
        header(mem, kind, sector);
        // A status byte the device must overwrite.
        mem.write_obj(0xffu8, GuestAddress(STATUS_AT))
            .expect("status");
        let data = if write_data {
            writable(DATA_AT, len)
        } else {
            readable(DATA_AT, len)
        };
        vec![readable(HEADER_AT, 16), data, writable(STATUS_AT, 1)]
    }

    pub fn status(mem: &GuestMemoryMmap) -> u8 {
        mem.read_obj(GuestAddress(STATUS_AT)).expect("status")
    }

    /// Bytes of a device's backing file, read through the file (not the
    /// simulator's mapping).
    pub fn file_bytes(dir: &tempfile::TempDir, device: &str, offset: u64, len: usize) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(dir.path().join("backing").join(format!("{device}.mem")))
            .expect("backing file");
        f.seek(SeekFrom::Start(offset)).expect("seek");
        let mut b = vec![0u8; len];
        f.read_exact(&mut b).expect("read");
        b
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::test_support::*;
    use super::*;
    use crate::protocol::{Request, Response, OP_WRITE};

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_write_lands_in_the_backing_file_and_reads_back() {
        let (dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "pmem0", false).unwrap();
        assert_eq!(disk.capacity_sectors(), (256 << 20) / 512);
        let q = MockSplitQueue::new(&mem, 16);

        let data = pattern(8192, 7);
        mem.write_slice(&data, GuestAddress(DATA_AT)).unwrap();
        let descs = request(&mem, VIRTIO_BLK_T_OUT, 24, 8192, false);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK as u8);
        assert_eq!(c.used_len, 1, "a write puts only the status byte");
        assert_eq!(file_bytes(&dir, "pmem0", 24 * 512, 8192), data);
        assert_eq!(
            file_bytes(&dir, "pmem0", 24 * 512 - 1, 1),
            [0],
            "nothing before"
        );

        mem.write_slice(&[0u8; 8192], GuestAddress(DATA_AT))
            .unwrap();
        let descs = request(&mem, VIRTIO_BLK_T_IN, 24, 8192, true);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(c.used_len, 8193);
        let mut back = vec![0u8; 8192];
        mem.read_slice(&mut back, GuestAddress(DATA_AT)).unwrap();
        assert_eq!(back, data);

        // Both were charged: 8 KiB = two pages each way, default latencies.
        let r = sim.report(10);
        let b = r.block["pmem0"];
        assert_eq!(
            (b.reads, b.writes, b.read_bytes, b.write_bytes),
            (1, 1, 8192, 8192)
        );
        assert_eq!(r.devices[1].pages_touched, 2);
        assert_eq!(r.latency_ns.count, 2);
        // 200 ns media + 8192 B at 64 GB/s (128 ns).
        assert_eq!(c.latency_ns, 328);
    }

    #[test]
    fn a_read_sees_what_the_tcp_path_wrote_and_spans_split_buffers() {
        let (_dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "vmem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        // 64 bytes written over the wire protocol at flat offset 4096 + 448.
        let mut line = [0u8; 64];
        line.copy_from_slice(&pattern(64, 99));
        let mut out = Vec::new();
        sim.handle_frames(
            &Request::new(OP_WRITE, 4096 + 448, 64, 0, line).encode(),
            &mut out,
        );
        let resp = Response::decode(out[..].try_into().expect("one response"));
        assert_eq!(resp.status, 0);
        // Sector 8 .. 9 read into two buffers (300 + 212 bytes), header and
        // status in their own descriptors.
        header(&mem, VIRTIO_BLK_T_IN, 8);
        let descs = [
            readable(HEADER_AT, 16),
            writable(DATA_AT, 300),
            writable(DATA_AT + 0x1000, 212),
            writable(STATUS_AT, 1),
        ];
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(c.used_len, 513);
        let mut tail = [0u8; 212];
        mem.read_slice(&mut tail, GuestAddress(DATA_AT + 0x1000))
            .unwrap();
        // Sector offset 448 is 148 bytes into the second buffer.
        assert_eq!(&tail[148..212], &line[..]);
        assert_eq!(&tail[..148], &[0u8; 148][..]);
    }

    #[test]
    fn an_indirect_chain_is_followed() {
        use virtio_bindings::virtio_ring::{
            VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
        };
        use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};

        let (dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "vmem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let data = pattern(1024, 3);
        mem.write_slice(&data, GuestAddress(DATA_AT)).unwrap();
        header(&mem, VIRTIO_BLK_T_OUT, 2);
        // The request's three descriptors in a table of their own, as Linux
        // posts multi-segment requests when INDIRECT_DESC is negotiated.
        let table = 0x3f_0000;
        let next = VRING_DESC_F_NEXT as u16;
        let inner = [
            SplitDescriptor::new(HEADER_AT, 16, next, 1),
            SplitDescriptor::new(DATA_AT, 1024, next, 2),
            SplitDescriptor::new(STATUS_AT, 1, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, d) in inner.iter().enumerate() {
            mem.write_obj(RawDescriptor::from(*d), GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        let head = RawDescriptor::from(SplitDescriptor::new(
            table,
            48,
            VRING_DESC_F_INDIRECT as u16,
            0,
        ));
        let c = disk.handle(&mem, q.build_desc_chain(&[head]).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(file_bytes(&dir, "vmem0", 1024, 1024), data);
    }

    #[test]
    fn flush_and_get_id() {
        let (_dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "pmem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);

        header(&mem, VIRTIO_BLK_T_FLUSH, 0);
        let descs = [readable(HEADER_AT, 16), writable(STATUS_AT, 1)];
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(c.used_len, 1);
        assert_eq!(c.latency_ns, 100, "a flush costs the media write latency");

        mem.write_slice(&[0xaa; 20], GuestAddress(DATA_AT)).unwrap();
        let descs = request(&mem, VIRTIO_BLK_T_GET_ID, 0, 20, true);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(c.used_len, 21);
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(DATA_AT)).unwrap();
        assert_eq!(&id[..6], b"pmem0\0");
        assert_eq!(id[6..], [0u8; 14]);

        let b = sim.report(1).block["pmem0"];
        assert_eq!((b.flushes, b.get_ids, b.errors), (1, 1, 0));
    }

    #[test]
    fn out_of_range_sectors_fail_and_touch_nothing() {
        let (dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "vmem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        mem.write_slice(&[0x5a; 1024], GuestAddress(DATA_AT))
            .unwrap();
        let last = disk.capacity_sectors() - 1;
        for sector in [last, disk.capacity_sectors(), u64::MAX / 512, u64::MAX] {
            let descs = request(&mem, VIRTIO_BLK_T_OUT, sector, 1024, false);
            let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
            assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8), "sector {sector}");
            assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR as u8);
            assert_eq!(c.used_len, 1);
        }
        // The last sector alone is fine; one past it is not.
        let descs = request(&mem, VIRTIO_BLK_T_IN, last, 512, true);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(
            file_bytes(&dir, "vmem0", (256 << 20) - 512, 512),
            vec![0u8; 512],
            "the failed writes left the last sector alone"
        );
        // pmem0 follows vmem0 in the flat space: its start is untouched too.
        assert_eq!(file_bytes(&dir, "pmem0", 0, 512), vec![0u8; 512]);
        let r = sim.report(1);
        assert_eq!(r.errors["BlkOutOfRange"], 4);
        assert_eq!(r.block["vmem0"].errors, 4);
    }

    #[test]
    fn chains_that_are_too_short_or_malformed_are_refused() {
        let (dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "pmem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);

        // Only a header: no place for a status, so nothing is written.
        header(&mem, VIRTIO_BLK_T_IN, 0);
        let c = disk.handle(
            &mem,
            q.build_desc_chain(&[readable(HEADER_AT, 16)]).unwrap(),
        );
        assert_eq!((c.status, c.used_len), (None, 0));

        // A header cut short (8 of 16 bytes), then the status.
        mem.write_obj(0xffu8, GuestAddress(STATUS_AT)).unwrap();
        let descs = [readable(HEADER_AT, 8), writable(STATUS_AT, 1)];
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8));
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR as u8);

        // A read-only buffer after a writable one.
        header(&mem, VIRTIO_BLK_T_OUT, 0);
        let descs = [
            readable(HEADER_AT, 16),
            writable(DATA_AT, 512),
            readable(DATA_AT + 0x1000, 512),
            writable(STATUS_AT, 1),
        ];
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8));
        // The same after an empty writable buffer.
        let descs = [
            readable(HEADER_AT, 16),
            writable(DATA_AT, 0),
            readable(DATA_AT + 0x1000, 512),
            writable(STATUS_AT, 1),
        ];
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8));

        // A data buffer outside guest memory: refused before any copy.
        mem.write_slice(&[0x77; 512], GuestAddress(DATA_AT))
            .unwrap();
        header(&mem, VIRTIO_BLK_T_OUT, 0);
        let descs = [
            readable(HEADER_AT, 16),
            readable(DATA_AT, 512),
            readable(GUEST_MEMORY as u64 - 256, 512),
            writable(STATUS_AT, 1),
        ];
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8));
        assert_eq!(file_bytes(&dir, "pmem0", 0, 1024), vec![0u8; 1024]);

        // A length that is not whole sectors.
        let descs = request(&mem, VIRTIO_BLK_T_OUT, 0, 100, false);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8));

        // A status "byte" outside guest memory.
        let descs = [readable(HEADER_AT, 16), writable(GUEST_MEMORY as u64, 1)];
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!((c.status, c.used_len), (None, 0));

        // An unknown request type (15, secure erase, is not offered).
        let descs = request(&mem, 15, 0, 512, false);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_UNSUPP as u8));

        let r = sim.report(1);
        assert_eq!(r.block["pmem0"].errors, 8);
        assert_eq!(r.errors["BlkBadLayout"], 6);
        assert_eq!(r.errors["BlkBadBuffer"], 1);
        assert_eq!(r.errors["BlkUnsupported"], 1);
    }

    #[test]
    fn a_read_only_disk_refuses_writes_and_serves_reads() {
        let (dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "pmem0", true).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        mem.write_slice(&[0x33; 512], GuestAddress(DATA_AT))
            .unwrap();
        let descs = request(&mem, VIRTIO_BLK_T_OUT, 0, 512, false);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8));
        assert_eq!(file_bytes(&dir, "pmem0", 0, 512), vec![0u8; 512]);
        let descs = request(&mem, VIRTIO_BLK_T_IN, 0, 512, true);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(sim.report(1).errors["BlkReadOnly"], 1);
    }

    fn seg(sector: u64, num_sectors: u32, flags: u32) -> DiscardWriteZeroes {
        DiscardWriteZeroes {
            sector,
            num_sectors,
            flags,
        }
    }

    /// A discard or write-zeroes request carrying `segs` at [`DATA_AT`].
    fn zeroing(
        mem: &GuestMemoryMmap,
        kind: u32,
        segs: &[DiscardWriteZeroes],
    ) -> Vec<virtio_queue::desc::RawDescriptor> {
        let bytes: Vec<u8> = segs.iter().flat_map(|s| s.to_le_bytes()).collect();
        mem.write_slice(&bytes, GuestAddress(DATA_AT)).unwrap();
        request(mem, kind, 0, bytes.len() as u32, false)
    }

    /// Fills sectors 0 .. 64 of `device` with a pattern through OUT.
    fn fill(
        disk: &BlockDisk,
        mem: &GuestMemoryMmap,
        q: &MockSplitQueue<GuestMemoryMmap>,
    ) -> Vec<u8> {
        let data = pattern(64 * 512, 5);
        mem.write_slice(&data, GuestAddress(DATA_AT)).unwrap();
        let descs = request(mem, VIRTIO_BLK_T_OUT, 0, data.len() as u32, false);
        let c = disk.handle(mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        data
    }

    #[test]
    fn the_discard_write_zeroes_segment_layout() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(size_of::<DiscardWriteZeroes>(), 16);
        assert_eq!(align_of::<DiscardWriteZeroes>(), 8);
        assert_eq!(offset_of!(DiscardWriteZeroes, sector), 0);
        assert_eq!(offset_of!(DiscardWriteZeroes, num_sectors), 8);
        assert_eq!(offset_of!(DiscardWriteZeroes, flags), 12);
        let s = seg(0x0102_0304_0506_0708, 0x1122_3344, 1);
        let golden = [
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // sector
            0x44, 0x33, 0x22, 0x11, // num_sectors
            0x01, 0x00, 0x00, 0x00, // flags: unmap
        ];
        assert_eq!(s.to_le_bytes(), golden);
        assert_eq!(DiscardWriteZeroes::from_le_bytes(&golden), s);
    }

    #[test]
    fn write_zeroes_and_discard_zero_their_segments_only() {
        let (dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "vmem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let data = fill(&disk, &mem, &q);

        // Two segments, one with unmap (still zeroes: it is memory).
        let descs = zeroing(
            &mem,
            VIRTIO_BLK_T_WRITE_ZEROES,
            &[seg(2, 3, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP), seg(20, 4, 0)],
        );
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK as u8);
        assert_eq!(c.used_len, 1);
        // Two model writes: the second (2 KiB, 32 ns at 64 GB/s) queues
        // behind the first (1.5 KiB, 24 ns) on the link, then 100 ns media.
        assert_eq!(c.latency_ns, 100 + 24 + 32);

        // A discard of one segment zeroes too.
        let descs = zeroing(&mem, VIRTIO_BLK_T_DISCARD, &[seg(40, 8, 0)]);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));

        let mut want = data.clone();
        for (first, n) in [(2, 3), (20, 4), (40, 8)] {
            want[first * 512..(first + n) * 512].fill(0);
        }
        assert_eq!(file_bytes(&dir, "vmem0", 0, 64 * 512), want);

        // Read back through the disk: zeros.
        let descs = request(&mem, VIRTIO_BLK_T_IN, 20, 2048, true);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        let mut back = vec![0xffu8; 2048];
        mem.read_slice(&mut back, GuestAddress(DATA_AT)).unwrap();
        assert_eq!(back, vec![0u8; 2048]);

        let r = sim.report(10);
        let b = r.block["vmem0"];
        assert_eq!((b.write_zeroes, b.write_zeroes_bytes), (1, 7 * 512));
        assert_eq!((b.discards, b.discard_bytes), (1, 8 * 512));
        assert_eq!((b.writes, b.reads, b.errors), (1, 1, 0));
        // Each segment is a model write: the fill, 2 + 1 segments.
        assert_eq!(r.devices[0].counts.writes, 4);
        assert_eq!(
            r.devices[0].counts.write_bytes,
            64 * 512 + 7 * 512 + 8 * 512
        );
        assert_eq!(r.latency_ns.count, 5);
    }

    #[test]
    fn bad_flags_are_unsupported_and_zero_nothing() {
        let (dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "vmem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let data = fill(&disk, &mem, &q);
        let cases = [
            // A reserved bit on write zeroes, after a good segment.
            (VIRTIO_BLK_T_WRITE_ZEROES, vec![seg(0, 1, 0), seg(4, 1, 2)]),
            (VIRTIO_BLK_T_WRITE_ZEROES, vec![seg(0, 1, 1 << 31)]),
            // Unmap is for write zeroes only.
            (
                VIRTIO_BLK_T_DISCARD,
                vec![seg(0, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)],
            ),
            // Flags are checked before the range.
            (VIRTIO_BLK_T_DISCARD, vec![seg(u64::MAX, 1, 4)]),
        ];
        for (kind, segs) in &cases {
            let descs = zeroing(&mem, *kind, segs);
            let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
            assert_eq!(c.status, Some(VIRTIO_BLK_S_UNSUPP as u8), "{kind} {segs:?}");
            assert_eq!(status(&mem), VIRTIO_BLK_S_UNSUPP as u8);
        }
        assert_eq!(file_bytes(&dir, "vmem0", 0, 64 * 512), data);
        let r = sim.report(1);
        assert_eq!(r.errors["BlkUnsupported"], 4);
        assert_eq!(r.block["vmem0"].errors, 4);
        assert_eq!(r.block["vmem0"].write_zeroes + r.block["vmem0"].discards, 0);
    }

    #[test]
    fn bad_segments_fail_with_ioerr_and_zero_nothing() {
        let (dir, sim, mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "vmem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let data = fill(&disk, &mem, &q);
        let cap = disk.capacity_sectors();
        let out_of_range = [
            vec![seg(cap - 1, 2, 0)],
            vec![seg(cap, 1, 0)],
            // A good first segment is not zeroed when the second is bad.
            vec![seg(0, 8, 0), seg(u64::MAX / 512, 1, 0)],
            vec![seg(u64::MAX, 1, 0)],
        ];
        for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
            for segs in &out_of_range {
                let descs = zeroing(&mem, kind, segs);
                let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
                assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8), "{kind} {segs:?}");
                assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR as u8);
            }
        }
        // Too many sectors in a segment, too many segments, a list that
        // is not whole segments, no list at all.
        // (Each request is built just before it is served: they share the
        // header and data buffers.)
        let requests: [&dyn Fn() -> Vec<virtio_queue::desc::RawDescriptor>; 4] = [
            &|| {
                zeroing(
                    &mem,
                    VIRTIO_BLK_T_WRITE_ZEROES,
                    &[seg(0, MAX_ZEROING_SECTORS + 1, 0)],
                )
            },
            &|| {
                zeroing(
                    &mem,
                    VIRTIO_BLK_T_DISCARD,
                    &vec![seg(0, 1, 0); MAX_ZEROING_SEGMENTS as usize + 1],
                )
            },
            &|| request(&mem, VIRTIO_BLK_T_DISCARD, 0, 24, false),
            &|| {
                header(&mem, VIRTIO_BLK_T_WRITE_ZEROES, 0);
                vec![readable(HEADER_AT, 16), writable(STATUS_AT, 1)]
            },
        ];
        for (i, build) in requests.iter().enumerate() {
            let c = disk.handle(&mem, q.build_desc_chain(&build()).unwrap());
            assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8), "case {i}");
        }
        assert_eq!(file_bytes(&dir, "vmem0", 0, 64 * 512), data);
        // The last sector and the whole limit are fine.
        for segs in [
            vec![seg(cap - 1, 1, 0)],
            vec![seg(0, MAX_ZEROING_SECTORS, 0)],
            vec![seg(0, 1, 0); MAX_ZEROING_SEGMENTS as usize],
        ] {
            let descs = zeroing(&mem, VIRTIO_BLK_T_WRITE_ZEROES, &segs);
            let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
            assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8), "{segs:?}");
        }
        let r = sim.report(1);
        assert_eq!(r.errors["BlkOutOfRange"], 8);
        assert_eq!(r.errors["BlkBadSegment"], 4);
        assert_eq!(r.block["vmem0"].errors, 12);
        assert_eq!(r.block["vmem0"].write_zeroes, 3);
    }

    #[test]
    fn a_read_only_disk_refuses_discard_and_write_zeroes() {
        let (dir, sim, mem) = setup(None);
        let rw = BlockDisk::new(sim.clone(), "pmem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let data = fill(&rw, &mem, &q);
        let disk = BlockDisk::new(sim.clone(), "pmem0", true).unwrap();
        for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
            let descs = zeroing(&mem, kind, &[seg(0, 8, 0)]);
            let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
            assert_eq!(c.status, Some(VIRTIO_BLK_S_IOERR as u8), "{kind}");
            assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR as u8);
        }
        assert_eq!(file_bytes(&dir, "pmem0", 0, 64 * 512), data);
        assert_eq!(sim.report(1).errors["BlkReadOnly"], 2);
    }

    #[test]
    fn completions_are_due_after_the_modelled_latency() {
        // A slow link (0.1 GB/s): 1 MiB takes 10.5 ms to transfer.
        let topology = test_support::SLOW_LINK;
        let (_dir, sim, mem) = setup(Some(topology));
        let disk = BlockDisk::new(sim.clone(), "mem0", false).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let before = Instant::now();
        let descs = request(&mem, VIRTIO_BLK_T_IN, 0, 1 << 20, true);
        let c = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert_eq!(c.status, Some(VIRTIO_BLK_S_OK as u8));
        assert_eq!(c.latency_ns, 200 + 10_485_760);
        assert!(c.due >= before + Duration::from_nanos(c.latency_ns));
        assert!(c.due <= Instant::now() + Duration::from_nanos(c.latency_ns));
        // A second request cannot finish before the link has carried both:
        // it either queues behind the first or arrives after it.
        let descs = request(&mem, VIRTIO_BLK_T_IN, 2048, 1 << 20, true);
        let c2 = disk.handle(&mem, q.build_desc_chain(&descs).unwrap());
        assert!(c2.latency_ns >= c.latency_ns);
        assert!(
            c2.due >= c.due + Duration::from_nanos(10_485_760),
            "{:?} after the first",
            c2.due - c.due
        );
    }

    #[test]
    fn the_config_space_and_unknown_devices() {
        let (_dir, sim, _mem) = setup(None);
        let disk = BlockDisk::new(sim.clone(), "vmem0", false).unwrap();
        let c = disk.config_space(254, 4);
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 524_288);
        assert_eq!(u32::from_le_bytes(c[12..16].try_into().unwrap()), 254);
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 512);
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().unwrap()), 4);
        let u32_at = |at: usize| u32::from_le_bytes(c[at..at + 4].try_into().unwrap());
        // max_discard_sectors, max_discard_seg, discard_sector_alignment,
        // max_write_zeroes_sectors, max_write_zeroes_seg.
        assert_eq!(
            [u32_at(36), u32_at(40), u32_at(44), u32_at(48), u32_at(52)],
            [32768, 16, 1, 32768, 16]
        );
        assert_eq!(c[56], 0, "write_zeroes_may_unmap: nothing is deallocated");
        assert_eq!(c[57..], [0u8; 39]);
        let e = BlockDisk::new(sim, "nope", false)
            .err()
            .expect("unknown device");
        assert_eq!(
            e.to_string(),
            "No device is called 'nope'; the topology has: vmem0, pmem0."
        );
    }
}
