//! The Rhai host: one hardened engine, scripts compiled once at load, evaluated with limits.

mod engine;
mod govaluate;
mod sandbox;
mod slow;
mod value;
mod view;

pub use engine::{CompiledScript, Limits, ScriptHost, ScriptKind};
pub use govaluate::translate_govaluate;
pub use slow::SlowWork;
pub use value::{from_dynamic, to_dynamic};
pub use view::{PathTree, Reads};

use thiserror::Error;

/// Why a script could not be compiled or evaluated.
#[derive(Debug, Clone, Error)]
pub enum ScriptError {
    /// Syntax or strict-variable error at load time.
    #[error("{message} (line {line}, column {column})")]
    Compile {
        /// What is wrong.
        message: String,
        /// 1-based line in the script.
        line: usize,
        /// 1-based column in the script.
        column: usize,
    },
    /// The script failed while running.
    #[error("{message} (line {line}, column {column})")]
    Runtime {
        /// What went wrong.
        message: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// 1-based column, 0 when unknown.
        column: usize,
    },
    /// The script hit a safety limit (operations, deadline, sizes, depth) and was stopped.
    #[error("script stopped by limit: {0}")]
    Limit(String),
    /// The script returned a value of the wrong type.
    #[error("script returned {got}, expected {expected}")]
    Type {
        /// Wanted type.
        expected: &'static str,
        /// Returned type.
        got: String,
    },
}
