//! Host mounts: mount a filesystem by UUID under the mount prefix, unmount, list.
//!
//! Mounting is done with the mount(2)/umount2(2) system calls (nix), not the `mount`/`umount`
//! programs: the flags are exactly what the code says (`MS_NOSUID|MS_NODEV` always, plus the
//! allowlisted flags), there is no option-string parser or `/sbin/mount.<type>` helper in
//! between, no fstab lookup, and the kernel's errno maps one-to-one onto clear errors (EBUSY
//! → busy). No filesystem-specific data string is passed at all.
//!
//! UUID → device resolution: `<by_uuid_dir>/<uuid>` (udev's `/dev/disk/by-uuid`) when that
//! link exists; otherwise every block device in `<sys_block_dir>` (`/sys/class/block`) with a
//! non-zero size is probed with `blkid -p -o export <dev>` (low-level superblock probe, one
//! device per call). `blkid -U` is deliberately not used: even with `-c /dev/null` it answers
//! from libblkid's cache file (`/run/blkid/blkid.tab`), which missed freshly attached devices
//! and named stale ones in testing; and a multi-device `blkid -p` stops at the first device
//! it cannot open. Two devices carrying the same UUID (a cloned disk) is refused as ambiguous
//! rather than picking one. Whichever way the device was found, it is probed once more and
//! must carry the UUID and the requested filesystem type, and be a block device under /dev.
//!
//! Refusals before anything is mounted: the device holds `/`, `/boot` or the helper's state
//! directory (compared by device number against the mount table and `stat`); the device is
//! already mounted anywhere; the mount point is already a mount point; the prefix or a path
//! component below it is a symlink, not a directory, not owned by the helper or writable by
//! group/others (so nobody can swap in a symlink between the check and the syscall).
//!
//! Namespace: the service runs every function here on the host-namespace thread
//! ([`crate::hostns`]), so mounts land in the host's mount namespace although the systemd
//! unit sandboxes the helper in a private one; the mount table is therefore read from
//! `/proc/thread-self/mountinfo` (that thread's view), not `/proc/self`.
//! Limits: mount and unmount calls are serialized by the caller (the service holds a lock).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::exec::{self, ExecError, Invocation};
use crate::privilege::ProgramCaps;
use crate::validate::{FsType, FsUuid, MountOption, MountPoint};

