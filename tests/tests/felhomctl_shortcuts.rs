//! The felhomctl `guests` and `tasks` shortcuts against the agent running on the simulated
//! Proxmox VE (through `felhom_agent::ctl::run_shortcut`, what the CLI prints).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::Path;

use felhom_simhost::devhost::Devhost;

#[tokio::test(flavor = "multi_thread")]
async fn guests_and_tasks_print_tables_of_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let host = Devhost::start_with(
        &dir.path().join("dh"),
        &felhom_simhost::devhost::DevhostOptions {
            agent_program: Some(Path::new(env!("CARGO_BIN_EXE_felhom-devhost")).into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let socket = host.info.agent_socket.clone();

    let guests = felhom_agent::ctl::run_shortcut(&socket, "guests")
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<Vec<&str>> = guests
        .table()
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["VMID", "NAME", "STATUS", "LOCK", "TOKEN"]);
    assert_eq!(lines[1], ["101", "felhom-home", "running", "true"]); // devhost mints tokens for its demo guests
    assert_eq!(guests.json["guests"][0]["vmid"], 101);

    // A provision leaves a restore task behind for the table.
    let channel = felhom_agent::ctl::unix_channel(&socket).await.unwrap();
    felhom_proto::agent::v1::agent_client::AgentClient::new(channel)
        .provision_guest(felhom_proto::agent::v1::ProvisionGuestRequest {
            vmid: 9100,
            archive: "local:backup/vzdump-lxc-9000-2026_06_01-03_00_12.tar.zst".into(),
            storage: "local-lvm".into(),
            hostname: "shortcut-test".into(),
            memory_mib: 512,
            cores: 1,
            rootfs_gib: 8,
            start: false,
        })
        .await
        .unwrap();
    let tasks = felhom_agent::ctl::run_shortcut(&socket, "tasks")
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<Vec<&str>> = tasks
        .table()
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["TYPE", "ID", "USER", "STATUS", "UPID"]);
    assert!(
        lines[1..]
            .iter()
            .any(|l| l[..4] == ["vzrestore", "9100", "felhom-agent@pve", "OK"]),
        "{}",
        tasks.table()
    );
    host.stop().await.unwrap();
}
