//! Which files a manifest may make the agent read: a file reference (`scriptFile`, a
//! Kubernetes trigger's `source.file.path`) resolves inside the manifest's own directory tree
//! (file mode only) or a library directory (`--lib`), never elsewhere. A path that leads out
//! of them, by `..`, an absolute path or a symbolic link, is refused before anything is read,
//! so a manifest cannot make an error message echo a secret or `/proc/self/environ`.

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// The directories file references may reach.
#[derive(Debug, Clone, Copy)]
pub struct FileRoots<'a> {
    /// The directory of the manifest the reference is in; `None` for manifests that did not
    /// come from a file (cluster objects, inline fragments).
    pub manifest_dir: Option<&'a Path>,
    /// The library directories.
    pub library_dirs: &'a [PathBuf],
}

/// Why a file reference was refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FileRefError {
    /// The reference leads outside every allowed directory.
    #[error(
        "{0:?} is outside the manifest's directory and the library directories; it is not read"
    )]
    Outside(String),
    /// No allowed directory holds the file.
    #[error("{0:?} not found in the manifest's directory or a library directory")]
    NotFound(String),
    /// The file's name does not say it is the kind of file expected.
    #[error("{name:?} is not a {what} file (its name must end in {suffixes})")]
    WrongKind {
        /// The reference as written.
        name: String,
        /// What was expected, e.g. "Rhai script".
        what: &'static str,
        /// The accepted name endings.
        suffixes: String,
    },
}

impl FileRefError {
    /// The hint shown beside the error.
    pub fn hint(&self) -> &'static str {
        match self {
            FileRefError::Outside(_) => "give a path relative to the manifest's directory (without leading `..`), or add the directory with --lib",
            FileRefError::NotFound(_) => "paths are relative to the manifest's directory or a library directory (--lib)",
            FileRefError::WrongKind { .. } => "only files of the expected kind are read, so a reference cannot show the contents of any other file",
        }
    }
}

/// What kind of file a reference must name: its description and accepted name endings.
#[derive(Debug, Clone, Copy)]
pub struct FileKind {
    what: &'static str,
    suffixes: &'static [&'static str],
}

/// A Rhai script (`scriptFile`).
pub const RHAI_SCRIPT: FileKind = FileKind {
    what: "Rhai script",
    suffixes: &[".rhai"],
};

/// A Kubernetes resource in YAML or JSON.
pub const RESOURCE: FileKind = FileKind {
    what: "YAML or JSON resource",
    suffixes: &[".yaml", ".yml", ".json"],
};

impl FileRoots<'_> {
    /// Resolves an existing file `name` of `kind`: the first allowed directory that holds it.
    pub fn existing(&self, name: &str, kind: FileKind) -> Result<PathBuf, FileRefError> {
        self.check_kind(name, kind)?;
        let mut outside = false;
        for root in self.candidates() {
            match inside(&root, name) {
                Some(path) if path.is_file() => return Ok(path),
                Some(_) => {}
                None => outside = true,
            }
        }
        if outside {
            return Err(FileRefError::Outside(name.to_owned()));
        }
        Err(FileRefError::NotFound(name.to_owned()))
    }

    /// Resolves `name` of `kind` that may not exist yet (a volume mounted later): where it
    /// will be read from, or why it never may be.
    pub fn future(&self, name: &str, kind: FileKind) -> Result<ConfinedPath, FileRefError> {
        let path = self.future_path(name, kind)?;
        Ok(ConfinedPath {
            path,
            roots: self.candidates(),
        })
    }

    fn future_path(&self, name: &str, kind: FileKind) -> Result<PathBuf, FileRefError> {
        self.check_kind(name, kind)?;
        if let Ok(found) = self.existing(name, kind) {
            return Ok(found);
        }
        let roots = self.candidates();
        let first = roots
            .first()
            .ok_or_else(|| FileRefError::NotFound(name.to_owned()))?;
        let given = Path::new(name);
        // Absolute: allowed when it names a place inside one of the directories; relative:
        // inside the first (the manifest's directory when there is one).
        let (path, allowed): (PathBuf, &[PathBuf]) = if given.is_absolute() {
            (normalize(given), &roots)
        } else {
            (normalize(&first.join(given)), std::slice::from_ref(first))
        };
        if allowed.iter().any(|root| within(&path, &normalize(root))) {
            Ok(path)
        } else {
            Err(FileRefError::Outside(name.to_owned()))
        }
    }

    fn check_kind(&self, name: &str, kind: FileKind) -> Result<(), FileRefError> {
        if kind.suffixes.iter().any(|s| name.ends_with(s)) {
            return Ok(());
        }
        Err(FileRefError::WrongKind {
            name: name.to_owned(),
            what: kind.what,
            suffixes: kind.suffixes.join(", "),
        })
    }

    /// The directories to look in, in order, as absolute paths.
    fn candidates(&self) -> Vec<PathBuf> {
        self.manifest_dir
            .into_iter()
            .chain(self.library_dirs.iter().map(PathBuf::as_path))
            .map(|d| {
                let d = if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                };
                std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf())
            })
            .collect()
    }
}

/// A file reference resolved by [`FileRoots::future`], read at each use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfinedPath {
    path: PathBuf,
    roots: Vec<PathBuf>,
}

impl ConfinedPath {
    /// Where the file is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file, checking again that it is inside an allowed directory as it is now,
    /// links followed (one may have appeared since it was resolved).
    pub async fn read(&self) -> std::io::Result<String> {
        let real = tokio::fs::canonicalize(&self.path).await?;
        let mut allowed = false;
        for root in &self.roots {
            if tokio::fs::canonicalize(root)
                .await
                .is_ok_and(|root| real.starts_with(root))
            {
                allowed = true;
                break;
            }
        }
        if !allowed {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "it now leads outside the manifest's directory and the library directories",
            ));
        }
        tokio::fs::read_to_string(&real).await
    }
}

