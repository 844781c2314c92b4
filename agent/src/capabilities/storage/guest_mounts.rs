//! A guest's volumes as the local API reports them (`GET /storage`), derived from its Proxmox
//! config: `rootfs` and every `mpN`.
//!
//! PVE mount specs look like `local-lvm:vm-101-disk-1,mp=/mnt/bulk,backup=0,size=100G` (a
//! storage-backed volume) or `/srv/media,mp=/mnt/media` (a bind mount of a host path). The
//! storage id is the part before the first `:` of a volume; bind mounts have none and are never
//! in backups. `backup` defaults to off for mount points and is always on for `rootfs`.
//! Read-only mounts (`ro=1`, e.g. the bootstrap mount) are left out: a controller can place no
//! volume on them.

use std::collections::BTreeMap;

use crate::core::StorageClass;
use crate::infra::pve::types::LxcConfig;

/// One volume the guest can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestMount {
    /// `rootfs` or `mpN`.
    pub key: String,
    /// Proxmox storage id, or empty for a bind mount.
    pub storage: String,
    /// Path inside the guest.
    pub mount_point: String,
    /// Class of the storage, if one was assigned.
    pub class: Option<StorageClass>,
    /// Whether vzdump includes it.
    pub backup: bool,
}

fn options(spec: &str) -> (&str, BTreeMap<&str, &str>) {
    let mut parts = spec.split(',');
    let first = parts.next().unwrap_or_default();
    let mut opts = BTreeMap::new();
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            opts.insert(k, v);
        }
    }
    // The volume may also be given as `volume=...` (PVE accepts both forms).
    let volume = match first.split_once('=') {
        Some(("volume", v)) => v,
        Some(_) => opts.get("volume").copied().unwrap_or_default(),
        None => first,
    };
    (volume, opts)
}

fn truthy(v: Option<&&str>) -> Option<bool> {
    v.map(|v| matches!(*v, "1" | "yes" | "on" | "true"))
}

fn mount(
    key: String,
    spec: &str,
    rootfs: bool,
    classes: &BTreeMap<String, StorageClass>,
) -> Option<GuestMount> {
    let (volume, opts) = options(spec);
    if truthy(opts.get("ro")) == Some(true) {
        return None;
    }
    let bind = volume.starts_with('/');
    let storage = if bind {
        String::new()
    } else {
        volume
            .split_once(':')
            .map(|(s, _)| s.to_owned())
            .unwrap_or_default()
    };
    let mount_point = if rootfs {
        "/".to_owned()
    } else {
        opts.get("mp")?.to_string()
    };
    let backup = if rootfs {
        true
    } else {
        !bind && truthy(opts.get("backup")).unwrap_or(false)
    };
    Some(GuestMount {
        key,
        class: classes.get(&storage).copied(),
        storage,
        mount_point,
        backup,
    })
}

/// The guest's usable volumes: rootfs first, then mount points in index order.
pub fn guest_mounts(
    config: &LxcConfig,
    classes: &BTreeMap<String, StorageClass>,
) -> Vec<GuestMount> {
    let mut out = Vec::new();
    if let Some(rootfs) = &config.rootfs {
        out.extend(mount("rootfs".to_owned(), rootfs, true, classes));
    }
    for (n, spec) in &config.mount_points {
        out.extend(mount(format!("mp{n}"), spec, false, classes));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> LxcConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn reports_rootfs_and_mount_points_with_class_and_backup() {
        let cfg = config(serde_json::json!({
            "rootfs": "local-lvm:vm-101-disk-0,size=8G",
            "mp0": "usb-bulk:101/vm-101-disk-1.raw,mp=/mnt/bulk,backup=0,size=100G",
            "mp1": "local-lvm:vm-101-disk-2,mp=/srv/db,backup=1,size=4G",
        }));
        let classes = BTreeMap::from([
            ("local-lvm".to_owned(), StorageClass::Fast),
            ("usb-bulk".to_owned(), StorageClass::Slow),
        ]);
        let m = guest_mounts(&cfg, &classes);
        assert_eq!(
            m,
            vec![
                GuestMount {
                    key: "rootfs".into(),
                    storage: "local-lvm".into(),
                    mount_point: "/".into(),
                    class: Some(StorageClass::Fast),
                    backup: true
                },
                GuestMount {
                    key: "mp0".into(),
                    storage: "usb-bulk".into(),
                    mount_point: "/mnt/bulk".into(),
                    class: Some(StorageClass::Slow),
                    backup: false
                },
                GuestMount {
                    key: "mp1".into(),
                    storage: "local-lvm".into(),
                    mount_point: "/srv/db".into(),
                    class: Some(StorageClass::Fast),
                    backup: true
                },
            ]
        );
    }

    #[test]
    fn mount_points_default_to_no_backup_and_no_class() {
        let cfg =
            config(serde_json::json!({"mp3": "local:101/vm-101-disk-3.raw,mp=/data,size=1G"}));
        let m = guest_mounts(&cfg, &BTreeMap::new());
        assert_eq!(m[0].key, "mp3");
        assert!(!m[0].backup);
        assert_eq!(m[0].class, None);
    }

    #[test]
    fn bind_mounts_have_no_storage_and_no_backup() {
        let cfg = config(serde_json::json!({"mp0": "/srv/media,mp=/mnt/media,backup=1"}));
        let m = guest_mounts(&cfg, &BTreeMap::new());
        assert_eq!(m[0].storage, "");
        assert!(!m[0].backup);
    }

    #[test]
    fn read_only_mounts_are_left_out() {
        let cfg = config(serde_json::json!({
            "rootfs": "local-lvm:vm-101-disk-0,size=8G",
            "mp9": "/var/lib/felhom-agent/bootstrap/101,mp=/etc/felhom-bootstrap,ro=1",
        }));
        assert_eq!(guest_mounts(&cfg, &BTreeMap::new()).len(), 1);
    }
}
