//! Hardware stand-ins of the simulated host, shared by the `felhom-sim-smartctl` and
//! `felhom-sim-sensors` binaries and by `felhom-devhost` (which serves as them through hidden
//! entries, so `cargo run --bin felhom-devhost` needs no other binary).
//!
//! `smartctl`:
//! Stand-in for `smartctl` on the simulated host: prints a recorded `smartctl --json=c --all`
//! output chosen by device path (tests/fixtures/smartctl, compiled in) and exits with the
//! recorded exit status, exactly as the helper invokes the real program.
//!
//! Devices: /dev/sda SATA HDD, /dev/sdb SATA SSD, /dev/sdc USB-bridged HDD (SAT),
//! /dev/sdd FAILING HDD, /dev/sde USB-bridged NVMe (JMicron), /dev/nvme0n1 NVMe SSD; any
//! other device gets smartctl's "open device failed" JSON and exit status 2. An argv other
//! than `--json=c --all <device>` gets exit status 1 (smartctl's "command line did not
//! parse"), so a change in what the helper runs shows up in tests.
//!
//! `sensors`:
//! Stand-in for `sensors` on the simulated host: prints a recorded `sensors -j` output of a
//! typical Proxmox host (tests/fixtures/sensors/proxmox-host.json, compiled in). Any argv
//! other than `-j` is refused with exit status 1, so a change in what the helper runs shows
//! up in tests.

use std::process::ExitCode;

const SMARTCTL_RECORDED: &[(&str, &str)] = &[
    (
        "/dev/sda",
        include_str!("../fixtures/smartctl/sata-hdd.json"),
    ),
    (
        "/dev/sdb",
        include_str!("../fixtures/smartctl/sata-ssd.json"),
    ),
    (
        "/dev/sdc",
        include_str!("../fixtures/smartctl/usb-sat.json"),
    ),
    (
        "/dev/sdd",
        include_str!("../fixtures/smartctl/failing-hdd.json"),
    ),
    (
        "/dev/sde",
        include_str!("../fixtures/smartctl/usb-nvme-jmicron.json"),
    ),
    (
        "/dev/nvme0n1",
        include_str!("../fixtures/smartctl/nvme.json"),
    ),
];

/// The stand-in `smartctl` with `args` (without the program name).
pub fn smartctl_main(args: &[String]) -> ExitCode {
    let [json, all, device] = args else {
        eprintln!("felhom-sim-smartctl: expected --json=c --all <device>, got {args:?}");
        return ExitCode::from(1);
    };
    if json != "--json=c" || all != "--all" {
        eprintln!("felhom-sim-smartctl: expected --json=c --all <device>, got {args:?}");
        return ExitCode::from(1);
    }
    let Some((_, recorded)) = SMARTCTL_RECORDED.iter().find(|(d, _)| d == device) else {
        let open_failed = serde_json::json!({
            "json_format_version": [1, 0],
            "smartctl": {
                "version": [7, 3],
                "svn_revision": "5338",
                "platform_info": "x86_64-linux-6.8.12-4-pve",
                "build_info": "(local build)",
                "argv": ["smartctl", "--json=c", "--all", device],
                "messages": [{
                    "string": format!("Smartctl open device: {device} failed: No such device"),
                    "severity": "error"
                }],
                "exit_status": 2
            },
            "local_time": {"time_t": 1763884800, "asctime": "Sun Nov 23 08:00:00 2025 CET"}
        });
        println!("{open_failed}");
        return ExitCode::from(2);
    };
    let value: serde_json::Value = match serde_json::from_str(recorded) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("felhom-sim-smartctl: recorded output for {device} is broken: {e}");
            return ExitCode::from(1);
        }
    };
    let status = value
        .pointer("/smartctl/exit_status")
        .and_then(serde_json::Value::as_u64)
        .and_then(|s| u8::try_from(s).ok())
        .unwrap_or(0);
    // Printed as recorded (indented); JSON readers do not care about the layout.
    print!("{recorded}");
    ExitCode::from(status)
}

const SENSORS_RECORDED: &str = include_str!("../fixtures/sensors/proxmox-host.json");

/// The stand-in `sensors` with `args` (without the program name).
pub fn sensors_main(args: &[String]) -> ExitCode {
    if args != ["-j"] {
        eprintln!("felhom-sim-sensors: expected -j, got {args:?}");
        return ExitCode::from(1);
    }
    print!("{SENSORS_RECORDED}");
    ExitCode::SUCCESS
}
