//! Stand-in for `sensors` on the simulated host: prints a recorded `sensors -j` output of a
//! typical Proxmox host (tests/fixtures/sensors/proxmox-host.json, compiled in). Any argv
//! other than `-j` is refused with exit status 1, so a change in what the helper runs shows
//! up in tests.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    felhom_simhost::standins::sensors_main(&args)
}
