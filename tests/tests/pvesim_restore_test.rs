//! What a self-restore-test does against the PVE simulator, step by step as the agent will:
//! restore an archive (local or PBS) into a scratch vmid with `unique=1`, mark it (`tags`,
//! `onboot=0`, `net0` with `link_down=1`), start it, read its interfaces, stop and purge it.
//! Plus the failure paths such a test must recognise, and vzdump's mode and log rules.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::collections::BTreeMap;

use common::*;
use felhom_simhost::pve::fixture::GuestStatus;
use felhom_simhost::pve::{FaultSpec, PveSimHandle};

const SCRATCH: &str = "9900";

/// Runs a task-starting call and waits for it: (exitstatus, log).
async fn run(
    sim: &PveSimHandle,
    method: reqwest::Method,
    path: &str,
    form: &[(&str, &str)],
) -> (String, Vec<String>) {
    let a = call(sim, Some(AGENT), method, path, form).await;
    assert_eq!(a.status, 200, "{path}: {} {:?}", a.reason, a.body);
    let upid = a.data().as_str().unwrap().to_owned();
    let status = wait_task(sim, AGENT, &upid).await;
    (
        status["exitstatus"].as_str().unwrap().to_owned(),
        task_log(sim, AGENT, &upid).await,
    )
}

