//! The gateway's identity is persisted, reused across restarts, replaced only by rotation, and
//! its private key must be private.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use felhom_localapi_gateway::cert::{self, KEY_FILE};
use felhom_localapi_gateway::{GatewayConfig, Limits, connect_unix};

#[tokio::test]
async fn certificate_persists_across_restart() {
    let h = Harness::start().await;
    let before = h.gateway.pins();
    let Harness {
        gateway,
        agent,
        dir,
        ..
    } = h;
    gateway.shutdown().await;

    let again = start_gateway(dir.path(), &agent.socket, Limits::default()).await;
    assert_eq!(again.pins(), before);
    // And it is what the restarted gateway serves: the old pin still works.
    let r = send(
        leaf_pinned_client(&before.leaf_sha256_hex)
            .get(format!("https://{}/storage", again.local_addrs()[0]))
            .bearer_auth(TOKEN_A),
    )
    .await;
    assert_eq!(r.status, 200);
    again.shutdown().await;
    agent.stop().await;
}

#[tokio::test]
async fn rotation_changes_both_pins_and_is_served_at_once() {
    let h = Harness::start().await;
    let old = h.gateway.pins();
    let new = h.gateway.rotate_certificate().unwrap();
    assert_ne!(new.leaf_sha256_hex, old.leaf_sha256_hex);
    assert_ne!(new.spki_sha256_base64, old.spki_sha256_base64);
    assert_eq!(h.gateway.pins(), new);
    // Persisted: a fresh load sees the new identity.
    assert_eq!(cert::load(h.dir.path()).unwrap().pins(), &new);

    let err = leaf_pinned_client(&old.leaf_sha256_hex)
        .get(h.url("/storage"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let r = send(
        leaf_pinned_client(&new.leaf_sha256_hex)
            .get(h.url("/storage"))
            .bearer_auth(TOKEN_A),
    )
    .await;
    assert_eq!(r.status, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn key_readable_by_others_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    cert::load_or_create(dir.path()).unwrap();
    let key = dir.path().join(KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let config = GatewayConfig::new(vec!["127.0.0.1:0".parse().unwrap()], dir.path());
    let err =
        felhom_localapi_gateway::Gateway::start(config, connect_unix(dir.path().join("none.sock")))
            .await
            .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert_eq!(
        chain,
        format!(
            "cannot load the gateway certificate: key file {} has mode 0644; it must not be accessible by group or others (chmod 600 it, or rotate the certificate if it may have leaked)",
            key.display()
        )
    );
    // Not silently "fixed".
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o644
    );
}
