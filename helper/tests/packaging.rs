//! The shipped systemd unit agrees with the code about privileges.

use std::collections::BTreeSet;

const UNIT: &str = include_str!("../../packaging/systemd/felhom-helper.service");

fn directive(name: &str) -> &'static str {
    UNIT.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name}= missing from felhom-helper.service"))
}

#[test]
fn unit_bounding_set_is_the_helpers_own_plus_setpcap() {
    let unit: BTreeSet<String> = directive("CapabilityBoundingSet")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // CAP_SETPCAP is needed only to shrink the bounding set at start; the helper drops it then.
    let code: BTreeSet<String> = felhom_helper::privilege::BOUNDING
        .iter()
        .map(|c| c.to_string())
        .chain(["CAP_SETPCAP".to_owned()])
        .collect();
    assert_eq!(unit, code);
}

#[test]
fn unit_runs_the_real_helper_privileged_and_notifies() {
    let exec = directive("ExecStart");
    assert!(!exec.contains("--unprivileged-dev"), "{exec}");
    assert_eq!(directive("Type"), "notify");
    for forbidden in [
        "PrivateMounts=",
        "ProtectSystem=",
        "PrivateTmp=",
        "PrivateDevices=",
        "User=",
    ] {
        assert!(
            !UNIT.lines().any(|l| l.starts_with(forbidden)),
            "{forbidden} would break host mounts, device access or root identity"
        );
    }
}
