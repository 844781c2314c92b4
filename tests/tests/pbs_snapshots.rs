//! Snapshot listing through the agent's PBS client against the simulator.

mod pbs_common;

use felhom_agent::infra::pbs::{BackupType, CryptMode, VerifyState};
use pbs_common::*;

#[tokio::test]
async fn listing_decodes_encryption_and_an_unverified_state() {
    let sim = start().await;
    let snaps = client(&sim, AGENT)
        .snapshots(STORE, None, None, None)
        .await
        .unwrap();
    assert_eq!(snaps.len(), 4);
    for s in &snaps {
        assert_eq!(s.backup_type, BackupType::Ct);
        assert_eq!(s.namespace, None);
        assert_eq!(s.verify_state, VerifyState::None);
        assert_eq!(s.verify_upid, None);
        assert_eq!(s.owner.as_deref(), Some(AGENT));
        assert!(s.size.unwrap() > 0);
    }
    let plain = snaps.iter().find(|s| s.backup_time == CT102_PLAIN).unwrap();
    assert!(!plain.encrypted);
    assert_eq!(plain.key_fingerprint, None);
    let encrypted: Vec<_> = snaps.iter().filter(|s| s.encrypted).collect();
    assert_eq!(encrypted.len(), 3);
    let manifest = encrypted[0]
        .files
        .iter()
        .find(|f| f.filename == "index.json.blob")
        .unwrap();
    assert_eq!(manifest.crypt_mode, Some(CryptMode::SignOnly));
    sim.shutdown().await;
}

#[tokio::test]
async fn listing_filters_by_backup_type_and_id() {
    let sim = start().await;
    let c = client(&sim, AGENT);
    let ct101 = c
        .snapshots(STORE, None, Some(BackupType::Ct), Some("101"))
        .await
        .unwrap();
    let times: Vec<i64> = ct101.iter().map(|s| s.backup_time).collect();
    assert_eq!(times, [CT101_OLD, CT101_NEW]);
    assert_eq!(ct101[0].snapshot_path(), "ct/101/2026-06-09T02:30:00Z");
    assert!(
        c.snapshots(STORE, None, Some(BackupType::Vm), None)
            .await
            .unwrap()
            .is_empty()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_datastore_is_rejected_with_the_pbs_text() {
    let sim = start().await;
    sim.state().grant(
        "/datastore",
        "felhom@pbs",
        felhom_simhost::pbs::Role::DatastoreAudit,
    );
    sim.state().grant(
        "/datastore",
        AGENT,
        felhom_simhost::pbs::Role::DatastoreAudit,
    );
    let err = client(&sim, AGENT)
        .snapshots("no-such-store", None, None, None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "PBS rejected GET /admin/datastore/no-such-store/snapshots: 400 no such datastore 'no-such-store'"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_namespace_listing_returns_only_that_namespace_and_names_it() {
    let sim = start().await;
    let mut snap = sim
        .state()
        .snapshot(STORE, felhom_simhost::pbs::BackupType::Ct, "101", CT101_OLD)
        .unwrap();
    snap.ns = Some("site-a".into());
    snap.backup_id = "201".into();
    sim.state().add_snapshot(STORE, snap);
    let c = client(&sim, AGENT);

    let in_ns = c
        .snapshots(STORE, Some("site-a"), None, None)
        .await
        .unwrap();
    assert_eq!(in_ns.len(), 1);
    assert_eq!(in_ns[0].namespace.as_deref(), Some("site-a"));
    assert_eq!(in_ns[0].backup_id, "201");
    assert!(in_ns[0].encrypted);

    let root = c.snapshots(STORE, None, None, None).await.unwrap();
    assert_eq!(root.len(), 4);
    assert!(root.iter().all(|s| s.backup_id != "201"));
    sim.shutdown().await;
}
