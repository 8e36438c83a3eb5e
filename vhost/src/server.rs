//! The TCP server (CXLMemSim's protocol): many connections; requests on a
//! connection may be pipelined and are answered in order; responses are
//! batched and flushed when no more input is buffered; TCP_NODELAY.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::{Request, REQUEST_SIZE};
use crate::simulator::Simulator;

/// Accepts connections forever.
pub async fn serve(listener: TcpListener, sim: Arc<Simulator>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let sim = sim.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, sim).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            Err(e) => tracing::warn!("accept failed: {e}"),
        }
    }
}

/// Serves one connection until the peer closes it or sends a short frame.
pub async fn connection(stream: TcpStream, sim: Arc<Simulator>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let mut frame = [0u8; REQUEST_SIZE];
    loop {
        match r.read_exact(&mut frame).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                w.flush().await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let resp = sim.handle(&Request::decode(&frame));
        w.write_all(&resp.encode()).await?;
        if r.buffer().is_empty() {
            w.flush().await?;
        }
    }
}
