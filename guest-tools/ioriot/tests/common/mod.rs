//! What the ioriot integration tests share.

use std::path::Path;

use ioriot::order::Done;
use ioriot::replay::{run_worker, ReplayConfig};
use ioriot::replay_format::Replay;

/// Initialises `rep` under `root` and replays it with `processes` workers
/// of `threads` threads at full speed; the merged statistics.
pub fn replay_into(
    root: &Path,
    rep: &Replay,
    processes: u32,
    threads: u32,
) -> ioriot::stats::Report {
    ioriot::init::init(rep, root).unwrap();
    let cfg = ReplayConfig {
        root: root.to_path_buf(),
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
