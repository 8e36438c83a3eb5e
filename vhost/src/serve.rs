//! `cxl-memsim serve`: backing files, model, TCP server, control socket and
//! vhost-user-blk views; the TCG plugin's socket;
//! one JSON `ready` line on stdout when everything is up; a final report on
//! SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};

use crate::blk_backend::{self, BlkBackendError, BlkView};
use crate::control::full_report;
use crate::plugin::PluginHub;
use crate::server::NullResponder;
use crate::simulator::{Simulator, SimulatorError};

/// Hot pages in the periodic and final reports.
const REPORT_TOP: usize = 10;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Simulator(#[from] SimulatorError),
    #[error("Another cxl-memsim is already serving the socket {path}; stop it or choose another path (--control, --plugin-socket).")]
    SocketInUse { path: String },
    #[error("Cannot start the vhost-user-blk view of device {device}.")]
    Block {
        device: String,
        #[source]
        source: BlkBackendError,
    },
    #[error("The vhost-user socket {path} is given to two block views; give each its own.")]
    SocketTwice { path: String },
    #[error("Cannot install the SIGINT/SIGTERM handlers.")]
    Signal(#[source] std::io::Error),
    #[error("Cannot listen on {what} {addr}.")]
    Listen {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    pub topology: Option<PathBuf>,
    pub backing_dir: PathBuf,
    pub listen: String,
    pub control: Option<PathBuf>,
    pub seed: Option<u64>,
    pub base: u64,
    pub newick: Option<String>,
    pub report_interval: Option<Duration>,
    /// Devices to serve as vhost-user-blk disks, each on its own socket.
    pub vhost_user_blk: Vec<BlkView>,
    /// Unix socket the QEMU TCG plugin connects to.
    pub plugin_socket: Option<PathBuf>,
    /// TCP congestion control of the connections (None: the system's).
    pub tcp_congestion: Option<String>,
}

/// Builds the simulator (files, model) without serving: for tests and tools.
pub fn build(cfg: &ServeConfig) -> Result<Simulator, ServeError> {
    Ok(Simulator::open(
        cfg.topology.as_deref(),
        &cfg.backing_dir,
        cfg.seed,
        cfg.newick.as_deref(),
        cfg.base,
    )?)
}

/// Removes a stale control socket left by a simulator that died; refuses
/// to take over one that still answers.
fn clear_stale_socket(path: &Path) -> Result<(), ServeError> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServeError::SocketInUse {
            path: path.display().to_string(),
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Binds the TCP listener of `serve` and `null-server`.
async fn bind_tcp(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            what: "TCP",
            addr: addr.to_owned(),
            source,
        })
}

/// `cxl-memsim null-server`: the same TCP server answering every request
/// with [`NullResponder`] (status 0, no memory, no model), until SIGINT or
/// SIGTERM. Benchmarks measure the simulator against it in the same run.
pub async fn serve_null(listen: &str, congestion: Option<&str>) -> Result<(), ServeError> {
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let tcp = bind_tcp(listen).await?;
    let listen = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tokio::spawn(crate::server::serve(
        tcp,
        Arc::new(NullResponder),
        congestion.map(Arc::from),
    ));
    println!(
        "{}",
        json!({"event": "ready", "listen": listen, "responder": "null"})
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    println!("{}", json!({"event": "final"}));
    Ok(())
}

/// Serves until SIGINT or SIGTERM, then prints the final report.
pub async fn serve(cfg: &ServeConfig) -> Result<(), ServeError> {
    // Handlers first: a SIGTERM right after the ready line must still give
    // the final report and exit status 0.
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let sim = Arc::new(build(cfg)?);
    let tcp = bind_tcp(&cfg.listen).await?;
    let listen = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    // Bound before the control socket so `ready` means QEMU may connect.
    let hub = match &cfg.plugin_socket {
        Some(path) => {
            clear_stale_socket(path)?;
            let unix = UnixListener::bind(path).map_err(|source| ServeError::Listen {
                what: "plugin socket",
                addr: path.display().to_string(),
                source,
            })?;
            let hub = Arc::new(PluginHub::new(sim.clone()));
            tokio::spawn(crate::plugin::serve(unix, hub.clone()));
            Some(hub)
        }
        None => None,
    };
    if let Some(path) = &cfg.control {
        clear_stale_socket(path)?;
        let unix = UnixListener::bind(path).map_err(|source| ServeError::Listen {
            what: "control socket",
            addr: path.display().to_string(),
            source,
        })?;
        tokio::spawn(crate::control::serve(unix, sim.clone(), hub.clone()));
    }
    let mut sockets = std::collections::HashSet::new();
    for view in &cfg.vhost_user_blk {
        // Binding a second view would unlink the first one's socket.
        if !sockets.insert(&view.socket) {
            return Err(ServeError::SocketTwice {
                path: view.socket.display().to_string(),
            });
        }
    }
    for view in &cfg.vhost_user_blk {
        blk_backend::spawn(sim.clone(), view).map_err(|source| ServeError::Block {
            device: view.device.clone(),
            source,
        })?;
    }
    tokio::spawn(crate::server::serve(
        tcp,
        sim.clone(),
        cfg.tcp_congestion.as_deref().map(Arc::from),
    ));
    let devices: Vec<_> = sim
        .devices()
        .iter()
        .map(|d| json!({"name": d.name, "path": d.path, "size": d.size, "base": sim.base() + d.base}))
        .collect();
    let views: Vec<_> = cfg
        .vhost_user_blk
        .iter()
        .map(|v| json!({"device": v.device, "socket": v.socket, "read_only": v.read_only}))
        .collect();
    println!(
        "{}",
        json!({"event": "ready", "listen": listen, "control": cfg.control, "plugin_socket": cfg.plugin_socket, "devices": devices, "vhost_user_blk": views})
    );

    let mut tick = cfg
        .report_interval
        .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = async { match tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                println!("{}", json!({"event": "report", "stats": full_report(&sim, hub.as_deref(), REPORT_TOP)}));
            }
        }
    }
    sim.flush();
    println!(
        "{}",
        json!({"event": "final", "stats": full_report(&sim, hub.as_deref(), REPORT_TOP)})
    );
    for path in [&cfg.control, &cfg.plugin_socket].into_iter().flatten() {
        let _ = std::fs::remove_file(path);
    }
    for view in &cfg.vhost_user_blk {
        let _ = std::fs::remove_file(&view.socket);
    }
    Ok(())
}
