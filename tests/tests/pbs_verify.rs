//! Verify through the agent's PBS client: UPID → task polled on the UPID's node → verdict in the
//! listing; failures surfaced with PBS's exit status and the snapshot marked failed.

mod pbs_common;

use felhom_agent::infra::pbs::{
    BackupType, PbsError, PbsUpid, TaskOutcome, VerifyRequest, VerifyState,
};
use felhom_simhost::pbs::VERIFY_FAILED;
use pbs_common::*;
use tokio_util::sync::CancellationToken;

fn snapshot_request(id: &str, time: i64) -> VerifyRequest {
    VerifyRequest {
        backup_type: Some(BackupType::Ct),
        backup_id: Some(id.into()),
        backup_time: Some(time),
        ..VerifyRequest::default()
    }
}

#[tokio::test]
async fn a_snapshot_verify_succeeds_and_the_listing_shows_ok_with_its_upid() {
    let sim = start().await;
    let c = client(&sim, AGENT);
    let upid = c
        .verify(STORE, &snapshot_request("101", CT101_NEW))
        .await
        .unwrap();
    assert_eq!(upid.node(), sim.node());
    assert_eq!(upid.worker_type(), "verify_snapshot");
    assert_eq!(
        upid.worker_id(),
        Some(format!("{STORE}:/ct/101/{CT101_NEW:08X}").as_str())
    );
    assert_eq!(upid.authid(), AGENT);
    assert!(upid.as_str().contains(r"felhom\x2dstore"), "{upid}");

    let outcome = c
        .wait_task(&upid, &wait_opts(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(outcome, TaskOutcome::Ok);

    let snaps = c
        .snapshots(STORE, None, Some(BackupType::Ct), Some("101"))
        .await
        .unwrap();
    let verified = snaps.iter().find(|s| s.backup_time == CT101_NEW).unwrap();
    assert_eq!(verified.verify_state, VerifyState::Ok);
    assert_eq!(verified.verify_upid.as_ref(), Some(&upid));
    let other = snaps.iter().find(|s| s.backup_time == CT101_OLD).unwrap();
    assert_eq!(other.verify_state, VerifyState::None);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_failing_verify_surfaces_the_exit_status_and_marks_the_snapshot_failed() {
    let sim = start().await;
    sim.state()
        .fail_verify(
            STORE,
            felhom_simhost::pbs::BackupType::Ct,
            "102",
            CT102_OLD,
            "root.pxar.didx",
        )
        .unwrap();
    let c = client(&sim, AGENT);
    let upid = c.verify(STORE, &VerifyRequest::default()).await.unwrap();
    assert_eq!(upid.worker_type(), "verify");
    assert_eq!(upid.worker_id(), Some(STORE));

    let err = c
        .wait_task(&upid, &wait_opts(), &CancellationToken::new())
        .await
        .unwrap_err();
    let PbsError::TaskFailed(failure) = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(failure.exitstatus, VERIFY_FAILED);
    assert_eq!(failure.failed_snapshots, ["ct/102/2026-06-09T02:31:00Z"]);
    assert!(
        failure
            .log_tail
            .last()
            .unwrap()
            .ends_with(&format!("TASK ERROR: {VERIFY_FAILED}")),
        "{:?}",
        failure.log_tail
    );
    assert_eq!(
        err.to_string(),
        format!("PBS task {upid} failed: {VERIFY_FAILED}")
    );

    let snaps = c.snapshots(STORE, None, None, None).await.unwrap();
    for s in &snaps {
        let want = if s.backup_id == "102" && s.backup_time == CT102_OLD {
            VerifyState::Failed
        } else {
            VerifyState::Ok
        };
        assert_eq!(s.verify_state, want, "{}", s.snapshot_path());
        assert_eq!(s.verify_upid.as_ref(), Some(&upid));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_second_verify_skips_verified_snapshots_by_default() {
    let sim = start().await;
    let c = client(&sim, AGENT);
    let first = c
        .verify(STORE, &snapshot_request("101", CT101_OLD))
        .await
        .unwrap();
    c.wait_task(&first, &wait_opts(), &CancellationToken::new())
        .await
        .unwrap();
    // Damage found now would flip the state, but PBS skips already verified snapshots.
    sim.state()
        .fail_verify(
            STORE,
            felhom_simhost::pbs::BackupType::Ct,
            "101",
            CT101_OLD,
            "catalog.pcat1.didx",
        )
        .unwrap();
    let second = c
        .verify(STORE, &snapshot_request("101", CT101_OLD))
        .await
        .unwrap();
    assert_eq!(
        c.wait_task(&second, &wait_opts(), &CancellationToken::new())
            .await
            .unwrap(),
        TaskOutcome::Ok
    );
    let log = c.task_log_tail(&second, 10).await.unwrap();
    assert!(
        log.iter().any(|l| l.ends_with(&format!(
            "SKIPPED: verify {STORE}:ct/101/2026-06-09T02:30:00Z (recently verified)"
        ))),
        "{log:?}"
    );

    let third = c
        .verify(
            STORE,
            &VerifyRequest {
                ignore_verified: Some(false),
                ..snapshot_request("101", CT101_OLD)
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        c.wait_task(&third, &wait_opts(), &CancellationToken::new())
            .await,
        Err(PbsError::TaskFailed(_))
    ));
    let s = c
        .snapshots(STORE, None, Some(BackupType::Ct), Some("101"))
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.backup_time == CT101_OLD)
        .unwrap();
    assert_eq!(s.verify_state, VerifyState::Failed);
    assert_eq!(s.verify_upid, Some(third));
    sim.shutdown().await;
}

#[tokio::test]
async fn task_status_asked_on_localhost_answers_unknown() {
    let sim = start().await;
    let c = client(&sim, AGENT);
    let upid = c.verify(STORE, &VerifyRequest::default()).await.unwrap();
    c.wait_task(&upid, &wait_opts(), &CancellationToken::new())
        .await
        .unwrap();
    let on_localhost: PbsUpid = upid
        .as_str()
        .replacen(&format!("UPID:{}:", sim.node()), "UPID:localhost:", 1)
        .parse()
        .unwrap();
    let status = c.task_status(&on_localhost).await.unwrap();
    assert_eq!(status.status, "stopped");
    assert_eq!(status.exitstatus.as_deref(), Some("unknown"));
    let real = c.task_status(&upid).await.unwrap();
    assert_eq!(real.exitstatus.as_deref(), Some("OK"));
    assert_eq!(real.user, "felhom@pbs");
    assert_eq!(real.tokenid.as_deref(), Some("agent"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_time_without_a_group_is_refused_before_sending() {
    let sim = start().await;
    let err = client(&sim, AGENT)
        .verify(
            STORE,
            &VerifyRequest {
                backup_time: Some(CT101_OLD),
                ..VerifyRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid PBS request: verify takes a backup type and id together, and a backup time only with both"
    );
    sim.shutdown().await;
}
