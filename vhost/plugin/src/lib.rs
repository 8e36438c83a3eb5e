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
//! Modules: `link` (the socket, per-vCPU buffers, the I/O threads),
//! `instrument` (the QEMU callbacks and the arm/disarm state machine).

mod instrument;
mod link;

use qemu_plugin::install::{Args, Info};
use qemu_plugin::plugin::{HasCallbacks, Register};
use qemu_plugin::PluginId;

struct CxlMemsimPlugin;

impl HasCallbacks for CxlMemsimPlugin {}

impl Register for CxlMemsimPlugin {
    // Replaces the crate's default registration: its callbacks take one
    // global mutex each and panic on error; ours are registered directly.
    fn register_default(
        &mut self,
        id: PluginId,
        args: &Args,
        info: &Info,
    ) -> qemu_plugin::Result<()> {
        let vcpus = info
            .system
            .as_ref()
            .map(|s| s.max_vcpus.max(s.smp_vcpus))
            .unwrap_or(1)
            .max(1) as usize;
        instrument::install(id, &args.raw, vcpus).map_err(|e| {
            // QEMU only says the install failed; say why.
            eprintln!("cxl-memsim-plugin: {e}");
            qemu_plugin::Error::BoxedError(e.into())
        })
    }
}

qemu_plugin::register!(CxlMemsimPlugin);
