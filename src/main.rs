use std::process::ExitCode;

fn main() -> ExitCode {
    mcp_platform::cli::main()
}
