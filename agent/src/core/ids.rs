//! Identifiers as Proxmox VE allows them, validated before anything is sent or stored.

/// A value that is not a valid identifier; the message names the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// A guest id as PVE allows it (100 ..= 999 999 999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Vmid(u32);

impl Vmid {
    /// Lowest vmid PVE accepts.
    pub const MIN: u32 = 100;
    /// Highest vmid PVE accepts.
    pub const MAX: u32 = 999_999_999;

    /// Validates a vmid.
    pub fn new(v: u32) -> Result<Self, InvalidValue> {
        if (Self::MIN..=Self::MAX).contains(&v) {
            Ok(Self(v))
        } else {
            Err(InvalidValue(format!(
                "vmid {v} is outside {}..={}",
                Self::MIN,
                Self::MAX
            )))
        }
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Vmid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Snapshot names follow PVE's `pve-configid` format: a letter, then 1–40 letters, digits or `_`.
pub fn validate_snapshot_name(name: &str) -> Result<(), InvalidValue> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && (2..=41).contains(&name.len()) && name != "current" {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "snapshot name '{}' must be a letter followed by 1-40 letters, digits or '_' (and not 'current')",
            name.escape_debug()
        )))
    }
}

/// Storage ids follow PVE's `pve-storage-id` format.
pub fn validate_storage_id(id: &str) -> Result<(), InvalidValue> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "storage id '{}' is not valid",
            id.escape_debug()
        )))
    }
}
