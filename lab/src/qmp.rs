//! QMP: the QEMU monitor protocol, through the `qapi` crate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;

/// Errors talking to QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("Cannot connect to QMP at {path}; is QEMU running?")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// QEMU answered the command with an error; the source is QEMU's
    /// text (kept once: `qapi::ExecuteError` would print it twice, as its
    /// message and again as its source).
    #[error("QEMU refused {command}")]
    Refused {
        command: &'static str,
        #[source]
        source: qapi::Error,
    },
    #[error("The QMP connection failed during {command}.")]
    Io {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP did not answer {command} within {timeout:?}.")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },
}

impl QmpError {
    /// A command's failure: QEMU's refusal, or the connection's.
    fn failed(command: &'static str, e: qapi::ExecuteError) -> QmpError {
        match e {
            qapi::ExecuteError::Qapi(source) => QmpError::Refused { command, source },
            qapi::ExecuteError::Io(source) => QmpError::Io { command, source },
        }
    }
}

type Service = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// A negotiated QMP connection.
pub struct Qmp {
    service: Service,
    _events: tokio::task::JoinHandle<()>,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl Qmp {
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let err = |source| QmpError::Connect {
            path: path.to_owned(),
            source,
        };
        let neg = tokio::time::timeout(TIMEOUT, QmpStreamTokio::open_uds(path))
            .await
            .map_err(|_| err(std::io::ErrorKind::TimedOut.into()))?
            .map_err(err)?;
        let stream = tokio::time::timeout(TIMEOUT, neg.negotiate())
            .await
            .map_err(|_| err(std::io::ErrorKind::TimedOut.into()))?
            .map_err(err)?;
        let (service, events) = stream.into_parts();
        let events = events.spawn_tokio();
        Ok(Qmp {
            service,
            _events: events,
        })
    }

    /// `query-status`: e.g. "running".
    pub async fn status(&self) -> Result<String, QmpError> {
        let info = tokio::time::timeout(TIMEOUT, self.service.execute(qmp::query_status {}))
            .await
            .map_err(|_| QmpError::Timeout {
                command: "query-status",
                timeout: TIMEOUT,
            })?
            .map_err(|e| QmpError::failed("query-status", e))?;
        Ok(serde_json::to_value(info.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default())
    }

    /// Any typed QMP command; QEMU's refusal is [`QmpError::Refused`] with
    /// the command's name.
    pub async fn execute<C>(&self, command: C) -> Result<C::Ok, QmpError>
    where
        C: qmp::QmpCommand,
    {
        let name = <C as qapi::Command>::NAME;
        tokio::time::timeout(TIMEOUT, self.service.execute(command))
            .await
            .map_err(|_| QmpError::Timeout {
                command: name,
                timeout: TIMEOUT,
            })?
            .map_err(|e| QmpError::failed(name, e))
    }

    /// `quit`: QEMU exits; the connection closing is the expected answer.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match tokio::time::timeout(TIMEOUT, self.service.execute(qmp::quit {})).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(qapi::ExecuteError::Io(_))) => Ok(()),
            Ok(Err(e)) => Err(QmpError::failed("quit", e)),
            Err(_) => Err(QmpError::Timeout {
                command: "quit",
                timeout: TIMEOUT,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message and its sources, one per line.
    fn chain(e: &QmpError) -> Vec<String> {
        std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_refusal_reads_qemus_text_once() {
        let e = QmpError::failed(
            "cxl-add-dynamic-capacity",
            qapi::ExecuteError::Qapi(qapi::Error {
                class: qapi::ErrorClass::GenericError,
                desc: "cannot add DPA again while still pending".into(),
                id: None,
            }),
        );
        assert_eq!(
            chain(&e),
            [
                "QEMU refused cxl-add-dynamic-capacity",
                "cannot add DPA again while still pending"
            ]
        );
        let e = QmpError::failed(
            "quit",
            qapi::ExecuteError::Io(std::io::Error::other("broken pipe")),
        );
        assert_eq!(
            chain(&e),
            ["The QMP connection failed during quit.", "broken pipe"]
        );
    }
}
