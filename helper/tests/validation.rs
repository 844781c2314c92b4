//! Every field rejects malformed and smuggled input with INVALID_ARGUMENT naming the field,
//! before any program runs or anything is mounted.

mod common;

use felhom_proto::helper::v1::{
    CreateGoldenRequest, MountByUuidRequest, ReadSmartRequest, UnmountRequest,
};
use tonic::Code;

enum Call {
    Golden(CreateGoldenRequest),
    Mount(MountByUuidRequest),
    Unmount(UnmountRequest),
    Smart(ReadSmartRequest),
}

fn golden(edit: impl FnOnce(&mut CreateGoldenRequest)) -> Call {
    let mut r = common::golden_request();
    edit(&mut r);
    Call::Golden(r)
}

fn mount(prefix: &str, edit: impl FnOnce(&mut MountByUuidRequest)) -> Call {
    let mut r = MountByUuidRequest {
        fs_uuid: "0b7e4d6e-2c1a-4a8e-9d55-3f1b2c4d5e6f".into(),
        mount_point: format!("{prefix}/usb1"),
        fs_type: "ext4".into(),
        options: vec!["noatime".into()],
    };
    edit(&mut r);
    Call::Mount(r)
}

fn unmount(path: String) -> Call {
    Call::Unmount(UnmountRequest {
        mount_point: path,
        lazy: false,
    })
}

fn smart(device: &str) -> Call {
    Call::Smart(ReadSmartRequest {
        device: device.into(),
    })
}

