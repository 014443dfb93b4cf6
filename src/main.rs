fn main() -> std::process::ExitCode {
    celeroot::cli::main()
}
