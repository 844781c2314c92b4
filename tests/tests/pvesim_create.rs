//! Create and restore: keyctl refusal texts from pve-container, restore keeps the archived
//! features, `unique` regenerates MACs, vmid collisions and storage checks.

mod common;

use std::collections::BTreeMap;

use common::*;

const KEYCTL_REFUSAL: &str = "Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)";

fn create_form<'a>(vmid: &'a str, features: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("vmid", vmid),
        (
            "ostemplate",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        ),
        ("storage", "local-lvm"),
        ("features", features),
        ("unprivileged", "1"),
    ]
}

#[tokio::test]
async fn agent_token_cannot_create_with_keyctl() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc",
        &create_form("110", "nesting=1,keyctl=1"),
    )
    .await;
    assert_eq!((a.status, a.reason.as_str()), (403, KEYCTL_REFUSAL));
    assert!(sim.state().guest(110).is_none());
}

#[tokio::test]
async fn root_token_is_refused_keyctl_like_real_pve() {
    // check_ct_modify_config_perm only waives the check for the user root@pam; a token's
    // authid is root@pam!sim.
    let sim = start().await;
    let a = post(
        &sim,
        ROOT,
        "/nodes/pve1/lxc",
        &create_form("110", "nesting=1,keyctl=1"),
    )
    .await;
    assert_eq!((a.status, a.reason.as_str()), (403, KEYCTL_REFUSAL));
}

#[tokio::test]
async fn root_cli_create_sets_keyctl() {
    let sim = start().await;
    let config = BTreeMap::from([
        ("features".to_owned(), "keyctl=1,nesting=1".to_owned()),
        ("hostname".to_owned(), "golden".to_owned()),
        ("unprivileged".to_owned(), "1".to_owned()),
    ]);
    sim.state().create_as_root(9001, config).unwrap();
    let a = get(&sim, AGENT, "/nodes/pve1/lxc/9001/config").await;
    assert_eq!(a.data()["features"], "keyctl=1,nesting=1");
}

#[tokio::test]
async fn agent_token_may_create_with_nesting_only() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc",
        &create_form("110", "nesting=1"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.reason);
    let upid = a.data().as_str().unwrap().to_owned();
    assert!(
        upid.contains(":vzcreate:110:felhom-agent@pve!agent:"),
        "{upid}"
    );
    let status = wait_task(&sim, AGENT, &upid).await;
    assert_eq!(status["exitstatus"], "OK");
    let cfg = get(&sim, AGENT, "/nodes/pve1/lxc/110/config").await;
    assert_eq!(cfg.data()["features"], "nesting=1");
}

async fn restore(sim: &felhom_simhost::pve::PveSimHandle, vmid: &str, unique: &str) -> String {
    let a = post(
        sim,
        AGENT,
        "/nodes/pve1/lxc",
        &[
            ("vmid", vmid),
            ("ostemplate", GOLDEN),
            ("restore", "1"),
            ("storage", "local-lvm"),
            ("unique", unique),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.reason);
    a.data().as_str().expect("create answers a UPID").to_owned()
}

#[tokio::test]
async fn token_restore_keeps_archived_keyctl() {
    let sim = start().await;
    let upid = restore(&sim, "120", "1").await;
    assert!(upid.contains(":vzrestore:120:"), "{upid}");
    assert_eq!(wait_task(&sim, AGENT, &upid).await["exitstatus"], "OK");
    let cfg = get(&sim, AGENT, "/nodes/pve1/lxc/120/config").await;
    assert_eq!(cfg.data()["features"], "keyctl=1,nesting=1");
    assert_eq!(cfg.data()["unprivileged"], 1);
    assert_eq!(cfg.data()["rootfs"], "local-lvm:vm-120-disk-0,size=8G");
}

#[tokio::test]
async fn unique_restore_gives_a_new_proxmox_mac() {
    let sim = start().await;
    let upid = restore(&sim, "121", "1").await;
    wait_task(&sim, AGENT, &upid).await;
    let net0 = sim.state().guest(121).unwrap().config["net0"].clone();
    let mac = net0
        .split(',')
        .find_map(|kv| kv.strip_prefix("hwaddr="))
        .unwrap()
        .to_owned();
    assert!(mac.starts_with("BC:24:11:"), "{mac}");
    assert_ne!(mac, "BC:24:11:00:90:00");
}

/// pve-container's `sanitize_and_merge_config`: given options win over the archive's, except
/// that with `unique=1` the archive's `netN` (with a new MAC) replaces a given `netN`.
#[tokio::test]
async fn given_options_win_over_the_archive_except_nets_under_unique() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc",
        &[
            ("vmid", "123"),
            ("ostemplate", GOLDEN),
            ("restore", "1"),
            ("storage", "local-lvm"),
            ("unique", "1"),
            ("onboot", "0"),
            ("tags", "copy"),
            ("net0", "name=eth9,bridge=vmbr0,type=veth"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.reason);
    let upid = a.data().as_str().unwrap().to_owned();
    assert_eq!(wait_task(&sim, AGENT, &upid).await["exitstatus"], "OK");
    let config = sim.state().guest(123).unwrap().config;
    assert_eq!(config["onboot"], "0");
    assert_eq!(config["tags"], "copy");
    assert!(
        config["net0"].starts_with("name=eth0,"),
        "{}",
        config["net0"]
    );
}

#[tokio::test]
async fn guest_is_locked_create_while_restoring() {
    let sim = start().await;
    sim.faults().hang_next_tasks("vzrestore", 1);
    restore(&sim, "122", "0").await;
    let a = get(&sim, AGENT, "/nodes/pve1/lxc/122/status/current").await;
    assert_eq!(a.data()["lock"], "create");
}

#[tokio::test]
async fn restore_over_existing_guest_without_force_fails() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc",
        &[
            ("vmid", "103"),
            ("ostemplate", GOLDEN),
            ("restore", "1"),
            ("storage", "local-lvm"),
        ],
    )
    .await;
    assert_eq!(a.status, 500);
    assert_eq!(a.reason, "CT 103 already exists on node 'pve1'");
}

