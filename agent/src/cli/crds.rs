//! `triggerd crds`: the Sensor and EventSource CRDs, generated from the manifest types.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cluster::crd::crd_files;

/// Arguments of `crds`.
#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory (default: print them to stdout).
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Prints or writes the CRDs.
pub fn crds(args: CrdsArgs) -> ExitCode {
    let files = match crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(dir) = args.out else {
        for (i, (_, yaml)) in files.iter().enumerate() {
            if i > 0 {
                outln!("---");
            }
            out!("{yaml}");
        }
        return ExitCode::SUCCESS;
    };
    for (name, yaml) in files {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        outln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
