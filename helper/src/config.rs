//! Command-line configuration of felhom-helper, with the production defaults as constants.
//!
//! There is deliberately no config file: the helper's whole configuration fits on the
//! `ExecStart=` line of its systemd unit (packaging/felhom-helper.service), where an operator
//! reviewing the unit sees it at once. Every program path must be absolute; the helper
//! refuses to start otherwise. The agent user and socket group are given by name (resolved
//! once at start) or number.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/felhom-helper/helper.sock";
/// Default mount prefix.
pub const DEFAULT_MOUNT_PREFIX: &str = "/mnt/felhom";
/// Default state directory (protected from mounts; holds nothing secret).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/felhom-helper";
/// Default agent user (created by the package's sysusers.d entry).
pub const DEFAULT_AGENT_USER: &str = "felhom-agent";
/// Default socket group: the agent user's own group.
pub const DEFAULT_SOCKET_GROUP: &str = "felhom-agent";
/// Default pct path (Proxmox VE).
pub const DEFAULT_PCT: &str = "/usr/sbin/pct";
/// Default smartctl path (smartmontools).
pub const DEFAULT_SMARTCTL: &str = "/usr/sbin/smartctl";
/// Default sensors path (lm-sensors).
pub const DEFAULT_SENSORS: &str = "/usr/bin/sensors";
/// Where the kernel lists block devices (scanned when udev's by-uuid link is absent).
pub const SYS_BLOCK_DIR: &str = "/sys/class/block";
/// Default blkid path (util-linux).
pub const DEFAULT_BLKID: &str = "/usr/sbin/blkid";

/// Invalid configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A path option is not absolute.
    #[error("--{option} must be an absolute path, got {path}")]
    NotAbsolute {
        /// Option name.
        option: &'static str,
        /// Value given.
        path: PathBuf,
    },
    /// A user or group name does not exist on this host.
    #[error("No {kind} named {name} on this host")]
    UnknownName {
        /// "user" or "group".
        kind: &'static str,
        /// The name given.
        name: String,
    },
    /// The user or group database could not be read.
    #[error("Cannot look up {kind} {name}")]
    Lookup {
        /// "user" or "group".
        kind: &'static str,
        /// The name given.
        name: String,
        /// Cause.
        #[source]
        source: nix::errno::Errno,
    },
    /// The golden vmid range is empty or outside what Proxmox allows.
    #[error("Golden vmid range {0}..={1} must be non-empty and within 100..=999999999")]
    VmidRange(u32, u32),
}

/// felhom-helper: the root helper of the felhom host agent.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Unix socket to serve on.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Group that owns the socket (mode 0660), by name or number; normally the agent's group.
    #[arg(long, default_value = DEFAULT_SOCKET_GROUP)]
    pub socket_group: String,
    /// The felhom-agent user, by name or number: the only non-root caller allowed.
    #[arg(long, default_value = DEFAULT_AGENT_USER)]
    pub agent_user: String,
    /// Append one audit line per call to this file (in addition to the log).
    #[arg(long)]
    pub audit_file: Option<PathBuf>,
    /// Helper state directory; its device can never be mounted by the helper.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Mount points must lie below this directory.
    #[arg(long, default_value = DEFAULT_MOUNT_PREFIX)]
    pub mount_prefix: PathBuf,
    /// udev's by-uuid directory.
    #[arg(long, default_value = "/dev/disk/by-uuid")]
    pub by_uuid_dir: PathBuf,
    /// Kernel mount table.
    #[arg(long, default_value = "/proc/thread-self/mountinfo")]
    pub mountinfo: PathBuf,
    /// Mount namespace that mounts, unmounts and pct run in (the host's: PID 1's).
    #[arg(long, default_value = "/proc/1/ns/mnt")]
    pub host_mount_ns: PathBuf,
    /// Lowest vmid golden create may use.
    #[arg(long, default_value_t = 9000)]
    pub golden_vmid_min: u32,
    /// Highest vmid golden create may use.
    #[arg(long, default_value_t = 9099)]
    pub golden_vmid_max: u32,
    /// pct program.
    #[arg(long, default_value = DEFAULT_PCT)]
    pub pct: PathBuf,
    /// smartctl program.
    #[arg(long, default_value = DEFAULT_SMARTCTL)]
    pub smartctl: PathBuf,
    /// sensors program.
    #[arg(long, default_value = DEFAULT_SENSORS)]
    pub sensors: PathBuf,
    /// blkid program.
    #[arg(long, default_value = DEFAULT_BLKID)]
    pub blkid: PathBuf,
    /// Timeout of one golden create, seconds.
    #[arg(long, default_value_t = 900)]
    pub pct_timeout_secs: u64,
    /// Timeout of one smartctl / sensors / blkid call, seconds.
    #[arg(long, default_value_t = 60)]
    pub read_timeout_secs: u64,
    /// SIMULATED HOST ONLY: run without root, keep all capabilities untouched, skip socket
    /// chown. Never use on a real host.
    #[arg(long)]
    pub unprivileged_dev: bool,
}