/// Mount, unmount or list failure.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// No block device carries the UUID.
    #[error("No filesystem with UUID {0}")]
    UuidNotFound(String),
    /// The UUID resolves to something that is not a block device under /dev.
    #[error("UUID {uuid} resolves to {path}, which is not a block device under /dev")]
    NotABlockDevice {
        /// The UUID.
        uuid: String,
        /// Where it resolved.
        path: PathBuf,
    },
    /// The device holds /, /boot or the helper's state.
    #[error("Refused: {device} holds {what}")]
    Protected {
        /// The device.
        device: PathBuf,
        /// The protected path it holds.
        what: PathBuf,
    },
    /// The device is already mounted.
    #[error("{device} is already mounted at {at}")]
    DeviceAlreadyMounted {
        /// The device.
        device: PathBuf,
        /// Where.
        at: PathBuf,
    },
    /// Something is already mounted at the mount point.
    #[error("{0} is already a mount point")]
    MountPointInUse(PathBuf),
    /// A path component below the prefix is a symlink or not a directory.
    #[error("{0} is a symlink or not a directory")]
    NotADirectory(PathBuf),
    /// A directory on the way to the mount point could be changed by someone else.
    #[error("{0} is writable by others or not owned by the helper")]
    UntrustedDirectory(PathBuf),
    /// Nothing is mounted at the path.
    #[error("Nothing is mounted at {0}")]
    NotMounted(PathBuf),
    /// The mount is in use and a non-lazy unmount was asked.
    #[error(
        "{0} is busy (files open or a process inside); ask for a lazy unmount to detach anyway"
    )]
    Busy(PathBuf),
    /// The kernel refused the mount.
    #[error("Mounting {device} as {fs_type} failed: {errno}")]
    MountFailed {
        /// The device.
        device: PathBuf,
        /// The type asked for.
        fs_type: &'static str,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The kernel refused the unmount for a reason other than EBUSY.
    #[error("Unmounting {path} failed: {errno}")]
    UnmountFailed {
        /// The path.
        path: PathBuf,
        /// The kernel's answer.
        errno: Errno,
    },
    /// More than one device carries the UUID.
    #[error("UUID {uuid} is carried by more than one device: {devices}")]
    AmbiguousUuid {
        /// The UUID.
        uuid: String,
        /// The devices, comma separated.
        devices: String,
    },
    /// The filesystem is not of the type asked for.
    #[error("{device} holds {found}, not {asked}")]
    WrongFsType {
        /// The device.
        device: PathBuf,
        /// What blkid found.
        found: String,
        /// What the request asked for.
        asked: &'static str,
    },
    /// blkid could not be run.
    #[error("Cannot run blkid")]
    Blkid(#[from] ExecError),
    /// blkid failed in an unexpected way.
    #[error("blkid failed with {0}")]
    BlkidFailed(std::process::ExitStatus),
    /// A file the helper needs could not be read or created.
    #[error("Cannot access {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The blocking mount task died.
    #[error("Mount task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The host-namespace thread could not run the operation.
    #[error("Cannot reach the host mount namespace")]
    HostNs(#[source] crate::hostns::HostNsError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MountError + '_ {
    move |source| MountError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Mount configuration (all paths configurable so tests use temp dirs and stand-ins).
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Mount points must lie below this absolute directory.
    pub prefix: PathBuf,
    /// udev's by-uuid directory.
    pub by_uuid_dir: PathBuf,
    /// Absolute path of blkid.
    pub blkid: PathBuf,
    /// Timeout for one blkid probe.
    pub blkid_timeout: Duration,
    /// Where the kernel lists block devices (normally /sys/class/block).
    pub sys_block_dir: PathBuf,
    /// The mount table to read (normally /proc/self/mountinfo).
    pub mountinfo: PathBuf,
    /// Paths whose devices may never be mounted by the helper: `/`, `/boot`, the state dir.
    pub protected_paths: Vec<PathBuf>,
}

/// One line of /proc/self/mountinfo (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Device number major.
    pub major: u64,
    /// Device number minor.
    pub minor: u64,
    /// Mount point.
    pub mount_point: PathBuf,
    /// Per-mount options.
    pub options: Vec<String>,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source.
    pub source: String,
}

/// Parses the text of /proc/self/mountinfo; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let _id = l.next()?;
    let _parent = l.next()?;
    let (major, minor) = l.next()?.split_once(':')?;
    let _root = l.next()?;
    let mount_point = unescape(l.next()?);
    let options = l.next()?.split(',').map(str::to_owned).collect();
    let mut r = right.split(' ');
    let fs_type = r.next()?.to_owned();
    let source = unescape(r.next()?);
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mount_point: PathBuf::from(mount_point),
        options,
        fs_type,
        source,
    })
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash (`\040` etc.).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_mounts(cfg: &MountConfig) -> Result<Vec<MountEntry>, MountError> {
    let text = fs::read_to_string(&cfg.mountinfo).map_err(io_err(&cfg.mountinfo))?;
    Ok(parse_mountinfo(&text))
}

/// The mount whose mount point is the longest prefix of `path` (the one holding it).
fn holding_mount<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
}

/// Device numbers (major, minor) holding each protected path.
fn protected_devices(cfg: &MountConfig, mounts: &[MountEntry]) -> Vec<((u64, u64), PathBuf)> {
    let mut out = Vec::new();
    for path in &cfg.protected_paths {
        if let Some(m) = holding_mount(mounts, path) {
            out.push(((m.major, m.minor), path.clone()));
            // A mount source naming a block device (e.g. /dev/sda2 for btrfs, whose st_dev
            // is an anonymous number) is protected by its own device number too.
            if let Ok(meta) = fs::metadata(&m.source)
                && meta.file_type().is_block_device()
            {
                out.push((split_dev(meta.rdev()), path.clone()));
            }
        }
        if let Ok(meta) = fs::metadata(path) {
            out.push((split_dev(meta.dev()), path.clone()));
        }
    }
    out
}

fn split_dev(dev: u64) -> (u64, u64) {
    (nix::sys::stat::major(dev), nix::sys::stat::minor(dev))
}

/// What `blkid -p` found on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Probed {
    uuid: Option<String>,
    fs_type: Option<String>,
}

/// Parses `blkid -p -o export` output (`KEY=value` lines).
fn parse_probe(text: &str) -> Probed {
    let mut probed = Probed::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("UUID", v)) => probed.uuid = Some(v.to_owned()),
            Some(("TYPE", v)) => probed.fs_type = Some(v.to_owned()),
            Some(_) | None => {}
        }
    }
    probed
}

