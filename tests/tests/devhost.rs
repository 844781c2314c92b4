//! `felhom-devhost` as a newcomer runs it: it comes up, writes devhost.json, serves the agent
//! socket with a passing selftest, runs the agent unprivileged when started as root, and stops
//! everything on SIGTERM.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use felhom_simhost::devhost::{DevhostInfo, UNPRIVILEGED_ID};

fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn devhost_serves_the_agent_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dh");
    let mut devhost = Command::new(env!("CARGO_BIN_EXE_felhom-devhost"))
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let json = state.join("devhost.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !json.exists() {
        assert!(
            devhost.try_wait().unwrap().is_none(),
            "devhost exited early"
        );
        assert!(Instant::now() < deadline, "devhost did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // the file is written in one go; be safe
    let info: DevhostInfo = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(info.pve_url.starts_with("https://127.0.0.1:"), "{info:?}");
    assert_eq!(info.pve_fingerprint.len(), 95);
    assert!(info.pbs_url.starts_with("https://127.0.0.1:"), "{info:?}");
    assert_ne!(info.pbs_url, info.pve_url);
    assert_eq!(info.pbs_fingerprint.len(), 95);
    assert_eq!(info.pbs_datastore, "felhom");
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(state.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("pbs-token"), 0o600);
    assert_eq!(mode("pve/priv/storage/felhom-pbs.enc"), 0o600);
    assert_eq!(mode("pve/priv"), 0o700);
    assert_eq!(info.pve_priv_dir, state.join("pve/priv"));
    let key: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("pve/priv/storage/felhom-pbs.enc")).unwrap(),
    )
    .unwrap();
    assert!(key["kdf"].is_null());
    assert_eq!(key["fingerprint"].as_str().unwrap().len(), 95);
    let config = std::fs::read_to_string(state.join("agent.toml")).unwrap();
    assert!(
        config.contains(&format!("[pbs]\nendpoint = \"{}\"", info.pbs_url)),
        "{config}"
    );
    // The agent is told only that the tier is encrypted; it never gets the key.
    assert!(config.contains("encrypted = true"), "{config}");
    assert!(!config.contains("pve/priv"), "{config}");
    assert!(
        info.local_api_endpoint.starts_with("127.0.0.1:"),
        "{}",
        info.local_api_endpoint
    );
    assert_eq!(info.local_api_pin_sha256.len(), 64);
    assert!(
        info.local_api_pin_sha256
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(info.local_api_pin_spki_sha256.len(), 44); // base64 of 32 bytes
    let guests: Vec<(u32, &str)> = info
        .guests
        .iter()
        .map(|g| (g.vmid, g.name.as_str()))
        .collect();
    assert_eq!(guests, [(101, "felhom-home"), (102, "felhom-tunnel")]);
    assert!(info.guests.iter().all(|g| !g.token.is_empty()));
    assert_ne!(info.guests[0].token, info.guests[1].token);

    let report = felhom_agent::ctl::selftest(&info.agent_socket)
        .await
        .unwrap();
    assert!(report.ok, "{}", report.table());

    if nix::unistd::geteuid().is_root() {
        assert_eq!(info.agent_uid, UNPRIVILEGED_ID);
        assert_eq!(
            uid_of(info.agent_pid),
            Some(UNPRIVILEGED_ID),
            "agent must not run as root"
        );
    } else {
        println!("not root: the agent runs as the invoking user; the uid split is not exercised");
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(devhost.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || devhost.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("felhom devhost is up"), "{stdout}");
    assert!(
        stdout.contains("grpcurl -plaintext -authority localhost -unix"),
        "{stdout}"
    );
    let curl = format!(
        "curl --pinnedpubkey 'sha256//{}' --insecure",
        info.local_api_pin_spki_sha256
    );
    assert!(stdout.contains(&curl), "{stdout}");
    assert!(
        stdout.contains(&format!("https://{}/storage", info.local_api_endpoint)),
        "{stdout}"
    );
    for g in &info.guests {
        assert!(!stdout.contains(&g.token), "a guest token was printed");
    }
    assert_eq!(
        uid_of(info.agent_pid),
        None,
        "the agent process must be gone"
    );
    assert!(
        !info.agent_socket.exists(),
        "the agent removes its socket on a clean stop"
    );
}

/// The README's first command must not fail because another process took the port the devhost
/// picked for the local API before the agent bound it ("Address already in use"): the devhost
/// notices and starts the agent on another port.
#[tokio::test(flavor = "multi_thread")]
async fn the_devhost_starts_when_its_picked_port_is_taken_before_the_agent_binds_it() {
    let options = felhom_simhost::devhost::DevhostOptions {
        agent_program: Some(env!("CARGO_BIN_EXE_felhom-devhost").into()),
        squat_local_api_port: true,
        ..Default::default()
    };
    let host = felhom_simhost::devhost::TempDevhost::start(&options)
        .await
        .unwrap();
    let endpoint = host.dh().info.local_api_endpoint.clone();
    let client = felhom_simhost::pinned::pinned_client(&host.dh().info.local_api_pin_sha256);
    let token = host.dh().info.guests[0].token.clone();
    let response = client
        .get(format!("https://{endpoint}/storage"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{endpoint}");
    host.stop().await.unwrap();
}
