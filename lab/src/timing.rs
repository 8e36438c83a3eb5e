//! Timing mode (`lab up --timing`, or `[simulator] timing = true`): QEMU
//! loads cxl-memsim's TCG plugin, which streams every guest access to the
//! CXL windows to the simulator's plugin socket.
//!
//! The plugin starts disarmed (instrumenting from boot costs 1.84× the boot
//! and made QEMU abort in 2 of 20 measured runs). Once regions are up the
//! lab reads the windows from the guest's `/proc/iomem` ("CXL Window N"),
//! tells the simulator where each device's region starts (`plugin map`),
//! and arms the plugin through the simulator (`plugin arm`), which answers
//! once QEMU has installed the instrumentation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cxl_memsim_wire::args::{self, Args as PluginArgs, ArgsError};
use cxl_memsim_wire::control::ControlError;
use cxl_memsim_wire::Window;
use cxl_regions::plan::Outcome;
use serde::{Deserialize, Serialize};

use crate::qga::{Agent, QgaError};

/// Errors of timing mode.
#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    #[error("The TCG plugin {0} is missing; build it with `cargo build --workspace` (crate cxl-memsim-plugin).")]
    NoPlugin(PathBuf),
    #[error(
        "The TCG plugin would refuse its arguments in `-plugin {option}`; QEMU would not start."
    )]
    PluginArgs {
        option: String,
        #[source]
        source: ArgsError,
    },
    #[error("Timing mode (and its stall mode) needs TCG: QEMU plugins instrument translated code; drop --accel kvm.")]
    NeedsTcg,
    #[error("Cannot read the guest's /proc/iomem.")]
    Iomem(#[source] QgaError),
    #[error("The guest's /proc/iomem lists no \"CXL Window\"; are the CXL modules loaded?")]
    NoWindow,
    #[error("The simulator's control socket did not answer.")]
    Control(#[from] ControlError),
    #[error("The simulator refused '{command}': {error}")]
    Refused { command: String, error: String },
    #[error("The plugin did not arm within {0:?} although the guest was kept busy.")]
    ArmTimeout(Duration),
}

/// The plugin library: next to the lab's other binaries.
pub fn library() -> PathBuf {
    crate::paths::tools_dir().join("libcxl_memsim_plugin.so")
}

/// The simulator's plugin socket in a run's socket directory.
pub fn plugin_socket(socket_dir: &Path) -> PathBuf {
    socket_dir.join("plugin.sock")
}

/// The value of QEMU's `-plugin` option: the library, then its arguments
/// (disarmed; the lab arms it once regions are up). Checked with the
/// plugin's own parser, split as QEMU splits it, so a bad argument stops
/// `lab up` before QEMU starts instead of failing inside QEMU. `learn`:
/// the topology's `[simulator] timing_learn`.
pub fn plugin_option(
    library: &Path,
    socket_dir: &Path,
    learn: bool,
) -> Result<String, TimingError> {
    let mut words = vec![library.display().to_string()];
    let mut args = PluginArgs::new(plugin_socket(socket_dir));
    args.learn = learn;
    words.extend(args.to_words());
    let option = words.join(",");
    args::parse_option(&option).map_err(|source| TimingError::PluginArgs {
        option: option.clone(),
        source,
    })?;
    Ok(option)
}

/// What `lab up` recorded about timing mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimingState {
    pub plugin: PathBuf,
    pub plugin_socket: PathBuf,
    /// The CXL windows the plugin watches, `BASE+SIZE`.
    pub windows: Vec<String>,
    /// Device name to the guest physical address of its region.
    pub regions: Vec<(String, u64)>,
    /// How long arming took (from asking to QEMU's acknowledgement).
    pub arm_ms: u64,
    /// Stall mode: the calibration, each device's figures and stalls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<crate::stall::StallState>,
    /// `[simulator] timing_learn`: counts may miss accesses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub learning: bool,
}

/// The "CXL Window" ranges of a `/proc/iomem` text.
pub fn windows_from_iomem(text: &str) -> Vec<Window> {
    text.lines()
        .filter_map(|l| {
            let (range, name) = l.trim().split_once(" : ")?;
            if !name.starts_with("CXL Window") {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let start = u64::from_str_radix(a, 16).ok()?;
            let end = u64::from_str_radix(b, 16).ok()?;
            (end >= start).then(|| Window {
                base: start,
                size: end - start + 1,
            })
        })
        .collect()
}

/// The `plugin map` words of the regions the guest built: `NAME=START` for
/// a one-device region, `NAME,NAME…=START/GRANULARITY` for an interleaved
/// one (members in position order), so the simulator charges each access
/// to the device the CXL decoders send it to.
pub fn map_words(outcome: &Outcome) -> Vec<String> {
    outcome
        .regions
        .iter()
        .map(|r| {
            let names: Vec<&str> = r.members.iter().map(|m| m.device.as_str()).collect();
            if names.len() > 1 {
                format!("{}={:#x}/{}", names.join(","), r.start, r.granularity)
            } else {
                format!("{}={:#x}", names.join(","), r.start)
            }
        })
        .collect()
}

/// Sends one line to the simulator's control socket; the JSON answer, or
/// its error as [`TimingError::Refused`].
pub async fn control(path: &Path, line: &str) -> Result<serde_json::Value, TimingError> {
    let v = cxl_memsim_wire::control::request(path, line).await?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(TimingError::Refused {
            command: line.to_owned(),
            error: e.to_owned(),
        });
    }
    Ok(v)
}

