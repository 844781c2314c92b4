//! Routing and the read-only endpoints. Mutating guest operations live in `ops`.
//!
//! Order of checks mirrors pve-manager `PVE/HTTPServer.pm`: authentication first (401), then
//! handler lookup (501 `Method '<M> <path>' not implemented`), then the handler's declared
//! permission check (403) and only then the handler body (so a missing guest behind a failed
//! permission check is still a 403, like real PVE).
//!
//! Tasks follow pve-manager `PVE/API2/Tasks.pm` (verified): a token's tasks report `user` and
//! `tokenid` separately; a token sees only its own tasks, a user its own and its tokens';
//! others need `Sys.Audit` on `/nodes/<node>`; the list defaults to `source=archive`
//! (finished tasks only), running ones show `status: RUNNING` with `source=active|all`;
//! list and log set `total`; a malformed UPID is a 400 `upid: unable to parse worker upid`,
//! an unknown one `upid: no such task` (status) or the log line
//! `unable to open file - No such file or directory` (log).
//!
//! Storage content (pve-storage `check_volume_access`, as quoted from `Storage.pm` in a
//! third-party analysis): each backup volume is listed only with `Datastore.Allocate` on the
//! storage, or `Datastore.AllocateSpace` on it plus `VM.Backup` on the owning guest; others
//! are silently left out.
//!
//! Not verified: the text for `interfaces` on a stopped guest (`CT <vmid> not running`), the
//! unknown-node text (a hostname-lookup failure), and the exact field sets of `/nodes` and
//! `status/current` beyond what PROXMOX-FACTS.md lists.

use hyper::Method;
use serde_json::{Map, Value, json};

pub use super::call::{Call, guest};
use super::fixture::GuestStatus;
use super::ops;
use super::reply::ApiError;
use super::state::{Guest, TaskState, World};

/// Dispatches an authenticated request under `/api2/json`.
pub fn route(
    call: &Call,
    method: &Method,
    rel: &str,
    segs: &[String],
) -> Result<(Value, Option<usize>), ApiError> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let not_impl = || ApiError::new(501, format!("Method '{method} {rel}' not implemented"));
    let state = call.state.clone();
    let mut guard = state.lock();
    let w: &mut World = &mut guard;
    let m = method.as_str();
    match (m, s.as_slice()) {
        ("GET", ["nodes", node, "tasks"]) => {
            check_node(w, node)?;
            list_tasks(call, w).map(|(v, n)| (v, Some(n)))
        }
        ("GET", ["nodes", node, "tasks", upid, "log"]) => {
            check_node(w, node)?;
            task_log(call, w, upid).map(|(v, n)| (v, Some(n)))
        }
        _ => route_plain(call, w, m, &s)
            .unwrap_or_else(|| Err(not_impl()))
            .map(|v| (v, None)),
    }
}

fn route_plain(call: &Call, w: &mut World, m: &str, s: &[&str]) -> Option<Result<Value, ApiError>> {
    Some(match (m, s) {
        ("GET", ["version"]) => Ok(json!(w.version)),
        ("GET", ["nodes"]) => nodes(call, w),
        ("GET", ["cluster", "resources"]) => cluster_resources(call, w),
        ("GET", ["cluster", "nextid"]) => nextid(call, w),
        ("GET", ["storage"]) => storage_config(call, w),
        ("GET", ["storage", sid]) => storage_config_one(call, w, sid),
        ("POST", ["storage"]) => create_storage(call, w),
        ("GET", ["access", "permissions"]) => permissions(call, w),
        (_, ["access", ..]) => return super::access_api::route(call, w, m, s),
        ("GET" | "POST" | "PUT" | "DELETE", ["nodes", node, rest @ ..]) => {
            if let Err(e) = check_node(w, node) {
                return Some(Err(e));
            }
            return node_route(call, w, m, rest);
        }
        _ => return None,
    })
}

