//! The typed progress stream of long steps. The terminal UI (indicatif, in
//! `ui.rs`) and the tests consume the same events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A long step of `lab`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    ImageResolve,
    ImageDownload,
    ImageExtract,
    ImageModules,
    ImagePack,
    /// A user's kernel (`--kernel`): checked, cached, its modules layer.
    Kernel,
    SimulatorStart,
    QemuStart,
    AgentWait,
    Regions,
    Timing,
    Restore,
    Save,
    Command,
    Shutdown,
    /// `lab matrix`: its cells' labs.
    Matrix,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::ImageResolve => "resolve packages",
            Step::ImageDownload => "download packages",
            Step::ImageExtract => "extract packages",
            Step::ImageModules => "build kernel modules",
            Step::ImagePack => "pack initramfs",
            Step::Kernel => "prepare the kernel",
            Step::SimulatorStart => "start cxl-memsim",
            Step::QemuStart => "start QEMU",
            Step::AgentWait => "boot to guest agent",
            Step::Regions => "create regions",
            Step::Timing => "arm the timing plugin",
            Step::Restore => "restore the saved lab state",
            Step::Save => "save the lab state for the next lab up",
            Step::Command => "guest command",
            Step::Shutdown => "shut down",
            Step::Matrix => "matrix",
        }
    }
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Started {
        step: Step,
        detail: String,
    },
    Progress {
        step: Step,
        done: u64,
        total: u64,
    },
    Finished {
        step: Step,
        elapsed: Duration,
        detail: String,
    },
    Failed {
        step: Step,
        error: String,
    },
    /// A step was skipped because its result is cached or already there.
    Skipped {
        step: Step,
        reason: String,
    },
    /// Something the user should know and may want to change; the step
    /// goes on.
    Warning {
        step: Step,
        message: String,
    },
    /// How a step that has parts going on at once gets on (a matrix's
    /// cells); the step goes on.
    Note {
        step: Step,
        message: String,
    },
}

/// Where events go.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

/// A cheap, clonable handle on a sink.
#[derive(Clone)]
pub struct Events(Arc<dyn EventSink>);

impl Events {
    pub fn new(sink: impl EventSink + 'static) -> Self {
        Events(Arc::new(sink))
    }

    /// Drops every event.
    pub fn none() -> Self {
        Events::new(NullSink)
    }

    pub fn emit(&self, event: Event) {
        self.0.emit(event)
    }

    /// Runs `f` between Started and Finished (or Failed) events.
    pub fn step<T, E: std::fmt::Display>(
        &self,
        step: Step,
        detail: impl Into<String>,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let t = std::time::Instant::now();
        self.emit(Event::Started {
            step,
            detail: detail.into(),
        });
        match f() {
            Ok(v) => {
                self.emit(Event::Finished {
                    step,
                    elapsed: t.elapsed(),
                    detail: String::new(),
                });
                Ok(v)
            }
            Err(e) => {
                self.emit(Event::Failed {
                    step,
                    error: e.to_string(),
                });
                Err(e)
            }
        }
    }
}

struct NullSink;
impl EventSink for NullSink {
    fn emit(&self, _: Event) {}
}

/// Collects events in memory (for tests and `--json` reports).
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Event>>>);

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        self.0.lock().expect("recorder lock").push(event);
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("recorder lock").clone()
    }

    /// Elapsed time of the first finished `step`.
    pub fn elapsed(&self, step: Step) -> Option<Duration> {
        self.events().into_iter().find_map(|e| match e {
            Event::Finished {
                step: s, elapsed, ..
            } if s == step => Some(elapsed),
            _ => None,
        })
    }
}

impl<A: EventSink, B: EventSink> EventSink for (A, B) {
    fn emit(&self, event: Event) {
        self.0.emit(event.clone());
        self.1.emit(event);
    }
}
