//! Stand-in for `pct` on the simulated host: `pct create` against the Proxmox VE simulator.
//!
//! Usage: `felhom-sim-pct --sim-state <state.json> create <vmid> <ostemplate> [--<opt> <value>]…`
//!
//! The real `pct create` (pve-container `src/PVE/CLI/pct.pm`) calls
//! `PVE::API2::LXC::create_vm` as `root@pam` with `vmid` and `ostemplate` positional and every
//! other API parameter as `--<name> <value>`, waits for the worker task and exits 0 only if it
//! ended `OK` (`$upid_exit`). This stand-in does the same against the simulator: it posts the
//! parameters to the simulator's root-CLI endpoint `POST /_sim/cli/pct-create` (the public API
//! would refuse `keyctl` for any token, exactly like Proxmox), then polls
//! `GET /api2/json/nodes/{node}/tasks/{upid}/status`, prints the task log and exits 0 on `OK`,
//! 255 otherwise (what pct's `exit(-1)` becomes).
//!
//! The simulator's URL, CA, node and the `root@pam!sim` token come from the state JSON that
//! `felhom-pvesim --state-json` writes (mode 0600); the token never appears in argv. The
//! helper runs programs with a fixed argv and an empty environment, so the simulated host
//! points the helper's `--pct` at a two-line wrapper script that adds `--sim-state <file>`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    felhom_simhost::sim_pct::pct_main(&args)
}
