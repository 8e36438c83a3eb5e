//! `ioriot`: the mode follows the options, as in the original I/O Riot:
//! `-c FILE` captures, `-c CAPTURE -r REPLAY [-n NAME]` generates, `-i
//! REPLAY` initialises, `-r REPLAY` replays (dropping the caches first
//! unless `-D`), `-R REPLAY` does both, `-d` drops the caches, `-P REPLAY`
//! purges. This file only turns arguments into a typed mode and calls the
//! library.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use ioriot::generate::GenerateConfig;
use ioriot::order::Done;
use ioriot::replay::ReplayConfig;
use ioriot::replay_format::Replay;
use ioriot::{capture_format, generate, init, purge, replay, replay_format};

/// I/O Riot's defaults.
const DEFAULT_WD_BASE: &str = "/usr/local/ioriot";
const DEFAULT_NAME: &str = "test0";

/// Capture a workload's file I/O with eBPF and replay it under a test root.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Modes: -c FILE [-x PID] [--duration S] captures; -c CAPTURE -r REPLAY [-n NAME] [-u USER] [-w WD_BASE] generates; -i REPLAY [-w WD_BASE] initialises; -r REPLAY [-p P] [-t T] [-s SPEED] [-D] [-S STATS] replays; -R REPLAY initialises and replays; -d drops the caches; -P REPLAY purges; -S STATS alone shows saved statistics. Test trees are <mount point>/.ioriot/NAME/."
)]
struct Args {
    /// The .capture file (written by capture, read by generate).
    #[arg(short = 'c', long = "capture")]
    capture: Option<PathBuf>,
    /// Capture: follow this process and its children (default: every process).
    #[arg(short = 'x', long = "pid")]
    pid: Option<u32>,
    /// Capture: PID stops itself before its work (`sh -c 'kill -STOP $$; exec prog'`);
    /// wait until it has, then continue it once tracing is attached.
    #[arg(long, requires = "pid")]
    resume: bool,
    /// Capture: stop after this many seconds (default: when the followed process ends, or on SIGINT).
    #[arg(long)]
    duration: Option<f64>,
    /// The .replay file (written by generate, read by replay).
    #[arg(short = 'r', long = "replay")]
    replay: Option<PathBuf>,
    /// Generate: the test name; a path on mount point M is rewritten to M/.ioriot/NAME/….
    #[arg(short = 'n', long = "name", default_value = DEFAULT_NAME)]
    name: String,
    /// Generate: the user to replay as (init gives it the tree; replay switches to it).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Generate: keep operations on tmpfs (and ramfs, rootfs) instead of dropping them.
    #[arg(long)]
    keep_tmpfs: bool,
    /// Initialise the test trees and skeleton of this replay.
    #[arg(short = 'i', long = "init")]
    init: Option<PathBuf>,
    /// Initialise and replay this replay (-i and -r in one run).
    #[arg(short = 'R', long = "init-replay")]
    init_replay: Option<PathBuf>,
    /// Replay: do not drop the Linux caches first.
    #[arg(short = 'D', long = "dont-drop-caches")]
    dont_drop_caches: bool,
    /// Drop the Linux caches (sync, then 3 to /proc/sys/vm/drop_caches) and exit.
    #[arg(short = 'd', long = "drop-caches")]
    drop_caches: bool,
    /// Purge the test tree of this replay.
    #[arg(short = 'P', long = "purge")]
    purge: Option<PathBuf>,
    /// The working directory's base: init makes WD_BASE/NAME, replay runs in it;
    /// generate records it for both (default: the replay's, else /usr/local/ioriot).
    #[arg(short = 'w', long = "wd-base")]
    wd_base: Option<PathBuf>,
    /// Replay: worker processes.
    #[arg(short = 'p', long = "processes", default_value_t = 4)]
    processes: u32,
    /// Replay: threads per worker process.
    #[arg(short = 't', long = "threads", default_value_t = 128)]
    threads: u32,
    /// Replay: speed factor; 0 is as fast as possible, 1 the captured timing.
    #[arg(short = 's', long = "speed", default_value_t = 0.0)]
    speed: f64,
    /// Replay: also write the statistics as JSON to this file (alone: show such a file).
    #[arg(short = 'S', long = "stats")]
    stats: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Internal: run replay worker K of P and print its raw statistics.
    #[arg(long, hide = true, value_name = "K/P")]
    worker: Option<String>,
    /// Internal: the workers' shared completion flags.
    #[arg(long, hide = true)]
    order_file: Option<PathBuf>,
}

