//! Validated newtypes for every argument the helper accepts.
//!
//! Each type can only be constructed valid: the constructors check a strict grammar and reject
//! (never sanitize, never trim) anything else, with a [`Invalid`] error that names the request
//! field. Grammars are deliberately narrower than what the kernel or Proxmox would accept: the
//! helper serves one agent with known needs, so anything unusual is refused.
//!
//! Grammars confirmed against Proxmox sources where they come from Proxmox:
//! - storage id: pve-common `PVE::JSONSchema::parse_storage_id`, format `pve-storage-id`
//!   (`^[a-z][a-z0-9\-\_\.]*[a-z0-9]$`, case-insensitive);
//! - template volid: `<storage>:vztmpl/<file>` as listed by `pveam list` / `pvesm list`;
//! - `pct create <vmid> <ostemplate> --rootfs <storage>:<GiB>` (allocate a new volume of that
//!   size), `--features nesting=1,keyctl=1`, `--unprivileged 1`.

use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};

/// A request field failed validation. `field` is the protobuf field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The protobuf field name, e.g. `hostname`.
    pub field: &'static str,
    /// What the value must look like.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

/// Longest string any field accepts before its own grammar is even looked at.
const MAX_FIELD_LEN: usize = 255;

/// Common first checks: length cap, no NUL, ASCII only (this also refuses unicode lookalikes
/// such as `／` or `．`, which would otherwise read like `/` and `.` in an audit line).
fn plain_ascii(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(field, format!("must be at most {max} bytes")));
    }
    if value.bytes().any(|b| b == 0) {
        return Err(invalid(field, "must not contain NUL"));
    }
    if !value.is_ascii() {
        return Err(invalid(field, "must be ASCII"));
    }
    if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(invalid(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// A guest id inside the configured golden range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vmid(u32);

impl Vmid {
    /// Accepts `value` if it lies in `range` (Proxmox itself allows 100..=999999999).
    pub fn parse(value: u32, range: &RangeInclusive<u32>) -> Result<Self, Invalid> {
        if !range.contains(&value) {
            return Err(invalid(
                "vmid",
                format!(
                    "must be in the golden range {}..={}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(Self(value))
    }

    /// The numeric id.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A DNS hostname: labels of `[a-z0-9-]`, 1..=63 each, not starting or ending with `-`,
/// at most 253 bytes in total. Lower case only (Proxmox stores what it is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

impl Hostname {
    /// Validates a hostname.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        const F: &str = "hostname";
        plain_ascii(F, value, 253)?;
        for label in value.split('.') {
            let ok_chars = label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if label.is_empty()
                || label.len() > 63
                || !ok_chars
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return Err(invalid(
                    F,
                    "must be DNS labels of [a-z0-9-] (1-63 each, no leading or trailing '-')",
                ));
            }
        }
        Ok(Self(value.to_owned()))
    }

    /// The hostname.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Proxmox storage id (`parse_storage_id` grammar), at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageId(String);

/// Longest storage id accepted, alone or inside a volid.
const MAX_STORAGE_ID_LEN: usize = 64;

fn is_storage_id(value: &str) -> bool {
    let bytes = value.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    (2..=MAX_STORAGE_ID_LEN).contains(&bytes.len())
        && first.is_ascii_alphabetic()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl StorageId {
    /// Validates a storage id for the given request field.
    pub fn parse(field: &'static str, value: &str) -> Result<Self, Invalid> {
        plain_ascii(field, value, MAX_STORAGE_ID_LEN)?;
        if !is_storage_id(value) {
            return Err(invalid(
                field,
                "must be a storage id: a letter, then [A-Za-z0-9._-], ending alphanumeric",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The storage id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A container template volume id: `<storage>:vztmpl/<file>` where file is
/// `[A-Za-z0-9._+-]` ending in `.tar.gz`, `.tar.xz`, `.tar.zst` or `.tar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVolid(String);

impl TemplateVolid {
    /// Validates a template volid.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        const F: &str = "template_volid";
        plain_ascii(F, value, MAX_FIELD_LEN)?;
        let shape = "must be <storage>:vztmpl/<file>.tar[.gz|.xz|.zst]";
        let (storage, rest) = value.split_once(':').ok_or_else(|| invalid(F, shape))?;
        let file = rest
            .strip_prefix("vztmpl/")
            .ok_or_else(|| invalid(F, shape))?;
        let file_ok = !file.is_empty()
            && !file.starts_with('.')
            && !file.starts_with('-')
            && file
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
            && [".tar.gz", ".tar.xz", ".tar.zst", ".tar"]
                .iter()
                .any(|ext| file.ends_with(ext));
        if !is_storage_id(storage) || !file_ok {
            return Err(invalid(F, shape));
        }
        Ok(Self(value.to_owned()))
    }

    /// The volid.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Linux bridge name of the form `vmbrN`, N in 0..=4094 (the Proxmox convention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge(String);

impl Bridge {
    /// Validates a bridge name.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        const F: &str = "bridge";
        plain_ascii(F, value, 15)?;
        let n = value
            .strip_prefix("vmbr")
            .filter(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()))
            .filter(|n| n.len() == 1 || !n.starts_with('0'))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n <= 4094);
        match n {
            Some(_) => Ok(Self(value.to_owned())),
            None => Err(invalid(F, "must be vmbrN with N in 0..=4094")),
        }
    }

    /// The bridge name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An integer inside an inclusive range, for sizes and counts.
pub fn bounded(
    field: &'static str,
    value: u32,
    range: RangeInclusive<u32>,
) -> Result<u32, Invalid> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("must be in {}..={}", range.start(), range.end()),
        ))
    }
}

/// A filesystem UUID as blkid reports it: RFC 4122 shape (ext4, xfs, btrfs) or the
/// `XXXX-XXXX` volume serial of FAT and exFAT. Hex digits of either case; the value is used
/// exactly as given (no case folding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUuid(String);

impl FsUuid {
    /// Validates a filesystem UUID.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        const F: &str = "fs_uuid";
        plain_ascii(F, value, 36)?;
        let groups: Vec<&str> = value.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        let shape_ok = lens == [8, 4, 4, 4, 12] || lens == [4, 4];
        let hex_ok = groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
        if !shape_ok || !hex_ok {
            return Err(invalid(
                F,
                "must be a filesystem UUID (8-4-4-4-12 hex digits, or XXXX-XXXX for FAT/exFAT)",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The UUID as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Filesystem types the helper mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ext4
    Ext4,
    /// xfs
    Xfs,
    /// btrfs
    Btrfs,
    /// vfat (FAT12/16/32)
    Vfat,
    /// exfat
    Exfat,
}

impl FsType {
    /// Accepts exactly one of the allowlisted names (lower case).
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value {
            "ext4" => Ok(Self::Ext4),
            "xfs" => Ok(Self::Xfs),
            "btrfs" => Ok(Self::Btrfs),
            "vfat" => Ok(Self::Vfat),
            "exfat" => Ok(Self::Exfat),
            _ => Err(invalid(
                "fs_type",
                "must be one of ext4, xfs, btrfs, vfat, exfat",
            )),
        }
    }

    /// The kernel filesystem type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ext4 => "ext4",
            Self::Xfs => "xfs",
            Self::Btrfs => "btrfs",
            Self::Vfat => "vfat",
            Self::Exfat => "exfat",
        }
    }
}

/// Mount options a caller may ask for. `nosuid` and `nodev` are not in this list because
/// they are always applied; `exec`, `suid`, `dev` and anything with a value are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MountOption {
    /// ro
    ReadOnly,
    /// noatime
    NoAtime,
    /// relatime
    RelAtime,
    /// nodiratime
    NoDirAtime,
    /// noexec
    NoExec,
    /// sync
    Sync,
}

impl MountOption {
    /// Accepts exactly one allowlisted option name.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value {
            "ro" => Ok(Self::ReadOnly),
            "noatime" => Ok(Self::NoAtime),
            "relatime" => Ok(Self::RelAtime),
            "nodiratime" => Ok(Self::NoDirAtime),
            "noexec" => Ok(Self::NoExec),
            "sync" => Ok(Self::Sync),
            _ => Err(invalid(
                "options",
                "each option must be one of ro, noatime, relatime, nodiratime, noexec, sync \
                 (nosuid,nodev are always applied)",
            )),
        }
    }

    /// The option name as mount(8) spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "ro",
            Self::NoAtime => "noatime",
            Self::RelAtime => "relatime",
            Self::NoDirAtime => "nodiratime",
            Self::NoExec => "noexec",
            Self::Sync => "sync",
        }
    }

    /// Validates a list of options: at most 6, no duplicates, not both atime modes.
    pub fn parse_list(values: &[String]) -> Result<Vec<Self>, Invalid> {
        if values.len() > 6 {
            return Err(invalid("options", "must list at most 6 options"));
        }
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            let opt = Self::parse(v)?;
            if out.contains(&opt) {
                return Err(invalid("options", format!("lists {v} twice")));
            }
            out.push(opt);
        }
        if out.contains(&Self::NoAtime) && out.contains(&Self::RelAtime) {
            return Err(invalid(
                "options",
                "noatime and relatime exclude each other",
            ));
        }
        Ok(out)
    }
}

