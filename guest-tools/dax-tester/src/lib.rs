//! dax-tester: byte, atomic, wait, latency, throughput and persistence checks
//! on a range of a device-dax (`/dev/daxX.Y`) or of any mappable file.
//! See README.md for the command line and the JSON schema.

pub mod clock;
pub mod config;
pub mod cpu;
pub mod device;
pub mod modes;
pub mod report;
pub mod size;
pub mod stats;

pub use config::{Config, Mode};
pub use device::DeviceError;
pub use report::Report;

/// Opens and maps the range, runs the checks `cfg.mode` names, and returns
/// the report (with `passed` false when any check failed).
pub fn run(cfg: &Config) -> Result<Report, DeviceError> {
    let dev = device::Device::open(&cfg.device, cfg.offset, cfg.size)?;
    let cpu = cpu::CpuFeatures::detect();
    let clock = clock::Clock::calibrate(&cpu);
    let env = modes::Env {
        dev: &dev,
        cpu: &cpu,
        clock: &clock,
        cfg,
    };
    let mut out = report::Modes::default();
    for mode in cfg.mode.expand() {
        match mode {
            Mode::Byte => out.byte = Some(modes::byte::run(&env)),
            Mode::Atomic => out.atomic = Some(modes::atomic::run(&env)),
            Mode::Mwait => out.mwait = Some(modes::mwait::run(&env)),
            Mode::Latency => out.latency = Some(modes::latency::run(&env)),
            Mode::Throughput => out.throughput = Some(modes::throughput::run(&env)),
            Mode::Persist => out.persist = Some(modes::persist::run(&env)),
            Mode::All => unreachable!("expand() never yields All"),
        }
    }
    Ok(Report {
        tool: "dax-tester",
        schema_version: report::SCHEMA_VERSION,
        mode: cfg.mode,
        device: dev.info.clone(),
        cpu,
        clock,
        params: cfg.params(),
        modes: out,
        passed: false,
    }
    .finish())
}
