//! `lab`: boot a QEMU guest with simulated CXL memory and run things in it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use cxl_lab::error::LabError;
use cxl_lab::events::Events;
use cxl_lab::gate::compare::Verdict;
use cxl_lab::image::ImageOptions;
use cxl_lab::suites::SuiteArg;
use cxl_lab::text;
use cxl_lab::ui::TerminalUi;
use cxl_lab::verbs::{self, AccelChoice, UpOptions};

#[derive(Parser)]
#[command(
    version,
    about = "CXL memory lab: QEMU + simulated CXL type-3 memory, no hardware needed"
)]
struct Args {
    #[command(subcommand)]
    verb: Verb,
}

/// `--timing` (observe) or `--timing=stall`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TimingArg {
    Observe,
    Stall,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Tcg,
    Kvm,
}

impl From<AccelArg> for AccelChoice {
    fn from(a: AccelArg) -> AccelChoice {
        match a {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Tcg => AccelChoice::Tcg,
            AccelArg::Kvm => AccelChoice::Kvm,
        }
    }
}

/// A kernel to boot instead of the image's.
#[derive(clap::Args)]
struct KernelArgs {
    /// Boot this kernel instead of the image's: a Debian kernel package
    /// (.deb), a bzImage/vmlinuz file (with --modules, or none when the
    /// drivers the lab needs are built in), or a kernel build tree (its
    /// arch/x86/boot/bzImage, .config and `make modules_install`).
    /// Overrides the topology's `[guest] kernel`.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// The modules of a bzImage/vmlinuz --kernel: its lib/modules/<release>
    /// directory (or a directory holding lib/modules/<release>).
    #[arg(long, value_name = "DIR", requires = "kernel")]
    modules: Option<PathBuf>,
}

#[derive(clap::Args)]
struct NameArg {
    /// Lab instance name (its run directory).
    #[arg(long, default_value = "default")]
    name: String,
}