/// `blkid -p -o export <device>`; `None` when blkid finds nothing or cannot read the device.
async fn probe(cfg: &MountConfig, device: &Path) -> Result<Option<Probed>, MountError> {
    let out = exec::run(&Invocation {
        program: cfg.blkid.clone(),
        args: vec!["-p".into(), "-o".into(), "export".into(), device.into()],
        timeout: cfg.blkid_timeout,
        output_cap: 4096,
        caps: ProgramCaps::Blkid,
    })
    .await?;
    match out.status.code() {
        Some(0) => Ok(Some(parse_probe(&String::from_utf8_lossy(&out.stdout)))),
        // blkid(8): 2 = nothing identified (or the device could not be opened); 4 = usage
        // or other error on this device. Neither names the UUID, so the device is skipped.
        Some(2) | Some(4) => Ok(None),
        Some(_) | None => Err(MountError::BlkidFailed(out.status)),
    }
}

/// Block devices the kernel lists with a non-zero size, as /dev paths.
fn candidate_devices(sys_block_dir: &Path) -> Result<Vec<PathBuf>, MountError> {
    let entries = fs::read_dir(sys_block_dir).map_err(io_err(sys_block_dir))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let size = fs::read_to_string(entry.path().join("size")).unwrap_or_default();
        if size.trim().parse::<u64>().unwrap_or(0) == 0 {
            continue;
        }
        out.push(Path::new("/dev").join(name));
    }
    out.sort();
    Ok(out)
}

/// Finds the one device carrying `uuid` by probing every candidate.
async fn scan_for_uuid(cfg: &MountConfig, uuid: &FsUuid) -> Result<PathBuf, MountError> {
    let mut found = Vec::new();
    for device in candidate_devices(&cfg.sys_block_dir)? {
        if let Some(p) = probe(cfg, &device).await?
            && p.uuid.as_deref() == Some(uuid.as_str())
        {
            found.push(device);
        }
    }
    match found.as_slice() {
        [] => Err(MountError::UuidNotFound(uuid.as_str().to_owned())),
        [one] => Ok(one.clone()),
        [_, _, ..] => Err(MountError::AmbiguousUuid {
            uuid: uuid.as_str().to_owned(),
            devices: found
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Resolves `uuid` to a block device path and its (major, minor), checking that the
/// filesystem on it is `fs_type`.
pub async fn resolve_uuid(
    cfg: &MountConfig,
    uuid: &FsUuid,
    fs_type: FsType,
) -> Result<(PathBuf, (u64, u64)), MountError> {
    let link = cfg.by_uuid_dir.join(uuid.as_str());
    let path = if fs::symlink_metadata(&link).is_ok() {
        fs::canonicalize(&link).map_err(io_err(&link))?
    } else {
        scan_for_uuid(cfg, uuid).await?
    };
    let not_block = || MountError::NotABlockDevice {
        uuid: uuid.as_str().to_owned(),
        path: path.clone(),
    };
    if !path.starts_with("/dev/") {
        return Err(not_block());
    }
    let meta = fs::metadata(&path).map_err(|_| not_block())?;
    if !meta.file_type().is_block_device() {
        return Err(not_block());
    }
    // Confirm on the device itself (a udev link can be stale).
    let probed = probe(cfg, &path).await?.unwrap_or_default();
    if probed.uuid.as_deref() != Some(uuid.as_str()) {
        return Err(MountError::UuidNotFound(uuid.as_str().to_owned()));
    }
    let found = probed.fs_type.unwrap_or_else(|| "no filesystem".to_owned());
    if found != fs_type.as_str() {
        return Err(MountError::WrongFsType {
            device: path,
            found,
            asked: fs_type.as_str(),
        });
    }
    Ok((path.clone(), split_dev(meta.rdev())))
}

/// Creates the missing directories from the prefix down to `mp` (mode 0755) and checks that
/// every component below the prefix is a real directory, not a symlink.
fn prepare_mount_point(prefix: &Path, mp: &MountPoint) -> Result<(), MountError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(prefix)
        .map_err(io_err(prefix))?;
    check_trusted_dir(prefix)?;
    let mut cur = prefix.to_path_buf();
    for comp in below_prefix(prefix, mp)?.components() {
        cur.push(comp);
        match fs::DirBuilder::new().mode(0o755).create(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&cur)(e)),
        }
        check_trusted_dir(&cur)?;
    }
    Ok(())
}

fn below_prefix<'a>(prefix: &Path, mp: &'a MountPoint) -> Result<&'a Path, MountError> {
    mp.as_path()
        .strip_prefix(prefix)
        .map_err(|_| MountError::NotADirectory(mp.as_path().to_path_buf()))
}

