//! The `felhom-pbssim` binary: starts, writes its state JSON (0600), serves, stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use felhom_agent::infra::pbs::{CertFingerprint, PbsClient, PbsClientConfig, PbsToken, TlsTrust};

const BIN: &str = env!("CARGO_BIN_EXE_felhom-pbssim");

/// Kills the child if a test fails before it is reaped.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn binary_writes_state_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("pbssim.json");
    let mut child = Command::new(BIN)
        .arg("--state-json")
        .arg(&state_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reaper = Reaper(Some(child));
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(
        line.starts_with("felhom-pbssim ready: url=https://127.0.0.1:"),
        "{line}"
    );

    let mode = std::fs::metadata(&state_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["node"], "pbs1");
    assert_eq!(state["datastore"], "felhom-store");
    let token = state["tokens"]["felhom@pbs!agent"].as_str().unwrap();
    assert!(token.starts_with("felhom@pbs!agent:"), "{token}");

    let client = PbsClient::new(PbsClientConfig {
        endpoint: state["url"].as_str().unwrap().parse().unwrap(),
        token: PbsToken::parse(token).unwrap(),
        trust: TlsTrust::Pinned(
            CertFingerprint::parse(state["fingerprint"].as_str().unwrap()).unwrap(),
        ),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(30),
    })
    .unwrap();
    let snaps = client
        .snapshots("felhom-store", None, None, None)
        .await
        .unwrap();
    assert_eq!(snaps.len(), 4);

    let child = reaper.0.as_mut().unwrap();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = reaper.0.take().unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn binary_refuses_a_non_loopback_listen_address() {
    let out = Command::new(BIN)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen 0.0.0.0:0 is not a loopback address"),
        "{err}"
    );
}

#[test]
fn binary_names_what_is_wrong_with_a_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    let mut fx = serde_json::to_value(felhom_simhost::pbs::PbsFixture::default_host()).unwrap();
    fx["tokens"][0]["authid"] = "ghost@pbs!agent".into();
    std::fs::write(&path, fx.to_string()).unwrap();
    let out = Command::new(BIN)
        .arg("--fixture")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token 'ghost@pbs!agent' belongs to no listed user"),
        "{err}"
    );
}
