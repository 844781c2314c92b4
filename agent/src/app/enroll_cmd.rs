//! `felhom-agent enroll`: sets a Proxmox VE host up for the agent, run once by root, safe to run
//! again (every step looks first and changes only what is missing or different, and says which).
//!
//! Steps, each printed as `ok` (already so) or `changed`:
//! 1. the `FelhomAgent` role with exactly the agent's privileges (`pveum role add|modify`);
//! 2. the user `felhom-agent@pve` (`pveum user add`);
//! 3. its privilege-separated token `agent` (`pveum user token add … --privsep 1`), whose
//!    secret goes straight from pveum's output into `<etc>/pve-token` (root, 0600: the unit's
//!    `LoadCredential=`); a token whose secret this host no longer has is replaced;
//! 4. the role on `/` for both the user and the token (`pveum acl modify`; a privsep token's
//!    rights are the intersection);
//! 5. `<etc>/agent.toml` with the node and the SHA-256 of its certificate (never overwritten);
//! 6. the operators' `allowed_signers` (`<etc>/allowed_signers`, 0644), when given;
//! 7. with `--pbs-storage`: the encrypted PBS storage — added through the Proxmox VE API with
//!    the token just made (`POST /storage`, `encryption-key autogen`: PVE makes the client key;
//!    the PBS secret is read from `--pbs-password-file` and sent in the request body, never in
//!    argv), or, when it exists, checked to be of type pbs with a client key;
//! 8. the escrow of that storage's key, as `felhom-agent escrow create` (the code shown once).
//!
//! Limits: the PBS-side user, token and their `DatastoreBackup` ACLs live on the PBS host and
//! are not made here; the summary says so.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use serde_json::Value;

use crate::app::paths;
use crate::capabilities::escrow::{EscrowPaths, lifecycle};
use crate::capabilities::selftest::FELHOM_AGENT_PRIVILEGES;
use crate::core::error_chain;
use crate::infra::proxmox::CertFingerprint;

const ROLE: &str = "FelhomAgent";
const USER: &str = "felhom-agent@pve";
const TOKEN: &str = "agent";

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The Proxmox VE API endpoint the agent will use.
    #[arg(long, default_value = "https://127.0.0.1:8006")]
    endpoint: String,
    /// The node name (default: this host's name).
    #[arg(long)]
    node: Option<String>,
    /// The node's certificate; its SHA-256 becomes `proxmox.tls_fingerprint`.
    #[arg(long, default_value = "/etc/pve/local/pve-ssl.pem")]
    pve_cert: PathBuf,
    /// Directory of agent.toml, pve-token and allowed_signers.
    #[arg(long, default_value = "/etc/felhom")]
    etc_dir: PathBuf,
    /// The operators' SSH `allowed_signers` file to install.
    #[arg(long)]
    allowed_signers: Option<PathBuf>,
    /// The encrypted PBS storage: added when missing (with the --pbs-* options), and its
    /// client key escrowed under a new recovery code.
    #[arg(long)]
    pbs_storage: Option<String>,
    /// PBS server host, to add the storage.
    #[arg(long, requires_all = ["pbs_storage", "pbs_datastore", "pbs_username", "pbs_fingerprint", "pbs_password_file"])]
    pbs_server: Option<String>,
    /// PBS API port, when not 8007.
    #[arg(long)]
    pbs_port: Option<u16>,
    /// PBS datastore.
    #[arg(long)]
    pbs_datastore: Option<String>,
    /// The PBS user or token Proxmox VE logs in as (`user@pbs!token`).
    #[arg(long)]
    pbs_username: Option<String>,
    /// SHA-256 of the PBS certificate.
    #[arg(long)]
    pbs_fingerprint: Option<String>,
    /// File holding that user's password or token secret (root's, 0600).
    #[arg(long)]
    pbs_password_file: Option<PathBuf>,
    /// The `pveum` program.
    #[arg(long, default_value = "pveum")]
    pveum: PathBuf,
    /// Proxmox VE's private directory (PBS storage keys).
    #[arg(long, default_value = paths::PVE_PRIV_DIR)]
    pve_priv_dir: PathBuf,
    /// Directory of the escrow files.
    #[arg(long, default_value = paths::ESCROW_DIR)]
    escrow_dir: PathBuf,
}

