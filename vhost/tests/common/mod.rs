//! A simulator on temporary backing files serving TCP on a loopback port,
//! shared by the socket tests.
//! Each test binary compiles its own copy and uses part of it.
#![allow(dead_code)]

use std::sync::Arc;

use cxl_memsim::serve::{build, ServeConfig};
use cxl_memsim::simulator::Simulator;

pub struct Server {
    pub addr: String,
    pub sim: Arc<Simulator>,
    /// The backing files (and the topology file, when one was given).
    pub dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    /// Starts a simulator on `topology` (TOML text; the embedded default
    /// when `None`) with `seed`.
    pub fn start(topology: Option<&str>, seed: u64) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let topology = topology.map(|text| {
            let path = dir.path().join("topology.toml");
            std::fs::write(&path, text).expect("topology file");
            path
        });
        let cfg = ServeConfig {
            topology,
            backing_dir: dir.path().to_owned(),
            listen: "127.0.0.1:0".into(),
            seed: Some(seed),
            ..Default::default()
        };
        let sim = Arc::new(build(&cfg).expect("simulator"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        rt.spawn(cxl_memsim::server::serve(listener, sim.clone(), None));
        Server {
            addr,
            sim,
            dir,
            _rt: rt,
        }
    }
}