async fn backup(sim: &PveSimHandle, vmid: &str, storage: &str) -> String {
    let (status, log) = run(
        sim,
        reqwest::Method::POST,
        "/nodes/pve1/vzdump",
        &[("vmid", vmid), ("storage", storage), ("compress", "zstd")],
    )
    .await;
    assert_eq!(status, "OK", "{log:#?}");
    let a = get(
        sim,
        AGENT,
        &format!("/nodes/pve1/storage/{storage}/content?content=backup&vmid={vmid}"),
    )
    .await;
    a.data()
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|b| b["ctime"].as_i64().unwrap())
        .unwrap()["volid"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn restore_scratch(sim: &PveSimHandle, volid: &str) -> (String, Vec<String>) {
    run(
        sim,
        reqwest::Method::POST,
        "/nodes/pve1/lxc",
        &[
            ("vmid", SCRATCH),
            ("ostemplate", volid),
            ("restore", "1"),
            ("unique", "1"),
            ("storage", "local-lvm"),
        ],
    )
    .await
}

/// The whole sequence after the restore; `original` is the guest the archive came from.
async fn mark_start_probe_stop_destroy(sim: &PveSimHandle, original: u32) {
    let cfg = get(sim, AGENT, "/nodes/pve1/lxc/9900/config").await;
    assert_eq!(cfg.status, 200);
    let net0 = cfg.data()["net0"].as_str().unwrap().to_owned();
    let orig_net0 = sim.state().guest(original).unwrap().config["net0"].clone();
    assert_ne!(net0, orig_net0, "unique=1 gives a new MAC");
    assert!(net0.contains("hwaddr=BC:24:11:"), "{net0}");

    let isolated = format!("{net0},link_down=1");
    let a = put(
        sim,
        AGENT,
        "/nodes/pve1/lxc/9900/config",
        &[
            ("tags", "felhom-scratch"),
            ("onboot", "0"),
            ("net0", &isolated),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let cfg = get(sim, AGENT, "/nodes/pve1/lxc/9900/config").await;
    assert_eq!(cfg.data()["tags"], "felhom-scratch");
    assert_eq!(cfg.data()["onboot"], 0);
    assert_eq!(cfg.data()["net0"], isolated);

    let (status, _) = run(
        sim,
        reqwest::Method::POST,
        "/nodes/pve1/lxc/9900/status/start",
        &[],
    )
    .await;
    assert_eq!(status, "OK");
    let cur = get(sim, AGENT, "/nodes/pve1/lxc/9900/status/current").await;
    assert_eq!(cur.data()["status"], "running");
    let ifaces = get(sim, AGENT, "/nodes/pve1/lxc/9900/interfaces").await;
    assert_eq!(ifaces.status, 200);
    let names: Vec<&str> = ifaces
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"eth0"), "{names:?}");

    let (status, _) = run(
        sim,
        reqwest::Method::POST,
        "/nodes/pve1/lxc/9900/status/stop",
        &[],
    )
    .await;
    assert_eq!(status, "OK");
    let (status, log) = run(
        sim,
        reqwest::Method::DELETE,
        "/nodes/pve1/lxc/9900",
        &[("purge", "1")],
    )
    .await;
    assert_eq!(status, "OK");
    assert!(log.contains(&"purging CT 9900 from related configurations..".to_owned()));
    assert!(sim.state().guest(9900).is_none());
}

#[tokio::test]
async fn restore_test_sequence_works_on_a_local_archive() {
    let sim = start().await;
    let volid = backup(&sim, "102", "local").await;
    let (status, log) = restore_scratch(&sim, &volid).await;
    assert_eq!(status, "OK", "{log:#?}");
    mark_start_probe_stop_destroy(&sim, 102).await;
}

#[tokio::test]
async fn restore_test_sequence_works_on_an_encrypted_pbs_archive() {
    let sims = start_linked(true).await;
    let volid = backup(&sims.pve, "101", "felhom-pbs").await;
    let (status, log) = restore_scratch(&sims.pve, &volid).await;
    assert_eq!(status, "OK", "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("proxmox-backup-client restore --crypt-mode=encrypt")),
        "{log:#?}"
    );
    mark_start_probe_stop_destroy(&sims.pve, 101).await;
    sims.shutdown().await;
}

#[tokio::test]
async fn restoring_an_encrypted_archive_without_the_key_fails_in_the_task() {
    let sims = start_linked(true).await;
    let fp = sims.key.as_ref().unwrap().fingerprint();
    let volid = backup(&sims.pve, "101", "felhom-pbs").await;
    sims.pve
        .state()
        .set_pbs_encryption_key("felhom-pbs", None)
        .unwrap();
    let (status, _) = restore_scratch(&sims.pve, &volid).await;
    assert_eq!(
        status,
        format!(
            "unable to restore CT 9900 - proxmox-backup-client failed: Error: missing key - manifest was created with key {fp}"
        )
    );
    assert!(sims.pve.state().guest(9900).is_none());
    sims.shutdown().await;
}

#[tokio::test]
async fn restoring_a_snapshot_pruned_in_pbs_fails_in_the_task() {
    let sims = start_linked(false).await;
    let volid = backup(&sims.pve, "102", "felhom-pbs").await;
    let time = sims
        .pbs
        .state()
        .snapshots("felhom")
        .iter()
        .find(|s| s.backup_id == "102")
        .unwrap()
        .backup_time;
    sims.pbs
        .state()
        .forget_snapshot("felhom", felhom_simhost::pbs::BackupType::Ct, "102", time);
    let (status, _) = restore_scratch(&sims.pve, &volid).await;
    assert_eq!(
        status,
        format!("unable to restore CT 9900 - volume '{volid}' does not exist")
    );
    sims.shutdown().await;
}

#[tokio::test]
async fn a_failing_start_leaves_the_guest_stopped_with_a_failed_task() {
    let sim = start().await;
    let (status, _) = restore_scratch(&sim, GOLDEN).await;
    assert_eq!(status, "OK");
    sim.faults()
        .add(FaultSpec::FailTask {
            task_type: "vzstart".to_owned(),
            count: 1,
            exitstatus: None,
        })
        .unwrap();
    let (status, log) = run(
        &sim,
        reqwest::Method::POST,
        "/nodes/pve1/lxc/9900/status/start",
        &[],
    )
    .await;
    assert_eq!(status, "startup for container '9900' failed");
    assert!(
        log.contains(&"__lxc_start: 2034 Failed to initialize container \"9900\"".to_owned()),
        "{log:#?}"
    );
    assert_eq!(
        log.last().unwrap(),
        "TASK ERROR: startup for container '9900' failed"
    );
    let cur = get(&sim, AGENT, "/nodes/pve1/lxc/9900/status/current").await;
    assert_eq!(cur.data()["status"], "stopped");
    assert!(cur.data().get("lock").is_none());
}

#[tokio::test]
async fn net0_with_a_non_boolean_link_down_is_refused_with_the_pve_text() {
    let sim = start().await;
    let a = put(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/103/config",
        &[("net0", "name=eth0,bridge=vmbr0,link_down=maybe")],
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body["errors"]["net0"],
        "invalid format - format error\nnet0.link_down: type check ('boolean') failed - got 'maybe'"
    );
}

#[tokio::test]
async fn net0_without_a_name_or_with_an_unknown_key_is_refused() {
    let sim = start().await;
    let a = put(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/103/config",
        &[("net0", "bridge=vmbr0,colour=red")],
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body["errors"]["net0"],
        "invalid format - format error\nnet0.colour: property is not defined in schema and the schema does not allow additional properties\nnet0.name: property is missing and it is not optional"
    );
}

#[tokio::test]
async fn tags_are_stored_deduplicated_and_sorted() {
    let sim = start().await;
    let a = put(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/103/config",
        &[("tags", "zeta,felhom-scratch;zeta alpha")],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let cfg = get(&sim, AGENT, "/nodes/pve1/lxc/103/config").await;
    assert_eq!(cfg.data()["tags"], "alpha;felhom-scratch;zeta");
}

#[tokio::test]
async fn a_foreign_scratch_guest_added_through_the_state_is_listed_with_its_tag() {
    let sim = start().await;
    let config = BTreeMap::from([
        ("hostname".to_owned(), "someone-elses".to_owned()),
        ("tags".to_owned(), "felhom-scratch".to_owned()),
        (
            "rootfs".to_owned(),
            "local-lvm:vm-9901-disk-0,size=4G".to_owned(),
        ),
    ]);
    sim.state()
        .add_guest(9901, GuestStatus::Running, config)
        .unwrap();
    let list = get(&sim, AGENT, "/nodes/pve1/lxc").await;
    let g = list
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["vmid"] == 9901)
        .cloned()
        .unwrap();
    assert_eq!(g["tags"], "felhom-scratch");
    assert_eq!(g["status"], "running");
    let again = sim
        .state()
        .add_guest(9901, GuestStatus::Stopped, BTreeMap::new());
    assert_eq!(
        again,
        Err("CT 9901 already exists on node 'pve1'".to_owned())
    );
}

#[tokio::test]
async fn snapshot_mode_on_a_storage_without_snapshots_falls_back_to_suspend() {
    let sim = start().await;
    let config = BTreeMap::from([
        ("hostname".to_owned(), "on-dir".to_owned()),
        (
            "rootfs".to_owned(),
            "local:9902/vm-9902-disk-0.raw,size=4G".to_owned(),
        ),
    ]);
    sim.state()
        .add_guest(9902, GuestStatus::Running, config)
        .unwrap();
    let (status, log) = run(
        &sim,
        reqwest::Method::POST,
        "/nodes/pve1/vzdump",
        &[("vmid", "9902"), ("storage", "local"), ("mode", "snapshot")],
    )
    .await;
    assert_eq!(status, "OK", "{log:#?}");
    let at = |line: &str| {
        log.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no '{line}' in {log:#?}"))
    };
    let failure = at("INFO: mode failure - some volumes do not support snapshots");
    let trying = at("INFO: trying 'suspend' mode instead");
    let mode = at("INFO: backup mode: suspend");
    assert!(failure < trying && trying < mode);
    at("INFO: suspending guest");
    at("INFO: resuming guest");
    assert!(!log.iter().any(|l| l.contains("create storage snapshot")));
}

#[tokio::test]
async fn a_successful_vzdump_log_has_pves_milestones() {
    let sim = start().await;
    let (status, log) = run(
        &sim,
        reqwest::Method::POST,
        "/nodes/pve1/vzdump",
        &[("vmid", "101"), ("storage", "local"), ("compress", "zstd")],
    )
    .await;
    assert_eq!(status, "OK");
    let expect_prefix = [
        "INFO: starting new backup job: vzdump 101 --storage local --mode snapshot --compress zstd",
        "INFO: Starting Backup of VM 101 (lxc)",
        "INFO: backup mode: snapshot",
        "INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-lxc-101-",
        "INFO: Finished Backup of VM 101 (",
        "INFO: Backup job finished successfully",
        "TASK OK",
    ];
    let mut pos = 0;
    for p in expect_prefix {
        let found = log[pos..]
            .iter()
            .position(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no '{p}' after line {pos} in {log:#?}"));
        pos += found + 1;
    }
}

#[tokio::test]
async fn a_failing_vzdump_ends_with_job_errors_and_an_error_line() {
    let sim = start().await;
    sim.faults()
        .add(FaultSpec::FailTask {
            task_type: "vzdump".to_owned(),
            count: 1,
            exitstatus: None,
        })
        .unwrap();
    let (status, log) = run(
        &sim,
        reqwest::Method::POST,
        "/nodes/pve1/vzdump",
        &[("vmid", "102"), ("storage", "local")],
    )
    .await;
    assert_eq!(status, "job errors");
    assert!(
        log.iter()
            .any(|l| l.starts_with("ERROR: Backup of VM 102 failed - ")),
        "{log:#?}"
    );
    assert_eq!(log.last().unwrap(), "TASK ERROR: job errors");
}
