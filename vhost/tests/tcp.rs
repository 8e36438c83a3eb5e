//! The TCP protocol over a real socket, against a simulator on temporary
//! backing files.

use std::io::{Read, Write};
use std::net::TcpStream;

use cxl_memsim::protocol::{
    Request, Response, Status, OP_READ, OP_WRITE, REQUEST_SIZE, RESPONSE_SIZE,
};

mod common;
use common::Server;

fn call(s: &mut TcpStream, r: Request) -> Response {
    s.write_all(&r.encode()).expect("send");
    let mut b = [0u8; RESPONSE_SIZE];
    s.read_exact(&mut b).expect("receive");
    Response::decode(&b)
}

fn data(bytes: &[u8]) -> [u8; 64] {
    let mut d = [0u8; 64];
    d[..bytes.len()].copy_from_slice(bytes);
    d
}

#[test]
fn write_then_read_returns_the_data_and_it_is_in_the_backing_file() {
    let srv = Server::start(None, 0);
    let mut s = TcpStream::connect(&srv.addr).expect("connect");
    let addr = (256 << 20) + 4096 + 3; // pmem0, byte-addressed, unaligned
    let w = call(&mut s, Request::new(OP_WRITE, addr, 5, 0, data(b"hello")));
    assert_eq!((w.status, w.latency_ns), (0, 101));
    let r = call(&mut s, Request::new(OP_READ, addr + 1, 3, 0, [0; 64]));
    assert_eq!(r.status, 0);
    assert_eq!(
        &r.data[..3],
        b"ell",
        "a read inside a written line returns the written bytes"
    );
    srv.sim.flush();
    let file = std::fs::read(srv.dir.path().join("pmem0.mem")).expect("backing file");
    assert_eq!(&file[4096 + 3..4096 + 8], b"hello");
}

#[test]
fn each_bad_request_gets_its_status_and_the_connection_stays_usable() {
    let srv = Server::start(None, 0);
    let mut s = TcpStream::connect(&srv.addr).expect("connect");
    let good = Request::new(OP_WRITE, 128, 8, 0, data(b"12345678"));
    let cases = [
        (
            Request {
                addr: 512 << 20,
                ..good
            },
            Status::OutOfRange,
        ),
        (
            Request {
                addr: (512 << 20) - 4,
                size: 4,
                ..good
            },
            Status::Ok,
        ),
        (
            Request {
                addr: (512 << 20) - 2,
                size: 4,
                ..good
            },
            Status::CrossesLine,
        ),
        (Request { addr: 60, ..good }, Status::CrossesLine),
        (Request { size: 0, ..good }, Status::BadSize),
        (Request { size: 65, ..good }, Status::BadSize),
        (Request { op_type: 9, ..good }, Status::BadOp),
    ];
    for (req, want) in cases {
        let resp = call(&mut s, req);
        assert_eq!(resp.status, want as u8, "{req:?}");
        // The next good request on the same connection succeeds.
        assert_eq!(call(&mut s, good).status, 0);
    }
    let backing = std::fs::read(srv.dir.path().join("vmem0.mem")).expect("file");
    assert!(
        backing[..128].iter().all(|&b| b == 0),
        "bad requests touched no memory"
    );
    let report = srv.sim.report(5);
    assert_eq!(report.errors["OutOfRange"], 1);
    assert_eq!(report.errors["CrossesLine"], 2);
    assert_eq!(report.errors["BadSize"], 2);
    assert_eq!(report.errors["BadOp"], 1);
}

#[test]
fn pipelined_requests_are_answered_in_order_and_a_short_frame_ends_only_that_connection() {
    let srv = Server::start(None, 0);
    let mut s = TcpStream::connect(&srv.addr).expect("connect");
    let mut batch = Vec::new();
    for i in 0..32u64 {
        batch.extend_from_slice(
            &Request::new(OP_WRITE, i * 64, 8, 0, data(&i.to_le_bytes())).encode(),
        );
    }
    for i in 0..32u64 {
        batch.extend_from_slice(&Request::new(OP_READ, i * 64, 8, 0, [0; 64]).encode());
    }
    s.write_all(&batch).expect("send batch");
    let mut resp = vec![0u8; 64 * RESPONSE_SIZE];
    s.read_exact(&mut resp).expect("all responses");
    for i in 0..32usize {
        let r = Response::decode(
            resp[(32 + i) * RESPONSE_SIZE..(33 + i) * RESPONSE_SIZE]
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            u64::from_le_bytes(r.data[..8].try_into().unwrap()),
            i as u64
        );
    }
    let mut short = TcpStream::connect(&srv.addr).expect("connect");
    short
        .write_all(&[0u8; REQUEST_SIZE / 2])
        .expect("half a frame");
    drop(short);
    // The first connection still works.
    assert_eq!(
        call(&mut s, Request::new(OP_READ, 0, 8, 0, [0; 64])).status,
        0
    );
}

/// A fixed workload: mixed reads and writes over both devices.
fn workload(seed: u64) -> (Vec<u64>, serde_json::Value) {
    let srv = Server::start(None, seed);
    let mut s = TcpStream::connect(&srv.addr).expect("connect");
    let mut lat = Vec::new();
    for i in 0..2000u64 {
        // 50 pages on each device, revisited: some pages get hotter.
        let page = (i * 7) % 50 + (i % 2) * 65536 + (i % 9 == 0) as u64;
        let addr = page * 4096 + (i % 5) * 64;
        let op = if i % 3 == 0 { OP_WRITE } else { OP_READ };
        lat.push(call(&mut s, Request::new(op, addr, 1 + i % 64, 0, [0; 64])).latency_ns);
    }
    (lat, serde_json::to_value(srv.sim.report(5)).expect("json"))
}

#[test]
fn the_same_workload_twice_gives_identical_latencies_and_stats() {
    let (a, stats_a) = workload(3);
    let (b, stats_b) = workload(3);
    assert_eq!(a, b);
    assert_eq!(stats_a, stats_b);
    insta::assert_json_snapshot!("fixed_workload_stats", stats_a);
}
