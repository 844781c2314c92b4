//! `felhom-agent selftest` as an operator runs it: the real binary against the simulated
//! Proxmox VE over HTTPS, with trace logging captured to prove the token never shows.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use felhom_simhost::pve::{PveSim, PveSimHandle, PveSimOptions};

const AGENT: &str = "felhom-agent@pve!agent";

struct Host {
    sim: PveSimHandle,
    dir: tempfile::TempDir,
}

async fn host() -> Host {
    let sim = PveSim::start(PveSimOptions {
        task_duration: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    Host {
        sim,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Host {
    fn secret(&self, authid: &str) -> String {
        self.sim
            .token(authid)
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    }

    /// Writes a config using `authid`'s token (optionally with a replaced secret).
    fn config(&self, authid: &str, secret: Option<&str>) -> std::path::PathBuf {
        let token = match secret {
            Some(s) => format!("{authid}={s}"),
            None => self.sim.token(authid).unwrap(),
        };
        let token_file = self.dir.path().join("pve-token");
        std::fs::write(&token_file, token).unwrap();
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let cfg = self.dir.path().join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "[proxmox]\nendpoint = \"{}\"\nnode = \"{}\"\ntoken_file = \"{}\"\ntls_fingerprint = \"{}\"\n",
                self.sim.url(),
                self.sim.node(),
                token_file.display(),
                self.sim.fingerprint()
            ),
        )
        .unwrap();
        cfg
    }
}

async fn agent(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_felhom-agent"));
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("FELHOM_LOG", "trace")
        .arg("--config")
        .arg(config)
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn selftest_passes_and_trace_logs_never_contain_the_token() {
    let h = host().await;
    let out = agent(&h.config(AGENT, None), &["selftest"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.ends_with("selftest passed\n"), "{stdout}");
    for check in [
        "version",
        "node",
        "node-status",
        "guests",
        "storage",
        "privileges",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok  ") && l.contains(check)),
            "{check}: {stdout}"
        );
    }
    assert!(
        stdout.contains("holds all 16 FelhomAgent privileges"),
        "{stdout}"
    );
    let secret = h.secret(AGENT);
    assert!(
        !stdout.contains(&secret) && !stderr.contains(&secret),
        "token leaked"
    );
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "trace logging was not on: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_fails_the_selftest_without_showing_the_secret() {
    let h = host().await;
    let bad = "deadbeef-dead-beef-dead-beefdeadbeef";
    let out = agent(&h.config(AGENT, Some(bad)), &["selftest"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("FAIL version      Proxmox VE refused the API token"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(bad) && !stderr.contains(bad),
        "secret leaked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_only_grant_is_reported_like_real_pve_refuses_it() {
    let h = host().await;
    let out = agent(&h.config("tokenonly@pve!agent", None), &["selftest"]).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.ends_with("selftest FAILED\n"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconfigured_agent_says_what_to_configure() {
    let h = host().await;
    let cfg = h.dir.path().join("empty.toml");
    std::fs::write(&cfg, "").unwrap();
    let out = agent(&cfg, &["selftest"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Proxmox VE is not configured (proxmox.endpoint: is required)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_fails_clearly() {
    let h = host().await;
    let cfg = h.config(AGENT, None);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(h.sim.url(), &format!("https://127.0.0.1:{port}"));
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = agent(&cfg, &["selftest"]).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL version      cannot reach Proxmox VE for GET /version"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_error_names_the_key() {
    let h = host().await;
    let cfg = h.config(AGENT, None);
    let broken = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("tls_fingerprint = \"", "tls_fingerprint = \"ZZ");
    std::fs::write(&cfg, broken).unwrap();
    let out = agent(&cfg, &["selftest"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("configuration error: proxmox.tls_fingerprint: fingerprint contains 'Z'"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_task_round_trip_snapshots_rolls_back_and_cleans_up() {
    let h = host().await;
    let out = agent(
        &h.config(AGENT, None),
        &["selftest", "--task", "--vmid", "102"],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for step in [
        "snapshot felhom_selftest_",
        "rollback to felhom_selftest_",
        "delete felhom_selftest_",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok  ") && l.contains(step)),
            "{step}: {stdout}"
        );
    }
    assert!(stdout.ends_with("task round trip passed\n"), "{stdout}");
    let guest = h.sim.state().guest(102).unwrap();
    assert_eq!(guest.lock(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_task_round_trip_needs_an_explicit_vmid() {
    let h = host().await;
    let out = agent(&h.config(AGENT, None), &["selftest", "--task"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--vmid"), "{stderr}");
    assert!(
        h.sim.state().tasks().is_empty(),
        "nothing may run without --vmid"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_rollback_still_deletes_the_snapshot() {
    let h = host().await;
    h.sim
        .faults()
        .fail_next_tasks("vzrollback", 1, Some("rollback failed: simulated"));
    let out = agent(
        &h.config(AGENT, None),
        &["selftest", "--task", "--vmid", "102"],
    )
    .await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("rollback")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok  ") && l.contains("delete felhom_selftest_")),
        "{stdout}"
    );
}
