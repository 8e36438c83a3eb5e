//! Confinement: every replayed or initialised path lies in a test tree
//! `<P>/.ioriot/<name>`, as I/O Riot lays them out (P is the mount point
//! the captured path was on). Paths are checked lexically first (relative
//! paths, no `.ioriot/<name>` in them, `..` in P or climbing above the
//! tree), then resolved by the kernel with `openat2(RESOLVE_BENEATH)` from
//! a descriptor of the tree, so a symlink that points out (absolute, or
//! relative through `..`) fails with EXDEV instead of being followed.
//! Operations on an entry itself (unlink, rename, mkdir, lchown, readlink)
//! run on its parent, opened the same way, with the `*at` call and the last
//! component, which never follows a symlink.

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The directory I/O Riot inserts after the mount point.
pub const TREE_DIR: &str = ".ioriot";

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Path '{0}' is relative; replay paths are absolute, inside '<mount point>/.ioriot/<name>/'.")]
    Relative(String),
    #[error("Path '{path}' is not inside a test tree '<mount point>/.ioriot/{name}/'.")]
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

/// Errors of opening a test tree.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("The test tree {} cannot be opened; run `ioriot -i REPLAY` first.", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The test tree {} cannot be made: its mount point {} is not a directory.", tree.display(), mount.display())]
    MountPoint {
        tree: PathBuf,
        mount: PathBuf,
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

/// The test trees `<P>/.ioriot/<name>` of one test, each opened once.
#[derive(Debug)]
pub struct Jail {
    name: String,
    trees: Mutex<HashMap<Vec<u8>, Arc<OwnedFd>>>,
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
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

fn open_path(path: &[u8], flags: i32) -> Result<OwnedFd, std::io::Error> {
    let c =
        CString::new(path).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c is NUL-terminated.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Jail {
    /// The trees of test `name`; checks that the kernel has openat2.
    pub fn new(name: &str) -> Result<Jail, ConfineError> {
        if !valid_name(name) {
            return Err(ConfineError::Name(name.to_owned()));
        }
        let root = open_path(b"/", libc::O_PATH | libc::O_DIRECTORY).map_err(|source| {
            ConfineError::Open {
                path: "/".into(),
                source,
            }
        })?;
        let dot = CString::new(".").expect("no NUL");
        match openat2(root.as_raw_fd(), &dot, libc::O_PATH, 0) {
            Err(libc::ENOSYS) => return Err(ConfineError::NoOpenat2),
            Err(e) => {
                return Err(ConfineError::Open {
                    path: "/".into(),
                    source: std::io::Error::from_raw_os_error(e),
                })
            }
            Ok(_) => {}
        }
        Ok(Jail {
            name: name.to_owned(),
            trees: Mutex::new(HashMap::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A replay path's test tree (`<P>/.ioriot/<name>`) and its components
    /// below the tree, checked lexically.
    pub fn split(&self, path: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), Refusal> {
        if path.contains(&0) {
            return Err(Refusal::Nul(show(path)));
        }
        if path.first() != Some(&b'/') {
            return Err(Refusal::Relative(show(path)));
        }
        let comps: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let outside = || Refusal::OutsideName {
            path: show(path),
            name: self.name.clone(),
        };
        let at = comps
            .windows(2)
            .position(|w| w[0] == TREE_DIR.as_bytes() && w[1] == self.name.as_bytes())
            .ok_or_else(outside)?;
        if comps[..at]
            .iter()
            .any(|c| *c == b".." || *c == TREE_DIR.as_bytes())
        {
            return Err(outside());
        }
        let mut tree = Vec::new();
        for c in &comps[..at + 2] {
            tree.push(b'/');
            tree.extend_from_slice(c);
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        for c in &comps[at + 2..] {
            if *c == b".." {
                if out.pop().is_none() {
                    return Err(Refusal::ClimbsOut(show(path)));
                }
            } else {
                out.push(c.to_vec());
            }
        }
        Ok((tree, out))
    }

    /// The test trees the paths lie in (paths that are refused name none).
    pub fn trees<'p>(&self, paths: impl IntoIterator<Item = &'p [u8]>) -> BTreeSet<Vec<u8>> {
        paths
            .into_iter()
            .filter_map(|p| self.split(p).ok().map(|(t, _)| t))
            .collect()
    }

    /// Opens a test tree (which must exist), once.
    fn tree(&self, tree: &[u8]) -> Result<Arc<OwnedFd>, Failure> {
        let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = trees.get(tree) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(
            open_tree(tree).map_err(|e| Failure::Errno(e.raw_os_error().unwrap_or(libc::EIO)))?,
        );
        trees.insert(tree.to_vec(), fd.clone());
        Ok(fd)
    }

    /// Checks that a test tree exists and can be opened.
    pub fn check_tree(&self, tree: &[u8]) -> Result<(), ConfineError> {
        open_tree(tree)
            .map(drop)
            .map_err(|source| ConfineError::Open {
                path: PathBuf::from(std::ffi::OsStr::from_bytes(tree)),
                source,
            })
    }

    /// Makes a test tree `<P>/.ioriot/<name>` (P must exist; `.ioriot` and
    /// the name are made when missing and never followed as symlinks).
    pub fn make_tree(&self, tree: &[u8]) -> Result<(), ConfineError> {
        let tree_path = PathBuf::from(std::ffi::OsStr::from_bytes(tree));
        let mount = tree_path
            .parent()
            .and_then(|p| p.parent())
            .unwrap_or(std::path::Path::new("/"))
            .to_path_buf();
        let mut dir = open_path(
            mount.as_os_str().as_bytes(),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(|source| ConfineError::MountPoint {
            tree: tree_path.clone(),
            mount: mount.clone(),
            source,
        })?;
        for c in [TREE_DIR, self.name.as_str()] {
            let cc = CString::new(c).expect("no NUL");
            // SAFETY: dir is an open directory, cc NUL-terminated.
            let r = unsafe { libc::mkdirat(dir.as_raw_fd(), cc.as_ptr(), 0o755) };
            if r != 0 && errno() != libc::EEXIST {
                return Err(ConfineError::Open {
                    path: tree_path,
                    source: std::io::Error::last_os_error(),
                });
            }
            dir = openat2_flags(
                dir.as_raw_fd(),
                &cc,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            )
            .map_err(|e| ConfineError::Open {
                path: tree_path.clone(),
                source: std::io::Error::from_raw_os_error(e),
            })?;
        }
        Ok(())
    }

    /// The test tree of a path, for absolute symlink targets.
    pub fn tree_of(&self, path: &[u8]) -> Result<Vec<u8>, Refusal> {
        self.split(path).map(|(t, _)| t)
    }

    fn cpath(comps: &[Vec<u8>]) -> CString {
        if comps.is_empty() {
            return CString::new(".").expect("no NUL");
        }
        CString::new(comps.join(&b'/')).expect("components were checked for NUL")
    }

    /// Opens a replay path beneath its test tree, following symlinks
    /// only while they stay beneath it.
    pub fn open(&self, path: &[u8], flags: i32, mode: u32) -> Result<OwnedFd, Failure> {
        let (tree, comps) = self.split(path)?;
        let dir = self.tree(&tree)?;
        openat2(dir.as_raw_fd(), &Self::cpath(&comps), flags, mode).map_err(|e| {
            if e == libc::EXDEV {
                Failure::Refused(Refusal::SymlinkOut(show(path)))
            } else {
                Failure::Errno(e)
            }
        })
    }

    /// The parent directory (opened beneath the test tree) and the last
    /// component, for operations on the entry itself.
    pub fn parent(&self, path: &[u8]) -> Result<(OwnedFd, CString), Failure> {
        let (tree, mut comps) = self.split(path)?;
        let last = comps.pop().ok_or_else(|| Refusal::TestDir(show(path)))?;
        let root = self.tree(&tree)?;
        let dir = openat2(
            root.as_raw_fd(),
            &Self::cpath(&comps),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| {
            if e == libc::EXDEV {
                Failure::Refused(Refusal::SymlinkOut(show(path)))
            } else {
                Failure::Errno(e)
            }
        })?;
        Ok((
            dir,
            CString::new(last).expect("components were checked for NUL"),
        ))
    }

    /// `mkdir -p` beneath the test tree.
    pub fn mkdir_all(&self, path: &[u8], mode: u32) -> Result<(), Failure> {
        let (tree, comps) = self.split(path)?;
        for i in 1..=comps.len() {
            let sub: Vec<u8> = [&tree[..], b"/", &comps[..i].join(&b'/')].concat();
            let (dir, last) = self.parent(&sub)?;
            // SAFETY: dir is an open directory descriptor, last is NUL-terminated.
            let r = unsafe { libc::mkdirat(dir.as_raw_fd(), last.as_ptr(), mode) };
            if r != 0 {
                let e = errno();
                if e != libc::EEXIST {
                    return Err(Failure::Errno(e));
                }
                // An existing entry must be a directory reached beneath the tree.
                self.open(&sub, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            }
        }
        Ok(())
    }
}

/// Opens `<P>/.ioriot/<name>`: P as the system resolves it, the last two
/// components never through a symlink. The whole path is opened too (so a
/// trace of the replay names the tree) and must be the same directory.
fn open_tree(tree: &[u8]) -> Result<OwnedFd, std::io::Error> {
    let whole = open_path(&[tree, b"/"].concat(), libc::O_PATH | libc::O_DIRECTORY)?;
    let walked = walk_tree(tree)?;
    let id = |fd: &OwnedFd| -> Result<(u64, u64), std::io::Error> {
        let m = std::fs::File::from(fd.try_clone()?).metadata()?;
        Ok((
            std::os::unix::fs::MetadataExt::dev(&m),
            std::os::unix::fs::MetadataExt::ino(&m),
        ))
    };
    if id(&whole)? != id(&walked)? {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(walked)
}

/// `<P>/.ioriot/<name>` with no symlink in its last two components.
fn walk_tree(tree: &[u8]) -> Result<OwnedFd, std::io::Error> {
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(tree));
    let mount = path
        .parent()
        .and_then(|p| p.parent())
        .unwrap_or(std::path::Path::new("/"));
    let mut dir = open_path(
        mount.as_os_str().as_bytes(),
        libc::O_PATH | libc::O_DIRECTORY,
    )?;
    for c in path
        .components()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let cc = CString::new(c.as_os_str().as_bytes()).expect("no NUL");
        dir = openat2_flags(
            dir.as_raw_fd(),
            &cc,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )
        .map_err(std::io::Error::from_raw_os_error)?;
    }
    Ok(dir)
}

/// openat2 beneath `dir` with no symlinks at all.
fn openat2_flags(dir: RawFd, path: &CString, flags: i32) -> Result<OwnedFd, i32> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u32 as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
    };
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
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test tree in a temporary directory standing for a mount point.
    fn tree(t: &tempfile::TempDir) -> Vec<u8> {
        let mut p = t.path().as_os_str().as_bytes().to_vec();
        p.extend_from_slice(b"/.ioriot/n");
        p
    }

    fn at(tree: &[u8], rest: &str) -> Vec<u8> {
        [tree, rest.as_bytes()].concat()
    }

    #[test]
    fn lexical_checks_refuse_escapes() {
        let j = Jail::new("n").unwrap();
        let (tree, comps) = j.split(b"/home/.ioriot/n/a/./b/../c").unwrap();
        assert_eq!(tree, b"/home/.ioriot/n");
        assert_eq!(comps, vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(j.split(b"/.ioriot/n").unwrap().0, b"/.ioriot/n");
        assert!(matches!(j.split(b"n/x"), Err(Refusal::Relative(_))));
        assert!(matches!(
            j.split(b"/etc/passwd"),
            Err(Refusal::OutsideName { .. })
        ));
        assert!(matches!(
            j.split(b"/home/.ioriot/other/x"),
            Err(Refusal::OutsideName { .. })
        ));
        assert!(matches!(
            j.split(b"/home/../etc/.ioriot/n/x"),
            Err(Refusal::OutsideName { .. })
        ));
        assert!(matches!(
            j.split(b"/home/.ioriot/n/../x"),
            Err(Refusal::ClimbsOut(_))
        ));
        assert!(matches!(
            j.split(b"/home/.ioriot/n/a/../../n/x"),
            Err(Refusal::ClimbsOut(_))
        ));
        assert_eq!(
            Refusal::ClimbsOut("/t/.ioriot/n/../x".into()).to_string(),
            "Path '/t/.ioriot/n/../x' climbs out of the test directory with '..'."
        );
    }

    #[test]
    fn symlinks_out_are_refused_and_inside_ones_followed() {
        let t = tempfile::tempdir().unwrap();
        let tr = tree(&t);
        let j = Jail::new("n").unwrap();
        assert!(j.check_tree(&tr).is_err());
        j.make_tree(&tr).unwrap();
        j.check_tree(&tr).unwrap();
        let n = t.path().join(".ioriot/n");
        std::fs::create_dir_all(n.join("d")).unwrap();
        std::fs::write(t.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), n.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../secret", n.join("rel")).unwrap();
        std::os::unix::fs::symlink("d", n.join("in")).unwrap();
        for p in ["/abs", "/rel", "/abs/x"] {
            assert!(
                matches!(
                    j.open(&at(&tr, p), libc::O_RDONLY, 0),
                    Err(Failure::Refused(Refusal::SymlinkOut(_)))
                ),
                "{p}"
            );
        }
        assert!(j
            .open(&at(&tr, "/in"), libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .is_ok());
        j.mkdir_all(&at(&tr, "/in/x/y"), 0o755).unwrap();
        assert!(n.join("d/x/y").is_dir());
        assert!(matches!(
            j.parent(&tr),
            Err(Failure::Refused(Refusal::TestDir(_)))
        ));
    }

    #[test]
    fn a_tree_through_a_symlinked_ioriot_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir(elsewhere.path().join("n")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), t.path().join(".ioriot")).unwrap();
        let j = Jail::new("n").unwrap();
        assert!(j.make_tree(&tree(&t)).is_err());
        assert!(j.check_tree(&tree(&t)).is_err());
    }
}
