//! Terminal rendering of [`Event`]s with indicatif.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use crate::events::{Event, EventSink, Step};

/// Spinners and bars on stderr, one per running step.
#[derive(Default)]
pub struct TerminalUi {
    bars: Mutex<HashMap<Step, ProgressBar>>,
}

impl EventSink for TerminalUi {
    fn emit(&self, event: Event) {
        let mut bars = self.bars.lock().expect("ui lock");
        match event {
            Event::Started { step, detail } => {
                let pb = ProgressBar::new_spinner();
                pb.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("template"),
                );
                pb.enable_steady_tick(std::time::Duration::from_millis(120));
                let msg = if detail.is_empty() {
                    step.label().to_owned()
                } else {
                    format!("{}: {detail}", step.label())
                };
                pb.set_message(msg);
                bars.insert(step, pb);
            }
            Event::Progress { step, done, total } => {
                if let Some(pb) = bars.get(&step) {
                    if pb.length() != Some(total) {
                        pb.set_length(total);
                        pb.set_style(
                            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
                                .expect("template")
                                .progress_chars("=> "),
                        );
                    }
                    pb.set_position(done);
                }
            }
            Event::Finished {
                step,
                elapsed,
                detail,
            } => {
                if let Some(pb) = bars.remove(&step) {
                    pb.finish_and_clear();
                }
                let extra = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                };
                eprintln!(
                    "  ✓ {} in {:.1}s{extra}",
                    step.label(),
                    elapsed.as_secs_f64()
                );
            }
            Event::Failed { step, error } => {
                if let Some(pb) = bars.remove(&step) {
                    pb.finish_and_clear();
                }
                eprintln!("  ✗ {}: {error}", step.label());
            }
            Event::Skipped { step, reason } => eprintln!("  · {}: {reason}", step.label()),
            Event::Warning { step, message } => eprintln!("  ! {}: {message}", step.label()),
            Event::Note { step, message } => {
                let line = format!("  · {}: {message}", step.label());
                // Above the step's spinner, which keeps running (a hidden
                // spinner, stderr not a terminal, would drop the line).
                match bars.get(&step).filter(|pb| !pb.is_hidden()) {
                    Some(pb) => pb.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
    }
}
