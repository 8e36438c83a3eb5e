//! The TCP server (CXLMemSim's protocol): many connections; requests on a
//! connection may be pipelined and are answered in order; responses are
//! batched: every read's whole frames are served under one lock and
//! answered with one write; TCP_NODELAY.
//!
//! Accepting is async (tokio); each connection then gets a thread of its own
//! with a blocking socket that busy-polls briefly before sleeping
//! ([`crate::busy_poll`]): a request stream is served without a scheduler
//! hop or a sleeping-thread wake-up per request.
//!
//! What answers the frames is a [`Responder`]: the [`Simulator`], or
//! [`NullResponder`], which answers without touching memory or the model
//! and so measures the transport alone (`cxl-memsim null-server`, the
//! baseline of `vhost/bench.sh`).

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::busy_poll;
use crate::protocol::{Response, Status, REQUEST_SIZE};
use crate::simulator::Simulator;

/// Answers whole request frames: one response frame each, in order.
pub trait Responder: Send + Sync + 'static {
    fn answer(&self, requests: &[u8], responses: &mut Vec<u8>);
}

impl Responder for Simulator {
    fn answer(&self, requests: &[u8], responses: &mut Vec<u8>) {
        self.handle_frames(requests, responses);
    }
}

/// Answers every frame with status 0, latency 0 and no data, touching no
/// memory and no model: what a request costs on the wire and in this
/// server's loop, the floor a benchmark compares the simulator against.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullResponder;

impl Responder for NullResponder {
    fn answer(&self, requests: &[u8], responses: &mut Vec<u8>) {
        let ok = Response::new(Status::Ok, 0, [0; 64]).encode();
        for _ in requests.chunks_exact(REQUEST_SIZE) {
            responses.extend_from_slice(&ok);
        }
    }
}

/// Accepts connections forever.
pub async fn serve<R: Responder>(listener: TcpListener, responder: Arc<R>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let stream = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, "cannot take over the connection: {e}");
                continue;
            }
        };
        let responder = responder.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tcp {peer}"))
            .spawn(move || {
                if let Err(e) = connection(stream, &*responder) {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(%peer, "cannot start a thread for the connection: {e}");
        }
    }
}

/// Serves one connection until the peer closes it or sends a short frame.
/// Every complete frame already received is served in one batch and the
/// responses go out in one write.
pub fn connection(mut stream: TcpStream, responder: &impl Responder) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut inbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut outbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = busy_poll::read(&mut stream, &mut chunk, busy_poll::SPIN)?;
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
        responder.answer(&inbuf[..whole], &mut outbuf);
        inbuf.drain(..whole);
        stream.write_all(&outbuf)?;
    }
}