/// A step that could not be done; the text names it and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {message}")]
struct StepFailed {
    step: &'static str,
    message: String,
}

fn failed(step: &'static str, message: impl Into<String>) -> StepFailed {
    StepFailed {
        step,
        message: message.into(),
    }
}

/// Exit code: 0 enrolled, 1 a step failed (the steps before it stay done; run again).
pub async fn run(args: &EnrollArgs) -> u8 {
    println!("Enrolling this host for the felhom agent");
    match enroll(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("felhom-agent enroll: {e}");
            eprintln!(
                "Nothing after this step was done; fix it and run `felhom-agent enroll` again."
            );
            1
        }
    }
}

fn report(changed: bool, what: &str) {
    println!("  {:<8} {what}", if changed { "changed" } else { "ok" });
}

async fn enroll(args: &EnrollArgs) -> Result<(), StepFailed> {
    let pveum = Pveum(&args.pveum);
    role(&pveum)?;
    let tokens = user(&pveum)?;
    let token_file = args.etc_dir.join("pve-token");
    token(&pveum, &tokens, &token_file)?;
    acls(&pveum)?;
    let (node, fingerprint) = config(args)?;
    if let Some(file) = &args.allowed_signers {
        allowed_signers(file, &args.etc_dir.join("allowed_signers"))?;
    }
    if let Some(storage) = &args.pbs_storage {
        pbs_storage(args, storage, &token_file, &node, fingerprint).await?;
        escrow(args, storage, &node)?;
    }
    println!(
        "\nEnrolled: node {node}, endpoint {}, certificate {fingerprint}, token {USER}!{TOKEN} in {}.",
        args.endpoint,
        token_file.display()
    );
    print!("{}", pbs_side(args));
    println!(
        "Then set `[local_api] listen`, `[pbs]` and `[backup]` in agent.toml and run\n  \
         systemctl start felhom-helper.service felhom-agent.service"
    );
    Ok(())
}

/// What the PBS administrator runs on the PBS host. This host holds no PBS admin rights (a
/// compromised box must not be able to change who may read or prune the offsite backups), so
/// enrollment prints these instead of running them. A privilege-separated PBS token needs the
/// role on both the user and the token.
fn pbs_side(args: &EnrollArgs) -> String {
    let (Some(username), Some(datastore)) = (&args.pbs_username, &args.pbs_datastore) else {
        return "\nOn the PBS host (not done here): the user and token Proxmox VE logs in as, with \
                DatastoreBackup on the datastore for both.\n"
            .to_owned();
    };
    let user = username
        .split_once('!')
        .map_or(username.as_str(), |(u, _)| u);
    let mut out = format!(
        "\nOn the PBS host, as its administrator (not done here; this host holds no PBS admin rights):\n  \
         proxmox-backup-manager user create {user}\n"
    );
    if let Some((_, token)) = username.split_once('!') {
        out.push_str(&format!(
            "  proxmox-backup-manager user generate-token {user} {token}   # its secret is --pbs-password-file\n"
        ));
    }
    let mut ids = vec![user];
    if username != user {
        ids.push(username);
    }
    for id in ids {
        out.push_str(&format!(
            "  proxmox-backup-manager acl update /datastore/{datastore} DatastoreBackup --auth-id '{id}'\n"
        ));
    }
    out
}

/// Runs pveum, returning its standard output (never logged: a token add prints the secret).
struct Pveum<'a>(&'a Path);

