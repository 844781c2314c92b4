//! The helper's request validation: every field grammar of `felhom_helper::validate`, alone
//! and composed as the server composes them (golden create, mount).
//!
//! Input: UTF-8 (protobuf strings are); line 1 names the field, the rest is its value(s):
//! - `hostname` / `storage` / `template_volid` / `bridge` / `fs_uuid` / `fs_type` / `device` /
//!   `mount_point`: the rest of the input is the value (newlines included: the grammar must
//!   refuse them);
//! - `vmid` / `bounded`: `<u32>` then optionally `<lo>..=<hi>`;
//! - `options`: one option per line;
//! - `golden`: vmid, template, hostname, storage, disk GiB, memory MiB, cores, bridge (empty =
//!   none), one per line — validated like `server::validate_golden`, then `GoldenSpec::argv`;
//! - `mount`: fs_uuid, mount_point, fs_type, then comma-separated options;
//! - anything else: the rest goes through every single-value grammar.
//!
//! Checked beyond "no panic": every accepted text is non-empty printable ASCII without spaces,
//! never starts with `-` (no option injection into pct/mount/smartctl argv), and keeps its
//! length cap; a mount point lies strictly below the prefix, at most 4 plain components deep;
//! `pct create`'s argv alternates fixed `--flag`s and values that never start with `-`.
#![no_main]

use std::path::{Component, Path};

use felhom_fuzz::split_str_line;
use felhom_helper::golden::GoldenSpec;
use felhom_helper::validate::{
    Bridge, DevicePath, FsType, FsUuid, Hostname, MountOption, MountPoint, StorageId,
    TemplateVolid, Vmid, bounded,
};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "/mnt/felhom";
const GOLDEN_RANGE: std::ops::RangeInclusive<u32> = 9000..=9099;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (field, rest) = split_str_line(text);
    match field {
        "vmid" => {
            let (value, range) = number_and_range(rest);
            if let (Some(value), Some(range)) = (value, range) {
                if let Ok(v) = Vmid::parse(value, &range) {
                    assert!(range.contains(&v.get()));
                    assert_eq!(v.get(), value);
                }
            }
        }
        "bounded" => {
            let (value, range) = number_and_range(rest);
            if let (Some(value), Some(range)) = (value, range) {
                if let Ok(v) = bounded("disk_gib", value, range.clone()) {
                    assert!(range.contains(&v));
                }
            }
        }
        "options" => {
            options(&rest.split('\n').map(str::to_owned).collect::<Vec<_>>());
        }
        "golden" => golden(rest),
        "mount" => mount(rest),
        "hostname" => {
            hostname(rest);
        }
        "storage" => {
            storage(rest);
        }
        "template_volid" => {
            template(rest);
        }
        "bridge" => {
            bridge(rest);
        }
        "fs_uuid" => {
            fs_uuid(rest);
        }
        "fs_type" => {
            fs_type(rest);
        }
        "device" => {
            device(rest);
        }
        "mount_point" => {
            mount_point(rest);
        }
        _ => {
            for value in [text, rest] {
                hostname(value);
                storage(value);
                template(value);
                bridge(value);
                fs_uuid(value);
                fs_type(value);
                device(value);
                mount_point(value);
                options(&value.split(',').map(str::to_owned).collect::<Vec<_>>());
            }
        }
    }
});

/// Printable ASCII, no space, no leading `-`, non-empty, at most `max` bytes.
fn assert_plain(value: &str, max: usize) {
    assert!(!value.is_empty(), "{value:?}");
    assert!(value.len() <= max, "{value:?} longer than {max}");
    assert!(value.bytes().all(|b| b.is_ascii_graphic()), "{value:?}");
    assert!(!value.starts_with('-'), "{value:?}");
}

