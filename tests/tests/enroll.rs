//! `felhom-agent enroll` on a fresh simulated host (no felhom user, token, role or ACL), through
//! the `pveum` stand-in: afterwards the agent's own selftest passes with what enroll wrote, and
//! running enroll again changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use felhom_simhost::pve::{Fixture, PveSimHandle, PveSimOptions};

const AGENT_USER: &str = "felhom-agent@pve";

/// The default host without anything felhom's enrollment makes.
fn fresh_fixture() -> Fixture {
    let mut f = Fixture::default_host();
    f.users.retain(|u| u.userid != AGENT_USER);
    f.tokens
        .retain(|t| !t.authid.starts_with("felhom-agent@pve!"));
    f.roles.retain(|r| r.roleid != "FelhomAgent");
    f.acls.retain(|a| !a.ugid.starts_with(AGENT_USER));
    f
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    sim: PveSimHandle,
}

impl Setup {
    async fn start() -> Self {
        let sim = start_with(PveSimOptions {
            fixture: fresh_fixture(),
            ..PveSimOptions::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let state = felhom_simhost::devhost_helper::write_sim_state(&root, &sim).unwrap();
        let pveum = root.join("pveum");
        std::fs::write(
            &pveum,
            format!(
                "#!/bin/sh\nexec '{}' --sim-state '{}' \"$@\"\n",
                env!("CARGO_BIN_EXE_felhom-sim-pveum"),
                state.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&pveum, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.join("pve-ssl.pem"), sim.cert_pem()).unwrap();
        std::fs::write(
            root.join("signers"),
            "alice@example.org namespaces=\"job@felhom\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJOT5LuJ3Nq8lHJ0Hh3dIUX0ywShsU+v3aQJ0rEw0Hw4\n",
        )
        .unwrap();
        let key = felhom_agent::capabilities::escrow::PbsKey::from_bytes([4; 32], 1_700_000_000);
        std::fs::create_dir_all(root.join("priv/storage")).unwrap();
        std::fs::write(
            root.join("priv/storage/felhom-pbs.enc"),
            format!("{}\n", key.to_plain(1_700_000_000).to_pretty_json()),
        )
        .unwrap();
        Self {
            _dir: dir,
            root,
            sim,
        }
    }

    fn etc(&self) -> PathBuf {
        self.root.join("etc")
    }

    fn enroll(&self) -> Output {
        let r = |p: &str| self.root.join(p);
        Command::new(env!("CARGO_BIN_EXE_felhom-devhost"))
            .arg(felhom_simhost::devhost::AGENT_ENTRY)
            .arg("enroll")
            .args(["--endpoint", self.sim.url(), "--node", &self.sim.node()])
            .arg("--pve-cert")
            .arg(r("pve-ssl.pem"))
            .arg("--etc-dir")
            .arg(self.etc())
            .arg("--allowed-signers")
            .arg(r("signers"))
            .arg("--pveum")
            .arg(r("pveum"))
            .args(["--pbs-storage", "felhom-pbs"])
            .arg("--pve-priv-dir")
            .arg(r("priv"))
            .arg("--escrow-dir")
            .arg(r("escrow"))
            .output()
            .unwrap()
    }

    /// Everything enrollment may change: the simulator's access setup and the files.
    async fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        for path in [
            "/access/roles",
            "/access/acl",
            "/access/users/felhom-agent@pve/token",
        ] {
            let a = get(&self.sim, ROOT, path).await;
            let mut items: Vec<String> = a
                .data()
                .as_array()
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect();
            items.sort();
            out.extend(items);
        }
        for f in ["pve-token", "agent.toml", "allowed_signers"] {
            out.push(std::fs::read_to_string(self.etc().join(f)).unwrap());
        }
        out.push(std::fs::read_to_string(self.root.join("escrow/felhom-pbs.json")).unwrap());
        out
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_on_a_fresh_host_makes_a_setup_the_agents_selftest_accepts() {
    let s = Setup::start().await;
    let out = s.enroll();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for step in [
        "changed  role FelhomAgent created with the agent's 16 privileges",
        "changed  user felhom-agent@pve created",
        "changed  token felhom-agent@pve!agent created (privilege-separated)",
        "changed  FelhomAgent granted on / to user felhom-agent@pve",
        "changed  FelhomAgent granted on / to token felhom-agent@pve!agent",
        "changed  escrow of storage felhom-pbs written to",
        "RECOVERY CODE",
    ] {
        assert!(stdout.contains(step), "missing '{step}' in:\n{stdout}");
    }
    let token = std::fs::read_to_string(s.etc().join("pve-token")).unwrap();
    let secret = token.trim().split_once('=').unwrap().1.to_owned();
    assert!(token.starts_with("felhom-agent@pve!agent="), "{token}");
    assert_eq!(mode(&s.etc().join("pve-token")), 0o600);
    assert!(
        !stdout.contains(&secret) && !stderr.contains(&secret),
        "the token secret was printed"
    );
    let config = std::fs::read_to_string(s.etc().join("agent.toml")).unwrap();
    assert!(
        config.contains(&format!("tls_fingerprint = \"{}\"", s.sim.fingerprint())),
        "{config}"
    );
    assert!(!config.contains(&secret));

    // The agent's own check, with the token as the systemd credential the unit loads.
    let selftest = Command::new(env!("CARGO_BIN_EXE_felhom-devhost"))
        .arg(felhom_simhost::devhost::AGENT_ENTRY)
        .arg("--config")
        .arg(s.etc().join("agent.toml"))
        .arg("selftest")
        .env("CREDENTIALS_DIRECTORY", s.etc())
        .output()
        .unwrap();
    assert!(
        selftest.status.success(),
        "{}\n{}",
        text(&selftest.stdout),
        text(&selftest.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_run_twice_changes_nothing_the_second_time() {
    let s = Setup::start().await;
    assert!(s.enroll().status.success());
    let before = s.snapshot().await;
    let again = s.enroll();
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{stdout}{}", text(&again.stderr));
    assert!(!stdout.contains("changed"), "{stdout}");
    assert!(!stdout.contains("RECOVERY CODE"), "{stdout}");
    assert_eq!(s.snapshot().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_whose_secret_is_gone_is_replaced_and_a_drifted_role_is_reset() {
    let s = Setup::start().await;
    assert!(s.enroll().status.success());
    std::fs::remove_file(s.etc().join("pve-token")).unwrap();
    put(
        &s.sim,
        ROOT,
        "/access/roles/FelhomAgent",
        &[("privs", "VM.Audit")],
    )
    .await;
    let again = s.enroll();
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{stdout}{}", text(&again.stderr));
    assert!(
        stdout.contains("changed  role FelhomAgent set to exactly the agent's privileges"),
        "{stdout}"
    );
    assert!(
        stdout.contains("changed  token felhom-agent@pve!agent removed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok       FelhomAgent on / for user felhom-agent@pve"),
        "{stdout}"
    );
    assert!(s.etc().join("pve-token").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_allowed_signers_file_is_refused_by_line() {
    let s = Setup::start().await;
    std::fs::write(s.root.join("signers"), "# ops\nalice@example.org\n").unwrap();
    let out = s.enroll();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("allowed_signers: ") && err.contains("signers line 2: not `<principals>"),
        "{err}"
    );
    assert!(!s.etc().join("allowed_signers").exists());
}
