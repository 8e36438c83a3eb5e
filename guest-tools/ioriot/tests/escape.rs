//! Escape tests: crafted replays and captures with `..`, absolute outside
//! paths and outward symlinks must leave everything outside the test root
//! byte-identical, and every refusal is counted in the statistics.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use ioriot::capture_format;
use ioriot::generate::{generate, GenerateConfig};
use ioriot::order::Done;
use ioriot::replay::{run_worker, ReplayConfig};
use ioriot::replay_format;

/// Every entry under `dir`: type, mode, owner, size, content or link target.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else {
                format!("file {:?}", std::fs::read(&p).unwrap())
            };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} uid {} mtime {}",
                    m.permissions().mode(),
                    m.uid(),
                    m.mtime()
                ),
            );
        }
    }
    out
}

fn outside_tree(t: &Path) -> std::path::PathBuf {
    let o = t.join("outside");
    std::fs::create_dir_all(o.join("d")).unwrap();
    std::fs::write(o.join("secret"), b"do not touch").unwrap();
    std::fs::write(o.join("d/file"), b"nested").unwrap();
    o
}

const HOSTILE: &str = "\
#ioriot-replay 1
#name n
#vpids 1
#vtids 1
#source_ops 0
#source_span_ns 0
#INIT
d n/in
f 4 n/in/f
#REPLAY t_ns vpid vtid op vfd ret path path2 a b c
0 1 1 openat 1 3 n/../outside/secret - 577 420 0
1 1 1 mkdir 0 0 {OUT}/newdir - 493 0 0
2 1 1 unlink 0 0 {OUT}/secret - 0 0 0
3 1 1 creat 2 3 other/x - 420 0 0
4 1 1 symlink 0 0 n/rel ../../outside 0 0 0
5 1 1 openat 3 3 n/rel/secret - 513 0 0
5 1 1 write 3 4 n/rel/secret - 4 0 0
5 1 1 dup 3 4 n/rel/secret - 0 0 6
5 1 1 write 6 4 n/rel/secret - 4 0 0
6 1 1 mkdir 0 0 n/rel/made - 493 0 0
7 1 1 unlink 0 0 n/rel/secret - 0 0 0
8 1 1 chmod 0 0 n/rel - 511 0 0
9 1 1 rename 0 0 n/in/f n/rel/stolen 0 0 0
10 1 1 openat 4 3 n/abs - 513 0 0
12 1 1 rmdir 0 0 n/in/../../outside/d - 0 0 0
13 1 1 unlink 0 0 n/rel - 0 0 0
14 1 1 openat 5 3 n/in/f - 2 0 0
15 1 1 write 5 4 n/in/f - 4 0 0
16 1 1 close 5 0 n/in/f - 0 0 0
";

#[test]
fn hostile_replay_touches_nothing_outside_the_root() {
    let t = tempfile::tempdir().unwrap();
    let out = outside_tree(t.path());
    let text = HOSTILE.replace("{OUT}", out.to_str().unwrap());
    let rep = replay_format::read(text.as_bytes()).unwrap();
    let root = t.path().join("root");
    let before = snapshot(&out);
    let init = ioriot::init::init(&rep, &root).unwrap();
    assert_eq!((init.dirs, init.files, init.bytes), (1, 1, 4));
    // A hostile tree: an absolute link to the outside, made behind ioriot's back.
    std::os::unix::fs::symlink(out.join("secret"), root.join("n/abs")).unwrap();
    let t = std::time::Instant::now();
    let stats = replay_alone(&rep, &root);
    // Operations on the refused open's descriptor (and its dup) fail at
    // once: they do not wait for an open that will never come.
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    let r = stats.report(0, 0);
    assert_eq!((r.per_op["write"].errors, r.per_op["dup"].errors), (2, 1));
    assert_eq!(snapshot(&out), before, "the outside tree changed");
    let refused: BTreeMap<&str, u64> = r
        .per_op
        .iter()
        .filter(|(_, o)| o.refused > 0)
        .map(|(k, o)| (k.as_str(), o.refused))
        .collect();
    assert_eq!(
        refused,
        BTreeMap::from([
            ("chmod", 1),
            ("creat", 1),
            ("mkdir", 2),
            ("openat", 3),
            ("rename", 1),
            ("rmdir", 1),
            ("unlink", 2),
        ])
    );
    assert_eq!(r.refused, 11);
    let msgs = r.refusals.join("\n");
    for m in [
        "openat: Path 'n/../outside/secret' climbs out of the test directory with '..'.",
        "is absolute; replay paths are relative to the test root.",
        "creat: Path 'other/x' is not under the test directory 'n'.",
        "openat: Path 'n/rel/secret' resolves outside the test directory (a symlink points out).",
        "openat: Path 'n/abs' resolves outside the test directory (a symlink points out).",
    ] {
        assert!(msgs.contains(m), "missing refusal '{m}' in:\n{msgs}");
    }
    // What stays inside works: the link itself was removed, the file written.
    assert!(std::fs::symlink_metadata(root.join("n/rel")).is_err());
    assert_eq!(std::fs::read(root.join("n/in/f")).unwrap().len(), 4);
    assert_eq!(r.per_op["write"].bytes, 4);
    // purge removes the tree and the hostile link, not its target.
    assert!(ioriot::purge::purge(&root, "n").unwrap());
    assert_eq!(snapshot(&out), before);
}

