//! The backup endpoints — POST /backup, GET /backup/due, GET /backup/status,
//! GET /restore-test/status — translated to their LocalApi RPCs, with LOCAL-API.md's exact
//! payloads, 202/200 for a new/joined job, and the agent's refusals as envelopes.

mod common;

use common::*;
use felhom_proto::agent::v1 as pb;
use serde_json::json;

#[tokio::test]
async fn new_backup_is_202_with_vmid_job_id_and_phase() {
    let h = Harness::start().await;
    let (status, body) = send_text(
        h.client()
            .post(h.url("/backup"))
            .bearer_auth(TOKEN_A)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        body,
        r#"{"ok":true,"data":{"vmid":101,"job_id":"backup-101-1","phase":"running"},"error":""}"#
    );
    h.shutdown().await;
}

#[tokio::test]
async fn backup_while_one_runs_joins_it_with_200() {
    let h = Harness::start().await;
    let first = send(h.client().post(h.url("/backup")).bearer_auth(TOKEN_A)).await;
    assert_eq!(first.status, 202);
    let (status, body) = send_text(h.client().post(h.url("/backup")).bearer_auth(TOKEN_A)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"ok":true,"data":{"vmid":101,"job_id":"backup-101-1","phase":"running"},"error":""}"#
    );
    let rpcs: Vec<_> = h.fake().calls().iter().map(|c| c.rpc).collect();
    assert_eq!(rpcs, vec!["StartBackup", "StartBackup"]);
    h.shutdown().await;
}