fn cases(prefix: &str) -> Vec<(&'static str, &'static str, Call)> {
    let p = prefix.to_owned();
    let long = "a".repeat(300);
    vec![
        // --- vmid
        (
            "vmid below the golden range",
            "vmid",
            golden(|r| r.vmid = 8999),
        ),
        (
            "vmid above the golden range",
            "vmid",
            golden(|r| r.vmid = 9100),
        ),
        ("vmid zero", "vmid", golden(|r| r.vmid = 0)),
        ("vmid u32::MAX", "vmid", golden(|r| r.vmid = u32::MAX)),
        // --- template_volid
        (
            "template path traversal",
            "template_volid",
            golden(|r| r.template_volid = "local:vztmpl/../../etc/shadow.tar".into()),
        ),
        (
            "template absolute path",
            "template_volid",
            golden(|r| r.template_volid = "/var/lib/vz/template/cache/debian.tar.zst".into()),
        ),
        (
            "template not a vztmpl volume",
            "template_volid",
            golden(|r| r.template_volid = "local:backup/vzdump-lxc-100.tar.zst".into()),
        ),
        (
            "template shell substitution",
            "template_volid",
            golden(|r| r.template_volid = "local:vztmpl/$(reboot).tar.zst".into()),
        ),
        (
            "template option smuggling",
            "template_volid",
            golden(|r| r.template_volid = "--restore=1".into()),
        ),
        (
            "template not a tarball",
            "template_volid",
            golden(|r| r.template_volid = "local:vztmpl/debian.iso".into()),
        ),
        // --- hostname
        (
            "hostname with space and option",
            "hostname",
            golden(|r| r.hostname = "golden --features fuse=1".into()),
        ),
        (
            "hostname semicolon",
            "hostname",
            golden(|r| r.hostname = "golden;reboot".into()),
        ),
        (
            "hostname upper case",
            "hostname",
            golden(|r| r.hostname = "Golden".into()),
        ),
        (
            "hostname leading dash",
            "hostname",
            golden(|r| r.hostname = "-golden".into()),
        ),
        (
            "hostname label of 64",
            "hostname",
            golden(|r| r.hostname = "a".repeat(64)),
        ),
        (
            "hostname empty",
            "hostname",
            golden(|r| r.hostname = String::new()),
        ),
        (
            "hostname NUL byte",
            "hostname",
            golden(|r| r.hostname = "gold\0en".into()),
        ),
        (
            "hostname cyrillic lookalike",
            "hostname",
            golden(|r| r.hostname = "g\u{043e}lden".into()),
        ),
        (
            "hostname newline (log injection)",
            "hostname",
            golden(|r| r.hostname = "golden\nuid=0 outcome=ok".into()),
        ),
        // --- storage
        (
            "storage with colon",
            "storage",
            golden(|r| r.storage = "local:8".into()),
        ),
        (
            "storage shell pipe",
            "storage",
            golden(|r| r.storage = "local|rm".into()),
        ),
        (
            "storage oversized",
            "storage",
            golden(|r| r.storage = "s".repeat(65)),
        ),
        (
            "storage leading digit",
            "storage",
            golden(|r| r.storage = "1local".into()),
        ),
        // --- sizes
        ("disk zero", "disk_gib", golden(|r| r.disk_gib = 0)),
        ("disk huge", "disk_gib", golden(|r| r.disk_gib = 1_000_000)),
        (
            "memory too small",
            "memory_mib",
            golden(|r| r.memory_mib = 16),
        ),
        (
            "memory huge",
            "memory_mib",
            golden(|r| r.memory_mib = u32::MAX),
        ),
        ("cores zero", "cores", golden(|r| r.cores = 0)),
        ("cores too many", "cores", golden(|r| r.cores = 4096)),
        // --- bridge
        (
            "bridge arbitrary interface",
            "bridge",
            golden(|r| r.bridge = Some("eth0".into())),
        ),
        (
            "bridge net0 option smuggling",
            "bridge",
            golden(|r| r.bridge = Some("vmbr0,firewall=0".into())),
        ),
        (
            "bridge empty",
            "bridge",
            golden(|r| r.bridge = Some(String::new())),
        ),
        // --- fs_uuid
        (
            "uuid shell substitution",
            "fs_uuid",
            mount(&p, |r| r.fs_uuid = "$(reboot)".into()),
        ),
        (
            "uuid semicolon",
            "fs_uuid",
            mount(&p, |r| {
                r.fs_uuid = "0b7e4d6e-2c1a-4a8e-9d55-3f1b2c4d5e6f;id".into()
            }),
        ),
        (
            "uuid path traversal",
            "fs_uuid",
            mount(&p, |r| r.fs_uuid = "../../sda1".into()),
        ),
        (
            "uuid wrong group lengths",
            "fs_uuid",
            mount(&p, |r| {
                r.fs_uuid = "0b7e4d6e2c1a-4a8e-9d55-3f1b2c4d5e6f".into()
            }),
        ),
        (
            "uuid non-hex",
            "fs_uuid",
            mount(&p, |r| {
                r.fs_uuid = "zb7e4d6e-2c1a-4a8e-9d55-3f1b2c4d5e6f".into()
            }),
        ),
        (
            "uuid blkid token smuggling",
            "fs_uuid",
            mount(&p, |r| r.fs_uuid = "LABEL=root".into()),
        ),
        (
            "uuid fullwidth digits",
            "fs_uuid",
            mount(&p, |r| r.fs_uuid = "\u{ff10}b7e-4d6e".into()),
        ),
        (
            "uuid empty",
            "fs_uuid",
            mount(&p, |r| r.fs_uuid = String::new()),
        ),
        // --- mount_point
        (
            "mount point outside prefix",
            "mount_point",
            mount(&p, |r| r.mount_point = "/etc".into()),
        ),
        (
            "mount point dot-dot escape",
            "mount_point",
            mount(&p, |r| r.mount_point = format!("{}/../../etc", p)),
        ),
        (
            "mount point is the prefix",
            "mount_point",
            mount(&p, |r| r.mount_point = p.clone()),
        ),
        (
            "mount point prefix lookalike",
            "mount_point",
            mount(&p, |r| r.mount_point = format!("{}x/usb1", p)),
        ),
        (
            "mount point relative",
            "mount_point",
            mount(&p, |r| r.mount_point = "usb1".into()),
        ),
        (
            "mount point fullwidth solidus",
            "mount_point",
            mount(&p, |r| r.mount_point = format!("{}\u{ff0f}usb1", p)),
        ),
        (
            "mount point NUL byte",
            "mount_point",
            mount(&p, |r| r.mount_point = format!("{}/usb\0/etc", p)),
        ),
        (
            "mount point oversized",
            "mount_point",
            mount(&p, |r| r.mount_point = format!("{}/{}", p, long)),
        ),
        (
            "mount point too deep",
            "mount_point",
            mount(&p, |r| r.mount_point = format!("{}/a/b/c/d/e", p)),
        ),
        // --- fs_type
        (
            "fs type not allowlisted",
            "fs_type",
            mount(&p, |r| r.fs_type = "ntfs".into()),
        ),
        (
            "fs type upper case",
            "fs_type",
            mount(&p, |r| r.fs_type = "EXT4".into()),
        ),
        (
            "fs type with options",
            "fs_type",
            mount(&p, |r| r.fs_type = "ext4,exec".into()),
        ),
        (
            "fs type bind",
            "fs_type",
            mount(&p, |r| r.fs_type = "none".into()),
        ),
        // --- options
        (
            "option exec",
            "options",
            mount(&p, |r| r.options = vec!["exec".into()]),
        ),
        (
            "option suid",
            "options",
            mount(&p, |r| r.options = vec!["suid".into()]),
        ),
        (
            "option dev",
            "options",
            mount(&p, |r| r.options = vec!["dev".into()]),
        ),
        (
            "option smuggled in a list",
            "options",
            mount(&p, |r| r.options = vec!["noatime,suid".into()]),
        ),
        (
            "option with a value",
            "options",
            mount(&p, |r| r.options = vec!["uid=0".into()]),
        ),
        (
            "option bind",
            "options",
            mount(&p, |r| r.options = vec!["bind".into()]),
        ),
        (
            "option duplicated",
            "options",
            mount(&p, |r| r.options = vec!["ro".into(), "ro".into()]),
        ),
        // --- unmount
        ("unmount outside prefix", "mount_point", unmount("/".into())),
        (
            "unmount traversal",
            "mount_point",
            unmount(format!("{}/usb1/../../..", p)),
        ),
        (
            "unmount dot component",
            "mount_point",
            unmount(format!("{}/./usb1", p)),
        ),
        // --- device
        ("device outside /dev", "device", smart("/etc/shadow")),
        (
            "device traversal out of /dev",
            "device",
            smart("/dev/../etc/shadow"),
        ),
        ("device partition", "device", smart("/dev/sda1")),
        (
            "device option smuggling",
            "device",
            smart("-d sat /dev/sda"),
        ),
        (
            "device shell metacharacters",
            "device",
            smart("/dev/sda;reboot"),
        ),
        (
            "device by-id traversal",
            "device",
            smart("/dev/disk/by-id/../../../etc/passwd"),
        ),
        ("device not a disk", "device", smart("/dev/mem")),
        (
            "device nvme controller char device",
            "device",
            smart("/dev/nvme0"),
        ),
        (
            "device oversized",
            "device",
            smart(&format!("/dev/disk/by-id/{long}")),
        ),
    ]
}

