//! cxl-memsim's QEMU TCG plugin (plugin API 4, Debian's QEMU 10.0).
//!
//! Streams every guest access whose physical address falls in a watched
//! window (the CXL fixed memory windows, which QEMU serves as MMIO) to the
//! simulator's plugin socket, in batches of the `cxl-memsim-wire` format.
//!
//! It starts disarmed: only cheap translation/idle callbacks that look for an
//! `arm` command run, because instrumenting memory from boot is slow (1.84×
//! a whole boot) and made QEMU abort in 2 of 20 measured runs. `arm` makes
//! the next vCPU callback call `qemu_plugin_reset`, whose completion (all
//! vCPUs stopped, code cache flushed) installs the memory callbacks.
//!
//! Armed, an instruction that made many RAM accesses and none to a window
//! loses its memory callback at the next re-translation (`learn`), so
//! memory-heavy guest code no longer calls the plugin on every access.
//!
//! Stall mode (`stall` command) holds each vCPU for the time the model
//! charges its accesses beyond TCG's own cost, so the guest's clock shows it.
//!
//! Modules: `link` (the socket, per-vCPU buffers, the I/O threads),
//! `instrument` (the QEMU callbacks and the arm/disarm state machine),
//! `learn` (which instructions are instrumented: seen ones are left out),
//! `stall` (stall mode's costs, debts and payments).

mod instrument;
mod learn;
mod link;
mod stall;

use std::ffi::{c_char, c_int, CStr};

use qemu_plugin_sys::{qemu_info_t, qemu_plugin_id_t, QEMU_PLUGIN_VERSION};

/// The plugin API version the plugin was built for; QEMU checks it.
#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = QEMU_PLUGIN_VERSION as c_int;

/// QEMU's entry point. A bad argument or an unreachable simulator is
/// reported on stderr and returned as a failure, and QEMU exits with "could
/// not load plugin" (no panic: a panic here would abort QEMU).
///
/// # Safety
///
/// Called by QEMU only, which passes an `info` valid for the call and, in
/// `argv`, `argc` pointers to NUL-terminated strings valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(
    id: qemu_plugin_id_t,
    info: *const qemu_info_t,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let raw: Vec<String> = (0..usize::try_from(argc).unwrap_or(0))
        // SAFETY: by the caller's contract argv holds argc pointers, each to
        // a NUL-terminated string valid for this call; the strings are
        // copied out before it returns.
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) })
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    // SAFETY: `info` is valid for the call (the caller's contract); QEMU
    // fills the union's `system` member under full-system emulation, the
    // only case in which it is read.
    let vcpus = unsafe {
        let info = &*info;
        if info.system_emulation {
            let s = info.__bindgen_anon_1.system;
            s.max_vcpus.max(s.smp_vcpus).max(1) as usize
        } else {
            1
        }
    };
    match instrument::install(id, &raw, vcpus) {
        Ok(()) => 0,
        Err(e) => {
            // QEMU only says the install failed; say why.
            eprintln!("cxl-memsim-plugin: {e}");
            -1
        }
    }
}
