//! The `triggerd` binary.

fn main() -> std::process::ExitCode {
    triggerd::cli::main()
}
