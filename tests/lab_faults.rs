//! Faults injected into the lab itself, each with its stated outcome:
//!
//! - cxl-memsim or QEMU killed (SIGKILL) during `lab run dax`: the suite
//!   fails naming the process that is gone, `lab status` says it is gone,
//!   `lab down` leaves nothing, the next `lab up` works and the persistent
//!   data written before the kill is there (also the range the suite
//!   borrowed and puts back).
//! - A guest command that outlives its timeout is killed with what it
//!   started; the guest agent stopped (SIGSTOP inside the guest): `lab
//!   exec` fails naming the silent agent, `lab status` reports it, and the
//!   guest is usable once the agent runs again.
//! - Backing files deleted under a running lab: the guest sees no change,
//!   `lab status` reports each file, `lab down` writes the persistent one
//!   back from cxl-memsim's open descriptor and leaves nothing else.
//! - The disk full while `lab up` makes the backing files: it fails naming
//!   the file and the fix, and leaves no file it made and no process.
//!
//! Boots are expensive, so the checks that stay independent share a lab.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cxl_lab::events::{Event, Events, Step};
use cxl_lab::leftovers;
use cxl_lab::suites::Suite;
use cxl_lab::summary::{SuiteResult, Summary};
use cxl_lab::verbs;
use lab_e2e::{error_chain, pid_alive, tools_dir, TestLab};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where the patterns go in the persistent dax device: one inside the
/// range the dax suite borrows (it saves and puts back its first 20 MiB),
/// one past it.
const BORROWED: u64 = 1 << 20;
const PAST: u64 = 64 << 20;
const LEN: u64 = 1 << 20;

/// The persistent device's dax device and where its data sits in the
/// backing file.
struct Pmem {
    dax: String,
    backing: PathBuf,
    /// The dax device's start in its region (and so in the backing file of
    /// the one-device region).
    dax_offset: u64,
}

fn sysfs_number(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("not a sysfs number: {s:?}"))
}

fn pmem(lab: &TestLab, summary: &Summary) -> Pmem {
    let d = summary
        .devices
        .iter()
        .find(|d| d.kind == cxl_topology::DeviceKind::Persistent && d.dax.is_some())
        .expect("the default topology has a persistent dax device");
    let dax = d.dax.clone().unwrap();
    let region = summary
        .regions
        .iter()
        .find(|r| r.devices == [d.name.clone()])
        .expect("the device's own region");
    let chardev = dax.trim_start_matches("/dev/");
    let start =
        sysfs_number(&lab.run(&["cat", &format!("/sys/bus/dax/devices/{chardev}/resource")]));
    Pmem {
        dax,
        backing: d.backing.clone(),
        dax_offset: start - region.start,
    }
}

fn pattern(lab: &TestLab, action: &str, dax: &str, offset: u64, seed: u64) {
    let (offset, len, seed) = (offset.to_string(), LEN.to_string(), seed.to_string());
    lab.run(&[
        "dax-pattern",
        action,
        dax,
        "--offset",
        &offset,
        "--len",
        &len,
        "--seed",
        &seed,
    ]);
}

/// Checks the pattern in the backing file itself, on the host.
fn host_check(p: &Pmem, backing: &Path, offset: u64, seed: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(backing).unwrap_or_else(|e| panic!("{}: {e}", backing.display()));
    let mut buf = vec![0u8; LEN as usize];
    f.read_exact_at(&mut buf, p.dax_offset + offset)
        .expect("reading the backing file");
    dax_pattern::check(&buf, seed, offset)
        .unwrap_or_else(|e| panic!("{} at {offset:#x}: {e}", backing.display()));
}