fn node_route(
    call: &Call,
    w: &mut World,
    m: &str,
    rest: &[&str],
) -> Option<Result<Value, ApiError>> {
    Some(match (m, rest) {
        ("GET", ["status"]) => node_status(call, w),
        ("GET", ["lxc"]) => list_lxc(call, w),
        ("POST", ["lxc"]) => ops::create(call, w),
        ("GET", ["lxc", vmid]) => with_vmid(vmid, |v| guest_index(call, w, v)),
        ("DELETE", ["lxc", vmid]) => with_vmid(vmid, |v| ops::destroy(call, w, v)),
        ("GET", ["lxc", vmid, "status", "current"]) => {
            with_vmid(vmid, |v| status_current(call, w, v))
        }
        (
            "POST",
            [
                "lxc",
                vmid,
                "status",
                action @ ("start" | "stop" | "shutdown"),
            ],
        ) => with_vmid(vmid, |v| ops::power(call, w, v, action)),
        ("GET", ["lxc", vmid, "config"]) => with_vmid(vmid, |v| get_config(call, w, v)),
        ("PUT", ["lxc", vmid, "config"]) => with_vmid(vmid, |v| ops::set_config(call, w, v)),
        ("PUT", ["lxc", vmid, "resize"]) => with_vmid(vmid, |v| ops::resize(call, w, v)),
        ("GET", ["lxc", vmid, "snapshot"]) => with_vmid(vmid, |v| list_snapshots(call, w, v)),
        ("POST", ["lxc", vmid, "snapshot"]) => with_vmid(vmid, |v| ops::snapshot(call, w, v)),
        ("POST", ["lxc", vmid, "snapshot", snap, "rollback"]) => {
            with_vmid(vmid, |v| ops::rollback(call, w, v, snap))
        }
        ("DELETE", ["lxc", vmid, "snapshot", snap]) => {
            with_vmid(vmid, |v| ops::delete_snapshot(call, w, v, snap))
        }
        ("GET", ["lxc", vmid, "interfaces"]) => with_vmid(vmid, |v| interfaces(call, w, v)),
        ("POST", ["vzdump"]) => ops::vzdump(call, w),
        ("GET", ["storage"]) => node_storage(call, w),
        ("GET", ["storage", sid, "status"]) => storage_status(call, w, sid),
        ("GET", ["storage", sid, "content"]) => storage_content(call, w, sid),
        ("GET", ["tasks", upid, "status"]) => {
            let answer = task_status(call, w, upid);
            if answer.is_ok() {
                w.task_timing
                    .entry((*upid).to_owned())
                    .or_default()
                    .status_reads += 1;
            }
            answer
        }
        ("GET", ["disks", "list"]) => node_audit(call, w).map(|()| json!(w.node.disks)),
        ("GET", ["disks", "lvmthin"]) => node_audit(call, w).map(|()| json!(w.node.lvmthin)),
        _ => return None,
    })
}

fn with_vmid(raw: &str, f: impl FnOnce(u32) -> Result<Value, ApiError>) -> Result<Value, ApiError> {
    f(super::reply::parse_vmid(raw)?)
}

fn check_node(w: &World, node: &str) -> Result<(), ApiError> {
    if node == w.node.name || node == "localhost" {
        Ok(())
    } else {
        Err(ApiError::internal(format!(
            "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
        )))
    }
}

fn node_audit(call: &Call, w: &World) -> Result<(), ApiError> {
    call.need(w, &format!("/nodes/{}", w.node.name), "Sys.Audit")
}

fn nodes(call: &Call, w: &World) -> Result<Value, ApiError> {
    let fp = call.state.fingerprint();
    let n = &w.node;
    let mut entry = json!({
        "node": n.name, "status": "online", "type": "node", "id": format!("node/{}", n.name),
        "ssl_fingerprint": fp, "level": "",
    });
    if call.has(w, &format!("/nodes/{}", n.name), "Sys.Audit") {
        let extra = json!({
            "cpu": 0.0312, "maxcpu": n.cpus, "mem": n.memory_used, "maxmem": n.memory_total,
            "disk": n.rootfs_used, "maxdisk": n.rootfs_total, "uptime": n.uptime,
        });
        merge(&mut entry, extra);
    }
    Ok(json!([entry]))
}

fn node_status(call: &Call, w: &World) -> Result<Value, ApiError> {
    node_audit(call, w)?;
    let n = &w.node;
    Ok(json!({
        "cpu": 0.0312,
        "wait": 0.0008,
        "loadavg": ["0.21", "0.18", "0.15"],
        "memory": {"total": n.memory_total, "used": n.memory_used, "free": n.memory_total - n.memory_used.min(n.memory_total), "available": n.memory_total - n.memory_used.min(n.memory_total)},
        "swap": {"total": 8_589_930_496_u64, "used": 0, "free": 8_589_930_496_u64},
        "rootfs": {"total": n.rootfs_total, "used": n.rootfs_used, "avail": n.rootfs_total - n.rootfs_used.min(n.rootfs_total), "free": n.rootfs_total - n.rootfs_used.min(n.rootfs_total)},
        "uptime": n.uptime,
        "idle": 0,
        "cpuinfo": {"cpus": n.cpus, "cores": n.cpus, "sockets": 1, "model": n.cpu_model, "mhz": "2100.000", "hvm": "1", "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc vmx", "user_hz": 100},
        "kversion": n.kversion,
        "pveversion": n.pveversion,
        "current-kernel": {"sysname": "Linux", "release": "6.8.12-9-pve", "machine": "x86_64", "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)"},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "ksm": {"shared": 0},
    }))
}

