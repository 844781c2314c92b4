//! `felhom-agent escrow` end to end: the real command (through the devhost binary's agent
//! entry) against a simulated host's storage key, with the recovery code typed on a real
//! pseudo-terminal as an operator would.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{AGENT, get, post, task_log, wait_task};
use felhom_agent::capabilities::escrow::recovery_code::CodeError;
use felhom_agent::capabilities::escrow::{KeyConfig, PbsKey, RecoveryCode};
use felhom_simhost::devhost::{DevhostOptions, TempDevhost};

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_felhom-devhost"));
    c.arg(felhom_simhost::devhost::AGENT_ENTRY);
    c
}

/// Paths of one escrow setup.
struct Dirs {
    config: PathBuf,
    pve_priv: PathBuf,
    escrow: PathBuf,
}

impl Dirs {
    fn of(host: &TempDevhost) -> Self {
        let info = &host.dh().info;
        Self {
            config: info.state_dir.join("agent.toml"),
            pve_priv: info.pve_priv_dir.clone(),
            escrow: info.escrow_dir.clone(),
        }
    }

    fn live_key(&self) -> PathBuf {
        self.pve_priv.join("storage/felhom-pbs.enc")
    }

    fn blob(&self) -> PathBuf {
        self.escrow.join("felhom-pbs.json")
    }

