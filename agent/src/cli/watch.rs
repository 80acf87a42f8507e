//! Change detection for file mode: a fingerprint of every file under the watched paths.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Path, size and modification time of every file under some paths, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

impl Fingerprint {
    /// Reads the fingerprint of `paths` (files, or directories walked recursively).
    pub fn of(paths: &[PathBuf]) -> Self {
        let mut entries = Vec::new();
        for p in paths {
            walk(p, &mut entries);
        }
        entries.sort();
        Self(entries)
    }
}

fn walk(path: &Path, out: &mut Vec<(PathBuf, u64, Option<SystemTime>)>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for e in entries.flatten() {
            walk(&e.path(), out);
        }
    } else {
        out.push((path.to_path_buf(), meta.len(), meta.modified().ok()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_when_a_file_changes_or_appears() {
        let dir = std::env::temp_dir().join(format!("triggerd-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), "a").unwrap();
        let before = Fingerprint::of(std::slice::from_ref(&dir));
        assert_eq!(before, Fingerprint::of(std::slice::from_ref(&dir)));
        std::fs::write(dir.join("a.yaml"), "ab").unwrap();
        let changed = Fingerprint::of(std::slice::from_ref(&dir));
        assert_ne!(before, changed);
        std::fs::write(dir.join("b.rhai"), "1").unwrap();
        assert_ne!(changed, Fingerprint::of(std::slice::from_ref(&dir)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
