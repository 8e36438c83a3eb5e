//! The deterministic latency/bandwidth model. Pure: same topology, seed and
//! request sequence give the same latencies, byte for byte. The formula is
//! in the crate README.

use cxl_topology::Topology;

/// Errors building a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "The Newick topology '{text}' is not valid: {reason}. Write it like (CPU:0,(CXL:100));"
    )]
    Newick { text: String, reason: String },
}

pub const DEFAULT_READ_NS: u64 = cxl_topology::DEFAULT_READ_LATENCY_NS;
pub const DEFAULT_WRITE_NS: u64 = cxl_topology::DEFAULT_WRITE_LATENCY_NS;
pub const DEFAULT_LINK_GBPS: f64 = cxl_topology::DEFAULT_LINK_GBPS;

/// A link on a device's path (CPU to host bridge, or switch to device).
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub name: String,
    pub latency_ns: u64,
    /// Femtoseconds per byte (1e6 / GB/s), integer so the model is exact.
    pub fs_per_byte: u64,
    /// When the link is free again, in simulated femtoseconds (u128: wall
    /// clock timestamps in ns times 1e6 do not fit in a u64).
    busy_until_fs: u128,
}

impl Link {
    fn new(name: &str, latency_ns: u64, gbps: f64) -> Link {
        let fs_per_byte = (1e6 / gbps.max(1e-3)).round() as u64;
        Link {
            name: name.to_owned(),
            latency_ns,
            fs_per_byte,
            busy_until_fs: 0,
        }
    }
}

/// Per-device parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceModel {
    pub name: String,
    pub read_ns: u64,
    pub write_ns: u64,
    /// Indexes into [`Model::links`], CPU side first.
    pub path: Vec<usize>,
}

/// A small, fast, seedable PRNG (splitmix64) for jitter and the load
/// generator's addresses.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// How far before the model's clock a foreign timestamp may place an
/// arrival (1 ms): enough for a client to say that requests arrived
/// together or spaced, bounded so a lagging client clock cannot make its
/// own requests wait for seconds.
pub const FOREIGN_WINDOW_NS: u64 = 1_000_000;

const FS_PER_NS: u128 = 1_000_000;

/// When an access arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// When the latest modelled access completed (closed loop).
    ClosedLoop,
    /// At this time of the simulator's own clock (the vhost-user-blk view:
    /// wall nanoseconds since the simulator started). Trusted: it may move
    /// the model's clock forward.
    At(u64),
    /// At a client-supplied time (a TCP request's `timestamp_ns`; 0 means
    /// closed loop). The client's clock is not the model's: the time is
    /// clamped into `[clock - FOREIGN_WINDOW_NS, clock]`, so it never runs
    /// ahead of the model's clock and cannot leave links busy into the
    /// future of other clients.
    Foreign(u64),
}

/// The breakdown of one modelled access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub latency_ns: u64,
    pub queue_ns: u64,
}

/// The model of every device of a topology.
#[derive(Debug, Clone)]
pub struct Model {
    pub devices: Vec<DeviceModel>,
    pub links: Vec<Link>,
    jitter_ns: u64,
    rng: SplitMix64,
    /// The model's clock: the latest completion it modelled (never
    /// decreases). Closed-loop requests arrive at it; foreign timestamps are
    /// clamped to it.
    clock_fs: u128,
}

