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
/// The PBS token secret PVE logs in with (a test value).
const PBS_SECRET: &str = "5f0c7e2a-9d1b-4c3e-8a6f-2b7d9e1c4a30";
const PBS_FP: &str = "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99";

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
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let sim = start_with(PveSimOptions {
            fixture: fresh_fixture(),
            priv_dir: Some(root.join("priv")),
            ..PveSimOptions::default()
        })
        .await;
        let state = felhom_simhost::devhost_helper::write_sim_state(&root, &sim).unwrap();
        let pveum = root.join("pveum");
        std::fs::write(
            &pveum,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' --sim-state '{}' \"$@\"\n",
                root.join("pveum-argv.log").display(),
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
        let secret = root.join("pbs-secret");
        std::fs::write(&secret, format!("{PBS_SECRET}\n")).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
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
        self.enroll_storage("offsite")
    }

    fn enroll_storage(&self, storage: &str) -> Output {
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
            .args([
                "--pbs-storage",
                storage,
                "--pbs-server",
                "127.0.0.1",
                "--pbs-datastore",
                "felhom",
            ])
            .args([
                "--pbs-username",
                "felhom-backup@pbs!pve",
                "--pbs-fingerprint",
                PBS_FP,
            ])
            .arg("--pbs-password-file")
            .arg(r("pbs-secret"))
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
        out.push(std::fs::read_to_string(self.root.join("escrow/offsite.json")).unwrap());
        out.push(std::fs::read_to_string(self.root.join("priv/storage/offsite.enc")).unwrap());
        let storages = get(&self.sim, ROOT, "/storage").await;
        out.push(storages.data().to_string());
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
        "changed  storage offsite added (pbs 127.0.0.1, datastore felhom), encrypted",
        "changed  escrow of storage offsite written to",
        "RECOVERY CODE",
        "proxmox-backup-manager acl update /datastore/felhom DatastoreBackup --auth-id 'felhom-backup@pbs'",
        "proxmox-backup-manager acl update /datastore/felhom DatastoreBackup --auth-id 'felhom-backup@pbs!pve'",
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
    assert!(!stdout.contains(PBS_SECRET) && !stderr.contains(PBS_SECRET));
    // Every pveum command line enroll ran: no secret in any of them.
    let argv = std::fs::read_to_string(s.root.join("pveum-argv.log")).unwrap();
    assert!(
        argv.contains("user token add felhom-agent@pve agent --privsep 1"),
        "{argv}"
    );
    assert!(
        !argv.contains(&secret) && !argv.contains(PBS_SECRET),
        "{argv}"
    );
    // PVE keeps the PBS secret in priv/storage/<id>.pw and the storage shows its key's fingerprint.
    let pw = s.root.join("priv/storage/offsite.pw");
    assert_eq!(
        std::fs::read_to_string(&pw).unwrap(),
        format!("{PBS_SECRET}\n")
    );
    assert_eq!(mode(&pw), 0o600);
    let storage = get(&s.sim, ROOT, "/storage/offsite").await;
    let escrow = std::fs::read_to_string(s.root.join("escrow/offsite.json")).unwrap();
    let escrowed: serde_json::Value = serde_json::from_str(&escrow).unwrap();
    assert_eq!(
        storage.data()["encryption-key"],
        escrowed["fingerprint"],
        "{:?}",
        storage.body
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

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_storage_without_a_client_key_is_refused_not_changed() {
    let s = Setup::start().await;
    // The default host's felhom-pbs storage has no encryption key.
    let out = s.enroll_storage("felhom-pbs");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("PBS storage: storage 'felhom-pbs' exists without a client encryption key"),
        "{err}"
    );
    assert!(!s.root.join("escrow/felhom-pbs.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recovered_key_on_this_host_is_the_new_storages_key_not_replaced() {
    let s = Setup::start().await;
    // `escrow recover` put the old box's key here before enrollment.
    let key = felhom_agent::capabilities::escrow::PbsKey::from_bytes([6; 32], 1_700_000_000);
    let live = s.root.join("priv/storage/offsite.enc");
    std::fs::create_dir_all(live.parent().unwrap()).unwrap();
    let text = format!("{}\n", key.to_plain(1_700_000_000).to_pretty_json());
    std::fs::write(&live, &text).unwrap();
    let out = s.enroll();
    let stdout = text_of(&out);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "encrypted with the key already on this host ({})",
            key.fingerprint()
        )),
        "{stdout}"
    );
    let storage = get(&s.sim, ROOT, "/storage/offsite").await;
    assert_eq!(
        storage.data()["encryption-key"],
        key.fingerprint().to_string()
    );
    let after = felhom_agent::capabilities::escrow::KeyConfig::parse(
        &std::fs::read_to_string(&live).unwrap(),
    )
    .unwrap();
    assert_eq!(
        felhom_agent::capabilities::escrow::PbsKey::from_plain(&after)
            .unwrap()
            .bytes(),
        key.bytes()
    );
    assert!(!s.root.join("priv/storage/offsite.enc.old").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_secret_that_no_longer_works_is_replaced() {
    let s = Setup::start().await;
    assert!(s.enroll().status.success());
    let file = s.etc().join("pve-token");
    std::fs::write(
        &file,
        "felhom-agent@pve!agent=00000000-0000-0000-0000-000000000000\n",
    )
    .unwrap();
    let out = s.enroll();
    let stdout = text_of(&out);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("changed  token felhom-agent@pve!agent removed: the secret in"),
        "{stdout}"
    );
    assert_ne!(
        std::fs::read_to_string(&file).unwrap(),
        "felhom-agent@pve!agent=00000000-0000-0000-0000-000000000000\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_toml_pinning_another_certificate_is_named_not_trusted() {
    let s = Setup::start().await;
    std::fs::create_dir_all(s.etc()).unwrap();
    let other = "AA:".repeat(31) + "AA";
    std::fs::write(
        s.etc().join("agent.toml"),
        format!("[proxmox]\ntls_fingerprint = \"{other}\"\n"),
    )
    .unwrap();
    let out = s.enroll();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "pins certificate {other}, but the node's certificate is {}",
            s.sim.fingerprint()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escrow_of_another_key_is_refused_not_reported_fine() {
    let s = Setup::start().await;
    assert!(s.enroll().status.success());
    // Someone gave the storage a new key after the escrow was made.
    let key = felhom_agent::capabilities::escrow::PbsKey::from_bytes([7; 32], 1_700_000_000);
    std::fs::write(
        s.root.join("priv/storage/offsite.enc"),
        format!("{}\n", key.to_plain(1_700_000_000).to_pretty_json()),
    )
    .unwrap();
    let out = s.enroll();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("backups made with the live key are not covered"),
        "{err}"
    );
}

fn text_of(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}
