//! The traced system calls: names, x86_64 numbers and where their
//! arguments live. One table drives the eBPF filter (which numbers, which
//! arguments are user-space paths), the capture decoder and the replay.

/// Which raw argument (0..6) holds what, for one system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSpec {
    pub op: Op,
    /// x86_64 system call number.
    pub nr: u32,
    /// The file descriptor argument (the dirfd for `*at` calls).
    pub fd: Option<u8>,
    /// Path arguments, each with the dirfd argument it is relative to
    /// (`None` means the current directory).
    pub paths: [Option<(u8, Option<u8>)>; 2],
    /// Numeric arguments recorded as the capture's a, b, c fields.
    pub nums: [Option<u8>; 3],
}

macro_rules! ops {
    ($( $variant:ident $name:literal ),* $(,)?) => {
        /// A traced operation (plus `fork`, which the capture records so
        /// children inherit their parent's descriptors).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op { $( $variant ),* }

        impl Op {
            pub const ALL: &'static [Op] = &[ $( Op::$variant ),* ];

            pub fn name(self) -> &'static str {
                match self { $( Op::$variant => $name ),* }
            }

            pub fn from_name(s: &str) -> Option<Op> {
                match s { $( $name => Some(Op::$variant), )* _ => None }
            }
        }
    };
}

ops! {
    Open "open", Openat "openat", Creat "creat", Close "close",
    Read "read", Readv "readv", Pread64 "pread64",
    Write "write", Writev "writev", Pwrite64 "pwrite64",
    Lseek "lseek", Stat "stat", Lstat "lstat", Fstat "fstat", Newfstatat "newfstatat",
    Statfs "statfs", Fstatfs "fstatfs", Fcntl "fcntl", Readahead "readahead",
    Sync "sync", Syncfs "syncfs", SyncFileRange "sync_file_range",
    Fsync "fsync", Fdatasync "fdatasync", Getdents64 "getdents64",
    Mkdir "mkdir", Mkdirat "mkdirat", Rename "rename", Renameat "renameat",
    Renameat2 "renameat2", Unlink "unlink", Unlinkat "unlinkat", Rmdir "rmdir",
    Readlink "readlink", Readlinkat "readlinkat", Symlink "symlink", Symlinkat "symlinkat",
    Chmod "chmod", Fchmod "fchmod", Fchmodat "fchmodat",
    Chown "chown", Fchown "fchown", Fchownat "fchownat", Lchown "lchown",
    Chdir "chdir", Fchdir "fchdir", Dup "dup", Dup2 "dup2", Dup3 "dup3",
    Truncate "truncate", Ftruncate "ftruncate", Fallocate "fallocate", Statx "statx",
    Fork "fork",
}

impl Op {
    /// The name I/O Riot's formats give the operation (its SystemTap probe
    /// names: `newfstatat` is `fstatat`, `getdents64` is `getdents`).
    pub fn ioriot_name(self) -> &'static str {
        match self {
            Op::Newfstatat => "fstatat",
            Op::Getdents64 => "getdents",
            op => op.name(),
        }
    }

    /// An operation by its I/O Riot name or ours.
    pub fn from_ioriot_name(s: &str) -> Option<Op> {
        match s {
            "fstatat" => Some(Op::Newfstatat),
            "getdents" => Some(Op::Getdents64),
            s => Op::from_name(s),
        }
    }

    /// The opcode of a `.replay` line: I/O Riot's (`opcodes.h`) for the
    /// operations it knows, 200 and up for ours.
    pub fn opcode(self) -> u32 {
        match self {
            Op::Fstat => 0,
            Op::Newfstatat => 1,
            Op::Fstatfs => 2,
            Op::Lstat => 4,
            Op::Stat => 5,
            Op::Statfs => 6,
            Op::Read => 10,
            Op::Readv => 11,
            Op::Readahead => 12,
            Op::Readlink => 14,
            Op::Readlinkat => 15,
            Op::Write => 20,
            Op::Writev => 21,
            Op::Open => 30,
            Op::Openat => 31,
            Op::Creat => 32,
            Op::Mkdir => 33,
            Op::Mkdirat => 34,
            Op::Rename => 40,
            Op::Renameat => 41,
            Op::Renameat2 => 42,
            Op::Close => 50,
            Op::Unlink => 51,
            Op::Unlinkat => 52,
            Op::Rmdir => 53,
            Op::Fsync => 60,
            Op::Fdatasync => 61,
            Op::Sync => 62,
            Op::Syncfs => 63,
            Op::SyncFileRange => 64,
            Op::Fcntl => 70,
            Op::Getdents64 => 71,
            Op::Lseek => 72,
            Op::Chmod => 100,
            Op::Fchmod => 101,
            Op::Fchmodat => 102,
            Op::Chown => 110,
            Op::Lchown => 112,
            Op::Fchown => 114,
            Op::Fchownat => 116,
            Op::Pread64 => 200,
            Op::Pwrite64 => 201,
            Op::Symlink => 202,
            Op::Symlinkat => 203,
            Op::Dup => 204,
            Op::Dup2 => 205,
            Op::Dup3 => 206,
            Op::Truncate => 207,
            Op::Ftruncate => 208,
            Op::Fallocate => 209,
            Op::Statx => 210,
            Op::Chdir => 211,
            Op::Fchdir => 212,
            Op::Fork => 213,
        }
    }

    /// An operation by its `.replay` opcode.
    pub fn from_opcode(code: u32) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.opcode() == code)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const fn spec(
    op: Op,
    nr: u32,
    fd: Option<u8>,
    paths: [Option<(u8, Option<u8>)>; 2],
    nums: [Option<u8>; 3],
) -> OpSpec {
    OpSpec {
        op,
        nr,
        fd,
        paths,
        nums,
    }
}

