//! The model over a real socket with jitter and timestamps: the same
//! topology, seed and request sequence give the same latencies; another seed
//! gives others; timestamps make a saturated link queue.

use std::io::{Read, Write};
use std::net::TcpStream;

use cxl_memsim::protocol::{Request, Response, OP_READ, OP_WRITE, REQUEST_SIZE, RESPONSE_SIZE};

mod common;
use common::Server;

/// One host bridge with a slow (1 GB/s) link, 40 ns of jitter.
const TOPOLOGY: &str = r#"
[[host_bridge]]
name = "hb"
link_latency_ns = 10
link_bandwidth_gbps = 1.0
[[root_port]]
name = "rp"
host_bridge = "hb"
[[device]]
name = "mem"
kind = "volatile"
size = "256M"
port = "rp"
[[window]]
size = "256M"
targets = ["hb"]
[simulator]
jitter_ns = 40
"#;

/// Runs `requests` pipelined on one connection of a fresh simulator and
/// returns the modelled latencies.
fn latencies(seed: u64, requests: &[Request]) -> Vec<u64> {
    let srv = Server::start(Some(TOPOLOGY), seed);
    let mut s = TcpStream::connect(&srv.addr).expect("connect");
    let mut out = Vec::with_capacity(requests.len() * REQUEST_SIZE);
    for r in requests {
        out.extend_from_slice(&r.encode());
    }
    s.write_all(&out).expect("send");
    let mut input = vec![0u8; requests.len() * RESPONSE_SIZE];
    s.read_exact(&mut input).expect("receive");
    input
        .chunks_exact(RESPONSE_SIZE)
        .map(|b| {
            let r = Response::decode(b.try_into().expect("frame"));
            assert_eq!(r.status, 0);
            r.latency_ns
        })
        .collect()
}

fn workload() -> Vec<Request> {
    (0..500u64)
        .map(|i| {
            let op = if i % 4 == 0 { OP_WRITE } else { OP_READ };
            Request::new(op, (i * 4160) % (256 << 20), 1 + i % 64, 0, [i as u8; 64])
        })
        .collect()
}

#[test]
fn same_seed_same_latency_sequence_with_jitter() {
    let a = latencies(42, &workload());
    let b = latencies(42, &workload());
    assert_eq!(a, b);
    let c = latencies(43, &workload());
    assert_ne!(a, c, "the seed drives the jitter");
    // Every latency is media + link + transfer + jitter in [0, 40].
    for (r, l) in workload().iter().zip(&a) {
        let media = if r.op_type == OP_WRITE { 100 } else { 200 };
        let floor = media + 10 + r.size;
        assert!((floor..=floor + 40).contains(l), "{r:?}: {l}");
    }
}

#[test]
fn requests_arriving_together_queue_on_a_saturated_link() {
    // A 1-byte read (closed loop, at 0) holds the link for 1 ns and moves
    // the model's clock past 211 ns. Then ten 64-byte reads stamped at 1 ns:
    // inside the window behind the clock, so they keep that stamp and
    // arrive together; at 1 GB/s each holds the link for 64 ns, so the k-th
    // waits 64 k ns (plus jitter).
    let mut requests = vec![Request::new(OP_READ, 0, 1, 0, [0; 64])];
    requests.extend((0..10u64).map(|i| Request::new(OP_READ, i * 64, 64, 1, [0; 64])));
    let lat = latencies(1, &requests);
    for (k, l) in lat[1..].iter().enumerate() {
        let floor = 200 + 10 + 64 + 64 * k as u64;
        assert!((floor..=floor + 40).contains(l), "request {k}: {l}");
    }
}
