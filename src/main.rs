mod cli;

use std::process::ExitCode;

/// A turn allocates and frees many small strings and buffers across the runtime's threads:
/// glibc's allocator spent about a tenth of a loaded server's CPU on them (`BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main()
}
