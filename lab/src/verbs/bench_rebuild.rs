//! `lab bench rebuild`: a kernel developer's rebuild loop (a finished
//! `make` to regions ready, with a kernel the lab has never seen) against
//! today's cold path (the image built from scratch, then a cold `lab up`),
//! from one run.
//!
//! Both paths use a scratch cache made for the run inside the user's cache
//! directory and removed with everything in it at the end: the user's
//! images and kernels are neither used nor touched, and the loop's kernel
//! has no cache entry there. Only the downloaded packages are shared (the
//! scratch cache's `debs` links to the user's), so the image build reuses
//! them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::down::down;
use super::up::{up, UpOptions};
use crate::error::LabError;
use crate::events::{Event, EventSink, Events, Step};
use crate::image::{self, lock::PackageLock, ImageOptions};
use crate::kernel::KernelInput;
use crate::rebuild::{self, RebuildError};
use crate::rundir::Timings;
use crate::summary::{NewKernel, RebuildBench, RebuildPath, StepTime};

pub use crate::rebuild::DEFAULT_TOUCH;

/// Options of `lab bench rebuild`.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// The lab both paths bring up (its name, topology, accelerator); its
    /// image cache is where the scratch cache is made.
    pub up: UpOptions,
    /// A kernel build tree; none: the stand-in kernel.
    pub tree: Option<PathBuf>,
    /// The file touched before the tree's make, relative to the tree.
    pub touch: PathBuf,
    /// make's `-j`.
    pub jobs: usize,
}

/// Forwards every event and keeps the finished steps' times.
struct StepClock {
    inner: Events,
    finished: Arc<Mutex<Vec<StepTime>>>,
}

impl EventSink for StepClock {
    fn emit(&self, event: Event) {
        if let Event::Finished { step, elapsed, .. } = &event {
            self.finished
                .lock()
                .expect("step clock lock")
                .push(StepTime {
                    step: *step,
                    seconds: elapsed.as_secs_f64(),
                });
        }
        self.inner.emit(event)
    }
}

/// `events` with a clock: what it has timed is taken with [`take`].
fn clocked(events: &Events) -> (Events, Arc<Mutex<Vec<StepTime>>>) {
    let finished = Arc::new(Mutex::new(Vec::new()));
    let sink = StepClock {
        inner: events.clone(),
        finished: finished.clone(),
    };
    (Events::new(sink), finished)
}

fn take(clock: &Mutex<Vec<StepTime>>) -> Vec<StepTime> {
    std::mem::take(&mut *clock.lock().expect("step clock lock"))
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1e3
}

/// One path's parts from `lab up`'s timings: `before` is what came
/// before `lab up` (the cold image build), in seconds.
pub fn path_figures(
    up: &Timings,
    before: Option<f64>,
    steps: Vec<StepTime>,
    kernel_release: String,
) -> RebuildPath {
    let kernel_s = steps
        .iter()
        .find(|s| s.step == Step::Kernel)
        .map(|s| s.seconds);
    let prepare_s = before.unwrap_or(0.0) + secs(up.image_ms);
    let boot_to_agent_s = secs(up.agent_ready_ms.saturating_sub(up.image_ms));
    let regions_s = secs(up.regions_ready_ms.saturating_sub(up.agent_ready_ms));
    RebuildPath {
        prepare_s,
        image_build_s: before,
        kernel_s,
        boot_to_agent_s,
        regions_s,
        total_s: prepare_s + boot_to_agent_s + regions_s,
        up: up.clone(),
        steps,
        kernel_release,
    }
}

