//! The plugin's arguments: `-plugin libcxl_memsim_plugin.so,socket=PATH[,window=BASE+SIZE…][,armed=on][,batch=N][,flush_ms=N][,learn=on][,audit_ms=N]`.

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
    /// Leave seen instructions out of the instrumentation (off by default:
    /// an instruction left out that later touches CXL memory is not counted).
    pub learn: bool,
    /// How often everything is instrumented again until seen anew (0:
    /// never).
    pub audit_every: Duration,
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
            learn: false,
            audit_every: Duration::from_millis(DEFAULT_AUDIT_MS),
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
        if self.learn {
            w.push("learn=on".into());
        }
        if self.audit_every != Duration::from_millis(DEFAULT_AUDIT_MS) {
            w.push(format!("audit_ms={}", self.audit_every.as_millis()));
        }
        w
    }
}

pub const DEFAULT_BATCH: usize = 1024;
pub const DEFAULT_FLUSH_MS: u64 = 100;
pub const DEFAULT_AUDIT_MS: u64 = 10_000;

/// A plugin argument QEMU would hand the plugin but the plugin refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("The plugin argument '{0}' is not key=value. QEMU splits the -plugin option at commas, so a socket path must not contain one; write e.g. socket=PATH.")]
    NotKeyValue(String),
    #[error("Unknown plugin argument '{0}'; the plugin takes socket, window, armed, batch, flush_ms, learn and audit_ms.")]
    Unknown(String),
    #[error(
        "The plugin argument {key}={value} is not a number; write a count, e.g. {key}={example}."
    )]
    NotANumber {
        key: &'static str,
        value: String,
        example: u64,
    },
    #[error(
        "The plugin argument {key}={value} is neither on nor off; write {key}=on or {key}=off."
    )]
    OnOff { key: &'static str, value: String },
    #[error("The plugin argument window={value} is not a window ({reason}); write window=BASE+SIZE, e.g. window=0x110000000+0x100000000.")]
    Window { value: String, reason: String },
    #[error("The plugin needs socket=PATH, the simulator's plugin socket (cxl-memsim serve --plugin-socket PATH).")]
    NoSocket,
    #[error(
        "The plugin watches at most {MAX_WINDOWS} windows and got {0}; merge adjacent windows."
    )]
    TooManyWindows(usize),
    #[error("armed=on needs at least one window=BASE+SIZE to watch; add one or leave armed off and send `plugin arm` later.")]
    ArmedWithoutWindow,
}

/// Parses the `key=value` words QEMU hands the plugin. QEMU splits the
/// option at commas, so a socket path must not contain one.
pub fn parse(raw: &[String]) -> Result<Args, ArgsError> {
    let mut socket = None;
    let mut windows = Vec::new();
    let mut armed = false;
    let mut batch = DEFAULT_BATCH;
    let mut flush_ms = DEFAULT_FLUSH_MS;
    let mut learn = false;
    let mut audit_ms = DEFAULT_AUDIT_MS;
    for a in raw {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| ArgsError::NotKeyValue(a.clone()))?;
        let on_off = |key: &'static str| match v {
            "on" | "true" | "yes" => Ok(true),
            "off" | "false" | "no" => Ok(false),
            _ => Err(ArgsError::OnOff {
                key,
                value: v.to_owned(),
            }),
        };
        let number = |key: &'static str, example: u64| {
            v.parse::<u64>().map_err(|_| ArgsError::NotANumber {
                key,
                value: v.to_owned(),
                example,
            })
        };
        match k {
            "socket" => socket = Some(PathBuf::from(v)),
            "window" => windows.push(Window::parse(v).map_err(|reason| ArgsError::Window {
                value: v.to_owned(),
                reason,
            })?),
            "armed" => armed = on_off("armed")?,
            "learn" => learn = on_off("learn")?,
            "audit_ms" => audit_ms = number("audit_ms", DEFAULT_AUDIT_MS)?,
            "batch" => {
                batch = number("batch", DEFAULT_BATCH as u64)?
                    .clamp(1, u64::from(crate::MAX_RECORDS)) as usize
            }
            "flush_ms" => flush_ms = number("flush_ms", DEFAULT_FLUSH_MS)?.max(1),
            _ => return Err(ArgsError::Unknown(k.to_owned())),
        }
    }
    let socket = socket.ok_or(ArgsError::NoSocket)?;
    if windows.len() > MAX_WINDOWS {
        return Err(ArgsError::TooManyWindows(windows.len()));
    }
    if armed && windows.is_empty() {
        return Err(ArgsError::ArmedWithoutWindow);
    }
    Ok(Args {
        socket,
        windows,
        armed,
        batch,
        flush_every: Duration::from_millis(flush_ms),
        learn,
        audit_every: Duration::from_millis(audit_ms),
    })
}

