//! The agent's typed Proxmox VE client against the simulated Proxmox VE over real HTTPS:
//! every read decodes, every async operation's UPID parses and its task reaches OK, and each
//! kind of failure surfaces as its own error.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::Duration;

use felhom_agent::infra::pve::{
    ApiToken, BackupMode, CertFingerprint, ConfigUpdate, DestroyOptions, PveClient,
    PveClientConfig, PveError, RestoreRequest, TaskFilter, TaskOutcome, TlsTrust, Upid, Vmid,
    VzdumpRequest, WaitOptions,
};
use felhom_simhost::pve::{PveSim, PveSimHandle, PveSimOptions};
use tokio_util::sync::CancellationToken;

const AGENT: &str = "felhom-agent@pve!agent";

async fn sim() -> PveSimHandle {
    PveSim::start(PveSimOptions {
        task_duration: Duration::from_millis(150),
        ..Default::default()
    })
    .await
    .expect("simulator starts")
}

fn client_as(sim: &PveSimHandle, authid: &str, trust: TlsTrust) -> PveClient {
    PveClient::new(PveClientConfig {
        endpoint: sim.url().parse().unwrap(),
        node: sim.node(),
        token: ApiToken::parse(&sim.token(authid).expect("fixture token")).unwrap(),
        trust,
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn pinned(sim: &PveSimHandle) -> TlsTrust {
    TlsTrust::Pinned(CertFingerprint::parse(sim.fingerprint()).unwrap())
}

fn client(sim: &PveSimHandle) -> PveClient {
    client_as(sim, AGENT, pinned(sim))
}

fn wait() -> WaitOptions {
    WaitOptions {
        deadline: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..WaitOptions::default()
    }
}

async fn done(pve: &PveClient, upid: Upid) -> TaskOutcome {
    pve.wait_task(&upid, &wait(), &CancellationToken::new())
        .await
        .expect("task succeeds")
}

fn vmid(n: u32) -> Vmid {
    Vmid::new(n).unwrap()
}

#[tokio::test]
async fn every_read_decodes() {
    let sim = sim().await;
    let pve = client(&sim);
    let version = pve.version().await.unwrap();
    assert!(!version.version.is_empty());
    let nodes = pve.nodes().await.unwrap();
    let me = nodes.iter().find(|n| n.node == sim.node()).unwrap();
    assert_eq!(me.status, "online");
    assert_eq!(me.ssl_fingerprint.as_deref(), Some(sim.fingerprint()));
    let status = pve.node_status().await.unwrap();
    assert_eq!(status.loadavg.len(), 3);
    assert!(status.memory.total > 0 && status.rootfs.total > 0);
    let guests = pve.cluster_guests().await.unwrap();
    assert!(guests.iter().any(|g| g.vmid == 101 && g.kind == "lxc"));
    assert!(pve.next_vmid().await.unwrap().get() >= 100);
    let lxc = pve.list_lxc().await.unwrap();
    assert_eq!(lxc.len(), guests.iter().filter(|g| g.kind == "lxc").count());
    let st = pve.lxc_status(vmid(101)).await.unwrap();
    assert_eq!(st.vmid, 101);
    let cfg = pve.lxc_config(vmid(101)).await.unwrap();
    assert!(cfg.rootfs.is_some());
    assert!(cfg.has_feature("keyctl"), "{cfg:?}");
    let snaps = pve.snapshots(vmid(101)).await.unwrap();
    assert!(snaps.iter().any(|s| s.name == "current"));
    let storage = pve.storage_config().await.unwrap();
    assert!(
        storage
            .iter()
            .any(|s| s.storage == "felhom-pbs" && s.kind == "pbs")
    );
    let node_storage = pve.node_storage().await.unwrap();
    assert!(
        node_storage
            .iter()
            .any(|s| s.storage == "local-lvm" && s.kind == "lvmthin")
    );
    let local = pve.storage_status("local").await.unwrap();
    assert_eq!(local.storage, "local");
    let backups = pve
        .backup_volumes("felhom-pbs", Some(vmid(101)))
        .await
        .unwrap();
    assert!(
        backups
            .iter()
            .all(|b| b.volid.starts_with("felhom-pbs:backup/ct/101/")),
        "{backups:?}"
    );
    assert!(backups.iter().any(|b| b.format == "pbs-ct"));
    let tasks = pve.tasks(&TaskFilter::default()).await.unwrap();
    assert!(tasks.len() <= 50);
    let disks = pve.disks().await.unwrap();
    assert!(!disks.is_empty());
    let pools = pve.thin_pools().await.unwrap();
    assert!(!pools.is_empty());
    let perms = pve.permissions().await.unwrap();
    assert!(
        perms.get("/").is_some_and(|p| p.contains_key("VM.Backup")),
        "{perms:?}"
    );
    let ifaces = pve.lxc_interfaces(vmid(101)).await.unwrap();
    assert!(ifaces.iter().any(|i| i.name == "eth0"));
}

#[tokio::test]
async fn snapshot_rollback_and_delete_each_reach_ok() {
    let sim = sim().await;
    let pve = client(&sim);
    let upid = pve
        .snapshot(vmid(102), "pre_deploy", Some("before deploy"))
        .await
        .unwrap();
    assert_eq!(upid.task_type(), "vzsnapshot");
    assert_eq!(upid.node(), sim.node());
    assert_eq!(upid.authid(), AGENT);
    assert_eq!(done(&pve, upid).await, TaskOutcome::Ok);
    assert!(
        pve.snapshots(vmid(102))
            .await
            .unwrap()
            .iter()
            .any(|s| s.name == "pre_deploy")
    );
    assert_eq!(
        done(
            &pve,
            pve.rollback(vmid(102), "pre_deploy", true).await.unwrap()
        )
        .await,
        TaskOutcome::Ok
    );
    assert_eq!(
        done(
            &pve,
            pve.delete_snapshot(vmid(102), "pre_deploy").await.unwrap()
        )
        .await,
        TaskOutcome::Ok
    );
    assert!(
        !pve.snapshots(vmid(102))
            .await
            .unwrap()
            .iter()
            .any(|s| s.name == "pre_deploy")
    );
}

#[tokio::test]
async fn vzdump_and_restore_round_trip_keeps_the_features() {
    let sim = sim().await;
    let pve = client(&sim);
    let upid = pve
        .vzdump(&VzdumpRequest {
            vmid: vmid(101),
            storage: "local".into(),
            mode: BackupMode::Snapshot,
            compress: Some("zstd".into()),
            prune_backups: Some("keep-last=3".into()),
            notes_template: Some("{{guestname}}".into()),
            protected: false,
        })
        .await
        .unwrap();
    assert_eq!(upid.task_type(), "vzdump");
    assert_eq!(done(&pve, upid).await, TaskOutcome::Ok);
    let archive = pve
        .backup_volumes("local", Some(vmid(101)))
        .await
        .unwrap()
        .into_iter()
        .max_by_key(|v| v.ctime)
        .expect("a backup of 101");
    assert!(
        archive.volid.starts_with("local:backup/vzdump-lxc-101-"),
        "{archive:?}"
    );
    let new = pve.next_vmid().await.unwrap();
    let upid = pve
        .restore_lxc(&RestoreRequest {
            vmid: new,
            archive: archive.volid,
            storage: "local-lvm".into(),
            force: false,
            unique: true,
            start: false,
            hostname: Some("restored".into()),
            memory_mib: Some(1024),
            cores: Some(1),
            onboot: Some(false),
            tags: Some("restored-copy".into()),
            protection: None,
        })
        .await
        .unwrap();
    assert_eq!(done(&pve, upid).await, TaskOutcome::Ok);
    let cfg = pve.lxc_config(new).await.unwrap();
    assert!(
        cfg.has_feature("keyctl") && cfg.has_feature("nesting"),
        "{cfg:?}"
    );
    assert_eq!(cfg.hostname.as_deref(), Some("restored"));
    // Given options win over the archive's (which has onboot=1, tags felhom;home).
    assert_eq!(cfg.tags, vec!["restored-copy".to_owned()]);
    let onboot = cfg.other.get("onboot");
    let onboot = onboot.and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    assert_eq!(onboot, Some(0), "{cfg:?}");
}

#[tokio::test]
async fn config_resize_power_and_destroy_work() {
    let sim = sim().await;
    let pve = client(&sim);
    let mut set = std::collections::BTreeMap::new();
    set.insert("memory".to_owned(), "3072".to_owned());
    pve.set_config(
        vmid(103),
        &ConfigUpdate {
            set,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(pve.lxc_config(vmid(103)).await.unwrap().memory, Some(3072));
    assert_eq!(
        done(&pve, pve.resize(vmid(103), "rootfs", "+2G").await.unwrap()).await,
        TaskOutcome::Ok
    );
    assert_eq!(
        done(&pve, pve.start(vmid(103)).await.unwrap()).await,
        TaskOutcome::Ok
    );
    assert_eq!(pve.lxc_status(vmid(103)).await.unwrap().status, "running");
    assert_eq!(
        done(&pve, pve.shutdown(vmid(103), Some(30), true).await.unwrap()).await,
        TaskOutcome::Ok
    );
    assert_eq!(
        done(&pve, pve.start(vmid(103)).await.unwrap()).await,
        TaskOutcome::Ok
    );
    assert_eq!(
        done(&pve, pve.stop(vmid(103)).await.unwrap()).await,
        TaskOutcome::Ok
    );
    assert_eq!(pve.lxc_status(vmid(103)).await.unwrap().status, "stopped");
    let upid = pve
        .destroy(
            vmid(103),
            DestroyOptions {
                purge: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done(&pve, upid).await, TaskOutcome::Ok);
    assert!(matches!(
        pve.lxc_status(vmid(103)).await,
        Err(PveError::GuestNotFound { vmid: 103, .. })
    ));
}

#[tokio::test]
async fn a_stale_digest_is_refused() {
    let sim = sim().await;
    let pve = client(&sim);
    let mut set = std::collections::BTreeMap::new();
    set.insert("cores".to_owned(), "2".to_owned());
    let update = ConfigUpdate {
        set,
        delete: vec![],
        digest: Some("0".repeat(40)),
    };
    let err = pve.set_config(vmid(103), &update).await.unwrap_err();
    assert!(
        matches!(err, PveError::Rejected { .. } | PveError::Server { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failing_task_is_a_task_error_with_its_log() {
    let sim = sim().await;
    let pve = client(&sim);
    sim.faults().fail_next_tasks(
        "vzdump",
        1,
        Some("command 'vzdump 101' failed: exit code 1"),
    );
    let upid = pve
        .vzdump(&VzdumpRequest {
            vmid: vmid(101),
            storage: "local".into(),
            mode: BackupMode::Snapshot,
            compress: None,
            prune_backups: None,
            notes_template: None,
            protected: false,
        })
        .await
        .unwrap();
    let err = pve
        .wait_task(&upid, &wait(), &CancellationToken::new())
        .await
        .unwrap_err();
    let PveError::TaskFailed(f) = &err else {
        panic!("not a task failure: {err:?}")
    };
    assert_eq!(f.exitstatus, "command 'vzdump 101' failed: exit code 1");
    assert!(!f.log_tail.is_empty());
    assert_eq!(
        err.to_string(),
        format!("task {upid} failed: command 'vzdump 101' failed: exit code 1")
    );
}

#[tokio::test]
async fn a_403_names_the_path_and_privilege() {
    let sim = sim().await;
    let ro = client_as(&sim, "auditor@pve!ro", pinned(&sim));
    let err = ro.snapshot(vmid(101), "nope", None).await.unwrap_err();
    let PveError::Permission { denied, .. } = &err else {
        panic!("not a permission error: {err:?}")
    };
    assert_eq!(denied.path, "/vms/101");
    assert_eq!(denied.privileges, ["VM.Snapshot"]);
}

#[tokio::test]
async fn a_role_granted_to_the_token_only_is_refused() {
    let sim = sim().await;
    let token_only = client_as(&sim, "tokenonly@pve!agent", pinned(&sim));
    let err = token_only.lxc_status(vmid(101)).await.unwrap_err();
    assert!(matches!(err, PveError::Permission { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_bad_secret_is_an_auth_error_without_the_secret() {
    let sim = sim().await;
    let pve = PveClient::new(PveClientConfig {
        endpoint: sim.url().parse().unwrap(),
        node: sim.node(),
        token: ApiToken::parse("felhom-agent@pve!agent=wrong-wrong-wrong").unwrap(),
        trust: pinned(&sim),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let err = pve.version().await.unwrap_err();
    assert!(matches!(err, PveError::Unauthorized { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("wrong-wrong-wrong"));
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    let sim = sim().await;
    let pve = PveClient::new(PveClientConfig {
        request_timeout: Duration::from_millis(500),
        ..PveClientConfig {
            endpoint: sim.url().parse().unwrap(),
            node: sim.node(),
            token: ApiToken::parse(&sim.token(AGENT).unwrap()).unwrap(),
            trust: pinned(&sim),
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
        }
    })
    .unwrap();
    sim.faults().delay("/version", 1, Duration::from_secs(30));
    let err = pve.version().await.unwrap_err();
    assert!(matches!(err, PveError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_5xx_is_a_server_error() {
    let sim = sim().await;
    let pve = client(&sim);
    sim.faults()
        .http_error("/nodes/pve1/status", 1, 503, Some("Service Unavailable"));
    let err = pve.node_status().await.unwrap_err();
    assert!(
        matches!(err, PveError::Server { status: 503, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_a_transport_error() {
    let sim = sim().await;
    let pve = client(&sim);
    sim.faults().drop_connections("/version", 1);
    let err = pve.version().await.unwrap_err();
    assert!(matches!(err, PveError::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn wait_task_survives_transient_poll_failures() {
    let sim = sim().await;
    let pve = client(&sim);
    let upid = pve.snapshot(vmid(102), "flaky", None).await.unwrap();
    sim.faults()
        .http_error("/nodes/pve1/tasks", 2, 503, Some("Service Unavailable"));
    assert_eq!(done(&pve, upid).await, TaskOutcome::Ok);
}

#[tokio::test]
async fn a_task_past_its_deadline_is_reported_as_such() {
    let sim = sim().await;
    let pve = client(&sim);
    sim.faults().hang_next_tasks("vzsnapshot", 1);
    let upid = pve.snapshot(vmid(102), "hangs", None).await.unwrap();
    let opts = WaitOptions {
        deadline: Duration::from_millis(800),
        ..wait()
    };
    let err = pve
        .wait_task(&upid, &opts, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, PveError::TaskDeadline { .. }), "{err:?}");
}

#[tokio::test]
async fn waiting_can_be_cancelled() {
    let sim = sim().await;
    let pve = client(&sim);
    sim.faults().hang_next_tasks("vzsnapshot", 1);
    let upid = pve.snapshot(vmid(102), "cancelled", None).await.unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let err = pve.wait_task(&upid, &wait(), &cancel).await.unwrap_err();
    assert!(matches!(err, PveError::Cancelled { .. }), "{err:?}");
}

#[tokio::test]
async fn a_pin_mismatch_fails_the_handshake_before_any_request() {
    let sim = sim().await;
    let wrong = CertFingerprint::parse(&"AB".repeat(32)).unwrap();
    let pve = client_as(&sim, AGENT, TlsTrust::Pinned(wrong));
    let before = sim.state().tasks().len();
    let err = pve.snapshot(vmid(102), "never", None).await.unwrap_err();
    let PveError::Transport { source, .. } = &err else {
        panic!("not a transport error: {err:?}")
    };
    let chain = format!("{:?}", source);
    assert!(chain.contains("does not match the pinned"), "{chain}");
    assert_eq!(
        sim.state().tasks().len(),
        before,
        "no request may reach the server"
    );
}

#[tokio::test]
async fn the_ca_file_trust_mode_verifies_the_chain() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    let pve = client_as(&sim, AGENT, TlsTrust::CaFile(ca));
    pve.version().await.unwrap();
}

#[tokio::test]
async fn an_unrelated_ca_is_refused() {
    let sim = sim().await;
    let other = felhom_simhost::pve::PveSim::start(PveSimOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, other.ca_pem()).unwrap();
    let pve = client_as(&sim, AGENT, TlsTrust::CaFile(ca));
    assert!(matches!(
        pve.version().await,
        Err(PveError::Transport { .. })
    ));
}

/// Status reads the simulator answered for one task.
fn status_reads(sim: &PveSimHandle, upid: &Upid) -> u32 {
    sim.state()
        .with(|w| w.task_timing.get(upid.as_str()).map(|t| t.status_reads))
        .unwrap_or(0)
}

async fn sim_with_tasks_of(length: Duration) -> PveSimHandle {
    PveSim::start(PveSimOptions {
        task_duration: length,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The task's worker process (the simulator runs one per task, as PVE forks one) exits when
/// the task ends: the client reads the status then, besides one backstop read a second — a
/// 3 s task costs about 5 reads, where polling (200 ms for 2 s, then 500 ms) costs 13.
#[tokio::test]
async fn a_task_on_this_node_is_read_when_its_worker_exits() {
    let sim = sim_with_tasks_of(Duration::from_secs(3)).await;
    let pve = client(&sim);
    let upid = pve.snapshot(vmid(101), "watched", None).await.unwrap();
    let outcome = pve
        .wait_task(&upid, &WaitOptions::default(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(outcome, TaskOutcome::Ok);
    let reads = status_reads(&sim, &upid);
    assert!((2..=6).contains(&reads), "{reads} status reads");
}

/// Where the UPID names another node, there is no local worker to watch: polled as before.
#[tokio::test]
async fn a_task_of_another_node_is_polled() {
    let sim = sim_with_tasks_of(Duration::from_secs(3)).await;
    let pve = PveClient::new(PveClientConfig {
        endpoint: sim.url().parse().unwrap(),
        node: "another-node".to_owned(),
        token: ApiToken::parse(&sim.token(AGENT).unwrap()).unwrap(),
        trust: pinned(&sim),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let upid = client(&sim)
        .snapshot(vmid(101), "polled", None)
        .await
        .unwrap();
    pve.wait_task(&upid, &WaitOptions::default(), &CancellationToken::new())
        .await
        .unwrap();
    let reads = status_reads(&sim, &upid);
    assert!(reads >= 10, "{reads} status reads");
}

fn set_memory(mb: u32) -> ConfigUpdate {
    let mut set = std::collections::BTreeMap::new();
    set.insert("memory".to_owned(), mb.to_string());
    ConfigUpdate {
        set,
        ..Default::default()
    }
}

/// The hot-path config read answers from memory, but never hides the client's own change.
#[tokio::test]
async fn a_recent_config_follows_the_clients_own_change_at_once() {
    let sim = sim().await;
    let pve = client(&sim);
    let before = pve.lxc_config_recent(vmid(103)).await.unwrap().memory;
    pve.set_config(vmid(103), &set_memory(3072)).await.unwrap();
    assert_ne!(before, Some(3072));
    assert_eq!(
        pve.lxc_config_recent(vmid(103)).await.unwrap().memory,
        Some(3072)
    );
}

/// A change made elsewhere (here: straight into the simulator, as the web UI would) shows
/// once the cached read is older than CONFIG_MAX_AGE; until then one read serves many.
#[tokio::test]
async fn a_change_made_elsewhere_shows_within_the_config_max_age() {
    let sim = sim().await;
    let pve = client(&sim);
    let reads = || {
        sim.state().with(|w| {
            w.request_counts
                .get("GET /nodes/pve1/lxc/103/config")
                .copied()
                .unwrap_or(0)
        })
    };
    let old = pve.lxc_config_recent(vmid(103)).await.unwrap().memory;
    sim.state().with(|w| {
        w.guests
            .get_mut(&103)
            .unwrap()
            .config
            .insert("memory".to_owned(), "4096".to_owned());
    });
    assert_eq!(pve.lxc_config_recent(vmid(103)).await.unwrap().memory, old);
    assert_eq!(reads(), 1, "the second read came from memory");
    tokio::time::sleep(felhom_agent::infra::pve::CONFIG_MAX_AGE + Duration::from_millis(100)).await;
    assert_eq!(
        pve.lxc_config_recent(vmid(103)).await.unwrap().memory,
        Some(4096)
    );
}
