//! The `felhom-pvesim` binary: starts, writes its state JSON (0600), serves, stops on SIGTERM;
//! refuses non-loopback addresses and names the bad field of a broken fixture.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const BIN: &str = env!("CARGO_BIN_EXE_felhom-pvesim");

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

fn ca_client(ca_pem: &[u8]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem).expect("CA PEM parses"))
        .expect("CA is a valid trust anchor");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client builds")
}

#[tokio::test]
async fn binary_writes_state_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("pvesim.json");
    let mut child = Command::new(BIN)
        .arg("--state-json")
        .arg(&state_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
        line.starts_with("felhom-pvesim ready: url=https://127.0.0.1:"),
        "{line}"
    );

    let mode = std::fs::metadata(&state_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["node"], "pve1");
    let ca = std::fs::read(state["ca_pem_path"].as_str().unwrap()).unwrap();
    let token = state["tokens"]["felhom-agent@pve!agent"].as_str().unwrap();
    assert!(token.starts_with("felhom-agent@pve!agent="));

    let resp = ca_client(&ca)
        .get(format!(
            "{}/api2/json/nodes",
            state["url"].as_str().unwrap()
        ))
        .header("Authorization", format!("PVEAPIToken={token}"))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["data"][0]["ssl_fingerprint"], state["fingerprint"]);

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
fn binary_refuses_non_loopback_listen_address() {
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
fn binary_names_the_unknown_fixture_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    let mut v: serde_json::Value =
        serde_json::from_str(felhom_simhost::pve::fixture::DEFAULT_FIXTURE_JSON).unwrap();
    v["storages"][0]["flavour"] = serde_json::json!("vanilla");
    std::fs::write(&path, v.to_string()).unwrap();
    let out = Command::new(BIN)
        .arg("--fixture")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `flavour`"), "{err}");
}

#[test]
fn binary_names_an_inconsistent_fixture_reference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    let mut v: serde_json::Value =
        serde_json::from_str(felhom_simhost::pve::fixture::DEFAULT_FIXTURE_JSON).unwrap();
    v["acls"][0]["role"] = serde_json::json!("NoSuchRole");
    std::fs::write(&path, v.to_string()).unwrap();
    let out = Command::new(BIN)
        .arg("--fixture")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("acls: unknown role 'NoSuchRole'"), "{err}");
}
