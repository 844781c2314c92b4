//! The agent's backup, verify and self-restore-test against devhost's linked PVE + PBS
//! simulators, through the agent's own RPCs: what the simulators model is what the agent's
//! code reads.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::Duration;

use felhom_proto::agent::v1::agent_client::AgentClient;
use felhom_proto::agent::v1::{
    BackupNowRequest, BackupStatus, GuestBackupRequest, ListBackupsRequest, RunVerifyRequest,
};
use felhom_simhost::devhost::{Devhost, DevhostOptions};
use felhom_simhost::pbs::BackupType;
use tonic::transport::Channel;

async fn start() -> (tempfile::TempDir, Devhost) {
    let dir = tempfile::tempdir().unwrap();
    let host = Devhost::start_with(
        &dir.path().join("dh"),
        &DevhostOptions {
            agent_program: Some(env!("CARGO_BIN_EXE_felhom-devhost").into()),
            ..DevhostOptions::default()
        },
    )
    .await
    .unwrap();
    (dir, host)
}

async fn client(host: &Devhost) -> AgentClient<Channel> {
    AgentClient::new(
        felhom_agent::ctl::unix_channel(&host.info.agent_socket)
            .await
            .unwrap(),
    )
}

/// Polls `f` every 100 ms for up to two minutes until it answers `Some`.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..1200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within two minutes");
}

