//! purge: removes the test trees `<mount point>/.ioriot/<name>` of a
//! replay (and its working directory `<wd base>/<name>` when given).
//! std's remove_dir_all does not follow symlinks, so links pointing out of
//! a tree are removed, never their targets.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::confine::Jail;
use crate::replay_format::Replay;

/// Errors of purge.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("The test name '{0}' is not a single path component; refusing to remove anything.")]
    Name(String),
    #[error("Removing {} failed.", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn remove(dir: &Path) -> Result<bool, PurgeError> {
    let res = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(dir),
        _ => std::fs::remove_file(dir),
    };
    res.map_err(|source| PurgeError::Remove {
        path: dir.to_owned(),
        source,
    })?;
    Ok(true)
}

/// Removes the replay's test trees and, with `wd_base`, `<wd_base>/<name>`;
/// returns what it removed.
pub fn purge(rep: &Replay, wd_base: Option<&Path>) -> Result<Vec<PathBuf>, PurgeError> {
    let jail = Jail::new(&rep.name).map_err(|_| PurgeError::Name(rep.name.clone()))?;
    let mut dirs: Vec<PathBuf> = jail
        .trees(rep.paths())
        .iter()
        .map(|t| PathBuf::from(std::ffi::OsStr::from_bytes(t)))
        .collect();
    dirs.extend(wd_base.map(|w| w.join(&rep.name)));
    let mut removed = Vec::new();
    for d in dirs {
        if remove(&d)? {
            removed.push(d);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay_format::InitEntry;

    #[test]
    fn purge_removes_links_not_their_targets() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let n = t.path().join("mnt/.ioriot/n");
        std::fs::create_dir_all(n.join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, n.join("d/out")).unwrap();
        let rep = Replay {
            name: "n".into(),
            init: vec![InitEntry::Dir(n.join("d").as_os_str().as_bytes().to_vec())],
            ..Replay::default()
        };
        assert_eq!(purge(&rep, None).unwrap(), vec![n.clone()]);
        assert!(!n.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
        assert!(purge(&rep, None).unwrap().is_empty());
        let bad = Replay {
            name: "..".into(),
            ..Replay::default()
        };
        assert!(purge(&bad, None).is_err());
    }
}
