//! The vhost-user-blk view over its real socket, driven by the `vhost`
//! crate's front end the way QEMU drives it: feature and protocol
//! negotiation, config space, memory table, a ring, kicks and calls, then a
//! second front end after the first hangs up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cxl_memsim::blk_backend::{self, BlkView, NUM_QUEUES};
use cxl_memsim::serve::{build, ServeConfig};
use cxl_memsim::simulator::Simulator;
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_WRITE_ZEROES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const GUEST_MEMORY: usize = 4 << 20;
const QUEUE: u16 = 16;
/// The split ring in guest memory, laid out by hand as a driver does.
const DESC_TABLE: u64 = 0x0;
const AVAIL_RING: u64 = 0x1000;
const USED_RING: u64 = 0x2000;

struct Guest {
    mem: GuestMemoryMmap,
    frontend: Frontend,
    kick: EventFd,
    call: EventFd,
    /// Chains posted so far (the avail ring's idx).
    posted: std::cell::Cell<u16>,
}

fn simulator(dir: &std::path::Path) -> Arc<Simulator> {
    Arc::new(
        build(&ServeConfig {
            topology: None,
            backing_dir: dir.join("backing"),
            ..Default::default()
        })
        .expect("simulator"),
    )
}

/// Connects, negotiates, shares 4 MiB of file-backed guest memory and sets
/// up queue 0 at [`DESC_TABLE`], [`AVAIL_RING`], [`USED_RING`].
fn connect(socket: &std::path::Path) -> Guest {
    let mut frontend = Frontend::connect(socket, NUM_QUEUES as u64).expect("connect");
    frontend.set_owner().expect("set_owner");
    let features = frontend.get_features().expect("get_features");
    for bit in [
        VIRTIO_F_VERSION_1,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_MQ,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ] {
        assert_ne!(features & (1 << bit), 0, "feature bit {bit} offered");
    }
    assert_ne!(
        features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
        0
    );
    frontend.set_features(features).expect("set_features");
    let proto = frontend
        .get_protocol_features()
        .expect("get_protocol_features");
    assert!(proto.contains(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ));
    frontend
        .set_protocol_features(proto)
        .expect("set_protocol_features");
    assert_eq!(
        frontend.get_queue_num().expect("queue num"),
        NUM_QUEUES as u64
    );

    // The virtio-blk config space, as QEMU reads it.
    let (_, config) = frontend
        .get_config(0, 60, VhostUserConfigFlags::empty(), &[0u8; 60])
        .expect("get_config");
    assert_eq!(
        u64::from_le_bytes(config[0..8].try_into().unwrap()),
        (256 << 20) / 512,
        "capacity in sectors"
    );
    assert_eq!(u32::from_le_bytes(config[20..24].try_into().unwrap()), 512);
    let u32_at = |at: usize| u32::from_le_bytes(config[at..at + 4].try_into().unwrap());
    assert_eq!(
        [u32_at(36), u32_at(40), u32_at(44), u32_at(48), u32_at(52)],
        [32768, 16, 1, 32768, 16],
        "max_discard_sectors, max_discard_seg, discard_sector_alignment, \
         max_write_zeroes_sectors, max_write_zeroes_seg"
    );
    assert_eq!(config[56], 0, "write_zeroes_may_unmap");

    let file = tempfile::tempfile().expect("guest memory file");
    file.set_len(GUEST_MEMORY as u64).expect("size");
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
        GuestAddress(0),
        GUEST_MEMORY,
        Some(FileOffset::new(file, 0)),
    )])
    .expect("guest memory");
    let regions: Vec<VhostUserMemoryRegionInfo> = mem
        .iter()
        .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).expect("region"))
        .collect();
    frontend.set_mem_table(&regions).expect("set_mem_table");

    // vhost-user ring addresses are the front end's virtual addresses.
    let hva = |gpa: u64| {
        mem.get_host_address(GuestAddress(gpa))
            .expect("in guest memory") as u64
    };
    frontend.set_vring_num(0, QUEUE).expect("vring num");
    frontend
        .set_vring_addr(
            0,
            &VringConfigData {
                queue_max_size: QUEUE,
                queue_size: QUEUE,
                flags: 0,
                desc_table_addr: hva(DESC_TABLE),
                used_ring_addr: hva(USED_RING),
                avail_ring_addr: hva(AVAIL_RING),
                log_addr: None,
            },
        )
        .expect("vring addr");
    frontend.set_vring_base(0, 0).expect("vring base");
    let kick = EventFd::new(EFD_NONBLOCK).expect("kick");
    let call = EventFd::new(EFD_NONBLOCK).expect("call");
    frontend.set_vring_kick(0, &kick).expect("kick fd");
    frontend.set_vring_call(0, &call).expect("call fd");
    frontend.set_vring_enable(0, true).expect("enable");
    Guest {
        mem,
        frontend,
        kick,
        call,
        posted: std::cell::Cell::new(0),
    }
}

