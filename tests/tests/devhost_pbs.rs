//! devhost's simulated Proxmox Backup Server: linked to the `felhom-pbs` storage with an
//! encryption key, reachable with the agent's PBS token from `DIR/pbs-token`, and pinned by the
//! fingerprint devhost.json names.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::Duration;

use felhom_agent::infra::pve::{CertFingerprint, TlsTrust, client_config};
use felhom_simhost::devhost::{Devhost, DevhostOptions, PBS_STORAGE};
use serde_json::Value;

fn options() -> DevhostOptions {
    DevhostOptions {
        agent_program: Some(env!("CARGO_BIN_EXE_felhom-devhost").into()),
        ..DevhostOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn devhost_backs_felhom_pbs_with_an_encrypted_pbs_the_agent_token_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let host = Devhost::start_with(&dir.path().join("dh"), &options())
        .await
        .unwrap();
    let info = host.info.clone();
    assert_eq!(host.pbs().url(), info.pbs_url);

    // A vzdump to the linked storage, straight against the simulated PVE.
    let pve = host.pve();
    let key: Value = serde_json::from_str(
        &std::fs::read_to_string(info.pve_priv_dir.join("storage/felhom-pbs.enc")).unwrap(),
    )
    .unwrap();
    let fp = key["fingerprint"].as_str().unwrap().to_owned();

    let pve_http = reqwest::Client::builder()
        .use_preconfigured_tls(
            client_config(&TlsTrust::Pinned(
                CertFingerprint::parse(&info.pve_fingerprint).unwrap(),
            ))
            .unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = pve_http
        .post(format!("{}/api2/json/nodes/pve1/vzdump", info.pve_url))
        .header("Authorization", format!("PVEAPIToken={}", info.pve_token))
        .form(&[("vmid", "102"), ("storage", PBS_STORAGE)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let upid = resp.json::<Value>().await.unwrap()["data"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut finished = false;
    for _ in 0..1200 {
        if pve
            .state()
            .task(&upid)
            .is_some_and(|t| t.state != felhom_simhost::pve::state::TaskState::Running)
        {
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(finished, "vzdump did not finish");
    assert_eq!(
        pve.state().task(&upid).unwrap().log.last().unwrap(),
        "TASK OK"
    );

    // The agent's token (from the file devhost wrote) lists it, encrypted with the escrowed key.
    let token = std::fs::read_to_string(info.state_dir.join("pbs-token")).unwrap();
    let pbs_http = reqwest::Client::builder()
        .use_preconfigured_tls(
            client_config(&TlsTrust::Pinned(
                CertFingerprint::parse(&info.pbs_fingerprint).unwrap(),
            ))
            .unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = pbs_http
        .get(format!(
            "{}/api2/json/admin/datastore/{}/snapshots?backup-id=102",
            info.pbs_url, info.pbs_datastore
        ))
        .header("Authorization", format!("PBSAPIToken={}", token.trim()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let snaps: Value = resp.json().await.unwrap();
    let snaps = snaps["data"].as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:#?}");
    assert_eq!(snaps[0]["fingerprint"], fp);
    assert_eq!(snaps[0]["owner"], "felhom-backup@pbs");

    host.stop().await.unwrap();
}
