//! The `ioriot` binary end to end on the host: generate (recording `-w`)
//! → init → replay in worker processes (in the working directory, `-D`
//! as the caches cannot be dropped without root) → purge, and `-u USER`
//! (root only). `{M}` is a temporary directory the capture lists as an
//! ext4 mount, so the test tree is `{M}/.ioriot/t`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const CAPTURE: &str = "#|capture_version=3|
#mount ext4 {M}
t=1000;:,D=10;:,i=50:50;:,o=mkdir;:,p={M}/data/out;:,m=493;:,s=0;:,
t=1100;:,D=10;:,i=50:50;:,o=openat;:,d=3;:,p={M}/data/out/f;:,f=577;:,m=420;:,
t=1200;:,D=10;:,i=50:50;:,o=write;:,d=3;:,c=4096;:,b=4096;:,
t=1300;:,D=10;:,i=50:50;:,o=close;:,d=3;:,s=0;:,
t=1400;:,D=10;:,i=60:60;:,o=openat;:,d=3;:,p={M}/data/in;:,f=0;:,m=0;:,
t=1500;:,D=10;:,i=60:60;:,o=read;:,d=3;:,c=4096;:,b=100;:,
t=1600;:,D=10;:,i=60:60;:,o=close;:,d=3;:,s=0;:,
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

/// Generates the replay; returns the directory, the replay file, the test
/// tree and the working directory base (given to generate with -w).
fn setup(user: Option<&str>) -> (tempfile::TempDir, String, String, String) {
    let t = tempfile::tempdir().unwrap();
    // Readable by a replay user.
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cap = t.path().join("c.capture");
    let m = t.path().display().to_string();
    std::fs::write(&cap, CAPTURE.replace("{M}", &m)).unwrap();
    let rep = t.path().join("c.replay").display().to_string();
    let wd = format!("{m}/wd");
    let mut args = vec![
        "-c",
        cap.to_str().unwrap(),
        "-r",
        &rep,
        "-n",
        "t",
        "-w",
        &wd,
        "--json",
    ];
    if let Some(u) = user {
        args.extend(["-u", u]);
    }
    let g: serde_json::Value = serde_json::from_str(&ioriot(&args)).unwrap();
    assert_eq!(g["kept"], 7);
    assert_eq!(g["pids"].as_object().unwrap().len(), 2);
    let tree = format!("{m}/.ioriot/t");
    (t, rep, tree, wd)
}

#[test]
fn generate_init_replay_in_worker_processes_and_purge() {
    let (_t, rep, tree, wd) = setup(None);
    // init finds the working directory base generate recorded.
    let init: serde_json::Value = serde_json::from_str(&ioriot(&["-i", &rep, "--json"])).unwrap();
    assert_eq!(init["wd"], format!("{wd}/t"));
    assert_eq!(init["trees"][0], tree);
    assert_eq!(
        (
            init["dirs"].as_u64(),
            init["files"].as_u64(),
            init["bytes"].as_u64()
        ),
        (Some(1), Some(1), Some(100))
    );
    let stats_file = format!("{wd}.stats.json");
    let s: serde_json::Value = serde_json::from_str(&ioriot(&[
        "-D",
        "-r",
        &rep,
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
        std::fs::metadata(format!("{tree}/data/out/f"))
            .unwrap()
            .len(),
        4096
    );
    let shown = ioriot(&["-S", &stats_file]);
    assert!(shown.starts_with("replayed 7 ops"), "{shown}");
    assert!(shown.contains("\nwrite "), "{shown}");
    let text = ioriot(&["-r", &rep, "-D", "-p", "1", "-t", "1"]);
    assert!(text.starts_with("replayed 7 ops"), "{text}");
    ioriot(&["-P", &rep]);
    assert!(!Path::new(&tree).exists());
    assert!(!Path::new(&format!("{wd}/t")).exists());
}

#[test]
fn replay_drops_the_caches_unless_d() {
    // SAFETY: plain id query.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: root may drop the caches");
        return;
    }
    let (_t, rep, _, _) = setup(None);
    ioriot(&["-i", &rep]);
    let out = Command::new(env!("CARGO_BIN_EXE_ioriot"))
        .args(["-r", &rep])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("give -D to replay without dropping them"),
        "{err}"
    );
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
    let (_t, rep, tree, _) = setup(Some("nobody"));
    ioriot(&["-i", &rep]);
    for p in ["", "/data", "/data/in"] {
        assert_eq!(
            std::fs::metadata(format!("{tree}{p}")).unwrap().uid(),
            nobody.uid,
            "{p}"
        );
    }
    let s: serde_json::Value =
        serde_json::from_str(&ioriot(&["-r", &rep, "-D", "--json"])).unwrap();
    assert_eq!(
        (s["errors"].as_u64(), s["mismatches"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    // Created by the replay, so owned by the replay's user.
    assert_eq!(
        std::fs::metadata(format!("{tree}/data/out/f"))
            .unwrap()
            .uid(),
        nobody.uid
    );
}
