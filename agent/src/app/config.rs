//! Agent configuration: a TOML file, `FELHOM_AGENT_*` environment overrides, secrets from files.
//!
//! Precedence: built-in defaults < the TOML file < `FELHOM_AGENT_<SECTION>_<KEY>` variables
//! (e.g. `FELHOM_AGENT_PROXMOX_ENDPOINT`; list keys take a comma-separated value,
//! `FELHOM_AGENT_LOCAL_API_LISTEN=10.0.0.1:8443,10.0.1.1:8443`, empty for none). Secrets are never taken from the file body, the
//! environment or argv: the Proxmox token is read from `proxmox.token_file`, or else from the
//! systemd credential `pve-token` (`LoadCredential=` puts it in `$CREDENTIALS_DIRECTORY`).
//!
//! Everything is validated at load; every error names the key it is about, so an operator can
//! fix the file without reading code.
//!
//! `[local_api]`: `listen` (addresses of the embedded gateway; empty = off), `certificate_dir`
//! (default `<state_dir>/local-api`), `storage_classes`, and the gateway limits an operator may
//! need to change (`max_body_bytes`, `max_connections`, `max_connections_per_source`,
//! `rate_per_second`, `rate_burst`, `source_rate_per_second`, `source_rate_burst`); the other
//! limits keep `felhom_localapi_gateway::Limits` defaults.
//!
//! `[snapshots]`: `max_per_guest` (agent-made snapshots of one guest that may exist at once,
//! default 10) and `min_interval_secs` (between two of one guest, default 300; 0 = none).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::app::listen_policy::{self, ListenPolicy};
use crate::app::paths;
use crate::capabilities::backup::{BackupSettings, RawBackup};
use crate::capabilities::guests::snapshot_limits::SnapshotLimits;
use crate::core::StorageClass;
use crate::infra::pbs::{PbsClientConfig, PbsToken};
use crate::infra::pve::{ApiToken, CertFingerprint, PveClientConfig, TlsTrust};
use crate::infra::secret_file::{self, Origin, SecretFileError};
use felhom_localapi_gateway::Limits;

/// Name of the systemd credential holding the Proxmox VE API token.
pub const PVE_TOKEN_CREDENTIAL: &str = "pve-token";
/// Name of the systemd credential holding the Proxmox Backup Server API token.
pub const PBS_TOKEN_CREDENTIAL: &str = "pbs-token";