/// `lab bench rebuild`.
pub async fn bench_rebuild(
    opts: &RebuildOptions,
    events: &Events,
) -> Result<RebuildBench, LabError> {
    let loadavg_start = crate::schedstat::loadavg_line();
    // Checked before anything is built: a bad tree fails at once.
    if let Some(tree) = &opts.tree {
        match KernelInput::detect(tree, None)? {
            KernelInput::Tree(_) => {}
            _ => return Err(RebuildError::NotATree(tree.clone()).into()),
        }
        if !tree.join(&opts.touch).is_file() {
            return Err(RebuildError::NoSuchSource {
                file: opts.touch.clone(),
                tree: tree.clone(),
            }
            .into());
        }
    }
    let cache = &opts.up.image.cache_dir;
    let lock = PackageLock::embedded().map_err(image::ImageError::from)?;
    let (scratch, debs_reused) = rebuild::scratch_cache(cache, &lock)?;
    let result = run(opts, scratch.path(), events).await;
    // The scratch cache goes with everything made in it (the image, the
    // loop's kernel entry and modules, the stand-in), also on failure.
    let removed = scratch.close().map_err(|source| RebuildError::Io {
        path: cache.clone(),
        source,
    });
    let (cold, new_kernel, rebuild) = result?;
    removed?;
    let ratio = cold.total_s / rebuild.total_s.max(1e-9);
    Ok(RebuildBench {
        loadavg_start,
        loadavg_end: crate::schedstat::loadavg_line(),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
        debs_pinned: lock.packages.len(),
        debs_reused,
        cold,
        new_kernel,
        rebuild,
        ratio,
    })
}

