//! The Unix control socket: `stats` returns the stats report as one JSON
//! line. `cxl-memsim stats --control SOCK` is its client.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::simulator::Simulator;

/// Errors of the control client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("Cannot connect to the control socket {path}; is cxl-memsim serve running?")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("The control socket closed or sent something unreadable.")]
    Protocol(#[source] std::io::Error),
}

/// Serves control connections forever.
pub async fn serve(listener: UnixListener, sim: Arc<Simulator>) {
    while let Ok((stream, _)) = listener.accept().await {
        let sim = sim.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.split_whitespace();
                let reply = match words.next() {
                    Some("stats") => {
                        let top = words.next().and_then(|t| t.parse().ok()).unwrap_or(10);
                        serde_json::to_string(&sim.report(top)).expect("report serialises")
                    }
                    _ => serde_json::json!({"error": format!("unknown command '{line}'; try 'stats [TOP]'")}).to_string(),
                };
                if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Asks a running simulator for its stats.
pub async fn query_stats(path: &Path, top: usize) -> Result<serde_json::Value, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("stats {top}\n").as_bytes())
        .await
        .map_err(ControlError::Protocol)?;
    let mut line = String::new();
    BufReader::new(r)
        .read_line(&mut line)
        .await
        .map_err(ControlError::Protocol)?;
    serde_json::from_str(&line).map_err(|e| ControlError::Protocol(e.into()))
}