/// A directory the kernel will walk through for a mount or unmount: a real directory (not a
/// symlink), owned by the helper's own uid and not writable by group or others. Otherwise
/// someone else could swap a component for a symlink between the check and the syscall.
fn check_trusted_dir(path: &Path) -> Result<(), MountError> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    if !meta.file_type().is_dir() {
        return Err(MountError::NotADirectory(path.to_path_buf()));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(MountError::UntrustedDirectory(path.to_path_buf()));
    }
    Ok(())
}

/// A mount as reported to the caller.
pub fn to_proto(m: &MountEntry) -> felhom_proto::helper::v1::Mount {
    felhom_proto::helper::v1::Mount {
        mount_point: m.mount_point.display().to_string(),
        device: m.source.clone(),
        fs_type: m.fs_type.clone(),
        options: m.options.clone(),
    }
}

/// Mounts the filesystem with `uuid` at `mp`.
pub async fn mount(
    cfg: &MountConfig,
    uuid: &FsUuid,
    mp: &MountPoint,
    fs_type: FsType,
    options: &[MountOption],
) -> Result<MountEntry, MountError> {
    let (device, devnum) = resolve_uuid(cfg, uuid, fs_type).await?;
    let mounts = read_mounts(cfg)?;
    for (protected, what) in protected_devices(cfg, &mounts) {
        if protected == devnum {
            return Err(MountError::Protected { device, what });
        }
    }
    // By device number, and by source path too: btrfs mounts show an anonymous device
    // number (0:N) in the mount table, so only the source names the block device.
    if let Some(m) = mounts
        .iter()
        .find(|m| (m.major, m.minor) == devnum || Path::new(&m.source) == device)
    {
        return Err(MountError::DeviceAlreadyMounted {
            device,
            at: m.mount_point.clone(),
        });
    }
    if mounts.iter().any(|m| m.mount_point == mp.as_path()) {
        return Err(MountError::MountPointInUse(mp.as_path().to_path_buf()));
    }
    prepare_mount_point(&cfg.prefix, mp)?;

    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for opt in options {
        flags |= match opt {
            MountOption::ReadOnly => MsFlags::MS_RDONLY,
            MountOption::NoAtime => MsFlags::MS_NOATIME,
            MountOption::RelAtime => MsFlags::MS_RELATIME,
            MountOption::NoDirAtime => MsFlags::MS_NODIRATIME,
            MountOption::NoExec => MsFlags::MS_NOEXEC,
            MountOption::Sync => MsFlags::MS_SYNCHRONOUS,
        };
    }
    let target = mp.as_path().to_path_buf();
    let dev = device.clone();
    let fstype = fs_type.as_str();
    tokio::task::spawn_blocking(move || {
        nix::mount::mount(Some(&dev), &target, Some(fstype), flags, None::<&str>)
    })
    .await
    .map_err(MountError::Task)?
    .map_err(|errno| MountError::MountFailed {
        device: device.clone(),
        fs_type: fstype,
        errno,
    })?;

    let mounts = read_mounts(cfg)?;
    Ok(mounts
        .into_iter()
        .rev()
        .find(|m| m.mount_point == mp.as_path())
        .unwrap_or(MountEntry {
            major: devnum.0,
            minor: devnum.1,
            mount_point: mp.as_path().to_path_buf(),
            options: Vec::new(),
            fs_type: fstype.to_owned(),
            source: device.display().to_string(),
        }))
}

