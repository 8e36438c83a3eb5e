//! The `cxl-memsim` binary as the lab and users run it: the ready line,
//! `stats` over the control socket, `client`, `--base`, SIGTERM/SIGINT, and
//! persistent memory across restarts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use cxl_memsim::protocol::{Request, Response, OP_READ, OP_WRITE, RESPONSE_SIZE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cxl-memsim");

struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    ready: Value,
}

impl Running {
    fn listen(&self) -> String {
        self.ready["listen"].as_str().expect("listen").to_owned()
    }

    /// Sends `signal`, waits for exit 0 and returns the last event line.
    fn stop(mut self, signal: Signal) -> Value {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal");
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("stdout");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "exit status {status}; stdout {rest}");
        let last = rest.lines().last().expect("a final report line");
        serde_json::from_str(last).expect("final line is JSON")
    }
}

/// Starts `cxl-memsim ARGS` and waits for its ready line.
fn start(args: &[&std::ffi::OsStr]) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn cxl-memsim {args:?}: {e}"));
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(ready["event"], "ready");
    Running {
        child,
        stdout,
        ready,
    }
}

fn serve(backing: &Path, extra: &[&str]) -> Running {
    let control = backing.join("memsim.sock");
    let mut args: Vec<&std::ffi::OsStr> = ["serve", "--backing-dir"].map(AsRef::as_ref).to_vec();
    args.push(backing.as_os_str());
    args.extend(["--listen", "127.0.0.1:0", "--control"].map(std::ffi::OsStr::new));
    args.push(control.as_os_str());
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let running = start(&args);
    assert_eq!(running.ready["control"], control.display().to_string());
    running
}

fn call(s: &mut TcpStream, r: Request) -> Response {
    s.write_all(&r.encode()).expect("send");
    let mut b = [0u8; RESPONSE_SIZE];
    s.read_exact(&mut b).expect("receive");
    Response::decode(&b)
}

fn payload(bytes: &[u8]) -> [u8; 64] {
    let mut d = [0u8; 64];
    d[..bytes.len()].copy_from_slice(bytes);
    d
}

#[test]
fn serve_reports_ready_answers_stats_and_keeps_persistent_memory_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = serve(dir.path(), &[]);
    let devices = sim.ready["devices"].as_array().expect("devices");
    let names: Vec<&str> = devices
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vmem0", "pmem0"]);
    for d in devices {
        let path = d["path"].as_str().expect("path");
        assert_eq!(
            std::fs::metadata(path).expect("backing file").len(),
            d["size"].as_u64().unwrap()
        );
    }
    let pmem_base = devices[1]["base"].as_u64().unwrap();
    assert_eq!(pmem_base, 256 << 20);
    assert!(!sim.listen().ends_with(":0"), "the chosen port is reported");

    let mut s = TcpStream::connect(sim.listen()).expect("connect");
    let w = call(
        &mut s,
        Request::new(OP_WRITE, pmem_base + 64, 7, 0, payload(b"persist")),
    );
    assert_eq!(w.status, 0);
    let v = call(
        &mut s,
        Request::new(OP_WRITE, 8, 8, 0, payload(b"volatile")),
    );
    assert_eq!(v.status, 0);

    let out = Command::new(BIN)
        .args(["stats", "--json", "--control"])
        .arg(dir.path().join("memsim.sock"))
        .output()
        .expect("cxl-memsim stats");
    assert!(out.status.success(), "{out:?}");
    let stats: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["devices"][1]["name"], "pmem0");
    assert_eq!(stats["devices"][1]["writes"], 1);
    assert_eq!(stats["devices"][1]["write_bytes"], 7);
    assert_eq!(stats["hot_pages"][0]["accesses"], 1);
    let human = Command::new(BIN)
        .args(["stats", "--control"])
        .arg(dir.path().join("memsim.sock"))
        .output()
        .expect("cxl-memsim stats");
    assert!(String::from_utf8_lossy(&human.stdout).contains("pmem0"));

    drop(s);
    let last = sim.stop(Signal::SIGTERM);
    assert_eq!(last["event"], "final");
    assert_eq!(last["stats"]["requests"], 2);
    assert!(
        !dir.path().join("memsim.sock").exists(),
        "the control socket is removed on exit"
    );

    // Restart on the same files: pmem0 keeps its bytes, vmem0 is zeroed.
    let sim = serve(dir.path(), &[]);
    let mut s = TcpStream::connect(sim.listen()).expect("connect");
    let r = call(&mut s, Request::new(OP_READ, pmem_base + 64, 7, 0, [0; 64]));
    assert_eq!(&r.data[..7], b"persist");
    let r = call(&mut s, Request::new(OP_READ, 8, 8, 0, [0; 64]));
    assert_eq!(&r.data[..8], &[0; 8]);
    drop(s);
    assert_eq!(sim.stop(Signal::SIGINT)["event"], "final");
}

