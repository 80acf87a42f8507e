//! `triggerd validate`: load and compile everything, print every error.

use std::process::ExitCode;

use clap::Args;

use super::SourceArgs;
use crate::manifest::load_paths;
use crate::plan::build_plan;
use crate::script::{Limits, ScriptHost};

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    sources: SourceArgs,
}

/// Prints `ok: …` or every error (`FILE:LINE:COLUMN: FIELD: message`), exit 1 on errors.
pub fn validate(args: ValidateArgs) -> ExitCode {
    let (docs, mut errors) = load_paths(&args.sources.manifest_paths());
    let lib = args.sources.library_dirs();
    let host = ScriptHost::new(Limits::default(), lib.clone());
    match build_plan(&docs, &host, &lib) {
        Ok(plan) => {
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
        }
        Err(mut more) => errors.append(&mut more),
    }
    if errors.is_empty() {
        println!("ok: {} manifests", docs.len());
        return ExitCode::SUCCESS;
    }
    for e in &errors {
        eprintln!("{e}");
    }
    eprintln!("{} error(s)", errors.len());
    ExitCode::FAILURE
}
