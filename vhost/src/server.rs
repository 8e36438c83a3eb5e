//! The TCP server (CXLMemSim's protocol): many connections; requests on a
//! connection may be pipelined and are answered in order; responses are
//! batched: every read's whole frames are served under one lock and
//! answered with one write; TCP_NODELAY.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::REQUEST_SIZE;
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
/// Every complete frame already received is served in one batch and the
/// responses go out in one write.
pub async fn connection(stream: TcpStream, sim: Arc<Simulator>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut stream = stream;
    let mut inbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut outbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            // A trailing partial frame is dropped with the connection.
            return Ok(());
        }
        inbuf.extend_from_slice(&chunk[..n]);
        let whole = inbuf.len() / REQUEST_SIZE * REQUEST_SIZE;
        if whole == 0 {
            continue;
        }
        outbuf.clear();
        sim.handle_frames(&inbuf[..whole], &mut outbuf);
        inbuf.drain(..whole);
        stream.write_all(&outbuf).await?;
    }
}
