//! What the ioriot integration tests share.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ioriot::capture_format::{Capture, Mount};

use ioriot::order::Done;
use ioriot::replay::{run_worker, ReplayConfig};
use ioriot::replay_format::Replay;

/// Moves a capture's whole filesystem below `under`, a temporary
/// directory standing for its mount points, so its test trees
/// (`<mount>/.ioriot/<name>`) are made there; without mounts, `under` is
/// one ext4 mount holding everything.
pub fn rebase(cap: &mut Capture, under: &Path) {
    let u = under.as_os_str().as_bytes();
    let moved = |p: &[u8]| -> Vec<u8> {
        if p == b"/" {
            u.to_vec()
        } else {
            [u, p].concat()
        }
    };
    for e in &mut cap.events {
        for p in [&mut e.path, &mut e.path2].into_iter().flatten() {
            if p.first() == Some(&b'/') {
                *p = moved(p);
            }
        }
    }
    if cap.mounts.is_empty() {
        cap.mounts.push(Mount {
            fstype: "ext4".into(),
            point: b"/".to_vec(),
        });
    }
    for m in &mut cap.mounts {
        m.point = moved(&m.point);
    }
}

/// Initialises `rep` (working directory under `root`) and replays it with `processes` workers
/// of `threads` threads at full speed; the merged statistics.
pub fn replay_into(
    root: &Path,
    rep: &Replay,
    processes: u32,
    threads: u32,
) -> ioriot::stats::Report {
    ioriot::init::init(rep, &root.join("wd")).unwrap();
    let cfg = ReplayConfig {
        processes,
        threads,
        speed: 0.0,
    };
    // Worker processes are the binary's job; here every worker runs in
    // this process in turn, sharing the completion flags, which is what
    // the processes do through the mapped file.
    let done = Done::anonymous(rep.ops.len()).unwrap();
    let mut stats = ioriot::stats::Stats::default();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..processes)
            .map(|k| {
                let (cfg, done) = (&cfg, &done);
                s.spawn(move || run_worker(rep, cfg, k, processes, done).unwrap())
            })
            .collect();
        for h in hs {
            stats.merge(&h.join().unwrap());
        }
    });
    stats.report(rep.source_ops, rep.source_span_ns)
}