enum Mode {
    Capture(ioriot::capture::CaptureConfig),
    Generate {
        capture: PathBuf,
        replay: PathBuf,
        cfg: GenerateConfig,
    },
    Init {
        replay: PathBuf,
        wd_base: Option<PathBuf>,
    },
    Replay {
        replay: PathBuf,
        cfg: ReplayConfig,
        stats: Option<PathBuf>,
        worker: Option<(u32, u32, PathBuf)>,
        wd_base: Option<PathBuf>,
        /// -R: initialise first.
        init: bool,
        drop_caches: bool,
    },
    DropCaches,
    Purge {
        replay: PathBuf,
        wd_base: Option<PathBuf>,
    },
    /// Shows statistics a replay saved with -S.
    Stats(PathBuf),
}

impl Args {
    fn mode(self) -> anyhow::Result<Mode> {
        if self.drop_caches {
            return Ok(Mode::DropCaches);
        }
        if let Some(replay) = self.purge {
            return Ok(Mode::Purge {
                replay,
                wd_base: self.wd_base,
            });
        }
        let init_first = self.init_replay.is_some() || self.init.is_some();
        let init_replay = self.init_replay.is_some();
        if let Some(replay) = self.init.clone() {
            if self.replay.is_none() && !init_replay {
                return Ok(Mode::Init {
                    replay,
                    wd_base: self.wd_base,
                });
            }
        }
        let replay_file = self.init_replay.or(self.replay);
        match (self.capture, replay_file) {
            (Some(capture), Some(replay)) => {
                let wd_base = match self.wd_base {
                    Some(w) => Some(
                        w.to_str()
                            .context("-w must be a UTF-8 path for the replay header")?
                            .to_owned(),
                    ),
                    None => None,
                };
                Ok(Mode::Generate {
                    capture,
                    replay,
                    cfg: GenerateConfig {
                        name: self.name,
                        keep_tmpfs: self.keep_tmpfs,
                        user: self.user,
                        wd_base,
                    },
                })
            }
            (Some(output), None) => Ok(Mode::Capture(ioriot::capture::CaptureConfig {
                output,
                pid: self.pid,
                duration: self.duration.map(std::time::Duration::from_secs_f64),
                resume: self.resume,
            })),
            (None, Some(replay)) => {
                let worker = match &self.worker {
                    None => None,
                    Some(w) => {
                        let (k, p) = w.split_once('/').context("--worker takes K/P")?;
                        let file = self
                            .order_file
                            .clone()
                            .context("--worker needs --order-file")?;
                        Some((k.parse()?, p.parse()?, file))
                    }
                };
                Ok(Mode::Replay {
                    replay,
                    cfg: ReplayConfig {
                        processes: self.processes,
                        threads: self.threads,
                        speed: self.speed,
                    },
                    stats: self.stats,
                    drop_caches: !self.dont_drop_caches && worker.is_none(),
                    worker,
                    wd_base: self.wd_base,
                    init: init_first,
                })
            }
            (None, None) => match self.stats {
                Some(file) => Ok(Mode::Stats(file)),
                None => bail!("nothing to do: give -c, -r, -i, -R, -d, -P or -S (see --help)"),
            },
        }
    }
}

fn read_replay(path: &Path) -> anyhow::Result<Replay> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    replay_format::read(BufReader::new(f))
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The working directory base: -w, else the one generate recorded, else I/O Riot's default.
fn wd_base(given: Option<PathBuf>, rep: &Replay) -> PathBuf {
    given
        .or_else(|| rep.wd_base.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WD_BASE))
}

/// What I/O Riot does before a replay unless -D: write back dirty pages,
/// then drop the page cache, dentries and inodes.
fn drop_caches() -> anyhow::Result<()> {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").context(
        "cannot drop the caches through /proc/sys/vm/drop_caches (it needs root); give -D to replay without dropping them",
    )
}