/// Parses the value of QEMU's `-plugin` option, `LIBRARY[,key=value…]`,
/// into the arguments the plugin will get, as QEMU splits it (at every
/// comma): what a launcher checks before it starts QEMU. A bare word (QEMU
/// reads it as `word=on`, a deprecated short form) is refused.
pub fn parse_option(option: &str) -> Result<Args, ArgsError> {
    let words: Vec<String> = option.split(',').skip(1).map(str::to_owned).collect();
    parse(&words)
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
        assert!(!a.learn, "learning is off by default: counts are exact");
        assert_eq!(parse(&a.to_words()).unwrap(), a);
        let a = parse(&words("socket=/s,learn=on,audit_ms=0")).unwrap();
        assert!(a.learn);
        assert_eq!(a.audit_every, Duration::ZERO);
        assert_eq!(a.to_words(), ["socket=/s", "learn=on", "audit_ms=0"]);
        assert_eq!(parse(&a.to_words()).unwrap(), a);
    }

    #[test]
    fn says_what_is_wrong_and_how_to_fix_it() {
        let e = |s: &str| parse(&words(s)).unwrap_err();
        assert_eq!(e("window=0x1000+0x10"), ArgsError::NoSocket);
        assert_eq!(e("socket=/s,armed=on"), ArgsError::ArmedWithoutWindow);
        assert_eq!(e("socket=/s,speed=9"), ArgsError::Unknown("speed".into()));
        assert_eq!(
            e("socket=/s,armed=maybe"),
            ArgsError::OnOff {
                key: "armed",
                value: "maybe".into()
            }
        );
        assert_eq!(
            e("socket=/s,learn=1"),
            ArgsError::OnOff {
                key: "learn",
                value: "1".into()
            }
        );
        assert_eq!(
            e("socket=/s,verbose"),
            ArgsError::NotKeyValue("verbose".into())
        );
        let msg = e("socket=/s,batch=many").to_string();
        assert!(msg.contains("batch=many is not a number"), "{msg}");
        assert!(msg.contains("e.g. batch=1024"), "{msg}");
        let msg = e("socket=/s,window=12").to_string();
        assert!(msg.contains("window=12 is not a window"), "{msg}");
        assert!(msg.contains("write window=BASE+SIZE"), "{msg}");
        let nine = (0..9)
            .map(|i| format!(",window={}+1", i * 2))
            .collect::<String>();
        assert_eq!(e(&format!("socket=/s{nine}")), ArgsError::TooManyWindows(9));
    }

    #[test]
    fn a_plugin_option_is_split_as_qemu_splits_it() {
        let a = parse_option("/lib/libcxl_memsim_plugin.so,socket=/run/x/plugin.sock").unwrap();
        assert_eq!(a, Args::new("/run/x/plugin.sock".into()));
        // A comma in the socket path becomes an argument of its own.
        let e = parse_option("/lib/p.so,socket=/run/a,b/plugin.sock").unwrap_err();
        assert_eq!(e, ArgsError::NotKeyValue("b/plugin.sock".into()));
        assert!(e.to_string().contains("must not contain one"), "{e}");
        assert_eq!(parse_option("/lib/p.so"), Err(ArgsError::NoSocket));
    }
}