/// One path component under the mount prefix: `[A-Za-z0-9._-]`, not `.`/`..`, not starting
/// with `-`, 1..=64 bytes.
fn is_plain_component(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 64
        && c != "."
        && c != ".."
        && !c.starts_with('-')
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An absolute mount point strictly below the configured prefix, at most 4 components
/// below it, each a plain component. Symlinks are checked when the helper touches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint(PathBuf);

impl MountPoint {
    /// Validates `value` against `prefix` (an absolute directory, e.g. `/mnt/felhom`).
    pub fn parse(value: &str, prefix: &Path) -> Result<Self, Invalid> {
        const F: &str = "mount_point";
        plain_ascii(F, value, MAX_FIELD_LEN)?;
        let under = format!("must be an absolute path under {}", prefix.display());
        let path = Path::new(value);
        if !path.is_absolute() || value.ends_with('/') || value.contains("//") {
            return Err(invalid(F, under));
        }
        let rest = path
            .strip_prefix(prefix)
            .map_err(|_| invalid(F, under.clone()))?;
        let mut depth = 0;
        for comp in rest.components() {
            match comp {
                Component::Normal(c) if c.to_str().is_some_and(is_plain_component) => depth += 1,
                Component::Normal(_)
                | Component::CurDir
                | Component::ParentDir
                | Component::RootDir
                | Component::Prefix(_) => {
                    return Err(invalid(
                        F,
                        "components must be [A-Za-z0-9._-], not '.', '..' or starting with '-'",
                    ));
                }
            }
        }
        // `Path::components` silently drops `.` in the middle; catch it on the raw text.
        if value.split('/').any(|c| c == "." || c == "..") {
            return Err(invalid(F, "must not contain '.' or '..' components"));
        }
        if depth == 0 {
            return Err(invalid(
                F,
                format!("must be below {}, not the prefix itself", prefix.display()),
            ));
        }
        if depth > 4 {
            return Err(invalid(F, "must be at most 4 levels below the prefix"));
        }
        Ok(Self(path.to_path_buf()))
    }

    /// The absolute path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

/// A whole-drive device path: `/dev/sd[a-z]{1,2}`, `/dev/nvme<N>n<M>` or
/// `/dev/disk/by-id/<name>` with name `[A-Za-z0-9._:+-]`. Partitions are refused: SMART is
/// a property of the drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePath(String);

impl DevicePath {
    /// Validates a device path.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        const F: &str = "device";
        plain_ascii(F, value, MAX_FIELD_LEN)?;
        let ok = if let Some(sd) = value.strip_prefix("/dev/sd") {
            (1..=2).contains(&sd.len()) && sd.bytes().all(|b| b.is_ascii_lowercase())
        } else if let Some(nvme) = value.strip_prefix("/dev/nvme") {
            nvme.split_once('n')
                .is_some_and(|(ctrl, ns)| is_small_number(ctrl) && is_small_number(ns) && ns != "0")
        } else if let Some(id) = value.strip_prefix("/dev/disk/by-id/") {
            id.len() <= 128
                && !id.starts_with('.')
                && !id.starts_with('-')
                && id.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'+')
                })
                && !id.contains("-part")
        } else {
            false
        };
        if !ok {
            return Err(invalid(
                F,
                "must be /dev/sdX, /dev/nvmeXnY or /dev/disk/by-id/<drive> (whole drives only)",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The device path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_small_number(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 3
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s.len() == 1 || !s.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_typical_values() {
        assert!(Hostname::parse("golden-base").is_ok());
        assert!(Hostname::parse("golden.felhom.internal").is_ok());
        assert!(StorageId::parse("storage", "local-lvm").is_ok());
        assert!(
            TemplateVolid::parse("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst").is_ok()
        );
        assert!(FsUuid::parse("0b7e4d6e-2c1a-4a8e-9d55-3f1b2c4d5e6f").is_ok());
        assert!(FsUuid::parse("1A2B-3C4D").is_ok());
        assert!(MountPoint::parse("/mnt/felhom/usb-1", Path::new("/mnt/felhom")).is_ok());
        assert!(DevicePath::parse("/dev/sda").is_ok());
        assert!(DevicePath::parse("/dev/nvme0n1").is_ok());
        assert!(
            DevicePath::parse("/dev/disk/by-id/ata-WDC_WD40EFRX-68N32N0_WD-WCC7K1234567").is_ok()
        );
        assert!(Bridge::parse("vmbr0").is_ok());
        assert_eq!(
            MountOption::parse_list(&["ro".into(), "noatime".into()]),
            Ok(vec![MountOption::ReadOnly, MountOption::NoAtime])
        );
    }

    /// Found by the helper_validate fuzz target: the volid's storage part had no length limit.
    #[test]
    fn a_template_volid_holds_only_a_storage_id_the_storage_field_accepts() {
        let long = format!("{}l", "Z".repeat(MAX_STORAGE_ID_LEN));
        assert!(StorageId::parse("storage", &long).is_err());
        assert!(TemplateVolid::parse(&format!("{long}:vztmpl/4.tar.zst")).is_err());
        let longest = "Z".repeat(MAX_STORAGE_ID_LEN);
        assert!(TemplateVolid::parse(&format!("{longest}:vztmpl/4.tar.zst")).is_ok());
    }

    #[test]
    fn mount_point_refuses_prefix_lookalikes() {
        let prefix = Path::new("/mnt/felhom");
        for bad in [
            "/mnt/felhom",
            "/mnt/felhomx/a",
            "/mnt/felhom/./a",
            "/mnt/felhom/a/../../etc",
            "/mnt/felhom//a",
            "/mnt/felhom/a/",
        ] {
            let err = MountPoint::parse(bad, prefix).expect_err(bad);
            assert_eq!(err.field, "mount_point", "{bad}");
        }
    }

    #[test]
    fn device_path_refuses_partitions() {
        for bad in ["/dev/sda1", "/dev/nvme0n1p1", "/dev/disk/by-id/ata-X-part1"] {
            assert!(DevicePath::parse(bad).is_err(), "{bad}");
        }
    }
}
