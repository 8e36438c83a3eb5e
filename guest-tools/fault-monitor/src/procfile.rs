//! `madvise-collector --proc`: the counts of the `seq_page_faults` kernel
//! module (guest-tools/seq-page-faults-kmod, a kprobe on handle_mm_fault
//! with the rule of `seq.rs`) instead of the eBPF program. The module shows
//! `PID COUNT` lines in `/proc/seq_page_faults`, smart-madvise's documented
//! interface, and the same table with every field in
//! `/proc/seq_page_faults_detail`, which is what is read here.
//!
//! The module keeps an exited process's entry, marked exited, until its
//! slot is needed: an entry seen exited for the first time is an exit since
//! the last poll.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use crate::advice::Sample;

pub const MODULE: &str = "seq_page_faults";
pub const COUNTS_FILE: &str = "/proc/seq_page_faults";
pub const DETAIL_FILE: &str = "/proc/seq_page_faults_detail";

#[derive(Debug, thiserror::Error)]
pub enum ProcFileError {
    #[error("Cannot load the kernel module {MODULE} (`modprobe {MODULE}`: {reason}); the lab image builds it against its kernel (images/recipe.toml built_modules), so an image built before it lacks it: run `lab image build`.")]
    Load { reason: String },
    #[error("The kernel module {MODULE} is loaded but {DETAIL_FILE} cannot be read.")]
    Read {
        #[source]
        source: std::io::Error,
    },
    #[error("Line {line} of {DETAIL_FILE} is not `PID FAULTS SEQUENTIAL LAST_ADDRESS BORN_NS EXITED COMM`: {text:?}")]
    Parse { line: usize, text: String },
}

/// One entry of the module's table.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub sample: Sample,
    pub exited: bool,
}

/// The detail file: its totals line and entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub entries: Vec<Entry>,
    /// Faults of new processes the module had no free entry for.
    pub dropped: u64,
}

/// Parses `/proc/seq_page_faults_detail`.
pub fn parse_detail(text: &str) -> Result<Table, ProcFileError> {
    let mut t = Table::default();
    for (i, l) in text.lines().enumerate() {
        if let Some(totals) = l.strip_prefix('#') {
            let f: Vec<&str> = totals.split_whitespace().collect();
            if let Some(p) = f.iter().position(|w| *w == "dropped") {
                t.dropped = f.get(p + 1).and_then(|v| v.parse().ok()).unwrap_or(0);
            }
            continue;
        }
        if l.trim().is_empty() {
            continue;
        }
        let bad = || ProcFileError::Parse {
            line: i + 1,
            text: l.to_owned(),
        };
        let mut f = l.splitn(7, ' ');
        let mut next = || f.next().ok_or_else(bad);
        let pid = next()?.parse().map_err(|_| bad())?;
        let faults = next()?.parse().map_err(|_| bad())?;
        let sequential = next()?.parse().map_err(|_| bad())?;
        let addr = next()?;
        let last_address =
            u64::from_str_radix(addr.trim_start_matches("0x"), 16).map_err(|_| bad())?;
        let born_ns = next()?.parse().map_err(|_| bad())?;
        let exited = match next()? {
            "0" => false,
            "1" => true,
            _ => return Err(bad()),
        };
        let comm = next().unwrap_or_default().to_owned();
        t.entries.push(Entry {
            sample: Sample {
                pid,
                comm,
                faults,
                sequential,
                last_address,
                born_ns,
            },
            exited,
        });
    }
    Ok(t)
}

/// One look at the module's table.
#[derive(Debug, Default)]
pub struct Counts {
    /// The running processes, by pid.
    pub live: Vec<Sample>,
    /// Processes that exited since the last poll, with their final counts.
    pub exited: Vec<Sample>,
}

/// The module's counts, polled like the eBPF collector's map.
pub struct ProcCollector {
    /// Exited entries already handed out, by (pid, born_ns).
    reported: HashSet<(u32, u64)>,
    /// This process, whose faults the eBPF program does not count either.
    me: u32,
    /// The module was loaded here, and is removed at drop.
    pub loaded_here: bool,
    pub exits_seen: u64,
    pub dropped: u64,
}

fn read_table() -> Result<Table, ProcFileError> {
    let text =
        std::fs::read_to_string(DETAIL_FILE).map_err(|source| ProcFileError::Read { source })?;
    parse_detail(&text)
}

