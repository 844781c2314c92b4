//! A real ext4 image on a loop device is mounted by its UUID under the prefix, listed, refused
//! a busy unmount, unmounted; an unknown UUID fails cleanly. Needs root and loop devices: if
//! the loop device cannot be set up, the test prints why and returns early.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use felhom_proto::helper::v1::{ListMountsRequest, MountByUuidRequest, UnmountRequest};
use tonic::Code;

/// A fresh random UUID per image: tests run in parallel, and a loop device detached by an
/// earlier run can linger (autoclear) while still carrying its UUID, so a fixed UUID could
/// name two devices.
fn fresh_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("kernel UUID source")
        .trim()
        .to_owned()
}

/// Detaches the loop device (and lazily unmounts anything left under the prefix) on drop,
/// whichever way the test ends.
struct LoopGuard {
    device: String,
    prefix: PathBuf,
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
            for line in text.lines() {
                if let Some(mp) = line.split(' ').nth(4)
                    && Path::new(mp).starts_with(&self.prefix)
                {
                    let _ = Command::new("umount").args(["-l", mp]).status();
                }
            }
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates an ext4 image with UUID and attaches it; Err(reason) when this host cannot.
fn attach_image(dir: &Path, prefix: &Path, uuid: &str) -> Result<LoopGuard, String> {
    let image = dir.join("disk.img");
    run(Command::new("truncate").args(["-s", "32M"]).arg(&image))?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", uuid])
        .arg(&image))?;
    let device = run(Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&image))?;
    Ok(LoopGuard {
        device,
        prefix: prefix.to_path_buf(),
    })
}

#[tokio::test]
async fn ext4_image_is_mounted_by_uuid_listed_and_unmounted() {
    let helper = common::start(common::Options::default());
    let uuid = fresh_uuid();
    let guard = match attach_image(helper.dir.path(), &helper.prefix, &uuid) {
        Ok(g) => g,
        Err(reason) => {
            println!(
                "SKIPPED ext4_image_is_mounted_by_uuid_listed_and_unmounted: no loop device: {reason}"
            );
            return;
        }
    };
    let mut client = helper.client().await;
    let mount_point = helper.prefix.join("usb1");
    let mp = mount_point.display().to_string();

    let mounted = client
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: uuid.clone(),
            mount_point: mp.clone(),
            fs_type: "ext4".into(),
            options: vec!["noatime".into()],
        })
        .await
        .expect("mount by UUID")
        .into_inner()
        .mount
        .expect("mount in reply");
    assert_eq!(mounted.mount_point, mp);
    assert_eq!(mounted.device, guard.device);
    assert_eq!(mounted.fs_type, "ext4");
    for opt in ["nosuid", "nodev", "noatime"] {
        assert!(
            mounted.options.iter().any(|o| o == opt),
            "{opt} missing: {:?}",
            mounted.options
        );
    }

    let listed = client
        .list_mounts(ListMountsRequest {})
        .await
        .expect("list mounts")
        .into_inner()
        .mounts;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed.first().map(|m| m.mount_point.as_str()),
        Some(mp.as_str())
    );

    // Mounting the same filesystem again is refused: the device is already mounted.
    let again = client
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: uuid.clone(),
            mount_point: helper.prefix.join("usb2").display().to_string(),
            fs_type: "ext4".into(),
            options: vec![],
        })
        .await
        .expect_err("second mount of the same device");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    // An open file keeps the mount busy: a plain unmount is refused with a clear error.
    let open = std::fs::File::create(mount_point.join("held-open")).expect("create file in mount");
    let busy = client
        .unmount(UnmountRequest {
            mount_point: mp.clone(),
            lazy: false,
        })
        .await
        .expect_err("busy unmount refused");
    assert_eq!(busy.code(), Code::FailedPrecondition, "{busy:?}");
    assert!(busy.message().contains("is busy"), "{}", busy.message());
    drop(open);

    client
        .unmount(UnmountRequest {
            mount_point: mp.clone(),
            lazy: false,
        })
        .await
        .expect("unmount once no longer busy");
    let listed = client
        .list_mounts(ListMountsRequest {})
        .await
        .expect("list mounts")
        .into_inner()
        .mounts;
    assert!(listed.is_empty(), "{listed:?}");

    let not_mounted = client
        .unmount(UnmountRequest {
            mount_point: mp,
            lazy: false,
        })
        .await
        .expect_err("nothing mounted any more");
    assert_eq!(not_mounted.code(), Code::NotFound, "{not_mounted:?}");
    drop(guard);
}

