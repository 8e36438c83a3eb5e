//! The vhost-user side of the block view: a `vhost-user-backend` backend
//! around [`BlockDisk`], and the thread that serves one socket.
//!
//! Each socket serves one front end (QEMU's `vhost-user-blk-pci`) at a time;
//! when it disconnects the socket accepts the next one with a fresh device
//! state. Requests are taken off a ring in batches: each is executed at once
//! (the data moves, the model is charged), then completions are put on the
//! used ring in order of their due time, the thread waiting until each is
//! due, so the guest sees a completion no earlier than its modelled latency.
//! A request the guest posts while the thread waits is taken off the ring,
//! and so arrives in the model, once the batch is done.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ,
    VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::blk::{BlkError, BlockDisk, Completion};
use crate::simulator::Simulator;

/// Queues offered; the front end may use fewer (QEMU defaults to one per vCPU).
pub const NUM_QUEUES: usize = 4;
pub const QUEUE_SIZE: usize = 256;
/// Data segments per request: the ring minus the header and status.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// The last part of a wait is spun (yielding the CPU), not slept: a sleep
/// overshoots by the timer slack, tens of µs here, which is more than most
/// modelled latencies.
const SPIN_BELOW: Duration = Duration::from_micros(50);

/// Errors starting a block view.
#[derive(Debug, thiserror::Error)]
pub enum BlkBackendError {
    #[error("Cannot serve a vhost-user-blk view.")]
    Disk(#[from] BlkError),
    #[error("Cannot listen on the vhost-user socket {path}.")]
    Listen {
        path: PathBuf,
        #[source]
        source: vhost::vhost_user::Error,
    },
    #[error("Cannot start the thread serving {path}.")]
    Thread {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One device's block view as a vhost-user backend.
pub struct BlkBackend {
    disk: BlockDisk,
    event_idx: AtomicBool,
    mem: RwLock<Option<GuestMemoryAtomic<GuestMemoryMmap>>>,
}

fn queue_err(e: virtio_queue::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl BlkBackend {
    pub fn new(disk: BlockDisk) -> BlkBackend {
        BlkBackend {
            disk,
            event_idx: AtomicBool::new(false),
            mem: RwLock::new(None),
        }
    }

    /// Serves every request on `vring` until the driver has posted no more
    /// (with EVENT_IDX: until re-enabling notifications finds nothing new).
    fn process_vring(&self, vring: &VringRwLock) -> io::Result<()> {
        let Some(atomic) = self.mem.read().expect("memory lock").clone() else {
            return Ok(());
        };
        let mem = atomic.memory();
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        loop {
            if event_idx {
                vring.disable_notification().map_err(queue_err)?;
            }
            let mut done = Vec::new();
            loop {
                let chain = vring
                    .get_mut()
                    .get_queue_mut()
                    .pop_descriptor_chain(mem.clone());
                let Some(chain) = chain else { break };
                done.push(self.disk.handle(&mem, chain));
            }
            complete(vring, done)?;
            if !event_idx || !vring.enable_notification().map_err(queue_err)? {
                return Ok(());
            }
        }
    }
}

/// Puts completions on the used ring in due order, each no earlier than
/// due, signalling before every wait so finished requests are not held back.
fn complete(vring: &VringRwLock, mut done: Vec<Completion>) -> io::Result<()> {
    done.sort_by_key(|c| c.due);
    let mut unsignalled = false;
    for c in done {
        if c.due > Instant::now() {
            if unsignalled {
                signal(vring)?;
            }
            wait_until(c.due);
        }
        vring.add_used(c.head, c.used_len).map_err(queue_err)?;
        unsignalled = true;
    }
    if unsignalled {
        signal(vring)?;
    }
    Ok(())
}

/// Returns at `due` or just after, never before.
fn wait_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > SPIN_BELOW {
            std::thread::sleep(left - SPIN_BELOW);
        } else {
            std::thread::yield_now();
        }
    }
}

fn signal(vring: &VringRwLock) -> io::Result<()> {
    if vring.needs_notification().map_err(queue_err)? {
        vring.signal_used_queue()?;
    }
    Ok(())
}

impl VhostUserBackend for BlkBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        let mut f = (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_MQ)
            | (1 << VIRTIO_BLK_F_DISCARD)
            | (1 << VIRTIO_BLK_F_WRITE_ZEROES)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if self.disk.read_only() {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // CONFIG: QEMU's vhost-user-blk reads capacity etc. from us; MQ: it
        // asks how many queues we have.
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // Exactly `size` bytes (vhost-user rejects any other length); bytes
        // past the config space read as 0.
        let space = self.disk.config_space(SEG_MAX, NUM_QUEUES as u16);
        (offset as usize..offset as usize + size as usize)
            .map(|i| space.get(i).copied().unwrap_or(0))
            .collect()
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        *self.mem.write().expect("memory lock") = Some(mem);
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        // A thread per queue: one queue's completion wait must not hold up
        // the requests of another (the model's links are shared anyway).
        (0..NUM_QUEUES).map(|q| 1 << q).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!(
                "unexpected epoll events {evset:?} on queue {device_event}"
            )));
        }
        let vring = vrings.get(usize::from(device_event)).ok_or_else(|| {
            io::Error::other(format!(
                "event for queue {device_event}, which does not exist"
            ))
        })?;
        self.process_vring(vring)
    }
}

