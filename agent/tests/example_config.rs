//! The example configuration shipped in packaging/ must load as-is (with a token credential).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::Path;

use felhom_agent::app::config::Config;

#[test]
fn the_packaged_example_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pve-token"),
        "felhom-agent@pve!agent=11111111-2222-3333-4444-555555555555\n",
    )
    .unwrap();
    // Like systemd's credential copy: private to the agent.
    std::fs::set_permissions(
        dir.path().join("pve-token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o400),
    )
    .unwrap();
    let mut env = BTreeMap::new();
    env.insert(
        "CREDENTIALS_DIRECTORY".to_owned(),
        dir.path().display().to_string(),
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.example.toml");
    let cfg = Config::load(Some(&path), &env).unwrap();
    let px = cfg.proxmox.expect("the example configures Proxmox VE");
    assert_eq!(px.client.node, "pve1");
    assert_eq!(px.client.token.authid(), "felhom-agent@pve!agent");
    assert_eq!(cfg.agent.socket_group.as_deref(), Some("felhom-ops"));
}