    fn run(&self, args: &[&str]) -> Output {
        agent()
            .arg("--config")
            .arg(&self.config)
            .args(["escrow"])
            .args(args)
            .arg("--pve-priv-dir")
            .arg(&self.pve_priv)
            .arg("--escrow-dir")
            .arg(&self.escrow)
            .output()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The 12 words `create`/`rotate` printed.
fn words_of(stdout: &str) -> Vec<String> {
    let words: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("RECOVERY CODE"))
        .flat_map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .chunks(2)
                .filter(|c| {
                    c.len() == 2
                        && c[0].ends_with('.')
                        && c[0][..c[0].len() - 1].parse::<u32>().is_ok()
                })
                .map(|c| c[1].to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(words.len(), 12, "{stdout}");
    words
}

fn key_at(path: &Path) -> PbsKey {
    PbsKey::from_plain(&KeyConfig::parse(&std::fs::read_to_string(path).unwrap()).unwrap()).unwrap()
}

/// `escrow recover` on a pseudo-terminal: types each of `lines` after a prompt.
struct OnTerminal {
    child: Child,
    master: std::fs::File,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn start(dirs: &Dirs, extra: &[&str], blob: &Path, target_priv: &Path) -> Self {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = std::fs::File::from(pty.slave);
        let mut child = agent()
            .arg("--config")
            .arg(&dirs.config)
            .args(["escrow", "recover", "--blob"])
            .arg(blob)
            .arg("--pve-priv-dir")
            .arg(target_priv)
            .arg("--escrow-dir")
            .arg(&dirs.escrow)
            .args(extra)
            .stdin(Stdio::from(slave))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            master: std::fs::File::from(pty.master),
            stderr,
        }
    }

    fn prompts(&self) -> usize {
        text(&self.stderr.lock().unwrap())
            .matches("Recovery code (12 words")
            .count()
    }

    /// Waits for prompt number `n`, then types `line`.
    fn type_at_prompt(&mut self, n: usize, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.prompts() < n {
            assert!(
                Instant::now() < deadline,
                "no prompt {n}: {}",
                text(&self.stderr.lock().unwrap())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn finish(mut self) -> (i32, String, String) {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(50));
        let err = text(&self.stderr.lock().unwrap());
        (status.code().unwrap_or(-1), out, err)
    }
}

async fn host() -> TempDevhost {
    TempDevhost::start(&DevhostOptions {
        agent_program: Some(env!("CARGO_BIN_EXE_felhom-devhost").into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_then_recover_on_a_new_box_gives_back_the_storages_key() {
    let host = host().await;
    let dirs = Dirs::of(&host);
    let original = key_at(&dirs.live_key());
    let configured = get(host.dh().pve(), AGENT, "/storage/felhom-pbs").await;
    let configured_fp = configured.data()["encryption-key"]
        .as_str()
        .unwrap()
        .to_owned();

    let created = dirs.run(&["create"]);
    let (stdout, stderr) = (text(&created.stdout), text(&created.stderr));
    assert!(created.status.success(), "{stdout}{stderr}");
    let words = words_of(&stdout);
    assert!(
        stdout.contains(&format!("key fingerprint: {configured_fp}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("can never be restored, by\nanyone"),
        "{stdout}"
    );
    assert!(stdout.contains("Hub upload: not done"), "{stdout}");
    // The code is on standard output once and nowhere else: not in the log, not in the file.
    let phrase = words.join(" ");
    assert!(!stderr.contains(&words[5]), "{stderr}");
    let k64 = felhom_agent::capabilities::escrow::key_config::base64_of(original.bytes());
    assert!(
        !stdout.contains(&k64) && !stderr.contains(&k64),
        "{stdout}{stderr}"
    );
    let blob_text = std::fs::read_to_string(dirs.blob()).unwrap();
    assert!(!blob_text.contains(&words[5]), "{blob_text}");
    assert!(
        !blob_text.contains(&felhom_agent::capabilities::escrow::key_config::base64_of(
            original.bytes()
        ))
    );
    assert_eq!(
        std::fs::metadata(dirs.blob()).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let blob = KeyConfig::parse(&blob_text).unwrap();
    assert_eq!(blob.fingerprint.unwrap().to_string(), configured_fp);

    // The box is lost; a new one gets the escrow file back and the customer types the code.
    let new_priv = host.dh().info.state_dir.join("newbox/priv");
    let mut term = OnTerminal::start(&dirs, &[], &dirs.blob(), &new_priv);
    // While it waits, neither its arguments nor its environment hold the code.
    let pid = term.child.id();
    term.type_at_prompt(1, "");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!text(&cmdline).contains(&words[0]) && !text(&environ).contains(&phrase));
    term.type_at_prompt(2, &phrase.to_uppercase());
    let (code, out, err) = term.finish();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains(&words[5]) && !err.contains(&words[5]),
        "{out}{err}"
    );
    let installed = new_priv.join("storage/felhom-pbs.enc");
    assert_eq!(key_at(&installed).bytes(), original.bytes());
    assert_eq!(key_at(&installed).fingerprint().to_string(), configured_fp);
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        out.contains(&format!("fingerprint: {configured_fp}")),
        "{out}"
    );
    host.stop().await.unwrap();
}

/// A vzdump of guest 102 to the encrypted PBS storage, as Proxmox runs it: exit status and log.
async fn offsite_vzdump(host: &TempDevhost) -> (String, Vec<String>) {
    let pve = host.dh().pve();
    let a = post(
        pve,
        AGENT,
        "/nodes/pve1/vzdump",
        &[("vmid", "102"), ("storage", "felhom-pbs")],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let upid = a.data().as_str().unwrap().to_owned();
    let status = wait_task(pve, AGENT, &upid).await;
    (
        status["exitstatus"].as_str().unwrap_or_default().to_owned(),
        task_log(pve, AGENT, &upid).await,
    )
}

/// The host-loss path on the simulated host: the storage's key file is gone (PVE then refuses
/// every encrypted backup), the escrow brings it back, and backups land encrypted with the very
/// key the older ones used.
#[tokio::test(flavor = "multi_thread")]
async fn after_the_key_file_is_lost_recover_makes_encrypted_backups_work_again_with_the_same_key() {
    let host = host().await;
    let dirs = Dirs::of(&host);
    let original = key_at(&dirs.live_key());
    let created = dirs.run(&["create"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let phrase = words_of(&text(&created.stdout)).join(" ");

    std::fs::remove_file(dirs.live_key()).unwrap();
    let (status, log) = offsite_vzdump(&host).await;
    assert_ne!(status, "OK");
    let expected = format!(
        "ERROR: Backup of VM 102 failed - encryption configured ('{}') but no encryption key file found!",
        original.fingerprint()
    );
    assert!(log.contains(&expected), "{log:#?}");

    let mut term = OnTerminal::start(&dirs, &[], &dirs.blob(), &dirs.pve_priv);
    term.type_at_prompt(1, &phrase);
    let (code, out, err) = term.finish();
    assert_eq!(code, 0, "{out}{err}");

    let (status, log) = offsite_vzdump(&host).await;
    assert_eq!(status, "OK", "{log:#?}");
    let line = format!(
        "INFO: Encryption key fingerprint: {}",
        original.fingerprint()
    );
    assert!(log.contains(&line), "{log:#?}");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mistyped_word_is_refused_by_the_checksum_and_a_valid_code_of_another_escrow_is_a_wrong_code()
 {
    let host = host().await;
    let dirs = Dirs::of(&host);
    let created = dirs.run(&["create"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let mut words = words_of(&text(&created.stdout));
    // Another escrow (another box's), made from another key, gives a valid code for it.
    let other_priv = host.dh().info.state_dir.join("other/priv");
    std::fs::create_dir_all(other_priv.join("storage")).unwrap();
    let other_key = PbsKey::from_bytes([9; 32], 1_700_000_000);
    std::fs::write(
        other_priv.join("storage/felhom-pbs.enc"),
        format!("{}\n", other_key.to_plain(1_700_000_000).to_pretty_json()),
    )
    .unwrap();
    let other_escrow = host.dh().info.state_dir.join("other/escrow");
    let other = agent()
        .args(["--config"])
        .arg(&dirs.config)
        .args(["escrow", "create", "--pve-priv-dir"])
        .arg(&other_priv)
        .arg("--escrow-dir")
        .arg(&other_escrow)
        .output()
        .unwrap();
    assert!(other.status.success(), "{}", text(&other.stderr));
    let other_words = words_of(&text(&other.stdout));

    let target = host.dh().info.state_dir.join("newbox/priv");
    let mut term = OnTerminal::start(&dirs, &[], &dirs.blob(), &target);
    // One word swapped for another list word: the checksum catches it, nothing is decrypted.
    let kept = words[3].clone();
    let wrong = [
        "abandon", "ability", "able", "about", "above", "absent", "absorb", "abstract",
    ]
    .into_iter()
    .find(|w| {
        words[3] = (*w).to_owned();
        *w != kept
            && matches!(
                RecoveryCode::parse(&words.join(" ")),
                Err(CodeError::Checksum)
            )
    })
    .unwrap();
    words[3] = wrong.to_owned();
    term.type_at_prompt(1, &words.join(" "));
    // A valid code, but of the other escrow: the escrow does not open.
    term.type_at_prompt(2, &other_words.join(" "));
    let (code, out, err) = term.finish();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("the 12 words do not add up (their checksum is wrong)"),
        "{err}"
    );
    assert!(
        err.contains("wrong recovery code: the escrow does not open with it"),
        "{err}"
    );
    assert!(!target.join("storage/felhom-pbs.enc").exists());
    assert!(
        !err.contains(&other_words[2]) && !out.contains(&other_words[2]),
        "{out}{err}"
    );
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_replaces_the_code_and_status_shows_only_fingerprints_and_dates() {
    let host = host().await;
    let dirs = Dirs::of(&host);
    let first = dirs.run(&["create"]);
    assert!(first.status.success());
    let again = dirs.run(&["create"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("an escrow already exists at"),
        "{}",
        text(&again.stderr)
    );
    let rotated = dirs.run(&["rotate"]);
    let out = text(&rotated.stdout);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    assert_ne!(words_of(&out), words_of(&text(&first.stdout)));
    assert!(out.contains("This was not key rotation"), "{out}");
    let status = dirs.run(&["status"]);
    let s = text(&status.stdout);
    assert!(status.status.success(), "{s}");
    assert!(s.contains("the escrow holds the live key"), "{s}");
    let fp = key_at(&dirs.live_key()).fingerprint().to_string();
    assert_eq!(s.matches(&fp).count(), 2, "{s}");
    assert!(!s.contains(&words_of(&out)[0]), "{s}");
    host.stop().await.unwrap();
}

#[test]
fn recover_refuses_a_standard_input_that_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent()
        .args([
            "--config",
            "/dev/null",
            "escrow",
            "recover",
            "--storage",
            "felhom-pbs",
            "--blob",
        ])
        .arg(dir.path().join("x.json"))
        .arg("--pve-priv-dir")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the recovery code is read from a terminal"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn create_with_paperkey_prints_pbss_paperkey_of_the_raw_key_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let key = PbsKey::from_bytes([3; 32], 1_700_000_000);
    std::fs::create_dir_all(dir.path().join("priv/storage")).unwrap();
    std::fs::write(
        dir.path().join("priv/storage/offsite.enc"),
        format!("{}\n", key.to_plain(1_700_000_000).to_pretty_json()),
    )
    .unwrap();
    let out = agent()
        .args([
            "--config",
            "/dev/null",
            "escrow",
            "create",
            "--storage",
            "offsite",
            "--paperkey",
            "--pve-priv-dir",
        ])
        .arg(dir.path().join("priv"))
        .arg("--escrow-dir")
        .arg(dir.path().join("escrow"))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("-----BEGIN PROXMOX BACKUP KEY-----\n{\n  \"kdf\": null,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-----END PROXMOX BACKUP KEY-----"),
        "{stdout}"
    );
    assert!(
        stdout.contains("anyone holding this sheet can read every offsite"),
        "{stdout}"
    );
    assert!(
        stdout.contains('▀') || stdout.contains('█'),
        "no QR code: {stdout}"
    );
}
