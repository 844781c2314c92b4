//! PBS authentication, privilege separation and TLS pinning as the agent's client sees them.

mod pbs_common;

use felhom_agent::infra::pbs::{
    BackupType, CertFingerprint, PbsError, PbsToken, TlsTrust, VerifyRequest,
};
use felhom_simhost::pbs::Role;
use pbs_common::*;

#[tokio::test]
async fn a_token_without_datastore_verify_gets_a_permission_error_naming_it() {
    let sim = start().await;
    sim.state().add_user("audit@pbs");
    let token = sim.state().add_token("audit@pbs!agent");
    sim.state()
        .grant("/datastore/felhom-store", "audit@pbs", Role::DatastoreAudit);
    sim.state().grant(
        "/datastore/felhom-store",
        "audit@pbs!agent",
        Role::DatastoreAudit,
    );
    let c = client_with(&sim, &token, pin(&sim));
    // Listing is allowed with Datastore.Audit ...
    assert_eq!(c.snapshots(STORE, None, None, None).await.unwrap().len(), 4);
    // ... verifying is not.
    let err = c
        .verify(STORE, &VerifyRequest::default())
        .await
        .unwrap_err();
    let PbsError::Permission { denied, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    let denied = denied.as_ref().unwrap();
    assert_eq!(denied.path, "/datastore/felhom-store");
    assert_eq!(denied.privileges, ["Datastore.Verify", "Datastore.Backup"]);
    assert_eq!(
        err.to_string(),
        "PBS denied POST /admin/datastore/felhom-store/verify: permission check failed - missing Datastore.Verify|Datastore.Backup on /datastore/felhom-store"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_role_granted_to_the_token_only_is_refused() {
    let sim = start().await;
    sim.state().add_user("solo@pbs");
    let token = sim.state().add_token("solo@pbs!agent");
    sim.state().grant(
        "/datastore/felhom-store",
        "solo@pbs!agent",
        Role::DatastoreAdmin,
    );
    let err = client_with(&sim, &token, pin(&sim))
        .snapshots(STORE, None, None, None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "PBS denied GET /admin/datastore/felhom-store/snapshots: permission check failed - missing Datastore.Audit|Datastore.Backup on /datastore/felhom-store"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_backup_only_token_sees_only_its_own_groups() {
    let sim = start().await;
    sim.state().add_user("other@pbs");
    let token = sim.state().add_token("other@pbs!backup");
    for ugid in ["other@pbs", "other@pbs!backup"] {
        sim.state()
            .grant("/datastore/felhom-store", ugid, Role::DatastoreBackup);
    }
    let c = client_with(&sim, &token, pin(&sim));
    assert!(
        c.snapshots(STORE, None, None, None)
            .await
            .unwrap()
            .is_empty()
    );
    let err = c
        .verify(
            STORE,
            &VerifyRequest {
                backup_type: Some(BackupType::Ct),
                backup_id: Some("101".into()),
                ..VerifyRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "PBS rejected POST /admin/datastore/felhom-store/verify: 400 backup owner check failed (other@pbs!backup != felhom@pbs!agent)"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_with_pbs_text() {
    let sim = start().await;
    let c = client_with(
        &sim,
        "felhom@pbs!agent:00000000-0000-0000-0000-000000000000",
        pin(&sim),
    );
    let err = c.snapshots(STORE, None, None, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "PBS refused the API token (authentication failed - invalid credentials)"
    );
    assert!(!err.is_transient());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_pin_fails_at_the_handshake() {
    let sim = start().await;
    let token = sim.token(AGENT).unwrap();
    let wrong = CertFingerprint::parse(&"ab".repeat(32)).unwrap();
    let c = client_with(&sim, &token, TlsTrust::Pinned(wrong));
    let err = c.snapshots(STORE, None, None, None).await.unwrap_err();
    assert!(matches!(err, PbsError::Transport { .. }), "{err:?}");
    let chain = format!("{:?}", anyhow::Error::from(err));
    assert!(
        chain.contains("does not match the pinned"),
        "the handshake error names the pin mismatch: {chain}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_token_secret_never_shows_in_debug_display_or_errors() {
    let sim = start().await;
    let token = sim.token(AGENT).unwrap();
    let secret = token.split_once(':').unwrap().1.to_owned();
    let parsed = PbsToken::parse(&token).unwrap();
    let c = client(&sim, AGENT);
    let wrong_pin = client_with(
        &sim,
        &token,
        TlsTrust::Pinned(CertFingerprint::parse(&"cd".repeat(32)).unwrap()),
    );
    let errors = [
        wrong_pin
            .snapshots(STORE, None, None, None)
            .await
            .unwrap_err(),
        c.snapshots("no-such-store", None, None, None)
            .await
            .unwrap_err(),
        c.verify(
            STORE,
            &VerifyRequest {
                backup_id: Some("101".into()),
                ..VerifyRequest::default()
            },
        )
        .await
        .unwrap_err(),
    ];
    let mut shown = vec![
        format!("{parsed:?}"),
        format!("{parsed}"),
        format!("{c:?}"),
        format!("{wrong_pin:?}"),
    ];
    for e in errors {
        shown.push(e.to_string());
        shown.push(format!("{e:?}"));
        shown.push(format!("{:?}", anyhow::Error::from(e)));
    }
    for s in shown {
        assert!(!s.contains(&secret), "secret leaked in: {s}");
    }
    sim.shutdown().await;
}
