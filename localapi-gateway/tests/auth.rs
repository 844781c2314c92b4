//! The token alone decides the guest, and the agent decides it: the gateway answers 401 itself
//! only when there is no well-formed `Authorization: Bearer` header or the token is not of the
//! shape the agent mints (without calling the agent), and otherwise forwards the token
//! untouched as gRPC metadata.

mod common;

use common::*;

#[tokio::test]
async fn missing_token_is_401_without_a_call() {
    let h = Harness::start().await;
    let r = send(h.client().get(h.url("/storage"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, error_envelope("missing Authorization header"));
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn garbage_authorization_header_is_401_without_a_call() {
    let h = Harness::start().await;
    for garbage in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "fhg_guest-a"] {
        let r = send(
            h.client()
                .get(h.url("/storage"))
                .header("authorization", garbage),
        )
        .await;
        assert_eq!(r.status, 401, "{garbage}");
        assert_eq!(
            r.body,
            error_envelope("malformed Authorization header: expected 'Bearer <token>'")
        );
    }
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn a_token_of_another_shape_is_401_as_unknown_without_a_call() {
    let h = Harness::start().await;
    for other in [
        "not-a-real-token",
        "fhg_short",
        &format!("{TOKEN_A}x"),
        &TOKEN_A.replace("fhg_", "fhx_"),
    ] {
        let r = send(h.client().get(h.url("/storage")).bearer_auth(other)).await;
        assert_eq!(r.status, 401, "{other}");
        assert_eq!(
            r.body,
            error_envelope("unknown or revoked token"),
            "{other}"
        );
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_token_is_401_from_the_agent() {
    let h = Harness::start().await;
    let r = send(
        h.client()
            .get(h.url("/storage"))
            .bearer_auth("fhg_unknown-00000000000000000000000000000000000"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, error_envelope("unknown or revoked token"));
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(h.fake().calls().len(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn token_is_forwarded_as_bearer_metadata() {
    let h = Harness::start().await;
    send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_B)).await;
    assert_eq!(
        h.fake().calls(),
        vec![Call {
            rpc: "GetStorage",
            authorization: Some(format!("Bearer {TOKEN_B}")),
        }]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn each_token_sees_only_its_own_guest() {
    let h = Harness::start().await;
    let a = send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    let b = send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_B)).await;
    assert_eq!(a.body["data"]["vmid"], VMID_A);
    assert_eq!(a.body["data"]["mounts"][1]["storage"], "usb-101");
    assert_eq!(b.body["data"]["vmid"], VMID_B);
    assert_eq!(b.body["data"]["mounts"][1]["storage"], "usb-102");

    // Snapshots are per guest too: B cannot roll back to A's snapshot.
    let snap = send(
        h.client()
            .post(h.url("/snapshot"))
            .bearer_auth(TOKEN_A)
            .json(&serde_json::json!({"name": "a-only"})),
    )
    .await;
    assert_eq!(snap.status, 200);
    let r = send(
        h.client()
            .post(h.url("/rollback"))
            .bearer_auth(TOKEN_B)
            .json(&serde_json::json!({"snapshot": "a-only"})),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        error_envelope("snapshot 'a-only' does not exist on guest 102")
    );
    h.shutdown().await;
}
