//! Task lifecycle, UPIDs, guest locks, snapshots and vzdump.

mod common;

use common::*;
use serde_json::json;

fn is_upid(s: &str, kind: &str, id: &str, user: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    let hex8 = |p: &str| {
        p.len() == 8
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    };
    parts.len() == 9
        && parts[0] == "UPID"
        && parts[1] == "pve1"
        && hex8(parts[2])
        && hex8(parts[3])
        && hex8(parts[4])
        && parts[5] == kind
        && parts[6] == id
        && parts[7] == user
        && parts[8].is_empty()
}

#[tokio::test]
async fn start_returns_a_pve_upid() {
    let sim = start().await;
    let a = post(&sim, AGENT, "/nodes/pve1/lxc/103/status/start", &[]).await;
    let upid = a.data().as_str().unwrap();
    assert!(is_upid(upid, "vzstart", "103", AGENT), "{upid}");
}

#[tokio::test]
async fn task_is_running_then_stopped_ok() {
    let sim = start().await;
    sim.faults().hang_next_tasks("vzstart", 1);
    let hung = post(&sim, AGENT, "/nodes/pve1/lxc/103/status/start", &[]).await;
    let hung_upid = hung.data().as_str().unwrap().to_owned();
    let running = get(
        &sim,
        AGENT,
        &format!("/nodes/pve1/tasks/{}/status", urlencode(&hung_upid)),
    )
    .await;
    assert_eq!(running.data()["status"], "running");
    assert!(running.data().get("exitstatus").is_none());

    let a = post(&sim, AGENT, "/nodes/pve1/lxc/102/status/stop", &[]).await;
    let upid = a.data().as_str().unwrap().to_owned();
    let done = wait_task(&sim, AGENT, &upid).await;
    assert_eq!(done["exitstatus"], "OK");
    assert_eq!(done["type"], "vzstop");
    assert_eq!(
        task_log(&sim, AGENT, &upid).await.last().unwrap(),
        "TASK OK"
    );
    let st = get(&sim, AGENT, "/nodes/pve1/lxc/102/status/current").await;
    assert_eq!(st.data()["status"], "stopped");
}

#[tokio::test]
async fn task_list_filters_by_vmid_and_type() {
    let sim = start().await;
    let a = post(&sim, AGENT, "/nodes/pve1/lxc/103/status/start", &[]).await;
    wait_task(&sim, AGENT, a.data().as_str().unwrap()).await;
    let b = post(&sim, AGENT, "/nodes/pve1/lxc/102/status/stop", &[]).await;
    wait_task(&sim, AGENT, b.data().as_str().unwrap()).await;
    let list = get(&sim, AGENT, "/nodes/pve1/tasks?vmid=103&typefilter=vzstart").await;
    let items = list.data().as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "OK");
    assert_eq!(items[0]["upid"], a.data().clone());
}

#[tokio::test]
async fn config_change_on_locked_guest_fails_with_lock_name() {
    let sim = start().await;
    sim.state().set_lock(103, Some("backup"));
    let a = put(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/103/config",
        &[("memory", "2048")],
    )
    .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (500, "CT 103 is locked (backup)")
    );
}

#[tokio::test]
async fn vzdump_holds_backup_lock_while_running() {
    let sim = start().await;
    sim.faults().hang_next_tasks("vzdump", 1);
    post(
        &sim,
        AGENT,
        "/nodes/pve1/vzdump",
        &[("vmid", "101"), ("storage", "local")],
    )
    .await;
    let cfg = get(&sim, AGENT, "/nodes/pve1/lxc/101/config").await;
    assert_eq!(cfg.data()["lock"], "backup");
    let snap = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/101/snapshot",
        &[("snapname", "s1")],
    )
    .await;
    let status = wait_task(&sim, AGENT, snap.data().as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "CT 101 is locked (backup)");
}

#[tokio::test]
async fn config_put_applies_and_digest_mismatch_is_refused() {
    let sim = start().await;
    let ok = put(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/103/config",
        &[("memory", "2048"), ("delete", "swap")],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.reason);
    let cfg = get(&sim, AGENT, "/nodes/pve1/lxc/103/config").await;
    assert_eq!(cfg.data()["memory"], 2048);
    assert!(cfg.data().get("swap").is_none());
    let stale = put(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/103/config",
        &[("cores", "2"), ("digest", "0000")],
    )
    .await;
    assert_eq!(stale.status, 500);
    assert_eq!(
        stale.reason,
        "detected modified configuration - file changed by other user? Try again."
    );
}

