//! Cross-thread order in replay. Each virtual thread runs its own
//! operations in captured order; an operation also waits for the latest
//! earlier operation of another virtual thread (or process) that touched
//! the same entry or its parent directory (e.g. a thread creating a file in
//! a directory another thread made). Completion flags live in a shared
//! mapping, so worker processes see each other's progress.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::replay_format::ReplayOp;

/// How long an operation waits for the one it depends on before running anyway.
const WAIT: Duration = Duration::from_secs(10);

fn parent(p: &[u8]) -> Option<&[u8]> {
    p.iter().rposition(|&b| b == b'/').map(|i| &p[..i])
}

/// For each operation, the index of the operation it waits for.
pub fn dependencies(ops: &[ReplayOp]) -> Vec<Option<usize>> {
    let mut last: HashMap<&[u8], BTreeMap<u32, usize>> = HashMap::new();
    let mut deps = Vec::with_capacity(ops.len());
    for (i, o) in ops.iter().enumerate() {
        let entries: Vec<&[u8]> = [o.path.as_deref(), o.path2.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let mut dep: Option<usize> = None;
        for e in &entries {
            for k in [Some(*e), parent(e)].into_iter().flatten() {
                if let Some(by) = last.get(k) {
                    for (vtid, j) in by {
                        if *vtid != o.vtid {
                            dep = dep.max(Some(*j));
                        }
                    }
                }
            }
        }
        deps.push(dep);
        for e in entries {
            last.entry(e).or_default().insert(o.vtid, i);
        }
    }
    deps
}

/// One completion flag per operation, shared between threads and (through
/// a file) between worker processes.
pub struct Done {
    map: MmapMut,
}

impl Done {
    pub fn anonymous(n: usize) -> std::io::Result<Done> {
        Ok(Done {
            map: MmapMut::map_anon(n.max(1))?,
        })
    }

    /// Maps `path` (created with n zero bytes by the parent process).
    pub fn shared(path: &Path, n: usize) -> std::io::Result<Done> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        f.set_len(n.max(1) as u64)?;
        // SAFETY: the file is ours for the replay's duration; every access
        // goes through atomics.
        let map = unsafe { MmapMut::map_mut(&f)? };
        Ok(Done { map })
    }

    fn flags(&self) -> &[AtomicU8] {
        // SAFETY: AtomicU8 has u8's layout; the mapping lives as long as self.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU8>(), self.map.len()) }
    }

    pub fn set(&self, i: usize) {
        self.flags()[i].store(1, Ordering::Release);
    }

    /// Waits for operation `i`; false if it did not complete in time.
    pub fn wait(&self, i: usize) -> bool {
        let f = &self.flags()[i];
        let deadline = Instant::now() + WAIT;
        let mut spins = 0u32;
        while f.load(Ordering::Acquire) == 0 {
            if Instant::now() >= deadline {
                return false;
            }
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else if spins < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Op;

    fn op(vtid: u32, op: Op, p: &str) -> ReplayOp {
        ReplayOp {
            t_ns: 0,
            vpid: 1,
            vtid,
            op,
            vfd: 0,
            ret: 0,
            path: Some(p.as_bytes().to_vec()),
            path2: None,
            a: 0,
            b: 0,
            c: 0,
        }
    }

    #[test]
    fn a_file_made_in_another_threads_directory_waits_for_it() {
        let ops = vec![
            op(1, Op::Mkdir, "n/m0"),
            op(1, Op::Mkdir, "n/m0/sub"),
            op(2, Op::Openat, "n/m0/t.dat"),
            op(2, Op::Write, "n/m0/t.dat"),
            op(1, Op::Unlink, "n/m0/t.dat"),
            op(1, Op::Stat, "n/other"),
        ];
        assert_eq!(
            dependencies(&ops),
            vec![None, None, Some(0), Some(0), Some(3), None]
        );
        let d = Done::anonymous(2).unwrap();
        d.set(1);
        assert!(d.wait(1));
    }
}