/// Checked configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Socket path.
    pub socket: PathBuf,
    /// Socket group.
    pub socket_gid: u32,
    /// Allowed non-root caller.
    pub agent_uid: u32,
    /// Optional audit file.
    pub audit_file: Option<PathBuf>,
    /// State dir.
    pub state_dir: PathBuf,
    /// Mount prefix.
    pub mount_prefix: PathBuf,
    /// by-uuid dir.
    pub by_uuid_dir: PathBuf,
    /// Mount table (read on the host-namespace thread, hence thread-self by default).
    pub mountinfo: PathBuf,
    /// Host mount namespace file (see [`crate::hostns`]).
    pub host_mount_ns: PathBuf,
    /// Golden vmid range.
    pub golden_vmids: RangeInclusive<u32>,
    /// pct.
    pub pct: PathBuf,
    /// smartctl.
    pub smartctl: PathBuf,
    /// sensors.
    pub sensors: PathBuf,
    /// blkid.
    pub blkid: PathBuf,
    /// Golden create timeout.
    pub pct_timeout: Duration,
    /// Hardware read timeout.
    pub read_timeout: Duration,
    /// Simulated-host mode.
    pub unprivileged_dev: bool,
}

/// A number is taken as is; anything else is looked up by name (getpwnam/getgrnam).
fn resolve(
    kind: &'static str,
    value: &str,
    lookup: impl FnOnce(&str) -> nix::Result<Option<u32>>,
) -> Result<u32, ConfigError> {
    if let Ok(id) = value.parse::<u32>() {
        return Ok(id);
    }
    match lookup(value) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(ConfigError::UnknownName {
            kind,
            name: value.to_owned(),
        }),
        Err(source) => Err(ConfigError::Lookup {
            kind,
            name: value.to_owned(),
            source,
        }),
    }
}

impl Cli {
    /// Checks the options and turns them into a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let paths: [(&'static str, &PathBuf); 11] = [
            ("socket", &self.socket),
            ("state-dir", &self.state_dir),
            ("mount-prefix", &self.mount_prefix),
            ("by-uuid-dir", &self.by_uuid_dir),
            ("mountinfo", &self.mountinfo),
            ("host-mount-ns", &self.host_mount_ns),
            ("pct", &self.pct),
            ("smartctl", &self.smartctl),
            ("sensors", &self.sensors),
            ("blkid", &self.blkid),
            (
                "audit-file",
                self.audit_file.as_ref().unwrap_or(&self.socket),
            ),
        ];
        for (option, path) in paths {
            if !path.is_absolute() {
                return Err(ConfigError::NotAbsolute {
                    option,
                    path: path.clone(),
                });
            }
        }
        let (lo, hi) = (self.golden_vmid_min, self.golden_vmid_max);
        if lo > hi || lo < 100 || hi > 999_999_999 {
            return Err(ConfigError::VmidRange(lo, hi));
        }
        let agent_uid = resolve("user", &self.agent_user, |n| {
            nix::unistd::User::from_name(n).map(|u| u.map(|u| u.uid.as_raw()))
        })?;
        let socket_gid = resolve("group", &self.socket_group, |n| {
            nix::unistd::Group::from_name(n).map(|g| g.map(|g| g.gid.as_raw()))
        })?;
        Ok(Config {
            socket: self.socket,
            socket_gid,
            agent_uid,
            audit_file: self.audit_file,
            state_dir: self.state_dir,
            mount_prefix: self.mount_prefix,
            by_uuid_dir: self.by_uuid_dir,
            mountinfo: self.mountinfo,
            host_mount_ns: self.host_mount_ns,
            golden_vmids: lo..=hi,
            pct: self.pct,
            smartctl: self.smartctl,
            sensors: self.sensors,
            blkid: self.blkid,
            pct_timeout: Duration::from_secs(self.pct_timeout_secs),
            read_timeout: Duration::from_secs(self.read_timeout_secs),
            unprivileged_dev: self.unprivileged_dev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_are_taken_as_given_and_names_are_looked_up() {
        let cli = Cli::parse_from([
            "felhom-helper",
            "--agent-user",
            "4242",
            "--socket-group",
            "root",
        ]);
        let cfg = cli.into_config().expect("valid configuration");
        assert_eq!(cfg.agent_uid, 4242);
        assert_eq!(cfg.socket_gid, 0);
    }

    #[test]
    fn unknown_user_is_refused_by_name() {
        let cli = Cli::parse_from(["felhom-helper", "--agent-user", "no-such-felhom-user"]);
        let err = cli.into_config().expect_err("unknown user");
        assert_eq!(
            err.to_string(),
            "No user named no-such-felhom-user on this host"
        );
    }

    #[test]
    fn relative_program_path_is_refused() {
        let cli = Cli::parse_from([
            "felhom-helper",
            "--agent-user",
            "1",
            "--socket-group",
            "0",
            "--pct",
            "pct",
        ]);
        let err = cli.into_config().expect_err("relative path");
        assert_eq!(err.to_string(), "--pct must be an absolute path, got pct");
    }
}