#[tokio::test]
async fn busy_mount_is_detached_when_lazy_is_asked() {
    let helper = common::start(common::Options::default());
    let uuid = fresh_uuid();
    let guard = match attach_image(helper.dir.path(), &helper.prefix, &uuid) {
        Ok(g) => g,
        Err(reason) => {
            println!("SKIPPED busy_mount_is_detached_when_lazy_is_asked: no loop device: {reason}");
            return;
        }
    };
    let mut client = helper.client().await;
    let mount_point = helper.prefix.join("lazy");
    let mp = mount_point.display().to_string();
    client
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: uuid.clone(),
            mount_point: mp.clone(),
            fs_type: "ext4".into(),
            options: vec![],
        })
        .await
        .expect("mount by UUID");
    let open = std::fs::File::create(mount_point.join("held-open")).expect("create file in mount");
    client
        .unmount(UnmountRequest {
            mount_point: mp,
            lazy: true,
        })
        .await
        .expect("lazy unmount detaches a busy mount");
    let listed = client
        .list_mounts(ListMountsRequest {})
        .await
        .expect("list mounts")
        .into_inner()
        .mounts;
    assert!(listed.is_empty(), "{listed:?}");
    drop(open);
    drop(guard);
}

#[tokio::test]
async fn device_holding_the_helpers_state_is_refused() {
    let dir = common::temp_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let uuid = fresh_uuid();
    let guard = match attach_image(dir.path(), dir.path(), &uuid) {
        Ok(g) => g,
        Err(reason) => {
            println!(
                "SKIPPED device_holding_the_helpers_state_is_refused: no loop device: {reason}"
            );
            return;
        }
    };
    // The helper's state directory lives on the image (mounted outside the prefix).
    if let Err(reason) = run(Command::new("mount")
        .args(["-t", "ext4", &guard.device])
        .arg(&state))
    {
        panic!("mounting the state image failed: {reason}");
    }
    let helper = common::start_in(
        dir,
        common::Options {
            state_dir: Some(state.clone()),
            ..Default::default()
        },
    );
    let mut client = helper.client().await;
    let status = client
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: uuid.clone(),
            mount_point: helper.prefix.join("state-again").display().to_string(),
            fs_type: "ext4".into(),
            options: vec![],
        })
        .await
        .expect_err("the state device is protected");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.message(),
        format!("Refused: {} holds {}", guard.device, state.display())
    );
    let _ = run(Command::new("umount").arg(&state));
    drop(guard);
}

#[tokio::test]
async fn filesystem_of_another_type_is_refused() {
    let helper = common::start(common::Options::default());
    let uuid = fresh_uuid();
    let guard = match attach_image(helper.dir.path(), &helper.prefix, &uuid) {
        Ok(g) => g,
        Err(reason) => {
            println!("SKIPPED filesystem_of_another_type_is_refused: no loop device: {reason}");
            return;
        }
    };
    let status = helper
        .client()
        .await
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: uuid,
            mount_point: helper.prefix.join("x").display().to_string(),
            fs_type: "xfs".into(),
            options: vec![],
        })
        .await
        .expect_err("ext4 is not xfs");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.message(),
        format!("{} holds ext4, not xfs", guard.device)
    );
}

#[tokio::test]
async fn uuid_on_two_devices_is_refused_as_ambiguous() {
    let helper = common::start(common::Options::default());
    let uuid = fresh_uuid();
    let first = match attach_image(helper.dir.path(), &helper.prefix, &uuid) {
        Ok(g) => g,
        Err(reason) => {
            println!(
                "SKIPPED uuid_on_two_devices_is_refused_as_ambiguous: no loop device: {reason}"
            );
            return;
        }
    };
    // A second loop device over the same image: two devices, one UUID (like a cloned disk).
    let second = match run(Command::new("losetup")
        .args(["--find", "--show"])
        .arg(helper.dir.path().join("disk.img")))
    {
        Ok(device) => LoopGuard {
            device,
            prefix: helper.prefix.clone(),
        },
        Err(reason) => {
            println!(
                "SKIPPED uuid_on_two_devices_is_refused_as_ambiguous: no second loop device: {reason}"
            );
            return;
        }
    };
    let status = helper
        .client()
        .await
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: uuid.clone(),
            mount_point: helper.prefix.join("clone").display().to_string(),
            fs_type: "ext4".into(),
            options: vec![],
        })
        .await
        .expect_err("ambiguous UUID");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .starts_with(&format!("UUID {uuid} is carried by more than one device: ")),
        "{}",
        status.message()
    );
    for device in [&first.device, &second.device] {
        assert!(
            status.message().contains(device.as_str()),
            "{}",
            status.message()
        );
    }
}

#[tokio::test]
async fn unknown_uuid_fails_cleanly() {
    let helper = common::start(common::Options::default());
    let mut client = helper.client().await;
    let status = client
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: "00000000-0000-4000-8000-0000deadbeef".into(),
            mount_point: helper.prefix.join("nothing").display().to_string(),
            fs_type: "ext4".into(),
            options: vec![],
        })
        .await
        .expect_err("no such filesystem");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(
        status.message(),
        "No filesystem with UUID 00000000-0000-4000-8000-0000deadbeef"
    );
    assert!(
        !helper.prefix.join("nothing").exists(),
        "mount point created for a failed mount"
    );
}