fn desc(addr: u64, len: u32, write: bool, next: Option<u16>) -> RawDescriptor {
    let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
    if next.is_some() {
        flags |= VRING_DESC_F_NEXT as u16;
    }
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next.unwrap_or(0)))
}

fn header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(at)).expect("header");
}

impl Guest {
    /// Stores `descs` from table index `first`, posts the chain heads
    /// (descriptors without a predecessor's NEXT), kicks, and waits until
    /// the back end has used `expect_used` entries in total and called us.
    fn submit(&self, descs: &[RawDescriptor], first: u16, expect_used: u16) {
        let mut heads = Vec::new();
        for (i, d) in descs.iter().enumerate() {
            let index = first + i as u16;
            self.mem
                .write_obj(*d, GuestAddress(DESC_TABLE + 16 * u64::from(index)))
                .expect("descriptor");
            let continues = i > 0
                && SplitDescriptor::from(descs[i - 1]).flags() & VRING_DESC_F_NEXT as u16 != 0;
            if !continues {
                heads.push(index);
            }
        }
        for head in heads {
            let slot = self.posted.get();
            self.mem
                .write_obj(
                    head,
                    GuestAddress(AVAIL_RING + 4 + 2 * u64::from(slot % QUEUE)),
                )
                .expect("avail entry");
            self.posted.set(slot.wrapping_add(1));
        }
        // EVENT_IDX is negotiated: ask for a call at the next completion.
        self.mem
            .write_obj(
                self.used_idx(),
                GuestAddress(AVAIL_RING + 4 + 2 * u64::from(QUEUE)),
            )
            .expect("used_event");
        // The ring entries before the index that publishes them.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .write_obj(self.posted.get(), GuestAddress(AVAIL_RING + 2))
            .expect("avail idx");
        self.kick.write(1).expect("kick");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.used_idx() < expect_used {
            assert!(Instant::now() < deadline, "no completion within 10 s");
            std::thread::sleep(Duration::from_micros(100));
        }
        assert!(self.call.read().expect("the back end called") >= 1);
    }

    fn used_idx(&self) -> u16 {
        self.mem
            .read_obj(GuestAddress(USED_RING + 2))
            .expect("used idx")
    }

    /// The used ring's entry `i`: (head, bytes written).
    fn used(&self, i: u64) -> (u32, u32) {
        let at = USED_RING + 4 + 8 * i;
        (
            self.mem.read_obj(GuestAddress(at)).expect("used id"),
            self.mem.read_obj(GuestAddress(at + 4)).expect("used len"),
        )
    }
}

/// Guest memory map of the requests: headers at 1 MiB, status bytes at
/// 1 MiB + 0x800, data from 2 MiB.
const HDR: u64 = 0x10_0000;
const STATUS: u64 = 0x10_0800;
const DATA: u64 = 0x20_0000;

