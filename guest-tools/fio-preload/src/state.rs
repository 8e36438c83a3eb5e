//! The process-wide state set up by the load-time constructor: configuration,
//! the mapped window, the slot table, the dirty bitmaps, and call counters.

use core::cell::UnsafeCell;
use core::ffi::c_char;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::config::{Config, DEFAULT_PATTERN};
use crate::counters::{Call, Counters};
use crate::dirty::Dirty;
use crate::errno;
use crate::fio_files::FioFiles;
use crate::log::{say, Bytes, Line};
use crate::path::AbsPath;
use crate::table::{SlotTable, MAX_SLOTS};
use crate::window::Window;

const UNINIT: u8 = 0;
const DISABLED: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

static STATUS: AtomicU8 = AtomicU8::new(UNINIT);
/// The process that ran the constructor (it prints the counters at exit).
static INIT_PID: AtomicU32 = AtomicU32::new(0);

/// Everything set once by `init` before STATUS is published.
struct Globals {
    config: Config,
    fio_files: FioFiles,
    window: Option<Window>,
    dirty: Option<Dirty>,
    table: Option<&'static SlotTable>,
    failure: Line,
}

struct Cell(UnsafeCell<Globals>);
// SAFETY: written only by `init` (single-threaded, before main) and read
// only after STATUS says it is complete.
unsafe impl Sync for Cell {}

static G: Cell = Cell(UnsafeCell::new(Globals {
    config: Config::empty(),
    fio_files: FioFiles::empty(),
    window: None,
    dirty: None,
    table: None,
    failure: Line::empty(),
}));

fn globals() -> &'static Globals {
    // SAFETY: see `Cell`.
    unsafe { &*G.0.get() }
}

/// Reads the environment and maps the window. Called from `.init_array`.
pub fn init() {
    if STATUS.load(Ordering::Acquire) != UNINIT {
        return;
    }
    // SAFETY: constructors run once, before main and before other threads.
    let g = unsafe { &mut *G.0.get() };
    let saved = errno::get();
    let status = match setup(g) {
        Ok(true) => READY,
        Ok(false) => DISABLED,
        Err(()) => FAILED,
    };
    INIT_PID.store(std::process::id(), Ordering::Relaxed);
    STATUS.store(status, Ordering::Release);
    errno::set(saved);
    if g.config.debug > 0 {
        match status {
            READY => {
                let w = g.window.as_ref().expect("window set when ready");
                say!(
                    "pid {}: enabled: device {} ({}, {:#x} bytes), window offset {:#x} size {:#x}, {} slot(s) of {:#x} bytes, mapping {}, flush {}",
                    std::process::id(),
                    Bytes(g.config.device()),
                    w.backing,
                    w.device_size,
                    g.config.mem_offset,
                    w.len,
                    w.slots,
                    w.file_size,
                    if w.map_sync { "MAP_SHARED_VALIDATE|MAP_SYNC" } else { "MAP_SHARED (MAP_SYNC not supported here)" },
                    w.flush.name(),
                );
            }
            DISABLED => say!("disabled (FIO_INTERCEPT_ENABLE is not 1); every call passes through"),
            _ => say!("setup failed: {}", Bytes(g.failure.as_bytes())),
        }
        if status != DISABLED {
            let mut claims = Line::empty();
            let _ = describe_claims(g, &mut claims);
            say!("claims {}", Bytes(claims.as_bytes()));
        }
    }
}

/// What `claims` claims, e.g. `'*.cxl', FIO_INTERCEPT_PATTERN unset, fio's
/// data files test.N.M in /home/u`.
fn describe_claims(g: &Globals, out: &mut Line) -> core::fmt::Result {
    write!(out, "'{}', ", Bytes(DEFAULT_PATTERN))?;
    match g.config.pattern() {
        b"" => write!(out, "FIO_INTERCEPT_PATTERN unset")?,
        p => write!(out, "FIO_INTERCEPT_PATTERN '{}'", Bytes(p))?,
    }
    write!(out, ", fio's data files ")?;
    g.fio_files.describe(out)
}

