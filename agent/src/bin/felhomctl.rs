//! `felhomctl`: grpcurl-style operator CLI for the agent's and helper's Unix sockets. All logic
//! lives in `felhom_agent::ctl`.

fn main() -> std::process::ExitCode {
    felhom_agent::ctl::main()
}