/// Unmounts `mp`; EBUSY becomes [`MountError::Busy`] unless `lazy` (MNT_DETACH).
pub async fn unmount(cfg: &MountConfig, mp: &MountPoint, lazy: bool) -> Result<(), MountError> {
    let mounts = read_mounts(cfg)?;
    if !mounts.iter().any(|m| m.mount_point == mp.as_path()) {
        return Err(MountError::NotMounted(mp.as_path().to_path_buf()));
    }
    // The prefix and every directory above the mount point must be trustworthy; the mount
    // point itself is the mounted filesystem's root and may have any owner and mode.
    check_trusted_dir(&cfg.prefix)?;
    let mut cur = cfg.prefix.clone();
    let rest = below_prefix(&cfg.prefix, mp)?;
    let parents = rest.components().count().saturating_sub(1);
    for comp in rest.components().take(parents) {
        cur.push(comp);
        check_trusted_dir(&cur)?;
    }
    let mut flags = MntFlags::UMOUNT_NOFOLLOW;
    if lazy {
        flags |= MntFlags::MNT_DETACH;
    }
    let target = mp.as_path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || nix::mount::umount2(&target, flags))
        .await
        .map_err(MountError::Task)?;
    match result {
        Ok(()) => Ok(()),
        Err(Errno::EBUSY) => Err(MountError::Busy(mp.as_path().to_path_buf())),
        Err(errno) => Err(MountError::UnmountFailed {
            path: mp.as_path().to_path_buf(),
            errno,
        }),
    }
}

/// Mounts strictly below the prefix, in mount order, one entry per mount point (the top one).
pub fn list(cfg: &MountConfig) -> Result<Vec<MountEntry>, MountError> {
    let mounts = read_mounts(cfg)?;
    let mut seen = BTreeSet::new();
    let mut out: Vec<MountEntry> = mounts
        .into_iter()
        .rev()
        .filter(|m| m.mount_point.starts_with(&cfg.prefix) && m.mount_point != cfg.prefix)
        .filter(|m| seen.insert(m.mount_point.clone()))
        .collect();
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
23 22 8:1 / /boot rw,relatime shared:2 - vfat /dev/sda1 rw
40 22 7:0 / /mnt/felhom/usb\\0401 rw,nosuid,nodev,relatime shared:3 - ext4 /dev/loop0 rw
41 22 0:45 / /mnt/felhom rw shared:4 - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo_is_parsed_and_unescaped() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        let usb = mounts.get(2).expect("third line parsed");
        assert_eq!(usb.mount_point, Path::new("/mnt/felhom/usb 1"));
        assert_eq!((usb.major, usb.minor), (7, 0));
        assert_eq!(usb.source, "/dev/loop0");
        assert_eq!(usb.options, ["rw", "nosuid", "nodev", "relatime"]);
    }

    #[test]
    fn root_and_boot_devices_are_protected() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let cfg = MountConfig {
            prefix: PathBuf::from("/mnt/felhom"),
            by_uuid_dir: PathBuf::from("/nonexistent"),
            blkid: PathBuf::from("/usr/sbin/blkid"),
            blkid_timeout: Duration::from_secs(1),
            sys_block_dir: PathBuf::from("/nonexistent"),
            mountinfo: PathBuf::from("/nonexistent"),
            protected_paths: vec![
                PathBuf::from("/nonexistent-root/"),
                PathBuf::from("/boot/efi"),
            ],
        };
        let devs: Vec<(u64, u64)> = protected_devices(&cfg, &mounts)
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        // /nonexistent-root is held by "/" (8:2); /boot/efi by /boot (8:1).
        assert!(devs.contains(&(8, 2)), "{devs:?}");
        assert!(devs.contains(&(8, 1)), "{devs:?}");
        assert!(!devs.contains(&(7, 0)), "{devs:?}");
    }

    #[test]
    fn blkid_export_output_is_parsed() {
        let p = parse_probe(
            "DEVNAME=/dev/sdb1\nUUID=1A2B-3C4D\nBLOCK_SIZE=512\nTYPE=vfat\nPARTUUID=0a1b2c3d-01\n",
        );
        assert_eq!(p.uuid.as_deref(), Some("1A2B-3C4D"));
        assert_eq!(p.fs_type.as_deref(), Some("vfat"));
    }

    #[test]
    fn list_shows_only_mounts_below_the_prefix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mi = dir.path().join("mountinfo");
        fs::write(&mi, MOUNTINFO).expect("write mountinfo");
        let cfg = MountConfig {
            prefix: PathBuf::from("/mnt/felhom"),
            by_uuid_dir: dir.path().join("by-uuid"),
            blkid: PathBuf::from("/usr/sbin/blkid"),
            blkid_timeout: Duration::from_secs(1),
            sys_block_dir: PathBuf::from("/nonexistent"),
            mountinfo: mi,
            protected_paths: Vec::new(),
        };
        let mounts = list(&cfg).expect("list reads the table");
        let points: Vec<&Path> = mounts.iter().map(|m| m.mount_point.as_path()).collect();
        assert_eq!(points, [Path::new("/mnt/felhom/usb 1")]);
    }
}