#[test]
fn capture_paths_with_dotdot_stay_inside_after_generate() {
    let t = tempfile::tempdir().unwrap();
    let out = outside_tree(t.path());
    let o = out.to_str().unwrap();
    // The captured workload wrote through '..' chains and into the outside
    // directory's path: after generate both live under n/.
    let cap = format!(
        "#ioriot-capture 1
1000 10 50 50 openat 3 -100 /w/../../..{o}/secret - 577 420 0
1010 10 50 50 write 4096 3 - - 4096 0 0
1020 10 50 50 close 0 3 - - 0 0 0
1030 10 50 50 unlink 0 -100 {o}/d/file - 0 0 0
1040 10 50 50 rename 0 -100 /a/../{o}/secret {o}/moved 0 0 0
#end events=5 lost=0 truncated=0
"
    );
    let rep = generate_named_n(&cap);
    for op in &rep.ops {
        let p = op.path.as_deref().unwrap();
        assert!(
            p.starts_with(b"n/") && !p.windows(2).any(|w| w == b".."),
            "{op:?}"
        );
    }
    let root = t.path().join("root");
    let before = snapshot(&out);
    ioriot::init::init(&rep, &root).unwrap();
    let r = replay_alone(&rep, &root).report(0, 0);
    assert_eq!(snapshot(&out), before, "the outside tree changed");
    assert_eq!(
        (r.errors, r.refused, r.mismatches),
        (0, 0, 0),
        "{}",
        r.text()
    );
    let inside = root.join("n").join(o.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside.join("moved")).unwrap().len(), 4096);
    assert!(!inside.join("d/file").exists());
}

#[test]
fn the_root_directory_never_becomes_a_skeleton_file() {
    // An open of "/" (e.g. a path the kernel could not read, resolved
    // against a cwd of /) must not turn the test directory into a file.
    let cap = "#ioriot-capture 1
1000 10 50 50 openat 3 -100 / - 524288 0 0
1010 10 50 50 read 100 3 / - 4096 0 0
1020 10 50 50 close 0 3 / - 0 0 0
1030 10 50 50 mkdir 0 -100 /x - 493 0 0
";
    let rep = generate_named_n(cap);
    assert!(rep.init.is_empty(), "{:?}", rep.init);
    let t = tempfile::tempdir().unwrap();
    ioriot::init::init(&rep, t.path()).unwrap();
}

/// Replays `rep` under `root` with one worker of one thread at full speed.
fn replay_alone(rep: &ioriot::replay_format::Replay, root: &Path) -> ioriot::stats::Stats {
    let cfg = ReplayConfig {
        root: root.to_path_buf(),
        processes: 1,
        threads: 1,
        speed: 0.0,
    };
    let done = Done::anonymous(rep.ops.len()).unwrap();
    run_worker(rep, &cfg, 0, 1, &done).unwrap()
}

/// The replay of a capture given as text, under the test name `n`.
fn generate_named_n(capture: &str) -> ioriot::replay_format::Replay {
    let cap = capture_format::read(capture.as_bytes()).unwrap();
    let config = GenerateConfig {
        name: "n".into(),
        keep_tmpfs: true,
        user: None,
    };
    generate(&cap, &config).unwrap().0
}

#[test]
fn a_replay_named_dot_dot_is_refused_before_it_touches_anything() {
    let t = tempfile::tempdir().unwrap();
    let outside = outside_tree(t.path());
    let before = snapshot(t.path());
    for name in ["..", ".", "a/b", ""] {
        let text = HOSTILE.replace("#name n\n", &format!("#name {name}\n"));
        let err = replay_format::read(text.as_bytes())
            .expect_err("a replay whose #name is not one component");
        let msg = err.to_string();
        assert!(
            msg.contains("not a single path component") && msg.contains("-n NAME"),
            "{name:?}: {msg}"
        );
        // The jail refuses the name too, whoever builds the replay.
        let jail = ioriot::confine::Jail::new(&outside, name);
        assert!(
            matches!(jail, Err(ioriot::confine::ConfineError::Name(_))),
            "{name:?}: {jail:?}"
        );
    }
    assert_eq!(snapshot(t.path()), before);
}
