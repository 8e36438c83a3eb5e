//! `cxl-memsim serve | stats | plugin | null-server | client`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cxl_memsim::blk_backend::BlkView;
use cxl_memsim::client::{parse_size, ClientConfig};
use cxl_memsim::serve::ServeConfig;
use cxl_memsim::server::{congestion, congestion_arg, DEFAULT_CONGESTION};

#[derive(Parser)]
#[command(
    version,
    about = "CXL memory simulator: backing memory, deterministic model, CXLMemSim-compatible TCP server"
)]
struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Create/open the backing files, then serve TCP and the control socket.
    Serve {
        /// Topology TOML (the lab's format); the embedded default when absent.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Where the devices' backing files live (`<device>.mem`).
        #[arg(long, default_value = ".")]
        backing_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:9999")]
        listen: String,
        /// Unix control socket for `cxl-memsim stats`.
        #[arg(long)]
        control: Option<PathBuf>,
        /// Seed of the model's jitter (default: the topology's).
        #[arg(long)]
        seed: Option<u64>,
        /// Address of the first device on the wire (e.g. the CXL window's
        /// host physical address); 0 = flat offsets.
        #[arg(long, default_value = "0", value_parser = parse_size)]
        base: u64,
        /// CXLMemSim Newick topology for link latencies, e.g. "(CPU:0,(CXL:100));".
        #[arg(long)]
        newick: Option<String>,
        /// Print a stats line every N seconds.
        #[arg(long)]
        report_interval: Option<u64>,
        /// Serve DEVICE's memory as a vhost-user-blk disk on the Unix socket
        /// SOCKET_PATH (repeatable).
        #[arg(long = "vhost-user-blk", value_name = "DEVICE=SOCKET_PATH", value_parser = |s: &str| BlkView::parse(s, false))]
        vhost_user_blk: Vec<BlkView>,
        /// Like --vhost-user-blk, read-only: writes fail with VIRTIO_BLK_S_IOERR.
        #[arg(long = "vhost-user-blk-ro", value_name = "DEVICE=SOCKET_PATH", value_parser = |s: &str| BlkView::parse(s, true))]
        vhost_user_blk_ro: Vec<BlkView>,
        /// Unix socket for QEMU's TCG plugin (libcxl_memsim_plugin.so),
        /// whose guest accesses are charged to the model and the stats.
        #[arg(long)]
        plugin_socket: Option<PathBuf>,
        /// TCP congestion control of the connections, or `system`.
        #[arg(long, default_value = DEFAULT_CONGESTION, value_parser = congestion_arg)]
        tcp_congestion: String,
    },
    /// Print a running simulator's stats.
    Stats {
        #[arg(long)]
        control: PathBuf,
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// Drive the TCG plugin through a running simulator: show its counters,
    /// map devices to guest physical addresses, arm, disarm or flush it.
    Plugin {
        #[arg(long)]
        control: PathBuf,
        /// Nothing (counters), `map NAME=ADDR…`, `arm BASE+SIZE…`, `disarm`, `flush` or `stall off|[local=COST] [BASE+SIZE=COST…]` (COST: READ_PS/WRITE_PS/PS_PER_BYTE).
        command: Vec<String>,
    },
    /// A TCP server that answers every request with status 0 and touches
    /// no memory and no model: the transport floor benchmarks compare
    /// `serve` against.
    NullServer {
        #[arg(long, default_value = "127.0.0.1:9998")]
        listen: String,
        /// TCP congestion control of the connections, or `system`.
        #[arg(long, default_value = DEFAULT_CONGESTION, value_parser = congestion_arg)]
        tcp_congestion: String,
    },
    /// Load generator for any CXLMemSim-protocol server.
    Client {
        #[command(flatten)]
        load: ClientConfig,
        #[arg(long)]
        json: bool,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CXL_MEMSIM_LOG"))
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().verb {
        Verb::Serve {
            topology,
            backing_dir,
            listen,
            control,
            seed,
            base,
            newick,
            report_interval,
            vhost_user_blk,
            vhost_user_blk_ro,
            plugin_socket,
            tcp_congestion,
        } => {
            let cfg = ServeConfig {
                topology,
                backing_dir,
                listen,
                control,
                seed,
                base,
                newick,
                report_interval: report_interval.map(Duration::from_secs),
                vhost_user_blk: vhost_user_blk
                    .into_iter()
                    .chain(vhost_user_blk_ro)
                    .collect(),
                plugin_socket,
                tcp_congestion: congestion(&tcp_congestion).map(str::to_owned),
            };
            runtime()?
                .block_on(cxl_memsim::serve::serve(&cfg))
                .context("cxl-memsim serve failed")?;
        }
        Verb::Stats { control, top, json } => {
            let v = runtime()?
                .block_on(cxl_memsim::control::query_stats(&control, top))
                .context("cannot read the simulator's stats")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", cxl_memsim::control::stats_text(&v));
            }
        }
        Verb::Plugin { control, command } => {
            let line = std::iter::once("plugin".to_owned())
                .chain(command)
                .collect::<Vec<_>>()
                .join(" ");
            let v = runtime()?
                .block_on(cxl_memsim::control::request(&control, &line))
                .context("cannot reach the simulator's control socket")?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                anyhow::bail!("{e}");
            }
        }
        Verb::NullServer {
            listen,
            tcp_congestion,
        } => {
            runtime()?
                .block_on(cxl_memsim::serve::serve_null(
                    &listen,
                    congestion(&tcp_congestion),
                ))
                .context("cxl-memsim null-server failed")?;
        }
        Verb::Client { load: cfg, json } => {
            let r = cxl_memsim::client::run(&cfg).context("the load run failed")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{r}");
            }
        }
    }
    Ok(())
}
