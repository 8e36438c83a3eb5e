//! The listener for the QEMU TCG plugin (`cxl-memsim-plugin`): decodes the
//! access batches of every connected plugin (format in `cxl-memsim-wire`),
//! charges each access to the model and the stats like a TCP request, and
//! relays `arm`/`disarm`/`flush` from the control socket to the plugins,
//! waiting for their acknowledgements.
//!
//! Plugin addresses are guest physical addresses. Each device is found
//! through its region (`plugin map`, from the guest's region set-up): a
//! one-device region maps the device at its start, an interleaved one
//! stripes its range over its devices as the CXL decoders do
//! (`cxl_topology::Interleave`), so an access is charged to the device that
//! really holds it, at the offset it has there. Until mapped, a device sits
//! at `--base` + its flat offset. An access no device holds is counted as
//! unmapped and the stream goes on; a stream that cannot be decoded ends
//! only its own connection.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cxl_memsim_wire::{Command, Decoder, Kind, LearnCounts, Message, Window, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc};

use crate::simulator::Simulator;
use crate::stats::PluginReport;

/// Errors of plugin commands.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("No QEMU plugin is connected to the plugin socket; start QEMU with -plugin libcxl_memsim_plugin.so,socket=<the --plugin-socket path>.")]
    NoPlugin,
    #[error("{acked} of {expected} plugin(s) acknowledged '{command}' within {timeout:?}; a guest whose vCPUs all sleep runs no callback: give it work (any guest-agent command) and retry.")]
    Timeout {
        command: String,
        acked: usize,
        expected: usize,
        timeout: Duration,
    },
    #[error("Device '{0}' is not in the topology.")]
    UnknownDevice(String),
    #[error("'{0}' is not NAME=ADDRESS (e.g. vmem0=0x110000000) or NAME,NAME…=ADDRESS/GRANULARITY (e.g. vmem0,vmem1=0x110000000/4096).")]
    BadMapping(String),
    #[error("'{word}' stripes devices of different sizes ({sizes}); an interleaved region takes the same capacity from each.")]
    UnequalSizes { word: String, sizes: String },
}

/// Where devices appear in guest physical addresses: a region striped over
/// `devices` (indexes, in interleave position order) at `granularity`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Region {
    start: u64,
    /// Bytes of each device the region covers.
    device_size: u64,
    granularity: u64,
    devices: Vec<usize>,
}

/// The granularity of a one-device region: with one way every
/// granularity decodes the same, so the smallest CXL one.
const ONE_WAY_GRANULARITY: u64 = 256;

impl Region {
    fn size(&self) -> u64 {
        self.device_size * self.devices.len() as u64
    }

    /// The device and device offset of `addr .. addr + len`, when the
    /// region holds it. An access that crosses a granule edge is charged
    /// to the device of its first byte.
    fn locate(&self, addr: u64, len: u64) -> Option<(usize, u64)> {
        let off = addr.checked_sub(self.start)?;
        if off.checked_add(len)? > self.size() {
            return None;
        }
        let place = cxl_topology::Interleave {
            ways: self.devices.len() as u64,
            granularity: self.granularity,
        }
        .locate(off);
        let offset = place
            .device_offset
            .min(self.device_size.saturating_sub(len));
        Some((self.devices[place.position], offset))
    }
}

/// The first of `regions` that holds `addr .. addr + len`.
fn locate(regions: &[Region], addr: u64, len: u64) -> Option<(usize, u64)> {
    regions.iter().find_map(|g| g.locate(addr, len))
}

struct Conn {
    commands: mpsc::UnboundedSender<String>,
    armed: bool,
    next_seq: u64,
    dropped: u64,
    learn: LearnCounts,
}

struct HubState {
    regions: Vec<Region>,
    names: Vec<String>,
    windows: Vec<Window>,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    report: PluginReport,
    /// Dropped counts of closed connections.
    dropped_closed: u64,
    /// Learning counters of closed connections.
    learn_closed: LearnCounts,
}

/// Every plugin connection and the counters of all of them.
pub struct PluginHub {
    sim: Arc<Simulator>,
    state: Mutex<HubState>,
    acks: broadcast::Sender<(u64, Kind)>,
}