/// Maps the regions and arms the plugin; keeps the guest busy meanwhile,
/// because the swap runs at the next vCPU callback and an idle guest's
/// vCPUs may sleep.
pub async fn arm(
    control_socket: &Path,
    agent: &Agent,
    outcome: &Outcome,
    timeout: Duration,
) -> Result<TimingState, TimingError> {
    let iomem = agent
        .read_file("/proc/iomem")
        .await
        .map_err(TimingError::Iomem)?;
    let windows = windows_from_iomem(&String::from_utf8_lossy(&iomem));
    if windows.is_empty() {
        return Err(TimingError::NoWindow);
    }
    let regions: Vec<(String, u64)> = outcome
        .devices
        .iter()
        .filter_map(|d| Some((d.name.clone(), d.region_start?)))
        .collect();
    let words = map_words(outcome);
    if !words.is_empty() {
        control(control_socket, &format!("plugin map {}", words.join(" "))).await?;
    }
    let windows_text: Vec<String> = windows.iter().map(Window::to_string).collect();
    let t = Instant::now();
    arm_windows(control_socket, agent, &windows_text, timeout).await?;
    Ok(TimingState {
        plugin: library(),
        plugin_socket: PathBuf::new(),
        windows: windows_text,
        regions,
        arm_ms: t.elapsed().as_millis() as u64,
        stall: None,
        learning: false,
    })
}

/// Sends `plugin arm` (or, with no windows, `plugin disarm`) and keeps
/// the guest busy until QEMU swapped the code: the swap runs at the next
/// vCPU callback, and an idle guest's vCPUs may sleep.
pub async fn arm_windows(
    control_socket: &Path,
    agent: &Agent,
    windows: &[String],
    timeout: Duration,
) -> Result<(), TimingError> {
    let line = if windows.is_empty() {
        "plugin disarm".to_owned()
    } else {
        format!("plugin arm {}", windows.join(" "))
    };
    let arm = control(control_socket, &line);
    tokio::pin!(arm);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            r = &mut arm => { r?; return Ok(()); }
            _ = tokio::time::sleep_until(deadline) => return Err(TimingError::ArmTimeout(timeout)),
            // Wakes a vCPU: the agent's answer is guest work.
            _ = tokio::time::sleep(Duration::from_millis(100)) => { let _ = agent.ping().await; }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_words_stripe_interleaved_regions_in_position_order() {
        use cxl_regions::plan::{MemberOutcome, Mode, RegionOutcome};
        let region = |name: &str, start: u64, granularity: u64, devices: &[&str]| RegionOutcome {
            name: name.into(),
            region: "region0".into(),
            mode: Mode::Devdax,
            start,
            size: 0,
            ways: devices.len() as u64,
            granularity,
            members: devices
                .iter()
                .map(|d| MemberOutcome {
                    device: (*d).into(),
                    memdev: "mem0".into(),
                    decoder: "decoder2.0".into(),
                    dpa_base: 0,
                })
                .collect(),
            dax: None,
            dax_size: None,
            pmem: None,
            numa_node: None,
            reused: false,
        };
        let outcome = Outcome {
            devices: Vec::new(),
            regions: vec![
                region(
                    "stripe",
                    0x1_1000_0000,
                    4096,
                    &["vmem2", "vmem0", "vmem1", "vmem3"],
                ),
                region("pmem0", 0x1_5000_0000, 8192, &["pmem0"]),
            ],
            elapsed_ms: 0,
        };
        assert_eq!(
            map_words(&outcome),
            [
                "vmem2,vmem0,vmem1,vmem3=0x110000000/4096",
                "pmem0=0x150000000"
            ]
        );
    }

    #[test]
    fn finds_the_cxl_windows_in_proc_iomem() {
        let text = "\
00000000-00000fff : Reserved
100000000-10fffffff : PCI Bus 0000:00
110000000-20fffffff : CXL Window 0
  110000000-11fffffff : region0
    110000000-11fffffff : dax0.0
210000000-30fffffff : CXL Window 1
";
        assert_eq!(
            windows_from_iomem(text),
            [
                Window {
                    base: 0x1_1000_0000,
                    size: 0x1_0000_0000
                },
                Window {
                    base: 0x2_1000_0000,
                    size: 0x1_0000_0000
                }
            ]
        );
        assert!(windows_from_iomem("00000000-00000fff : Reserved\n").is_empty());
    }

    #[test]
    fn the_plugin_option_names_the_socket_and_starts_disarmed() {
        let t = Path::new("/t/libcxl_memsim_plugin.so");
        assert_eq!(
            plugin_option(t, Path::new("/run/x"), false).unwrap(),
            "/t/libcxl_memsim_plugin.so,socket=/run/x/plugin.sock"
        );
        assert_eq!(
            plugin_option(t, Path::new("/run/x"), true).unwrap(),
            "/t/libcxl_memsim_plugin.so,socket=/run/x/plugin.sock,learn=on"
        );
    }

    #[test]
    fn a_plugin_option_qemu_would_split_wrongly_is_refused_before_qemu_starts() {
        // QEMU splits -plugin at commas: a run directory with one breaks
        // the socket argument in two.
        let e = plugin_option(
            Path::new("/t/libcxl_memsim_plugin.so"),
            Path::new("/run/a,b"),
            false,
        )
        .unwrap_err();
        let TimingError::PluginArgs { option, source } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(
            option,
            "/t/libcxl_memsim_plugin.so,socket=/run/a,b/plugin.sock"
        );
        assert_eq!(*source, ArgsError::NotKeyValue("b/plugin.sock".into()));
        assert!(
            e.to_string()
                .contains("-plugin /t/libcxl_memsim_plugin.so,socket=/run/a,b/plugin.sock"),
            "{e}"
        );
        assert!(
            source.to_string().contains("must not contain one"),
            "{source}"
        );
    }
}
