//! The `[backup]` configuration: tiers (where backups go), policies (which guest goes to which
//! tier, when, in which mode, kept how long) and the restore-test scratch settings.
//!
//! Validated once at load, every error naming its key (`backup.policies[0].schedule: …`).
//! A tier is a Proxmox VE storage holding backups: `local` (vzdump archives on a dir/NFS/…
//! storage) or `pbs` (a storage of type pbs). A tier marked `encrypted` is checked before every
//! backup by the key's *fingerprint* only — the agent never reads the key: the storage's
//! `encryption-key` (storage.cfg) must name one, and `encryption_key_fingerprint`, when set,
//! pins which; after the backup PBS must show the snapshot encrypted with that key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::schedule::Schedule;
use crate::capabilities::escrow::KeyFingerprint;
use crate::infra::pve::{BackupMode, validate_storage_id};

/// A configuration problem: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackup {
    tick_secs: Option<u64>,
    grace_secs: Option<u64>,
    scratch_vmid_first: Option<u32>,
    scratch_vmid_last: Option<u32>,
    scratch_storage: Option<String>,
    restore_test_settle_secs: Option<u64>,
    task_deadline_secs: Option<u64>,
    #[serde(default)]
    tiers: Vec<RawTier>,
    #[serde(default)]
    policies: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    name: String,
    storage: String,
    kind: TierKind,
    #[serde(default)]
    encrypted: bool,
    encryption_key_fingerprint: Option<String>,
    /// Read only to say it is gone (the agent no longer holds a copy of the key).
    encryption_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    vmids: Vec<u32>,
    tier: String,
    schedule: String,
    mode: Option<String>,
    keep_last: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    restore_test: Option<String>,
    probe_interface: Option<String>,
}

/// Where a tier's backups live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierKind {
    /// vzdump archives on a Proxmox VE storage (dir, NFS, CIFS, …) — fast to restore from.
    Local,
    /// A Proxmox VE storage of type `pbs`.
    Pbs,
}

impl TierKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Pbs => "pbs",
        }
    }
}

/// A backup destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    /// Proxmox VE storage id.
    pub storage: String,
    pub kind: TierKind,
    /// Backups to this tier must land encrypted (a `pbs` tier only).
    pub encrypted: bool,
    /// The key they must be encrypted with, when pinned; otherwise the storage's configured
    /// `encryption-key` fingerprint is used.
    pub key_fingerprint: Option<KeyFingerprint>,
}

/// vzdump `prune-backups` retention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
}

impl Retention {
    /// The vzdump `prune-backups` value (`keep-last=3,keep-daily=7`), `None` when nothing is set
    /// (then the storage's own retention applies).
    pub fn prune_backups(&self) -> Option<String> {
        let parts: Vec<String> = [
            ("keep-last", self.keep_last),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|n| format!("{k}={n}")))
        .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

/// One guest's backup policy on one tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub vmid: u32,
    /// Index into [`BackupSettings::tiers`].
    pub tier: usize,
    pub schedule: Schedule,
    pub mode: BackupMode,
    pub retention: Retention,
    pub restore_test: Option<Schedule>,
    pub probe_interface: Option<String>,
}

/// The validated `[backup]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSettings {
    pub tick: Duration,
    pub grace: Duration,
    pub scratch_vmids: std::ops::RangeInclusive<u32>,
    pub scratch_storage: String,
    pub settle: Duration,
    /// How long a vzdump, a scratch restore or a PBS verify is waited for. Far longer than
    /// `[proxmox] task_deadline_secs`: a first backup of a large guest to an offsite PBS can
    /// run for many hours, and a wait that gave up would record a backup that is still running
    /// as failed.
    pub task_deadline: Duration,
    pub tiers: Vec<Tier>,
    pub policies: Vec<Policy>,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(30),
            grace: Duration::from_secs(3600),
            scratch_vmids: 9900..=9999,
            scratch_storage: "local-lvm".into(),
            settle: Duration::from_secs(10),
            task_deadline: Duration::from_secs(86_400),
            tiers: Vec::new(),
            policies: Vec::new(),
        }
    }
}

impl BackupSettings {
    /// The policies of one guest, in configuration order.
    pub fn policies_of(&self, vmid: u32) -> impl Iterator<Item = &Policy> {
        self.policies.iter().filter(move |p| p.vmid == vmid)
    }