#[tokio::test]
async fn vzdump_of_stopped_guest_uses_stop_mode_and_creates_volume() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/vzdump",
        &[
            ("vmid", "103"),
            ("storage", "local"),
            ("mode", "snapshot"),
            ("compress", "zstd"),
        ],
    )
    .await;
    let upid = a.data().as_str().unwrap().to_owned();
    assert!(is_upid(&upid, "vzdump", "103", AGENT), "{upid}");
    assert_eq!(wait_task(&sim, AGENT, &upid).await["exitstatus"], "OK");
    let log = task_log(&sim, AGENT, &upid).await;
    assert!(
        log.contains(&"INFO: backup mode: stop".to_owned()),
        "{log:#?}"
    );
    assert!(log.contains(&"INFO: Backup job finished successfully".to_owned()));
    let content = get(
        &sim,
        AGENT,
        "/nodes/pve1/storage/local/content?content=backup&vmid=103",
    )
    .await;
    let items = content.data().as_array().unwrap();
    assert_eq!(items.len(), 1);
    let volid = items[0]["volid"].as_str().unwrap();
    assert!(volid.starts_with("local:backup/vzdump-lxc-103-"), "{volid}");
    assert!(volid.ends_with(".tar.zst"));
    assert_eq!(items[0]["format"], "tar.zst");
}

#[tokio::test]
async fn vzdump_of_running_guest_uses_snapshot_mode_and_skips_backup0_mount() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/vzdump",
        &[("vmid", "101"), ("storage", "local"), ("mode", "snapshot")],
    )
    .await;
    let upid = a.data().as_str().unwrap().to_owned();
    wait_task(&sim, AGENT, &upid).await;
    let log = task_log(&sim, AGENT, &upid).await;
    assert!(log.contains(&"INFO: backup mode: snapshot".to_owned()));
    assert!(log.contains(
        &"INFO: excluding volume mount point mp0 ('/mnt/bulk') from backup (disabled)".to_owned()
    ));
}

#[tokio::test]
async fn vzdump_to_pbs_creates_pbs_volume() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/vzdump",
        &[("vmid", "102"), ("storage", "felhom-pbs")],
    )
    .await;
    wait_task(&sim, AGENT, a.data().as_str().unwrap()).await;
    let backups = sim.state().backups("felhom-pbs");
    let new = backups.iter().find(|b| b.vmid == 102).unwrap();
    assert!(
        new.volid.starts_with("felhom-pbs:backup/ct/102/"),
        "{}",
        new.volid
    );
    assert!(new.volid.ends_with('Z'));
    assert_eq!(new.format(), "pbs-ct");
}

#[tokio::test]
async fn vzdump_prunes_with_keep_last() {
    let sim = start().await;
    for _ in 0..3 {
        let a = post(
            &sim,
            AGENT,
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "103"),
                ("storage", "local"),
                ("prune-backups", "keep-last=2"),
            ],
        )
        .await;
        assert_eq!(
            wait_task(&sim, AGENT, a.data().as_str().unwrap()).await["exitstatus"],
            "OK"
        );
    }
    let mine = sim
        .state()
        .backups("local")
        .into_iter()
        .filter(|b| b.vmid == 103)
        .count();
    assert_eq!(mine, 2);
}

#[tokio::test]
async fn restore_of_a_fresh_backup_reproduces_the_config() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/vzdump",
        &[("vmid", "102"), ("storage", "local"), ("compress", "zstd")],
    )
    .await;
    wait_task(&sim, AGENT, a.data().as_str().unwrap()).await;
    let volid = sim
        .state()
        .backups("local")
        .into_iter()
        .find(|b| b.vmid == 102)
        .unwrap()
        .volid;
    let r = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc",
        &[
            ("vmid", "130"),
            ("ostemplate", &volid),
            ("restore", "1"),
            ("storage", "local-lvm"),
        ],
    )
    .await;
    assert_eq!(
        wait_task(&sim, AGENT, r.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let cfg = get(&sim, AGENT, "/nodes/pve1/lxc/130/config").await;
    assert_eq!(cfg.data()["hostname"], "felhom-tunnel");
    assert_eq!(
        cfg.data()["net0"],
        "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:3A:7C:02,ip=dhcp,type=veth"
    );
}

#[tokio::test]
async fn snapshot_list_always_ends_with_current() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/102/snapshot",
        &[("snapname", "before"), ("description", "x")],
    )
    .await;
    assert_eq!(
        wait_task(&sim, AGENT, a.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let list = get(&sim, AGENT, "/nodes/pve1/lxc/102/snapshot").await;
    let items = list.data().as_array().unwrap();
    assert_eq!(items[0]["name"], "before");
    assert_eq!(items[1]["name"], "current");
    assert_eq!(items[1]["parent"], "before");
}

#[tokio::test]
async fn rollback_to_missing_snapshot_fails_in_the_task() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/102/snapshot/nope/rollback",
        &[],
    )
    .await;
    assert_eq!(a.status, 200);
    let status = wait_task(&sim, AGENT, a.data().as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "snapshot 'nope' does not exist");
}

