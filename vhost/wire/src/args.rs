//! The plugin's arguments: `-plugin libcxl_memsim_plugin.so,socket=PATH[,window=BASE+SIZE…][,armed=on][,batch=N][,flush_ms=N]`.

use std::path::PathBuf;
use std::time::Duration;

use crate::Window;

/// At most this many windows are watched (each costs a compare per access).
pub const MAX_WINDOWS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The simulator's plugin socket.
    pub socket: PathBuf,
    /// Watched from the start when `armed`; `arm` commands replace them.
    pub windows: Vec<Window>,
    /// Instrument from the start instead of waiting for `arm`.
    pub armed: bool,
    /// Records per vCPU buffered before a send.
    pub batch: usize,
    /// How often partly filled buffers are sent anyway.
    pub flush_every: Duration,
}

impl Args {
    /// Disarmed, default batching: what the lab passes.
    pub fn new(socket: PathBuf) -> Args {
        Args {
            socket,
            windows: Vec::new(),
            armed: false,
            batch: DEFAULT_BATCH,
            flush_every: Duration::from_millis(DEFAULT_FLUSH_MS),
        }
    }

    /// The `key=value` words QEMU's `-plugin` option takes after the path.
    pub fn to_words(&self) -> Vec<String> {
        let mut w = vec![format!("socket={}", self.socket.display())];
        w.extend(self.windows.iter().map(|x| format!("window={x}")));
        if self.armed {
            w.push("armed=on".into());
        }
        if self.batch != DEFAULT_BATCH {
            w.push(format!("batch={}", self.batch));
        }
        if self.flush_every != Duration::from_millis(DEFAULT_FLUSH_MS) {
            w.push(format!("flush_ms={}", self.flush_every.as_millis()));
        }
        w
    }
}

pub const DEFAULT_BATCH: usize = 1024;
pub const DEFAULT_FLUSH_MS: u64 = 100;

/// Parses the `key=value` words QEMU hands the plugin. QEMU splits the
/// option at commas, so a socket path must not contain one.
pub fn parse(raw: &[String]) -> Result<Args, String> {
    let mut socket = None;
    let mut windows = Vec::new();
    let mut armed = false;
    let mut batch = DEFAULT_BATCH;
    let mut flush_ms = DEFAULT_FLUSH_MS;
    for a in raw {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("argument '{a}' is not key=value"))?;
        let number = |what: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{what}={v} is not a number"))
        };
        match k {
            "socket" => socket = Some(PathBuf::from(v)),
            "window" => windows.push(Window::parse(v)?),
            "armed" => {
                armed = match v {
                    "on" | "true" | "yes" => true,
                    "off" | "false" | "no" => false,
                    _ => return Err(format!("armed={v}: say on or off")),
                }
            }
            "batch" => batch = number("batch")?.clamp(1, u64::from(crate::MAX_RECORDS)) as usize,
            "flush_ms" => flush_ms = number("flush_ms")?.max(1),
            _ => {
                return Err(format!(
                    "unknown argument '{k}'; known: socket, window, armed, batch, flush_ms"
                ))
            }
        }
    }
    let socket = socket.ok_or("socket=PATH (the simulator's plugin socket) is required")?;
    if windows.len() > MAX_WINDOWS {
        return Err(format!("at most {MAX_WINDOWS} windows"));
    }
    if armed && windows.is_empty() {
        return Err("armed=on needs at least one window=BASE+SIZE".into());
    }
    Ok(Args {
        socket,
        windows,
        armed,
        batch,
        flush_every: Duration::from_millis(flush_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn parses_and_formats_the_arguments() {
        let a = parse(&words("socket=/r/plugin.sock")).unwrap();
        assert_eq!(a, Args::new("/r/plugin.sock".into()));
        assert_eq!(a.to_words(), ["socket=/r/plugin.sock"]);
        let a = parse(&words(
            "socket=/s,window=0x110000000+0x10000000,window=0x200000000+4096,armed=on,batch=64,flush_ms=5",
        ))
        .unwrap();
        assert!(a.armed);
        assert_eq!(a.windows.len(), 2);
        assert_eq!(a.batch, 64);
        assert_eq!(a.flush_every, Duration::from_millis(5));
        assert_eq!(parse(&a.to_words()).unwrap(), a);
    }

    #[test]
    fn says_what_is_wrong() {
        let e = |s: &str| parse(&words(s)).unwrap_err();
        assert!(e("window=0x1000+0x10").contains("socket=PATH"));
        assert!(e("socket=/s,armed=on").contains("needs at least one window"));
        assert!(e("socket=/s,speed=9").contains("unknown argument 'speed'"));
        assert!(e("socket=/s,batch=many").contains("batch=many is not a number"));
        assert!(e("socket=/s,window=12").contains("BASE+SIZE"));
        assert!(e("socket=/s,armed=maybe").contains("on or off"));
    }
}