/// Starts a backup of `vmid` (`tier` "" for every tier) and waits until its job has ended.
async fn backup_and_wait(agent: &AgentClient<Channel>, vmid: u32, tier: &str) -> BackupStatus {
    agent
        .clone()
        .backup_now(BackupNowRequest {
            vmid,
            tier: tier.to_owned(),
        })
        .await
        .unwrap();
    until("the backup job to end", || {
        let mut agent = agent.clone();
        async move {
            let s = agent
                .get_backup_status(GuestBackupRequest { vmid })
                .await
                .unwrap()
                .into_inner();
            matches!(s.phase.as_str(), "done" | "failed").then_some(s)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_backs_up_to_both_tiers_and_the_pbs_tier_is_encrypted() {
    let (_dir, host) = start().await;
    let mut agent = client(&host).await;
    let status = backup_and_wait(&agent, 102, "").await;
    assert_eq!(status.phase, "done", "{status:#?}");
    assert_eq!(status.runs.len(), 2, "{status:#?}");

    let list = agent
        .list_backups(ListBackupsRequest { vmid: 102 })
        .await
        .unwrap()
        .into_inner();
    let pbs: Vec<_> = list
        .backups
        .iter()
        .filter(|b| b.storage == "felhom-pbs")
        .collect();
    assert_eq!(pbs.len(), 1, "{list:#?}");
    assert!(pbs[0].encrypted, "{list:#?}");
    assert!(
        list.backups.iter().any(|b| b.storage == "local"),
        "{list:#?}"
    );

    let snaps = host.pbs().state().snapshots("felhom");
    let snap = snaps.iter().find(|s| s.backup_id == "102").unwrap();
    let key: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(host.info.pve_priv_dir.join("storage/felhom-pbs.enc")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        snap.fingerprint.as_deref(),
        key["fingerprint"].as_str(),
        "the snapshot is encrypted with the escrowed key"
    );
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_pbs_snapshot_verifies_as_failed_through_the_agent() {
    let (_dir, host) = start().await;
    let mut agent = client(&host).await;
    backup_and_wait(&agent, 102, "offsite").await;
    let snap = host
        .pbs()
        .state()
        .snapshots("felhom")
        .into_iter()
        .find(|s| s.backup_id == "102")
        .unwrap();
    host.pbs()
        .state()
        .fail_verify(
            "felhom",
            BackupType::Ct,
            "102",
            snap.backup_time,
            "root.pxar.didx",
        )
        .unwrap();
    agent
        .run_verify(RunVerifyRequest {
            vmid: 102,
            tier: String::new(),
        })
        .await
        .unwrap();
    let v = until("the verify to end", || {
        let mut agent = agent.clone();
        async move {
            let s = agent
                .get_verify_status(GuestBackupRequest { vmid: 102 })
                .await
                .unwrap()
                .into_inner();
            matches!(s.phase.as_str(), "done" | "failed").then_some(s)
        }
    })
    .await;
    assert_eq!(v.state, "failed", "{v:#?}");
    let list = agent
        .list_backups(ListBackupsRequest { vmid: 102 })
        .await
        .unwrap()
        .into_inner();
    let pbs = list
        .backups
        .iter()
        .find(|b| b.storage == "felhom-pbs")
        .unwrap();
    assert_eq!(pbs.verify_state, "failed", "{list:#?}");

    // The operator's view: `felhomctl verify run --vmid 102 --wait` (not on a terminal) prints
    // the final status, with no progress line, and exits 1.
    let mut out = Vec::new();
    let exit = felhom_agent::ctl::backup::run(
        &host.info.agent_socket,
        &felhom_agent::ctl::backup::Action::VerifyRun {
            vmid: 102,
            tier: None,
        },
        felhom_agent::ctl::backup::Options {
            wait: true,
            ..Default::default()
        },
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(exit, felhom_agent::ctl::Exit::NotOk, "{text}");
    assert!(text.contains("failed"), "{text}");
    assert!(!text.contains('\r'), "{text}");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_restore_test_passes_and_leaves_no_scratch_guest() {
    let (_dir, host) = start().await;
    let mut agent = client(&host).await;
    backup_and_wait(&agent, 102, "local").await;
    agent
        .run_restore_test(GuestBackupRequest { vmid: 102 })
        .await
        .unwrap();
    let r = until("the restore-test to end", || {
        let mut agent = agent.clone();
        async move {
            let s = agent
                .get_restore_test_status(GuestBackupRequest { vmid: 102 })
                .await
                .unwrap()
                .into_inner();
            (s.phase == "done").then_some(s)
        }
    })
    .await;
    assert_eq!(r.result, "pass", "{r:#?}");
    assert!((9900..=9999).contains(&r.scratch_vmid), "{r:#?}");
    assert!(host.pve().state().guest(r.scratch_vmid).is_none());
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_tier_is_named_and_the_other_tiers_are_still_listed() {
    let (_dir, host) = start().await;
    let mut agent = client(&host).await;
    // Guest 101 has a PBS snapshot in the fixture; a backup now adds one on each tier.
    let status = backup_and_wait(&agent, 101, "").await;
    assert_eq!(status.phase, "done", "{status:#?}");
    let full = agent
        .list_backups(ListBackupsRequest { vmid: 101 })
        .await
        .unwrap()
        .into_inner();
    assert!(full.unreachable.is_empty(), "{full:#?}");
    let local = full.backups.iter().filter(|b| b.tier == "local").count();
    assert!(local > 0, "{full:#?}");
    assert!(
        full.backups.iter().any(|b| b.tier == "offsite"),
        "{full:#?}"
    );

    let outage = "pbs: error fetching datastores - 503 Service Unavailable";
    let fault = |count| {
        host.pve().faults().http_error(
            "/nodes/pve1/storage/felhom-pbs/content",
            count,
            500,
            Some(outage),
        );
    };
    fault(1);
    let partial = agent
        .list_backups(ListBackupsRequest { vmid: 101 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        partial.backups.iter().filter(|b| b.tier == "local").count(),
        local,
        "{partial:#?}"
    );
    assert!(
        partial.backups.iter().all(|b| b.tier != "offsite"),
        "{partial:#?}"
    );
    assert_eq!(partial.unreachable.len(), 1, "{partial:#?}");
    let line = &partial.unreachable[0];
    assert!(
        line.starts_with("tier 'offsite' (storage felhom-pbs): ") && line.contains(outage),
        "{line}"
    );

    // The operator's view: the local rows, a warning naming the tier, exit 1.
    fault(1);
    let mut out = Vec::new();
    let exit = felhom_agent::ctl::backup::run(
        &host.info.agent_socket,
        &felhom_agent::ctl::backup::Action::BackupList { vmid: Some(101) },
        felhom_agent::ctl::backup::Options::default(),
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(exit, felhom_agent::ctl::Exit::NotOk, "{text}");
    assert!(text.contains("local:backup/vzdump-lxc-101-"), "{text}");
    assert!(
        text.contains("warning: not listed, tier 'offsite' (storage felhom-pbs): "),
        "{text}"
    );
    host.stop().await.unwrap();
}
