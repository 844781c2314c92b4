//! The simulator's wire behaviour, checked with a plain HTTP client (not the agent's PBS
//! client), so the shapes the agent relies on are pinned down independently of it.

mod pbs_common;

use std::time::Duration;

use felhom_agent::infra::pve::client_config;
use felhom_simhost::pbs::{PbsSimHandle, Role};
use pbs_common::*;
use serde_json::Value;

fn http(sim: &PbsSimHandle) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(&pin(sim)).expect("pinned TLS config builds"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client builds")
}

fn auth(sim: &PbsSimHandle, authid: &str) -> String {
    format!("PBSAPIToken={}", sim.token(authid).expect("token exists"))
}

async fn get(sim: &PbsSimHandle, authid: Option<&str>, path: &str) -> (u16, String, String) {
    let mut req = http(sim).get(format!("{}/api2/json{path}", sim.url()));
    if let Some(a) = authid {
        req = req.header("Authorization", auth(sim, a));
    }
    let resp = req.send().await.expect("request is answered");
    let status = resp.status().as_u16();
    let ctype = resp.headers()["content-type"]
        .to_str()
        .expect("content type is ASCII")
        .to_owned();
    (status, ctype, resp.text().await.expect("body is text"))
}

async fn post(
    sim: &PbsSimHandle,
    authid: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let resp = http(sim)
        .post(format!("{}/api2/json{path}", sim.url()))
        .header("Authorization", auth(sim, authid))
        .form(form)
        .send()
        .await
        .expect("request is answered");
    (
        resp.status().as_u16(),
        resp.text().await.expect("body is text"),
    )
}

#[tokio::test]
async fn requests_without_a_pbs_token_get_the_pbs_401_text_as_body() {
    let sim = start().await;
    let (status, ctype, body) = get(&sim, None, "/admin/datastore/felhom-store/snapshots").await;
    assert_eq!(status, 401);
    assert_eq!(ctype, "application/json;charset=UTF-8");
    assert_eq!(
        body,
        "authentication failed - no authentication credentials provided."
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_listing_has_no_verification_and_no_ns_key_before_a_verify() {
    let sim = start().await;
    let (status, _, body) = get(&sim, Some(AGENT), "/admin/datastore/felhom-store/snapshots").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let items = v["data"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    for item in items {
        assert!(item.get("verification").is_none(), "{item}");
        assert!(item.get("ns").is_none(), "{item}");
        assert_eq!(item["owner"], AGENT);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_path_is_a_404_with_the_pbs_text() {
    let sim = start().await;
    let (status, _, body) = get(&sim, Some(AGENT), "/admin/datastore/felhom-store/nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        "Path '/api2/json/admin/datastore/felhom-store/nope' not found."
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn verify_with_a_time_but_no_group_is_refused_with_the_pbs_text() {
    let sim = start().await;
    let (status, body) = post(
        &sim,
        AGENT,
        "/admin/datastore/felhom-store/verify",
        &[("backup-time", "1780972200")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body, "parameters do not specify a backup group or snapshot");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_parameter_is_refused() {
    let sim = start().await;
    let (status, body) = post(
        &sim,
        AGENT,
        "/admin/datastore/felhom-store/verify",
        &[("backup-typ", "ct")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("parameter 'backup-typ': schema does not allow additional properties."),
        "{body}"
    );
    sim.shutdown().await;
}

async fn finished_verify(sim: &PbsSimHandle) -> String {
    let (status, body) = post(sim, AGENT, "/admin/datastore/felhom-store/verify", &[]).await;
    assert_eq!(status, 200, "{body}");
    let upid = serde_json::from_str::<Value>(&body).expect("verify answers JSON")["data"]
        .as_str()
        .expect("verify answers a UPID string")
        .to_owned();
    let path = format!(
        "/nodes/{}/tasks/{}/status",
        sim.node(),
        upid.replace('\\', "%5C")
    );
    // Polled, not slept on: the task ends after the simulator's task duration.
    for _ in 0..600 {
        let (_, _, body) = get(sim, Some(AGENT), &path).await;
        let v: Value = serde_json::from_str(&body).expect("task status is JSON");
        if v["data"]["status"] == "stopped" {
            assert_eq!(v["data"]["exitstatus"], "OK");
            return upid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("verify task {upid} did not stop");
}

#[tokio::test]
async fn task_log_lines_count_from_one_and_start_skips_earlier_lines() {
    let sim = start().await;
    let upid = finished_verify(&sim).await;
    let log_path = |q: &str| {
        format!(
            "/nodes/{}/tasks/{}/log?{q}",
            sim.node(),
            upid.replace('\\', "%5C")
        )
    };
    let (_, _, body) = get(&sim, Some(AGENT), &log_path("start=0&limit=0")).await;
    let all: Value = serde_json::from_str(&body).unwrap();
    let lines = all["data"].as_array().unwrap();
    assert_eq!(lines[0]["n"], 1);
    assert!(
        lines[0]["t"]
            .as_str()
            .unwrap()
            .ends_with(": verify datastore felhom-store"),
        "{}",
        lines[0]
    );
    assert!(
        lines.last().unwrap()["t"]
            .as_str()
            .unwrap()
            .ends_with(": TASK OK")
    );
    assert_eq!(all["total"], lines.len());

    let (_, _, body) = get(&sim, Some(AGENT), &log_path("start=3&limit=2")).await;
    let page: Value = serde_json::from_str(&body).unwrap();
    let ns: Vec<i64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [3, 4]);
    sim.shutdown().await;
}

#[tokio::test]
async fn another_users_task_is_not_readable() {
    let sim = start().await;
    let upid = finished_verify(&sim).await;
    sim.state().add_user("other@pbs");
    sim.state().add_token("other@pbs!agent");
    for ugid in ["other@pbs", "other@pbs!agent"] {
        sim.state()
            .grant("/datastore/felhom-store", ugid, Role::DatastoreAdmin);
    }
    let (status, _, body) = get(
        &sim,
        Some("other@pbs!agent"),
        &format!(
            "/nodes/{}/tasks/{}/status",
            sim.node(),
            upid.replace('\\', "%5C")
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body, "task access not allowed");
    sim.shutdown().await;
}
