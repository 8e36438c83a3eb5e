//! The simulator's shared state: device memory, model and stats, and how
//! one request is served.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use cxl_memsim_wire::AccessRecord;
use cxl_topology::{Topology, TopologyError};
use vm_memory::VolatileSlice;

use crate::backing::{self, BackingError, DeviceMemory};
use crate::model::{Arrival, Model, ModelError};
use crate::protocol::{Request, Response, Status, OP_WRITE, REQUEST_SIZE};
use crate::stats::{BlockOp, Report, Stats};

/// Errors opening a simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("Cannot load the topology.")]
    Topology(#[from] TopologyError),
    #[error("Cannot prepare the devices' backing memory.")]
    Backing(#[from] BackingError),
    #[error("Cannot build the latency model.")]
    Model(#[from] ModelError),
}

/// Shared by every connection.
pub struct Simulator {
    devices: Vec<DeviceMemory>,
    /// Addresses on the wire are `base + flat offset` (0 by default; a host
    /// physical address when `--base` names the window start).
    base: u64,
    state: Mutex<(Model, Stats)>,
    /// Simulated time zero for requests that carry no timestamp of their own
    /// but must complete in wall time (the vhost-user-blk view).
    epoch: Instant,
}

impl Simulator {
    pub fn new(devices: Vec<DeviceMemory>, model: Model, base: u64) -> Simulator {
        let stats = Stats::new(devices.iter().map(|d| d.name.clone()).collect());
        Simulator {
            devices,
            base,
            state: Mutex::new((model, stats)),
            epoch: Instant::now(),
        }
    }

    /// Loads `topology` (the embedded default when `None`), opens its
    /// devices' backing files in `backing_dir` and builds the model with
    /// `seed` (default: the topology's), its links' latencies from `newick`
    /// when given; wire addresses start at `base`.
    pub fn open(
        topology: Option<&Path>,
        backing_dir: &Path,
        seed: Option<u64>,
        newick: Option<&str>,
        base: u64,
    ) -> Result<Simulator, SimulatorError> {
        let topology = Topology::load(topology)?;
        let devices = backing::open_all(&topology, backing_dir)?;
        let mut model = Model::from_topology(&topology, seed.unwrap_or(topology.simulator.seed));
        if let Some(n) = newick {
            model.apply_newick(n)?;
        }
        Ok(Simulator::new(devices, model, base))
    }

    pub fn devices(&self) -> &[DeviceMemory] {
        &self.devices
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// The index of the device called `name`.
    pub fn device_index(&self, name: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.name == name)
    }

    /// When simulated time was 0: one simulated nanosecond is one wall
    /// nanosecond after this instant.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Now in simulated nanoseconds (never 0: the model reads 0 as "no
    /// timestamp, closed loop").
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Charges a block transfer of `len` bytes at `offset` of device `dev`
    /// arriving at `arrival_ns` to the model and the stats; returns the
    /// modelled latency. The caller has done (or will do) the copy.
    pub fn charge_block_io(
        &self,
        dev: usize,
        offset: u64,
        len: u64,
        write: bool,
        arrival_ns: u64,
    ) -> u64 {
        let mut state = self.state.lock().expect("simulator state");
        let timing = state.0.access(dev, write, len, Arrival::At(arrival_ns));
        state.1.record(dev, offset, write, len, timing.latency_ns);
        let op = if write {
            BlockOp::Write(len)
        } else {
            BlockOp::Read(len)
        };
        state.1.record_block(dev, op);
        timing.latency_ns
    }

    /// Charges a discard or write-zeroes request: each of its `spans`
    /// (device offset, bytes) is one model write, the request counted once
    /// as `op`. Its latency is that of the last span to complete (they queue
    /// behind each other on the links).
    pub fn charge_block_zeroing(
        &self,
        dev: usize,
        spans: &[(u64, u64)],
        op: BlockOp,
        arrival_ns: u64,
    ) -> u64 {
        let mut state = self.state.lock().expect("simulator state");
        let mut latency = 0;
        for &(offset, len) in spans {
            let timing = state.0.access(dev, true, len, Arrival::At(arrival_ns));
            state.1.record(dev, offset, true, len, timing.latency_ns);
            latency = latency.max(timing.latency_ns);
        }
        state.1.record_block(dev, op);
        latency
    }

    /// Charges a cache flush of device `dev`: a write of no data, so the
    /// media write latency plus the links' latencies and queueing.
    pub fn charge_block_flush(&self, dev: usize, arrival_ns: u64) -> u64 {
        let mut state = self.state.lock().expect("simulator state");
        let timing = state.0.access(dev, true, 0, Arrival::At(arrival_ns));
        state.1.record_block(dev, BlockOp::Flush);
        timing.latency_ns
    }

    /// Counts a block request that touches no device memory (GET_ID, or a
    /// failed request).
    pub fn record_block(&self, dev: usize, op: BlockOp) {
        self.state
            .lock()
            .expect("simulator state")
            .1
            .record_block(dev, op);
    }

    /// Serves every whole request frame in `frames` (a multiple of
    /// [`REQUEST_SIZE`] bytes; a trailing partial frame is ignored) under one
    /// lock, in order, appending the encoded responses to `out`.
    pub fn handle_frames(&self, frames: &[u8], out: &mut Vec<u8>) {
        let mut state = self.state.lock().expect("simulator state");
        for frame in frames.chunks_exact(REQUEST_SIZE) {
            let frame: &[u8; REQUEST_SIZE] = frame.try_into().expect("a whole frame");
            let resp = self.serve_locked(&mut state, &Request::decode(frame));
            out.extend_from_slice(&resp.encode());
        }
    }

    /// Serves one request: a bad one gets its status and touches nothing.
    fn serve_locked(&self, state: &mut (Model, Stats), req: &Request) -> Response {
        let located = req.validate().and_then(|()| {
            req.addr
                .checked_sub(self.base)
                .and_then(|flat| backing::locate(&self.devices, flat, req.size))
                .ok_or(Status::OutOfRange)
        });
        let (dev, offset) = match located {
            Ok(x) => x,
            Err(status) => {
                state.1.record_error(status);
                return Response::new(status, 0, [0; 64]);
            }
        };
        let write = req.op_type == OP_WRITE;
        let len = req.size as usize;
        let mut data = [0u8; 64];
        let mem = self.devices[dev].as_ptr();
        // SAFETY: locate() checked offset + len <= the device's size, so the
        // range is inside the mapping, which lives as long as self (the slice
        // does not outlive this call). In this process device memory is only
        // accessed through VolatileSlice (here and in blk.rs), as its contract
        // asks; the guest's stores through QEMU's mapping of the same file may
        // race with the copy, which then sees old or new bytes, like memory.
        let device = unsafe { VolatileSlice::new(mem.add(offset as usize), len) };
        if write {
            device.copy_from(&req.data[..len]);
        } else {
            device.copy_to(&mut data[..len]);
        }
        // The client's timestamp is its own clock's: the model clamps it so
        // it cannot move the shared clock (see `Arrival::Foreign`).
        let timing = state
            .0
            .access(dev, write, req.size, Arrival::Foreign(req.timestamp_ns));
        state
            .1
            .record(dev, offset, write, req.size, timing.latency_ns);
        Response::new(Status::Ok, timing.latency_ns, data)
    }

    /// Charges guest accesses streamed by the TCG plugin to the model and
    /// the stats under one lock; `locate` maps a guest physical address and
    /// size to (device, offset). Accesses arrive closed-loop (each when the
    /// previous completed): vCPUs' instruction counts are not a shared
    /// clock. Returns (charged, unmapped).
    pub fn charge_plugin(
        &self,
        records: &[AccessRecord],
        locate: impl Fn(u64, u64) -> Option<(usize, u64)>,
    ) -> (u64, u64) {
        let mut state = self.state.lock().expect("simulator state");
        let (model, stats) = &mut *state;
        let (mut charged, mut unmapped) = (0, 0);
        for r in records {
            let size = u64::from(r.size);
            match locate(r.addr, size) {
                Some((dev, offset)) => {
                    let timing = model.access(dev, r.is_write(), size, Arrival::ClosedLoop);
                    stats.record(dev, offset, r.is_write(), size, timing.latency_ns);
                    charged += 1;
                }
                None => unmapped += 1,
            }
        }
        (charged, unmapped)
    }

    pub fn report(&self, top: usize) -> Report {
        self.state.lock().expect("simulator state").1.report(top)
    }

    /// Flushes persistent devices' memory to their files.
    pub fn flush(&self) {
        for d in self.devices.iter().filter(|d| d.persistent) {
            let _ = d.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::{Request, Response, OP_READ, OP_WRITE, RESPONSE_SIZE};

    /// Serves `reqs` as one TCP read would and returns the latencies.
    fn serve(sim: &super::Simulator, reqs: &[Request]) -> Vec<u64> {
        let frames: Vec<u8> = reqs.iter().flat_map(|r| r.encode()).collect();
        let mut out = Vec::new();
        sim.handle_frames(&frames, &mut out);
        out.chunks_exact(RESPONSE_SIZE)
            .map(|b| {
                let r = Response::decode(b.try_into().expect("a response frame"));
                assert_eq!(r.status, 0);
                r.latency_ns
            })
            .collect()
    }

    #[test]
    fn a_clients_far_future_and_zero_timestamps_do_not_delay_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = super::Simulator::open(None, dir.path(), None, None, 0).expect("simulator");
        // One TCP client stamps a write far in the future, then sends a
        // closed-loop one: each costs what it costs alone.
        let far = Request::new(OP_WRITE, 0, 64, u64::MAX, [1; 64]);
        let zero = Request::new(OP_WRITE, 64, 64, 0, [2; 64]);
        assert_eq!(serve(&sim, &[far, zero]), [101, 101]);
        // The block view (on the simulator's clock) reads 4 KiB of pmem0
        // through the same host bridge link: 200 ns media + 64 ns transfer,
        // no queueing behind the far-future stamp.
        let pmem0 = sim.device_index("pmem0").expect("pmem0");
        assert_eq!(
            sim.charge_block_io(pmem0, 0, 4096, false, sim.now_ns()),
            264
        );
        // Another TCP client, closed loop, is not delayed either.
        let read = Request::new(OP_READ, 0, 64, 0, [0; 64]);
        assert_eq!(serve(&sim, &[read]), [201]);
    }
}
