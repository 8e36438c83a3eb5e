//! `libfio_intercept.so`: an `LD_PRELOAD` library that serves fio's file I/O
//! on fio's data files (learnt from its command line and job files) and on
//! files whose names match `*.cxl` or `FIO_INTERCEPT_PATTERN` from a window of a
//! mapped DAX device (or any mappable file), one slot of `FIO_FILE_SIZE`
//! bytes per file. See README.md for the environment and its semantics.
//!
//! Nothing here allocates on the heap or takes a lock that an interposed call
//! could re-enter: configuration lives in static buffers, the slot table and
//! dirty bitmaps in anonymous mappings, and every pass-through goes to the
//! next definition found with `dlsym(RTLD_NEXT, ...)`.

mod config;
mod counters;
mod dirty;
mod errno;
mod fio_files;
mod glob;
mod interpose;
mod io;
mod log;
mod num;
mod path;
mod real;
mod stat;
mod state;
mod stream;
mod table;
mod window;

/// Runs before `main` of the preloading program: reads the environment and,
/// when enabled, maps the device window.
extern "C" fn on_load() {
    state::init();
}

/// Runs at exit: prints the per-call counters when `FIO_DEBUG` is set.
extern "C" fn on_unload() {
    state::report_counters();
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = on_load;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = on_unload;
