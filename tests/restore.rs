//! Restored labs: the first `lab up` of a key boots cold and saves the
//! VM; the next restores it. The restored guest has the regions and dax
//! devices of a cold boot, pmem data written after the save (the backing
//! is the truth, not the state file), a volatile device that works, the
//! dax suite passing, a working guest agent, the image extras mounted and
//! a clock that is right; a lab of another name restores the same state;
//! `--cold` and a changed topology boot cold. One test: its boots run one
//! after another.

use cxl_lab::events::Events;
use cxl_lab::rundir::BootKind;
use cxl_lab::snapshot;
use cxl_lab::suites::Suite;
use cxl_lab::summary::Summary;
use cxl_lab::verbs::{self, UpOptions};
use lab_e2e::{error_chain, TestLab};

const LAB: &str = "restore";

fn dax_of(s: &Summary, device: &str) -> String {
    s.devices
        .iter()
        .find(|d| d.name == device)
        .and_then(|d| d.dax.clone())
        .unwrap_or_else(|| panic!("no dax device for {device} in {s:#?}"))
}

fn pattern(lab: &TestLab, action: &str, dax: &str, seed: &str) {
    lab.run(&[
        "dax-pattern",
        action,
        dax,
        "--offset",
        "6M",
        "--len",
        "2M",
        "--seed",
        seed,
    ]);
}

/// `lab up` (on `topology` when given; `--cold` with `cold`).
fn up(lab: &TestLab, topology: Option<&std::path::Path>, cold: bool) -> Summary {
    let events = Events::new(lab.recorder.clone());
    let opts = UpOptions {
        topology: topology.map(ToOwned::to_owned),
        cold,
        save: true,
        ..lab.options()
    };
    lab.rt
        .block_on(verbs::up(&opts, &events))
        .unwrap_or_else(|e| panic!("lab up failed: {}", error_chain(&e)))
}

fn up_restoring(lab: &TestLab, topology: Option<&std::path::Path>) -> Summary {
    up(lab, topology, false)
}

/// `v` without its `memdev` names: the kernel numbers memdevs in the order
/// it probes them, and the PCI rescan after a restore probes the devices in
/// whichever order their probes finish (vmem0 was `mem1` in one run); the
/// lab maps each device to its memdev either way.
fn without_memdevs(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(k, _)| k != "memdev")
            .map(|(k, v)| (k, without_memdevs(v)))
            .collect(),
        serde_json::Value::Array(a) => a.into_iter().map(without_memdevs).collect(),
        v => v,
    }
}

#[test]
fn a_saved_lab_is_restored_as_it_was_with_todays_backing() {
    let lab = TestLab::new(LAB);
    // What an earlier run of this test saved (its larger topology's state
    // among them). The default topology's state may be another lab's: the
    // first boot is cold (`--cold`), and its state replaces that one.
    snapshot::remove(&snapshot::root(), Some(LAB));

    let cold = up(&lab, None, true);
    assert_eq!(cold.timings.boot, BootKind::Cold, "--cold boots the kernel");
    let saved = snapshot::list(&snapshot::root())
        .into_iter()
        .filter(|e| e.lab == LAB)
        .count();
    assert_eq!(
        saved,
        1,
        "the cold boot saved its state: {:?}",
        lab.recorder.events()
    );
    let cold_daxes = lab.run(&["sh", "-c", "ls /dev/dax*"]);
    // Written after the save: only the backing file has it.
    let pdax = dax_of(&cold, "pmem0");
    pattern(&lab, "write", &pdax, "44");
    lab.down();

    let restored = up_restoring(&lab, None);
    assert_eq!(
        restored.timings.boot,
        BootKind::Restored,
        "the second lab up restores: {:?}",
        lab.recorder.events()
    );
    assert_eq!(
        without_memdevs(serde_json::to_value(&restored.devices).unwrap()),
        without_memdevs(serde_json::to_value(&cold.devices).unwrap()),
        "the devices and their dax devices are as after the cold boot"
    );
    assert_eq!(
        without_memdevs(serde_json::to_value(&restored.regions).unwrap()),
        without_memdevs(serde_json::to_value(&cold.regions).unwrap())
    );
    assert_eq!(lab.run(&["sh", "-c", "ls /dev/dax*"]), cold_daxes);
    pattern(&lab, "verify", &pdax, "44");
    // The guest agent runs commands, the extras are mounted again, and
    // the clock was set from the host's.
    lab.run(&["sh", "-c", "grep -q ' /extras 9p ' /proc/mounts"]);
    let guest_now: u64 = lab
        .run(&["date", "+%s"])
        .trim()
        .parse()
        .expect("date +%s prints seconds");
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        guest_now.abs_diff(host_now) <= 30,
        "guest clock {guest_now} vs host {host_now}"
    );
    // The volatile device works as after a cold boot.
    let vdax = dax_of(&restored, "vmem0");
    pattern(&lab, "write", &vdax, "45");
    pattern(&lab, "verify", &vdax, "45");
    let vmem = restored
        .devices
        .iter()
        .find(|d| d.name == "vmem0")
        .expect("vmem0");
    let backing = std::fs::read(&vmem.backing).expect("the volatile backing file");
    let (off, len) = (6usize << 20, 2usize << 20);
    dax_pattern::check(&backing[off..off + len], 45, off as u64)
        .expect("the restored guest's writes reach the backing file");
    let report = lab
        .rt
        .block_on(verbs::run_suites(&lab.name, &[Suite::Dax], &Events::none()))
        .unwrap_or_else(|e| panic!("lab run dax: {}", error_chain(&e)));
    assert!(
        report.suites[0].passed,
        "the dax suite passes on a restored lab: {:?}",
        report.suites[0].error
    );
    lab.down();

    // --cold boots from the kernel although a state exists.
    let forced = up(&lab, None, true);
    assert_eq!(forced.timings.boot, BootKind::Cold);
    pattern(&lab, "verify", &pdax, "44");
    lab.down();

    // A lab of another name and the same key restores the same state, with
    // its own (empty) backing.
    let other_lab = TestLab::new("restore-other");
    let shared = up_restoring(&other_lab, None);
    assert_eq!(
        shared.timings.boot,
        BootKind::Restored,
        "a state is shared by every lab of its key: {:?}",
        other_lab.recorder.events()
    );
    let odax = dax_of(&shared, "pmem0");
    pattern(&other_lab, "write", &odax, "46");
    pattern(&other_lab, "verify", &odax, "46");
    other_lab.down();

    // Another topology is another key: a cold boot.
    let dir = tempfile_dir();
    let topology = dir.join("larger-vmem.toml");
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology/examples/default.toml"),
    )
    .expect("the default topology example");
    let changed = text.replacen("size = \"256M\"", "size = \"512M\"", 1);
    assert_ne!(changed, text);
    std::fs::write(&topology, changed).unwrap();
    let before: Vec<std::path::PathBuf> = snapshot::list(&snapshot::root())
        .into_iter()
        .map(|e| e.dir)
        .collect();
    let other = up_restoring(&lab, Some(&topology));
    assert_eq!(
        other.timings.boot,
        BootKind::Cold,
        "{:?}",
        lab.recorder.events()
    );
    lab.down();
    // The larger topology's state is of use to no other test; the default
    // one's is kept for the tests after this one to restore.
    for e in snapshot::list(&snapshot::root()) {
        if !before.contains(&e.dir) {
            let _ = std::fs::remove_dir_all(&e.dir);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch directory of this test run.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cxl-lab-restore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