fn print(
    json: bool,
    value: &impl serde::Serialize,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    let json = args.json;
    match args.mode()? {
        Mode::Capture(cfg) => {
            let report = ioriot::capture::capture(&cfg).context("capture failed")?;
            print(json, &report, || report.text())?;
        }
        Mode::Generate {
            capture,
            replay,
            cfg,
        } => {
            let f = File::open(&capture)
                .with_context(|| format!("cannot open {}", capture.display()))?;
            let cap = capture_format::read(BufReader::new(f))
                .with_context(|| format!("cannot read {}", capture.display()))?;
            let (rep, report) = generate::generate(&cap, &cfg).context("generate failed")?;
            let mut w = BufWriter::new(
                File::create(&replay)
                    .with_context(|| format!("cannot create {}", replay.display()))?,
            );
            replay_format::write(&mut w, &rep)?;
            w.flush()?;
            print(json, &report, || report.text())?;
        }
        Mode::Init { replay, wd_base: w } => {
            let rep = read_replay(&replay)?;
            let report = init::init(&rep, &wd_base(w, &rep)).context("init failed")?;
            print(json, &report, || report.text())?;
        }
        Mode::DropCaches => drop_caches()?,
        Mode::Replay {
            replay,
            cfg,
            stats,
            worker,
            wd_base: w,
            init,
            drop_caches: drop,
        } => {
            let rep = read_replay(&replay)?;
            if let Some((k, p, file)) = worker {
                let done = Done::shared(&file, rep.ops.len())
                    .with_context(|| format!("cannot map {}", file.display()))?;
                let s =
                    replay::run_worker(&rep, &cfg, k, p, &done).context("replay worker failed")?;
                println!("{}", serde_json::to_string(&s)?);
                return Ok(());
            }
            let wd = wd_base(w, &rep);
            if init {
                let report = init::init(&rep, &wd).context("init failed")?;
                if !json {
                    print!("{}", report.text());
                }
            }
            if drop {
                drop_caches()?;
            }
            // Replay runs in the working directory init made (its workers too).
            let wd = wd.join(&rep.name);
            if wd.is_dir() {
                std::env::set_current_dir(&wd)
                    .with_context(|| format!("cannot enter {}", wd.display()))?;
            }
            // Opened before the replay takes on its user, who may not be
            // allowed to create it.
            let stats_out = match &stats {
                Some(path) => Some(
                    File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                ),
                None => None,
            };
            let exe = std::env::current_exe().context("cannot find the ioriot executable")?;
            let s = replay::run(&rep, &cfg, |k, p, order_file| {
                let mut c = std::process::Command::new(&exe);
                c.arg("-r")
                    .arg(&replay)
                    .arg("-t")
                    .arg(cfg.threads.to_string())
                    .arg("-s")
                    .arg(cfg.speed.to_string())
                    .arg("--worker")
                    .arg(format!("{k}/{p}"))
                    .arg("--order-file")
                    .arg(order_file);
                c
            })
            .context("replay failed")?;
            let report = s.report(rep.source_ops, rep.source_span_ns);
            if let (Some(mut f), Some(path)) = (stats_out, stats) {
                let mut text = serde_json::to_vec_pretty(&report)?;
                text.push(b'\n');
                f.write_all(&text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            print(json, &report, || report.text())?;
        }
        Mode::Stats(file) => {
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let report: ioriot::stats::Report =
                serde_json::from_slice(&text).with_context(|| {
                    format!("{} is not a statistics file of ioriot -S", file.display())
                })?;
            print(json, &report, || report.text())?;
        }
        Mode::Purge { replay, wd_base: w } => {
            let rep = read_replay(&replay)?;
            let removed = purge::purge(&rep, Some(&wd_base(w, &rep))).context("purge failed")?;
            print(json, &serde_json::json!({ "removed": removed }), || {
                if removed.is_empty() {
                    "nothing to remove\n".to_owned()
                } else {
                    removed
                        .iter()
                        .map(|d| format!("removed {}\n", d.display()))
                        .collect()
                }
            })?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ioriot: {e:#}");
            ExitCode::FAILURE
        }
    }
}
