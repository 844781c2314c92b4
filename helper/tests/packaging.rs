//! The shipped systemd unit agrees with the code about privileges.

use std::collections::BTreeSet;

const UNIT: &str = include_str!("../../packaging/systemd/felhom-helper.service");

fn directive(name: &str) -> &'static str {
    UNIT.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name}= missing from felhom-helper.service"))
}

#[test]
fn unit_bounding_set_is_the_helpers_own_plus_start_only() {
    let unit: BTreeSet<String> = directive("CapabilityBoundingSet")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // CAP_SETPCAP and CAP_SYS_PTRACE are needed only at start; the helper drops them then.
    let code: BTreeSet<String> = felhom_helper::privilege::BOUNDING
        .iter()
        .chain(felhom_helper::privilege::START_ONLY)
        .map(|c| c.to_string())
        .collect();
    assert_eq!(unit, code);
}

#[test]
fn unit_runs_the_real_helper_privileged_and_notifies() {
    let exec = directive("ExecStart");
    assert!(!exec.contains("--unprivileged-dev"), "{exec}");
    assert_eq!(directive("Type"), "notify");
    assert!(
        directive("WatchdogSec").ends_with('s'),
        "the helper pets the watchdog"
    );
    for forbidden in ["PrivateDevices=", "PrivateNetwork=", "User="] {
        assert!(
            !UNIT.lines().any(|l| l.starts_with(forbidden)),
            "{forbidden} would break device access, pct's pmxcfs IPC or root identity"
        );
    }
}

#[test]
fn unit_sandboxes_the_file_system_and_mounts_through_the_host_namespace() {
    // The sandbox is affordable only because mounts and pct run in PID 1's namespace
    // (helper/src/hostns.rs): the unit must not point --host-mount-ns elsewhere.
    let exec = directive("ExecStart");
    assert!(!exec.contains("--host-mount-ns"), "{exec}");
    assert!(!exec.contains("--mountinfo"), "{exec}");
    assert_eq!(directive("ProtectSystem"), "strict");
    assert_eq!(directive("ReadWritePaths"), "/run/felhom-helper");
    for on in [
        "PrivateTmp",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
    ] {
        assert_eq!(directive(on), "yes", "{on}=");
    }
    assert!(
        directive("RestrictNamespaces")
            .split_whitespace()
            .any(|n| n == "mnt"),
        "setns(CLONE_NEWNS) needs mnt"
    );
}