/// Sizes parsed from the config (`memory` MiB, `rootfs` `size=`).
fn guest_sizes(g: &Guest) -> (u64, u64, u64) {
    let mib = |k: &str| {
        g.config
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            << 20
    };
    let maxdisk = g
        .config
        .get("rootfs")
        .and_then(|r| ops::volume_size(r))
        .unwrap_or(0);
    (mib("memory"), mib("swap"), maxdisk)
}

fn guest_summary(w: &World, g: &Guest) -> Value {
    let (maxmem, maxswap, maxdisk) = guest_sizes(g);
    let running = g.status == GuestStatus::Running;
    let mut v = json!({
        "vmid": g.vmid,
        "name": g.name(),
        "status": g.status.as_str(),
        "type": "lxc",
        "maxmem": maxmem,
        "maxswap": maxswap,
        "maxdisk": maxdisk,
        "mem": if running { maxmem / 5 } else { 0 },
        "swap": 0,
        "disk": if running { maxdisk / 4 } else { 0 },
        "cpu": if running { 0.0125 } else { 0.0 },
        "cpus": g.config.get("cores").and_then(|c| c.parse::<u64>().ok()).unwrap_or(1),
        "uptime": g.uptime(),
        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    });
    if let Some(tags) = g.config.get("tags") {
        v["tags"] = json!(tags);
    }
    if let Some(lock) = g.lock() {
        v["lock"] = json!(lock);
    }
    if g.config.get("template").is_some_and(|t| t == "1") {
        v["template"] = json!(1);
    }
    if running {
        v["pid"] = json!(10_000 + g.vmid);
    }
    let _ = w;
    v
}

fn list_lxc(call: &Call, w: &World) -> Result<Value, ApiError> {
    let out: Vec<Value> = w
        .guests
        .values()
        .filter(|g| call.has(w, &format!("/vms/{}", g.vmid), "VM.Audit"))
        .map(|g| guest_summary(w, g))
        .collect();
    Ok(json!(out))
}

fn guest_index(call: &Call, w: &World, vmid: u32) -> Result<Value, ApiError> {
    call.need(w, &format!("/vms/{vmid}"), "VM.Audit")?;
    guest(w, vmid)?;
    let dirs = [
        "config",
        "pending",
        "status",
        "vncproxy",
        "termproxy",
        "vncwebsocket",
        "spiceproxy",
        "migrate",
        "clone",
        "rrd",
        "rrddata",
        "firewall",
        "snapshot",
        "resize",
        "interfaces",
    ];
    Ok(json!(
        dirs.iter()
            .map(|d| json!({"subdir": d}))
            .collect::<Vec<_>>()
    ))
}

fn status_current(call: &Call, w: &World, vmid: u32) -> Result<Value, ApiError> {
    call.need(w, &format!("/vms/{vmid}"), "VM.Audit")?;
    let g = guest(w, vmid)?;
    let mut v = guest_summary(w, g);
    v["ha"] = json!({"managed": 0});
    Ok(v)
}

fn cluster_resources(call: &Call, w: &World) -> Result<Value, ApiError> {
    let kind = call.params.get("type");
    if let Some(k) = kind
        && !matches!(k, "vm" | "storage" | "node" | "sdn" | "pool")
    {
        return Err(ApiError::param(
            "type",
            format!(
                "value '{k}' does not have a value in the enumeration 'vm, storage, node, sdn'"
            ),
        ));
    }
    let mut out = Vec::new();
    if kind.is_none() || kind == Some("vm") {
        for g in w.guests.values() {
            if !call.has(w, &format!("/vms/{}", g.vmid), "VM.Audit") {
                continue;
            }
            let mut v = guest_summary(w, g);
            v["id"] = json!(format!("lxc/{}", g.vmid));
            v["node"] = json!(w.node.name);
            v["maxcpu"] = v["cpus"].clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("cpus");
            }
            v["template"] = json!(i32::from(
                g.config.get("template").is_some_and(|t| t == "1")
            ));
            if v.get("tags").is_none() {
                v["tags"] = json!("");
            }
            out.push(v);
        }
    }
    if (kind.is_none() || kind == Some("node"))
        && call.has(w, &format!("/nodes/{}", w.node.name), "Sys.Audit")
    {
        let n = &w.node;
        out.push(json!({
            "id": format!("node/{}", n.name), "type": "node", "node": n.name, "status": "online",
            "cpu": 0.0312, "maxcpu": n.cpus, "mem": n.memory_used, "maxmem": n.memory_total,
            "disk": n.rootfs_used, "maxdisk": n.rootfs_total, "uptime": n.uptime, "level": "",
        }));
    }
    if kind.is_none() || kind == Some("storage") {
        for s in &w.storages {
            if !call.has(w, &format!("/storage/{}", s.storage), "Datastore.Audit") {
                continue;
            }
            out.push(json!({
                "id": format!("storage/{}/{}", w.node.name, s.storage), "type": "storage",
                "storage": s.storage, "node": w.node.name, "status": "available",
                "plugintype": s.kind, "content": s.content.join(","), "shared": i32::from(s.shared),
                "disk": s.used, "maxdisk": s.total,
            }));
        }
    }
    Ok(json!(out))
}

