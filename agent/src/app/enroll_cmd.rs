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
    /// The certificate pveproxy serves; its SHA-256 becomes `proxmox.tls_fingerprint`
    /// (default: `/etc/pve/local/pveproxy-ssl.pem` when there is one — a custom or ACME
    /// certificate — else `/etc/pve/local/pve-ssl.pem`).
    #[arg(long)]
    pve_cert: Option<PathBuf>,
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
    let (node, fingerprint) = node_and_cert(args)?;
    role(&pveum)?;
    let tokens = user(&pveum)?;
    let token_file = args.etc_dir.join("pve-token");
    token(&pveum, &tokens, &token_file, args, &node, fingerprint).await?;
    acls(&pveum)?;
    config(args, &node, fingerprint)?;
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
        self.try_run(step, args)?
            .map_err(|err| failed(step, format!("`pveum {}` failed: {err}", args.join(" "))))
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

async fn token(
    pveum: &Pveum<'_>,
    tokens: &[String],
    file: &Path,
    args: &EnrollArgs,
    node: &str,
    cert: CertFingerprint,
) -> Result<(), StepFailed> {
    let step = "token felhom-agent@pve!agent";
    let authid = format!("{USER}!{TOKEN}");
    // Only a missing file means "no secret here": an unreadable one stops enrollment rather
    // than revoking a token a running agent may use.
    let on_file = match std::fs::read_to_string(file) {
        Ok(t) => {
            let t = zeroize::Zeroizing::new(t);
            crate::infra::pve::ApiToken::parse(t.trim())
                .ok()
                .filter(|t| t.authid() == authid)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(failed(step, format!("cannot read {}: {e}", file.display()))),
    };
    let exists = tokens.iter().any(|t| t == TOKEN);
    if exists && let Some(token) = on_file {
        // The secret on file must still be the token's (it may have been re-made elsewhere).
        let pve = client(args, node, cert, token).map_err(|e| failed(step, e))?;
        match pve.version().await {
            Ok(_) => {
                report(
                    false,
                    &format!(
                        "token {authid} exists and its secret in {} works",
                        file.display()
                    ),
                );
                return Ok(());
            }
            Err(crate::infra::pve::PveError::Unauthorized { .. }) => {
                pveum.run(step, &["user", "token", "remove", USER, TOKEN])?;
                report(
                    true,
                    &format!(
                        "token {authid} removed: the secret in {} no longer works",
                        file.display()
                    ),
                );
                return make_token(pveum, step, &authid, file);
            }
            Err(e) => {
                return Err(failed(
                    step,
                    format!(
                        "cannot check the token in {}: {}",
                        file.display(),
                        error_chain(&e)
                    ),
                ));
            }
        }
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
    make_token(pveum, step, &authid, file)
}

fn make_token(
    pveum: &Pveum<'_>,
    step: &'static str,
    authid: &str,
    file: &Path,
) -> Result<(), StepFailed> {
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

/// The node name and the SHA-256 of the certificate pveproxy serves.
fn node_and_cert(args: &EnrollArgs) -> Result<(String, CertFingerprint), StepFailed> {
    let step = "node certificate";
    let cert = args.pve_cert.clone().unwrap_or_else(|| {
        let custom = PathBuf::from("/etc/pve/local/pveproxy-ssl.pem");
        if custom.exists() {
            custom
        } else {
            PathBuf::from("/etc/pve/local/pve-ssl.pem")
        }
    });
    let pem = std::fs::read(&cert)
        .map_err(|e| failed(step, format!("cannot read {}: {e}", cert.display())))?;
    let der = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        CertificateDer::from_pem_slice(&pem)
            .map_err(|_| failed(step, format!("{} holds no PEM certificate", cert.display())))?
    };
    let node = match &args.node {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .map_err(|e| failed(step, format!("cannot read the host name: {e}")))?,
    };
    Ok((node, CertFingerprint::of_der(&der)))
}

/// A client of this host's Proxmox VE as `token`, pinned to `cert`.
fn client(
    args: &EnrollArgs,
    node: &str,
    cert: CertFingerprint,
    token: crate::infra::pve::ApiToken,
) -> Result<crate::infra::pve::PveClient, String> {
    use crate::infra::pve::{PveClient, PveClientConfig, TlsTrust};
    let endpoint = args
        .endpoint
        .parse()
        .map_err(|e| format!("--endpoint '{}': {e}", args.endpoint))?;
    PveClient::new(PveClientConfig {
        endpoint,
        node: node.to_owned(),
        token,
        trust: TlsTrust::Pinned(cert),
        request_timeout: std::time::Duration::from_secs(60),
        connect_timeout: std::time::Duration::from_secs(10),
    })
    .map_err(|e| error_chain(&e))
}

/// Writes agent.toml when there is none; an existing one must pin this certificate.
fn config(args: &EnrollArgs, node: &str, fingerprint: CertFingerprint) -> Result<(), StepFailed> {
    let step = "agent.toml";
    let path = args.etc_dir.join("agent.toml");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| failed(step, format!("cannot read {}: {e}", path.display())))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            failed(
                step,
                format!("{} is not TOML: {}", path.display(), e.message()),
            )
        })?;
        let pinned = table
            .get("proxmox")
            .and_then(|p| p.get("tls_fingerprint"))
            .and_then(toml::Value::as_str);
        if let Some(pin) = pinned
            && !pin.eq_ignore_ascii_case(&fingerprint.to_string())
        {
            return Err(failed(
                step,
                format!(
                    "{} pins certificate {pin}, but the node's certificate is {fingerprint}: set \
                     proxmox.tls_fingerprint to it (or give --pve-cert the certificate pveproxy serves)",
                    path.display()
                ),
            ));
        }
        report(false, &format!("{} exists (left as it is)", path.display()));
        return Ok(());
    }
    let text = format!(
        "# Written by `felhom-agent enroll`. See agent.toml.example for every setting.\n\
         [proxmox]\n\
         endpoint = \"{}\"\n\
         node = \"{node}\"\n\
         # SHA-256 of the certificate pveproxy serves\n\
         tls_fingerprint = \"{fingerprint}\"\n\
         # The token is the systemd credential pve-token ({}).\n",
        args.endpoint,
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
    Ok(())
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
    use crate::infra::pve::{ApiToken, PbsStorageRequest};
    let step = "PBS storage";
    crate::infra::pve::validate_storage_id(storage)
        .map_err(|e| failed(step, format!("--pbs-storage: {e}")))?;
    let token_text = zeroize::Zeroizing::new(
        std::fs::read_to_string(token_file)
            .map_err(|e| failed(step, format!("cannot read {}: {e}", token_file.display())))?,
    );
    let token = ApiToken::parse(token_text.trim())
        .map_err(|e| failed(step, format!("{}: {e}", token_file.display())))?;
    let pve = client(args, node, fingerprint, token).map_err(|e| failed(step, e))?;
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
    // A key already here (recovered from the escrow) is used, never replaced: `autogen` would
    // move it aside for a new one that no older backup opens with.
    let key_path = EscrowPaths::for_storage(storage, &args.pve_priv_dir, &args.escrow_dir).live_key;
    let present = match std::fs::read_to_string(&key_path) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            let cfg = crate::capabilities::escrow::KeyConfig::parse(&text)
                .map_err(|e| failed(step, format!("{}: {e}", key_path.display())))?;
            let key = crate::capabilities::escrow::PbsKey::from_plain(&cfg)
                .map_err(|e| failed(step, format!("{}: {e}", key_path.display())))?;
            Some((
                zeroize::Zeroizing::new(text.trim().to_owned()),
                key.fingerprint(),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(failed(
                step,
                format!("cannot read {}: {e}", key_path.display()),
            ));
        }
    };
    let with = present.as_ref().map_or_else(
        || "a client key Proxmox VE made".to_owned(),
        |(_, fp)| format!("the key already on this host ({fp})"),
    );
    let req = PbsStorageRequest {
        storage: storage.to_owned(),
        server: server.clone(),
        port: args.pbs_port,
        datastore: datastore.clone(),
        username: username.clone(),
        password: secrecy::SecretString::from(secret.trim().to_owned()),
        fingerprint: pbs_fp.clone(),
        encryption_key: present.map(|(text, _)| text),
    };
    pve.add_pbs_storage(&req)
        .await
        .map_err(|e| failed(step, error_chain(&e)))?;
    report(
        true,
        &format!(
            "storage {storage} added (pbs {server}, datastore {datastore}), encrypted with {with}"
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
        // An escrow of another key than the live one protects none of the new backups.
        let status = lifecycle::status(&paths);
        let escrowed = status
            .blob
            .map_err(|e| failed(step, error_chain(&e)))?
            .and_then(|b| b.fingerprint);
        let live = status.live.map_err(|e| failed(step, error_chain(&e)))?;
        return match (escrowed, live) {
            (Some(e), Some(l)) if e == l => {
                report(
                    false,
                    &format!("escrow of storage {storage} holds its key ({l})"),
                );
                Ok(())
            }
            (e, l) => Err(failed(
                step,
                format!(
                    "the escrow {} holds key {} but storage {storage}'s key is {}: backups made with \
                     the live key are not covered. Keep the old escrow (older backups need it), move \
                     it aside and run enroll again to escrow the live key",
                    paths.blob.display(),
                    e.map_or_else(|| "(unrecorded)".to_owned(), |f| f.to_string()),
                    l.map_or_else(|| "(none on this host)".to_owned(), |f| f.to_string()),
                ),
            )),
        };
    }
    let hint = format!("felhom recovery code (12 words) of storage {storage} on {node}");
    let now = chrono::Utc::now().timestamp();
    lifecycle::create(&paths, &hint, now, &mut |c| {
        report(
            true,
            &format!(
                "escrow of storage {storage} written to {}",
                paths.blob.display()
            ),
        );
        crate::app::escrow_cmd::show_created(storage, &paths, c, "created")
    })
    .map_err(|e| failed(step, error_chain(&e)))?;
    Ok(())
}

/// Writes `text` whole with `mode`, creating the directory.
fn write_file(step: &'static str, path: &Path, text: &str, mode: u32) -> Result<(), StepFailed> {
    let err = |e: std::io::Error| failed(step, format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    crate::infra::whole_file::write(path, text, mode).map_err(err)
}
