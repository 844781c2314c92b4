//! Stand-in for `pveum` on the simulated host (see [`felhom_simhost::sim_pveum`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    felhom_simhost::sim_pveum::pveum_main(&args)
}
