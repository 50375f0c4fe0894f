mod cli;

use std::process::ExitCode;

/// jemalloc rather than glibc's malloc: a turn allocates and frees many small short-lived
/// buffers from two worker threads, and glibc's arenas spent about a tenth of a loaded
/// server's CPU on it (`_int_free`, `malloc_consolidate`); jemalloc's thread caches cut the
/// CPU per turn by 8-16 % (plain) and 18-30 % (tool turns) in `BENCHMARKS.md`, where mimalloc
/// did no better than glibc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    cli::main()
}
