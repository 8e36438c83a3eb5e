//! Hotness and statistics: per 4 KiB page read/write counts and bytes, per
//! device totals, a histogram of modelled latencies, the hottest pages.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::protocol::Status;

pub const PAGE: u64 = 4096;
/// Latencies below this are counted exactly; above, in 1/16 octaves.
const EXACT_NS: u64 = 4096;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

impl Counts {
    fn add(&mut self, write: bool, bytes: u64) {
        if write {
            self.writes += 1;
            self.write_bytes += bytes;
        } else {
            self.reads += 1;
            self.read_bytes += bytes;
        }
    }
}

/// Pages per lazily allocated chunk of a [`PageTable`]: 64 pages of 32 B
/// counts, 2 KiB.
const CHUNK_PAGES: usize = 64;

/// Per-page counts of one device: a directory of chunks indexed by page
/// number, each allocated on the first access to one of its pages. An
/// access is two indexed loads instead of a hash lookup (this runs for every
/// request and every plugin access), and a device touched in one place
/// costs one chunk, not a table of its size.
#[derive(Debug, Clone, Default)]
struct PageTable {
    chunks: Vec<Option<Box<[Counts; CHUNK_PAGES]>>>,
    touched: usize,
}

impl PageTable {
    fn add(&mut self, page: u64, write: bool, bytes: u64) {
        let (chunk, slot) = (page as usize / CHUNK_PAGES, page as usize % CHUNK_PAGES);
        if chunk >= self.chunks.len() {
            self.chunks.resize(chunk + 1, None);
        }
        let c = &mut self.chunks[chunk]
            .get_or_insert_with(|| Box::new([Counts::default(); CHUNK_PAGES]))[slot];
        // Every access counts one read or write, so all-zero means untouched.
        if c.reads == 0 && c.writes == 0 {
            self.touched += 1;
        }
        c.add(write, bytes);
    }

    /// (page, counts) of every touched page, in page order.
    fn touched(&self) -> impl Iterator<Item = (u64, &Counts)> {
        self.chunks.iter().enumerate().flat_map(|(i, chunk)| {
            chunk.iter().flat_map(move |pages| {
                pages
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.reads + c.writes > 0)
                    .map(move |(j, c)| ((i * CHUNK_PAGES + j) as u64, c))
            })
        })
    }
}

/// A histogram of latencies in ns: exact below 4096 ns, logarithmic above.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    exact: Vec<u64>,
    log: HashMap<u32, u64>,
    count: u64,
    max: u64,
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        if self.exact.is_empty() {
            self.exact = vec![0; EXACT_NS as usize];
        }
        if ns < EXACT_NS {
            self.exact[ns as usize] += 1;
        } else {
            *self.log.entry(Self::bucket(ns)).or_default() += 1;
        }
        self.count += 1;
        self.max = self.max.max(ns);
    }

    /// The largest sample, exact (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.exact.is_empty() {
            self.exact = vec![0; EXACT_NS as usize];
        }
        for (i, c) in other.exact.iter().enumerate() {
            self.exact[i] += c;
        }
        for (b, c) in &other.log {
            *self.log.entry(*b).or_default() += c;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    fn bucket(ns: u64) -> u32 {
        let octave = 63 - ns.leading_zeros();
        let frac = ((ns >> (octave - 4)) & 0xF) as u32;
        octave * 16 + frac
    }

    fn bucket_low(b: u32) -> u64 {
        let (octave, frac) = (b / 16, (b % 16) as u64);
        (1u64 << octave) + (frac << (octave - 4))
    }

    /// The smallest latency with at least `p` of the samples at or below.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = ((p * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (ns, &c) in self.exact.iter().enumerate() {
            seen += c;
            if seen >= target {
                return ns as u64;
            }
        }
        let mut buckets: Vec<(&u32, &u64)> = self.log.iter().collect();
        buckets.sort();
        for (b, c) in buckets {
            seen += c;
            if seen >= target {
                return Self::bucket_low(*b).min(self.max);
            }
        }
        self.max
    }
}