#[derive(Subcommand)]
enum Verb {
    /// Build the image if needed, start cxl-memsim and QEMU, wait for the
    /// guest agent and create regions.
    Up {
        #[command(flatten)]
        name: NameArg,
        /// Topology TOML file or preset name (`lab topologies`); the
        /// embedded default when absent.
        #[arg(long)]
        topology: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        accel: AccelArg,
        /// Seconds to wait for the guest agent.
        #[arg(long, default_value_t = 180)]
        boot_timeout: u64,
        /// Timing mode: QEMU loads cxl-memsim's TCG plugin, armed once
        /// regions are up, so every guest access to CXL memory is charged to
        /// the simulator's model and stats (`cxl-memsim stats`). TCG only.
        /// `--timing=stall`: the plugin also holds each vCPU for the extra
        /// latency the model charges its CXL accesses (calibrated at up).
        #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "observe")]
        timing: Option<TimingArg>,
        #[command(flatten)]
        kernel: KernelArgs,
        /// Boot from the kernel even when a saved state of this lab's key
        /// (image, kernel, topology, QEMU, lab version, CPUs/memory, accel,
        /// timing mode) exists; the state saved on the way replaces it.
        /// Without it such a state is restored (README, "Saved lab states").
        #[arg(long)]
        cold: bool,
        /// Do not save a state during a cold boot.
        #[arg(long)]
        no_save: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop QEMU and the simulator; keep persistent backing files.
    Down {
        #[command(flatten)]
        name: NameArg,
        #[arg(long)]
        json: bool,
    },
    /// Show what runs and where.
    Status {
        #[command(flatten)]
        name: NameArg,
        #[arg(long)]
        json: bool,
    },
    /// Run a command in the guest; its exit code becomes lab's.
    Exec {
        #[command(flatten)]
        name: NameArg,
        /// Seconds before the command counts as hung.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(long)]
        json: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Inject a CXL error or event into a running lab's device through QMP
    /// (checked against the lab's topology first; numbers are decimal or
    /// 0x hex).
    Inject {
        #[command(flatten)]
        name: NameArg,
        /// Print a JSON record: the QMP command, the device, the fields
        /// sent and QEMU's answer.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        what: cxl_lab::inject::Injection,
    },
    /// Run test suites in the guest (`all` runs every one); the run is kept
    /// in the run directory's results/<run id>/ (results/latest points at
    /// it) and a table of each suite's headline figures goes to stdout.
    Run {
        #[command(flatten)]
        name: NameArg,
        #[arg(required = true)]
        suites: Vec<SuiteArg>,
        /// Also write a JUnit XML report here (one test case per suite step).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Then compare the run against BASE (a baseline name, a run or
        /// baseline directory, or a run id), as `lab compare BASE` does;
        /// the exit code is compare's.
        #[arg(long, value_name = "BASE")]
        compare: Option<String>,
        #[command(flatten)]
        baselines: BaselinesArg,
        #[arg(long)]
        json: bool,
    },
    /// Compare two runs: behaviour (digests) must be equal, figures within
    /// their tolerance. Exit 0 equal, 1 regression, 2 not comparable.
    /// With no run named, the lab's last two runs; with BASE only, BASE
    /// against the lab's latest run.
    Compare {
        #[command(flatten)]
        name: NameArg,
        /// A baseline name (in --baselines), a run or baseline directory,
        /// or a run id of the lab.
        base: Option<String>,
        /// As BASE; the lab's latest run when absent.
        new: Option<String>,
        #[command(flatten)]
        baselines: BaselinesArg,
        #[arg(long)]
        json: bool,
    },
    /// Write one self-contained HTML page of a run: its summary, per
    /// suite its figures, SVG charts and steps, cxl-memsim's hot pages;
    /// with --baseline, the comparison, regressions in red.
    Report {
        #[command(flatten)]
        name: NameArg,
        /// A run or baseline directory, a baseline name (in --baselines),
        /// or a run id of the lab; the lab's latest run when absent.
        run: Option<String>,
        /// Where to write the page; <run dir>/report.html when absent.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Compare the run with BASE (as RUN) and highlight regressions.
        #[arg(long, value_name = "BASE")]
        baseline: Option<String>,
        #[command(flatten)]
        baselines: BaselinesArg,
    },
    /// Saved baselines: plain files to commit and compare against.
    Baseline {
        #[command(subcommand)]
        verb: BaselineVerb,
    },
    /// Print the exact QEMU command line, shell-quoted: a running lab's
    /// own, else the one `lab up` would use. It names backing files and
    /// sockets that exist only while the lab's cxl-memsim runs.
    Args {
        #[command(flatten)]
        name: NameArg,
        /// Topology TOML file (a lab that is not running; a running lab
        /// refuses one other than its own).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// The command line of timing mode (with the TCG plugin); a running
        /// lab refuses it unless it runs in timing mode.
        #[arg(long)]
        timing: bool,
        /// The accelerator as `lab up --accel` picks it; a running lab
        /// refuses tcg or kvm when it runs under the other.
        #[arg(long, value_enum, default_value = "auto")]
        accel: AccelArg,
        #[command(flatten)]
        kernel: KernelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Print (and follow) the guest's serial console.
    Console {
        #[command(flatten)]
        name: NameArg,
        /// Print what is there and stop.
        #[arg(long)]
        no_follow: bool,
    },
    /// Benchmarks: `lab bench boot` times up to agent-ready and
    /// regions-ready over several cycles (median, with a cached image).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Soak: CYCLES × (`lab up`, `lab run dax`, `lab down`), reporting
    /// failures, what each `lab down` left (processes, sockets, files) and
    /// the boot-time drift; each cycle's record is also appended to the
    /// run directory's results/soak.jsonl. Not for CI: a cycle takes a
    /// minute or more.
    Soak {
        /// Lab instance name (its run directory).
        #[arg(long, default_value = "soak")]
        name: String,
        #[arg(long)]
        topology: Option<PathBuf>,
        #[arg(long, default_value_t = 10)]
        cycles: usize,
        #[arg(long)]
        json: bool,
    },
    /// Run a matrix file's cells (topologies × kernels), each a lab of
    /// its own (`lab up`, `lab run` of the file's suites, `lab down`),
    /// several at once as cores and memory allow, and compare each cell's
    /// run with its baseline (or its lab's earlier run). Exit 0 all passed
    /// and equal, 1 a failure or regression, 2 a cell not comparable.
    Matrix {
        /// The matrix file: TOML with topologies, suites, and optionally
        /// kernels, baseline, name and [guest] cpus and memory.
        file: PathBuf,
        #[command(flatten)]
        run: MatrixRunArgs,
        /// Run only this cell (as a CI job of `--emit` does).
        #[arg(long)]
        cell: Option<String>,
        /// Also write a JUnit XML report: one test suite per cell and
        /// suite, one test case per step (as `lab run --junit`).
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Print the cells as a CI system's matrix (one job each, running
        /// `lab matrix FILE --cell NAME`) and run nothing; with --json, as
        /// JSON (GitHub: for `fromJSON`).
        #[arg(long, value_enum)]
        emit: Option<EmitArg>,
        #[arg(long)]
        json: bool,
    },
    /// List the topology presets (usable as `--topology NAME`), one line
    /// each.
    Topologies {
        #[arg(long)]
        json: bool,
    },
    /// Guest image commands.
    Image {
        #[command(subcommand)]
        verb: ImageVerb,
    },
    /// Guest kernel commands.
    Kernel {
        #[command(subcommand)]
        verb: KernelVerb,
    },
}

#[derive(Subcommand)]
enum KernelVerb {
    /// Print the kernel config fragment the lab needs, for
    /// scripts/kconfig/merge_config.sh: required options (lab up refuses a
    /// kernel without them), then optional ones (suites named are skipped
    /// without them), each with why. `--check` checks a kernel's config.
    Config {
        /// Check this kernel's config instead: a .config or config-* file,
        /// a kernel build tree, or a vmlinux/bzImage/configs.ko with an
        /// embedded config (CONFIG_IKCONFIG). Exits 1 when lab up would
        /// refuse it.
        #[arg(long)]
        check: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct BaselinesArg {
    /// Where baselines are saved and looked up by name.
    #[arg(
        long = "baselines",
        value_name = "DIR",
        env = "CXL_LAB_BASELINES",
        default_value = "baselines"
    )]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum BaselineVerb {
    /// Copy a run of the lab (its latest by default) to <baselines>/NAME.
    Save {
        #[command(flatten)]
        name: NameArg,
        /// The baseline's name (a directory under --baselines).
        baseline: String,
        /// A run id or run directory; the lab's latest run when absent.
        #[arg(long)]
        run: Option<String>,
        /// Replace an existing baseline of that name.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        baselines: BaselinesArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum EmitArg {
    Github,
    Gitlab,
}

#[derive(clap::Args)]
struct MatrixRunArgs {
    /// Labs at once [default: one per core, as many as the available
    /// memory holds].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// Where matrix runs are kept (`<DIR>/<matrix id>/`, `<DIR>/latest`)
    /// [default: <state root>/matrix/<file stem>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl MatrixRunArgs {
    fn options(
        &self,
        spec: cxl_lab::matrix::spec::MatrixSpec,
    ) -> anyhow::Result<verbs::MatrixOptions> {
        let lab = std::env::current_exe().context("finding the lab binary the cells run")?;
        Ok(verbs::MatrixOptions {
            out: self
                .out
                .clone()
                .unwrap_or_else(|| verbs::matrix::default_out(&spec)),
            spec,
            lab,
            jobs: self.jobs.map(|j| j as usize),
        })
    }
}

/// A stop flag that Ctrl-C raises: the matrix's cells stop and bring
/// their labs down.
fn ctrl_c_stop() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping the cells and bringing their labs down");
            let _ = tx.send(true);
        }
    });
    rx
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Timing mode's cost and stall mode's ratios, from one
    /// `lab up --timing=stall`: the README overhead table's two workloads
    /// armed and disarmed, then mem-probe's CXL/local latency and
    /// bandwidth ratios with stall off and at each --factor.
    Timing {
        #[arg(long, default_value = "bench-timing")]
        name: String,
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Measured runs of each workload each way, after one unmeasured first run (their median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Model settings: every device's read latency as this multiple
        /// of the local latency (repeatable).
        #[arg(long = "factor", default_values_t = [1.0, 2.0, 3.0])]
        factors: Vec<f64>,
        #[arg(long)]
        json: bool,
    },
    Boot {
        #[arg(long, default_value = "bench")]
        name: String,
        #[arg(long)]
        topology: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Boot in timing mode (the TCG plugin loaded, armed after regions).
        #[arg(long)]
        timing: bool,
        #[arg(long)]
        json: bool,
    },
    /// Today's cold path (the image built from scratch into a scratch
    /// cache, then a cold `lab up`) against the rebuild loop (a finished
    /// make to regions ready with a kernel the lab has never seen: `lab up
    /// --kernel --cold`), from one run: each one's seconds, their parts
    /// and the ratio. Removes the scratch cache and all made in it.
    Rebuild {
        #[arg(long, default_value = "bench-rebuild")]
        name: String,
        #[arg(long)]
        topology: Option<PathBuf>,
        /// A kernel build tree: FILE is touched and the tree's `make -jN`
        /// run before the loop (its seconds reported apart). Without it,
        /// the loop's kernel is a stand-in: the image's kernel as a
        /// vmlinuz and a modules directory, new to the bench's scratch cache.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// The source file touched, relative to the tree.
        #[arg(long, default_value = cxl_lab::verbs::bench_rebuild::DEFAULT_TOUCH)]
        touch: PathBuf,
        /// make's -j (default: the host's cores).
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// The matrix at its parallelism, then again one cell at a time, and
    /// the ratio of their wall times (each run kept as `lab matrix` keeps
    /// it).
    Matrix {
        file: PathBuf,
        #[command(flatten)]
        run: MatrixRunArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImageVerb {
    /// List the saved post-boot lab states `lab up` restores (newest
    /// first per lab), or remove them.
    Snapshots {
        /// Remove them (only lab NAME's with `--lab`).
        #[arg(long)]
        remove: bool,
        /// Only this lab's.
        #[arg(long)]
        lab: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Build (or find cached) the guest image.
    Build {
        /// Rebuild even when cached.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Re-resolve images/packages.lock, the exact Debian packages the image
    /// is built from: pins packages the recipe added and versions gone from
    /// the archive, keeps the rest (`--newest` moves everything), and prints
    /// what changed. Rebuild lab afterwards (`cargo build -p cxl-lab`): the
    /// lock is embedded in it.
    Update {
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Move every package to the newest version apt offers (kernel
        /// included), not only the unpinned and gone ones.
        #[arg(long)]
        newest: bool,
        /// The lock file to read and write [default: images/packages.lock
        /// of the source tree lab was built from].
        #[arg(long)]
        lock: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `lab compare`'s runs, or exit 2: runs that cannot be read cannot be
/// compared.
fn compare_or_exit(
    lab: &str,
    base: Option<&str>,
    new: Option<&str>,
    baselines: &std::path::Path,
) -> cxl_lab::gate::compare::Comparison {
    verbs::compare_runs(lab, base, new, baselines).unwrap_or_else(|e| {
        eprintln!(
            "lab compare: not comparable: {}",
            cxl_lab::error::error_chain(&e)
        );
        std::process::exit(2);
    })
}

fn print_comparison(c: &cxl_lab::gate::compare::Comparison, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(c)
    } else {
        print!("{}", text::comparison(c));
        Ok(())
    }
}

async fn follow_console(path: PathBuf, follow: bool) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut pos = 0u64;
    loop {
        if let Ok(mut f) = std::fs::File::open(&path) {
            f.seek(SeekFrom::Start(pos))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            pos += buf.len() as u64;
            std::io::stdout().write_all(&buf)?;
            std::io::stdout().flush()?;
        } else if !follow {
            anyhow::bail!("no console log at {}; is the lab up?", path.display());
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `lab kernel config [--check PATH] [--json]`.
fn kernel_config(check: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    use cxl_lab::kconfig::{KernelConfig, Need, OPTIONS};
    let Some(path) = check else {
        if json {
            let of = |need| {
                OPTIONS
                    .iter()
                    .filter(|o| o.need == need)
                    .collect::<Vec<_>>()
            };
            print_json(&serde_json::json!({
                "required": of(Need::Required),
                "optional": of(Need::Optional),
            }))?;
        } else {
            print!("{}", cxl_lab::kconfig::fragment());
        }
        return Ok(());
    };
    let config = KernelConfig::read(&path)
        .with_context(|| format!("reading the kernel config of {}", path.display()))?;
    let refused = config.check_boot().err();
    let unsatisfied = config.unsatisfied();
    if json {
        let names = |need| {
            unsatisfied
                .iter()
                .filter(|o| o.need == need)
                .collect::<Vec<_>>()
        };
        print_json(&serde_json::json!({
            "origin": config.origin,
            "boots": refused.is_none(),
            "missing_required": names(Need::Required),
            "missing_optional": names(Need::Optional),
        }))?;
    } else {
        match &refused {
            Some(e) => println!("{e}"),
            None => println!("{}: has every option lab up needs.", config.origin),
        }
        for o in unsatisfied.iter().filter(|o| o.need == Need::Optional) {
            let who = if o.suites.is_empty() {
                String::new()
            } else {
                format!(" (skips {})", o.suites.join(", "))
            };
            println!("  optional CONFIG_{}{who}: {}", o.name, o.why);
        }
    }
    if refused.is_some() {
        std::process::exit(1);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("LAB_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let ui = || Events::new(TerminalUi::default());
    match args.verb {
        Verb::Kernel {
            verb: KernelVerb::Config { check, json },
        } => kernel_config(check, json)?,
        Verb::Up {
            name,
            topology,
            accel,
            boot_timeout,
            timing,
            kernel,
            cold,
            no_save,
            json,
        } => {
            let opts = UpOptions {
                name: name.name.clone(),
                topology,
                accel: accel.into(),
                image: ImageOptions::default(),
                boot_timeout: Duration::from_secs(boot_timeout),
                timing: timing.is_some(),
                stall: timing == Some(TimingArg::Stall),
                kernel: kernel.kernel,
                modules: kernel.modules,
                cold,
                save: !no_save,
            };
            let events = ui();
            let summary = tokio::select! {
                r = verbs::up(&opts, &events) => r.context("lab up failed")?,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted: tearing down");
                    verbs::down(&name.name, &events).await.context("tearing down after Ctrl-C")?;
                    std::process::exit(130);
                }
            };
            if json {
                print_json(&summary)?;
            } else {
                print!("{}", text::summary(&summary));
            }
        }
        Verb::Down { name, json } => {
            let r = verbs::down(&name.name, &ui())
                .await
                .context("lab down failed")?;
            if json {
                print_json(&r)?;
            } else {
                print!("{}", text::down(&r));
            }
        }
        Verb::Status { name, json } => {
            let s = verbs::status(&name.name)
                .await
                .context("lab status failed")?;
            if json {
                print_json(&s)?;
            } else {
                print!("{}", text::status(&s));
            }
        }
        Verb::Exec {
            name,
            timeout,
            json,
            command,
        } => {
            let out = verbs::exec(&name.name, &command, Duration::from_secs(timeout)).await;
            if let Err(LabError::Guest(e)) = &out {
                if let cxl_lab::qga::QgaError::OutputTruncated { output, .. } = &**e {
                    // Show what was captured before saying it is cut off.
                    print!("{}", output.stdout);
                    eprint!("{}", output.stderr);
                }
            }
            let out =
                out.with_context(|| format!("running `{}` in the guest", command.join(" ")))?;
            if json {
                print_json(&out)?;
            } else {
                print!("{}", out.stdout);
                eprint!("{}", out.stderr);
            }
            let code = if out.signal.is_some() {
                128 + out.signal.unwrap_or(0)
            } else {
                out.exit_code
            };
            std::process::exit(code.clamp(0, 255) as i32);
        }
        Verb::Inject { name, json, what } => {
            let r = verbs::inject(&name.name, &what)
                .await
                .with_context(|| format!("lab inject {} failed", what.form()))?;
            if json {
                print_json(&r)?;
            } else {
                print!("{}", text::inject(&r));
            }
        }
        Verb::Run {
            name,
            suites,
            junit,
            compare,
            baselines,
            json,
        } => {
            let report = verbs::run_selection(&name.name, &suites, &ui())
                .await
                .context("lab run failed")?;
            if json {
                print_json(&report)?;
            } else {
                print!("{}", text::suite_table(&report));
            }
            if let Some(file) = &junit {
                verbs::run::write_junit(&report.run_dir, file).context("lab run --junit failed")?;
            }
            let failed = report.suites.iter().any(|r| r.failed());
            let mut code = i32::from(failed);
            if let Some(base) = compare {
                let dir = report.run_dir.display().to_string();
                let c = compare_or_exit(&name.name, Some(&base), Some(&dir), &baselines.dir);
                print_comparison(&c, json)?;
                code = match c.verdict.exit_code() {
                    2 => 2,
                    n => n.max(code),
                };
            }
            std::process::exit(code);
        }
        Verb::Compare {
            name,
            base,
            new,
            baselines,
            json,
        } => {
            let c = compare_or_exit(&name.name, base.as_deref(), new.as_deref(), &baselines.dir);
            print_comparison(&c, json)?;
            std::process::exit(c.verdict.exit_code());
        }
        Verb::Report {
            name,
            run,
            output,
            baseline,
            baselines,
        } => {
            let w = verbs::report(
                &name.name,
                run.as_deref(),
                output.as_deref(),
                baseline.as_deref(),
                &baselines.dir,
            )
            .context("lab report failed")?;
            match &w.comparison {
                Some(c) => println!(
                    "report of {} against {} ({}) written to {}",
                    w.run.display(),
                    c.base,
                    match c.verdict {
                        Verdict::Equal => "equal",
                        Verdict::Regression => "REGRESSION",
                        Verdict::NotComparable => "not comparable",
                    },
                    w.file.display()
                ),
                None => println!(
                    "report of {} written to {}",
                    w.run.display(),
                    w.file.display()
                ),
            }
        }
        Verb::Baseline {
            verb:
                BaselineVerb::Save {
                    name,
                    baseline,
                    run,
                    force,
                    baselines,
                },
        } => {
            let dir =
                verbs::save_baseline(&name.name, &baseline, run.as_deref(), &baselines.dir, force)
                    .context("lab baseline save failed")?;
            println!("baseline '{baseline}' saved in {}", dir.display());
        }
        Verb::Args {
            name,
            topology,
            timing,
            accel,
            kernel,
            json,
        } => {
            let opts = UpOptions {
                name: name.name,
                topology,
                accel: accel.into(),
                timing,
                kernel: kernel.kernel,
                modules: kernel.modules,
                ..UpOptions::default()
            };
            let argv = verbs::args(&opts).context("lab args failed")?;
            if json {
                print_json(&argv)?;
            } else {
                println!("{}", cxl_lab::qemu::shell_line(&argv));
            }
        }
        Verb::Topologies { json } => {
            if json {
                let list: Vec<serde_json::Value> = cxl_topology::PRESETS
                    .iter()
                    .map(|p| serde_json::json!({"name": p.name, "summary": p.summary}))
                    .collect();
                print_json(&list)?;
            } else {
                print!("{}", cxl_lab::text::topologies(cxl_topology::PRESETS));
            }
        }
        Verb::Console { name, no_follow } => {
            let run = verbs::run_dir(&name.name)?;
            follow_console(cxl_lab::qemu::console_log(&run.dir), !no_follow).await?;
        }
        Verb::Bench {
            what:
                BenchWhat::Timing {
                    name,
                    topology,
                    runs,
                    factors,
                    json,
                },
        } => {
            let opts = UpOptions {
                name,
                topology,
                accel: AccelChoice::Tcg,
                ..UpOptions::default()
            };
            let b = verbs::bench::bench_timing(&opts, runs, &factors, &ui())
                .await
                .context("lab bench timing failed")?;
            if json {
                print_json(&b)?;
            } else {
                print!("{}", cxl_lab::text::bench_timing(&b));
            }
        }
        Verb::Bench {
            what:
                BenchWhat::Boot {
                    name,
                    topology,
                    runs,
                    timing,
                    json,
                },
        } => {
            let opts = UpOptions {
                name,
                topology,
                accel: AccelChoice::Tcg,
                timing,
                ..UpOptions::default()
            };
            let b = verbs::bench_boot(&opts, runs, &Events::none())
                .await
                .context("lab bench boot failed")?;
            if json {
                print_json(&b)?;
            } else {
                print!("{}", text::bench_boot(&b));
            }
        }
        Verb::Bench {
            what:
                BenchWhat::Rebuild {
                    name,
                    topology,
                    kernel,
                    touch,
                    jobs,
                    json,
                },
        } => {
            let opts = cxl_lab::verbs::bench_rebuild::RebuildOptions {
                up: UpOptions {
                    name,
                    topology,
                    accel: AccelChoice::Tcg,
                    ..UpOptions::default()
                },
                tree: kernel,
                touch,
                jobs: jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            };
            let b = verbs::bench_rebuild(&opts, &ui())
                .await
                .context("lab bench rebuild failed")?;
            if json {
                print_json(&b)?;
            } else {
                print!("{}", text::bench_rebuild(&b));
            }
        }
        Verb::Matrix {
            file,
            run,
            cell,
            junit,
            emit,
            json,
        } => {
            let mut spec = cxl_lab::matrix::spec::MatrixSpec::load(&file)
                .context("lab matrix cannot use its file")?;
            if let Some(cell) = &cell {
                spec = spec.select(cell).context("lab matrix --cell")?;
            }
            if let Some(emit) = emit {
                use cxl_lab::matrix::emit;
                let lab = std::env::args().next().unwrap_or_else(|| "lab".into());
                match (emit, json) {
                    (EmitArg::Github, false) => print!("{}", emit::github(&spec, &lab)),
                    (EmitArg::Gitlab, false) => print!("{}", emit::gitlab(&spec, &lab)),
                    // One line, for a job output (`fromJSON`).
                    (EmitArg::Github, true) => println!("{}", emit::github_json(&spec, &lab)),
                    (EmitArg::Gitlab, true) => print_json(&emit::gitlab_json(&spec, &lab))?,
                }
                return Ok(());
            }
            let opts = run.options(spec)?;
            let m = verbs::matrix(&opts, &ui(), ctrl_c_stop())
                .await
                .context("lab matrix failed")?;
            if let Some(file) = &junit {
                verbs::matrix::write_matrix_junit(&m, file).context("lab matrix --junit failed")?;
            }
            if json {
                print_json(&m)?;
            } else {
                print!("{}", text::matrix(&m));
            }
            std::process::exit(if m.interrupted {
                130
            } else {
                m.verdict.exit_code()
            });
        }
        Verb::Bench {
            what: BenchWhat::Matrix { file, run, json },
        } => {
            let spec = cxl_lab::matrix::spec::MatrixSpec::load(&file)
                .context("lab bench matrix cannot use its file")?;
            let opts = run.options(spec)?;
            let b = verbs::bench_matrix(&opts, &ui(), ctrl_c_stop())
                .await
                .context("lab bench matrix failed")?;
            if json {
                print_json(&b)?;
            } else {
                print!("{}", text::matrix_bench(&b));
            }
        }
        Verb::Soak {
            name,
            topology,
            cycles,
            json,
        } => {
            let opts = UpOptions {
                name: name.clone(),
                topology,
                accel: AccelChoice::Tcg,
                ..UpOptions::default()
            };
            eprint!("{}", text::SOAK_HEADER);
            let quiet = Events::none();
            let soak = verbs::soak(&opts, cycles, &quiet, |c| {
                eprint!("{}", text::soak_cycle(c))
            });
            let r = tokio::select! {
                r = soak => r.context("lab soak failed")?,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted: tearing down");
                    verbs::down(&name, &Events::none()).await.context("tearing down after Ctrl-C")?;
                    std::process::exit(130);
                }
            };
            if json {
                print_json(&r)?;
            } else {
                print!("{}", text::soak(&r));
            }
            if r.failures > 0 || r.cycles_with_leftovers > 0 {
                std::process::exit(1);
            }
        }
        Verb::Image {
            verb: ImageVerb::Snapshots { remove, lab, json },
        } => {
            let root = cxl_lab::snapshot::root();
            let entries = if remove {
                cxl_lab::snapshot::remove(&root, lab.as_deref())
            } else {
                cxl_lab::snapshot::list(&root)
                    .into_iter()
                    .filter(|e| lab.as_deref().is_none_or(|l| e.lab == l))
                    .collect()
            };
            if json {
                print_json(&entries)?;
            } else {
                print!("{}", text::snapshots(&entries, remove));
            }
        }
        Verb::Image {
            verb: ImageVerb::Build { force, json },
        } => {
            let opts = ImageOptions {
                force,
                ..ImageOptions::default()
            };
            let img = cxl_lab::image::build(&opts, &ui()).context("building the guest image")?;
            if json {
                print_json(&img.manifest)?;
            } else {
                print!("{}", text::image(&img));
            }
        }
        Verb::Image {
            verb:
                ImageVerb::Update {
                    dry_run,
                    newest,
                    lock,
                    json,
                },
        } => {
            let opts = cxl_lab::image::UpdateOptions {
                lock_path: lock.unwrap_or_else(cxl_lab::image::lock::source_lock_path),
                policy: if newest {
                    cxl_lab::image::lock::UpdatePolicy::Newest
                } else {
                    cxl_lab::image::lock::UpdatePolicy::KeepPins
                },
                dry_run,
            };
            let r = cxl_lab::image::update(&opts).context("updating the package lock")?;
            if json {
                print_json(&r)?;
            } else {
                print!("{}", text::image_update(&r));
            }
        }
    }
    Ok(())
}