#[tokio::test]
async fn mount_point_under_a_world_writable_directory_is_refused() {
    let helper = common::start(common::Options::default());
    let shared = helper.prefix.join("shared");
    std::fs::create_dir_all(&shared).expect("create shared dir");
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("make it world-writable");
    let uuid = fresh_uuid();
    let _guard = match attach_image(helper.dir.path(), &helper.prefix, &uuid) {
        Ok(g) => g,
        Err(reason) => {
            println!(
                "SKIPPED mount_point_under_a_world_writable_directory_is_refused: no loop device: {reason}"
            );
            return;
        }
    };
    let status = helper
        .client()
        .await
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: uuid,
            mount_point: shared.join("usb").display().to_string(),
            fs_type: "ext4".into(),
            options: vec![],
        })
        .await
        .expect_err("a symlink could be swapped in under a world-writable directory");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "{} is writable by others or not owned by the helper",
            shared.display()
        )
    );
}

/// Mount points in the mount table at `mountinfo` (field 5 of each line).
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    std::fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

#[tokio::test]
async fn mount_by_a_sandboxed_helper_lands_in_the_host_namespace() {
    // The helper runs in a private mount namespace (as under the unit's ProtectSystem= etc.),
    // with the test's own namespace standing in for the host's. Its mount must appear in
    // the test's namespace and not in the helper's own (main-thread) namespace: proof that
    // it was made after setns, not by propagation.
    let helper = common::start(common::Options {
        wrapper: vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
        ],
        ..Default::default()
    });
    let uuid = fresh_uuid();
    let guard = match attach_image(helper.dir.path(), &helper.prefix, &uuid) {
        Ok(g) => g,
        Err(reason) => {
            println!(
                "SKIPPED mount_by_a_sandboxed_helper_lands_in_the_host_namespace: no loop device: {reason}"
            );
            return;
        }
    };
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").expect("own namespace");
    let helper_ns =
        std::fs::read_link(format!("/proc/{}/ns/mnt", helper.pid())).expect("helper namespace");
    assert_ne!(
        own_ns, helper_ns,
        "the helper runs in its own mount namespace"
    );

    let mut client = helper.client().await;
    let mount_point = helper.prefix.join("hostns");
    let mp = mount_point.display().to_string();
    client
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: uuid.clone(),
            mount_point: mp.clone(),
            fs_type: "ext4".into(),
            options: vec![],
        })
        .await
        .expect("mount by UUID");
    assert!(
        mount_points("/proc/self/mountinfo").contains(&mount_point),
        "mount visible in the host (test) namespace"
    );
    assert!(
        !mount_points(&format!("/proc/{}/mountinfo", helper.pid())).contains(&mount_point),
        "mount not made in the helper's sandbox namespace"
    );
    let listed = client
        .list_mounts(ListMountsRequest {})
        .await
        .expect("list mounts")
        .into_inner()
        .mounts;
    assert_eq!(
        listed.first().map(|m| m.mount_point.as_str()),
        Some(mp.as_str()),
        "the helper lists what the host sees"
    );
    client
        .unmount(UnmountRequest {
            mount_point: mp,
            lazy: false,
        })
        .await
        .expect("unmount in the host namespace");
    assert!(!mount_points("/proc/self/mountinfo").contains(&mount_point));
    drop(guard);
}

#[tokio::test]
async fn blkid_probes_the_drive_with_no_capabilities() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED blkid_probes_the_drive_with_no_capabilities: needs root");
        return;
    }
    let dir = common::temp_dir();
    let record = dir.path().join("blkid-caps");
    // blkid parses superblocks whoever wrote the drive chose: it must run with nothing.
    let blkid = common::script(
        dir.path(),
        "blkid",
        &format!(
            "grep '^Cap' /proc/$$/status >> {}\nexec /usr/sbin/blkid \"$@\"",
            record.display()
        ),
    );
    let helper = common::start_in(
        dir,
        common::Options {
            extra: vec!["--blkid".into(), blkid.display().to_string()],
            ..Default::default()
        },
    );
    let uuid = fresh_uuid();
    let _guard = match attach_image(helper.dir.path(), &helper.prefix, &uuid) {
        Ok(g) => g,
        Err(reason) => {
            println!(
                "SKIPPED blkid_probes_the_drive_with_no_capabilities: no loop device: {reason}"
            );
            return;
        }
    };
    let mp = helper.prefix.join("usb1");
    helper
        .client()
        .await
        .mount_by_uuid(MountByUuidRequest {
            fs_uuid: uuid,
            mount_point: mp.display().to_string(),
            fs_type: "ext4".into(),
            options: vec![],
        })
        .await
        .expect("mount by UUID through the stand-in blkid");
    let text = std::fs::read_to_string(&record).expect("blkid ran");
    for line in text.lines() {
        let (name, mask) = line.split_once(':').expect("Cap line");
        if name == "CapPrm" || name == "CapBnd" || name == "CapEff" {
            assert_eq!(mask.trim(), "0000000000000000", "{text}");
        }
    }
    let _ = helper
        .client()
        .await
        .unmount(UnmountRequest {
            mount_point: mp.display().to_string(),
            lazy: false,
        })
        .await;
}
