//! felhom-helper binary: see [`felhom_helper::cli`].

fn main() -> std::process::ExitCode {
    felhom_helper::cli::main_from(std::env::args_os())
}