impl PluginHub {
    pub fn new(sim: Arc<Simulator>) -> PluginHub {
        let regions = sim
            .devices()
            .iter()
            .enumerate()
            .map(|(i, d)| Region {
                start: sim.base() + d.base,
                device_size: d.size,
                granularity: ONE_WAY_GRANULARITY,
                devices: vec![i],
            })
            .collect();
        let names = sim.devices().iter().map(|d| d.name.clone()).collect();
        PluginHub {
            sim,
            state: Mutex::new(HubState {
                regions,
                names,
                windows: Vec::new(),
                conns: HashMap::new(),
                next_id: 0,
                report: PluginReport::default(),
                dropped_closed: 0,
                learn_closed: LearnCounts::default(),
            }),
            acks: broadcast::channel(64).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().expect("plugin hub state")
    }

    /// Places devices at guest physical addresses. Each word is a region:
    /// `NAME=ADDRESS` (one device) or `NAME,NAME…=ADDRESS/GRANULARITY` (its
    /// devices in interleave position order). A device's earlier mapping
    /// is replaced; nothing changes when any word is wrong.
    pub fn map(&self, words: &[&str]) -> Result<(), PluginError> {
        let mut st = self.lock();
        let bad = |w: &str| PluginError::BadMapping(w.to_owned());
        let mut updates = Vec::new();
        for w in words {
            let (names, place) = w.split_once('=').ok_or_else(|| bad(w))?;
            let (addr, granularity) = match place.split_once('/') {
                Some((a, g)) => {
                    let g = Window::parse(&format!("{g}+1")).map_err(|_| bad(w))?.base;
                    if !g.is_power_of_two() {
                        return Err(bad(w));
                    }
                    (a, Some(g))
                }
                None => (place, None),
            };
            let start = Window::parse(&format!("{addr}+1"))
                .map_err(|_| bad(w))?
                .base;
            let devices = names
                .split(',')
                .map(|name| {
                    st.names
                        .iter()
                        .position(|n| n == name)
                        .ok_or_else(|| PluginError::UnknownDevice(name.to_owned()))
                })
                .collect::<Result<Vec<usize>, _>>()?;
            let sizes: Vec<u64> = devices
                .iter()
                .map(|&i| self.sim.devices()[i].size)
                .collect();
            if sizes.iter().any(|&z| z != sizes[0]) {
                return Err(PluginError::UnequalSizes {
                    word: (*w).to_owned(),
                    sizes: sizes
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            if devices.len() > 1 && granularity.is_none() {
                return Err(bad(w));
            }
            updates.push(Region {
                start,
                device_size: sizes[0],
                granularity: granularity.unwrap_or(ONE_WAY_GRANULARITY),
                devices,
            });
        }
        for region in updates {
            st.regions
                .retain(|r| !r.devices.iter().any(|d| region.devices.contains(d)));
            st.regions.push(region);
        }
        Ok(())
    }

    /// The device and device offset that guest physical `addr .. addr +
    /// len` is charged to under the current map, when a device holds it.
    pub fn locate(&self, addr: u64, len: u64) -> Option<(usize, u64)> {
        locate(&self.lock().regions, addr, len)
    }

    /// Takes what plugin connection `id` sent next: decodes every whole
    /// message in `dec` and charges it. A stream that cannot be decoded is
    /// counted and its error returned: the connection must end.
    pub fn receive(&self, id: u64, dec: &mut Decoder, bytes: &[u8]) -> Result<(), WireError> {
        dec.push(bytes);
        loop {
            match dec.next_message() {
                Ok(Some(m)) => self.charge(id, &m),
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.lock().report.decode_errors += 1;
                    return Err(e);
                }
            }
        }
    }

    /// Charges a batch: one lock for the whole batch.
    fn charge(&self, id: u64, msg: &Message) {
        let mut st = self.lock();
        let h = &msg.header;
        if let Some(c) = st.conns.get_mut(&id) {
            if h.seq != c.next_seq {
                let gap = h.seq.saturating_sub(c.next_seq);
                c.next_seq = h.seq + 1;
                st.report.sequence_gaps += gap;
            } else {
                c.next_seq += 1;
            }
        }
        if let Some(c) = st.conns.get_mut(&id) {
            c.dropped = h.dropped;
        }
        match h.kind() {
            Kind::Accesses => {
                let regions = &st.regions;
                let (charged, unmapped) = self
                    .sim
                    .charge_plugin(&msg.records, |addr, size| locate(regions, addr, size));
                let writes = msg.records.iter().filter(|r| r.is_write()).count() as u64;
                let r = &mut st.report;
                r.batches += 1;
                r.accesses += charged;
                r.unmapped += unmapped;
                r.writes += writes;
                r.reads += msg.records.len() as u64 - writes;
                for rec in &msg.records {
                    let v = r.vcpus.entry(rec.vcpu).or_default();
                    v.accesses += 1;
                    v.last_icount = v.last_icount.max(rec.icount);
                }
            }
            Kind::Learning => {
                if let (Some(c), Some(r)) = (st.conns.get_mut(&id), msg.records.first()) {
                    c.learn = LearnCounts::from_record(r);
                }
            }
            kind => {
                if let Some(c) = st.conns.get_mut(&id) {
                    match kind {
                        Kind::Armed => c.armed = true,
                        Kind::Disarmed => c.armed = false,
                        _ => {}
                    }
                }
                let _ = self.acks.send((id, kind));
            }
        }
    }

    /// Sends `cmd` to every plugin and waits until each acknowledged it.
    pub async fn command(&self, cmd: &Command, timeout: Duration) -> Result<usize, PluginError> {
        let mut acks = self.acks.subscribe();
        let want = match cmd {
            Command::Arm(_) => Kind::Armed,
            Command::Disarm => Kind::Disarmed,
            Command::Flush => Kind::Flushed,
            Command::Stall(_) => Kind::Stalled,
        };
        let mut waiting: HashSet<u64> = {
            let mut st = self.lock();
            if let Command::Arm(ws) = cmd {
                st.windows = ws.clone();
            }
            let line = format!("{cmd}\n");
            st.conns
                .iter()
                .filter(|(_, c)| c.commands.send(line.clone()).is_ok())
                .map(|(id, _)| *id)
                .collect()
        };
        let expected = waiting.len();
        if expected == 0 {
            return Err(PluginError::NoPlugin);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, acks.recv()).await {
                Ok(Ok((id, kind))) if kind == want => {
                    waiting.remove(&id);
                }
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                    // A plugin that went away cannot answer; do not wait for it.
                    let st = self.lock();
                    waiting.retain(|id| st.conns.contains_key(id));
                    if waiting.is_empty() {
                        break;
                    }
                    return Err(PluginError::Timeout {
                        command: cmd.to_string(),
                        acked: expected - waiting.len(),
                        expected,
                        timeout,
                    });
                }
            }
        }
        Ok(expected)
    }

    pub fn report(&self) -> PluginReport {
        let st = self.lock();
        let mut r = st.report.clone();
        r.connections = st.conns.len();
        r.armed = st.conns.values().filter(|c| c.armed).count();
        r.windows = st.windows.iter().map(Window::to_string).collect();
        r.regions = st
            .regions
            .iter()
            .flat_map(|g| g.devices.iter().map(|&d| (st.names[d].clone(), g.start)))
            .collect();
        r.plugin_dropped = st.dropped_closed + st.conns.values().map(|c| c.dropped).sum::<u64>();
        let learn = st
            .conns
            .values()
            .map(|c| c.learn)
            .fold(st.learn_closed, add_learn);
        r.left_out = learn.left_out;
        r.prunes = learn.prunes;
        r.relearned = learn.relearned;
        r
    }
}

fn add_learn(a: LearnCounts, b: LearnCounts) -> LearnCounts {
    LearnCounts {
        left_out: a.left_out + b.left_out,
        relearned: a.relearned + b.relearned,
        prunes: a.prunes + b.prunes,
    }
}

/// Accepts plugin connections forever.
pub async fn serve(listener: UnixListener, hub: Arc<PluginHub>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, hub.clone()));
            }
            Err(e) => tracing::warn!("plugin accept failed: {e}"),
        }
    }
}

