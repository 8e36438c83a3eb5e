//! The client of the simulator's Unix control socket (feature `control`):
//! one command line out, one JSON line back. `cxl-memsim stats|plugin` and
//! the lab's timing mode use it; the plugin (feature off) does not pull in
//! tokio.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Errors talking to the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("Cannot connect to the control socket {path}; is cxl-memsim serve running?")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The control socket {path} closed or sent something unreadable.")]
    Protocol {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Sends one command line and returns the JSON answer (a refusal is an
/// answer too: `{"error": …}`).
pub async fn request(path: &Path, line: &str) -> Result<serde_json::Value, ControlError> {
    let protocol = |source| ControlError::Protocol {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(protocol)?;
    let mut answer = String::new();
    BufReader::new(r)
        .read_line(&mut answer)
        .await
        .map_err(protocol)?;
    serde_json::from_str(&answer).map_err(|e| protocol(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_line_out_and_a_json_line_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        runtime().block_on(async {
            let listener = UnixListener::bind(&path).expect("bind");
            let server = tokio::spawn(async move {
                let (s, _) = listener.accept().await.expect("accept");
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                BufReader::new(r).read_line(&mut line).await.expect("read");
                w.write_all(format!("{{\"got\":{:?}}}\n", line.trim()).as_bytes())
                    .await
                    .expect("write");
            });
            let v = request(&path, "stats 3").await.expect("answer");
            assert_eq!(v["got"], "stats 3");
            server.await.expect("server");
        });
    }

    #[test]
    fn no_socket_and_a_garbled_answer_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        runtime().block_on(async {
            let e = request(&path, "stats").await.unwrap_err();
            assert!(matches!(e, ControlError::Connect { .. }), "{e}");
            assert!(
                e.to_string().contains("is cxl-memsim serve running?"),
                "{e}"
            );
            let listener = UnixListener::bind(&path).expect("bind");
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.expect("accept");
                s.write_all(b"not json\n").await.expect("write");
            });
            let e = request(&path, "stats").await.unwrap_err();
            assert!(matches!(e, ControlError::Protocol { .. }), "{e}");
            server.await.expect("server");
        });
    }
}
