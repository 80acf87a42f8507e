//! The `triggerd` binary.

/// mimalloc rather than the system allocator: the event path makes many small, short-lived
/// allocations on several threads (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    triggerd::cli::main()
}