impl Model {
    /// Builds the model from the topology's latencies and bandwidths.
    pub fn from_topology(t: &Topology, seed: u64) -> Model {
        let mut links: Vec<Link> = Vec::new();
        let link_index = |links: &mut Vec<Link>, name: &str, lat: Option<u64>, bw: Option<f64>| {
            if let Some(i) = links.iter().position(|l| l.name == name) {
                return i;
            }
            links.push(Link::new(
                name,
                lat.unwrap_or(0),
                bw.unwrap_or(DEFAULT_LINK_GBPS),
            ));
            links.len() - 1
        };
        let devices = t
            .devices
            .iter()
            .map(|d| {
                let p = t.path_of(d);
                let mut path = vec![link_index(
                    &mut links,
                    &p.host_bridge.name,
                    p.host_bridge.link_latency_ns,
                    p.host_bridge.link_bandwidth_gbps,
                )];
                if let Some(s) = p.switch {
                    path.push(link_index(
                        &mut links,
                        &s.name,
                        s.link_latency_ns,
                        s.link_bandwidth_gbps,
                    ));
                }
                DeviceModel {
                    name: d.name.clone(),
                    read_ns: d.read_latency_ns.unwrap_or(DEFAULT_READ_NS),
                    write_ns: d.write_latency_ns.unwrap_or(DEFAULT_WRITE_NS),
                    path,
                }
            })
            .collect();
        Model {
            devices,
            links,
            jitter_ns: t.simulator.jitter_ns,
            rng: SplitMix64(seed),
            clock_fs: 0,
        }
    }

    /// Applies a CXLMemSim Newick topology: the i-th `CXL` leaf's path
    /// latency (the sum of branch lengths from the root) becomes the extra
    /// link latency of the i-th device (the last leaf repeats).
    pub fn apply_newick(&mut self, newick: &str) -> Result<(), ModelError> {
        let leaves = newick_cxl_latencies(newick)?;
        for (i, d) in self.devices.iter_mut().enumerate() {
            let lat = leaves[i.min(leaves.len() - 1)];
            let name = format!("newick:{}", d.name);
            self.links.push(Link::new(&name, lat, DEFAULT_LINK_GBPS));
            d.path = vec![self.links.len() - 1];
        }
        Ok(())
    }

    /// Models one access of `size` bytes to `device` arriving at `arrival`.
    pub fn access(&mut self, device: usize, write: bool, size: u64, arrival: Arrival) -> Timing {
        let arrival = match arrival {
            Arrival::ClosedLoop | Arrival::Foreign(0) => self.clock_fs,
            Arrival::At(ns) => u128::from(ns) * FS_PER_NS,
            Arrival::Foreign(ns) => (u128::from(ns) * FS_PER_NS).clamp(
                self.clock_fs
                    .saturating_sub(u128::from(FOREIGN_WINDOW_NS) * FS_PER_NS),
                self.clock_fs,
            ),
        };
        let d = &self.devices[device];
        let media_ns = if write { d.write_ns } else { d.read_ns };
        let mut total_fs = u128::from(media_ns) * FS_PER_NS;
        let mut queue_fs = 0;
        for &l in &d.path {
            let link = &mut self.links[l];
            let transfer = u128::from(size) * u128::from(link.fs_per_byte);
            let start = arrival.max(link.busy_until_fs);
            queue_fs += start - arrival;
            link.busy_until_fs = start + transfer;
            total_fs += u128::from(link.latency_ns) * FS_PER_NS + (start - arrival) + transfer;
        }
        if self.jitter_ns > 0 {
            total_fs += u128::from(self.rng.next_u64() % (self.jitter_ns + 1)) * FS_PER_NS;
        }
        self.clock_fs = self.clock_fs.max(arrival + total_fs);
        let ns = |fs: u128| u64::try_from(fs).unwrap_or(u64::MAX);
        Timing {
            latency_ns: ns(total_fs.div_ceil(FS_PER_NS)),
            queue_ns: ns(queue_fs / FS_PER_NS),
        }
    }
}