/// Serves one plugin until it closes the socket or sends what cannot be
/// decoded.
pub async fn connection(stream: UnixStream, hub: Arc<PluginHub>) {
    let (mut r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let id = {
        let mut st = hub.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.conns.insert(
            id,
            Conn {
                commands: tx,
                armed: false,
                next_seq: 0,
                dropped: 0,
                learn: LearnCounts::default(),
            },
        );
        id
    };
    tracing::info!(id, "a QEMU plugin connected");
    let writer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if w.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Err(e) = hub.receive(id, &mut dec, &buf[..n]) {
            tracing::warn!(id, "closing a plugin stream: {e}");
            break;
        }
    }
    writer.abort();
    let mut st = hub.lock();
    if let Some(c) = st.conns.remove(&id) {
        st.dropped_closed += c.dropped;
        st.learn_closed = add_learn(st.learn_closed, c.learn);
    }
    if dec.pending() > 0 {
        st.report.truncated_bytes += dec.pending() as u64;
    }
    tracing::info!(id, "a QEMU plugin disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::VcpuReport;
    use cxl_memsim_wire::{encode_batch, AccessRecord, BatchHeader, FLAG_WRITE};
    use tokio::io::AsyncBufReadExt;

    const MIB: u64 = 1 << 20;

    fn hub(dir: &std::path::Path) -> Arc<PluginHub> {
        let sim = Simulator::open(None, dir, None, None, 0).expect("simulator");
        Arc::new(PluginHub::new(Arc::new(sim)))
    }

    /// A connected plugin end and the simulator's connection task.
    async fn connect(hub: &Arc<PluginHub>) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        tokio::spawn(connection(theirs, hub.clone()));
        ours
    }

    fn rec(addr: u64, size: u16, write: bool) -> AccessRecord {
        AccessRecord {
            addr,
            icount: addr,
            vcpu: 0,
            size,
            flags: if write { FLAG_WRITE } else { 0 },
        }
    }

    async fn until(hub: &PluginHub, what: impl Fn(&PluginReport) -> bool) -> PluginReport {
        for _ in 0..500 {
            let r = hub.report();
            if what(&r) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not reached: {:?}", hub.report());
    }

    #[tokio::test]
    async fn good_batches_are_charged_to_pages_devices_and_the_histogram() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let mut s = connect(&hub).await;
        let mut bytes = Vec::new();
        // vmem0 starts at 0, pmem0 at 256 MiB (no map yet: flat offsets).
        encode_batch(
            0,
            0,
            &[rec(0x1000, 64, true), rec(0x1040, 8, false)],
            &mut bytes,
        );
        encode_batch(1, 0, &[rec(256 * MIB + 0x2000, 4, true)], &mut bytes);
        s.write_all(&bytes).await.unwrap();
        let r = until(&hub, |r| r.batches == 2).await;
        assert_eq!((r.accesses, r.reads, r.writes, r.unmapped), (3, 1, 2, 0));
        // rec() stamps each access with its address as instruction count.
        assert_eq!(
            r.vcpus[&0],
            VcpuReport {
                accesses: 3,
                last_icount: 256 * MIB + 0x2000
            }
        );
        assert_eq!(r.connections, 1);
        let stats = hub.sim.report(10);
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.devices[0].counts.writes, 1);
        assert_eq!(stats.devices[0].counts.write_bytes, 64);
        assert_eq!(stats.devices[0].counts.reads, 1);
        assert_eq!(stats.devices[1].counts.write_bytes, 4);
        assert_eq!(stats.hot_pages[0].device, "vmem0");
        assert_eq!(stats.hot_pages[0].offset, 0x1000);
        assert_eq!(stats.hot_pages[0].accesses, 2);
        assert_eq!(stats.latency_ns.count, 3);
        // Default model: the 8-byte read costs 200 ns + 1/8 ns, rounded up.
        assert_eq!(stats.latency_ns.max, 201);
    }

    #[tokio::test]
    async fn out_of_range_addresses_are_counted_and_the_stream_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        hub.map(&["vmem0=0x110000000", "pmem0=0x120000000"])
            .unwrap();
        let mut s = connect(&hub).await;
        let mut bytes = Vec::new();
        encode_batch(
            0,
            0,
            &[
                rec(0x10_0000, 8, false),                    // below every region
                rec(0x1_2000_0000 + 256 * MIB, 8, false),    // past pmem0
                rec(0x1_1000_0000 + 256 * MIB - 4, 8, true), // crosses vmem0's end
                rec(0x1_1000_0000 + 256 * MIB - 8, 8, true), // vmem0's last 8 bytes
            ],
            &mut bytes,
        );
        encode_batch(1, 0, &[rec(0x1_2000_0000, 64, false)], &mut bytes);
        s.write_all(&bytes).await.unwrap();
        let r = until(&hub, |r| r.batches == 2).await;
        assert_eq!((r.accesses, r.unmapped), (2, 3));
        assert_eq!(r.regions["vmem0"], 0x1_1000_0000);
        let stats = hub.sim.report(10);
        assert_eq!(stats.devices[0].counts.writes, 1);
        assert_eq!(stats.devices[1].counts.reads, 1);
        assert_eq!(
            stats
                .hot_pages
                .iter()
                .find(|p| p.device == "vmem0")
                .unwrap()
                .offset,
            256 * MIB - 4096
        );
        assert!(hub
            .map(&["nope=0x1"])
            .unwrap_err()
            .to_string()
            .contains("'nope'"));
        assert!(hub
            .map(&["vmem0"])
            .unwrap_err()
            .to_string()
            .contains("NAME=ADDRESS"));
    }

    #[tokio::test]
    async fn an_interleaved_region_charges_each_granule_to_the_device_that_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        // vmem0 and pmem0 (both 256M) striped 2-way at 4K from 0x110000000.
        hub.map(&["vmem0,pmem0=0x110000000/4096"]).unwrap();
        let mut s = connect(&hub).await;
        let mut bytes = Vec::new();
        let base = 0x1_1000_0000;
        encode_batch(
            0,
            0,
            &[
                rec(base, 8, true),                  // granule 0: vmem0 @ 0
                rec(base + 4096, 8, true),           // granule 1: pmem0 @ 0
                rec(base + 2 * 4096 + 16, 8, false), // granule 2: vmem0 @ 4096+16
                rec(base + 5 * 4096, 8, false),      // granule 5: pmem0 @ 2*4096
                rec(base + 512 * MIB, 8, false),     // past the 512M region
            ],
            &mut bytes,
        );
        s.write_all(&bytes).await.unwrap();
        let r = until(&hub, |r| r.batches == 1).await;
        assert_eq!((r.accesses, r.unmapped), (4, 1));
        assert_eq!(r.regions["vmem0"], base);
        assert_eq!(r.regions["pmem0"], base);
        let stats = hub.sim.report(10);
        assert_eq!(
            (
                stats.devices[0].counts.writes,
                stats.devices[0].counts.reads
            ),
            (1, 1)
        );
        assert_eq!(
            (
                stats.devices[1].counts.writes,
                stats.devices[1].counts.reads
            ),
            (1, 1)
        );
        let page = |dev: &str, offset: u64| {
            stats
                .hot_pages
                .iter()
                .any(|p| p.device == dev && p.offset == offset)
        };
        assert!(page("vmem0", 0) && page("vmem0", 4096));
        assert!(page("pmem0", 0) && page("pmem0", 2 * 4096));
        // Mapping a device again moves it out of its earlier region.
        hub.map(&["vmem0=0x200000000"]).unwrap();
        assert_eq!(hub.report().regions["vmem0"], 0x2_0000_0000);
        let e = hub.map(&["vmem0,pmem0=0x110000000"]).unwrap_err();
        assert!(e.to_string().contains("GRANULARITY"), "{e}");
        let e = hub.map(&["vmem0,pmem0=0x110000000/3000"]).unwrap_err();
        assert!(e.to_string().contains("GRANULARITY"), "{e}");
    }

    #[tokio::test]
    async fn a_truncated_batch_is_counted_when_the_plugin_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let mut s = connect(&hub).await;
        let mut bytes = Vec::new();
        encode_batch(0, 0, &[rec(0x40, 8, false)], &mut bytes);
        encode_batch(1, 5, &[rec(0x80, 8, false); 3], &mut bytes);
        s.write_all(&bytes[..bytes.len() - 10]).await.unwrap();
        drop(s);
        let r = until(&hub, |r| r.connections == 0 && r.truncated_bytes > 0).await;
        assert_eq!(r.accesses, 1);
        assert_eq!(r.truncated_bytes, 32 + 3 * 24 - 10);
    }

    #[tokio::test]
    async fn garbage_ends_only_its_connection_and_gaps_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let mut bad = connect(&hub).await;
        let mut good = connect(&hub).await;
        bad.write_all(&[0xAB; 64]).await.unwrap();
        let r = until(&hub, |r| r.decode_errors == 1 && r.connections == 1).await;
        assert_eq!(r.accesses, 0);
        let mut bytes = Vec::new();
        encode_batch(0, 0, &[rec(0x40, 8, false)], &mut bytes);
        // Messages 1 and 2 never came: the plugin says it dropped 7 accesses.
        encode_batch(3, 7, &[rec(0x40, 8, false)], &mut bytes);
        good.write_all(&bytes).await.unwrap();
        let r = until(&hub, |r| r.batches == 2).await;
        assert_eq!((r.accesses, r.sequence_gaps, r.plugin_dropped), (2, 2, 7));
    }

    #[tokio::test]
    async fn learning_counters_are_each_plugins_latest_and_outlive_it() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let mut a = connect(&hub).await;
        let mut b = connect(&hub).await;
        let counts = |left_out, relearned, prunes| LearnCounts {
            left_out,
            relearned,
            prunes,
        };
        let mut bytes = Vec::new();
        counts(10, 0, 1).encode_into(&mut bytes);
        let mut later = Vec::new();
        counts(25, 1, 3).encode_into(&mut later);
        BatchHeader::set_seq_and_dropped(&mut later, 1, 0);
        bytes.extend_from_slice(&later);
        a.write_all(&bytes).await.unwrap();
        let mut other = Vec::new();
        counts(4, 0, 2).encode_into(&mut other);
        b.write_all(&other).await.unwrap();
        let r = until(&hub, |r| r.left_out == 29).await;
        assert_eq!((r.relearned, r.prunes, r.sequence_gaps), (1, 5, 0));
        assert_eq!(r.accesses, 0, "counters are no accesses");
        drop(a);
        let r = until(&hub, |r| r.connections == 1).await;
        assert_eq!((r.left_out, r.relearned, r.prunes), (29, 1, 5));
    }

    #[tokio::test]
    async fn commands_reach_every_plugin_and_wait_for_their_answers() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        assert!(matches!(
            hub.command(&Command::Flush, Duration::from_millis(50))
                .await,
            Err(PluginError::NoPlugin)
        ));
        let s = connect(&hub).await;
        until(&hub, |r| r.connections == 1).await;
        let (r, mut w) = s.into_split();
        // A fake plugin: answers arm with armed, ignores everything else.
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(r).lines();
            let mut seq = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("arm ") {
                    let mut b = Vec::new();
                    BatchHeader::new(Kind::Armed, 0, seq, 0).encode_into(&mut b);
                    seq += 1;
                    w.write_all(&b).await.unwrap();
                }
            }
        });
        let arm = Command::parse("arm 0x110000000+0x100000000").unwrap();
        assert_eq!(hub.command(&arm, Duration::from_secs(5)).await.unwrap(), 1);
        let r = hub.report();
        assert_eq!(
            (r.armed, r.windows.clone()),
            (1, vec!["0x110000000+0x100000000".to_owned()])
        );
        let e = hub
            .command(&Command::Disarm, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("0 of 1 plugin(s) acknowledged 'disarm'"),
            "{e}"
        );
    }
}
