//! The `ioriot` binary end to end on the host: generate → init → replay in
//! worker processes → purge, and `-u USER` (root only).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const CAPTURE: &str = "#ioriot-capture 1
1000 10 50 50 mkdir 0 -100 /data/out - 493 0 0
1100 10 50 50 openat 3 -100 /data/out/f - 577 420 0
1200 10 50 50 write 4096 3 /data/out/f - 4096 0 0
1300 10 50 50 close 0 3 /data/out/f - 0 0 0
1400 10 60 60 openat 3 -100 /data/in - 0 0 0
1500 10 60 60 read 100 3 /data/in - 4096 0 0
1600 10 60 60 close 0 3 /data/in - 0 0 0
#end events=7 lost=0 truncated=0
";

fn ioriot(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ioriot"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ioriot {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn setup(user: Option<&str>) -> (tempfile::TempDir, String, String) {
    let t = tempfile::tempdir().unwrap();
    // Readable by a replay user.
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cap = t.path().join("c.capture");
    std::fs::write(&cap, CAPTURE).unwrap();
    let rep = t.path().join("c.replay").display().to_string();
    let mut args = vec!["-c", cap.to_str().unwrap(), "-r", &rep, "-n", "t", "--json"];
    if let Some(u) = user {
        args.extend(["-u", u]);
    }
    let g: serde_json::Value = serde_json::from_str(&ioriot(&args)).unwrap();
    assert_eq!(g["kept"], 7);
    assert_eq!(g["pids"].as_object().unwrap().len(), 2);
    let root = t.path().join("root").display().to_string();
    (t, rep, root)
}

#[test]
fn generate_init_replay_in_worker_processes_and_purge() {
    let (_t, rep, root) = setup(None);
    let init: serde_json::Value =
        serde_json::from_str(&ioriot(&["-i", &rep, "-w", &root, "--json"])).unwrap();
    assert_eq!(
        (
            init["dirs"].as_u64(),
            init["files"].as_u64(),
            init["bytes"].as_u64()
        ),
        (Some(1), Some(1), Some(100))
    );
    let stats_file = format!("{root}.stats.json");
    let s: serde_json::Value = serde_json::from_str(&ioriot(&[
        "-r",
        &rep,
        "-w",
        &root,
        "-p",
        "2",
        "-t",
        "2",
        "-s",
        "0",
        "-S",
        &stats_file,
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (
            s["ops"].as_u64(),
            s["errors"].as_u64(),
            s["mismatches"].as_u64()
        ),
        (Some(7), Some(0), Some(0))
    );
    assert_eq!(s["bytes_written"], 4096);
    assert_eq!(s["bytes_read"], 100);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stats_file).unwrap()).unwrap();
    assert_eq!(saved["ops"], 7);
    assert_eq!(
        std::fs::metadata(format!("{root}/t/data/out/f"))
            .unwrap()
            .len(),
        4096
    );
    let shown = ioriot(&["-S", &stats_file]);
    assert!(shown.starts_with("replayed 7 ops"), "{shown}");
    assert!(shown.contains("\nwrite "), "{shown}");
    let text = ioriot(&["-r", &rep, "-w", &root, "-s", "0"]);
    assert!(text.starts_with("replayed 7 ops"), "{text}");
    ioriot(&["-P", &rep, "-w", &root]);
    assert!(!Path::new(&format!("{root}/t")).exists());
}

#[test]
fn a_replay_user_owns_the_tree_and_runs_the_replay() {
    // SAFETY: plain id query.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CXL_LAB_NO_SKIP").is_none(),
            "-u needs root, and CXL_LAB_NO_SKIP forbids skipping"
        );
        eprintln!("skipped: -u needs root");
        return;
    }
    let nobody = ioriot::user::lookup("nobody").unwrap();
    let (_t, rep, root) = setup(Some("nobody"));
    ioriot(&["-i", &rep, "-w", &root]);
    for p in ["t", "t/data", "t/data/in"] {
        assert_eq!(
            std::fs::metadata(format!("{root}/{p}")).unwrap().uid(),
            nobody.uid,
            "{p}"
        );
    }
    let s: serde_json::Value =
        serde_json::from_str(&ioriot(&["-r", &rep, "-w", &root, "-s", "0", "--json"])).unwrap();
    assert_eq!(
        (s["errors"].as_u64(), s["mismatches"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    // Created by the replay, so owned by the replay's user.
    assert_eq!(
        std::fs::metadata(format!("{root}/t/data/out/f"))
            .unwrap()
            .uid(),
        nobody.uid
    );
}
