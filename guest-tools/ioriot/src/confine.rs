//! Confinement: every replayed or initialised path lies beneath
//! `<root>/<name>`. Paths are checked lexically first (absolute paths, a
//! first component other than the test name, `..` climbing above it), then
//! resolved by the kernel with `openat2(RESOLVE_BENEATH)` from a descriptor
//! of the test directory, so a symlink that points out (absolute, or
//! relative through `..`) fails with EXDEV instead of being followed.
//! Operations on an entry itself (unlink, rename, mkdir, lchown, readlink)
//! run on its parent, opened the same way, with the `*at` call and the last
//! component, which never follows a symlink.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Path '{0}' is absolute; replay paths are relative to the test root.")]
    Absolute(String),
    #[error("Path '{path}' is not under the test directory '{name}'.")]
    OutsideName { path: String, name: String },
    #[error("Path '{0}' climbs out of the test directory with '..'.")]
    ClimbsOut(String),
    #[error("Path '{0}' resolves outside the test directory (a symlink points out).")]
    SymlinkOut(String),
    #[error("Path '{0}' names the test directory itself, which replay does not remove or rename.")]
    TestDir(String),
    #[error("Path '{0}' contains a NUL byte.")]
    Nul(String),
}

/// Errors of opening the test directory.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("The test directory {} cannot be opened.", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("This kernel has no openat2 (Linux 5.6 or later is needed), so paths cannot be confined; refusing to run.")]
    NoOpenat2,
    #[error("The test name '{0}' is not a single path component (letters, digits, '-', '_', '.'; not '.' or '..'); regenerate the replay with -n NAME.")]
    Name(String),
}

/// A test name: one path component of letters, digits, `-`, `_` and `.`,
/// never `.` or `..`, so `<root>/<name>` is always a directory inside root.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n != "."
        && n != ".."
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The outcome of a confined operation that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Refused(Refusal),
    Errno(i32),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

/// The test directory `<root>/<name>`, opened once.
#[derive(Debug)]
pub struct Jail {
    dir: OwnedFd,
    name: String,
    path: PathBuf,
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

/// The calling thread's errno after a failed libc call.
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn openat2(dir: RawFd, path: &CString, flags: i32, mode: u32) -> Result<OwnedFd, i32> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u32 as u64,
        mode: if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
            u64::from(mode & 0o7777)
        } else {
            0
        },
        resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: path is NUL-terminated and `how` is a valid open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let e = errno();
        if e != libc::EINTR && e != libc::EAGAIN {
            return Err(e);
        }
    }
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

