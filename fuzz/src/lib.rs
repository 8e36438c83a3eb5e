//! What the fuzz targets share: a simulator on temporary backing files,
//! made once per fuzzing process.

use std::sync::Arc;

use cxl_memsim::simulator::Simulator;

/// Where wire addresses start in the targets (a host physical address, as
/// with `cxl-memsim serve --base`), so the base subtraction is fuzzed too.
pub const BASE: u64 = 0x1_1000_0000;

/// A simulator of the embedded default topology (vmem0 and pmem0, 256 MiB
/// each) with zeroed backing files in a directory that lives as long as
/// the process.
pub fn simulator(base: u64) -> Arc<Simulator> {
    let dir = tempfile::Builder::new()
        .prefix("cxl-lab-fuzz")
        .tempdir()
        .expect("a temporary directory for the backing files");
    let sim = Simulator::open(None, dir.path(), None, None, base).expect("simulator");
    // The mappings outlive the files' directory entry: removed now, the
    // files go away with the process even when libFuzzer kills it.
    drop(dir);
    Arc::new(sim)
}

/// The offsets at which `before` and `after` differ (compared a chunk at
/// a time: a byte loop would be instrumented compare by compare).
pub fn changed_offsets(before: &[u8], after: &[u8]) -> Vec<usize> {
    const CHUNK: usize = 256;
    let mut out = Vec::new();
    if before == after {
        return out;
    }
    for (c, (b, a)) in before.chunks(CHUNK).zip(after.chunks(CHUNK)).enumerate() {
        if b != a {
            out.extend(
                b.iter()
                    .zip(a)
                    .enumerate()
                    .filter(|(_, (x, y))| x != y)
                    .map(|(i, _)| c * CHUNK + i),
            );
        }
    }
    out
}