/// Parses a Newick tree and returns the root-to-leaf latency of every leaf
/// whose label starts with `CXL`, in order.
pub fn newick_cxl_latencies(text: &str) -> Result<Vec<u64>, ModelError> {
    let err = |reason: &str| ModelError::Newick {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    #[derive(Default)]
    struct Node {
        label: String,
        len: f64,
        children: Vec<Node>,
    }
    fn parse(s: &[u8], i: &mut usize) -> Result<Node, String> {
        let mut n = Node::default();
        if s.get(*i) == Some(&b'(') {
            *i += 1;
            loop {
                n.children.push(parse(s, i)?);
                match s.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b')') => {
                        *i += 1;
                        break;
                    }
                    _ => return Err(format!("expected ',' or ')' at byte {}", *i)),
                }
            }
        }
        let start = *i;
        while *i < s.len() && !b":,();".contains(&s[*i]) {
            *i += 1;
        }
        n.label = String::from_utf8_lossy(&s[start..*i]).trim().to_owned();
        if s.get(*i) == Some(&b':') {
            *i += 1;
            let st = *i;
            while *i < s.len() && (s[*i].is_ascii_digit() || s[*i] == b'.') {
                *i += 1;
            }
            n.len = std::str::from_utf8(&s[st..*i])
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("a branch length at byte {st} is not a number"))?;
        }
        Ok(n)
    }
    fn walk(n: &Node, acc: f64, out: &mut Vec<u64>) {
        let here = acc + n.len;
        if n.children.is_empty() {
            if n.label.to_ascii_uppercase().starts_with("CXL") {
                out.push(here.round() as u64);
            }
        } else {
            n.children.iter().for_each(|c| walk(c, here, out));
        }
    }
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut i = 0;
    let root = parse(&bytes, &mut i).map_err(|r| err(&r))?;
    if bytes.get(i) != Some(&b';') {
        return Err(err("it must end with ';'"));
    }
    let mut out = Vec::new();
    walk(&root, 0.0, &mut out);
    if out.is_empty() {
        return Err(err("it has no leaf named CXL"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_cxlmemsim_simple_server() {
        let mut m = Model::from_topology(&Topology::embedded_default(), 0);
        // 200 ns media + 64 B at 64 GB/s (1 ns).
        assert_eq!(m.access(0, false, 64, Arrival::ClosedLoop).latency_ns, 201);
        assert_eq!(m.access(0, true, 64, Arrival::ClosedLoop).latency_ns, 101);
    }

    #[test]
    fn a_saturated_link_queues() {
        let mut m = Model::from_topology(&Topology::embedded_default(), 0);
        // Both devices share the host bridge link; simultaneous arrivals queue.
        let a = m.access(0, false, 64, Arrival::At(1_000));
        let b = m.access(1, false, 64, Arrival::At(1_000));
        assert_eq!(a.queue_ns, 0);
        assert_eq!(b.queue_ns, 1);
        assert_eq!(b.latency_ns, a.latency_ns + 1);
    }

    #[test]
    fn foreign_timestamps_never_run_ahead_of_the_clock() {
        let mut m = Model::from_topology(&Topology::embedded_default(), 0);
        m.access(0, false, 64, Arrival::At(10_000));
        assert_eq!(m.clock_fs, 10_201 * FS_PER_NS);
        // CLOCK_REALTIME in ns, as a CXLMemSim client may send it, and
        // u64::MAX arrive at the clock, like closed-loop requests: each
        // when the previous completed, so neither queues.
        let now = 1_764_000_000_000_000_000u64;
        let t = m.access(0, false, 64, Arrival::Foreign(now));
        assert_eq!((t.latency_ns, t.queue_ns), (201, 0));
        let t = m.access(1, false, 64, Arrival::Foreign(u64::MAX));
        assert_eq!((t.latency_ns, t.queue_ns), (201, 0));
        // The clock moved by those completions only, not to the stamps.
        assert_eq!(m.clock_fs, (10_201 + 2 * 201) * FS_PER_NS);
    }

    #[test]
    fn foreign_timestamps_keep_their_spacing_within_the_window() {
        let mut m = Model::from_topology(&Topology::embedded_default(), 0);
        m.access(0, false, 0, Arrival::At(5_000_000));
        // Clock 5_000_200 ns. A burst stamped at one instant within the
        // window arrives together and queues on the link.
        let a = m.access(0, false, 64, Arrival::Foreign(5_000_100));
        let b = m.access(0, false, 64, Arrival::Foreign(5_000_100));
        assert_eq!((a.queue_ns, b.queue_ns), (0, 1));
        // Clock 5_000_302, link busy until 5_000_102. A stamp long before
        // the window arrives at its start (4_000_302) and waits for the
        // link: never more than the window.
        let old = m.access(0, false, 64, Arrival::Foreign(1));
        assert_eq!(old.queue_ns, 5_000_102 - 4_000_302);
        assert!(old.queue_ns <= FOREIGN_WINDOW_NS);
    }

    #[test]
    fn a_far_future_and_a_zero_timestamp_do_not_delay_others() {
        let mut alone = Model::from_topology(&Topology::embedded_default(), 0);
        let mut shared = alone.clone();
        let expected = alone.access(1, false, 4096, Arrival::At(2_000_000));
        // One client: a far-future stamp, then a closed-loop request.
        shared.access(0, true, 64, Arrival::Foreign(u64::MAX));
        shared.access(0, true, 64, Arrival::Foreign(0));
        // Another client (the block view, on the simulator's clock) sees
        // the same latency as on an idle model.
        assert_eq!(
            shared.access(1, false, 4096, Arrival::At(2_000_000)),
            expected
        );
    }

    #[test]
    fn a_slow_switch_link_adds_latency_and_saturates() {
        let t = Topology::parse(
            r#"
[[host_bridge]]
name = "hb"
link_latency_ns = 20
[[root_port]]
name = "rp"
host_bridge = "hb"
[[switch]]
name = "sw"
root_port = "rp"
downstream_ports = ["dp0"]
link_latency_ns = 30
link_bandwidth_gbps = 1.0
[[device]]
name = "mem"
kind = "volatile"
size = "256M"
port = "dp0"
read_latency_ns = 150
[[window]]
size = "256M"
targets = ["hb"]
"#,
            "test",
        )
        .unwrap();
        let mut m = Model::from_topology(&t, 0);
        assert_eq!(m.devices[0].path.len(), 2);
        // 150 media + 20 + 1 (host bridge, 64 GB/s) + 30 + 64 (switch, 1 GB/s).
        assert_eq!(m.access(0, false, 64, Arrival::At(1_000)).latency_ns, 265);
        // Arriving together: waits 1 ns for the host bridge link and 64 ns
        // for the switch link (each link is checked at the arrival time).
        let second = m.access(0, false, 64, Arrival::At(1_000));
        assert_eq!((second.latency_ns, second.queue_ns), (265 + 65, 65));
        // Arriving after the link is free again: no queueing.
        assert_eq!(m.access(0, false, 64, Arrival::At(2_000)).queue_ns, 0);
    }

    #[test]
    fn same_seed_same_latencies() {
        let mut t = Topology::embedded_default();
        t.simulator.jitter_ns = 50;
        let run = |seed| {
            let mut m = Model::from_topology(&t, seed);
            (0..1000)
                .map(|i| {
                    m.access(i % 2, i % 3 == 0, 1 + (i as u64 % 64), Arrival::ClosedLoop)
                        .latency_ns
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn newick_latencies() {
        assert_eq!(newick_cxl_latencies("(CPU:0,(CXL:100));").unwrap(), [100]);
        assert_eq!(
            newick_cxl_latencies("(CPU:0,(CXL:100,CXL:150)SW:50);").unwrap(),
            [150, 200]
        );
        let e = newick_cxl_latencies("(CPU:0,(DRAM:100));").unwrap_err();
        assert!(e.to_string().contains("it has no leaf named CXL"), "{e}");
        assert!(newick_cxl_latencies("(CPU:0,(CXL:x));").is_err());
        let mut m = Model::from_topology(&Topology::embedded_default(), 0);
        m.apply_newick("(CPU:0,(CXL:100));").unwrap();
        assert_eq!(m.access(0, false, 64, Arrival::ClosedLoop).latency_ns, 301);
    }
}