    /// Every guest with at least one policy, ascending.
    pub fn guests(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.policies.iter().map(|p| p.vmid).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn tier(&self, index: usize) -> &Tier {
        &self.tiers[index]
    }

    pub fn tier_named(&self, name: &str) -> Option<(usize, &Tier)> {
        self.tiers.iter().enumerate().find(|(_, t)| t.name == name)
    }

    /// The guest's restore-test schedule (its first policy that has one) and probe.
    pub fn restore_test_of(&self, vmid: u32) -> Option<(&Schedule, Option<&str>)> {
        self.policies_of(vmid).find_map(|p| {
            p.restore_test
                .as_ref()
                .map(|s| (s, p.probe_interface.as_deref()))
        })
    }

    /// The probe interface configured for a guest, if any.
    pub fn probe_of(&self, vmid: u32) -> Option<&str> {
        self.policies_of(vmid)
            .find_map(|p| p.probe_interface.as_deref())
    }

    pub(crate) fn validate(raw: RawBackup) -> Result<Self, SettingsError> {
        let d = Self::default();
        let secs = |key: &str, v: Option<u64>, def: Duration, max: u64| match v {
            None => Ok(def),
            Some(n) if (1..=max).contains(&n) => Ok(Duration::from_secs(n)),
            Some(n) => Err(bad(key, format!("{n} is outside 1..={max} seconds"))),
        };
        let tick = secs("backup.tick_secs", raw.tick_secs, d.tick, 3600)?;
        let grace = secs("backup.grace_secs", raw.grace_secs, d.grace, 7 * 86_400)?;
        let settle = secs(
            "backup.restore_test_settle_secs",
            raw.restore_test_settle_secs,
            d.settle,
            3600,
        )?;
        let task_deadline = secs(
            "backup.task_deadline_secs",
            raw.task_deadline_secs,
            d.task_deadline,
            7 * 86_400,
        )?;
        let first = raw.scratch_vmid_first.unwrap_or(*d.scratch_vmids.start());
        let last = raw.scratch_vmid_last.unwrap_or(*d.scratch_vmids.end());
        if !(100..=999_999_999).contains(&first) || !(100..=999_999_999).contains(&last) {
            return Err(bad(
                "backup.scratch_vmid_first",
                format!("scratch vmids {first}..{last} must be within 100..999999999"),
            ));
        }
        if first > last {
            return Err(bad(
                "backup.scratch_vmid_last",
                format!("{last} is below scratch_vmid_first {first}"),
            ));
        }
        let scratch_storage = raw.scratch_storage.unwrap_or(d.scratch_storage);
        validate_storage_id(&scratch_storage)
            .map_err(|e| bad("backup.scratch_storage", e.to_string()))?;

        let mut tiers: Vec<Tier> = Vec::with_capacity(raw.tiers.len());
        for (i, t) in raw.tiers.into_iter().enumerate() {
            let key = |k: &str| format!("backup.tiers[{i}].{k}");
            let name_ok = !t.name.is_empty()
                && t.name.len() <= 32
                && t.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                return Err(bad(
                    key("name"),
                    format!("'{}' is not 1-32 letters, digits, '-' or '_'", t.name),
                ));
            }
            if tiers.iter().any(|o| o.name == t.name) {
                return Err(bad(key("name"), format!("'{}' is used twice", t.name)));
            }
            validate_storage_id(&t.storage).map_err(|e| bad(key("storage"), e.to_string()))?;
            if let Some(p) = &t.encryption_key_file {
                return Err(bad(
                    key("encryption_key_file"),
                    format!(
                        "is no longer read: the agent checks encrypted backups by the key's fingerprint \
                         and must not hold the key; remove this line and the agent's copy {} (the key \
                         stays in /etc/pve/priv/storage/, its escrow is made by `felhom-agent escrow create`)",
                        p.display()
                    ),
                ));
            }
            let key_fingerprint = match (t.encrypted, t.encryption_key_fingerprint) {
                (_, None) => None,
                (true, Some(fp)) => Some(
                    fp.parse::<KeyFingerprint>()
                        .map_err(|e| bad(key("encryption_key_fingerprint"), e.to_string()))?,
                ),
                (false, Some(_)) => {
                    return Err(bad(
                        key("encryption_key_fingerprint"),
                        "is set but encrypted is not true; say encrypted = true",
                    ));
                }
            };
            if t.encrypted && t.kind != TierKind::Pbs {
                return Err(bad(
                    key("encrypted"),
                    "only pbs tiers can be encrypted (vzdump archives are not)",
                ));
            }
            tiers.push(Tier {
                name: t.name,
                storage: t.storage,
                kind: t.kind,
                encrypted: t.encrypted,
                key_fingerprint,
            });
        }

        let mut policies = Vec::new();
        let mut seen: BTreeMap<(u32, usize), usize> = BTreeMap::new();
        for (i, p) in raw.policies.into_iter().enumerate() {
            let key = |k: &str| format!("backup.policies[{i}].{k}");
            let tier = tiers
                .iter()
                .position(|t| t.name == p.tier)
                .ok_or_else(|| bad(key("tier"), format!("no tier is named '{}'", p.tier)))?;
            let schedule: Schedule = p
                .schedule
                .parse()
                .map_err(|e: super::schedule::ScheduleError| bad(key("schedule"), e.reason))?;
            let restore_test = p
                .restore_test
                .map(|s| s.parse::<Schedule>())
                .transpose()
                .map_err(|e| bad(key("restore_test"), e.reason))?;
            let mode = match p.mode.as_deref().unwrap_or("snapshot") {
                "snapshot" => BackupMode::Snapshot,
                "suspend" => BackupMode::Suspend,
                "stop" => BackupMode::Stop,
                other => {
                    return Err(bad(
                        key("mode"),
                        format!("'{other}' is not snapshot, suspend or stop"),
                    ));
                }
            };
            let retention = Retention {
                keep_last: p.keep_last,
                keep_daily: p.keep_daily,
                keep_weekly: p.keep_weekly,
                keep_monthly: p.keep_monthly,
            };
            for (k, v) in [
                ("keep_last", p.keep_last),
                ("keep_daily", p.keep_daily),
                ("keep_weekly", p.keep_weekly),
                ("keep_monthly", p.keep_monthly),
            ] {
                if v == Some(0) {
                    return Err(bad(
                        key(k),
                        "must be at least 1 (leave it out to not keep by this rule)",
                    ));
                }
            }
            if let Some(iface) = &p.probe_interface {
                let ok = !iface.is_empty()
                    && iface.len() <= 15
                    && iface
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
                if !ok {
                    return Err(bad(
                        key("probe_interface"),
                        format!("'{iface}' is not an interface name"),
                    ));
                }
            }
            if p.vmids.is_empty() {
                return Err(bad(key("vmids"), "names no guest"));
            }
            for vmid in p.vmids {
                if !(100..=999_999_999).contains(&vmid) {
                    return Err(bad(
                        key("vmids"),
                        format!("{vmid} is not a vmid (100..999999999)"),
                    ));
                }
                if (first..=last).contains(&vmid) {
                    return Err(bad(
                        key("vmids"),
                        format!("{vmid} is in the scratch range {first}..{last}"),
                    ));
                }
                if let Some(other) = seen.insert((vmid, tier), i) {
                    return Err(bad(
                        key("vmids"),
                        format!(
                            "guest {vmid} already has a policy for tier '{}' (backup.policies[{other}])",
                            tiers[tier].name
                        ),
                    ));
                }
                policies.push(Policy {
                    vmid,
                    tier,
                    schedule: schedule.clone(),
                    mode,
                    retention,
                    restore_test: restore_test.clone(),
                    probe_interface: p.probe_interface.clone(),
                });
            }
        }
        Ok(Self {
            tick,
            grace,
            scratch_vmids: first..=last,
            scratch_storage,
            settle,
            task_deadline,
            tiers,
            policies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BackupSettings, SettingsError> {
        let raw: RawBackup = toml::from_str(text).unwrap();
        BackupSettings::validate(raw)
    }

    const TIERS: &str = r#"
        [[tiers]]
        name = "local"
        storage = "local"
        kind = "local"
        [[tiers]]
        name = "offsite"
        storage = "felhom-pbs"
        kind = "pbs"
        encrypted = true
    "#;

    #[test]
    fn a_full_section_validates() {
        let s = parse(&format!(
            "{TIERS}
            [[policies]]
            vmids = [101, 102]
            tier = \"offsite\"
            schedule = \"sun 03:00\"
            keep_last = 3
            keep_weekly = 4
            restore_test = \"sun 04:00\"
            probe_interface = \"eth0\"
            "
        ))
        .unwrap();
        assert_eq!(s.policies.len(), 2);
        assert_eq!(s.tier(s.policies[0].tier).name, "offsite");
        assert_eq!(
            s.policies[0].retention.prune_backups().as_deref(),
            Some("keep-last=3,keep-weekly=4")
        );
        assert_eq!(s.guests(), vec![101, 102]);
        assert_eq!(s.restore_test_of(102).unwrap().0.to_string(), "sun 04:00");
    }

    #[test]
    fn backup_task_waits_default_to_a_day_and_are_bounded_to_a_week() {
        assert_eq!(
            parse("").unwrap().task_deadline,
            Duration::from_secs(86_400)
        );
        assert_eq!(
            parse("task_deadline_secs = 172800\n")
                .unwrap()
                .task_deadline,
            Duration::from_secs(172_800)
        );
        let e = parse("task_deadline_secs = 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "backup.task_deadline_secs: 0 is outside 1..=604800 seconds"
        );
    }

    #[test]
    fn an_encrypted_tier_may_pin_its_keys_fingerprint() {
        let fp = "0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b";
        let s = parse(&format!(
            "[[tiers]]\nname = \"o\"\nstorage = \"pbs\"\nkind = \"pbs\"\nencrypted = true\n\
             encryption_key_fingerprint = \"{fp}\"\n"
        ))
        .unwrap();
        assert!(s.tiers[0].encrypted);
        assert_eq!(s.tiers[0].key_fingerprint.unwrap().to_string(), fp);
    }

    #[test]
    fn a_malformed_pinned_fingerprint_is_refused() {
        let e = parse(
            "[[tiers]]\nname = \"o\"\nstorage = \"pbs\"\nkind = \"pbs\"\nencrypted = true\n\
             encryption_key_fingerprint = \"aa:bb\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "backup.tiers[0].encryption_key_fingerprint: 'aa:bb' is not a PBS key fingerprint (32 hex pairs joined by ':')"
        );
    }

    #[test]
    fn the_old_key_file_setting_is_refused_with_what_to_do() {
        let e = parse(
            "[[tiers]]\nname = \"o\"\nstorage = \"pbs\"\nkind = \"pbs\"\nencrypted = true\n\
             encryption_key_file = \"/etc/felhom/pbs-key.json\"\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("backup.tiers[0].encryption_key_file: is no longer read"),
            "{text}"
        );
        assert!(text.contains("/etc/felhom/pbs-key.json"), "{text}");
    }

    #[test]
    fn only_a_pbs_tier_can_be_encrypted() {
        let e = parse(
            "[[tiers]]\nname = \"l\"\nstorage = \"local\"\nkind = \"local\"\nencrypted = true\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "backup.tiers[0].encrypted: only pbs tiers can be encrypted (vzdump archives are not)"
        );
    }

    #[test]
    fn a_policy_naming_an_unknown_tier_is_refused() {
        let e = parse(&format!(
            "{TIERS}\n[[policies]]\nvmids = [101]\ntier = \"cloud\"\nschedule = \"daily\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "backup.policies[0].tier: no tier is named 'cloud'"
        );
    }

    #[test]
    fn a_bad_schedule_names_its_policy() {
        let e = parse(&format!(
            "{TIERS}\n[[policies]]\nvmids = [101]\ntier = \"local\"\nschedule = \"daily 2:61\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "backup.policies[0].schedule: minute '61' is not 0..59"
        );
    }

    #[test]
    fn a_guest_in_the_scratch_range_cannot_have_a_policy() {
        let e = parse(&format!(
            "{TIERS}\n[[policies]]\nvmids = [9901]\ntier = \"local\"\nschedule = \"daily\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "backup.policies[0].vmids: 9901 is in the scratch range 9900..9999"
        );
    }

    #[test]
    fn two_policies_for_one_guest_and_tier_are_refused() {
        let e = parse(&format!(
            "{TIERS}\n[[policies]]\nvmids = [101]\ntier = \"local\"\nschedule = \"daily\"\n\
             [[policies]]\nvmids = [101]\ntier = \"local\"\nschedule = \"weekly\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "backup.policies[1].vmids: guest 101 already has a policy for tier 'local' (backup.policies[0])"
        );
    }
}
