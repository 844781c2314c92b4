//! Route → typed action → one LocalApi call → envelope, with LOCAL-API.md's exact shapes.

mod common;

use common::*;
use felhom_localapi_gateway::routes::{Handling, ROUTES};
use serde_json::json;

#[tokio::test]
async fn storage_has_the_documented_shape() {
    let h = Harness::start().await;
    let r = h
        .client()
        .get(h.url("/storage"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"ok":true,"data":{"vmid":101,"mounts":[{"key":"rootfs","storage":"local-lvm","mount_point":"/","class":"fast","backup":true},{"key":"mp0","storage":"usb-101","mount_point":"/srv/data","class":"slow","backup":false}]},"error":""}"#
    );
    h.shutdown().await;
}

#[tokio::test]
async fn snapshot_then_rollback_round_trip() {
    let h = Harness::start().await;
    let snap = send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(TOKEN_A)
            .json(&json!({"name": "before-upgrade", "description": "apps 1.2"})),
    )
    .await;
    assert_eq!(snap.status, 200);
    assert_eq!(
        snap.body,
        json!({"ok": true, "data": {"vmid": 101, "snapshot": "before-upgrade", "job_id": "job-101-1"}, "error": ""})
    );
    assert_eq!(h.fake().snapshots_of(VMID_A), vec!["before-upgrade"]);

    let back = send(
        h.client()
            .post(h.url("/rollback"))
            .bearer_auth(TOKEN_A)
            .json(&json!({"snapshot": "before-upgrade"})),
    )
    .await;
    assert_eq!(back.status, 200);
    assert_eq!(
        back.body,
        json!({"ok": true, "data": {"vmid": 101, "snapshot": "before-upgrade", "job_id": "job-101-rollback"}, "error": ""})
    );
    let rpcs: Vec<_> = h.fake().calls().iter().map(|c| c.rpc).collect();
    assert_eq!(rpcs, vec!["Snapshot", "Rollback"]);
    h.shutdown().await;
}