#[tokio::test]
async fn delete_snapshot_removes_it() {
    let sim = start().await;
    let a = call(
        &sim,
        Some(AGENT),
        reqwest::Method::DELETE,
        "/nodes/pve1/lxc/101/snapshot/pre-update",
        &[],
    )
    .await;
    assert_eq!(
        wait_task(&sim, AGENT, a.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let list = get(&sim, AGENT, "/nodes/pve1/lxc/101/snapshot").await;
    assert_eq!(
        list.data(),
        &json!([{"name": "current", "description": "You are here!", "running": 1}])
    );
}

#[tokio::test]
async fn resize_grows_the_disk() {
    let sim = start().await;
    let a = put(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/103/resize",
        &[("disk", "rootfs"), ("size", "+2G")],
    )
    .await;
    let upid = a.data().as_str().unwrap().to_owned();
    assert!(is_upid(&upid, "resize", "103", AGENT), "{upid}");
    wait_task(&sim, AGENT, &upid).await;
    let cfg = get(&sim, AGENT, "/nodes/pve1/lxc/103/config").await;
    assert_eq!(cfg.data()["rootfs"], "local-lvm:vm-103-disk-0,size=10G");
}

#[tokio::test]
async fn cluster_resources_lists_every_guest() {
    let sim = start().await;
    let a = get(&sim, AGENT, "/cluster/resources?type=vm").await;
    let ids: Vec<&str> = a
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lxc/101", "lxc/102", "lxc/103"]);
}

#[tokio::test]
async fn nextid_is_first_free_vmid_as_string() {
    let sim = start().await;
    let a = get(&sim, AGENT, "/cluster/nextid").await;
    assert_eq!(a.data(), &json!("100"));
}

#[tokio::test]
async fn starting_a_locked_guest_fails_in_the_task() {
    let sim = start().await;
    sim.state().set_lock(103, Some("snapshot"));
    let a = post(&sim, AGENT, "/nodes/pve1/lxc/103/status/start", &[]).await;
    assert_eq!(a.status, 200);
    let status = wait_task(&sim, AGENT, a.data().as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "CT 103 is locked (snapshot)");
    assert_eq!(sim.state().guest(103).unwrap().status.as_str(), "stopped");
}

#[tokio::test]
async fn missing_vm_backup_privilege_fails_the_vzdump_task() {
    use felhom_simhost::pve::fixture::{AclFixture, AclKind};
    let sim = start().await;
    sim.state().with(|w| {
        w.access.roles.insert(
            "Space".into(),
            ["Datastore.AllocateSpace".to_owned()].into(),
        );
        for (kind, ugid) in [(AclKind::User, "auditor@pve"), (AclKind::Token, AUDITOR)] {
            w.access.acls.push(AclFixture {
                path: "/storage".into(),
                role: "Space".into(),
                kind,
                ugid: ugid.into(),
                propagate: true,
            });
        }
    });
    let a = post(
        &sim,
        AUDITOR,
        "/nodes/pve1/vzdump",
        &[("vmid", "103"), ("storage", "local")],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.reason);
    let status = wait_task(&sim, AUDITOR, a.data().as_str().unwrap()).await;
    assert_eq!(
        status["exitstatus"],
        "Permission check failed (/vms/103, VM.Backup)"
    );
}

#[tokio::test]
async fn vzdump_without_storage_space_privilege_is_refused_at_once() {
    let sim = start().await;
    let a = post(
        &sim,
        AUDITOR,
        "/nodes/pve1/vzdump",
        &[("vmid", "103"), ("storage", "local")],
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.reason,
        "Permission check failed (/storage/local, Datastore.AllocateSpace)"
    );
}

#[tokio::test]
async fn reserved_snapshot_name_is_refused_at_once() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/102/snapshot",
        &[("snapname", "current")],
    )
    .await;
    assert_eq!(a.status, 500);
    assert_eq!(
        a.reason,
        "unable to use snapshot name 'current' (reserved name)"
    );
}

