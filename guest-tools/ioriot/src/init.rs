//! init: creates the test trees of a replay (`<mount point>/.ioriot/<name>`,
//! after removing what an earlier run left there) and its skeleton (the
//! `#INIT` directories and files with their sizes), and the working
//! directory `<wd base>/<name>` (I/O Riot's `-w`). Entries are created
//! through the confinement layer, so a crafted replay cannot create
//! anything outside. With a replay user, the trees and the working
//! directory are then given to that user.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::confine::{ConfineError, Failure, Jail};
use crate::purge::{self, PurgeError};
use crate::replay_format::{InitEntry, Replay};

/// Errors of init.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("Removing the earlier test tree failed.")]
    Purge(#[from] PurgeError),
    #[error("The test directory {} cannot be created.", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The test directory cannot be confined.")]
    Confine(#[from] ConfineError),
    #[error("The replay's user cannot own the test tree.")]
    User(#[from] crate::user::UserError),
    #[error("Creating '{path}' failed.")]
    Entry {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct InitReport {
    /// The test trees made.
    pub trees: Vec<PathBuf>,
    /// The working directory `<wd base>/<name>`.
    pub wd: PathBuf,
    pub dirs: u64,
    pub files: u64,
    pub bytes: u64,
    /// Entries refused by confinement, with the reason.
    pub refused: Vec<String>,
}

impl InitReport {
    pub fn text(&self) -> String {
        let trees: Vec<String> = self.trees.iter().map(|t| t.display().to_string()).collect();
        let mut s = format!(
            "initialised {}: {} dirs, {} files, {} bytes; working directory {}\n",
            trees.join(", "),
            self.dirs,
            self.files,
            self.bytes,
            self.wd.display()
        );
        for r in &self.refused {
            s.push_str(&format!("refused: {r}\n"));
        }
        s
    }
}

/// The content of initialised files: not zeros, so nothing can shortcut reads.
fn fill(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
}

pub fn init(rep: &Replay, wd_base: &Path) -> Result<InitReport, InitError> {
    let user = match &rep.user {
        // Fail before touching anything when the user does not exist.
        Some(name) => Some(crate::user::lookup(name)?),
        None => None,
    };
    let jail = Jail::new(&rep.name)?;
    let trees = jail.trees(rep.paths());
    purge::purge(rep, None)?;
    for t in &trees {
        jail.make_tree(t)?;
    }
    let wd = wd_base.join(&rep.name);
    std::fs::create_dir_all(&wd).map_err(|source| InitError::Create {
        path: wd.clone(),
        source,
    })?;
    let mut report = InitReport {
        trees: trees
            .iter()
            .map(|t| PathBuf::from(std::ffi::OsStr::from_bytes(t)))
            .collect(),
        wd,
        ..InitReport::default()
    };
    let mut buf = vec![0u8; 1 << 16];
    fill(&mut buf);
    for e in &rep.init {
        let (path, res) = match e {
            InitEntry::Dir(p) => (p, jail.mkdir_all(p, 0o755).map(|_| report.dirs += 1)),
            InitEntry::File { size, path } => (
                path,
                create_file(&jail, path, *size, &buf).map(|_| {
                    report.files += 1;
                    report.bytes += size;
                }),
            ),
        };
        match res {
            Ok(()) => {}
            Err(Failure::Refused(r)) => report.refused.push(r.to_string()),
            Err(Failure::Errno(e)) => {
                return Err(InitError::Entry {
                    path: String::from_utf8_lossy(path).into_owned(),
                    source: std::io::Error::from_raw_os_error(e),
                })
            }
        }
    }
    if let Some(u) = &user {
        for t in report.trees.iter().chain([&report.wd]) {
            crate::user::chown_tree(t, u)?;
        }
    }
    Ok(report)
}

fn create_file(jail: &Jail, path: &[u8], size: u64, buf: &[u8]) -> Result<(), Failure> {
    let parent = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => path,
    };
    jail.mkdir_all(parent, 0o755)?;
    let fd = jail.open(path, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, 0o644)?;
    let mut f = std::fs::File::from(fd);
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])
            .map_err(|e| Failure::Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
        left -= n as u64;
    }
    Ok(())
}
