//! `cxl-memsim serve`: backing files, model, TCP server and control socket;
//! one JSON `ready` line on stdout when everything is up; a final report on
//! SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cxl_topology::{Topology, TopologyError};
use serde_json::json;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};

use crate::backing::{self, BackingError};
use crate::model::{Model, ModelError};
use crate::simulator::Simulator;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Backing(#[from] BackingError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("Cannot listen on {what} {addr}.")]
    Listen {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub topology: Option<PathBuf>,
    pub backing_dir: PathBuf,
    pub listen: String,
    pub control: Option<PathBuf>,
    pub seed: Option<u64>,
    pub base: u64,
    pub newick: Option<String>,
    pub report_interval: Option<Duration>,
}

/// Builds the simulator (files, model) without serving: for tests and tools.
pub fn build(cfg: &ServeConfig) -> Result<Simulator, ServeError> {
    let topology = Topology::load(cfg.topology.as_deref())?;
    let devices = backing::open_all(&topology, &cfg.backing_dir)?;
    let mut model = Model::from_topology(&topology, cfg.seed.unwrap_or(topology.simulator.seed));
    if let Some(n) = &cfg.newick {
        model.apply_newick(n)?;
    }
    Ok(Simulator::new(devices, model, cfg.base))
}

/// Serves until SIGINT or SIGTERM, then prints the final report.
pub async fn serve(cfg: &ServeConfig) -> Result<(), ServeError> {
    let sim = Arc::new(build(cfg)?);
    let tcp = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ServeError::Listen {
            what: "TCP",
            addr: cfg.listen.clone(),
            source,
        })?;
    let listen = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tokio::spawn(crate::server::serve(tcp, sim.clone()));
    if let Some(path) = &cfg.control {
        let _ = std::fs::remove_file(path);
        let unix = UnixListener::bind(path).map_err(|source| ServeError::Listen {
            what: "control socket",
            addr: path.display().to_string(),
            source,
        })?;
        tokio::spawn(crate::control::serve(unix, sim.clone()));
    }
    let devices: Vec<_> = sim
        .devices()
        .iter()
        .map(|d| json!({"name": d.name, "path": d.path, "size": d.size, "base": sim.base() + d.base}))
        .collect();
    println!(
        "{}",
        json!({"event": "ready", "listen": listen, "control": cfg.control, "devices": devices})
    );

    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut tick = cfg.report_interval.map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = async { match tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                println!("{}", json!({"event": "report", "stats": sim.report(10)}));
            }
        }
    }
    sim.flush();
    println!("{}", json!({"event": "final", "stats": sim.report(10)}));
    if let Some(path) = &cfg.control {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