/// Runs `lab run dax`, SIGKILLing `pid` a moment after the suite started.
fn run_dax_killing(lab: &TestLab, pid: u32) -> SuiteResult {
    let recorder = lab.recorder.clone();
    let killer = std::thread::spawn(move || {
        let started = |e: &Event| matches!(e, Event::Started { step: Step::Command, detail } if detail == "suite dax");
        let t = Instant::now();
        while !recorder.events().iter().any(started) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "suite dax never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Into the suite: its copy of the persistent range is made and
        // dax-tester runs.
        std::thread::sleep(Duration::from_secs(5));
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL");
    });
    let results = lab
        .rt
        .block_on(verbs::run_suites(
            &lab.name,
            &[Suite::Dax],
            &Events::new(lab.recorder.clone()),
        ))
        .unwrap_or_else(|e| panic!("lab run dax: {}", error_chain(&e)));
    killer.join().expect("the killer thread");
    results.suites.into_iter().next().expect("one result")
}

/// After `lab down`: nothing of the lab runs or is left.
fn assert_nothing_left(lab: &TestLab, pids: &[u32]) {
    for &pid in pids {
        assert!(!pid_alive(pid), "pid {pid} still runs after lab down");
    }
    let run = verbs::run_dir(&lab.name).unwrap();
    let left = leftovers::of_lab(&run);
    assert!(left.is_empty(), "left after lab down: {left:#?}");
}

#[test]
fn simulator_or_qemu_killed_during_a_suite() {
    let lab = TestLab::new("e2e-killed");
    let summary = lab.up();
    let p = pmem(&lab, &summary);
    pattern(&lab, "write", &p.dax, BORROWED, 11);
    pattern(&lab, "write", &p.dax, PAST, 12);

    // cxl-memsim killed.
    let memsim = summary.simulator_pid.expect("simulator pid");
    let qemu = summary.qemu_pid.expect("QEMU pid");
    let r = run_dax_killing(&lab, memsim);
    let error = r.error.clone().unwrap_or_default();
    assert!(!r.passed, "the suite passed with cxl-memsim killed");
    assert!(
        error.starts_with(&format!(
            "cxl-memsim (pid {memsim}) of lab 'e2e-killed' is gone: it ended while the suite ran"
        )) && error.contains(
            "Run `lab down --name e2e-killed` to clean up, then `lab up --name e2e-killed`."
        ),
        "{error}"
    );
    let status = lab
        .rt
        .block_on(verbs::status(&lab.name))
        .unwrap_or_else(|e| panic!("lab status: {}", error_chain(&e)));
    assert!(
        !status.simulator_running && status.qemu_running,
        "{status:#?}"
    );
    assert!(
        status.problems.iter().any(|p| p.starts_with(&format!(
            "The simulator cxl-memsim (pid {memsim}) is gone (killed or crashed)"
        ))),
        "{:#?}",
        status.problems
    );
    // The suite put its borrowed range back although the simulator is gone.
    host_check(&p, &p.backing, BORROWED, 11);
    host_check(&p, &p.backing, PAST, 12);
    let down = lab.down();
    assert_eq!(
        (down.qemu.as_str(), down.simulator.as_str()),
        ("quit", "not running")
    );
    assert_nothing_left(&lab, &[memsim, qemu]);

    // The next lab up works and finds the data; then QEMU is killed.
    let summary = lab.up();
    let p = pmem(&lab, &summary);
    pattern(&lab, "verify", &p.dax, BORROWED, 11);
    pattern(&lab, "verify", &p.dax, PAST, 12);
    pattern(&lab, "write", &p.dax, PAST, 13);
    let memsim = summary.simulator_pid.expect("simulator pid");
    let qemu = summary.qemu_pid.expect("QEMU pid");
    let r = run_dax_killing(&lab, qemu);
    let error = r.error.clone().unwrap_or_default();
    assert!(!r.passed);
    assert!(
        error.starts_with(&format!(
            "QEMU (pid {qemu}) of lab 'e2e-killed' is gone: it ended while the suite ran (killed or crashed)"
        )),
        "{error}"
    );
    let status = lab
        .rt
        .block_on(verbs::status(&lab.name))
        .unwrap_or_else(|e| panic!("lab status: {}", error_chain(&e)));
    assert!(
        !status.qemu_running && status.simulator_running,
        "{status:#?}"
    );
    assert!(
        status.problems.iter().any(|p| p.starts_with(&format!(
            "QEMU (pid {qemu}) is gone (killed or crashed), and the guest with it"
        ))),
        "{:#?}",
        status.problems
    );
    // With the guest gone, the suite put the range back where it took it.
    host_check(&p, &p.backing, BORROWED, 11);
    host_check(&p, &p.backing, PAST, 13);
    let down = lab.down();
    assert_eq!(down.simulator, "terminated", "{down:?}");
    assert_nothing_left(&lab, &[memsim, qemu]);

    let summary = lab.up();
    let p = pmem(&lab, &summary);
    pattern(&lab, "verify", &p.dax, BORROWED, 11);
    pattern(&lab, "verify", &p.dax, PAST, 13);
    lab.down();
}

