//! The `q8s` command line.

fn main() -> std::process::ExitCode {
    q8s::cli::main()
}
