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

/// A replay of I/O Riot's format whose test tree is `{T}`
/// (`<mount>/.ioriot/n`); `{OUT}` is a directory outside it.
const HOSTILE: &str = "\
#|replay_version=2|init_offset=0|name=n|num_mapped_pids=1|num_mapped_tids=1|
0|0|1|1|0|31|1|{T}/../outside/secret|420|577|r=3|a=577|b=420|c=0|openat@1|
1|0|1|1|0|33|{OUT}/newdir|493|0|mkdir@2|
2|0|1|1|0|51|{OUT}/secret|0|unlink@3|
3|0|1|1|0|32|2|other/x|420|0|r=3|a=420|b=0|c=0|creat@4|
4|0|1|1|0|202|{T}/rel|../../../outside|r=0|a=0|b=0|c=0|symlink@5|
5|0|1|1|0|31|3|{T}/rel/secret|0|513|r=3|a=513|b=0|c=0|openat@6|
5|0|1|1|0|20|3|4|r=4|a=4|b=0|c=0|p={T}/rel/secret|write@7|
5|0|1|1|0|204|3|r=4|a=0|b=0|c=6|p={T}/rel/secret|dup@8|
5|0|1|1|0|20|6|4|r=4|a=4|b=0|c=0|p={T}/rel/secret|write@9|
6|0|1|1|0|33|{T}/rel/made|493|0|mkdir@10|
7|0|1|1|0|51|{T}/rel/secret|0|unlink@11|
8|0|1|1|0|100|{T}/rel|511|0|chmod@12|
9|0|1|1|0|40|{T}/in/f|{T}/rel/stolen|0|rename@13|
10|0|1|1|0|31|4|{T}/abs|0|513|r=3|a=513|b=0|c=0|openat@14|
12|0|1|1|0|53|{T}/in/../../outside/d|0|rmdir@15|
13|0|1|1|0|51|{T}/rel|0|unlink@16|
14|0|1|1|0|31|5|{T}/in/f|0|2|r=3|a=2|b=0|c=0|openat@17|
15|0|1|1|0|20|5|4|r=4|a=4|b=0|c=0|p={T}/in/f|write@18|
16|0|1|1|0|50|5|0|r=0|a=0|b=0|c=0|p={T}/in/f|close@19|
#INIT
1|0|0|0|{T}/in|
0|1|0|4|{T}/in/f|
";

#[test]
fn hostile_replay_touches_nothing_outside_the_root() {
    let t = tempfile::tempdir().unwrap();
    let out = outside_tree(t.path());
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let tree = mnt.join(".ioriot/n");
    let text = HOSTILE
        .replace("{OUT}", out.to_str().unwrap())
        .replace("{T}", tree.to_str().unwrap());
    let rep = replay_format::read(text.as_bytes()).unwrap();
    let before = snapshot(&out);
    let init = ioriot::init::init(&rep, &t.path().join("wd")).unwrap();
    assert_eq!((init.dirs, init.files, init.bytes), (1, 1, 4));
    assert_eq!(init.trees, vec![tree.clone()]);
    // A hostile tree: an absolute link to the outside, made behind ioriot's back.
    std::os::unix::fs::symlink(out.join("secret"), tree.join("abs")).unwrap();
    let t0 = std::time::Instant::now();
    let stats = replay_alone(&rep);
    // Operations on the refused open's descriptor (and its dup) fail at
    // once: they do not wait for an open that will never come.
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
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
        "/../outside/secret' climbs out of the test directory with '..'.",
        "is not inside a test tree '<mount point>/.ioriot/n/'.",
        "creat: Path 'other/x' is relative; replay paths are absolute",
        "/rel/secret' resolves outside the test directory (a symlink points out).",
        "/abs' resolves outside the test directory (a symlink points out).",
    ] {
        assert!(msgs.contains(m), "missing refusal '{m}' in:\n{msgs}");
    }
    // What stays inside works: the link itself was removed, the file written.
    assert!(std::fs::symlink_metadata(tree.join("rel")).is_err());
    assert_eq!(std::fs::read(tree.join("in/f")).unwrap().len(), 4);
    assert_eq!(r.per_op["write"].bytes, 4);
    // purge removes the tree and the hostile link, not its target.
    assert_eq!(ioriot::purge::purge(&rep, None).unwrap(), vec![tree]);
    assert_eq!(snapshot(&out), before);
}