/// Environment variable prefix of overrides.
pub const ENV_PREFIX: &str = "FELHOM_AGENT_";

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{key}: is required")]
    Missing { key: String },
    #[error("{key}")]
    Secret {
        key: String,
        #[source]
        source: SecretFileError,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Where environment lookups come from: the process, or a map in tests (so tests never mutate
/// the process environment).
pub trait EnvSource {
    /// Value of a variable, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    proxmox: RawProxmox,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    local_api: RawLocalApi,
    #[serde(default)]
    pbs: RawPbs,
    #[serde(default)]
    backup: RawBackup,
    #[serde(default)]
    snapshots: RawSnapshots,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshots {
    max_per_guest: Option<u64>,
    min_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPbs {
    endpoint: Option<String>,
    datastore: Option<String>,
    namespace: Option<String>,
    token_file: Option<PathBuf>,
    tls_fingerprint: Option<String>,
    ca_file: Option<PathBuf>,
    insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalApi {
    /// Storage id → "fast" | "slow".
    #[serde(default)]
    storage_classes: BTreeMap<String, StorageClass>,
    /// Gateway listen addresses ("10.0.0.1:8443"); empty or absent: the gateway is off.
    #[serde(default)]
    listen: Vec<String>,
    /// Bridges whose addresses `listen` may use (besides loopback); default `vmbr0`.
    bridges: Option<Vec<String>>,
    /// Listen on any address, wildcards included.
    allow_any_address: Option<bool>,
    /// Where the gateway's certificate and key live; default `<state_dir>/local-api`.
    certificate_dir: Option<PathBuf>,
    max_body_bytes: Option<u64>,
    max_connections: Option<u64>,
    max_connections_per_source: Option<u64>,
    rate_per_second: Option<u64>,
    rate_burst: Option<u64>,
    source_rate_per_second: Option<u64>,
    source_rate_burst: Option<u64>,
    audit_budget_per_hour: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxmox {
    endpoint: Option<String>,
    node: Option<String>,
    token_file: Option<PathBuf>,
    tls_fingerprint: Option<String>,
    ca_file: Option<PathBuf>,
    insecure_skip_verify: Option<bool>,
    request_timeout_secs: Option<u64>,
    connect_timeout_secs: Option<u64>,
    task_deadline_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    helper_socket: Option<PathBuf>,
    socket_group: Option<String>,
    local_api_socket: Option<PathBuf>,
    local_api_socket_group: Option<String>,
}

/// Kind of value an overridable key holds, for parsing environment strings.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// A comma-separated list of strings.
    List,
    Int,
    Bool,
}

/// Every key that an environment variable may override: (section, key, kind).
const OVERRIDABLE: &[(&str, &str, Kind)] = &[
    ("proxmox", "endpoint", Kind::Str),
    ("proxmox", "node", Kind::Str),
    ("proxmox", "token_file", Kind::Str),
    ("proxmox", "tls_fingerprint", Kind::Str),
    ("proxmox", "ca_file", Kind::Str),
    ("proxmox", "insecure_skip_verify", Kind::Bool),
    ("proxmox", "request_timeout_secs", Kind::Int),
    ("proxmox", "connect_timeout_secs", Kind::Int),
    ("proxmox", "task_deadline_secs", Kind::Int),
    ("agent", "state_dir", Kind::Str),
    ("agent", "socket", Kind::Str),
    ("agent", "helper_socket", Kind::Str),
    ("agent", "socket_group", Kind::Str),
    ("agent", "local_api_socket", Kind::Str),
    ("agent", "local_api_socket_group", Kind::Str),
    ("local_api", "listen", Kind::List),
    ("local_api", "bridges", Kind::List),
    ("local_api", "allow_any_address", Kind::Bool),
    ("local_api", "certificate_dir", Kind::Str),
    ("local_api", "max_body_bytes", Kind::Int),
    ("local_api", "max_connections", Kind::Int),
    ("local_api", "max_connections_per_source", Kind::Int),
    ("local_api", "rate_per_second", Kind::Int),
    ("local_api", "rate_burst", Kind::Int),
    ("local_api", "source_rate_per_second", Kind::Int),
    ("local_api", "source_rate_burst", Kind::Int),
    ("local_api", "audit_budget_per_hour", Kind::Int),
    ("pbs", "endpoint", Kind::Str),
    ("pbs", "datastore", Kind::Str),
    ("pbs", "namespace", Kind::Str),
    ("pbs", "token_file", Kind::Str),
    ("pbs", "tls_fingerprint", Kind::Str),
    ("pbs", "ca_file", Kind::Str),
    ("pbs", "insecure_skip_verify", Kind::Bool),
    ("backup", "tick_secs", Kind::Int),
    ("backup", "grace_secs", Kind::Int),
    ("backup", "restore_test_settle_secs", Kind::Int),
    ("backup", "task_deadline_secs", Kind::Int),
    ("snapshots", "max_per_guest", Kind::Int),
    ("snapshots", "min_interval_secs", Kind::Int),
];

/// Validated Proxmox VE connection settings (the token already read).
#[derive(Debug, Clone)]
pub struct ProxmoxSettings {
    pub client: PveClientConfig,
    /// Overall deadline when waiting for a task.
    pub task_deadline: Duration,
}

/// Validated agent paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPaths {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub helper_socket: PathBuf,
    /// Group given access to the agent socket; `None` leaves the socket's group as created.
    pub socket_group: Option<String>,
    /// The LocalApi socket (guests' service, called by the local-API gateway only).
    pub local_api_socket: PathBuf,
    /// Group given access to the LocalApi socket (0660) for a gateway run as its own process;
    /// `None`: only the agent user may connect (0600).
    pub local_api_socket_group: Option<String>,
}

/// Validated local-API settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalApiSettings {
    /// Storage id → class, reported to guests by `GET /storage`.
    pub storage_classes: BTreeMap<String, StorageClass>,
    /// Addresses the embedded gateway listens on; empty: the gateway is off.
    pub listen: Vec<SocketAddr>,
    /// Which addresses `listen` may name (checked against the host's interfaces at start).
    pub listen_policy: ListenPolicy,
    /// The gateway's certificate directory (created 0700 by the daemon).
    pub certificate_dir: PathBuf,
    /// The gateway's resource limits: its defaults, with the overridable keys applied.
    pub limits: Limits,
    /// Audit and job rows one guest may cause per rolling hour before its changes are refused.
    pub audit_budget_per_hour: u32,
}

/// Validated Proxmox Backup Server settings (the token already read).
#[derive(Debug, Clone)]
pub struct PbsSettings {
    pub client: PbsClientConfig,
    pub datastore: String,
    /// `None`: the datastore's root namespace.
    pub namespace: Option<String>,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` when no Proxmox endpoint is configured at all (commands that need it say so).
    pub proxmox: Option<ProxmoxSettings>,
    pub agent: AgentPaths,
    pub local_api: LocalApiSettings,
    /// `None` when no `[pbs]` endpoint is configured.
    pub pbs: Option<PbsSettings>,
    pub backup: BackupSettings,
    /// Limits on the snapshots guests ask for.
    pub snapshots: SnapshotLimits,
}

/// Default config file location.
pub fn default_config_path() -> PathBuf {
    PathBuf::from(paths::CONFIG_FILE)
}

impl Config {
    /// Loads `path` (a missing file is an error only if it was named explicitly), applies
    /// environment overrides and validates everything.
    pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let (text, file) = read_config_text(path, env)?;
        Self::from_toml(&text, &file, env)
    }

    /// Parses and validates TOML text (the path is only used in messages).
    pub fn from_toml(text: &str, path: &Path, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let raw = parse_raw(text, path, env)?;
        Self::from_raw(raw, env)
    }

    fn from_raw(raw: RawConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let agent = validate_agent(raw.agent)?;
        let proxmox = validate_proxmox(raw.proxmox, env)?;
        let pbs = validate_pbs(raw.pbs, env, proxmox.as_ref())?;
        let backup = BackupSettings::validate(raw.backup).map_err(|e| ConfigError::Invalid {
            key: e.key,
            message: e.message,
        })?;
        if backup
            .tiers
            .iter()
            .any(|t| t.kind == crate::capabilities::backup::TierKind::Pbs)
            && pbs.is_none()
        {
            tracing::info!(
                "no [pbs] section: PBS tiers back up, but verify and snapshot detail are off"
            );
        }
        Ok(Config {
            proxmox,
            snapshots: validate_snapshots(raw.snapshots)?,
            local_api: validate_local_api(raw.local_api, &agent.state_dir)?,
            agent,
            pbs,
            backup,
        })
    }

    /// Only what root-run maintenance commands (`felhom-agent escrow`) need: the `[backup]`
    /// tiers and the node name. Reads no secret: the token files are the agent user's, and
    /// such a command has no business with them.
    pub fn load_backup_view(
        path: Option<&Path>,
        env: &dyn EnvSource,
    ) -> Result<BackupView, ConfigError> {
        let (text, file) = read_config_text(path, env)?;
        let raw = parse_raw(&text, &file, env)?;
        let backup = BackupSettings::validate(raw.backup).map_err(|e| ConfigError::Invalid {
            key: e.key,
            message: e.message,
        })?;
        Ok(BackupView {
            backup,
            node: raw.proxmox.node,
        })
    }

    /// The Proxmox settings, or an error saying how to configure them.
    pub fn require_proxmox(&self) -> Result<&ProxmoxSettings, ConfigError> {
        self.proxmox.as_ref().ok_or(ConfigError::Missing {
            key: "proxmox.endpoint".into(),
        })
    }
}

/// The `[backup]` section and the node, for commands that must not read the agent's secrets.
#[derive(Debug, Clone)]
pub struct BackupView {
    pub backup: BackupSettings,
    pub node: Option<String>,
}

/// The config file's text (empty when the default file is missing) and its path.
fn read_config_text(
    path: Option<&Path>,
    env: &dyn EnvSource,
) -> Result<(String, PathBuf), ConfigError> {
    let (file, explicit) = match path {
        Some(p) => (p.to_owned(), true),
        None => match env.var("FELHOM_AGENT_CONFIG") {
            Some(p) => (PathBuf::from(p), true),
            None => (default_config_path(), false),
        },
    };
    match std::fs::read_to_string(&file) {
        Ok(t) => Ok((t, file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok((String::new(), file))
        }
        Err(source) => Err(ConfigError::Read { path: file, source }),
    }
}

/// TOML text with the environment overrides applied, as the raw (unvalidated) sections.
fn parse_raw(text: &str, path: &Path, env: &dyn EnvSource) -> Result<RawConfig, ConfigError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })?;
    apply_env(&mut table, env)?;
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
}

fn apply_env(table: &mut toml::Table, env: &dyn EnvSource) -> Result<(), ConfigError> {
    for (section, key, kind) in OVERRIDABLE {
        let var = format!(
            "{ENV_PREFIX}{}_{}",
            section.to_uppercase(),
            key.to_uppercase()
        );
        let Some(raw) = env.var(&var) else { continue };
        let value = match kind {
            Kind::Str => toml::Value::String(raw),
            Kind::List => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| toml::Value::String(item.to_owned()))
                    .collect(),
            ),
            Kind::Int => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|_| invalid(&var, format!("'{raw}' is not a whole number")))?,
            ),
            Kind::Bool => toml::Value::Boolean(match raw.trim() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                other => return Err(invalid(&var, format!("'{other}' is not true or false"))),
            }),
        };
        let sec = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(sec) = sec else {
            return Err(invalid(section, "must be a table"));
        };
        sec.insert(key.to_string(), value);
    }
    Ok(())
}

fn validate_snapshots(raw: RawSnapshots) -> Result<SnapshotLimits, ConfigError> {
    let default = SnapshotLimits::default();
    let max_per_guest = match raw.max_per_guest {
        None => default.max_per_guest,
        Some(n @ 1..=1000) => u32::try_from(n).expect("at most 1000"),
        Some(n) => {
            return Err(invalid(
                "snapshots.max_per_guest",
                format!("{n} is outside 1..=1000"),
            ));
        }
    };
    let min_interval = match raw.min_interval_secs {
        None => default.min_interval,
        Some(n @ 0..=86_400) => Duration::from_secs(n),
        Some(n) => {
            return Err(invalid(
                "snapshots.min_interval_secs",
                format!("{n} is outside 0..=86400 seconds"),
            ));
        }
    };
    Ok(SnapshotLimits {
        max_per_guest,
        min_interval,
    })
}

fn secs(key: &str, v: Option<u64>, default: u64, max: u64) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if v == 0 || v > max {
        return Err(invalid(key, format!("{v} is outside 1..={max} seconds")));
    }
    Ok(Duration::from_secs(v))
}

fn validate_proxmox(
    raw: RawProxmox,
    env: &dyn EnvSource,
) -> Result<Option<ProxmoxSettings>, ConfigError> {
    let Some(endpoint) = raw.endpoint else {
        return Ok(None);
    };
    let (url, trust) = endpoint_and_trust(
        "proxmox",
        &endpoint,
        raw.tls_fingerprint,
        raw.ca_file,
        raw.insecure_skip_verify,
        "https://127.0.0.1:8006",
        "the node's ssl_fingerprint",
    )?;
    let node = raw.node.ok_or(ConfigError::Missing {
        key: "proxmox.node".into(),
    })?;
    if node.is_empty()
        || node.len() > 63
        || !node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(invalid(
            "proxmox.node",
            format!("'{node}' is not a valid node name"),
        ));
    }
    let token = load_token(raw.token_file.as_deref(), env)?;
    Ok(Some(ProxmoxSettings {
        client: PveClientConfig {
            endpoint: url,
            node,
            token,
            trust,
            request_timeout: secs(
                "proxmox.request_timeout_secs",
                raw.request_timeout_secs,
                15,
                600,
            )?,
            connect_timeout: secs(
                "proxmox.connect_timeout_secs",
                raw.connect_timeout_secs,
                5,
                120,
            )?,
        },
        task_deadline: secs(
            "proxmox.task_deadline_secs",
            raw.task_deadline_secs,
            1800,
            86_400,
        )?,
    }))
}

/// `<section>.endpoint` as an https URL with only scheme/host/port, and its TLS trust (exactly
/// one of fingerprint, CA file, or the loopback-only insecure switch).
fn endpoint_and_trust(
    section: &str,
    endpoint: &str,
    tls_fingerprint: Option<String>,
    ca_file: Option<PathBuf>,
    insecure_skip_verify: Option<bool>,
    example: &str,
    fingerprint_hint: &str,
) -> Result<(Url, TlsTrust), ConfigError> {
    let key = |k: &str| format!("{section}.{k}");
    let url = Url::parse(endpoint)
        .map_err(|e| invalid(&key("endpoint"), format!("'{endpoint}' is not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(invalid(
            &key("endpoint"),
            format!("'{endpoint}' must use https"),
        ));
    }
    if url.host_str().is_none() {
        return Err(invalid(
            &key("endpoint"),
            format!("'{endpoint}' has no host"),
        ));
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(invalid(
            &key("endpoint"),
            format!("give only scheme, host and port, e.g. {example}"),
        ));
    }
    let trust = match (
        tls_fingerprint,
        ca_file,
        insecure_skip_verify.unwrap_or(false),
    ) {
        (Some(fp), None, false) => TlsTrust::Pinned(
            CertFingerprint::parse(&fp)
                .map_err(|e| invalid(&key("tls_fingerprint"), e.to_string()))?,
        ),
        (None, Some(ca), false) => TlsTrust::CaFile(ca),
        (None, None, true) => TlsTrust::InsecureSkipVerify,
        (None, None, false) => {
            return Err(invalid(
                &key("tls_fingerprint"),
                format!(
                    "set one of tls_fingerprint ({fingerprint_hint}), ca_file, or insecure_skip_verify (loopback only)"
                ),
            ));
        }
        _ => {
            return Err(invalid(
                &key("tls_fingerprint"),
                "tls_fingerprint, ca_file and insecure_skip_verify exclude each other; set exactly one",
            ));
        }
    };
    if trust == TlsTrust::InsecureSkipVerify {
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(invalid(
                &key("insecure_skip_verify"),
                format!("allowed only for loopback endpoints, not '{host}'"),
            ));
        }
    }
    Ok((url, trust))
}

fn validate_pbs(
    raw: RawPbs,
    env: &dyn EnvSource,
    proxmox: Option<&ProxmoxSettings>,
) -> Result<Option<PbsSettings>, ConfigError> {
    let Some(endpoint) = raw.endpoint else {
        return Ok(None);
    };
    let (url, trust) = endpoint_and_trust(
        "pbs",
        &endpoint,
        raw.tls_fingerprint,
        raw.ca_file,
        raw.insecure_skip_verify,
        "https://pbs.example:8007",
        "proxmox-backup-manager cert info",
    )?;
    let datastore = raw.datastore.ok_or(ConfigError::Missing {
        key: "pbs.datastore".into(),
    })?;
    crate::infra::pbs::validate_datastore(&datastore)
        .map_err(|e| invalid("pbs.datastore", e.to_string()))?;
    let namespace = match raw.namespace {
        Some(ns) if ns.is_empty() => None,
        Some(ns) => {
            crate::infra::pbs::validate_namespace(&ns)
                .map_err(|e| invalid("pbs.namespace", e.to_string()))?;
            Some(ns)
        }
        None => None,
    };
    let (key, text) = read_secret(
        "pbs.token_file",
        raw.token_file.as_deref(),
        PBS_TOKEN_CREDENTIAL,
        env,
    )?;
    let token = PbsToken::parse(&text).map_err(|e| invalid(&key, e.to_string()))?;
    // Timeouts follow [proxmox]: both are the host's own management APIs.
    let (request_timeout, connect_timeout) = proxmox
        .map_or((Duration::from_secs(15), Duration::from_secs(5)), |p| {
            (p.client.request_timeout, p.client.connect_timeout)
        });
    Ok(Some(PbsSettings {
        client: PbsClientConfig {
            endpoint: url,
            token,
            trust,
            request_timeout,
            connect_timeout,
        },
        datastore,
        namespace,
    }))
}

/// Reads a secret from `file` (the key `file_key`) or else the systemd credential `credential`;
/// answers which of the two it was (for messages) and the text.
fn read_secret(
    file_key: &'static str,
    file: Option<&Path>,
    credential: &'static str,
    env: &dyn EnvSource,
) -> Result<(String, String), ConfigError> {
    let (key, path) = match (file, env.var("CREDENTIALS_DIRECTORY")) {
        (Some(p), _) => (file_key.to_owned(), p.to_owned()),
        (None, Some(dir)) => (
            format!("credential {credential}"),
            Path::new(&dir).join(credential),
        ),
        (None, None) => {
            return Err(ConfigError::Missing {
                key: format!("{file_key} (or the systemd credential '{credential}')"),
            });
        }
    };
    let origin = match file {
        Some(_) => Origin::File,
        None => Origin::Credential,
    };
    let text = secret_file::read(&path, origin).map_err(|source| ConfigError::Secret {
        key: key.clone(),
        source,
    })?;
    Ok((key, text))
}

fn load_token(file: Option<&Path>, env: &dyn EnvSource) -> Result<ApiToken, ConfigError> {
    let (key, text) = read_secret("proxmox.token_file", file, PVE_TOKEN_CREDENTIAL, env)?;
    ApiToken::parse(&text).map_err(|e| invalid(&key, e.to_string()))
}

/// Directory under the agent's state directory that holds the gateway certificate by default.
pub const LOCAL_API_CERT_SUBDIR: &str = "local-api";

fn validate_local_api(raw: RawLocalApi, state_dir: &Path) -> Result<LocalApiSettings, ConfigError> {
    let mut listen: Vec<SocketAddr> = Vec::with_capacity(raw.listen.len());
    for item in &raw.listen {
        let addr: SocketAddr = item.trim().parse().map_err(|_| {
            invalid(
                "local_api.listen",
                format!("'{item}' is not an IP address with a port (like \"10.0.0.1:8443\")"),
            )
        })?;
        if listen.contains(&addr) {
            return Err(invalid(
                "local_api.listen",
                format!("'{item}' is listed twice"),
            ));
        }
        listen.push(addr);
    }
    let bridges = raw
        .bridges
        .unwrap_or_else(|| vec![listen_policy::DEFAULT_BRIDGE.to_owned()]);
    for bridge in &bridges {
        // Linux interface names: 1..=15 bytes, no '/', no whitespace.
        let ok = !bridge.is_empty()
            && bridge.len() <= 15
            && !bridge.contains('/')
            && !bridge.chars().any(char::is_whitespace);
        if !ok {
            return Err(invalid(
                "local_api.bridges",
                format!(
                    "'{bridge}' is not an interface name (1 to 15 characters, no '/' or spaces)"
                ),
            ));
        }
    }
    let listen_policy = ListenPolicy {
        bridges,
        allow_any_address: raw.allow_any_address.unwrap_or(false),
    };
    let certificate_dir = match raw.certificate_dir {
        Some(p) if p.is_absolute() => p,
        Some(p) => {
            return Err(invalid(
                "local_api.certificate_dir",
                format!("'{}' must be an absolute path", p.display()),
            ));
        }
        None => state_dir.join(LOCAL_API_CERT_SUBDIR),
    };
    let defaults = Limits::default();
    let limits = Limits {
        max_body_bytes: limit(
            "local_api.max_body_bytes",
            raw.max_body_bytes,
            defaults.max_body_bytes,
            MAX_BODY_LIMIT,
        )?,
        max_connections: limit(
            "local_api.max_connections",
            raw.max_connections,
            defaults.max_connections,
            MAX_CONNECTIONS_LIMIT,
        )?,
        rate_per_second: limit(
            "local_api.rate_per_second",
            raw.rate_per_second,
            defaults.rate_per_second,
            MAX_RATE_LIMIT,
        )?,
        rate_burst: limit(
            "local_api.rate_burst",
            raw.rate_burst,
            defaults.rate_burst,
            MAX_RATE_LIMIT,
        )?,
        max_connections_per_source: limit(
            "local_api.max_connections_per_source",
            raw.max_connections_per_source,
            defaults.max_connections_per_source,
            MAX_CONNECTIONS_LIMIT,
        )?,
        source_rate_per_second: limit(
            "local_api.source_rate_per_second",
            raw.source_rate_per_second,
            defaults.source_rate_per_second,
            MAX_RATE_LIMIT,
        )?,
        source_rate_burst: limit(
            "local_api.source_rate_burst",
            raw.source_rate_burst,
            defaults.source_rate_burst,
            MAX_RATE_LIMIT,
        )?,
        ..defaults
    };
    let audit_budget_per_hour = limit(
        "local_api.audit_budget_per_hour",
        raw.audit_budget_per_hour,
        crate::capabilities::records::guest_ledger::DEFAULT_BUDGET_PER_HOUR,
        MAX_RATE_LIMIT,
    )?;
    Ok(LocalApiSettings {
        storage_classes: raw.storage_classes,
        listen,
        listen_policy,
        certificate_dir,
        limits,
        audit_budget_per_hour,
    })
}

/// Largest `local_api.max_body_bytes` (the client reads at most 1 MiB anyway; bodies are tiny).
const MAX_BODY_LIMIT: u64 = 1024 * 1024;
/// Largest `local_api.max_connections`.
const MAX_CONNECTIONS_LIMIT: u64 = 65_536;
/// Largest `local_api.rate_per_second` and `local_api.rate_burst`.
const MAX_RATE_LIMIT: u64 = 1_000_000;

/// A gateway limit: `default` when unset, else 1..=`max`.
fn limit<T: TryFrom<u64>>(
    key: &str,
    v: Option<u64>,
    default: T,
    max: u64,
) -> Result<T, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => {
            T::try_from(n).map_err(|_| invalid(key, format!("{n} is too large")))
        }
        Some(n) => Err(invalid(key, format!("{n} is out of range (1 to {max})"))),
    }
}

fn validate_agent(raw: RawAgent) -> Result<AgentPaths, ConfigError> {
    let abs = |key: &str, p: Option<PathBuf>, default: &str| -> Result<PathBuf, ConfigError> {
        let p = p.unwrap_or_else(|| PathBuf::from(default));
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(invalid(
                key,
                format!("'{}' must be an absolute path", p.display()),
            ))
        }
    };
    let socket = abs("agent.socket", raw.socket, paths::AGENT_SOCKET)?;
    // Beside agent.sock unless set: one runtime directory holds both.
    let local_api_default = socket
        .parent()
        .map(|d| d.join("localapi.sock"))
        .unwrap_or_else(|| PathBuf::from(paths::LOCAL_API_SOCKET));
    let local_api_socket = match raw.local_api_socket {
        Some(p) => abs("agent.local_api_socket", Some(p), paths::LOCAL_API_SOCKET)?,
        None => local_api_default,
    };
    if local_api_socket == socket {
        return Err(invalid(
            "agent.local_api_socket",
            format!(
                "'{}' is the operators' agent.socket; the guests' service needs a socket of its own",
                local_api_socket.display()
            ),
        ));
    }
    Ok(AgentPaths {
        state_dir: abs("agent.state_dir", raw.state_dir, paths::STATE_DIR)?,
        local_api_socket,
        socket,
        helper_socket: abs(
            "agent.helper_socket",
            raw.helper_socket,
            paths::HELPER_SOCKET,
        )?,
        // An empty name means "leave the group alone" (development setups without the group).
        socket_group: match raw.socket_group {
            None => Some(paths::OPS_GROUP.to_owned()),
            Some(g) if g.is_empty() => None,
            Some(g) => Some(g),
        },
        local_api_socket_group: raw.local_api_socket_group.filter(|g| !g.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0b1f2e3d-4c5b-6a79-8877-665544332211";
    const FP: &str = "CC:7B:03:DC:0F:FA:AC:94:C8:79:35:50:03:3F:FC:CF:CB:2B:49:AE:A7:8A:7D:7C:C7:49:80:9E:3D:EB:92:BC";

    struct Fixture {
        dir: tempfile::TempDir,
    }

    /// Writes a secret file as the agent expects it: 0600, owned by this process.
    fn write_secret(path: impl AsRef<Path>, text: impl AsRef<[u8]>) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            write_secret(
                dir.path().join("token"),
                format!("felhom-agent@pve!agent={SECRET}\n"),
            );
            Self { dir }
        }
        fn token_path(&self) -> String {
            self.dir.path().join("token").display().to_string()
        }
        fn toml(&self, extra: &str) -> String {
            format!(
                "[proxmox]\nendpoint = \"https://192.0.2.10:8006\"\nnode = \"pve1\"\ntoken_file = \"{}\"\n{extra}",
                self.token_path()
            )
        }
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml(text, Path::new("/etc/felhom/agent.toml"), &env)
    }

    /// The example config with its `[pbs]` and `[backup]` examples uncommented (token and key
    /// paths pointed at the fixture), so the shipped example stays loadable.
    fn example_uncommented(f: &Fixture) -> String {
        let example = include_str!("../../../packaging/agent.example.toml");
        let mut out = String::new();
        let mut in_backup = false;
        for line in example.lines() {
            if line.starts_with('[') {
                in_backup = line.starts_with("[pbs]") || line.starts_with("[backup]");
            }
            let live = match line.strip_prefix("# ") {
                Some(rest)
                    if in_backup
                        && (rest.starts_with("[[")
                            || rest
                                .split_once(" = ")
                                .is_some_and(|(k, _)| !k.contains(' ') && !k.starts_with('`'))) =>
                {
                    rest
                }
                _ => line,
            };
            out.push_str(live);
            out.push('\n');
        }
        out.replace("/etc/felhom/pve-token", &f.token_path())
            .replace(
                "/etc/felhom/pbs-token",
                &f.dir.path().join("pbs-token").display().to_string(),
            )
            .replace(
                "tls_fingerprint = \"AA:BB:…\"",
                &format!("tls_fingerprint = \"{FP}\""),
            )
            .replace("# token_file = ", "token_file = ")
    }

    #[test]
    fn the_shipped_example_loads_with_its_backup_sections_enabled() {
        let f = Fixture::new();
        write_secret(
            f.dir.path().join("pbs-token"),
            format!("felhom-agent@pbs!agent:{SECRET}\n"),
        );
        let cfg = load(&example_uncommented(&f), &[]).unwrap();
        let pbs = cfg.pbs.expect("[pbs] configured");
        assert_eq!(pbs.datastore, "felhom");
        assert_eq!(pbs.client.token.authid(), "felhom-agent@pbs!agent");
        assert_eq!(cfg.backup.tiers.len(), 2);
        assert_eq!(cfg.backup.policies.len(), 4);
        assert_eq!(cfg.backup.grace, Duration::from_secs(3600));
    }

    #[test]
    fn a_pbs_section_without_datastore_names_the_key() {
        let f = Fixture::new();
        let err = load(
            &f.toml(&format!(
                "tls_fingerprint = \"{FP}\"\n[pbs]\nendpoint = \"https://192.0.2.20:8007\"\ntls_fingerprint = \"{FP}\"\n"
            )),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "pbs.datastore: is required");
    }

    #[test]
    fn a_backup_policy_error_names_its_key() {
        let f = Fixture::new();
        let err = load(
            &f.toml(&format!(
                "tls_fingerprint = \"{FP}\"\n[[backup.tiers]]\nname = \"local\"\nstorage = \"local\"\nkind = \"local\"\n\
                 [[backup.policies]]\nvmids = [101]\ntier = \"local\"\nschedule = \"daily\"\nmode = \"fast\"\n"
            )),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "backup.policies[0].mode: 'fast' is not snapshot, suspend or stop"
        );
    }

    #[test]
    fn a_complete_file_loads_with_defaults() {
        let f = Fixture::new();
        let cfg = load(&f.toml(&format!("tls_fingerprint = \"{FP}\"")), &[]).unwrap();
        let px = cfg.proxmox.unwrap();
        assert_eq!(px.client.node, "pve1");
        assert_eq!(px.client.token.authid(), "felhom-agent@pve!agent");
        assert_eq!(
            px.client.trust,
            TlsTrust::Pinned(CertFingerprint::parse(FP).unwrap())
        );
        assert_eq!(px.client.request_timeout, Duration::from_secs(15));
        assert_eq!(cfg.agent.socket, PathBuf::from("/run/felhom/agent.sock"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = Fixture::new();
        let cfg = load(
            &f.toml(&format!("tls_fingerprint = \"{FP}\"")),
            &[
                ("FELHOM_AGENT_PROXMOX_NODE", "pve2"),
                ("FELHOM_AGENT_PROXMOX_REQUEST_TIMEOUT_SECS", "7"),
            ],
        )
        .unwrap();
        let px = cfg.proxmox.unwrap();
        assert_eq!(px.client.node, "pve2");
        assert_eq!(px.client.request_timeout, Duration::from_secs(7));
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let f = Fixture::new();
        let err = load(
            &f.toml(""),
            &[("FELHOM_AGENT_PROXMOX_REQUEST_TIMEOUT_SECS", "soon")],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "FELHOM_AGENT_PROXMOX_REQUEST_TIMEOUT_SECS: 'soon' is not a whole number"
        );
    }

    #[test]
    fn the_token_comes_from_the_systemd_credential() {
        let f = Fixture::new();
        write_secret(
            f.dir.path().join("pve-token"),
            format!("felhom-agent@pve!agent={SECRET}"),
        );
        let text = "[proxmox]\nendpoint = \"https://127.0.0.1:8006\"\nnode = \"pve1\"\ninsecure_skip_verify = true\n";
        let dir = f.dir.path().display().to_string();
        let cfg = load(text, &[("CREDENTIALS_DIRECTORY", &dir)]).unwrap();
        assert_eq!(
            cfg.proxmox.unwrap().client.token.authid(),
            "felhom-agent@pve!agent"
        );
    }

    #[test]
    fn no_token_source_is_a_clear_error() {
        let text = format!(
            "[proxmox]\nendpoint = \"https://127.0.0.1:8006\"\nnode = \"pve1\"\ntls_fingerprint = \"{FP}\"\n"
        );
        let err = load(&text, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "proxmox.token_file (or the systemd credential 'pve-token'): is required"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = Fixture::new();
        let err = load(&f.toml("tls_fingerprnt = \"x\""), &[]).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `tls_fingerprnt`"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_name_their_key() {
        let f = Fixture::new();
        let cases = [
            (
                f.toml(&format!("tls_fingerprint = \"{FP}\""))
                    .replace("https://", "http://"),
                "proxmox.endpoint: 'http://192.0.2.10:8006' must use https",
            ),
            (
                f.toml("tls_fingerprint = \"AB:CD\""),
                "proxmox.tls_fingerprint: fingerprint must be 64 hex digits (colons and either case allowed), got 4 hex digits",
            ),
            (
                f.toml(""),
                "proxmox.tls_fingerprint: set one of tls_fingerprint (the node's ssl_fingerprint), ca_file, or insecure_skip_verify (loopback only)",
            ),
            (
                f.toml(&format!("tls_fingerprint = \"{FP}\"\nca_file = \"/x\"")),
                "proxmox.tls_fingerprint: tls_fingerprint, ca_file and insecure_skip_verify exclude each other; set exactly one",
            ),
            (
                f.toml("insecure_skip_verify = true"),
                "proxmox.insecure_skip_verify: allowed only for loopback endpoints, not '192.0.2.10'",
            ),
            (
                f.toml(&format!(
                    "tls_fingerprint = \"{FP}\"\nrequest_timeout_secs = 0"
                )),
                "proxmox.request_timeout_secs: 0 is outside 1..=600 seconds",
            ),
            (
                f.toml(&format!("tls_fingerprint = \"{FP}\""))
                    .replace("pve1", "pve 1"),
                "proxmox.node: 'pve 1' is not a valid node name",
            ),
            (
                format!(
                    "{}\n[agent]\nsocket = \"agent.sock\"",
                    f.toml(&format!("tls_fingerprint = \"{FP}\""))
                ),
                "agent.socket: 'agent.sock' must be an absolute path",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(load(&text, &[]).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn a_group_readable_token_file_is_refused_naming_file_and_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let f = Fixture::new();
        let path = f.dir.path().join("token");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load(&f.toml(&format!("tls_fingerprint = \"{FP}\"")), &[]).unwrap_err();
        assert_eq!(
            format!(
                "{err}: {}",
                std::error::Error::source(&err).expect("the file's problem")
            ),
            format!(
                "proxmox.token_file: secret file {} is readable or writable by group or others (mode 0640); make it 0600 or 0400",
                path.display()
            )
        );
    }

    #[test]
    fn a_malformed_token_file_is_reported_without_the_secret() {
        let f = Fixture::new();
        write_secret(
            f.dir.path().join("token"),
            format!("felhom-agent@pve={SECRET}"),
        );
        let err = load(&f.toml(&format!("tls_fingerprint = \"{FP}\"")), &[]).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains(SECRET), "{text}");
        assert_eq!(
            text,
            "proxmox.token_file: API token authid 'felhom-agent@pve' is not of the form 'user@realm!tokenid'"
        );
    }

    #[test]
    fn no_endpoint_means_proxmox_is_unconfigured() {
        let cfg = load("", &[]).unwrap();
        assert!(cfg.proxmox.is_none());
        assert_eq!(
            cfg.require_proxmox().unwrap_err().to_string(),
            "proxmox.endpoint: is required"
        );
    }

    #[test]
    fn the_local_api_gateway_is_off_by_default() {
        let cfg = load("", &[]).unwrap();
        assert!(cfg.local_api.listen.is_empty());
        assert_eq!(
            cfg.local_api.certificate_dir,
            PathBuf::from(paths::STATE_DIR).join("local-api")
        );
    }

    #[test]
    fn local_api_listen_and_certificate_dir_load_from_the_file() {
        let cfg = load(
            "[agent]\nstate_dir = \"/srv/agent\"\n[local_api]\nlisten = [\"10.0.0.1:8443\", \"[fd00::1]:8443\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            cfg.local_api.listen,
            vec![
                "10.0.0.1:8443".parse::<SocketAddr>().unwrap(),
                "[fd00::1]:8443".parse().unwrap()
            ]
        );
        assert_eq!(
            cfg.local_api.certificate_dir,
            PathBuf::from("/srv/agent/local-api")
        );
    }

    #[test]
    fn local_api_listen_is_overridden_by_a_comma_separated_variable() {
        let cfg = load(
            "[local_api]\nlisten = [\"10.0.0.1:8443\"]\n",
            &[
                (
                    "FELHOM_AGENT_LOCAL_API_LISTEN",
                    "127.0.0.1:9443, 127.0.0.2:9443",
                ),
                ("FELHOM_AGENT_LOCAL_API_CERTIFICATE_DIR", "/srv/certs"),
            ],
        )
        .unwrap();
        assert_eq!(
            cfg.local_api.listen,
            vec![
                "127.0.0.1:9443".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:9443".parse().unwrap()
            ]
        );
        assert_eq!(cfg.local_api.certificate_dir, PathBuf::from("/srv/certs"));
    }

    #[test]
    fn an_empty_listen_variable_turns_the_gateway_off() {
        let cfg = load(
            "[local_api]\nlisten = [\"10.0.0.1:8443\"]\n",
            &[("FELHOM_AGENT_LOCAL_API_LISTEN", "")],
        )
        .unwrap();
        assert!(cfg.local_api.listen.is_empty());
    }

    #[test]
    fn a_listen_address_without_port_is_named() {
        let err = load("[local_api]\nlisten = [\"10.0.0.1\"]\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "local_api.listen: '10.0.0.1' is not an IP address with a port (like \"10.0.0.1:8443\")"
        );
    }

    #[test]
    fn a_repeated_listen_address_is_named() {
        let err = load(
            "[local_api]\nlisten = [\"10.0.0.1:8443\", \"10.0.0.1:8443\"]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "local_api.listen: '10.0.0.1:8443' is listed twice"
        );
    }

    #[test]
    fn a_relative_certificate_dir_is_named() {
        let err = load("[local_api]\ncertificate_dir = \"certs\"\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "local_api.certificate_dir: 'certs' must be an absolute path"
        );
    }

    #[test]
    fn gateway_limits_keep_their_defaults_unless_set() {
        let cfg = load("", &[]).unwrap();
        assert_eq!(cfg.local_api.limits, Limits::default());
        let cfg = load(
            "[local_api]\nrate_per_second = 100\nmax_connections = 16\n",
            &[("FELHOM_AGENT_LOCAL_API_RATE_BURST", "200")],
        )
        .unwrap();
        assert_eq!(
            cfg.local_api.limits,
            Limits {
                rate_per_second: 100,
                rate_burst: 200,
                max_connections: 16,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn per_source_limits_and_the_guest_row_budget_are_read() {
        let cfg = load(
            "[local_api]\nmax_connections_per_source = 4\nsource_rate_per_second = 7\n\
             source_rate_burst = 9\naudit_budget_per_hour = 50\n",
            &[],
        )
        .unwrap();
        let l = &cfg.local_api.limits;
        assert_eq!(
            (
                l.max_connections_per_source,
                l.source_rate_per_second,
                l.source_rate_burst
            ),
            (4, 7, 9)
        );
        assert_eq!(cfg.local_api.audit_budget_per_hour, 50);
        let default = load("", &[]).unwrap();
        assert_eq!(default.local_api.audit_budget_per_hour, 240);
    }

    #[test]
    fn a_zero_gateway_limit_is_named() {
        let err = load("[local_api]\nrate_burst = 0\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "local_api.rate_burst: 0 is out of range (1 to 1000000)"
        );
    }
}