#[tokio::test]
async fn snapshot_without_body_lets_the_agent_name_it() {
    let h = Harness::start().await;
    let r = send(h.client().post(h.url("/snapshot")).bearer_auth(TOKEN_B)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["snapshot"], "felhom_20260101T000000Z");
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_field_is_400_naming_it_without_a_call() {
    let h = Harness::start().await;
    let r = send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(TOKEN_A)
            .json(&json!({"name": "x", "vmid": 102})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        error_envelope(
            "invalid request body: unknown field `vmid`, expected `name` or `description` at line 1 column 18"
        )
    );
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn missing_required_field_is_400_naming_it() {
    let h = Harness::start().await;
    let r = send(
        h.client()
            .post(h.url("/rollback"))
            .bearer_auth(TOKEN_A)
            .json(&json!({})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        error_envelope("invalid request body: missing field `snapshot` at line 1 column 2")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let h = Harness::start().await;
    let r = send(
        h.client()
            .post(h.url("/rollback"))
            .bearer_auth(TOKEN_A)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("snapshot=a"),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(
        r.body,
        error_envelope("Content-Type must be application/json")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn oversized_body_is_413_without_a_call() {
    let h = Harness::start().await;
    let big = json!({"name": "x", "description": "d".repeat(100 * 1024)});
    let r = send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(TOKEN_A)
            .json(&big),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.body,
        error_envelope("request body is larger than 65536 bytes")
    );
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn oversized_chunked_body_is_413() {
    let h = Harness::start().await;
    // No Content-Length: the cap on the streaming read must catch it.
    let chunks: Vec<Result<hyper::body::Frame<hyper::body::Bytes>, std::io::Error>> = (0..20)
        .map(|_| Ok(hyper::body::Frame::data(vec![b' '; 8 * 1024].into())))
        .collect();
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(tokio_stream::iter(chunks)));
    let r = send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(TOKEN_A)
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_path_is_404_envelope() {
    let h = Harness::start().await;
    let r = send(h.client().get(h.url("/storage/")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, error_envelope("no such endpoint"));
    h.shutdown().await;
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let h = Harness::start().await;
    let r = send(h.client().delete(h.url("/snapshot")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");
    assert_eq!(
        r.body,
        error_envelope("method DELETE is not allowed here; allowed: POST")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn every_not_yet_available_endpoint_is_501_envelope_without_a_call() {
    let h = Harness::start().await;
    let mut seen = 0;
    for route in ROUTES
        .iter()
        .filter(|r| r.handling == Handling::NotAvailable)
    {
        let url = h.url(route.path);
        let request = match route.verb.as_str() {
            "GET" => h.client().get(url),
            _ => h.client().post(url).json(&json!({})),
        };
        let r = send(request.bearer_auth(TOKEN_A)).await;
        assert_eq!(r.status, 501, "{}", route.path);
        assert_eq!(
            r.body,
            error_envelope(&format!(
                "{} {} is not available in this agent version",
                route.verb.as_str(),
                route.path
            ))
        );
        seen += 1;
    }
    assert_eq!(seen, 5);
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn agent_conflict_is_409_with_its_message() {
    let h = Harness::start().await;
    let r = send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(TOKEN_A)
            .json(&json!({"name": BUSY_SNAPSHOT})),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body, error_envelope("guest 101 is locked (backup)"));
    h.shutdown().await;
}

#[tokio::test]
async fn agent_unreachable_is_503() {
    let h = Harness::start().await;
    let Harness {
        gateway,
        addr,
        agent,
        dir,
    } = h;
    let pin = gateway.pins().leaf_sha256_hex;
    agent.stop().await;
    std::fs::remove_file(dir.path().join("agent.sock")).ok();
    let r = send(
        leaf_pinned_client(&pin)
            .get(format!("https://{addr}/storage"))
            .bearer_auth(TOKEN_A),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, error_envelope("the host agent is unavailable"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn http2_client_is_served() {
    let h = Harness::start().await;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(pinned_tls_config(
            Pin::LeafHex(h.gateway.pins().leaf_sha256_hex),
            &[b"h2"],
        ))
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client
        .get(h.url("/storage"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn operation_not_allowed_for_the_guest_is_403() {
    let h = Harness::start().await;
    let r = send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(TOKEN_A)
            .json(&json!({"name": FORBIDDEN_SNAPSHOT})),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body, error_envelope("guest 101 may not create snapshots"));
    h.shutdown().await;
}

#[tokio::test]
async fn every_listen_address_serves() {
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(dir.path()).await;
    let mut config = felhom_localapi_gateway::GatewayConfig::new(
        vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.2:0".parse().unwrap(),
        ],
        dir.path(),
    );
    config.limits = felhom_localapi_gateway::Limits::default();
    let gateway = felhom_localapi_gateway::Gateway::start(
        config,
        felhom_localapi_gateway::connect_unix(&agent.socket),
    )
    .await
    .unwrap();
    let addrs = gateway.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[1].ip().to_string(), "127.0.0.2");
    let client = leaf_pinned_client(&gateway.pins().leaf_sha256_hex);
    for addr in addrs {
        let r = send(
            client
                .get(format!("https://{addr}/storage"))
                .bearer_auth(TOKEN_B),
        )
        .await;
        assert_eq!(r.body["data"]["vmid"], VMID_B);
    }
    gateway.shutdown().await;
    agent.stop().await;
}

/// The same requests through the socket transport and the in-process one (the agent's
/// embedded gateway) answer byte for byte alike, failures included.
#[tokio::test]
async fn the_in_process_transport_answers_as_the_socket_does() {
    let socket = Harness::start().await;
    let direct = Harness::in_process_with_limits(felhom_localapi_gateway::Limits::default()).await;
    for (method, path, token, body) in [
        ("GET", "/storage", TOKEN_A, None),
        // Well formed, unknown to the fake: UNAUTHENTICATED from the service.
        (
            "GET",
            "/storage",
            "fhg_unknown-0123456789abcdef0123456789abcdef012",
            None,
        ),
        ("POST", "/snapshot", TOKEN_A, Some(json!({"name": "same"}))),
        (
            "POST",
            "/rollback",
            TOKEN_A,
            Some(json!({"snapshot": "missing"})),
        ),
        ("GET", "/backup/due", TOKEN_A, None),
    ] {
        let mut answers = Vec::new();
        for h in [&socket, &direct] {
            let mut request = match method {
                "GET" => h.client().get(h.url(path)),
                _ => h.client().post(h.url(path)),
            }
            .bearer_auth(token);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let r = request.send().await.unwrap();
            answers.push((r.status(), r.text().await.unwrap()));
        }
        assert_eq!(answers[0], answers[1], "{method} {path}");
    }
    let rpcs: Vec<_> = direct.fake().calls().iter().map(|c| c.rpc).collect();
    assert!(rpcs.contains(&"Snapshot"), "{rpcs:?}");
    socket.shutdown().await;
    direct.shutdown().await;
}
