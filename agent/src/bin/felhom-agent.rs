//! `felhom-agent`: the host agent daemon and its maintenance commands.

fn main() -> std::process::ExitCode {
    felhom_agent::app::cli::main()
}
