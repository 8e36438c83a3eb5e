//! Descriptors a forked child inherits: `fixtures/inherit.capture` (a
//! parent writes to a file, its child and grandchild write to and close
//! the descriptor they inherited, then the parent writes again) is
//! generated, initialised and replayed; the file must end up as long as
//! every write together, as in the captured run where parent and children
//! shared one file offset.

use std::path::Path;

use ioriot::capture_format;
use ioriot::generate::{generate, GenerateConfig};
use ioriot::replay_format;

mod common;
use common::{rebase, replay_into};

#[test]
fn children_write_through_inherited_descriptors_at_the_shared_offset() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inherit.capture");
    let base =
        capture_format::read(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
    for (processes, threads) in [(1, 1), (2, 4), (3, 1)] {
        let root = tempfile::tempdir().unwrap();
        let mut cap = base.clone();
        rebase(&mut cap, root.path());
        let (rep, report) = generate(
            &cap,
            &GenerateConfig {
                name: "inh".into(),
                keep_tmpfs: false,
                user: None,
                wd_base: None,
            },
        )
        .unwrap();
        assert_eq!((report.inherited_fds, report.dropped_unknown_fd), (2, 0));
        let mut buf = Vec::new();
        replay_format::write(&mut buf, &rep).unwrap();
        assert_eq!(replay_format::read(&buf[..]).unwrap(), rep);
        let r = replay_into(root.path(), &rep, processes, threads);
        let what = format!("{processes}×{threads}:\n{}", r.text());
        assert_eq!(
            (r.errors, r.mismatches, r.refused, r.skipped),
            (0, 0, 0, 0),
            "{what}"
        );
        assert_eq!(r.ops, rep.ops.len() as u64, "{what}");
        assert_eq!(r.per_op["fork"].count, 2, "{what}");
        // 100 + 50 + 7 + 20 bytes one after the other: the children's
        // copies shared the parent's offset, and their closes left the
        // parent's descriptor open for its last write.
        let len = std::fs::metadata(root.path().join(".ioriot/inh/w/f"))
            .unwrap()
            .len();
        assert_eq!(len, 177, "{what}");
    }
}