async fn run(
    opts: &RebuildOptions,
    scratch: &Path,
    events: &Events,
) -> Result<(RebuildPath, NewKernel, RebuildPath), LabError> {
    let (events, clock) = clocked(events);
    let image_opts = ImageOptions {
        cache_dir: scratch.to_owned(),
        force: false,
        ..opts.up.image.clone()
    };
    // Today's cold path: the image from scratch, then a cold boot.
    let t = Instant::now();
    let img = image::build(
        &ImageOptions {
            force: true,
            ..image_opts.clone()
        },
        &events,
    )?;
    let image_build_s = t.elapsed().as_secs_f64();
    let base = UpOptions {
        cold: true,
        save: false,
        kernel: None,
        modules: None,
        image: image_opts,
        ..opts.up.clone()
    };
    let summary = up(&base, &events).await?;
    let steps = take(&clock);
    down(&base.name, &events).await?;
    let cold = path_figures(
        &summary.timings,
        Some(image_build_s),
        steps,
        summary.kernel_release.unwrap_or_default(),
    );

    // The developer's build: not the lab's time, reported apart.
    let (kernel, modules, new_kernel) = match &opts.tree {
        Some(tree) => {
            rebuild::touch(tree, &opts.touch)?;
            let build_s = rebuild::make(tree, opts.jobs)?;
            (
                tree.clone(),
                None,
                NewKernel {
                    kind: "tree".into(),
                    changed: format!("{} touched", opts.touch.display()),
                    build: format!("make -j{}", opts.jobs),
                    build_s,
                },
            )
        }
        None => {
            let t = Instant::now();
            let s = rebuild::stand_in(
                &img.manifest,
                &scratch.join("debs"),
                &scratch.join("stand-in"),
            )?;
            (
                s.kernel,
                Some(s.modules),
                NewKernel {
                    kind: "stand-in".into(),
                    changed: s.changed,
                    build: s.made_from,
                    build_s: t.elapsed().as_secs_f64(),
                },
            )
        }
    };
    take(&clock);

    // The loop: a kernel with no cache entry (the scratch cache has none),
    // `--cold` (no saved state matches a new kernel anyway).
    let looped = UpOptions {
        kernel: Some(kernel),
        modules,
        ..base.clone()
    };
    let summary = up(&looped, &events).await?;
    let steps = take(&clock);
    down(&looped.name, &events).await?;
    let rebuild = path_figures(
        &summary.timings,
        None,
        steps,
        summary.kernel_release.unwrap_or_default(),
    );
    Ok((cold, new_kernel, rebuild))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(image: u64, agent: u64, regions: u64) -> Timings {
        Timings {
            image_ms: image,
            simulator_ms: image + 50,
            agent_ready_ms: agent,
            regions_ready_ms: regions,
            ..Timings::default()
        }
    }

    #[test]
    fn a_path_s_parts_add_up_to_its_total() {
        let steps = vec![
            StepTime {
                step: Step::Kernel,
                seconds: 0.4,
            },
            StepTime {
                step: Step::AgentWait,
                seconds: 6.0,
            },
        ];
        let loop_ = path_figures(&timings(500, 7_000, 8_500), None, steps, "6.12.1".into());
        assert_eq!(loop_.prepare_s, 0.5);
        assert_eq!(loop_.kernel_s, Some(0.4));
        assert_eq!(loop_.boot_to_agent_s, 6.5);
        assert_eq!(loop_.regions_s, 1.5);
        assert_eq!(loop_.total_s, 8.5);
        assert_eq!(loop_.image_build_s, None);

        // The cold path: the image build comes before `lab up`.
        let cold = path_figures(&timings(100, 6_100, 7_600), Some(20.0), vec![], "r".into());
        assert_eq!(cold.prepare_s, 20.1);
        assert_eq!(cold.image_build_s, Some(20.0));
        assert_eq!(cold.kernel_s, None, "the image's kernel needs no preparing");
        assert!((cold.total_s - 27.6).abs() < 1e-9, "{}", cold.total_s);
    }

    #[test]
    fn the_text_shows_both_paths_their_parts_and_the_ratio() {
        let cold = path_figures(
            &timings(100, 6_100, 7_600),
            Some(20.0),
            vec![StepTime {
                step: Step::ImagePack,
                seconds: 9.0,
            }],
            "6.12.1".into(),
        );
        let rebuild = path_figures(
            &timings(400, 6_400, 7_600),
            None,
            vec![StepTime {
                step: Step::Kernel,
                seconds: 0.3,
            }],
            "6.12.1".into(),
        );
        let b = RebuildBench {
            loadavg_start: "1.00 1.00 1.00 1/100 1".into(),
            loadavg_end: "2.00 1.00 1.00 1/100 1".into(),
            profile: "debug".into(),
            debs_pinned: 60,
            debs_reused: 60,
            ratio: cold.total_s / rebuild.total_s,
            cold,
            new_kernel: NewKernel {
                kind: "tree".into(),
                changed: "drivers/dax/kmem.c touched".into(),
                build: "make -j2".into(),
                build_s: 31.0,
            },
            rebuild,
        };
        // `--json`: the same figures, each part named.
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["cold"]["image_build_s"], 20.0);
        assert_eq!(json["rebuild"]["kernel_s"], 0.3);
        assert_eq!(json["rebuild"]["steps"][0]["step"], "kernel");
        assert_eq!(json["rebuild"]["up"]["regions_ready_ms"], 7_600);
        assert_eq!(json["new_kernel"]["build_s"], 31.0);
        assert!(json["rebuild"].get("image_build_s").is_none());
        assert!(json["cold"].get("kernel_s").is_none());
        let text = crate::text::bench_rebuild(&b);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "new kernel: tree (drivers/dax/kmem.c touched; make -j2): built in 31.0s, not counted in the loop"
        );
        assert_eq!(
            lines[4],
            "cold path          20.1s           6.0s      1.5s     27.6s  6.12.1"
        );
        assert_eq!(
            lines[5],
            "rebuild loop        0.4s           6.0s      1.2s      7.6s  6.12.1"
        );
        assert!(
            text.contains("cold path steps: pack initramfs 9.0s\n"),
            "{text}"
        );
        assert!(
            text.contains("cold path prepare: image build 20.0s, then lab up found it in 0.1s\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "the kernel (modules_install of a tree, modules layer, config check) 0.3s of 0.4s"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("cold path / rebuild loop, to regions ready: 3.6x\n"),
            "{text}"
        );
    }

    #[test]
    fn the_clock_keeps_finished_steps_and_forwards_every_event() {
        let recorder = crate::events::Recorder::default();
        let (events, clock) = clocked(&Events::new(recorder.clone()));
        events
            .step(Step::Kernel, "k", || Ok::<(), String>(()))
            .unwrap();
        events.emit(Event::Note {
            step: Step::Regions,
            message: "n".into(),
        });
        let kept = take(&clock);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].step, Step::Kernel);
        assert_eq!(
            recorder.0.lock().unwrap().len(),
            3,
            "started, finished, note"
        );
        assert!(take(&clock).is_empty(), "taken once");
    }
}
