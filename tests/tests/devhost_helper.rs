//! The devhost runs the real felhom-helper beside the agent: it answers the agent's uid
//! through the agent's own `HelperClient` (sensors and SMART from the stand-ins) and refuses
//! any other non-root uid with PERMISSION_DENIED.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use felhom_agent::infra::helper::{Helper as _, HelperClient, HelperError};
use felhom_simhost::devhost::{DevhostInfo, UNPRIVILEGED_ID};

const PROBE_SOCKET: &str = "FELHOM_DEVHOST_PROBE_SOCKET";

/// The client half: started by the tests below under another uid via setpriv. Prints one
/// line per call for the parent to check.
#[tokio::test]
#[ignore = "client half of the devhost helper tests; started by them under setpriv"]
async fn helper_probe() {
    let socket = std::env::var(PROBE_SOCKET).expect("run by the parent test with the socket");
    let client = HelperClient::new(Path::new(&socket));
    let uid = nix::unistd::getuid();
    match client.read_sensors().await {
        Ok(readings) => println!("PROBE uid={uid} sensors=ok count={}", readings.len()),
        Err(HelperError::PermissionDenied(m)) => {
            println!("PROBE uid={uid} sensors=PERMISSION_DENIED {m}")
        }
        Err(e) => println!("PROBE uid={uid} sensors=error {e}"),
    }
    match client.read_smart("/dev/sda").await {
        Ok(report) => println!("PROBE uid={uid} smart=ok model={}", report.model),
        Err(HelperError::PermissionDenied(m)) => {
            println!("PROBE uid={uid} smart=PERMISSION_DENIED {m}")
        }
        Err(e) => println!("PROBE uid={uid} smart=error {e}"),
    }
}

struct Running {
    child: Option<Child>,
    info: DevhostInfo,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM, so devhost stops its agent and helper too; SIGKILL only as a last resort.
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn start_devhost() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dh");
    let mut child = Command::new(env!("CARGO_BIN_EXE_felhom-devhost"))
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let json = state.join("devhost.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    let info = loop {
        // devhost.json is written once everything is up; parse until it is complete.
        if let Ok(text) = std::fs::read_to_string(&json)
            && let Ok(info) = serde_json::from_str::<DevhostInfo>(&text)
        {
            break info;
        }
        assert!(child.try_wait().unwrap().is_none(), "devhost exited early");
        assert!(Instant::now() < deadline, "devhost did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Running {
        child: Some(child),
        info,
        _dir: dir,
    }
}

/// Runs [`helper_probe`] as `uid` (group 65534, the socket's group) and returns its lines.
fn probe_as(uid: u32, socket: &Path) -> String {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .args(["--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_SOCKET, socket)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "probe failed: {stdout}");
    stdout
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[tokio::test(flavor = "multi_thread")]
async fn devhost_helper_answers_the_agents_uid() {
    if !is_root() {
        println!("SKIPPED devhost_helper_answers_the_agents_uid: needs root for setpriv");
        return;
    }
    let devhost = start_devhost().await;
    assert_eq!(devhost.info.agent_uid, UNPRIVILEGED_ID);
    let status = std::fs::read_to_string(format!("/proc/{}/status", devhost.info.helper_pid))
        .expect("the helper runs");
    assert!(
        status.contains("\nUid:\t0\t"),
        "helper runs as root: {status}"
    );
    let out = probe_as(UNPRIVILEGED_ID, &devhost.info.helper_socket);
    assert!(out.contains("PROBE uid=65534 sensors=ok count="), "{out}");
    assert!(!out.contains("sensors=ok count=0"), "{out}");
    assert!(out.contains("PROBE uid=65534 smart=ok model="), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn devhost_helper_refuses_another_uid() {
    if !is_root() {
        println!("SKIPPED devhost_helper_refuses_another_uid: needs root for setpriv");
        return;
    }
    let devhost = start_devhost().await;
    let out = probe_as(65533, &devhost.info.helper_socket);
    assert!(
        out.contains("PROBE uid=65533 sensors=PERMISSION_DENIED"),
        "{out}"
    );
    assert!(
        out.contains("PROBE uid=65533 smart=PERMISSION_DENIED"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn devhost_helper_creates_the_golden_container_through_the_pct_stand_in() {
    let devhost = start_devhost().await;
    // Root is admitted by design (diagnostics); the test runs as root or as the agent's uid.
    let client = HelperClient::new(&devhost.info.helper_socket);
    let spec = common::golden_spec(9001);
    assert_eq!(client.create_golden(spec.clone()).await, Ok(9001));
    let again = client.create_golden(spec).await;
    assert!(again.is_err(), "a taken vmid must fail: {again:?}");
}