const N: Option<u8> = None;
const fn a(i: u8) -> Option<u8> {
    Some(i)
}
/// A path in argument `i`, relative to the current directory.
const fn p(i: u8) -> Option<(u8, Option<u8>)> {
    Some((i, None))
}
/// A path in argument `i`, relative to the dirfd in argument `d`.
const fn pd(i: u8, d: u8) -> Option<(u8, Option<u8>)> {
    Some((i, Some(d)))
}

/// Every traced system call (x86_64 numbers, from the kernel's syscall_64.tbl).
pub const SPECS: &[OpSpec] = &[
    spec(Op::Read, 0, a(0), [None, None], [a(2), N, N]),
    spec(Op::Write, 1, a(0), [None, None], [a(2), N, N]),
    spec(Op::Open, 2, N, [p(0), None], [a(1), a(2), N]),
    spec(Op::Close, 3, a(0), [None, None], [N, N, N]),
    spec(Op::Stat, 4, N, [p(0), None], [N, N, N]),
    spec(Op::Fstat, 5, a(0), [None, None], [N, N, N]),
    spec(Op::Lstat, 6, N, [p(0), None], [N, N, N]),
    spec(Op::Lseek, 8, a(0), [None, None], [a(1), a(2), N]),
    spec(Op::Pread64, 17, a(0), [None, None], [a(2), a(3), N]),
    spec(Op::Pwrite64, 18, a(0), [None, None], [a(2), a(3), N]),
    spec(Op::Readv, 19, a(0), [None, None], [a(2), N, N]),
    spec(Op::Writev, 20, a(0), [None, None], [a(2), N, N]),
    spec(Op::Fcntl, 72, a(0), [None, None], [a(1), a(2), N]),
    spec(Op::Fsync, 74, a(0), [None, None], [N, N, N]),
    spec(Op::Fdatasync, 75, a(0), [None, None], [N, N, N]),
    spec(Op::Rename, 82, N, [p(0), p(1)], [N, N, N]),
    spec(Op::Mkdir, 83, N, [p(0), None], [a(1), N, N]),
    spec(Op::Rmdir, 84, N, [p(0), None], [N, N, N]),
    spec(Op::Creat, 85, N, [p(0), None], [a(1), N, N]),
    spec(Op::Unlink, 87, N, [p(0), None], [N, N, N]),
    // symlink(target, linkpath): the target is content, recorded verbatim.
    spec(Op::Symlink, 88, N, [p(1), None], [N, N, N]),
    spec(Op::Readlink, 89, N, [p(0), None], [a(2), N, N]),
    spec(Op::Chmod, 90, N, [p(0), None], [a(1), N, N]),
    spec(Op::Fchmod, 91, a(0), [None, None], [a(1), N, N]),
    spec(Op::Chown, 92, N, [p(0), None], [a(1), a(2), N]),
    spec(Op::Fchown, 93, a(0), [None, None], [a(1), a(2), N]),
    spec(Op::Lchown, 94, N, [p(0), None], [a(1), a(2), N]),
    spec(Op::Statfs, 137, N, [p(0), None], [N, N, N]),
    spec(Op::Fstatfs, 138, a(0), [None, None], [N, N, N]),
    spec(Op::Sync, 162, N, [None, None], [N, N, N]),
    spec(Op::Readahead, 187, a(0), [None, None], [a(1), a(2), N]),
    spec(Op::Getdents64, 217, a(0), [None, None], [a(2), N, N]),
    spec(Op::Openat, 257, a(0), [pd(1, 0), None], [a(2), a(3), N]),
    spec(Op::Mkdirat, 258, a(0), [pd(1, 0), None], [a(2), N, N]),
    spec(
        Op::Fchownat,
        260,
        a(0),
        [pd(1, 0), None],
        [a(2), a(3), a(4)],
    ),
    spec(Op::Newfstatat, 262, a(0), [pd(1, 0), None], [a(3), N, N]),
    spec(Op::Unlinkat, 263, a(0), [pd(1, 0), None], [a(2), N, N]),
    spec(Op::Renameat, 264, a(0), [pd(1, 0), pd(3, 2)], [N, N, N]),
    // symlinkat(target, newdirfd, linkpath)
    spec(Op::Symlinkat, 266, a(1), [pd(2, 1), None], [N, N, N]),
    spec(Op::Readlinkat, 267, a(0), [pd(1, 0), None], [a(3), N, N]),
    spec(Op::Fchmodat, 268, a(0), [pd(1, 0), None], [a(2), N, N]),
    spec(
        Op::SyncFileRange,
        277,
        a(0),
        [None, None],
        [a(1), a(2), a(3)],
    ),
    spec(Op::Syncfs, 306, a(0), [None, None], [N, N, N]),
    spec(Op::Renameat2, 316, a(0), [pd(1, 0), pd(3, 2)], [a(4), N, N]),
    // Beyond the list: they keep paths and descriptors right
    // (chdir, dup*) or change sizes (truncate, fallocate); statx is how
    // coreutils stat.
    spec(Op::Dup, 32, a(0), [None, None], [N, N, N]),
    spec(Op::Dup2, 33, a(0), [None, None], [a(1), N, N]),
    spec(Op::Truncate, 76, N, [p(0), None], [a(1), N, N]),
    spec(Op::Ftruncate, 77, a(0), [None, None], [a(1), N, N]),
    spec(Op::Chdir, 80, N, [p(0), None], [N, N, N]),
    spec(Op::Fchdir, 81, a(0), [None, None], [N, N, N]),
    spec(Op::Fallocate, 285, a(0), [None, None], [a(1), a(2), a(3)]),
    spec(Op::Dup3, 292, a(0), [None, None], [a(1), a(2), N]),
    spec(Op::Statx, 332, a(0), [pd(1, 0), None], [a(2), a(3), N]),
];

