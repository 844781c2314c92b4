//! Each fault kind, in process and over the `/_sim/faults` admin API; faults clear themselves.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn failed_task_fault_ends_next_vzdump_with_job_errors() {
    let sim = start().await;
    sim.faults().fail_next_tasks("vzdump", 1, None);
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/vzdump",
        &[("vmid", "103"), ("storage", "local")],
    )
    .await;
    let upid = a.data().as_str().unwrap().to_owned();
    assert_eq!(
        wait_task(&sim, AGENT, &upid).await["exitstatus"],
        "job errors"
    );
    let log = task_log(&sim, AGENT, &upid).await;
    assert!(
        log.iter()
            .any(|l| l.starts_with("ERROR: Backup of VM 103 failed - command ")),
        "{log:#?}"
    );
    assert_eq!(log.last().unwrap(), "TASK ERROR: job errors");
}

#[tokio::test]
async fn failed_task_fault_clears_after_its_count() {
    let sim = start().await;
    sim.faults()
        .fail_next_tasks("vzstart", 1, Some("startup for container '103' failed"));
    let a = post(&sim, AGENT, "/nodes/pve1/lxc/103/status/start", &[]).await;
    assert_eq!(
        wait_task(&sim, AGENT, a.data().as_str().unwrap()).await["exitstatus"],
        "startup for container '103' failed"
    );
    let b = post(&sim, AGENT, "/nodes/pve1/lxc/103/status/start", &[]).await;
    assert_eq!(
        wait_task(&sim, AGENT, b.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
}

#[tokio::test]
async fn http_error_fault_answers_with_given_status_and_reason() {
    let sim = start().await;
    sim.faults()
        .http_error("/nodes/pve1/status", 1, 503, Some("Service Unavailable"));
    let a = get(&sim, AGENT, "/nodes/pve1/status").await;
    assert_eq!((a.status, a.reason.as_str()), (503, "Service Unavailable"));
    let b = get(&sim, AGENT, "/nodes/pve1/status").await;
    assert_eq!(b.status, 200);
}

#[tokio::test]
async fn dropped_connection_gets_no_http_answer() {
    let sim = start().await;
    sim.faults().drop_connections("/version", 1);
    let err = client(&sim)
        .get(format!("{}/api2/json/version", sim.url()))
        .header(
            "Authorization",
            format!("PVEAPIToken={}", sim.token(AGENT).unwrap()),
        )
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    assert_eq!(get(&sim, AGENT, "/version").await.status, 200);
}

#[tokio::test]
async fn delayed_answer_outlasts_a_short_client_timeout() {
    let sim = start().await;
    sim.faults().delay("/version", 1, Duration::from_secs(120));
    let err = client_with_timeout(&sim, Duration::from_secs(1))
        .get(format!("{}/api2/json/version", sim.url()))
        .header(
            "Authorization",
            format!("PVEAPIToken={}", sim.token(AGENT).unwrap()),
        )
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(sim.faults().snapshot().is_empty());
}

#[tokio::test]
async fn hung_task_stays_running() {
    let sim = start().await;
    sim.faults().hang_next_tasks("vzsnapshot", 1);
    let a = post(
        &sim,
        AGENT,
        "/nodes/pve1/lxc/102/snapshot",
        &[("snapname", "hang")],
    )
    .await;
    let upid = a.data().as_str().unwrap().to_owned();
    // Let several task durations pass, then it must still be running.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let st = get(
        &sim,
        AGENT,
        &format!("/nodes/pve1/tasks/{}/status", urlencode(&upid)),
    )
    .await;
    assert_eq!(st.data()["status"], "running");
}

#[tokio::test]
async fn admin_api_installs_and_clears_faults() {
    let sim = start().await;
    let http = client(&sim);
    let resp = http
        .post(format!("{}/_sim/faults", sim.url()))
        .json(&json!({"kind": "http_error", "path_prefix": "/cluster", "count": 2, "status": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let a = get(&sim, AGENT, "/cluster/resources").await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (500, "Internal Server Error")
    );
    let listed: serde_json::Value = http
        .get(format!("{}/_sim/faults", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["count"], 1);
    http.delete(format!("{}/_sim/faults", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&sim, AGENT, "/cluster/resources").await.status, 200);
}

#[tokio::test]
async fn admin_api_refuses_non_5xx_fault() {
    let sim = start().await;
    let resp = client(&sim)
        .post(format!("{}/_sim/faults", sim.url()))
        .json(&json!({"kind": "http_error", "path_prefix": "/", "count": 1, "status": 404}))
        .send()
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"], "Injected HTTP status must be 5xx, got 404");
}
