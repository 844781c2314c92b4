//! Stand-in for `smartctl` on the simulated host: prints a recorded `smartctl --json=c --all`
//! output chosen by device path (tests/fixtures/smartctl, compiled in) and exits with the
//! recorded exit status, exactly as the helper invokes the real program.
//!
//! Devices: /dev/sda SATA HDD, /dev/sdb SATA SSD, /dev/sdc USB-bridged HDD (SAT),
//! /dev/sdd FAILING HDD, /dev/sde USB-bridged NVMe (JMicron), /dev/nvme0n1 NVMe SSD; any
//! other device gets smartctl's "open device failed" JSON and exit status 2. An argv other
//! than `--json=c --all <device>` gets exit status 1 (smartctl's "command line did not
//! parse"), so a change in what the helper runs shows up in tests.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    felhom_simhost::standins::smartctl_main(&args)
}