#[tokio::test]
async fn forced_restore_over_running_guest_fails() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc",
        &[
            ("vmid", "101"),
            ("ostemplate", GOLDEN),
            ("restore", "1"),
            ("force", "1"),
            ("storage", "local-lvm"),
        ],
    )
    .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (500, "can't overwrite running container")
    );
}

#[tokio::test]
async fn restore_to_default_storage_without_rootdir_is_refused() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc",
        &[("vmid", "123"), ("ostemplate", GOLDEN), ("restore", "1")],
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body["errors"]["storage"],
        "storage 'local' does not support container directories"
    );
}

#[tokio::test]
async fn restore_to_unknown_storage_fails() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc",
        &[
            ("vmid", "123"),
            ("ostemplate", GOLDEN),
            ("restore", "1"),
            ("storage", "nope"),
        ],
    )
    .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (500, "storage 'nope' does not exist")
    );
}

#[tokio::test]
async fn auditor_cannot_create() {
    let sim = start().await;
    let a = post(
        &sim,
        AUDITOR,
        "/nodes/pve1/lxc",
        &create_form("110", "nesting=1"),
    )
    .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (403, "Permission check failed")
    );
}

#[tokio::test]
async fn destroying_a_running_guest_is_refused() {
    let sim = start().await;
    let a = call(
        &sim,
        Some(AGENT),
        reqwest::Method::DELETE,
        "/nodes/pve1/lxc/101",
        &[],
    )
    .await;
    assert_eq!(a.status, 500);
    assert_eq!(a.reason, "unable to destroy CT 101 - container is running");
}

#[tokio::test]
async fn destroying_a_stopped_guest_removes_it() {
    let sim = start().await;
    let a = call(
        &sim,
        Some(AGENT),
        reqwest::Method::DELETE,
        "/nodes/pve1/lxc/103",
        &[("purge", "1")],
    )
    .await;
    let upid = a.data().as_str().unwrap().to_owned();
    assert_eq!(wait_task(&sim, AGENT, &upid).await["exitstatus"], "OK");
    assert!(sim.state().guest(103).is_none());
}

#[tokio::test]
async fn restore_without_sdn_use_fails_in_the_task() {
    let mut fixture = felhom_simhost::pve::Fixture::default_host();
    for role in &mut fixture.roles {
        role.privs.retain(|p| p != "SDN.Use");
    }
    let sim = start_with(felhom_simhost::pve::PveSimOptions {
        fixture,
        task_duration: std::time::Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let upid = restore(&sim, "124", "1").await;
    let status = wait_task(&sim, AGENT, &upid).await;
    assert_eq!(
        status["exitstatus"],
        "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)"
    );
    assert!(sim.state().guest(124).is_none());
}