impl ProcCollector {
    /// Loads the module unless it is loaded; processes that exited before
    /// this are not reported as exits.
    pub fn attach() -> Result<ProcCollector, ProcFileError> {
        let loaded_here = !Path::new(DETAIL_FILE).exists();
        if loaded_here {
            let out = Command::new("modprobe").arg(MODULE).output();
            let reason = match out {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(format!(
                    "{}, {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Some(e.to_string()),
            };
            if let Some(reason) = reason {
                return Err(ProcFileError::Load { reason });
            }
        }
        let table = read_table()?;
        Ok(ProcCollector {
            reported: table
                .entries
                .iter()
                .filter(|e| e.exited)
                .map(|e| (e.sample.pid, e.sample.born_ns))
                .collect(),
            me: std::process::id(),
            loaded_here,
            exits_seen: 0,
            dropped: table.dropped,
        })
    }

    /// The running processes and those that exited since the last poll.
    pub fn poll(&mut self) -> Result<Counts, ProcFileError> {
        let table = read_table()?;
        self.dropped = table.dropped;
        Ok(self.split(table))
    }

    fn split(&mut self, table: Table) -> Counts {
        let mut poll = Counts::default();
        let mut still_there = HashSet::new();
        for e in table.entries {
            let key = (e.sample.pid, e.sample.born_ns);
            if e.sample.pid == self.me {
                continue;
            }
            if !e.exited {
                poll.live.push(e.sample);
                continue;
            }
            still_there.insert(key);
            if self.reported.insert(key) {
                poll.exited.push(e.sample);
            }
        }
        // Entries the module reused are forgotten, so this set stays as
        // small as the module's table.
        self.reported.retain(|k| still_there.contains(k));
        self.exits_seen += poll.exited.len() as u64;
        poll.live.sort_by_key(|s| s.pid);
        poll.exited.sort_by_key(|s| s.pid);
        poll
    }
}

impl Drop for ProcCollector {
    fn drop(&mut self) {
        if self.loaded_here {
            // Left as found; a failure only leaves the module loaded.
            let _ = Command::new("rmmod").arg(MODULE).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DETAIL: &str = "# entries 3 max_entries 16384 exits 1 dropped 2\n\
        1 40 3 0x7f0000001000 100 0 init\n\
        77 900 850 0x7f0000360000 200 1 mmap-workload\n\
        90 5 0 0x55550000 300 0 sh -c x\n";

    #[test]
    fn the_detail_file_parses() {
        let t = parse_detail(DETAIL).unwrap();
        assert_eq!(t.dropped, 2);
        assert_eq!(t.entries.len(), 3);
        let e = &t.entries[1];
        assert!(e.exited);
        assert_eq!(
            (
                e.sample.pid,
                e.sample.faults,
                e.sample.sequential,
                e.sample.last_address,
                e.sample.born_ns
            ),
            (77, 900, 850, 0x7f00_0036_0000, 200)
        );
        assert_eq!(e.sample.comm, "mmap-workload");
        assert_eq!(
            t.entries[2].sample.comm, "sh -c x",
            "a comm may hold spaces"
        );
        let err = parse_detail("1 2 x 0x0 1 0 c\n").unwrap_err();
        assert!(err.to_string().contains("Line 1"), "{err}");
        assert!(
            parse_detail("1 2 3 0x0 1 2 c\n").is_err(),
            "EXITED is 0 or 1"
        );
        assert!(parse_detail("1 2 3\n").is_err(), "a short line");
    }

    #[test]
    fn an_exit_is_reported_once_and_earlier_exits_never() {
        let mut c = ProcCollector {
            reported: HashSet::from([(5, 50)]),
            me: 90,
            loaded_here: false,
            exits_seen: 0,
            dropped: 0,
        };
        let with =
            |extra: &str| parse_detail(&format!("{DETAIL}5 1 0 0x0 50 1 old\n{extra}")).unwrap();
        let p = c.split(with(""));
        assert_eq!(
            p.live.iter().map(|s| s.pid).collect::<Vec<_>>(),
            [1],
            "own pid left out"
        );
        assert_eq!(p.exited.iter().map(|s| s.pid).collect::<Vec<_>>(), [77]);
        let p = c.split(with(""));
        assert!(p.exited.is_empty(), "reported once");
        // pid 77 reused by a new process, which then exits too.
        let t = parse_detail("77 3 1 0x0 400 1 again\n").unwrap();
        assert_eq!(c.split(t).exited.len(), 1);
        assert_eq!(c.exits_seen, 2);
        assert!(
            !c.reported.contains(&(5, 50)),
            "forgotten once the module reused it"
        );
    }
}