#[test]
fn capture_paths_with_dotdot_stay_inside_after_generate() {
    let t = tempfile::tempdir().unwrap();
    let out = outside_tree(t.path());
    let o = out.to_str().unwrap();
    // The captured workload wrote through '..' chains and into the outside
    // directory's path: after generate what is kept lives in the test tree.
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let cap = format!(
        "#|capture_version=3|
#mount ext4 {m}
t=1000;:,D=10;:,i=50:50;:,o=openat;:,p={m}/w/../../..{o}/secret;:,f=577;:,m=420;:,d=3;:,
t=1010;:,D=10;:,i=50:50;:,o=write;:,d=3;:,c=4096;:,b=4096;:,
t=1020;:,D=10;:,i=50:50;:,o=close;:,d=3;:,s=0;:,
t=1030;:,D=10;:,i=50:50;:,o=unlink;:,p={m}{o}/d/file;:,s=0;:,
t=1040;:,D=10;:,i=50:50;:,o=rename;:,p={m}/a/../{o}/secret;:,P={m}{o}/moved;:,s=0;:,
#end events=5 lost=0 truncated=0
"
    );
    let rep = generate_named_n(&cap);
    // The open climbed out of the mount: on no mount the capture lists,
    // it has no test tree and is dropped with its descriptor's calls.
    assert_eq!(
        rep.ops.iter().map(|o| o.op.name()).collect::<Vec<_>>(),
        ["unlink", "rename"]
    );
    let tree = format!("{m}/.ioriot/n/");
    for op in &rep.ops {
        let p = op.path.as_deref().unwrap();
        assert!(
            p.starts_with(tree.as_bytes()) && !p.windows(2).any(|w| w == b".."),
            "{op:?}"
        );
    }
    let before = snapshot(&out);
    ioriot::init::init(&rep, &t.path().join("wd")).unwrap();
    let r = replay_alone(&rep).report(0, 0);
    assert_eq!(snapshot(&out), before, "the outside tree changed");
    assert_eq!(
        (r.errors, r.refused, r.mismatches),
        (0, 0, 0),
        "{}",
        r.text()
    );
    let inside = Path::new(&tree).join(o.trim_start_matches('/'));
    assert!(inside.join("moved").is_file());
    assert!(!inside.join("d/file").exists());
}

#[test]
fn the_root_directory_never_becomes_a_skeleton_file() {
    // An open of "/" (e.g. a path the kernel could not read, resolved
    // against a cwd of /) must not turn the test directory into a file.
    let t = tempfile::tempdir().unwrap();
    let m = t.path().to_str().unwrap();
    let cap = format!(
        "#|capture_version=3|
#mount ext4 {m}
t=1000;:,i=50:50;:,o=openat;:,p={m};:,f=524288;:,m=0;:,d=3;:,
t=1010;:,i=50:50;:,o=read;:,d=3;:,c=4096;:,b=100;:,
t=1020;:,i=50:50;:,o=close;:,d=3;:,s=0;:,
t=1030;:,i=50:50;:,o=mkdir;:,p={m}/x;:,m=493;:,s=0;:,
"
    );
    let rep = generate_named_n(&cap);
    assert!(rep.init.is_empty(), "{:?}", rep.init);
    ioriot::init::init(&rep, &t.path().join("wd")).unwrap();
    assert!(t.path().join(".ioriot/n").is_dir());
}

/// Replays `rep` with one worker of one thread at full speed.
fn replay_alone(rep: &ioriot::replay_format::Replay) -> ioriot::stats::Stats {
    let cfg = ReplayConfig {
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
        wd_base: None,
    };
    generate(&cap, &config).unwrap().0
}

#[test]
fn a_replay_named_dot_dot_is_refused_before_it_touches_anything() {
    let t = tempfile::tempdir().unwrap();
    let outside = outside_tree(t.path());
    let before = snapshot(t.path());
    for name in ["..", ".", "a/b", ""] {
        let text = HOSTILE.replace("|name=n|", &format!("|name={name}|"));
        let err = replay_format::read(text.as_bytes())
            .expect_err("a replay whose #name is not one component");
        let msg = err.to_string();
        assert!(
            msg.contains("not a single path component") && msg.contains("-n NAME"),
            "{name:?}: {msg}"
        );
        // The jail refuses the name too, whoever builds the replay.
        let _ = &outside;
        let jail = ioriot::confine::Jail::new(name);
        assert!(
            matches!(jail, Err(ioriot::confine::ConfineError::Name(_))),
            "{name:?}: {jail:?}"
        );
    }
    assert_eq!(snapshot(t.path()), before);
}
