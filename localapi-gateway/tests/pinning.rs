//! Guests identify the gateway by a pin, never a CA: the leaf DER SHA-256 (the controller's
//! form) or the SPKI SHA-256 (curl's `--pinnedpubkey`). A wrong pin fails the handshake before
//! any HTTP request, so the agent never sees a call.

mod common;

use common::*;

#[tokio::test]
async fn leaf_pinned_client_is_served() {
    let h = Harness::start().await;
    let r = send(h.client().get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["ok"], true);
    h.shutdown().await;
}

#[tokio::test]
async fn spki_pinned_client_is_served() {
    let h = Harness::start().await;
    let client = client_with_pin(Pin::SpkiBase64(h.gateway.pins().spki_sha256_base64));
    let r = send(client.get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn leaf_pin_in_upper_case_is_the_same_pin() {
    let h = Harness::start().await;
    let client = leaf_pinned_client(&h.gateway.pins().leaf_sha256_hex.to_uppercase());
    let r = send(client.get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn wrong_leaf_pin_fails_at_handshake_and_no_call_reaches_the_agent() {
    let h = Harness::start().await;
    let client = leaf_pinned_client(&"ab".repeat(32));
    let err = client
        .get(h.url("/storage"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.is_connect(),
        "expected a connect (handshake) error, got {err:?}"
    );
    let chain = format!("{:?}", err);
    assert!(chain.contains("ApplicationVerificationFailure"), "{chain}");
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn wrong_spki_pin_fails_at_handshake_and_no_call_reaches_the_agent() {
    let h = Harness::start().await;
    let client = client_with_pin(Pin::SpkiBase64(
        "uSSmg6cuEJj9CF7hiBdQ5OEJKOs0NszXJXjRNBwq8DM=".into(),
    ));
    let err = client
        .get(h.url("/storage"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(h.fake().calls().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn tls_1_3_is_preferred() {
    let h = Harness::start().await;
    let tls = raw_tls(h.addr, &h.gateway.pins().leaf_sha256_hex)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    drop(tls);
    h.shutdown().await;
}

#[tokio::test]
async fn tls_1_2_only_client_is_served() {
    let h = Harness::start().await;
    let config = pinned_tls_config_with(
        Pin::LeafHex(h.gateway.pins().leaf_sha256_hex),
        &[b"http/1.1"],
        &[&rustls::version::TLS12],
    );
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap();
    let r = send(client.get(h.url("/storage")).bearer_auth(TOKEN_A)).await;
    assert_eq!(r.status, 200);
    h.shutdown().await;
}