#[tokio::test]
async fn bad_inputs_are_rejected_with_the_field_named() {
    let dir = common::temp_dir();
    let ran = dir.path().join("a-program-ran");
    let stand_in = format!("touch {}", ran.display());
    let pct = common::script(dir.path(), "pct", &stand_in);
    let smartctl = common::script(dir.path(), "smartctl", &stand_in);
    let helper = common::start_in(
        dir,
        common::Options {
            pct: Some(pct),
            smartctl: Some(smartctl),
            ..Default::default()
        },
    );
    let prefix = helper.prefix.display().to_string();
    let mut client = helper.client().await;
    let table = cases(&prefix);
    assert!(table.len() >= 40, "the table covers at least 40 bad inputs");
    let mut failures = Vec::new();
    for (name, field, call) in table {
        let result = match call {
            Call::Golden(r) => client.create_golden(r).await.map(|_| ()),
            Call::Mount(r) => client.mount_by_uuid(r).await.map(|_| ()),
            Call::Unmount(r) => client.unmount(r).await.map(|_| ()),
            Call::Smart(r) => client.read_smart(r).await.map(|_| ()),
        };
        match result {
            Ok(()) => failures.push(format!("{name}: accepted")),
            Err(status) => {
                let meta = status
                    .metadata()
                    .get("felhom-field")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if status.code() != Code::InvalidArgument
                    || !status.message().starts_with(&format!("{field}: "))
                    || meta.as_deref() != Some(field)
                {
                    failures.push(format!(
                        "{name}: expected INVALID_ARGUMENT naming {field}, got {:?} {:?} (field {meta:?})",
                        status.code(),
                        status.message()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!ran.exists(), "a program ran for a rejected request");
    let mounts = client
        .list_mounts(felhom_proto::helper::v1::ListMountsRequest {})
        .await
        .expect("list mounts")
        .into_inner();
    assert!(mounts.mounts.is_empty(), "{mounts:?}");
    let audit = helper.audit_text();
    assert!(audit.contains("outcome=invalid field=hostname"), "{audit}");
    assert!(
        !audit.contains("reboot"),
        "rejected raw input reached the audit log: {audit}"
    );
}