fn nextid(call: &Call, w: &World) -> Result<Value, ApiError> {
    if let Some(raw) = call.params.get("vmid") {
        let vmid = super::reply::parse_vmid(raw)?;
        if w.guests.contains_key(&vmid) {
            return Err(ApiError::param("vmid", format!("VM {vmid} already exists")));
        }
        return Ok(json!(vmid.to_string()));
    }
    let next = (100u32..)
        .find(|id| !w.guests.contains_key(id))
        .unwrap_or(100);
    Ok(json!(next.to_string()))
}

fn storage_config(call: &Call, w: &World) -> Result<Value, ApiError> {
    let out: Vec<Value> = w
        .storages
        .iter()
        .filter(|s| {
            let path = format!("/storage/{}", s.storage);
            call.has(w, &path, "Datastore.Audit") || call.has(w, &path, "Datastore.AllocateSpace")
        })
        .map(|s| {
            let mut v = json!({
                "storage": s.storage, "type": s.kind, "content": s.content.join(","),
                "digest": "3c9d2a84b7d64fa56d6c46cfd8c1af4b7ee5d4b9",
            });
            for (k, val) in [
                ("path", &s.path),
                ("server", &s.server),
                ("datastore", &s.datastore),
                ("fingerprint", &s.fingerprint),
                ("vgname", &s.vgname),
                ("thinpool", &s.thinpool),
            ] {
                if let Some(x) = val {
                    v[k] = json!(x);
                }
            }
            if s.shared {
                v["shared"] = json!(1);
            }
            if s.kind == "pbs" {
                v["username"] = json!(super::pbs_link::pbs_user(s));
                v["prune-backups"] = json!("keep-all=1");
                if let Some(port) = s.port {
                    v["port"] = json!(port);
                }
                // PBSPlugin: storage.cfg keeps the key's fingerprint; the key itself lives in
                // /etc/pve/priv/storage/<id>.enc and is never returned.
                if let Some(key) = w.storage_keys.get(&s.storage) {
                    v["encryption-key"] = json!(key.fingerprint());
                }
            }
            v
        })
        .collect();
    Ok(json!(out))
}

/// `GET /storage/{storage}` (pve-storage `API2/Storage/Config.pm` `read`: needs
/// `Datastore.Allocate` on the storage; the same section as the index lists).
fn storage_config_one(call: &Call, w: &World, sid: &str) -> Result<Value, ApiError> {
    call.need(w, &format!("/storage/{sid}"), "Datastore.Allocate")?;
    let all = storage_config(call, w)?;
    all.as_array()
        .and_then(|a| a.iter().find(|v| v["storage"] == sid).cloned())
        .ok_or_else(|| ApiError::internal(format!("storage '{sid}' does not exist")))
}