/// The stats report (what `cxl-memsim stats --json` prints).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub requests: u64,
    /// Bad requests by status name, in name order.
    pub errors: BTreeMap<String, u64>,
    pub devices: Vec<DeviceReport>,
    pub latency_ns: LatencyReport,
    pub hot_pages: Vec<HotPage>,
    /// Requests that came through the vhost-user-blk view, per device; absent
    /// until one did.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub block: BTreeMap<String, BlockCounts>,
    /// The TCG plugin stream, when the simulator listens for one (its
    /// accesses are also in `requests`, `devices`, `latency_ns` and
    /// `hot_pages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginReport>,
}

/// What the TCG plugin stream reports (the `plugin` object of the stats;
/// `plugin.rs` counts it).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PluginReport {
    /// Plugins connected now.
    pub connections: usize,
    /// Of those, the ones whose instrumentation is installed.
    pub armed: usize,
    /// The windows of the last `arm`.
    pub windows: Vec<String>,
    /// Device name to the guest physical address of its first byte.
    pub regions: BTreeMap<String, u64>,
    /// Accesses received and charged to a device.
    pub accesses: u64,
    pub reads: u64,
    pub writes: u64,
    /// Accesses received that no device holds (counted, not charged).
    pub unmapped: u64,
    pub batches: u64,
    /// Accesses the plugins said they could not send.
    pub plugin_dropped: u64,
    /// Messages missing from a connection's sequence.
    pub sequence_gaps: u64,
    /// Streams ended because they could not be decoded.
    pub decode_errors: u64,
    /// Bytes of incomplete messages left when a connection closed.
    pub truncated_bytes: u64,
    /// The plugins' learning (their latest counters, summed): distinct
    /// instructions left out of the instrumentation once seen (many RAM
    /// accesses, none to a window), re-translations made for that, and
    /// left-out instructions later caught touching a window, whose
    /// accesses while left out went uncounted.
    pub left_out: u64,
    pub prunes: u64,
    pub relearned: u64,
    /// Per vCPU index: accesses streamed and the latest instruction-count
    /// timestamp (instructions the vCPU executed under instrumentation).
    pub vcpus: BTreeMap<u32, VcpuReport>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct VcpuReport {
    pub accesses: u64,
    pub last_icount: u64,
}

/// Block requests served through a device's vhost-user-blk view. Reads and
/// writes are also in the device totals, pages and latency histogram.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct BlockCounts {
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub flushes: u64,
    pub get_ids: u64,
    /// DISCARD requests and the bytes they zeroed.
    pub discards: u64,
    pub discard_bytes: u64,
    /// WRITE_ZEROES requests and the bytes they zeroed.
    pub write_zeroes: u64,
    pub write_zeroes_bytes: u64,
    /// Requests answered VIRTIO_BLK_S_IOERR or VIRTIO_BLK_S_UNSUPP.
    pub errors: u64,
}

