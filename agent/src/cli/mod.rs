//! The command line: `run`, `validate`, `test`, `eval`, `dlq`, `version`.

/// `print!` to stdout, ignoring a closed pipe (`triggerd test ... | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` to stdout, ignoring a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod crds;
mod dlq;
mod eval;
mod run;
mod test;
mod validate;
mod watch;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// triggerd: event sources, Rhai-scripted sensors and triggers, in one process per namespace.
#[derive(Debug, Parser)]
#[command(name = "triggerd", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent on manifests from files or directories (file mode, embedded bus).
    Run(Box<run::RunArgs>),
    /// Load and compile manifests, print every error, exit 1 if there is any.
    Validate(validate::ValidateArgs),
    /// Run sensor test files (*.test.yaml) offline against stubbed trigger responses.
    Test(test::TestArgs),
    /// List or replay dead letters on the JetStream bus.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Evaluate a script, or a sensor dependency, against one event file.
    Eval(eval::EvalArgs),
    /// Print the Sensor and EventSource CRDs (generated from the manifest types).
    Crds(crds::CrdsArgs),
    /// Print the version.
    Version,
}

/// Where manifests and scripts come from.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Manifest file or directory (every *.yaml / *.yml inside, recursively); repeatable.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "PATH",
        required_unless_present = "paths"
    )]
    pub files: Vec<PathBuf>,
    /// The same as -f: manifest files or directories given without the flag.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Rhai library directory for `import` and `scriptFile`; repeatable.
    /// Default: ./scripts and ./policies when they exist.
    #[arg(long = "lib", value_name = "DIR")]
    pub lib: Vec<PathBuf>,
}

/// Where the JetStream bus is (shared by `run --bus jetstream` and `dlq`).
#[derive(Debug, Clone, Args)]
pub struct JetStreamArgs {
    /// NATS server URL(s) of the JetStream bus, comma-separated.
    #[arg(
        long,
        default_value = "nats://127.0.0.1:4222",
        env = "TRIGGERD_NATS_URL"
    )]
    pub nats_url: String,
}

impl JetStreamArgs {
    /// The namespace whose bus is used: the one given, else `default`.
    pub fn namespace_or(&self, namespace: Option<&str>) -> String {
        namespace
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_owned()
    }
}

impl SourceArgs {
    /// Every manifest path given, with -f or without.
    pub fn manifest_paths(&self) -> Vec<PathBuf> {
        self.files.iter().chain(&self.paths).cloned().collect()
    }

    /// The library directories in effect.
    pub fn library_dirs(&self) -> Vec<PathBuf> {
        if !self.lib.is_empty() {
            return self.lib.clone();
        }
        ["scripts", "policies"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .collect()
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    // Several crates build TLS clients (kube, reqwest, the AWS SDK, async-nats); rustls
    // wants exactly one process-wide provider, or the first handshake panics.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            crate::telemetry::init_logging(args.log_format);
            run::run(*args)
        }
        Command::Validate(args) => validate::validate(args),
        Command::Test(args) => test::test(args),
        Command::Eval(args) => eval::eval(args),
        Command::Dlq(cmd) => dlq::dlq(cmd),
        Command::Crds(args) => crds::crds(args),
        Command::Version => {
            println!("triggerd {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
    }
}