impl Pveum<'_> {
    fn run(&self, step: &'static str, args: &[&str]) -> Result<String, StepFailed> {
        let out = Command::new(self.0)
            .args(args)
            .output()
            .map_err(|e| failed(step, format!("cannot run {}: {e}", self.0.display())))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(failed(
                step,
                format!("`pveum {}` failed: {err}", args.join(" ")),
            ));
        }
        String::from_utf8(out.stdout).map_err(|_| failed(step, "pveum printed non-UTF-8"))
    }

    /// Like [`Self::run`], but a failure is returned as its error text.
    fn try_run(
        &self,
        step: &'static str,
        args: &[&str],
    ) -> Result<Result<String, String>, StepFailed> {
        let out = Command::new(self.0)
            .args(args)
            .output()
            .map_err(|e| failed(step, format!("cannot run {}: {e}", self.0.display())))?;
        if out.status.success() {
            return Ok(Ok(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        Ok(Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }

    fn json(&self, step: &'static str, args: &[&str]) -> Result<Value, StepFailed> {
        let text = self.run(step, args)?;
        serde_json::from_str(text.trim())
            .map_err(|_| failed(step, "pveum's JSON output did not parse"))
    }
}

fn role(pveum: &Pveum<'_>) -> Result<(), StepFailed> {
    let step = "role FelhomAgent";
    let want: std::collections::BTreeSet<&str> = FELHOM_AGENT_PRIVILEGES.iter().copied().collect();
    let privs = want.iter().copied().collect::<Vec<_>>().join(",");
    let roles = pveum.json(step, &["role", "list", "--output-format", "json"])?;
    let current = roles
        .as_array()
        .and_then(|a| a.iter().find(|r| r["roleid"] == ROLE))
        .map(|r| {
            r["privs"]
                .as_str()
                .unwrap_or("")
                .split([',', ' '])
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect::<std::collections::BTreeSet<_>>()
        });
    match current {
        None => {
            pveum.run(step, &["role", "add", ROLE, "--privs", &privs])?;
            report(
                true,
                &format!(
                    "role {ROLE} created with the agent's {} privileges",
                    want.len()
                ),
            );
        }
        Some(have) if have.iter().map(String::as_str).eq(want.iter().copied()) => {
            report(
                false,
                &format!("role {ROLE} has exactly the agent's privileges"),
            );
        }
        Some(_) => {
            pveum.run(step, &["role", "modify", ROLE, "--privs", &privs])?;
            report(
                true,
                &format!("role {ROLE} set to exactly the agent's privileges"),
            );
        }
    }
    Ok(())
}

/// Ensures the user; returns the ids of its tokens.
fn user(pveum: &Pveum<'_>) -> Result<Vec<String>, StepFailed> {
    let step = "user felhom-agent@pve";
    let listed = pveum.try_run(
        step,
        &["user", "token", "list", USER, "--output-format", "json"],
    )?;
    match listed {
        Ok(text) => {
            report(false, &format!("user {USER} exists"));
            let v: Value = serde_json::from_str(text.trim())
                .map_err(|_| failed(step, "pveum's JSON output did not parse"))?;
            Ok(v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t["tokenid"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default())
        }
        Err(e) if e.contains("no such user") => {
            pveum.run(
                step,
                &["user", "add", USER, "--comment", "felhom host agent"],
            )?;
            report(true, &format!("user {USER} created"));
            Ok(Vec::new())
        }
        Err(e) => Err(failed(
            step,
            format!("`pveum user token list {USER}` failed: {e}"),
        )),
    }
}

fn token(pveum: &Pveum<'_>, tokens: &[String], file: &Path) -> Result<(), StepFailed> {
    let step = "token felhom-agent@pve!agent";
    let authid = format!("{USER}!{TOKEN}");
    let on_file = std::fs::read_to_string(file)
        .ok()
        .map(zeroize::Zeroizing::new)
        .and_then(|t| crate::infra::pve::ApiToken::parse(t.trim()).ok())
        .is_some_and(|t| t.authid() == authid);
    let exists = tokens.iter().any(|t| t == TOKEN);
    if exists && on_file {
        report(
            false,
            &format!(
                "token {authid} exists and its secret is in {}",
                file.display()
            ),
        );
        return Ok(());
    }
    if exists {
        pveum.run(step, &["user", "token", "remove", USER, TOKEN])?;
        report(
            true,
            &format!(
                "token {authid} removed: its secret is not on this host ({} has none)",
                file.display()
            ),
        );
    }
    let made = pveum.json(
        step,
        &[
            "user",
            "token",
            "add",
            USER,
            TOKEN,
            "--privsep",
            "1",
            "--output-format",
            "json",
        ],
    )?;
    let secret = zeroize::Zeroizing::new(
        made["value"]
            .as_str()
            .ok_or_else(|| failed(step, "pveum printed no token value"))?
            .to_owned(),
    );
    let text = zeroize::Zeroizing::new(format!("{authid}={}\n", secret.as_str()));
    write_file(step, file, &text, 0o600)?;
    report(
        true,
        &format!(
            "token {authid} created (privilege-separated); secret written to {} (0600)",
            file.display()
        ),
    );
    Ok(())
}

fn acls(pveum: &Pveum<'_>) -> Result<(), StepFailed> {
    let step = "ACLs on /";
    let list = pveum.json(step, &["acl", "list", "--output-format", "json"])?;
    let authid = format!("{USER}!{TOKEN}");
    for (kind, flag, who) in [
        ("user", "--users", USER),
        ("token", "--tokens", authid.as_str()),
    ] {
        let present = list.as_array().is_some_and(|a| {
            a.iter().any(|e| {
                e["path"] == "/" && e["roleid"] == ROLE && e["type"] == kind && e["ugid"] == who
            })
        });
        if present {
            report(false, &format!("{ROLE} on / for {kind} {who}"));
        } else {
            pveum.run(step, &["acl", "modify", "/", "--roles", ROLE, flag, who])?;
            report(true, &format!("{ROLE} granted on / to {kind} {who}"));
        }
    }
    Ok(())
}

/// Writes agent.toml when there is none; returns the node and certificate fingerprint.
fn config(args: &EnrollArgs) -> Result<(String, CertFingerprint), StepFailed> {
    let step = "agent.toml";
    let pem = std::fs::read(&args.pve_cert).map_err(|e| {
        failed(
            step,
            format!(
                "cannot read the node certificate {}: {e}",
                args.pve_cert.display()
            ),
        )
    })?;
    let der = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        CertificateDer::from_pem_slice(&pem).map_err(|_| {
            failed(
                step,
                format!("{} holds no PEM certificate", args.pve_cert.display()),
            )
        })?
    };
    let fingerprint = CertFingerprint::of_der(&der);
    let node = match &args.node {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .map_err(|e| failed(step, format!("cannot read the host name: {e}")))?,
    };
    let path = args.etc_dir.join("agent.toml");
    if path.exists() {
        report(false, &format!("{} exists (left as it is)", path.display()));
        return Ok((node, fingerprint));
    }
    let text = format!(
        "# Written by `felhom-agent enroll`. See agent.toml.example for every setting.\n\
         [proxmox]\n\
         endpoint = \"{}\"\n\
         node = \"{node}\"\n\
         # SHA-256 of {}\n\
         tls_fingerprint = \"{fingerprint}\"\n\
         # The token is the systemd credential pve-token ({}).\n",
        args.endpoint,
        args.pve_cert.display(),
        args.etc_dir.join("pve-token").display(),
    );
    write_file(step, &path, &text, 0o640)?;
    // The agent reads its configuration through its group (tmpfiles: /etc/felhom 0750).
    if let Ok(Some(group)) = nix::unistd::Group::from_name(paths::AGENT_USER) {
        nix::unistd::chown(&path, None, Some(group.gid)).map_err(|e| {
            failed(
                step,
                format!(
                    "cannot give {} to group {}: {e}",
                    path.display(),
                    paths::AGENT_USER
                ),
            )
        })?;
    }
    report(
        true,
        &format!(
            "{} written (node {node}, certificate {fingerprint})",
            path.display()
        ),
    );
    Ok((node, fingerprint))
}

fn allowed_signers(from: &Path, to: &Path) -> Result<(), StepFailed> {
    let step = "allowed_signers";
    let text = std::fs::read_to_string(from)
        .map_err(|e| failed(step, format!("cannot read {}: {e}", from.display())))?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.split_whitespace().count() < 3 {
            return Err(failed(
                step,
                format!(
                    "{} line {}: not `<principals> [options] <key type> <key>` (ssh-keygen(1) ALLOWED SIGNERS)",
                    from.display(),
                    i + 1
                ),
            ));
        }
    }
    if std::fs::read_to_string(to).is_ok_and(|have| have == text) {
        report(false, &format!("{} is up to date", to.display()));
        return Ok(());
    }
    write_file(step, to, &text, 0o644)?;
    report(true, &format!("{} installed", to.display()));
    Ok(())
}

async fn pbs_storage(
    args: &EnrollArgs,
    storage: &str,
    token_file: &Path,
    node: &str,
    fingerprint: CertFingerprint,
) -> Result<(), StepFailed> {
    use crate::infra::pve::{ApiToken, PbsStorageRequest, PveClient, PveClientConfig, TlsTrust};
    let step = "PBS storage";
    crate::infra::pve::validate_storage_id(storage)
        .map_err(|e| failed(step, format!("--pbs-storage: {e}")))?;
    let token_text = zeroize::Zeroizing::new(
        std::fs::read_to_string(token_file)
            .map_err(|e| failed(step, format!("cannot read {}: {e}", token_file.display())))?,
    );
    let token = ApiToken::parse(token_text.trim())
        .map_err(|e| failed(step, format!("{}: {e}", token_file.display())))?;
    let endpoint = args
        .endpoint
        .parse()
        .map_err(|e| failed(step, format!("--endpoint '{}': {e}", args.endpoint)))?;
    let pve = PveClient::new(PveClientConfig {
        endpoint,
        node: node.to_owned(),
        token,
        trust: TlsTrust::Pinned(fingerprint),
        request_timeout: std::time::Duration::from_secs(60),
        connect_timeout: std::time::Duration::from_secs(10),
    })
    .map_err(|e| failed(step, error_chain(&e)))?;
    let configs = pve
        .storage_config()
        .await
        .map_err(|e| failed(step, error_chain(&e)))?;
    if let Some(c) = configs.iter().find(|c| c.storage == storage) {
        if c.kind != "pbs" {
            return Err(failed(
                step,
                format!(
                    "storage '{storage}' exists but is of type {}, not pbs",
                    c.kind
                ),
            ));
        }
        if c.encryption_key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == "0")
        {
            return Err(failed(
                step,
                format!(
                    "storage '{storage}' exists without a client encryption key, so backups to it \
                     would not be encrypted; give it one (`pvesm set {storage} --encryption-key \
                     autogen`) and run enroll again"
                ),
            ));
        }
        report(false, &format!("storage {storage} exists (pbs, encrypted)"));
        return Ok(());
    }
    let (Some(server), Some(datastore), Some(username), Some(pbs_fp), Some(secret_file)) = (
        &args.pbs_server,
        &args.pbs_datastore,
        &args.pbs_username,
        &args.pbs_fingerprint,
        &args.pbs_password_file,
    ) else {
        return Err(failed(
            step,
            format!(
                "storage '{storage}' does not exist; give --pbs-server, --pbs-datastore, \
                 --pbs-username, --pbs-fingerprint and --pbs-password-file to add it"
            ),
        ));
    };
    let secret =
        crate::infra::secret_file::read(secret_file, crate::infra::secret_file::Origin::File)
            .map_err(|e| failed(step, error_chain(&e)))?;
    let req = PbsStorageRequest {
        storage: storage.to_owned(),
        server: server.clone(),
        port: args.pbs_port,
        datastore: datastore.clone(),
        username: username.clone(),
        password: secrecy::SecretString::from(secret.trim().to_owned()),
        fingerprint: pbs_fp.clone(),
    };
    pve.add_pbs_storage(&req)
        .await
        .map_err(|e| failed(step, error_chain(&e)))?;
    report(
        true,
        &format!(
            "storage {storage} added (pbs {server}, datastore {datastore}), encrypted with a client key Proxmox VE made"
        ),
    );
    Ok(())
}

fn escrow(args: &EnrollArgs, storage: &str, node: &str) -> Result<(), StepFailed> {
    let step = "escrow";
    crate::infra::pve::validate_storage_id(storage)
        .map_err(|e| failed(step, format!("--pbs-storage: {e}")))?;
    let paths = EscrowPaths::for_storage(storage, &args.pve_priv_dir, &args.escrow_dir);
    if paths.blob.exists() {
        report(
            false,
            &format!(
                "escrow of storage {storage} exists ({})",
                paths.blob.display()
            ),
        );
        return Ok(());
    }
    let hint = format!("felhom recovery code (12 words) of storage {storage} on {node}");
    let now = chrono::Utc::now().timestamp();
    let created =
        lifecycle::create(&paths, &hint, now).map_err(|e| failed(step, error_chain(&e)))?;
    report(
        true,
        &format!(
            "escrow of storage {storage} written to {}",
            paths.blob.display()
        ),
    );
    crate::app::escrow_cmd::show_created(storage, &paths, &created, "created");
    Ok(())
}

/// Writes `text` whole (temporary file, rename) with `mode`, creating the directory.
fn write_file(step: &'static str, path: &Path, text: &str, mode: u32) -> Result<(), StepFailed> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |e: std::io::Error| failed(step, format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
