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
//! Connections use the Reno congestion control (`--tcp-congestion`, the
//! system's default with `system`): on a loopback or LAN request stream the
//! window never matters, and Reno's per-ACK work is smaller than BBR's, the
//! usual default; measured +2 to +5 % unpipelined requests per second on
//! loopback (vhost/README.md, Benchmark).
//!
//! What answers the frames is a [`Responder`]: the [`Simulator`], or
//! [`NullResponder`], which answers without touching memory or the model
//! and so measures the transport alone (`cxl-memsim null-server`, the
//! baseline of `vhost/bench.sh`).

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
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

/// The congestion control `serve` and `client` ask for unless told otherwise.
pub const DEFAULT_CONGESTION: &str = "reno";

/// Checks a `--tcp-congestion` value: an algorithm name, or `system`.
pub fn congestion_arg(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err("give an algorithm name (e.g. reno, cubic) or `system`".into());
    }
    Ok(s.to_owned())
}

/// The algorithm a `--tcp-congestion` value asks for; None for `system`.
pub fn congestion(arg: &str) -> Option<&str> {
    (arg != "system").then_some(arg)
}

/// Sets the socket's TCP congestion control algorithm.
pub fn set_congestion(stream: &TcpStream, name: &str) -> std::io::Result<()> {
    // SAFETY: the fd is borrowed from `stream`, so it is open for the call;
    // the kernel reads `optlen` bytes of the name (no trailing NUL needed)
    // from `name`, which is valid for name.len() bytes.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Applies `congestion` to a new connection; a kernel without the
/// algorithm (or one that does not allow it) leaves the system's, with a
/// warning, rather than refusing the peer.
pub fn apply_congestion(stream: &TcpStream, congestion: Option<&str>) {
    if let Some(name) = congestion {
        if let Err(e) = set_congestion(stream, name) {
            tracing::warn!(
                "cannot use TCP congestion control {name} ({e}); the connection keeps the system's (see /proc/sys/net/ipv4/tcp_allowed_congestion_control)"
            );
        }
    }
}

/// Accepts connections forever; each uses `congestion` (None: the
/// system's).
pub async fn serve<R: Responder>(
    listener: TcpListener,
    responder: Arc<R>,
    congestion: Option<Arc<str>>,
) {
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
        apply_congestion(&stream, congestion.as_deref());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn congestion_of(s: &TcpStream) -> String {
        let mut buf = [0u8; 16];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: the fd is borrowed from `s`, so it is open for the call;
        // the kernel writes at most `len` (buf's size) bytes into buf and
        // the written length into len, both live locals.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let b = &buf[..len as usize];
        String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]).into()
    }

    #[test]
    fn connections_get_the_congestion_control_asked_for() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let system = congestion_of(&c);
        apply_congestion(&c, congestion("system"));
        assert_eq!(congestion_of(&c), system, "`system` keeps the default");
        apply_congestion(&c, congestion(DEFAULT_CONGESTION));
        assert_eq!(congestion_of(&c), "reno");
        // An algorithm the kernel lacks: an error, and the socket is kept.
        assert!(set_congestion(&c, "no-such-cc").is_err());
        assert_eq!(congestion_of(&c), "reno");
        assert!(congestion_arg("").is_err());
        assert_eq!(congestion_arg("cubic").unwrap(), "cubic");
    }
}