impl Jail {
    /// Opens `<root>/<name>` (which must exist) and checks that openat2 works.
    pub fn new(root: &Path, name: &str) -> Result<Jail, ConfineError> {
        if !valid_name(name) {
            return Err(ConfineError::Name(name.to_owned()));
        }
        let path = root.join(name);
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| ConfineError::Open {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        // SAFETY: c is NUL-terminated.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(ConfineError::Open {
                path,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fd is a fresh descriptor.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        let dot = CString::new(".").expect("no NUL");
        match openat2(dir.as_raw_fd(), &dot, libc::O_PATH, 0) {
            Err(libc::ENOSYS) => return Err(ConfineError::NoOpenat2),
            Err(e) => {
                return Err(ConfineError::Open {
                    path,
                    source: std::io::Error::from_raw_os_error(e),
                })
            }
            Ok(_) => {}
        }
        Ok(Jail {
            dir,
            name: name.to_owned(),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The components below the test directory of a replay path
    /// (`NAME/a/b` → `[a, b]`), checked lexically.
    pub fn components(&self, rel: &[u8]) -> Result<Vec<Vec<u8>>, Refusal> {
        if rel.contains(&0) {
            return Err(Refusal::Nul(show(rel)));
        }
        if rel.first() == Some(&b'/') {
            return Err(Refusal::Absolute(show(rel)));
        }
        let mut it = rel
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".");
        if it.next() != Some(self.name.as_bytes()) {
            return Err(Refusal::OutsideName {
                path: show(rel),
                name: self.name.clone(),
            });
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        for c in it {
            if c == b".." {
                if out.pop().is_none() {
                    return Err(Refusal::ClimbsOut(show(rel)));
                }
            } else {
                out.push(c.to_vec());
            }
        }
        Ok(out)
    }

    fn cpath(comps: &[Vec<u8>]) -> CString {
        if comps.is_empty() {
            return CString::new(".").expect("no NUL");
        }
        CString::new(comps.join(&b'/')).expect("components were checked for NUL")
    }

    /// Opens a replay path beneath the test directory, following symlinks
    /// only while they stay beneath it.
    pub fn open(&self, rel: &[u8], flags: i32, mode: u32) -> Result<OwnedFd, Failure> {
        let comps = self.components(rel)?;
        openat2(self.dir.as_raw_fd(), &Self::cpath(&comps), flags, mode).map_err(|e| {
            if e == libc::EXDEV {
                Failure::Refused(Refusal::SymlinkOut(show(rel)))
            } else {
                Failure::Errno(e)
            }
        })
    }

    /// The parent directory (opened beneath the test directory) and the last
    /// component, for operations on the entry itself.
    pub fn parent(&self, rel: &[u8]) -> Result<(OwnedFd, CString), Failure> {
        let mut comps = self.components(rel)?;
        let last = comps.pop().ok_or_else(|| Refusal::TestDir(show(rel)))?;
        let dir = openat2(
            self.dir.as_raw_fd(),
            &Self::cpath(&comps),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| {
            if e == libc::EXDEV {
                Failure::Refused(Refusal::SymlinkOut(show(rel)))
            } else {
                Failure::Errno(e)
            }
        })?;
        Ok((
            dir,
            CString::new(last).expect("components were checked for NUL"),
        ))
    }

    /// `mkdir -p` beneath the test directory.
    pub fn mkdir_all(&self, rel: &[u8], mode: u32) -> Result<(), Failure> {
        let comps = self.components(rel)?;
        for i in 1..=comps.len() {
            let sub: Vec<u8> = [self.name.as_bytes(), b"/", &comps[..i].join(&b'/')].concat();
            let (dir, last) = self.parent(&sub)?;
            // SAFETY: dir is an open directory descriptor, last is NUL-terminated.
            let r = unsafe { libc::mkdirat(dir.as_raw_fd(), last.as_ptr(), mode) };
            if r != 0 {
                let e = errno();
                if e != libc::EEXIST {
                    return Err(Failure::Errno(e));
                }
                // An existing entry must be a directory reached beneath the root.
                self.open(&sub, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_checks_refuse_escapes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("n")).unwrap();
        let j = Jail::new(t.path(), "n").unwrap();
        assert_eq!(
            j.components(b"n/a/./b/../c").unwrap(),
            vec![b"a".to_vec(), b"c".to_vec()]
        );
        assert_eq!(j.components(b"n").unwrap(), Vec::<Vec<u8>>::new());
        assert!(matches!(
            j.components(b"/etc/passwd"),
            Err(Refusal::Absolute(_))
        ));
        assert!(matches!(
            j.components(b"other/x"),
            Err(Refusal::OutsideName { .. })
        ));
        assert!(matches!(
            j.components(b"n/../x"),
            Err(Refusal::ClimbsOut(_))
        ));
        assert!(matches!(
            j.components(b"n/a/../../n/x"),
            Err(Refusal::ClimbsOut(_))
        ));
        assert_eq!(
            Refusal::ClimbsOut("n/../x".into()).to_string(),
            "Path 'n/../x' climbs out of the test directory with '..'."
        );
    }

    #[test]
    fn symlinks_out_are_refused_and_inside_ones_followed() {
        let t = tempfile::tempdir().unwrap();
        let n = t.path().join("n");
        std::fs::create_dir_all(n.join("d")).unwrap();
        std::fs::write(t.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), n.join("abs")).unwrap();
        std::os::unix::fs::symlink("../secret", n.join("rel")).unwrap();
        std::os::unix::fs::symlink("d", n.join("in")).unwrap();
        let j = Jail::new(t.path(), "n").unwrap();
        for p in [&b"n/abs"[..], b"n/rel", b"n/abs/x"] {
            assert!(
                matches!(
                    j.open(p, libc::O_RDONLY, 0),
                    Err(Failure::Refused(Refusal::SymlinkOut(_)))
                ),
                "{}",
                show(p)
            );
        }
        assert!(j
            .open(b"n/in", libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .is_ok());
        j.mkdir_all(b"n/in/x/y", 0o755).unwrap();
        assert!(n.join("d/x/y").is_dir());
        assert!(matches!(
            j.parent(b"n"),
            Err(Failure::Refused(Refusal::TestDir(_)))
        ));
    }
}
