//! generate, init and replay of a real capture: `fixtures/matrix.capture`
//! was made by the eBPF capture of `ioriot-syscall-matrix` in the lab guest
//! (the command is in fixtures/README.md).

use std::collections::BTreeMap;
use std::path::Path;

use ioriot::capture_format;
use ioriot::generate::{generate, GenerateConfig};
use ioriot::replay_format::{self, InitEntry, Replay};

mod common;
use common::{rebase, replay_into};

/// Every system call the helper makes (shared with lab's ioriot suite).
fn helper_ops() -> Vec<&'static str> {
    include_str!("../src/syscall_matrix_ops.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Captured but not replayed: replayed paths are absolute already.
const NOT_REPLAYED: &[&str] = &["chdir", "fchdir"];

fn capture() -> capture_format::Capture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/matrix.capture");
    capture_format::read(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap()
}

/// The directory the helper worked in, as the capture has it (without the
/// leading `/`): the first directory it made.
fn work_dir() -> String {
    let cap = capture();
    let made = cap
        .events
        .iter()
        .find(|e| e.op.name() == "mkdir")
        .and_then(|e| e.path.clone())
        .expect("the helper makes its directory first");
    String::from_utf8(made)
        .unwrap()
        .trim_start_matches('/')
        .to_owned()
}

/// The replay, its captured filesystem moved below `under`.
fn fixture(under: &Path) -> (Replay, ioriot::generate::GenerateReport) {
    let mut cap = capture();
    assert_eq!(cap.lost, Some(0));
    rebase(&mut cap, under);
    let (rep, report) = generate(
        &cap,
        &GenerateConfig {
            name: "matrix".into(),
            keep_tmpfs: true,
            user: None,
            wd_base: None,
        },
    )
    .unwrap();
    // The text form round-trips.
    let mut buf = Vec::new();
    replay_format::write(&mut buf, &rep).unwrap();
    assert_eq!(replay_format::read(&buf[..]).unwrap(), rep);
    (rep, report)
}

/// Paths below `dir` with `/` for directories and the size of files.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.push(format!("{rel}/"));
                stack.push(p);
            } else {
                out.push(format!("{rel} {}", m.len()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn generate_keeps_every_helper_op_and_maps_ids() {
    let work = work_dir();
    let t = tempfile::tempdir().unwrap();
    let (rep, report) = fixture(t.path());
    // Paths as the test tree has them, below `<t>/.ioriot/`.
    let trees = format!("{}/.ioriot/", t.path().display());
    let rel = |p: &[u8]| {
        String::from_utf8_lossy(p)
            .strip_prefix(&trees)
            .map(str::to_owned)
    };
    for op in &helper_ops() {
        assert!(report.capture_ops.contains_key(*op), "{op} not captured");
        assert_eq!(
            report.replay_ops.contains_key(*op),
            !NOT_REPLAYED.contains(op),
            "{op} in the replay"
        );
    }
    // The process, its second thread and its forked child.
    assert_eq!(report.pids, BTreeMap::from([(1671, 1), (1674, 2)]));
    assert_eq!(
        report.tids,
        BTreeMap::from([(1671, 1), (1673, 2), (1674, 3)])
    );
    assert_eq!(report.not_replayed, 3);
    assert_eq!((rep.vpids, rep.vtids), (2, 3));
    // /proc/self/maps (glibc's stack query: open, fstat, read ×3, close)
    // and stdout, opened before the capture.
    assert_eq!(report.dropped_pseudo_fs, 6);
    assert_eq!(report.dropped_unknown_fd, 2);
    assert_eq!(report.kept, rep.ops.len());
    // Virtual descriptors are unique: the real fd 5 of three files (main
    // thread, second thread, child) gets three different ones.
    let opens: Vec<u64> = rep
        .ops
        .iter()
        .filter(|o| o.op.opens() && o.ret >= 0)
        .map(|o| o.vfd)
        .collect();
    let mut unique = opens.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), opens.len());
    let t = rep
        .ops
        .iter()
        .find(|o| o.path.as_deref().and_then(rel) == Some(format!("matrix/{work}/m0/t.dat")))
        .unwrap();
    assert_eq!((t.vpid, t.vtid), (1, 2));
    let c = rep
        .ops
        .iter()
        .find(|o| o.path.as_deref().and_then(rel) == Some(format!("matrix/{work}/m0/child.dat")))
        .unwrap();
    assert_eq!((c.vpid, c.vtid), (2, 3));
    // Every path lives in the test tree.
    assert!(rep
        .ops
        .iter()
        .flat_map(|o| o.path.iter())
        .all(|p| rel(p).is_some_and(|r| r.starts_with("matrix/"))));
    // The skeleton: what existed before the helper ran (the libraries it
    // read, the directory it worked in), not what it created.
    let init: Vec<String> = rep
        .init
        .iter()
        .map(|e| match e {
            InitEntry::Dir(p) => format!("d {}", rel(p).unwrap()),
            InitEntry::File { size, path } => format!("f {size} {}", rel(path).unwrap()),
        })
        .collect();
    // ... and every directory above the one the helper worked in.
    let mut want: Vec<String> = [
        "d matrix/lib",
        "d matrix/lib/x86_64-linux-gnu",
        "f 848 matrix/lib/x86_64-linux-gnu/libc.so.6",
        "f 832 matrix/lib/x86_64-linux-gnu/libgcc_s.so.1",
    ]
    .map(String::from)
    .to_vec();
    let mut above = Path::new(&work).parent();
    let mut ancestors = Vec::new();
    while let Some(a) = above.filter(|a| !a.as_os_str().is_empty()) {
        ancestors.push(format!("d matrix/{}", a.display()));
        above = a.parent();
    }
    want.extend(ancestors.into_iter().rev());
    assert_eq!(init, want);
}

#[test]
fn replay_single_and_multi_threaded_rebuilds_the_helpers_tree() {
    let work = work_dir();
    let expected = [
        "m0/",
        "m0/child.dat 200",
        "m0/sub/",
        "m0/sub/a3.dat 12000",
        "m0/t.dat 300",
    ];
    for (p, t) in [(1, 1), (2, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let (rep, _) = fixture(dir.path());
        let r = replay_into(dir.path(), &rep, p, t);
        assert_eq!(
            (r.mismatches, r.refused, r.skipped),
            (0, 0, 0),
            "{p}×{t}:\n{}",
            r.text()
        );
        // The captured failures fail again: the loader's library search
        // (ENOENT), realpath's readlink on directories (EINVAL), the
        // helper's missing.dat.
        assert_eq!(
            r.errors,
            rep.ops.iter().filter(|o| o.ret < 0).count() as u64
        );
        assert_eq!(r.ops, rep.ops.len() as u64);
        for op in helper_ops().iter().filter(|o| !NOT_REPLAYED.contains(o)) {
            assert!(
                r.per_op.get(*op).is_some_and(|s| s.count > 0),
                "{op} not replayed"
            );
        }
        assert_eq!(r.per_op["getdents64"].count, 2);
        assert_eq!(r.per_op["write"].bytes, 4096 + 100 + 64 + 300 + 200);
        assert_eq!(
            tree(&dir.path().join(".ioriot/matrix").join(&work)),
            expected,
            "{p}×{t}"
        );
    }
}