/// `POST /storage` (pve-storage `API2/Storage/Config.pm` `create`: `Datastore.Allocate` on
/// `/storage`), for type `pbs` only: PBSPlugin's `on_add_hook` stores the password in
/// `priv/storage/<id>.pw` and, for `encryption-key autogen`, makes a key (`proxmox-backup-client
/// key create --kdf none`) in `priv/storage/<id>.enc`; storage.cfg keeps the key's fingerprint
/// and the answer carries the key once (`config.encryption-key`). A taken id:
/// `create storage failed: storage ID '<id>' already defined`.
fn create_storage(call: &Call, w: &mut World) -> Result<Value, ApiError> {
    call.need(w, "/storage", "Datastore.Allocate")?;
    let sid = call.params.required("storage")?.to_owned();
    let kind = call.params.required("type")?.to_owned();
    let id_ok = sid.len() >= 2
        && sid.starts_with(|c: char| c.is_ascii_alphabetic())
        && sid.ends_with(|c: char| c.is_ascii_alphanumeric())
        && sid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !id_ok {
        return Err(ApiError::param(
            "storage",
            format!("invalid format - storage ID '{sid}' contains illegal characters"),
        ));
    }
    if kind != "pbs" {
        return Err(ApiError::new(
            501,
            format!("the simulator adds only pbs storages, not '{kind}'"),
        ));
    }
    for p in ["server", "datastore"] {
        call.params.required(p)?;
    }
    if w.storage(&sid).is_some() {
        return Err(ApiError::internal(format!(
            "create storage failed: storage ID '{sid}' already defined"
        )));
    }
    let get = |k: &str| call.params.get(k).map(str::to_owned);
    let port = match call.params.get("port") {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| ApiError::param("port", format!("value '{p}' is not a valid port")))?,
        ),
    };
    let content = get("content").unwrap_or_else(|| "backup".to_owned());
    w.storages.push(super::fixture::StorageFixture {
        storage: sid.clone(),
        kind,
        content: content.split(',').map(str::to_owned).collect(),
        path: None,
        server: get("server"),
        datastore: get("datastore"),
        fingerprint: get("fingerprint"),
        port,
        username: get("username"),
        encryption_key: None,
        vgname: None,
        thinpool: None,
        shared: true,
        enabled: true,
        active: true,
        total: 1 << 40,
        used: 0,
    });
    if let Some(password) = call.params.get("password") {
        w.write_priv_file(&format!("{sid}.pw"), &format!("{password}\n"))
            .map_err(ApiError::internal)?;
    }
    let mut config = serde_json::Map::new();
    match call.params.get("encryption-key") {
        None => {}
        Some("autogen") => {
            // PBSPlugin's autogen renames an existing key file to `<id>.enc.old` first.
            w.rename_priv_file(&format!("{sid}.enc"), &format!("{sid}.enc.old"))
                .map_err(ApiError::internal)?;
            let key = crate::pbs::PbsKey::generate();
            config.insert("encryption-key".into(), json!(key.to_json()));
            w.write_key_file(&sid, Some(&key))
                .map_err(ApiError::internal)?;
            w.storage_keys.insert(sid.clone(), key);
        }
        Some(text) => {
            let key = crate::pbs::PbsKey::from_json(text).map_err(|_| {
                ApiError::internal("create storage failed: Value does not seems like a valid, JSON formatted encryption key!")
            })?;
            config.insert("encryption-key".into(), json!(text));
            w.write_key_file(&sid, Some(&key))
                .map_err(ApiError::internal)?;
            w.storage_keys.insert(sid.clone(), key);
        }
    }
    Ok(json!({"storage": sid, "type": "pbs", "config": config}))
}

fn storage_entry(s: &super::fixture::StorageFixture) -> Value {
    let avail = s.total.saturating_sub(s.used);
    #[allow(clippy::cast_precision_loss)]
    let fraction = if s.total == 0 {
        0.0
    } else {
        s.used as f64 / s.total as f64
    };
    json!({
        "storage": s.storage, "type": s.kind, "content": s.content.join(","),
        "active": i32::from(s.active), "enabled": i32::from(s.enabled), "shared": i32::from(s.shared),
        "total": if s.active { s.total } else { 0 }, "used": if s.active { s.used } else { 0 },
        "avail": if s.active { avail } else { 0 }, "used_fraction": fraction,
    })
}

fn storage_visible(call: &Call, w: &World, sid: &str) -> bool {
    let path = format!("/storage/{sid}");
    call.has(w, &path, "Datastore.Audit") || call.has(w, &path, "Datastore.AllocateSpace")
}

fn node_storage(call: &Call, w: &World) -> Result<Value, ApiError> {
    let content = call.params.get("content");
    let only = call.params.get("storage");
    let out: Vec<Value> = w
        .storages
        .iter()
        .filter(|s| storage_visible(call, w, &s.storage))
        .filter(|s| content.is_none_or(|c| s.content.iter().any(|x| x == c)))
        .filter(|s| only.is_none_or(|o| o == s.storage))
        .map(storage_entry)
        .collect();
    Ok(json!(out))
}

fn storage_status(call: &Call, w: &World, sid: &str) -> Result<Value, ApiError> {
    call.need_any(
        w,
        &format!("/storage/{sid}"),
        &["Datastore.Audit", "Datastore.AllocateSpace"],
    )?;
    let s = w
        .storage(sid)
        .ok_or_else(|| ApiError::internal(format!("storage '{sid}' does not exist")))?;
    let mut v = storage_entry(s);
    if let Some(o) = v.as_object_mut() {
        o.remove("storage");
    }
    Ok(v)
}