fn setup(g: &mut Globals) -> Result<bool, ()> {
    let loaded = g.config.load();
    if !g.config.enabled {
        if let Err(e) = loaded {
            let _ = write!(g.failure, "{e}");
        }
        return Ok(false);
    }
    // Learnt even when the rest of the setup fails, so that fio's data files
    // are refused loudly instead of being written to the disk.
    if let Err(e) = g.fio_files.learn(g.config.device()) {
        say!("{e}");
    }
    if let Err(e) = loaded {
        let _ = write!(g.failure, "{e}");
        return Err(());
    }
    let window = Window::map(&g.config, MAX_SLOTS as u64).map_err(|e| {
        let _ = write!(
            g.failure,
            "{e} (FIO_MEM_DEVICE={})",
            Bytes(g.config.device())
        );
    })?;
    let dirty = Dirty::new(window.len).map_err(|e| {
        let _ = write!(
            g.failure,
            "Cannot map the dirty-line bitmap: {}.",
            crate::log::ErrnoText(e)
        );
    })?;
    let table = SlotTable::new().map_err(|e| {
        let _ = write!(
            g.failure,
            "Cannot map the slot table: {}.",
            crate::log::ErrnoText(e)
        );
    })?;
    g.window = Some(window);
    g.dirty = Some(dirty);
    g.table = Some(table);
    Ok(true)
}

/// Whether interception is on (READY or FAILED: a failed setup still claims
/// matching paths so that they fail loudly instead of reaching the disk).
#[inline]
pub fn active() -> bool {
    matches!(STATUS.load(Ordering::Acquire), READY | FAILED)
}

pub fn debug() -> u8 {
    if STATUS.load(Ordering::Acquire) == UNINIT {
        0
    } else {
        globals().config.debug
    }
}

pub fn mem_offset() -> u64 {
    globals().config.mem_offset
}

/// Whether interception claims the absolute, normalised path `abs`: it
/// matches `*.cxl` or `FIO_INTERCEPT_PATTERN`, or it is one of fio's data
/// files (`crate::fio_files`).
pub fn claims(abs: &AbsPath) -> bool {
    let g = globals();
    let pattern = g.config.pattern();
    abs.matches(DEFAULT_PATTERN)
        || (!pattern.is_empty() && abs.matches(pattern))
        || g.fio_files.claims(abs.as_bytes())
}

/// The window, slot table and dirty bitmaps, or the setup failure text.
pub fn ready() -> Result<(&'static Window, &'static SlotTable, &'static Dirty), &'static [u8]> {
    let g = globals();
    match (STATUS.load(Ordering::Acquire), &g.window, g.table, &g.dirty) {
        (READY, Some(w), Some(t), Some(d)) => Ok((w, t, d)),
        _ => Err(g.failure.as_bytes()),
    }
}

/// Counters live in the shared slot table so the process that loaded the
/// library also sees the calls of its forked fio jobs.
fn counters() -> Option<&'static Counters> {
    ready().ok().map(|(_, t, _)| t.counters())
}

/// Counts one intercepted call (only when FIO_DEBUG is set).
#[inline]
pub fn count(call: Call, name: &str, fd: i32) {
    let d = debug();
    if d > 0 {
        if let Some(c) = counters() {
            c.add(call);
        }
        if d > 1 {
            say!("{name}(fd {fd}) intercepted");
        }
    }
}

/// Counts one intercepted call on a claimed path (logged with FIO_DEBUG=2).
pub fn count_path(call: Call, name: &str, path: &[u8]) {
    let d = debug();
    if d > 0 {
        if let Some(c) = counters() {
            c.add(call);
        }
        if d > 1 {
            say!("{name}({}) intercepted", Bytes(path));
        }
    }
}

/// Prints the counters (at exit, when FIO_DEBUG is set and anything ran).
pub fn report_counters() {
    if debug() == 0 || INIT_PID.load(Ordering::Relaxed) != std::process::id() {
        return;
    }
    let Some(counts) = counters() else { return };
    let mut line = Line::empty();
    let _ = write!(
        line,
        "intercepted calls in pid {} and its children:",
        std::process::id()
    );
    let mut any = false;
    for (name, n) in counts.each() {
        if n > 0 {
            any = true;
            let _ = write!(line, " {name}={n}");
        }
    }
    if !any {
        let _ = write!(line, " none");
    }
    say!("{}", Bytes(line.as_bytes()));
}

/// The absolute path of `path` when it is claimed ([`claims`]), interception
/// is active, and it is not a directory.
///
/// # Safety
/// `path` must be null or a valid C string.
pub unsafe fn claimed(dirfd: i32, path: *const c_char) -> Option<AbsPath> {
    if !active() {
        return None;
    }
    // SAFETY: caller's contract.
    let mut abs = unsafe { AbsPath::resolve(dirfd, path)? };
    if !claims(&abs) || abs.is_directory() {
        return None;
    }
    Some(abs)
}