fn hostname(value: &str) -> Option<Hostname> {
    let h = Hostname::parse(value).ok()?;
    assert_eq!(h.as_str(), value);
    assert_plain(value, 253);
    for label in value.split('.') {
        assert!((1..=63).contains(&label.len()), "{value:?}");
        assert!(!label.starts_with('-') && !label.ends_with('-'), "{value:?}");
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
    Some(h)
}

fn storage(value: &str) -> Option<StorageId> {
    let s = StorageId::parse("storage", value).ok()?;
    assert_eq!(s.as_str(), value);
    assert_plain(value, 64);
    assert!(value.as_bytes()[0].is_ascii_alphabetic(), "{value:?}");
    assert!(!value.contains([':', '/', ',', '=']), "{value:?}");
    Some(s)
}

fn template(value: &str) -> Option<TemplateVolid> {
    let t = TemplateVolid::parse(value).ok()?;
    assert_eq!(t.as_str(), value);
    assert_plain(value, 255);
    let (store, file) = value.split_once(":vztmpl/").expect("has :vztmpl/");
    assert!(StorageId::parse("storage", store).is_ok(), "{value:?}");
    assert!(!file.contains('/') && !file.starts_with('.'), "{value:?}");
    Some(t)
}

fn bridge(value: &str) -> Option<Bridge> {
    let b = Bridge::parse(value).ok()?;
    assert_eq!(b.as_str(), value);
    assert_plain(value, 15);
    let n: u32 = value
        .strip_prefix("vmbr")
        .and_then(|n| n.parse().ok())
        .expect("vmbrN");
    assert!(n <= 4094);
    assert_eq!(format!("vmbr{n}"), value, "no leading zeros");
    Some(b)
}

fn fs_uuid(value: &str) -> Option<FsUuid> {
    let u = FsUuid::parse(value).ok()?;
    assert_eq!(u.as_str(), value);
    assert_plain(value, 36);
    assert!(
        value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
        "{value:?}"
    );
    assert!(value.len() == 36 || value.len() == 9, "{value:?}");
    Some(u)
}

fn fs_type(value: &str) -> Option<FsType> {
    let t = FsType::parse(value).ok()?;
    assert_eq!(t.as_str(), value);
    assert_eq!(FsType::parse(t.as_str()), Ok(t));
    Some(t)
}

fn device(value: &str) -> Option<DevicePath> {
    let d = DevicePath::parse(value).ok()?;
    assert_eq!(d.as_str(), value);
    assert!(value.starts_with("/dev/"), "{value:?}");
    assert_plain(value, 255);
    assert!(!value.contains("/../") && !value.contains("/./"), "{value:?}");
    assert!(!value.contains("-part"), "{value:?}");
    Some(d)
}

fn mount_point(value: &str) -> Option<MountPoint> {
    let prefix = Path::new(PREFIX);
    let mp = MountPoint::parse(value, prefix).ok()?;
    assert_plain(value, 255);
    let path = mp.as_path();
    assert_eq!(path, Path::new(value));
    let below = path.strip_prefix(prefix).expect("strictly below the prefix");
    let depth = below.components().count();
    assert!((1..=4).contains(&depth), "{value:?}");
    assert!(
        below
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{value:?}"
    );
    assert!(
        !value.split('/').any(|c| c == "." || c == ".."),
        "{value:?}"
    );
    Some(mp)
}

fn options(values: &[String]) -> Option<Vec<MountOption>> {
    let opts = MountOption::parse_list(values).ok()?;
    assert!(opts.len() <= 6);
    assert_eq!(opts.len(), values.len());
    for (i, o) in opts.iter().enumerate() {
        assert_eq!(o.as_str(), values[i]);
        assert!(!opts[..i].contains(o), "duplicate {o:?}");
    }
    assert!(!(opts.contains(&MountOption::NoAtime) && opts.contains(&MountOption::RelAtime)));
    Some(opts)
}

fn number_and_range(rest: &str) -> (Option<u32>, Option<std::ops::RangeInclusive<u32>>) {
    let (value, range) = split_str_line(rest);
    let range = if range.is_empty() {
        Some(GOLDEN_RANGE)
    } else {
        range
            .split_once("..=")
            .and_then(|(lo, hi)| Some(lo.parse().ok()?..=hi.parse().ok()?))
    };
    (value.parse().ok(), range)
}

/// As `server::validate_golden` builds the spec, then the argv pct gets.
fn golden(rest: &str) {
    let lines: Vec<&str> = rest.split('\n').collect();
    let [vmid, template_volid, host, store, disk, memory, cores, bridge_name] = lines.as_slice()
    else {
        return;
    };
    let parse = |s: &str| s.parse::<u32>().ok();
    let (Some(vmid), Some(disk), Some(memory), Some(cores)) =
        (parse(vmid), parse(disk), parse(memory), parse(cores))
    else {
        return;
    };
    let spec = (|| {
        Some(GoldenSpec {
            vmid: Vmid::parse(vmid, &GOLDEN_RANGE).ok()?,
            template: template(template_volid)?,
            hostname: hostname(host)?,
            storage: storage(store)?,
            disk_gib: bounded("disk_gib", disk, 1..=1024).ok()?,
            memory_mib: bounded("memory_mib", memory, 64..=262_144).ok()?,
            cores: bounded("cores", cores, 1..=128).ok()?,
            bridge: match *bridge_name {
                "" => None,
                b => Some(bridge(b)?),
            },
        })
    })();
    let Some(spec) = spec else { return };
    let argv = spec.argv();
    assert_eq!(argv[0], "create");
    for value in &argv[1..3] {
        assert!(!value.starts_with('-'), "{argv:?}");
    }
    for pair in argv[3..].chunks(2) {
        let [flag, value] = pair else {
            panic!("flag without value: {argv:?}");
        };
        assert!(
            [
                "--hostname",
                "--storage",
                "--rootfs",
                "--memory",
                "--cores",
                "--unprivileged",
                "--features",
                "--net0"
            ]
            .contains(&flag.as_str()),
            "{argv:?}"
        );
        assert!(!value.starts_with('-') && !value.is_empty(), "{argv:?}");
    }
    assert!(argv.iter().all(|a| !a.contains('\0') && !a.contains(' ')));
}

/// As the server validates a mount request.
fn mount(rest: &str) {
    let lines: Vec<&str> = rest.split('\n').collect();
    let [uuid, mp, ty, opts] = lines.as_slice() else {
        return;
    };
    let _ = (
        fs_uuid(uuid),
        mount_point(mp),
        fs_type(ty),
        match *opts {
            "" => options(&[]),
            list => options(&list.split(',').map(str::to_owned).collect::<Vec<_>>()),
        },
    );
}