/// `root/name` when it exists and, with every link followed, stays inside `root`;
/// `Some` of a path that does not exist when there is nothing to check yet; `None` when it
/// leads outside.
fn inside(root: &Path, name: &str) -> Option<PathBuf> {
    let given = Path::new(name);
    let candidate = if given.is_absolute() {
        given.to_path_buf()
    } else {
        root.join(given)
    };
    let Ok(real_root) = root.canonicalize() else {
        // The directory itself is missing: nothing can be found in it.
        return within(&normalize(&candidate), &normalize(root)).then_some(candidate);
    };
    match candidate.canonicalize() {
        Ok(real) => real.starts_with(&real_root).then_some(real),
        Err(_) => within(&normalize(&candidate), &normalize(root)).then_some(candidate),
    }
}

/// `path` with `.` and `..` resolved lexically (no file system access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether normalized `path` is `root` or below it, lexically.
fn within(path: &Path, root: &Path) -> bool {
    !path.components().any(|c| c == Component::ParentDir) && path.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        base: PathBuf,
        manifests: PathBuf,
    }

    impl Tree {
        fn new(tag: &str) -> Tree {
            let base =
                std::env::temp_dir().join(format!("triggerd-files-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            for dir in ["manifests/sub", "lib", "secrets"] {
                std::fs::create_dir_all(base.join(dir)).expect("mkdir");
            }
            for (file, text) in [
                ("manifests/a.rhai", "true"),
                ("manifests/sub/b.rhai", "true"),
                ("lib/c.rhai", "true"),
                ("secrets/token.rhai", "s3cret"),
                ("secrets/token", "s3cret"),
            ] {
                std::fs::write(base.join(file), text).expect("write");
            }
            let manifests = base.join("manifests");
            Tree { base, manifests }
        }

        fn roots<'a>(&'a self, lib: &'a [PathBuf]) -> FileRoots<'a> {
            FileRoots {
                manifest_dir: Some(&self.manifests),
                library_dirs: lib,
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    #[test]
    fn references_inside_the_tree_and_the_library_resolve() {
        let t = Tree::new("inside");
        let lib = [t.base.join("lib")];
        let roots = t.roots(&lib);
        for name in [
            "a.rhai",
            "sub/b.rhai",
            "sub/../a.rhai",
            "./a.rhai",
            "c.rhai",
        ] {
            assert!(roots.existing(name, RHAI_SCRIPT).is_ok(), "{name}");
        }
        let absolute = t.base.join("lib/c.rhai").display().to_string();
        assert!(roots.existing(&absolute, RHAI_SCRIPT).is_ok());
    }

    #[test]
    fn references_that_lead_out_are_refused_before_reading() {
        let t = Tree::new("outside");
        let lib = [t.base.join("lib")];
        let roots = t.roots(&lib);
        let absolute = t.base.join("secrets/token.rhai").display().to_string();
        for name in [
            "../secrets/token.rhai",
            "sub/../../secrets/token.rhai",
            &absolute,
        ] {
            assert_eq!(
                roots.existing(name, RHAI_SCRIPT),
                Err(FileRefError::Outside(name.to_owned())),
                "{name}"
            );
            assert!(roots.future(name, RESOURCE).is_err(), "{name}");
        }
        for name in ["/proc/self/environ", "../secrets/token"] {
            assert!(
                matches!(
                    roots.existing(name, RHAI_SCRIPT),
                    Err(FileRefError::WrongKind { .. })
                ),
                "{name}"
            );
        }
        assert_eq!(
            roots.existing("missing.rhai", RHAI_SCRIPT),
            Err(FileRefError::NotFound("missing.rhai".into()))
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_link_that_leads_out_is_refused() {
        let t = Tree::new("link");
        std::os::unix::fs::symlink(
            t.base.join("secrets/token.rhai"),
            t.base.join("manifests/link.rhai"),
        )
        .expect("symlink");
        let roots = t.roots(&[]);
        assert_eq!(
            roots.existing("link.rhai", RHAI_SCRIPT),
            Err(FileRefError::Outside("link.rhai".into()))
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_link_made_after_resolving_is_refused_when_read() {
        let t = Tree::new("late-link");
        let roots = t.roots(&[]);
        let later = roots.future("later.yaml", RESOURCE).expect("inside");
        assert!(later.read().await.is_err(), "not there yet");
        std::fs::write(t.base.join("manifests/later.yaml"), "kind: A").expect("write");
        assert_eq!(later.read().await.expect("inside"), "kind: A");
        std::fs::remove_file(t.base.join("manifests/later.yaml")).expect("rm");
        std::os::unix::fs::symlink(
            t.base.join("secrets/token"),
            t.base.join("manifests/later.yaml"),
        )
        .expect("symlink");
        let refused = later.read().await.expect_err("leads out");
        assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_file_that_may_appear_later_must_be_inside_too() {
        let t = Tree::new("future");
        let mounted = [t.base.join("lib")];
        let roots = t.roots(&mounted);
        let inside = t.base.join("lib/later.yaml").display().to_string();
        assert!(roots.future(&inside, RESOURCE).is_ok());
        assert!(roots.future("later.yaml", RESOURCE).is_ok());
        assert!(matches!(
            roots.future("/workflows/hello_world.yaml", RESOURCE),
            Err(FileRefError::Outside(_))
        ));
        let no_dir = FileRoots {
            manifest_dir: None,
            library_dirs: &[],
        };
        assert!(no_dir.future("later.yaml", RESOURCE).is_err());
        assert!(no_dir.existing("a.rhai", RHAI_SCRIPT).is_err());
    }
}