fn storage_content(call: &Call, w: &World, sid: &str) -> Result<Value, ApiError> {
    call.need_any(
        w,
        &format!("/storage/{sid}"),
        &["Datastore.Audit", "Datastore.AllocateSpace"],
    )?;
    let s = w
        .storage(sid)
        .ok_or_else(|| ApiError::internal(format!("storage '{sid}' does not exist")))?;
    let content = call.params.get("content");
    let vmid = call.params.int("vmid")?;
    let mut out = Vec::new();
    let visible = |vmid_of: u32| {
        // pve-storage `check_volume_access`, applied per volume; failures are skipped
        // silently (the listing is 200 with fewer entries).
        let spath = format!("/storage/{sid}");
        call.authid == "root@pam"
            || call.has(w, &spath, "Datastore.Allocate")
            || (call.has(w, &spath, "Datastore.AllocateSpace")
                && call.has(w, &format!("/vms/{vmid_of}"), "VM.Backup"))
    };
    if content.is_none_or(|c| c == "backup")
        && let Some(linked) = super::pbs_link::list(w, sid)
    {
        for vol in linked {
            if vmid.is_some_and(|v| v != u64::from(vol.vmid)) || !visible(vol.vmid) {
                continue;
            }
            let snap = &vol.snapshot;
            let size: u64 = snap.files.iter().map(|f| f.size.unwrap_or(0)).sum();
            let kind = snap.backup_type.as_str();
            let mut v = json!({
                "volid": vol.volid, "format": format!("pbs-{kind}"), "size": size.max(1),
                "ctime": snap.backup_time, "vmid": vol.vmid, "content": "backup",
                "subtype": if kind == "vm" { "qemu" } else { "lxc" },
            });
            if let Some(ver) = &snap.verification {
                v["verification"] = json!(ver);
            }
            if let Some(n) = &snap.comment {
                v["notes"] = json!(n);
            }
            if snap.protected {
                v["protected"] = json!(1);
            }
            if let Some(e) = super::pbs_link::encrypted(snap) {
                v["encrypted"] = json!(e);
            }
            out.push(v);
        }
    } else if content.is_none_or(|c| c == "backup") {
        for b in w.backups.iter().filter(|b| b.storage() == sid) {
            if vmid.is_some_and(|v| v != u64::from(b.vmid)) {
                continue;
            }
            if !visible(b.vmid) {
                continue;
            }
            let mut v = json!({
                "volid": b.volid, "format": b.format(), "size": b.size, "ctime": b.ctime,
                "vmid": b.vmid, "content": "backup", "subtype": "lxc",
            });
            if let Some(n) = &b.notes {
                v["notes"] = json!(n);
            }
            if b.protected {
                v["protected"] = json!(1);
            }
            out.push(v);
        }
    }
    if content.is_none_or(|c| c == "rootdir" || c == "images")
        && s.content.iter().any(|c| c == "rootdir" || c == "images")
    {
        for g in w.guests.values() {
            if vmid.is_some_and(|v| v != u64::from(g.vmid)) {
                continue;
            }
            if !call.has(w, &format!("/vms/{}", g.vmid), "VM.Config.Disk") {
                continue;
            }
            for (key, val) in &g.config {
                if key != "rootfs" && !super::reply::is_indexed(key, &["mp"]) {
                    continue;
                }
                let vol = val.split(',').next().unwrap_or("");
                if vol.split_once(':').map(|(s, _)| s) != Some(sid) {
                    continue;
                }
                out.push(json!({
                    "volid": vol, "format": "raw", "size": ops::volume_size(val).unwrap_or(0),
                    "vmid": g.vmid, "content": "rootdir",
                }));
            }
        }
    }
    Ok(json!(out))
}

fn get_config(call: &Call, w: &World, vmid: u32) -> Result<Value, ApiError> {
    call.need(w, &format!("/vms/{vmid}"), "VM.Audit")?;
    let g = guest(w, vmid)?;
    Ok(render_config(g))
}

/// The config as PVE's GET config returns it (numbers as numbers, plus `digest`).
pub fn render_config(g: &Guest) -> Value {
    const NUMERIC: &[&str] = &[
        "cores",
        "memory",
        "swap",
        "unprivileged",
        "onboot",
        "cpuunits",
        "template",
        "protection",
        "tty",
        "console",
    ];
    let mut out = Map::new();
    for (k, v) in &g.config {
        let value = match (NUMERIC.contains(&k.as_str()), v.parse::<i64>()) {
            (true, Ok(n)) => json!(n),
            (true, Err(_)) | (false, _) => json!(v),
        };
        out.insert(k.clone(), value);
    }
    out.insert("digest".to_owned(), json!(ops::config_digest(g)));
    Value::Object(out)
}

fn list_snapshots(call: &Call, w: &World, vmid: u32) -> Result<Value, ApiError> {
    call.need(w, &format!("/vms/{vmid}"), "VM.Audit")?;
    let g = guest(w, vmid)?;
    let mut out: Vec<Value> = g
        .snapshots
        .iter()
        .map(|s| {
            let mut v =
                json!({"name": s.name, "description": s.description, "snaptime": s.snaptime});
            if let Some(p) = &s.parent {
                v["parent"] = json!(p);
            }
            v
        })
        .collect();
    let mut current = json!({
        "name": "current",
        "description": "You are here!",
        "running": i32::from(g.status == GuestStatus::Running),
    });
    if let Some(p) = g.config.get("parent") {
        current["parent"] = json!(p);
    }
    out.push(current);
    Ok(json!(out))
}

