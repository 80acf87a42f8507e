//! Finding (and if needed building) the `triggerd` binary under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The cargo workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests lives inside the workspace")
        .to_path_buf()
}

/// Path of the `triggerd` binary under test.
///
/// `TRIGGERD_BIN` wins when set. Otherwise the debug binary in the workspace's target
/// dir (`CARGO_TARGET_DIR` when set, else `<workspace>/target`); when it does not exist
/// yet it is built once per test process with `cargo build -p triggerd --bin triggerd`.
pub fn triggerd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("TRIGGERD_BIN") {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "TRIGGERD_BIN={} is not a file",
                bin.display()
            );
            return bin;
        }
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|dir| {
                if dir.is_absolute() {
                    dir
                } else {
                    root.join(dir)
                }
            })
            .unwrap_or_else(|| root.join("target"));
        let bin = target.join("debug").join("triggerd");
        if !bin.is_file() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "triggerd", "--bin", "triggerd"])
                .current_dir(&root)
                .status()
                .expect("run cargo build for triggerd");
            assert!(status.success(), "cargo build -p triggerd failed: {status}");
            assert!(
                bin.is_file(),
                "cargo build succeeded but {} does not exist",
                bin.display()
            );
        }
        bin
    })
}