/// Waits until `lab exec -- true` works again, up to `limit`.
fn wait_usable(lab: &TestLab, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let argv = ["true".to_owned()];
        match lab
            .rt
            .block_on(verbs::exec(&lab.name, &argv, Duration::from_secs(10)))
        {
            Ok(out) if out.success() => return t.elapsed(),
            Ok(out) => panic!("`true` failed in the guest: {out:?}"),
            Err(e) => assert!(
                t.elapsed() < limit,
                "the guest is not usable {limit:?} later: {}",
                error_chain(&e)
            ),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn hung_guest_commands_and_agent_and_deleted_backing_files() {
    let lab = TestLab::new("e2e-hung");
    let summary = lab.up();

    // A command that outlives its timeout is killed with its children
    // (a child left alive would hold the output pipes open).
    let argv: Vec<String> = ["sh", "-c", "sleep 1000 & sleep 1001"]
        .map(String::from)
        .to_vec();
    let e = lab
        .rt
        .block_on(verbs::exec(&lab.name, &argv, Duration::from_secs(3)))
        .expect_err("sleep 1000 timed out");
    let msg = error_chain(&e);
    assert!(
        msg.starts_with("Guest command `sh -c sleep 1000 & sleep 1001` did not finish within 3s; lab killed it (guest pid"),
        "{msg}"
    );
    // (The guest's busybox has no pgrep.)
    let left = lab.exec(&["sh", "-c", "ps | grep '[s]leep 100'"]);
    assert!(
        !left.success(),
        "the timed-out command's processes still run: {}",
        left.stdout
    );
    // A busy loop too; the agent answers at once afterwards.
    let argv: Vec<String> = ["sh", "-c", "while :; do :; done"]
        .map(String::from)
        .to_vec();
    let e = lab
        .rt
        .block_on(verbs::exec(&lab.name, &argv, Duration::from_secs(3)))
        .expect_err("the loop timed out");
    assert!(
        error_chain(&e).contains("lab killed it"),
        "{}",
        error_chain(&e)
    );
    lab.run(&["true"]);

    // The guest agent stopped for 40 s by a process of the guest.
    lab.run(&[
        "sh",
        "-c",
        "setsid sh -c 'sleep 1; a=$(pidof qemu-ga); kill -STOP $a; sleep 40; kill -CONT $a' </dev/null >/dev/null 2>&1 &",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let argv = ["true".to_owned()];
    let e = lab
        .rt
        .block_on(verbs::exec(&lab.name, &argv, Duration::from_secs(10)))
        .expect_err("the agent is stopped");
    let msg = error_chain(&e);
    assert!(
        msg.starts_with("Cannot reach the guest agent of lab 'e2e-hung'. The guest agent did not answer guest-sync within 5s: the guest is hung or too busy, or its qemu-ga is stopped or hung.")
            && msg.contains("`lab down` then `lab up` restarts the guest"),
        "{msg}"
    );
    let status = lab
        .rt
        .block_on(verbs::status(&lab.name))
        .unwrap_or_else(|e| panic!("lab status: {}", error_chain(&e)));
    assert!(status.qemu_running && !status.agent_answers, "{status:#?}");
    assert!(
        status
            .problems
            .iter()
            .any(|p| p.starts_with("The guest agent does not answer")),
        "{:#?}",
        status.problems
    );
    let waited = wait_usable(&lab, Duration::from_secs(120));
    eprintln!("the guest answered again {waited:?} after the agent was found stopped");

    // Backing files deleted under the running lab.
    let p = pmem(&lab, &summary);
    pattern(&lab, "write", &p.dax, PAST, 21);
    let vmem = summary
        .devices
        .iter()
        .find(|d| d.kind == cxl_topology::DeviceKind::Volatile)
        .expect("a volatile device");
    for f in [&p.backing, &vmem.backing] {
        std::fs::remove_file(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    // The guest still has its memory, and writes to it.
    pattern(&lab, "verify", &p.dax, PAST, 21);
    pattern(&lab, "write", &p.dax, BORROWED, 22);
    let status = lab
        .rt
        .block_on(verbs::status(&lab.name))
        .unwrap_or_else(|e| panic!("lab status: {}", error_chain(&e)));
    let deleted = |f: &Path, fate: &str| {
        let text = format!(
            "The backing file {} of device {} was deleted while the lab runs",
            f.display(),
            f.file_stem().unwrap().to_string_lossy()
        );
        assert!(
            status
                .problems
                .iter()
                .any(|p| p.starts_with(&text) && p.contains(fate)),
            "{text} … {fate}: {:#?}",
            status.problems
        );
    };
    deleted(&p.backing, "`lab down` writes its data back to that path");
    deleted(&vmem.backing, "its data (volatile) ends with the lab");
    let (qemu, memsim) = (summary.qemu_pid.unwrap(), summary.simulator_pid.unwrap());
    let down = lab.down();
    assert_eq!(down.recovered, vec![p.backing.display().to_string()]);
    assert!(down.lost.is_empty(), "{down:?}");
    host_check(&p, &p.backing, PAST, 21);
    host_check(&p, &p.backing, BORROWED, 22);
    assert_nothing_left(&lab, &[qemu, memsim]);
}

/// A small tmpfs, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: PathBuf, size: &str) -> SmallFs {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(
            st.success(),
            "mounting a {size} tmpfs at {} (needs root)",
            dir.display()
        );
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn disk_full_while_lab_up_makes_backing_files() {
    let root = std::env::var_os("CXL_LAB_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    // Room for the first device's 256 MiB, not for the second's.
    let fs = SmallFs::mount(
        root.join(format!("disk-full-{}", std::process::id())),
        "300M",
    );
    let out = Command::new(tools_dir().join("lab"))
        .args(["up", "--name", "full", "--accel", "tcg"])
        .env("CXL_LAB_STATE", &fs.0)
        .stdin(Stdio::null())
        .output()
        .expect("running lab up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lab up on a full disk worked: {err}");
    let run = cxl_lab::rundir::RunDir::under(&fs.0, "full").unwrap();
    let pmem = run.backing_dir().join("pmem0.mem");
    assert!(
        err.contains(&format!(
            "There is no room for the backing file {} of device pmem0 (268435456 bytes) on its filesystem; free that much space there, or run the lab on a filesystem with room (`lab` puts its run directories under $CXL_LAB_STATE).",
            pmem.display()
        )),
        "{err}"
    );
    let made: Vec<_> = std::fs::read_dir(run.backing_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "half-made files left: {made:?}");
    let left = leftovers::of_lab(&run);
    assert!(left.is_empty(), "{left:#?}");
    // Nothing of it runs (its command lines name the run directory).
    assert!(leftovers::processes_naming(&fs.0).is_empty());
}