/// A block view to serve: `DEVICE=SOCKET` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkView {
    pub device: String,
    pub socket: PathBuf,
    pub read_only: bool,
}

impl BlkView {
    /// Parses `DEVICE=SOCKET_PATH`.
    pub fn parse(text: &str, read_only: bool) -> Result<BlkView, String> {
        match text.split_once('=') {
            Some((d, s)) if !d.is_empty() && !s.is_empty() => Ok(BlkView {
                device: d.to_owned(),
                socket: PathBuf::from(s),
                read_only,
            }),
            _ => Err(format!(
                "'{text}' is not DEVICE=SOCKET_PATH (e.g. pmem0=/run/pmem0-blk.sock)"
            )),
        }
    }
}

/// Binds the view's socket now, so a front end may connect as soon as this
/// returns, and serves front ends one after another on a thread of its own.
pub fn spawn(sim: Arc<Simulator>, view: &BlkView) -> Result<(), BlkBackendError> {
    // Checks the device name before anything is bound.
    BlockDisk::new(sim.clone(), &view.device, view.read_only)?;
    let mut listener =
        Listener::new(&view.socket, true).map_err(|source| BlkBackendError::Listen {
            path: view.socket.clone(),
            source,
        })?;
    let view = view.clone();
    let path = view.socket.clone();
    std::thread::Builder::new()
        .name(format!("vublk-{}", view.device))
        .spawn(move || loop {
            let disk = BlockDisk::new(sim.clone(), &view.device, view.read_only)
                .expect("checked before the thread started");
            let backend = Arc::new(BlkBackend::new(disk));
            let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
            let mut daemon = match VhostUserDaemon::new(format!("vublk-{}", view.device), backend, mem) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(device = %view.device, "cannot create the vhost-user daemon: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            if let Err(e) = daemon.start(&mut listener) {
                tracing::warn!(device = %view.device, "vhost-user accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            tracing::info!(device = %view.device, socket = %view.socket.display(), "vhost-user-blk front end connected");
            if let Err(e) = daemon.wait() {
                tracing::warn!(device = %view.device, "vhost-user connection ended: {e}");
            }
            for handler in daemon.get_epoll_handlers() {
                handler.send_exit_event();
            }
            tracing::info!(device = %view.device, "vhost-user-blk front end disconnected");
        })
        .map_err(|source| BlkBackendError::Thread { path, source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::blk::test_support::{desc, header_bytes, setup, SLOW_LINK as SLOW};

    #[test]
    fn a_ring_is_served_through_the_back_end_no_earlier_than_modelled() {
        let (dir, sim, mem) = setup(Some(SLOW));
        let backend = BlkBackend::new(BlockDisk::new(sim.clone(), "mem0", false).unwrap());
        let atomic = GuestMemoryAtomic::new(mem.clone());
        backend.update_memory(atomic.clone()).unwrap();
        assert_eq!(backend.get_config(0, 8), 524_288u64.to_le_bytes());
        assert_eq!(
            backend.get_config(90, 10),
            vec![0u8; 10],
            "past the end reads 0"
        );
        assert_eq!(backend.features() & (1 << VIRTIO_BLK_F_RO), 0);

        // Two chains: write 64 KiB at sector 8, then read them back
        // elsewhere. 64 KiB over 0.1 GB/s take 655 us, and the read queues
        // behind the write on the link.
        let q = MockSplitQueue::new(&mem, 16);
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        mem.write_slice(&header_bytes(VIRTIO_BLK_T_OUT, 8), GuestAddress(0x10_0000))
            .unwrap();
        mem.write_slice(&data, GuestAddress(0x11_0000)).unwrap();
        mem.write_slice(&header_bytes(VIRTIO_BLK_T_IN, 8), GuestAddress(0x10_0100))
            .unwrap();
        let descs = [
            desc(0x10_0000, 16, false, Some(1)),
            desc(0x11_0000, 65536, false, Some(2)),
            desc(0x10_0010, 1, true, None),
            desc(0x10_0100, 16, false, Some(4)),
            desc(0x20_0000, 65536, true, Some(5)),
            desc(0x10_0110, 1, true, None),
        ];
        q.add_desc_chains(&descs, 0).unwrap();
        let vring = VringRwLock::new(atomic, 16).unwrap();
        vring.set_queue_size(16);
        vring
            .set_queue_info(q.desc_table_addr().0, q.avail_addr().0, q.used_addr().0)
            .unwrap();
        vring.set_queue_ready(true);

        let start = Instant::now();
        backend
            .handle_event(0, EventSet::IN, std::slice::from_ref(&vring), 0)
            .unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_nanos(2 * 655_360),
            "both completions waited for the link: {took:?}"
        );

        assert_eq!(q.used().idx().load(), 2);
        let used: Vec<(u32, u32)> = (0..2)
            .map(|i| {
                let e = q.used().ring().ref_at(i).unwrap().load();
                (e.id(), e.len())
            })
            .collect();
        assert_eq!(
            used,
            [(0, 1), (3, 65537)],
            "write first (due first), then the read"
        );
        for status_at in [0x10_0010, 0x10_0110] {
            let s: u8 = mem.read_obj(GuestAddress(status_at)).unwrap();
            assert_eq!(s, VIRTIO_BLK_S_OK as u8);
        }
        let mut back = vec![0u8; 65536];
        mem.read_slice(&mut back, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(back, data);
        let file = std::fs::read(dir.path().join("backing/mem0.mem")).unwrap();
        assert_eq!(&file[4096..4096 + 65536], &data[..]);

        // Events for queues that do not exist are errors, not panics.
        assert!(backend
            .handle_event(9, EventSet::IN, std::slice::from_ref(&vring), 0)
            .is_err());
    }

    #[test]
    fn read_only_views_offer_ro_and_views_parse() {
        let (_dir, sim, _mem) = setup(None);
        let backend = BlkBackend::new(BlockDisk::new(sim, "pmem0", true).unwrap());
        assert_ne!(backend.features() & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(
            BlkView::parse("pmem0=/run/x.sock", false),
            Ok(BlkView {
                device: "pmem0".into(),
                socket: "/run/x.sock".into(),
                read_only: false
            })
        );
        assert!(BlkView::parse("pmem0", false).is_err());
        assert!(BlkView::parse("=/x", false).is_err());
    }
}