#[tokio::test]
async fn rollback_refusal_names_both_snapshot_privileges() {
    let sim = start().await;
    let a = post(
        &sim,
        AUDITOR,
        "/nodes/pve1/lxc/101/snapshot/pre-update/rollback",
        &[],
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.reason,
        "Permission check failed (/vms/101, VM.Snapshot|VM.Snapshot.Rollback)"
    );
}

#[tokio::test]
async fn vmid_below_100_fails_schema_validation() {
    let sim = start().await;
    let a = get(&sim, AGENT, "/nodes/pve1/lxc/42/config").await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (400, "Parameter verification failed.")
    );
    assert_eq!(
        a.body["errors"]["vmid"],
        "value must have a minimum value of 100"
    );
}

#[tokio::test]
async fn task_log_pages_and_reports_total() {
    let sim = start().await;
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/vzdump",
        &[("vmid", "103"), ("storage", "local")],
    )
    .await;
    let upid = a.data().as_str().unwrap().to_owned();
    wait_task(&sim, AGENT, &upid).await;
    let all = task_log(&sim, AGENT, &upid).await;
    let page = get(
        &sim,
        AGENT,
        &format!("/nodes/pve1/tasks/{}/log?start=2&limit=2", urlencode(&upid)),
    )
    .await;
    assert_eq!(page.body["total"], all.len());
    assert_eq!(
        page.data(),
        &json!([{"n": 3, "t": all[2]}, {"n": 4, "t": all[3]}])
    );
}

#[tokio::test]
async fn task_status_splits_token_into_user_and_tokenid() {
    let sim = start().await;
    let a = post(&sim, AGENT, "/nodes/pve1/lxc/103/status/start", &[]).await;
    let st = wait_task(&sim, AGENT, a.data().as_str().unwrap()).await;
    assert_eq!(st["user"], "felhom-agent@pve");
    assert_eq!(st["tokenid"], "agent");
    assert_eq!(st["upid"], a.data().clone());
}

#[tokio::test]
async fn other_callers_task_needs_sys_audit() {
    let sim = start().await;
    let a = post(&sim, AGENT, "/nodes/pve1/lxc/103/status/start", &[]).await;
    let path = format!(
        "/nodes/pve1/tasks/{}/status",
        urlencode(a.data().as_str().unwrap())
    );
    let refused = get(&sim, TOKENONLY, &path).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.reason,
        "Permission check failed (/nodes/pve1, Sys.Audit)"
    );
    assert_eq!(get(&sim, AUDITOR, &path).await.status, 200);
}

#[tokio::test]
async fn unknown_task_is_a_parameter_error() {
    let sim = start().await;
    let upid = "UPID:pve1:00001234:00005678:6745A1C2:vzdump:101:felhom-agent@pve!agent:";
    let a = get(
        &sim,
        AGENT,
        &format!("/nodes/pve1/tasks/{}/status", urlencode(upid)),
    )
    .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (400, "Parameter verification failed.")
    );
    assert_eq!(a.body["errors"]["upid"], "no such task");
    let bad = get(&sim, AGENT, "/nodes/pve1/tasks/garbage/status").await;
    assert_eq!(bad.body["errors"]["upid"], "unable to parse worker upid");
}

#[tokio::test]
async fn active_task_list_shows_running_status() {
    let sim = start().await;
    sim.faults().hang_next_tasks("vzdump", 1);
    post(
        &sim,
        AGENT,
        "/nodes/pve1/vzdump",
        &[("vmid", "103"), ("storage", "local")],
    )
    .await;
    let a = get(&sim, AGENT, "/nodes/pve1/tasks?source=active").await;
    assert_eq!(a.data()[0]["status"], "RUNNING");
    // The active list is not passed through `$convert_token_task`: the full token authid.
    assert_eq!(a.data()[0]["user"], "felhom-agent@pve!agent");
    assert!(a.data()[0].get("tokenid").is_none(), "{}", a.data());
    assert_eq!(a.body["total"], 1);
    let archived = get(&sim, AGENT, "/nodes/pve1/tasks").await;
    assert_eq!(archived.data(), &json!([]));
}
