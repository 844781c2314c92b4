//! The PVE simulator's `felhom-pbs` storage backed by a running PBS simulator: what a vzdump
//! writes shows up in PBS, and what PBS holds (and its verify state) shows up in PVE's storage
//! listing. Real sockets and TLS on both sides.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::Duration;

use common::*;
use felhom_agent::infra::pve::client_config;
use felhom_agent::infra::pve::{CertFingerprint, TlsTrust};
use felhom_simhost::pbs::fixture::{LINKED_AGENT_TOKEN, LINKED_BACKUP_USER, LINKED_DATASTORE};
use felhom_simhost::pbs::{BackupType, CryptMode, PbsSimHandle, VerifyState};
use felhom_simhost::pve::PveSimHandle;
use serde_json::Value;

const STORAGE: &str = "felhom-pbs";

fn pbs_http(pbs: &PbsSimHandle) -> reqwest::Client {
    let pin = TlsTrust::Pinned(CertFingerprint::parse(pbs.fingerprint()).unwrap());
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(&pin).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The agent token's view of the datastore's snapshots, through PBS's API.
async fn pbs_snapshots(pbs: &PbsSimHandle) -> Vec<Value> {
    let resp = pbs_http(pbs)
        .get(format!(
            "{}/api2/json/admin/datastore/{LINKED_DATASTORE}/snapshots",
            pbs.url()
        ))
        .header(
            "Authorization",
            format!("PBSAPIToken={}", pbs.token(LINKED_AGENT_TOKEN).unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    v["data"].as_array().unwrap().clone()
}

async fn vzdump(pve: &PveSimHandle, vmid: &str, extra: &[(&str, &str)]) -> (Value, Vec<String>) {
    let mut form = vec![("vmid", vmid), ("storage", STORAGE)];
    form.extend_from_slice(extra);
    let a = post(pve, AGENT, "/nodes/pve1/vzdump", &form).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let upid = a.data().as_str().unwrap().to_owned();
    let status = wait_task(pve, AGENT, &upid).await;
    (status, task_log(pve, AGENT, &upid).await)
}

async fn pve_backups(pve: &PveSimHandle, vmid: u32) -> Vec<Value> {
    let a = get(
        pve,
        AGENT,
        &format!("/nodes/pve1/storage/{STORAGE}/content?content=backup&vmid={vmid}"),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.data().as_array().unwrap().clone()
}

#[tokio::test]
async fn linked_vzdump_creates_a_pbs_snapshot_visible_through_both_apis() {
    let sims = start_linked(false).await;
    let (status, log) = vzdump(&sims.pve, "102", &[]).await;
    assert_eq!(status["exitstatus"], "OK", "{log:#?}");

    let snaps = pbs_snapshots(&sims.pbs).await;
    let mine: Vec<&Value> = snaps.iter().filter(|s| s["backup-id"] == "102").collect();
    assert_eq!(mine.len(), 1, "{snaps:#?}");
    let snap = mine[0];
    assert_eq!(snap["backup-type"], "ct");
    assert_eq!(snap["owner"], LINKED_BACKUP_USER);
    let files: Vec<&str> = snap["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    for f in [
        "pct.conf.blob",
        "root.pxar.didx",
        "index.json.blob",
        "client.log.blob",
    ] {
        assert!(files.contains(&f), "{files:?}");
    }
    assert!(
        snap["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["filename"] == "root.pxar.didx" || f["filename"] == "pct.conf.blob")
            .all(|f| f["crypt-mode"] == "none")
    );
    assert!(snap.get("fingerprint").is_none());

    let time = snap["backup-time"].as_i64().unwrap();
    let listed = pve_backups(&sims.pve, 102).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["ctime"], time);
    assert_eq!(listed[0]["format"], "pbs-ct");
    assert_eq!(listed[0]["subtype"], "lxc");
    let volid = listed[0]["volid"].as_str().unwrap();
    assert!(volid.starts_with("felhom-pbs:backup/ct/102/"), "{volid}");
    assert!(listed[0].get("encrypted").is_none());
    // The task log names the archive and the PBS repository of the storage.
    let dir = volid.split_once(":backup/").unwrap().1;
    assert!(log.contains(&format!(
        "INFO: creating Proxmox Backup Server archive '{dir}'"
    )));
    let run = log.iter().find(|l| l.starts_with("INFO: run: ")).unwrap();
    assert!(
        run.contains("proxmox-backup-client backup --crypt-mode=none "),
        "{run}"
    );
    assert!(
        run.ends_with(&format!(
            "--repository {LINKED_BACKUP_USER}@127.0.0.1:{}:{LINKED_DATASTORE}",
            sims.pbs.addr().port()
        )),
        "{run}"
    );
    sims.shutdown().await;
}

#[tokio::test]
async fn encrypted_storage_writes_encrypted_snapshots_with_the_key_fingerprint() {
    let sims = start_linked(true).await;
    let fp = sims.key.as_ref().unwrap().fingerprint();
    let (status, log) = vzdump(&sims.pve, "101", &[]).await;
    assert_eq!(status["exitstatus"], "OK", "{log:#?}");

    let snap = sims
        .pbs
        .state()
        .snapshots(LINKED_DATASTORE)
        .into_iter()
        .filter(|s| s.backup_id == "101")
        .max_by_key(|s| s.backup_time)
        .unwrap();
    assert_eq!(snap.fingerprint.as_deref(), Some(fp.as_str()));
    for f in &snap.files {
        match f.filename.as_str() {
            "index.json.blob" => assert_eq!(f.crypt_mode, Some(CryptMode::SignOnly)),
            "client.log.blob" => assert_eq!(f.crypt_mode, None),
            _ => assert_eq!(f.crypt_mode, Some(CryptMode::Encrypt), "{}", f.filename),
        }
    }
    let listed = pve_backups(&sims.pve, 101).await;
    let fresh = listed
        .iter()
        .find(|b| b["ctime"] == snap.backup_time)
        .unwrap();
    assert_eq!(fresh["encrypted"], fp);

    let run = log.iter().find(|l| l.starts_with("INFO: run: ")).unwrap();
    assert!(
        run.contains("proxmox-backup-client backup --crypt-mode=encrypt --keyfd="),
        "{run}"
    );
    assert!(log.contains(&format!("INFO: Encryption key fingerprint: {fp}")));
    sims.shutdown().await;
}

#[tokio::test]
async fn storage_config_shows_the_key_fingerprint_but_never_the_key() {
    let sims = start_linked(true).await;
    let key = sims.key.as_ref().unwrap();
    let a = get(&sims.pve, AGENT, &format!("/storage/{STORAGE}")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.data()["encryption-key"], key.fingerprint());
    assert_eq!(a.data()["datastore"], LINKED_DATASTORE);
    assert_eq!(a.data()["port"], sims.pbs.addr().port());
    assert_eq!(a.data()["fingerprint"], sims.pbs.fingerprint());
    let data: Value = serde_json::from_str(&key.to_json()).unwrap();
    let raw = data["data"].as_str().unwrap();
    assert!(!a.body.to_string().contains(raw));
    let all = get(&sims.pve, AGENT, "/storage").await;
    assert!(!all.body.to_string().contains(raw));
    sims.shutdown().await;
}

#[tokio::test]
async fn pruning_on_the_linked_storage_removes_from_pbs() {
    let sims = start_linked(false).await;
    for _ in 0..3 {
        let (status, log) = vzdump(&sims.pve, "102", &[("prune-backups", "keep-last=2")]).await;
        assert_eq!(status["exitstatus"], "OK", "{log:#?}");
    }
    let in_pbs: Vec<i64> = sims
        .pbs
        .state()
        .snapshots(LINKED_DATASTORE)
        .iter()
        .filter(|s| s.backup_id == "102")
        .map(|s| s.backup_time)
        .collect();
    assert_eq!(in_pbs.len(), 2, "{in_pbs:?}");
    let listed: Vec<i64> = pve_backups(&sims.pve, 102)
        .await
        .iter()
        .map(|b| b["ctime"].as_i64().unwrap())
        .collect();
    let mut want = in_pbs.clone();
    want.sort_unstable();
    assert_eq!(listed, want);
    sims.shutdown().await;
}

#[tokio::test]
async fn prune_log_names_the_pbs_group_and_the_count() {
    let sims = start_linked(false).await;
    vzdump(&sims.pve, "102", &[]).await;
    let (_, log) = vzdump(&sims.pve, "102", &[("prune-backups", "keep-last=1")]).await;
    assert!(
        log.contains(&"INFO: prune older backups with retention: keep-last=1".to_owned()),
        "{log:#?}"
    );
    assert!(log.contains(&"INFO: running 'proxmox-backup-client prune' for 'ct/102'".to_owned()));
    assert!(
        log.contains(&"INFO: pruned 1 backup(s) not covered by keep-retention policy".to_owned())
    );
    sims.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_forgotten_in_pbs_is_gone_from_the_pve_listing() {
    let sims = start_linked(false).await;
    vzdump(&sims.pve, "102", &[]).await;
    let listed = pve_backups(&sims.pve, 102).await;
    let time = listed[0]["ctime"].as_i64().unwrap();
    assert!(
        sims.pbs
            .state()
            .forget_snapshot(LINKED_DATASTORE, BackupType::Ct, "102", time)
    );
    assert!(pve_backups(&sims.pve, 102).await.is_empty());
    assert!(
        sims.pve
            .state()
            .backups(STORAGE)
            .iter()
            .all(|b| b.vmid != 102)
    );
    sims.shutdown().await;
}

#[tokio::test]
async fn the_fixture_pbs_backup_is_seeded_into_the_datastore() {
    let sims = start_linked(false).await;
    let listed = pve_backups(&sims.pve, 101).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(
        listed[0]["volid"],
        "felhom-pbs:backup/ct/101/2026-06-09T14:18:33Z"
    );
    assert_eq!(listed[0]["notes"], "felhom-home nightly");
    assert!(
        sims.pbs
            .state()
            .snapshot(LINKED_DATASTORE, BackupType::Ct, "101", 1_781_014_713)
            .is_some()
    );
    sims.shutdown().await;
}

#[tokio::test]
async fn a_failed_pbs_verify_shows_as_failed_in_the_pve_listing() {
    let sims = start_linked(false).await;
    vzdump(&sims.pve, "102", &[]).await;
    let time = pve_backups(&sims.pve, 102).await[0]["ctime"]
        .as_i64()
        .unwrap();
    sims.pbs
        .state()
        .fail_verify(
            LINKED_DATASTORE,
            BackupType::Ct,
            "102",
            time,
            "root.pxar.didx",
        )
        .unwrap();
    let resp = pbs_http(&sims.pbs)
        .post(format!(
            "{}/api2/json/admin/datastore/{LINKED_DATASTORE}/verify",
            sims.pbs.url()
        ))
        .header(
            "Authorization",
            format!(
                "PBSAPIToken={}",
                sims.pbs.token(LINKED_AGENT_TOKEN).unwrap()
            ),
        )
        .form(&[
            ("backup-type", "ct"),
            ("backup-id", "102"),
            ("backup-time", &time.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let upid = resp.json::<Value>().await.unwrap()["data"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut done = false;
    for _ in 0..600 {
        if sims
            .pbs
            .state()
            .task(&upid)
            .is_some_and(|t| t.exitstatus.is_some())
        {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "verify did not finish");
    let snap = sims
        .pbs
        .state()
        .snapshot(LINKED_DATASTORE, BackupType::Ct, "102", time)
        .unwrap();
    assert_eq!(snap.verification.unwrap().state, VerifyState::Failed);
    let listed = pve_backups(&sims.pve, 102).await;
    assert_eq!(listed[0]["verification"]["state"], "failed");
    assert_eq!(listed[0]["verification"]["upid"], upid);
    sims.shutdown().await;
}

#[tokio::test]
async fn an_unlinked_pve_keeps_its_own_pbs_volumes() {
    let sim = start().await;
    let a = get(
        &sim,
        AGENT,
        &format!("/nodes/pve1/storage/{STORAGE}/content?content=backup"),
    )
    .await;
    let volids: Vec<&str> = a
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["volid"].as_str().unwrap())
        .collect();
    assert_eq!(volids, ["felhom-pbs:backup/ct/101/2026-06-09T14:18:33Z"]);
}
