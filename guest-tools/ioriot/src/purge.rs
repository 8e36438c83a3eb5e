//! purge: removes a test tree `<root>/<name>`. std's remove_dir_all does not
//! follow symlinks, so links pointing out of the tree are removed, never
//! their targets.

use std::path::{Path, PathBuf};

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

/// Removes `<root>/<name>`; returns whether there was anything to remove.
pub fn purge(root: &Path, name: &str) -> Result<bool, PurgeError> {
    if !crate::confine::valid_name(name) {
        return Err(PurgeError::Name(name.to_owned()));
    }
    let dir = root.join(name);
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        _ => {}
    }
    let res = if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(&dir)
    } else {
        std::fs::remove_file(&dir)
    };
    res.map_err(|source| PurgeError::Remove { path: dir, source })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_removes_links_not_their_targets() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let n = t.path().join("root/n");
        std::fs::create_dir_all(n.join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, n.join("d/out")).unwrap();
        assert!(purge(&t.path().join("root"), "n").unwrap());
        assert!(!n.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
        assert!(!purge(&t.path().join("root"), "n").unwrap());
        assert!(purge(t.path(), "..").is_err());
    }
}