#[test]
fn base_maps_host_physical_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = serve(dir.path(), &["--base", "0x110000000"]);
    assert_eq!(sim.ready["devices"][0]["base"], 0x1_1000_0000u64);
    assert_eq!(
        sim.ready["devices"][1]["base"],
        0x1_1000_0000u64 + (256 << 20)
    );
    let mut s = TcpStream::connect(sim.listen()).expect("connect");
    let w = call(
        &mut s,
        Request::new(OP_WRITE, 0x1_1000_0040, 2, 0, payload(b"hp")),
    );
    assert_eq!(w.status, 0);
    // Flat address 0 is below the base now.
    assert_eq!(
        call(&mut s, Request::new(OP_READ, 0, 8, 0, [0; 64])).status,
        1
    );
    drop(s);
    sim.stop(Signal::SIGTERM);
    let file = std::fs::read(dir.path().join("vmem0.mem")).expect("vmem0.mem");
    assert_eq!(&file[0x40..0x42], b"hp");
}

#[test]
fn client_reports_throughput_and_latencies_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = serve(dir.path(), &[]);
    let out = Command::new(BIN)
        .args(["client", "--addr", &sim.listen()])
        .args(["--ops", "2000", "--depth", "8", "--connections", "2"])
        .args(["--read-ratio", "0.5", "--size", "64", "--pattern", "seq"])
        .arg("--json")
        .output()
        .expect("cxl-memsim client");
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(r["requests"], 4000);
    assert_eq!(r["errors"], 0);
    assert!(r["requests_per_second"].as_f64().unwrap() > 0.0);
    // Defaults: 64-byte writes model 101 ns, reads 201 ns.
    assert_eq!(r["modelled_latency_ns"]["max"], 201);
    assert!(r["wall_latency_ns"]["p50"].as_u64().unwrap() > 0);
    let last = sim.stop(Signal::SIGTERM);
    assert_eq!(last["stats"]["requests"], 4000);
}

#[test]
fn null_server_answers_every_request_with_status_0_and_no_model() {
    let null = start(&["null-server", "--listen", "127.0.0.1:0"].map(std::ffi::OsStr::new));
    assert_eq!(null.ready["responder"], "null");
    let mut s = TcpStream::connect(null.listen()).expect("connect");
    // Even a request the simulator refuses: the baseline validates nothing.
    let r = call(&mut s, Request::new(OP_READ, u64::MAX - 8, 0, 0, [7; 64]));
    assert_eq!((r.status, r.latency_ns, r.data), (0, 0, [0; 64]));
    let out = Command::new(BIN)
        .args(["client", "--addr", &null.listen()])
        .args([
            "--ops",
            "1000",
            "--depth",
            "4",
            "--connections",
            "2",
            "--json",
        ])
        .output()
        .expect("cxl-memsim client");
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(r["requests"], 2000);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["modelled_latency_ns"]["max"], 0);
    drop(s);
    assert_eq!(null.stop(Signal::SIGTERM)["event"], "final");
}

#[test]
fn a_persistent_file_of_the_wrong_size_stops_serve_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pmem = dir.path().join("pmem0.mem");
    std::fs::write(&pmem, b"old data").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--backing-dir"])
        .arg(dir.path())
        .output()
        .expect("cxl-memsim serve");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no ready line");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&pmem.display().to_string()), "{err}");
    assert!(
        err.contains("has 8 bytes but the topology says 268435456"),
        "{err}"
    );
    assert_eq!(std::fs::read(&pmem).expect("read"), b"old data");
}

#[test]
fn vhost_user_blk_sockets_are_bound_before_ready_and_removed_at_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = dir.path().join("pmem0-blk.sock");
    let ro = dir.path().join("vmem0-blk.sock");
    let running = serve(
        dir.path(),
        &[
            "--vhost-user-blk",
            &format!("pmem0={}", rw.display()),
            "--vhost-user-blk-ro",
            &format!("vmem0={}", ro.display()),
        ],
    );
    assert_eq!(
        running.ready["vhost_user_blk"],
        serde_json::json!([
            {"device": "pmem0", "socket": rw, "read_only": false},
            {"device": "vmem0", "socket": ro, "read_only": true},
        ])
    );
    for s in [&rw, &ro] {
        std::os::unix::net::UnixStream::connect(s)
            .unwrap_or_else(|e| panic!("{} accepts a front end: {e}", s.display()));
    }
    running.stop(Signal::SIGTERM);
    assert!(!rw.exists() && !ro.exists(), "sockets removed at exit");
}

#[test]
fn a_block_view_of_an_unknown_device_stops_serve_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--backing-dir"])
        .arg(dir.path())
        .args(["--vhost-user-blk", "disk9=/tmp/never.sock"])
        .output()
        .expect("cxl-memsim serve");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no ready line");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No device is called 'disk9'; the topology has: vmem0, pmem0."),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--backing-dir"])
        .arg(dir.path())
        .args(["--vhost-user-blk", "pmem0=/tmp/same.sock"])
        .args(["--vhost-user-blk-ro", "vmem0=/tmp/same.sock"])
        .output()
        .expect("cxl-memsim serve");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "The vhost-user socket /tmp/same.sock is given to two block views; give each its own."
        ),
        "{out:?}"
    );
    let out = Command::new(BIN)
        .args(["serve", "--vhost-user-blk", "pmem0"])
        .output()
        .expect("cxl-memsim serve");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not DEVICE=SOCKET_PATH"),
        "{out:?}"
    );
}