#[test]
fn a_vhost_user_front_end_reads_and_writes_the_device_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path());
    let socket = dir.path().join("pmem0.sock");
    blk_backend::spawn(
        sim.clone(),
        &BlkView {
            device: "pmem0".into(),
            socket: socket.clone(),
            read_only: false,
        },
    )
    .expect("view");

    let guest = connect(&socket);
    // Write 64 KiB at sector 16, then read them back elsewhere, in one kick
    // (the mock queue's avail ring is rewritten from index 0 each time).
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 253) as u8).collect();
    guest.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    header(&guest.mem, HDR, VIRTIO_BLK_T_OUT, 16);
    header(&guest.mem, HDR + 16, VIRTIO_BLK_T_IN, 16);
    let descs = [
        desc(HDR, 16, false, Some(1)),
        desc(DATA, 65536, false, Some(2)),
        desc(STATUS, 1, true, None),
        desc(HDR + 16, 16, false, Some(4)),
        desc(DATA + 0x10_0000, 65536, true, Some(5)),
        desc(STATUS + 1, 1, true, None),
    ];
    guest.submit(&descs, 0, 2);
    assert_eq!(guest.used(0), (0, 1));
    assert_eq!(guest.used(1), (3, 65537));
    for s in [STATUS, STATUS + 1] {
        assert_eq!(
            guest.mem.read_obj::<u8>(GuestAddress(s)).unwrap(),
            VIRTIO_BLK_S_OK as u8
        );
    }
    let mut back = vec![0u8; 65536];
    guest
        .mem
        .read_slice(&mut back, GuestAddress(DATA + 0x10_0000))
        .unwrap();
    assert_eq!(back, data, "the read returns what the write stored");
    let file = std::fs::read(dir.path().join("backing/pmem0.mem")).expect("backing file");
    assert_eq!(
        &file[16 * 512..16 * 512 + 65536],
        &data[..],
        "in the backing file"
    );

    // An out-of-range read gets IOERR over the socket too.
    header(&guest.mem, HDR, VIRTIO_BLK_T_IN, (256 << 20) / 512);
    let descs = [
        desc(HDR, 16, false, Some(7)),
        desc(DATA, 512, true, Some(8)),
        desc(STATUS, 1, true, None),
    ];
    guest.submit(&descs, 6, 3);
    assert_eq!(guest.used(2), (6, 1));
    assert_eq!(
        guest.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        VIRTIO_BLK_S_IOERR as u8
    );

    // WRITE_ZEROES of sectors 20 .. 28 (unmap set: still zeros).
    header(&guest.mem, HDR, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    let mut segment = [0u8; 16];
    segment[0..8].copy_from_slice(&20u64.to_le_bytes());
    segment[8..12].copy_from_slice(&8u32.to_le_bytes());
    segment[12..16].copy_from_slice(&VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP.to_le_bytes());
    guest.mem.write_slice(&segment, GuestAddress(DATA)).unwrap();
    let descs = [
        desc(HDR, 16, false, Some(10)),
        desc(DATA, 16, false, Some(11)),
        desc(STATUS, 1, true, None),
    ];
    guest.submit(&descs, 9, 4);
    assert_eq!(guest.used(3), (9, 1));
    assert_eq!(
        guest.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        VIRTIO_BLK_S_OK as u8
    );
    let file = std::fs::read(dir.path().join("backing/pmem0.mem")).expect("backing file");
    assert_eq!(&file[20 * 512..28 * 512], &[0u8; 8 * 512][..], "zeroed");
    assert_eq!(&file[16 * 512..20 * 512], &data[..4 * 512], "before kept");
    assert_eq!(
        &file[28 * 512..16 * 512 + 65536],
        &data[12 * 512..],
        "after kept"
    );

    let report = sim.report(10);
    let b = report.block["pmem0"];
    assert_eq!((b.reads, b.writes, b.errors), (1, 1, 1));
    assert_eq!((b.write_zeroes, b.write_zeroes_bytes), (1, 8 * 512));

    // The front end goes away; the socket serves the next one.
    drop(guest);
    let guest = connect(&socket);
    header(&guest.mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    let descs = [
        desc(HDR, 16, false, Some(1)),
        desc(DATA, 20, true, Some(2)),
        desc(STATUS, 1, true, None),
    ];
    guest.submit(&descs, 0, 1);
    assert_eq!(guest.used(0), (0, 21));
    let mut id = [0u8; 20];
    guest.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..6], b"pmem0\0");
    drop(guest.frontend);
}