/// What a block request was, for [`Stats::record_block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOp {
    Read(u64),
    Write(u64),
    Flush,
    GetId,
    /// A discard zeroing this many bytes.
    Discard(u64),
    /// A write-zeroes of this many bytes.
    WriteZeroes(u64),
    /// A request that failed; its reason is counted under `errors` by name.
    Failed(&'static str),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceReport {
    pub name: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub pages_touched: usize,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct LatencyReport {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HotPage {
    pub device: String,
    /// Offset of the page in the device.
    pub offset: u64,
    pub accesses: u64,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Everything counted since start.
#[derive(Debug, Clone)]
pub struct Stats {
    names: Vec<String>,
    devices: Vec<Counts>,
    /// Per device, by index.
    pages: Vec<PageTable>,
    histogram: Histogram,
    errors: BTreeMap<String, u64>,
    requests: u64,
    /// Per device, by index; `None` until its view served a request.
    block: Vec<Option<BlockCounts>>,
}

impl Stats {
    pub fn new(device_names: Vec<String>) -> Stats {
        let n = device_names.len();
        Stats {
            names: device_names,
            devices: vec![Counts::default(); n],
            pages: vec![PageTable::default(); n],
            histogram: Histogram::default(),
            errors: BTreeMap::new(),
            requests: 0,
            block: vec![None; n],
        }
    }

    /// Records one access of `bytes` bytes at `offset`: one request and one
    /// latency sample; each page it touches (a block request may span many)
    /// gets one access and its share of the bytes.
    pub fn record(&mut self, device: usize, offset: u64, write: bool, bytes: u64, latency_ns: u64) {
        self.requests += 1;
        self.devices[device].add(write, bytes);
        let end = offset + bytes;
        let mut at = offset;
        while at < end {
            let page = at / PAGE;
            let here = ((page + 1) * PAGE).min(end) - at;
            self.pages[device].add(page, write, here);
            at += here;
        }
        self.histogram.record(latency_ns);
    }

    /// Counts a block request by kind in the per-device `block` section (its
    /// memory access, if any, is recorded by [`Stats::record`]).
    pub fn record_block(&mut self, device: usize, op: BlockOp) {
        let c = self.block[device].get_or_insert_with(BlockCounts::default);
        match op {
            BlockOp::Read(n) => {
                c.reads += 1;
                c.read_bytes += n;
            }
            BlockOp::Write(n) => {
                c.writes += 1;
                c.write_bytes += n;
            }
            BlockOp::Flush => c.flushes += 1,
            BlockOp::GetId => c.get_ids += 1,
            BlockOp::Discard(n) => {
                c.discards += 1;
                c.discard_bytes += n;
            }
            BlockOp::WriteZeroes(n) => {
                c.write_zeroes += 1;
                c.write_zeroes_bytes += n;
            }
            BlockOp::Failed(reason) => {
                c.errors += 1;
                self.requests += 1;
                *self.errors.entry(reason.to_owned()).or_default() += 1;
            }
        }
    }

    pub fn record_error(&mut self, status: Status) {
        self.requests += 1;
        *self.errors.entry(format!("{status:?}")).or_default() += 1;
    }

    pub fn report(&self, top: usize) -> Report {
        // Ranked by accesses; ties break by device and offset so reports
        // are deterministic. Only the top N get a name and a place in the
        // report.
        let mut ranked: Vec<(u64, &str, u64, &Counts)> = self
            .pages
            .iter()
            .zip(&self.names)
            .flat_map(|(table, name)| {
                table
                    .touched()
                    .map(move |(page, c)| (c.reads + c.writes, name.as_str(), page, c))
            })
            .collect();
        let order = |a: &(u64, &str, u64, &Counts), b: &(u64, &str, u64, &Counts)| {
            b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(&b.2))
        };
        if top < ranked.len() {
            if top > 0 {
                ranked.select_nth_unstable_by(top - 1, order);
            }
            ranked.truncate(top);
        }
        ranked.sort_by(order);
        let hot: Vec<HotPage> = ranked
            .into_iter()
            .map(|(accesses, device, page, c)| HotPage {
                device: device.to_owned(),
                offset: page * PAGE,
                accesses,
                counts: *c,
            })
            .collect();
        let h = &self.histogram;
        Report {
            requests: self.requests,
            errors: self.errors.clone(),
            devices: self
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| DeviceReport {
                    name: n.clone(),
                    counts: self.devices[i],
                    pages_touched: self.pages[i].touched,
                })
                .collect(),
            latency_ns: LatencyReport {
                count: h.count,
                p50: h.percentile(0.5),
                p90: h.percentile(0.9),
                p99: h.percentile(0.99),
                max: h.max,
            },
            hot_pages: hot,
            block: self
                .names
                .iter()
                .zip(&self.block)
                .filter_map(|(name, c)| c.map(|c| (name.clone(), c)))
                .collect(),
            plugin: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_exact_and_large_latencies() {
        let mut h = Histogram::default();
        for ns in 1..=100 {
            h.record(ns);
        }
        assert_eq!(h.percentile(0.5), 50);
        assert_eq!(h.percentile(0.99), 99);
        h.record(1_000_000);
        assert_eq!(h.max, 1_000_000);
        assert!(h.percentile(1.0) >= 1_000_000 - (1_000_000 >> 4));
    }

    #[test]
    fn pages_far_apart_are_counted_and_the_top_n_ties_break_by_device_and_offset() {
        let mut s = Stats::new(vec!["a".into(), "b".into()]);
        // Pages in different chunks, one 64 GiB into the device.
        let far = 64 << 30;
        for (dev, offset, times) in [
            (1, far, 2),
            (0, 5 * PAGE, 2),
            (1, 3 * PAGE, 2),
            (0, 70 * PAGE, 1),
            (0, 0, 3),
        ] {
            for _ in 0..times {
                s.record(dev, offset + 1, false, 8, 200);
            }
        }
        let r = s.report(3);
        let hot: Vec<(&str, u64, u64)> = r
            .hot_pages
            .iter()
            .map(|h| (h.device.as_str(), h.offset, h.accesses))
            .collect();
        assert_eq!(hot, [("a", 0, 3), ("a", 5 * PAGE, 2), ("b", 3 * PAGE, 2)]);
        assert_eq!(r.devices[0].pages_touched, 3);
        assert_eq!(r.devices[1].pages_touched, 2);
        assert_eq!(s.report(0).hot_pages.len(), 0);
        assert_eq!(s.report(100).hot_pages.len(), 5);
        assert_eq!(s.report(100).hot_pages[4].offset, 70 * PAGE);
    }

    #[test]
    fn hot_pages_are_ranked() {
        let mut s = Stats::new(vec!["a".into(), "b".into()]);
        for _ in 0..3 {
            s.record(1, 8192 + 10, true, 8, 100);
        }
        s.record(0, 0, false, 64, 200);
        s.record_error(Status::BadOp);
        let r = s.report(10);
        assert_eq!(r.requests, 5);
        assert_eq!(r.hot_pages[0].device, "b");
        assert_eq!(r.hot_pages[0].offset, 8192);
        assert_eq!(r.hot_pages[0].accesses, 3);
        assert_eq!(r.errors["BadOp"], 1);
        assert_eq!(r.devices[1].counts.write_bytes, 24);
        assert!(
            r.block.is_empty(),
            "no block section without block requests"
        );
    }

    #[test]
    fn a_range_is_spread_over_the_pages_it_touches() {
        let mut s = Stats::new(vec!["a".into()]);
        // From 2 KiB before a page boundary, 8 KiB: three pages.
        s.record(0, PAGE - 2048, true, 2 * PAGE, 300);
        s.record_block(0, BlockOp::Write(2 * PAGE));
        s.record_block(0, BlockOp::Failed("BlkOutOfRange"));
        let r = s.report(10);
        assert_eq!(r.requests, 2);
        assert_eq!(r.devices[0].pages_touched, 3);
        assert_eq!(r.devices[0].counts.writes, 1);
        let bytes: Vec<(u64, u64)> = {
            let mut v: Vec<_> = r
                .hot_pages
                .iter()
                .map(|p| (p.offset, p.counts.write_bytes))
                .collect();
            v.sort();
            v
        };
        assert_eq!(bytes, vec![(0, 2048), (PAGE, PAGE), (2 * PAGE, 2048)]);
        assert_eq!(r.latency_ns.count, 1);
        assert_eq!(r.block["a"].writes, 1);
        assert_eq!(r.block["a"].errors, 1);
        assert_eq!(r.errors["BlkOutOfRange"], 1);
    }
}