fn interfaces(call: &Call, w: &World, vmid: u32) -> Result<Value, ApiError> {
    call.need(w, &format!("/vms/{vmid}"), "VM.Audit")?;
    let g = guest(w, vmid)?;
    if g.status != GuestStatus::Running {
        return Err(ApiError::internal(format!("CT {vmid} not running")));
    }
    let mut out = vec![json!({
        "name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128",
    })];
    for (key, val) in &g.config {
        if !super::reply::is_indexed(key, &["net"]) {
            continue;
        }
        let field = |name: &str| {
            val.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
        };
        let idx: u32 = key[3..].parse().unwrap_or(0);
        out.push(json!({
            "name": field("name").unwrap_or_else(|| format!("eth{idx}")),
            "hwaddr": field("hwaddr").unwrap_or_default().to_lowercase(),
            "inet": format!("10.{}.{}.{}/24", 10 + idx, (vmid / 250) % 250, 10 + vmid % 240),
            "inet6": "fe80::be24:11ff:fe00:1/64",
        }));
    }
    Ok(json!(out))
}

fn permissions(call: &Call, w: &World) -> Result<Value, ApiError> {
    if let Some(other) = call.params.get("userid")
        && other != call.authid
        && !call.has(w, "/access", "Sys.Audit")
    {
        return Err(ApiError::perm("/access", "Sys.Audit"));
    }
    let who = call.params.get("userid").unwrap_or(&call.authid);
    let paths: Vec<String> = match call.params.get("path") {
        Some(p) => vec![p.to_owned()],
        None => w.access.known_paths().into_iter().collect(),
    };
    let mut out = Map::new();
    for p in paths {
        let privs = w.access.privileges(who, &p);
        if privs.is_empty() {
            continue;
        }
        let obj: Map<String, Value> = privs.into_iter().map(|x| (x, json!(1))).collect();
        out.insert(p, Value::Object(obj));
    }
    Ok(Value::Object(out))
}

/// pve-manager `PVE/API2/Tasks.pm` `$check_task_user`: a token sees only its own tasks, a user
/// sees its own and its tokens' tasks; `Sys.Audit` on the node sees everything.
fn task_owned(call: &Call, task_user: &str) -> bool {
    match task_user.split_once('!') {
        Some((user, _)) => call.authid == task_user || call.authid == user,
        None => call.authid == task_user,
    }
}

fn task_visible(call: &Call, w: &World, task_user: &str) -> bool {
    task_owned(call, task_user) || call.has(w, &format!("/nodes/{}", w.node.name), "Sys.Audit")
}

/// Task fields as PVE reports them: a token's authid is split into `user` + `tokenid`
/// (`$convert_token_task`).
fn task_entry(t: &super::state::Task) -> Value {
    let mut v = json!({
        "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
        "starttime": t.starttime, "type": t.kind, "id": t.id, "user": t.user,
    });
    if let Some((user, token)) = t.user.split_once('!') {
        v["user"] = json!(user);
        v["tokenid"] = json!(token);
    }
    v
}

fn status_kind(t: &super::state::Task) -> &'static str {
    match &t.state {
        TaskState::Running => "unknown",
        TaskState::Stopped { exitstatus, .. } if exitstatus == "OK" => "ok",
        TaskState::Stopped { exitstatus, .. } if exitstatus.starts_with("WARNINGS: ") => "warning",
        TaskState::Stopped { .. } => "error",
    }
}