#[tokio::test]
async fn backup_without_a_body_is_accepted() {
    let h = Harness::start().await;
    let r = send(h.client().post(h.url("/backup")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["data"]["job_id"], "backup-101-1");
    h.shutdown().await;
}

#[tokio::test]
async fn backup_body_with_a_field_is_400_naming_it_without_a_call() {
    let h = Harness::start().await;
    let r = send(
        h.client()
            .post(h.url("/backup"))
            .bearer_auth(TOKEN_A)
            .json(&json!({"x": 1})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        error_envelope(
            "invalid request body: unknown field `x`, there are no fields at line 1 column 4"
        )
    );
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn backup_body_that_is_an_array_is_400() {
    let h = Harness::start().await;
    let r = send(
        h.client()
            .post(h.url("/backup"))
            .bearer_auth(TOKEN_A)
            .json(&json!([])),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        error_envelope("invalid request body: expected a JSON object, found an array")
    );
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn guest_without_backup_policy_is_409_with_the_agents_send_text() {
    let h = Harness::start().await;
    for request in [
        h.client().post(h.url("/backup")).json(&json!({})),
        h.client().get(h.url("/backup/due")),
    ] {
        let r = send(request.bearer_auth(TOKEN_B)).await;
        assert_eq!(r.status, 409);
        assert_eq!(r.body, error_envelope("guest 102 has no backup policy"));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn backup_due_has_the_documented_shape() {
    let h = Harness::start().await;
    let (status, body) = send_text(h.client().get(h.url("/backup/due")).bearer_auth(TOKEN_A)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"ok":true,"data":{"vmid":101,"due":true,"reason":"never backed up"},"error":""}"#
    );
    h.shutdown().await;
}

#[tokio::test]
async fn backup_status_without_a_job_is_idle_with_empty_job_id_and_error() {
    let h = Harness::start().await;
    let (status, body) =
        send_text(h.client().get(h.url("/backup/status")).bearer_auth(TOKEN_B)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"ok":true,"data":{"vmid":102,"phase":"idle","job_id":"","error":""},"error":""}"#
    );
    h.shutdown().await;
}

#[tokio::test]
async fn failed_backup_status_carries_the_error_and_no_operator_detail() {
    let h = Harness::start().await;
    send(h.client().post(h.url("/backup")).bearer_auth(TOKEN_A)).await;
    h.fake().finish_backup(
        VMID_A,
        Some("command 'vzdump 101' failed: storage 'local' is full"),
    );
    let (status, body) =
        send_text(h.client().get(h.url("/backup/status")).bearer_auth(TOKEN_A)).await;
    assert_eq!(status, 200);
    // The fake's reply also has trigger, consistency, runs (volid, upid) and times.
    assert_eq!(
        body,
        r#"{"ok":true,"data":{"vmid":101,"phase":"failed","job_id":"backup-101-1","error":"command 'vzdump 101' failed: storage 'local' is full"},"error":""}"#
    );
    h.shutdown().await;
}

#[tokio::test]
async fn quiesce_loop_due_then_backup_then_status_until_done() {
    let h = Harness::start().await;
    let get = |path: &str| h.client().get(h.url(path)).bearer_auth(TOKEN_A);

    let due = send(get("/backup/due")).await;
    assert_eq!(due.body["data"]["due"], true);
    let started = send(
        h.client()
            .post(h.url("/backup"))
            .bearer_auth(TOKEN_A)
            .json(&json!({})),
    )
    .await;
    assert_eq!(started.status, 202);
    let job_id = started.body["data"]["job_id"].clone();

    let running = send(get("/backup/status")).await;
    assert_eq!(
        running.body["data"],
        json!({"vmid": 101, "phase": "running", "job_id": job_id, "error": ""})
    );
    h.fake().finish_backup(VMID_A, None);
    let done = send(get("/backup/status")).await;
    assert_eq!(
        done.body["data"],
        json!({"vmid": 101, "phase": "done", "job_id": job_id, "error": ""})
    );
    let due = send(get("/backup/due")).await;
    assert_eq!(
        due.body["data"],
        json!({"vmid": 101, "due": false, "reason": "next due 2026-11-24 02:30 UTC"})
    );
    h.shutdown().await;
}

#[tokio::test]
async fn restore_test_never_run_omits_last_run_at_and_detail() {
    let h = Harness::start().await;
    let (status, body) = send_text(
        h.client()
            .get(h.url("/restore-test/status"))
            .bearer_auth(TOKEN_A),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"ok":true,"data":{"vmid":101,"phase":"idle","result":"none"},"error":""}"#
    );
    h.shutdown().await;
}

#[tokio::test]
async fn restore_test_shows_last_run_at_as_rfc3339_utc_and_no_operator_detail() {
    let h = Harness::start().await;
    h.fake().set_restore_test(pb::RestoreTestStatus {
        vmid: VMID_A,
        phase: "done".into(),
        last_run_at: 1_795_406_412,
        result: "fail".into(),
        detail: "scratch guest did not stay running for 10 s".into(),
        job_id: "restore-test-101-3".into(),
        volid: "local:backup/vzdump-lxc-101-2026_11_23-02_30_00.tar.zst".into(),
        tier: "local".into(),
        scratch_vmid: 9900,
        duration_ms: 48_000,
    });
    let (status, body) = send_text(
        h.client()
            .get(h.url("/restore-test/status"))
            .bearer_auth(TOKEN_A),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"ok":true,"data":{"vmid":101,"phase":"done","last_run_at":"2026-11-23T04:00:12Z","result":"fail","detail":"scratch guest did not stay running for 10 s"},"error":""}"#
    );
    h.shutdown().await;
}

#[tokio::test]
async fn restore_test_time_the_api_cannot_show_is_500_without_detail() {
    let h = Harness::start().await;
    h.fake().set_restore_test(pb::RestoreTestStatus {
        vmid: VMID_A,
        phase: "done".into(),
        last_run_at: -1,
        result: "pass".into(),
        ..Default::default()
    });
    let r = send(
        h.client()
            .get(h.url("/restore-test/status"))
            .bearer_auth(TOKEN_A),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, error_envelope("internal error in the host agent"));
    h.shutdown().await;
}

#[tokio::test]
async fn get_body_is_not_read() {
    let h = Harness::start().await;
    // Neither the JSON field nor the non-JSON content type matters on a GET.
    let r = send(
        h.client()
            .get(h.url("/backup/status"))
            .bearer_auth(TOKEN_A)
            .header("content-type", "text/plain")
            .body(r#"{"x":1}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["phase"], "idle");
    h.shutdown().await;
}

#[tokio::test]
async fn every_backup_endpoint_forwards_the_bearer_token_once() {
    let h = Harness::start().await;
    send(h.client().post(h.url("/backup")).bearer_auth(TOKEN_A)).await;
    for path in ["/backup/due", "/backup/status", "/restore-test/status"] {
        send(h.client().get(h.url(path)).bearer_auth(TOKEN_A)).await;
    }
    let want_auth = Some(format!("Bearer {TOKEN_A}"));
    let calls = h.fake().calls();
    assert_eq!(
        calls,
        [
            "StartBackup",
            "GetBackupDue",
            "GetBackupStatus",
            "GetRestoreTestStatus"
        ]
        .map(|rpc| Call {
            rpc,
            authorization: want_auth.clone(),
        })
    );
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_token_is_401_from_the_agent() {
    let h = Harness::start().await;
    let r = send(
        h.client()
            .get(h.url("/backup/due"))
            .bearer_auth("fhg_revoked-00000000000000000000000000000000000"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(r.body, error_envelope("unknown or revoked token"));
    assert_eq!(h.fake().calls().len(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn agent_not_found_is_404_with_its_send_text() {
    let h = Harness::start().await;
    h.fake().fail_next(
        "GetBackupStatus",
        tonic::Code::NotFound,
        "guest 101 does not exist",
    );
    let r = send(h.client().get(h.url("/backup/status")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, error_envelope("guest 101 does not exist"));
    h.shutdown().await;
}

#[tokio::test]
async fn agent_queue_full_is_429_with_its_send_text() {
    let h = Harness::start().await;
    h.fake().fail_next(
        "StartBackup",
        tonic::Code::ResourceExhausted,
        "the backup queue is full; retry later",
    );
    let r = send(h.client().post(h.url("/backup")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.body,
        error_envelope("the backup queue is full; retry later")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn agent_fault_is_500_without_its_detail() {
    let h = Harness::start().await;
    h.fake().fail_next(
        "GetRestoreTestStatus",
        tonic::Code::Internal,
        "restore_tests table missing at db.rs:12",
    );
    let r = send(
        h.client()
            .get(h.url("/restore-test/status"))
            .bearer_auth(TOKEN_A),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, error_envelope("internal error in the host agent"));
    h.shutdown().await;
}

#[tokio::test]
async fn older_agent_without_the_rpc_is_501() {
    let h = Harness::start().await;
    h.fake()
        .fail_next("GetBackupDue", tonic::Code::Unimplemented, "");
    let r = send(h.client().get(h.url("/backup/due")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 501);
    assert_eq!(
        r.body,
        error_envelope("this agent does not implement the operation")
    );
    h.shutdown().await;
}