/// The literal (unresolved) string argument of symlink/symlinkat: the target.
pub fn literal_arg(op: Op) -> Option<u8> {
    match op {
        Op::Symlink | Op::Symlinkat => Some(0),
        _ => None,
    }
}

pub fn spec_by_nr(nr: u32) -> Option<&'static OpSpec> {
    SPECS.iter().find(|s| s.nr == nr)
}

pub fn spec_of(op: Op) -> Option<&'static OpSpec> {
    SPECS.iter().find(|s| s.op == op)
}

impl Op {
    /// Operations that create a new descriptor (their return value).
    pub fn opens(self) -> bool {
        matches!(self, Op::Open | Op::Openat | Op::Creat)
    }

    /// Operations on an already open descriptor.
    pub fn uses_fd(self) -> bool {
        matches!(
            self,
            Op::Close
                | Op::Read
                | Op::Readv
                | Op::Pread64
                | Op::Write
                | Op::Writev
                | Op::Pwrite64
                | Op::Lseek
                | Op::Fstat
                | Op::Fstatfs
                | Op::Fcntl
                | Op::Readahead
                | Op::Syncfs
                | Op::SyncFileRange
                | Op::Fsync
                | Op::Fdatasync
                | Op::Getdents64
                | Op::Fchmod
                | Op::Fchown
                | Op::Fchdir
                | Op::Dup
                | Op::Dup2
                | Op::Dup3
                | Op::Ftruncate
                | Op::Fallocate
        )
    }

    /// Operations that make a new descriptor for an open one.
    pub fn dups(self) -> bool {
        matches!(self, Op::Dup | Op::Dup2 | Op::Dup3)
    }

    /// Operations generate does not replay: replayed paths are absolute,
    /// so the working directory does not matter.
    pub fn cwd(self) -> bool {
        matches!(self, Op::Chdir | Op::Fchdir)
    }

    pub fn reads(self) -> bool {
        matches!(self, Op::Read | Op::Readv | Op::Pread64)
    }

    pub fn writes(self) -> bool {
        matches!(self, Op::Write | Op::Writev | Op::Pwrite64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_syscall_op_has_one_spec_and_names_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::from_name(op.name()), Some(*op));
            let n = SPECS.iter().filter(|s| s.op == *op).count();
            assert_eq!(n, usize::from(*op != Op::Fork), "{op}");
        }
        let mut nrs: Vec<u32> = SPECS.iter().map(|s| s.nr).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), SPECS.len(), "duplicate syscall numbers");
        assert_eq!(spec_by_nr(257).unwrap().op, Op::Openat);
        let mut codes: Vec<u32> = Op::ALL.iter().map(|op| op.opcode()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Op::ALL.len(), "duplicate opcodes");
        for op in Op::ALL {
            assert_eq!(Op::from_opcode(op.opcode()), Some(*op));
            assert_eq!(Op::from_ioriot_name(op.ioriot_name()), Some(*op));
            let n = op.ioriot_name();
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}"
            );
        }
    }
}
