use std::process::ExitCode;

fn main() -> ExitCode {
    registry_repair::cli::main()
}