fn list_tasks(call: &Call, w: &World) -> Result<(Value, usize), ApiError> {
    let p = &call.params;
    let vmid = match p.get("vmid") {
        Some(v) => Some(super::reply::parse_vmid(v)?.to_string()),
        None => None,
    };
    let limit = usize::try_from(p.int("limit")?.unwrap_or(50)).unwrap_or(usize::MAX);
    let start = usize::try_from(p.int("start")?.unwrap_or(0)).unwrap_or(usize::MAX);
    let typefilter = p.get("typefilter");
    let userfilter = p.get("userfilter").map(str::to_lowercase);
    let since = p.int("since")?;
    let until = p.int("until")?;
    let source = p.get("source").unwrap_or("archive");
    if !matches!(source, "archive" | "active" | "all") {
        return Err(ApiError::param(
            "source",
            format!(
                "value '{source}' does not have a value in the enumeration 'archive, active, all'"
            ),
        ));
    }
    let errors_only = p.flag("errors")?;
    let statusfilter: Option<Vec<String>> = match (p.get("statusfilter"), errors_only) {
        (Some(f), false) => Some(f.split([',', ';', ' ']).map(str::to_lowercase).collect()),
        (Some(_), true) | (None, true) => Some(vec![
            "warning".to_owned(),
            "error".to_owned(),
            "unknown".to_owned(),
        ]),
        (None, false) => None,
    };
    let wanted = |t: &&super::state::Task| {
        let start_u = u64::try_from(t.starttime).unwrap_or(0);
        userfilter
            .as_ref()
            .is_none_or(|u| t.user.to_lowercase().contains(u.as_str()))
            && task_visible(call, w, &t.user)
            && typefilter.is_none_or(|f| t.kind == f)
            && vmid.as_ref().is_none_or(|v| &t.id == v)
            && since.is_none_or(|s| start_u >= s)
            && until.is_none_or(|u| start_u <= u)
            && statusfilter
                .as_ref()
                .is_none_or(|f| f.iter().any(|x| x == status_kind(t)))
    };
    let running = w
        .tasks
        .iter()
        .rev()
        .filter(|t| t.state == TaskState::Running);
    let finished = w
        .tasks
        .iter()
        .filter(|t| t.state != TaskState::Running)
        .rev();
    let matching: Vec<&super::state::Task> = match source {
        "active" => running.filter(wanted).collect(),
        "all" => running.chain(finished).filter(wanted).collect(),
        _ => finished.filter(wanted).collect(),
    };
    let total = matching.len();
    let out: Vec<Value> = matching
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|t| {
            let mut v = task_entry(t);
            match &t.state {
                // From the `active` file, which `node_tasks` passes on without
                // `$convert_token_task`: a token's task keeps its full authid as `user`.
                TaskState::Running => {
                    v["user"] = json!(t.user);
                    if let Some(o) = v.as_object_mut() {
                        o.remove("tokenid");
                    }
                    v["status"] = json!("RUNNING");
                }
                TaskState::Stopped {
                    exitstatus,
                    endtime,
                } => {
                    v["status"] = json!(exitstatus);
                    v["endtime"] = json!(endtime);
                }
            }
            v
        })
        .collect();
    Ok((json!(out), total))
}

/// Parses a UPID the way `PVE::Tools::upid_decode` accepts it.
fn upid_ok(upid: &str) -> bool {
    let parts: Vec<&str> = upid.split(':').collect();
    let hex = |p: &str, min: usize, max: usize| {
        (min..=max).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit())
    };
    parts.len() == 9
        && parts[0] == "UPID"
        && !parts[1].is_empty()
        && hex(parts[2], 8, 8)
        && hex(parts[3], 8, 9)
        && hex(parts[4], 8, 8)
        && !parts[5].is_empty()
        && !parts[7].is_empty()
        && parts[8].is_empty()
}

/// The owner check of the task endpoints: owner, or `Sys.Audit` on the node.
fn check_task_access(call: &Call, w: &World, upid: &str) -> Result<(), ApiError> {
    let user = upid.split(':').nth(7).unwrap_or("");
    if task_owned(call, user) {
        Ok(())
    } else {
        call.need(w, &format!("/nodes/{}", w.node.name), "Sys.Audit")
    }
}

fn task_status(call: &Call, w: &World, upid: &str) -> Result<Value, ApiError> {
    if !upid_ok(upid) {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    let Some(t) = w.task(upid) else {
        return Err(ApiError::param("upid", "no such task"));
    };
    check_task_access(call, w, upid)?;
    let mut v = task_entry(t);
    match &t.state {
        TaskState::Running => v["status"] = json!("running"),
        TaskState::Stopped { exitstatus, .. } => {
            v["status"] = json!("stopped");
            v["exitstatus"] = json!(exitstatus);
        }
    }
    Ok(v)
}

fn task_log(call: &Call, w: &World, upid: &str) -> Result<(Value, usize), ApiError> {
    if !upid_ok(upid) {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    check_task_access(call, w, upid)?;
    let Some(t) = w.task(upid) else {
        // PVE::Tools::dump_logfile on a missing file.
        return Ok((
            json!([{"n": 1, "t": "unable to open file - No such file or directory"}]),
            1,
        ));
    };
    let start = usize::try_from(call.params.int("start")?.unwrap_or(0)).unwrap_or(usize::MAX);
    let limit = usize::try_from(call.params.int("limit")?.unwrap_or(50)).unwrap_or(usize::MAX);
    let lines: Vec<Value> = t
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, l)| json!({"n": i + 1, "t": l}))
        .collect();
    Ok((json!(lines), t.log.len()))
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), extra) {
        a.extend(b);
    }
}
