//! Mutating guest operations: create/restore, destroy, power, config, resize, snapshots and
//! vzdump. Each returns a UPID (except PUT config, which is synchronous like in PVE).
//!
//! Verified against Proxmox sources (texts used verbatim):
//! - pve-container `src/PVE/API2/LXC.pm` `create_vm`: `VM.Allocate` on `/vms/{vmid}` else
//!   `raise_perm_exc()` (bare `Permission check failed`); for restore+force of an existing CT
//!   `VM.Backup` suffices; `check_vmid_unused` (pve-cluster) → `CT <vmid> already exists on
//!   node '<node>'`; force over a running CT → `can't overwrite running container`; default
//!   `storage` is `local` and must support `rootdir` (400 `storage '<sid>' does not support
//!   container directories`) and needs `Datastore.AllocateSpace`; the archive's `net*`
//!   bridges are checked inside the worker, so a missing `SDN.Use` is a task failure.
//! - pve-container `src/PVE/LXC.pm` `check_ct_modify_config_perm`: returns early for
//!   `root@pam` only (an API token's authid is never `root@pam`, so even `root@pam!sim` is
//!   refused, as field reports confirm); `features` other than nesting →
//!   `Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)`;
//!   on a privileged CT → `changing feature flags for privileged container is only allowed for root@pam`;
//!   per-key privileges `VM.Config.CPU|Disk|Memory|Network|Options`, nesting needs `VM.Allocate`.
//! - pve-container `destroy_vm`: sync `unable to destroy CT <vmid> - container is running`;
//!   the lock check runs inside the `vzdestroy` worker (task failure `CT <vmid> is locked (<lock>)`).
//! - pve-common `PVE/AbstractConfig.pm` `check_lock`: `CT <vmid> is locked (<lock>)`.
//! - pve-container `src/PVE/API2/LXC/Status.pm`: start/stop/shutdown check only the running
//!   state synchronously (`CT <vmid> already running`, `CT <vmid> not running`); the config
//!   load, template refusal (`you can't start a CT if it's a template`) and lock check run in
//!   the `vzstart`/`vzstop`/`vzshutdown` worker, so a locked guest fails the task.
//! - pve-container `src/PVE/API2/LXC/Snapshot.pm`: worker `vzsnapshot` (older releases used
//!   `pctsnapshot`/`lxcrollback`/`lxcdelsnapshot`), reserved names
//!   `unable to use snapshot name 'current' (reserved name)` (also `vzdump`); lock and
//!   existence checks happen inside the worker.
//! - pve-manager `PVE/API2/VZDump.pm`: the API method is `user => 'all'`; synchronously only
//!   `Datastore.AllocateSpace` on the target storage and the root-only options are checked;
//!   task id is the vmid for a single guest, empty otherwise.
//!
//! - pve-manager `PVE/VZDump.pm` `exec_backup_task` (verified in several releases): the mode is
//!   `stop` for a guest that is not running, else the requested one; when snapshot mode's
//!   `prepare` dies with `mode failure - …` (pve-container: `some volumes do not support
//!   snapshots`, i.e. an included volume on a storage without snapshots for raw volumes — dir,
//!   NFS, CIFS, thick LVM), the log gets that text, `trying 'suspend' mode instead`, and
//!   `backup mode: suspend`; `prepare` then runs again (its `CT Name`/`including mount point`
//!   lines repeat) and the suspend rsync lines follow (`starting first sync …`, `suspending
//!   guest`, `starting final sync …`, `resuming guest`, `guest is online again after …`) — the
//!   order as field logs of real tasks show it.
//! - Retention is [`super::prune`]; PBS storages are [`super::pbs_link`].
//! - `PUT config`: `net*` is checked against pve-container's `$netconf_desc` with
//!   `PVE::JSONSchema`'s texts (boolean type check accepts `1|true|yes|on|0|false|no|off`,
//!   case-insensitive); `tags` is normalised like `PVE::GuestHelpers::get_unique_tags`
//!   (split on `;`, `,`, space; deduplicated, sorted, joined with `;`).
//!
//! Inferred or from memory, not verified line by line:
//! - The lxc-start lines of a failed `vzstart` task log (from field reports) and the exact
//!   placement of `INFO: prune older backups with retention: …` (options sorted, joined by
//!   `, `) before the snapshot cleanup.
//! - The `proxmox-backup-client` texts for a restore with a missing or wrong key
//!   (`missing key - manifest was created with key <fp>`, `wrong key - manifest's key <fp> does
//!   not match provided key <fp>`), wrapped as `unable to restore CT <vmid> -
//!   proxmox-backup-client failed: Error: …`.
//! - `VM.Backup` is checked per guest inside the vzdump worker (the synchronous API code has
//!   no such check; matches the field finding that authorization surfaces at task time); the
//!   task then ends with `Permission check failed (/vms/<vmid>, VM.Backup)`.
//! - PVE ≥ 7.2 lets non-root callers pass `prune-backups` with `Datastore.Allocate` on the
//!   storage (the indexed, older VZDump.pm says `Only root may set this option.`);
//!   `bwlimit`/`ionice` need `Sys.Modify` on `/`.
//! - A vzdump of a locked guest logs `ERROR: Backup of VM <vmid> failed - CT is locked
//!   (<lock>)` and ends with `job errors`.
//! - Bridge access is `SDN.Use` on `/sdn/zones/localnetwork/<bridge>`; worker names
//!   `vzcreate`/`vzrestore`/`vzrollback`/`vzdelsnapshot`/`resize`; rollback accepts
//!   `VM.Snapshot` or `VM.Snapshot.Rollback` (any-of).
//! - `PVE::Tools::assert_if_modified`: `detected modified configuration - file changed by
//!   other user? Try again.`
//!
//! Not modelled: per-snapshot configs (rollback moves `parent` and stops the guest), pending
//! changes on running guests, template (`vztmpl`) existence for plain creates.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::call::{Call, guest};
use super::fixture::GuestStatus;
use super::reply::{ApiError, is_indexed};
use super::state::{Backup, Guest, TaskPlan, World, civil, now, pve_time};

const CONFIG_KEYS: &[&str] = &[
    "arch",
    "cmode",
    "console",
    "cores",
    "cpulimit",
    "cpuunits",
    "debug",
    "description",
    "features",
    "hookscript",
    "hostname",
    "lock",
    "memory",
    "nameserver",
    "onboot",
    "ostype",
    "protection",
    "rootfs",
    "searchdomain",
    "startup",
    "swap",
    "tags",
    "template",
    "timezone",
    "tty",
    "unprivileged",
];
const INDEXED_KEYS: &[&str] = &["net", "mp", "unused", "dev"];

/// Size in bytes from a volume property string (`…,size=8G`).
pub fn volume_size(spec: &str) -> Option<u64> {
    let size = spec.split(',').find_map(|kv| kv.strip_prefix("size="))?;
    parse_size(size)
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((n * mult) as u64)
}

fn format_size(bytes: u64) -> String {
    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;
    if bytes.is_multiple_of(G) {
        format!("{}G", bytes / G)
    } else {
        format!("{}M", bytes.div_ceil(M))
    }
}

/// PVE's config digest stand-in (hex, 40 chars; PVE uses SHA-1 of the file).
pub fn config_digest(g: &Guest) -> String {
    let mut h = Sha256::new();
    for (k, v) in &g.config {
        h.update(k.as_bytes());
        h.update(b": ");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())[..40].to_owned()
}

fn check_lock(g: &Guest) -> Result<(), String> {
    match g.lock() {
        Some(l) => Err(format!("CT {} is locked ({l})", g.vmid)),
        None => Ok(()),
    }
}

fn vms(vmid: u32) -> String {
    format!("/vms/{vmid}")
}

fn parse_features(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, "1"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn net_field(spec: &str, name: &str) -> Option<String> {
    spec.split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// `check_bridge_access`: `SDN.Use` on `/sdn/zones/localnetwork/<bridge>` for non-root.
fn bridge_ok(call: &Call, w: &World, net: &str) -> Result<(), ApiError> {
    if call.authid == "root@pam" {
        return Ok(());
    }
    match net_field(net, "bridge") {
        Some(bridge) => call.need(w, &format!("/sdn/zones/localnetwork/{bridge}"), "SDN.Use"),
        None => Ok(()),
    }
}

/// pve-container `check_ct_modify_config_perm`.
fn check_modify_perm(
    call: &Call,
    w: &World,
    vmid: u32,
    old: Option<&BTreeMap<String, String>>,
    new: &BTreeMap<String, String>,
    delete: &[String],
    unprivileged: bool,
) -> Result<(), ApiError> {
    if call.authid == "root@pam" {
        return Ok(());
    }
    let path = vms(vmid);
    let check = |opt: &str, deleting: bool| -> Result<(), ApiError> {
        match opt {
            "cores" | "cpuunits" | "cpulimit" => call.need(w, &path, "VM.Config.CPU"),
            "memory" | "swap" => call.need(w, &path, "VM.Config.Memory"),
            "nameserver" | "searchdomain" | "hostname" => call.need(w, &path, "VM.Config.Network"),
            "features" => {
                if !unprivileged {
                    return Err(ApiError::perm_text(
                        "changing feature flags for privileged container is only allowed for root@pam",
                    ));
                }
                let new_f = if deleting {
                    BTreeMap::new()
                } else {
                    parse_features(new.get(opt).map_or("", String::as_str))
                };
                let old_f = parse_features(old.and_then(|o| o.get(opt)).map_or("", String::as_str));
                let keys: std::collections::BTreeSet<&String> =
                    new_f.keys().chain(old_f.keys()).collect();
                let mut nesting_changed = false;
                for k in keys {
                    if new_f.get(k) != old_f.get(k) {
                        if k == "nesting" {
                            nesting_changed = true;
                        } else {
                            return Err(ApiError::perm_text(
                                "changing feature flags (except nesting) is only allowed for root@pam",
                            ));
                        }
                    }
                }
                if nesting_changed {
                    call.need(w, &path, "VM.Allocate")?;
                }
                Ok(())
            }
            "hookscript" => Err(ApiError::perm_text(
                "changing the hookscript is only allowed for root@pam",
            )),
            o if o == "rootfs" || is_indexed(o, &["mp"]) => {
                call.need(w, &path, "VM.Config.Disk")?;
                if deleting {
                    return Ok(());
                }
                let spec = new.get(o).map_or("", String::as_str);
                let vol = spec.split(',').next().unwrap_or("");
                if vol.starts_with('/') {
                    return Err(ApiError::perm_text(
                        "mount point type bind is only allowed for root@pam",
                    ));
                }
                if let Some((sid, rest)) = vol.split_once(':')
                    && rest.parse::<f64>().is_ok()
                {
                    call.need(w, &format!("/storage/{sid}"), "Datastore.AllocateSpace")?;
                }
                Ok(())
            }
            o if is_indexed(o, &["net"]) => {
                call.need(w, &path, "VM.Config.Network")?;
                if let Some(old_net) = old.and_then(|c| c.get(o)) {
                    bridge_ok(call, w, old_net)?;
                }
                if let Some(new_net) = new.get(o) {
                    bridge_ok(call, w, new_net)?;
                }
                Ok(())
            }
            o if is_indexed(o, &["dev"]) => Err(ApiError::perm_text(
                "configuring device passthrough is only allowed for root@pam",
            )),
            _ => call.need(w, &path, "VM.Config.Options"),
        }
    };
    for k in new.keys() {
        check(k, false)?;
    }
    for k in delete {
        check(k, true)?;
    }
    Ok(())
}

fn config_params(call: &Call, skip: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in call.params.iter() {
        if skip.contains(&k.as_str()) {
            continue;
        }
        if !CONFIG_KEYS.contains(&k.as_str()) && !is_indexed(k, INDEXED_KEYS) {
            return Err(ApiError::param(
                k,
                "property is not defined in schema and the schema does not allow additional properties",
            ));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// `storage_check_enabled` + rootdir support + `Datastore.AllocateSpace`.
fn check_rootdir_storage(call: &Call, w: &World, sid: &str) -> Result<(), ApiError> {
    let s = w
        .storage(sid)
        .ok_or_else(|| ApiError::internal(format!("storage '{sid}' does not exist")))?;
    if !s.content.iter().any(|c| c == "rootdir") {
        return Err(ApiError::param(
            "storage",
            format!("storage '{sid}' does not support container directories"),
        ));
    }
    call.need(w, &format!("/storage/{sid}"), "Datastore.AllocateSpace")
}

/// `PVE::Storage::check_volume_access` for a backup archive (or template).
fn check_volume_access(
    call: &Call,
    w: &World,
    vmid: u32,
    volid: &str,
    restore: bool,
) -> Result<(), ApiError> {
    if call.authid == "root@pam" {
        return Ok(());
    }
    let Some((sid, _)) = volid.split_once(':') else {
        return Err(ApiError::internal(format!(
            "unable to parse volume ID '{volid}'"
        )));
    };
    if w.storage(sid).is_none() {
        return Err(ApiError::internal(format!(
            "storage '{sid}' does not exist"
        )));
    }
    let spath = format!("/storage/{sid}");
    if call.has(w, &spath, "Datastore.Allocate") {
        return Ok(());
    }
    if !restore {
        return call.need_any(w, &spath, &["Datastore.AllocateSpace", "Datastore.Audit"]);
    }
    let owner = w.backups.iter().find(|b| b.volid == volid).map(|b| b.vmid);
    match owner {
        Some(o) if o == vmid => Ok(()),
        Some(o) => {
            call.need(w, &spath, "Datastore.AllocateSpace")?;
            call.need(w, &vms(o), "VM.Backup")
        }
        None => Err(ApiError::internal(format!(
            "missing privileges to access {volid}"
        ))),
    }
}

/// POST /nodes/{node}/lxc — create or restore.
pub fn create(call: &Call, w: &mut World) -> Result<Value, ApiError> {
    const SKIP: &[&str] = &[
        "node",
        "vmid",
        "ostemplate",
        "storage",
        "force",
        "restore",
        "unique",
        "pool",
        "ignore-unpack-errors",
        "ssh-public-keys",
        "password",
        "bwlimit",
        "start",
        "ha-managed",
        "unprivileged",
    ];
    let p = &call.params;
    let vmid = super::reply::parse_vmid(p.required("vmid")?)?;
    let ostemplate = p.required("ostemplate")?.to_owned();
    let restore = p.flag("restore")?;
    let force = p.flag("force")?;
    let unique = p.flag("unique")?;
    let start = p.flag("start")?;
    if unique && !restore {
        return Err(ApiError::param(
            "unique",
            "missing property - 'restore' (required by 'unique')",
        ));
    }
    let mut config = config_params(call, SKIP)?;
    let node = w.node.name.clone();
    let exists = w.guests.contains_key(&vmid);
    let unprivileged = match p.get("unprivileged") {
        Some(_) => Some(p.flag("unprivileged")?),
        None if restore => None,
        None => Some(true),
    };
    if !restore && unprivileged == Some(false) {
        call.need(w, "/", "Sys.Modify")?;
    }
    if !(exists && restore && force) {
        if exists {
            return Err(ApiError::internal(format!(
                "CT {vmid} already exists on node '{node}'"
            )));
        }
    } else if w
        .guests
        .get(&vmid)
        .is_some_and(|g| g.status == GuestStatus::Running)
    {
        return Err(ApiError::internal("can't overwrite running container"));
    }
    if call.has(w, &vms(vmid), "VM.Allocate")
        || (restore && force && exists && call.has(w, &vms(vmid), "VM.Backup"))
    {
        // allowed
    } else {
        return Err(ApiError::perm_plain());
    }
    let storage = p.get("storage").unwrap_or("local").to_owned();
    check_modify_perm(
        call,
        w,
        vmid,
        None,
        &config,
        &[],
        unprivileged.unwrap_or(false),
    )?;
    check_volume_access(call, w, vmid, &ostemplate, restore)?;
    match config.get("rootfs") {
        Some(rootfs) => {
            let vol = rootfs.split(',').next().unwrap_or("");
            let sid = vol.split_once(':').map_or(vol, |(s, _)| s).to_owned();
            check_rootdir_storage(call, w, &sid)?;
        }
        None => check_rootdir_storage(call, w, &storage)?,
    }
    let archive = if restore {
        Some(w.backups.iter().find(|b| b.volid == ostemplate).cloned())
    } else {
        None
    };
    if let Some(u) = unprivileged
        && u
    {
        config.insert("unprivileged".to_owned(), "1".to_owned());
    }
    // create_and_lock_config: the guest exists from now on, locked `create`.
    let old = w.guests.remove(&vmid);
    let mut placeholder = Guest {
        vmid,
        status: GuestStatus::Stopped,
        config: BTreeMap::new(),
        snapshots: Vec::new(),
        started_at: None,
    };
    if let Some(o) = &old {
        placeholder.config = o.config.clone();
        placeholder.snapshots = o.snapshots.clone();
    }
    w.guests.insert(vmid, placeholder);
    let kind = if restore { "vzrestore" } else { "vzcreate" };
    let mut first = Vec::new();
    if restore {
        first.push(format!(
            "recovering backed-up configuration from '{ostemplate}'"
        ));
    }
    let authid = call.authid.clone();
    let is_root = authid == "root@pam";
    let access = w.access.clone();
    let work = Box::new(
        move |w: &mut World, log: &mut Vec<String>| -> Result<u32, String> {
            let fail = |w: &mut World, e: String| {
                // Restore failed: a freshly created CT is removed again, an overwritten one kept.
                match &old {
                    Some(o) => {
                        w.guests.insert(vmid, o.clone());
                    }
                    None => {
                        w.guests.remove(&vmid);
                    }
                }
                Err(e)
            };
            let mut conf = BTreeMap::new();
            // sanitize_and_merge_config: with `unique`, the archive's netN (with a new MAC)
            // replaces a given netN; every other given option wins over the archive's.
            let mut archive_wins: Vec<String> = Vec::new();
            if let Some(archive) = archive {
                let linked = super::pbs_link::link_of(w, backup_storage(&ostemplate)).is_some();
                let snapshot = super::pbs_link::snapshot_of(w, &ostemplate);
                let Some(backup) = archive.filter(|_| !linked || snapshot.is_some()) else {
                    return fail(
                        w,
                        format!(
                            "unable to restore CT {vmid} - volume '{ostemplate}' does not exist"
                        ),
                    );
                };
                if let Some(snap) = &snapshot
                    && let Some(made_with) = &snap.fingerprint
                {
                    // proxmox-backup-client restore checks the manifest's key fingerprint.
                    let key = match w.key_in_use(backup_storage(&ostemplate)) {
                        Ok(k) => k,
                        Err(e) => {
                            return fail(w, format!("unable to restore CT {vmid} - {e}"));
                        }
                    };
                    match key.as_ref().map(crate::pbs::PbsKey::fingerprint) {
                        None => {
                            return fail(
                                w,
                                format!(
                                    "unable to restore CT {vmid} - proxmox-backup-client failed: Error: missing key - manifest was created with key {made_with}"
                                ),
                            );
                        }
                        Some(fp) if &fp != made_with => {
                            return fail(
                                w,
                                format!(
                                    "unable to restore CT {vmid} - proxmox-backup-client failed: Error: wrong key - manifest's key {made_with} does not match provided key {fp}"
                                ),
                            );
                        }
                        Some(_) => {}
                    }
                }
                for (k, v) in &backup.config {
                    if is_indexed(k, &["net"])
                        && !config.contains_key(k)
                        && !is_root
                        && let Some(bridge) = net_field(v, "bridge")
                    {
                        let path = format!("/sdn/zones/localnetwork/{bridge}");
                        if !access.has(&authid, &path, "SDN.Use") {
                            return fail(w, format!("Permission check failed ({path}, SDN.Use)"));
                        }
                    }
                }
                conf = backup.config.clone();
                conf.remove("lock");
                conf.remove("parent");
                let mut disk = 0;
                let target = storage.clone();
                for (k, v) in backup.config.iter() {
                    if k == "rootfs" || is_indexed(k, &["mp"]) {
                        if config.contains_key(k) {
                            continue;
                        }
                        let size = volume_size(v).unwrap_or(8 << 30);
                        let rest: Vec<&str> = v
                            .split(',')
                            .skip(1)
                            .filter(|kv| !kv.starts_with("size="))
                            .collect();
                        let mut spec = format!("{target}:vm-{vmid}-disk-{disk}");
                        for r in rest {
                            spec.push(',');
                            spec.push_str(r);
                        }
                        spec.push_str(&format!(",size={}", format_size(size)));
                        log.push(format!(
                            "  Logical volume \"vm-{vmid}-disk-{disk}\" created."
                        ));
                        conf.insert(k.clone(), spec);
                        disk += 1;
                    }
                }
                log.push(format!("restoring '{ostemplate}' now.."));
                if backup.format() == "pbs-ct" {
                    let sid = backup_storage(&ostemplate);
                    if let Some(st) = w.storage(sid) {
                        let crypt = if w.key_in_use(sid).ok().flatten().is_some() {
                            "--crypt-mode=encrypt --keyfd=14"
                        } else {
                            "--crypt-mode=none"
                        };
                        log.push(format!(
                            "run: /usr/bin/proxmox-backup-client restore {crypt} {} root.pxar /var/lib/lxc/{vmid}/rootfs --allow-existing-dirs --repository {}",
                            ostemplate.split_once(":backup/").map_or("", |(_, r)| r),
                            super::pbs_link::repository(st)
                        ));
                    }
                    log.push(format!(
                        "Starting restore of {} to /var/lib/lxc/{vmid}/rootfs",
                        ostemplate.split_once(":backup/").map_or("", |(_, r)| r)
                    ));
                } else {
                    log.push(format!(
                        "extracting archive '/var/lib/vz/dump/{}'",
                        ostemplate.rsplit('/').next().unwrap_or("")
                    ));
                    log.push(format!(
                        "Total bytes read: {} ({}MiB, 512MiB/s)",
                        backup.size * 3,
                        (backup.size * 3) >> 20
                    ));
                }
                log.push(format!(
                    "Detected container architecture: {}",
                    conf.get("arch").map_or("amd64", String::as_str)
                ));
                log.push("merging backed-up and given configuration..".to_owned());
                if unique {
                    let keys: Vec<String> = conf
                        .keys()
                        .filter(|k| is_indexed(k, &["net"]))
                        .cloned()
                        .collect();
                    archive_wins.clone_from(&keys);
                    for k in keys {
                        let mac = w.new_hwaddr();
                        let spec = conf.get(&k).cloned().unwrap_or_default();
                        let parts: Vec<String> = spec
                            .split(',')
                            .map(|kv| {
                                if kv.starts_with("hwaddr=") {
                                    format!("hwaddr={mac}")
                                } else {
                                    kv.to_owned()
                                }
                            })
                            .collect();
                        conf.insert(k, parts.join(","));
                    }
                }
            } else {
                let mac = w.new_hwaddr();
                conf.insert("arch".to_owned(), "amd64".to_owned());
                conf.insert("ostype".to_owned(), "debian".to_owned());
                conf.insert("hostname".to_owned(), format!("CT{vmid}"));
                conf.insert("memory".to_owned(), "512".to_owned());
                conf.insert("swap".to_owned(), "512".to_owned());
                conf.insert("cores".to_owned(), "1".to_owned());
                if !config.contains_key("rootfs") {
                    conf.insert(
                        "rootfs".to_owned(),
                        format!("{storage}:vm-{vmid}-disk-0,size=4G"),
                    );
                }
                log.push(format!("  Logical volume \"vm-{vmid}-disk-0\" created."));
                log.push(format!(
                    "extracting archive '/var/lib/vz/template/cache/{}'",
                    ostemplate.rsplit('/').next().unwrap_or("")
                ));
                log.push("Total bytes read: 523960320 (500MiB, 217MiB/s)".to_owned());
                log.push("Detected container architecture: amd64".to_owned());
                log.push(
                    "Creating SSH host key 'ssh_host_ed25519_key' - this may take some time ..."
                        .to_owned(),
                );
                let _ = mac;
            }
            for (k, v) in config.iter().filter(|(k, _)| !archive_wins.contains(k)) {
                let value = if k == "rootfs" || is_indexed(k, &["mp"]) {
                    new_volume(v, vmid, &storage)
                } else if is_indexed(k, &["net"]) && net_field(v, "hwaddr").is_none() {
                    format!("{v},hwaddr={}", w.new_hwaddr())
                } else {
                    v.clone()
                };
                conf.insert(k.clone(), value);
            }
            let g = w.guests.entry(vmid).or_insert_with(|| Guest {
                vmid,
                status: GuestStatus::Stopped,
                config: BTreeMap::new(),
                snapshots: Vec::new(),
                started_at: None,
            });
            g.config = conf;
            g.snapshots.clear();
            if start {
                g.status = GuestStatus::Running;
                g.started_at = Some(now());
            }
            Ok(0)
        },
    );
    let upid = call.state.start_task(
        w,
        TaskPlan {
            kind,
            id: vmid.to_string(),
            user: call.authid.clone(),
            lock: Some((vmid, "create")),
            first_lines: first,
            work,
        },
    );
    Ok(json!(upid))
}

/// The storage id of a volume id.
fn backup_storage(volid: &str) -> &str {
    volid.split_once(':').map_or("", |(s, _)| s)
}

/// `local-lvm:8` → `local-lvm:vm-<vmid>-disk-N,size=8G`; existing volids kept.
fn new_volume(spec: &str, vmid: u32, _default_storage: &str) -> String {
    let mut parts = spec.split(',');
    let vol = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    match vol.split_once(':') {
        Some((sid, size)) if size.parse::<f64>().is_ok() => {
            let mut out = format!("{sid}:vm-{vmid}-disk-0");
            for r in &rest {
                out.push(',');
                out.push_str(r);
            }
            out.push_str(&format!(",size={size}G"));
            out
        }
        Some(_) | None => spec.to_owned(),
    }
}

/// DELETE /nodes/{node}/lxc/{vmid}.
pub fn destroy(call: &Call, w: &mut World, vmid: u32) -> Result<Value, ApiError> {
    call.need(w, &vms(vmid), "VM.Allocate")?;
    call.params.only(
        &[
            "node",
            "vmid",
            "purge",
            "force",
            "destroy-unreferenced-disks",
        ],
        &[],
    )?;
    let purge = call.params.flag("purge")?;
    let g = guest(w, vmid)?;
    if g.config.get("protection").is_some_and(|p| p == "1") {
        return Err(ApiError::internal(format!(
            "can't remove CT {vmid} - protection mode enabled"
        )));
    }
    if g.status == GuestStatus::Running {
        return Err(ApiError::internal(format!(
            "unable to destroy CT {vmid} - container is running"
        )));
    }
    let work = Box::new(
        move |w: &mut World, log: &mut Vec<String>| -> Result<u32, String> {
            let g = w.guests.get(&vmid).ok_or_else(|| {
                format!(
                    "Configuration file 'nodes/{}/lxc/{vmid}.conf' does not exist",
                    w.node.name
                )
            })?;
            check_lock(g)?;
            for (k, v) in &g.config {
                if k == "rootfs" || is_indexed(k, &["mp"]) {
                    let vol = v.split(',').next().unwrap_or("");
                    let name = vol.split_once(':').map_or(vol, |(_, n)| n);
                    log.push(format!("  Logical volume \"{name}\" successfully removed."));
                }
            }
            if purge {
                log.push(format!("purging CT {vmid} from related configurations.."));
            }
            w.guests.remove(&vmid);
            Ok(0)
        },
    );
    let upid = call.state.start_task(
        w,
        TaskPlan {
            kind: "vzdestroy",
            id: vmid.to_string(),
            user: call.authid.clone(),
            lock: None,
            first_lines: Vec::new(),
            work,
        },
    );
    Ok(json!(upid))
}

/// POST status/start|stop|shutdown (pve-container `API2/LXC/Status.pm`: only the running
/// state is checked synchronously; config load, template and lock checks run in the worker).
pub fn power(call: &Call, w: &mut World, vmid: u32, action: &str) -> Result<Value, ApiError> {
    call.need(w, &vms(vmid), "VM.PowerMgmt")?;
    call.params.only(
        &["node", "vmid", "skiplock", "timeout", "forceStop", "debug"],
        &[],
    )?;
    if call.params.flag("skiplock")? && call.authid != "root@pam" {
        return Err(ApiError::param(
            "skiplock",
            "Only root may use this option.",
        ));
    }
    let running = w
        .guests
        .get(&vmid)
        .is_some_and(|g| g.status == GuestStatus::Running);
    let kind = match action {
        "start" if running => {
            return Err(ApiError::internal(format!("CT {vmid} already running")));
        }
        "start" => "vzstart",
        _ if !running => return Err(ApiError::internal(format!("CT {vmid} not running"))),
        "stop" => "vzstop",
        _ => "vzshutdown",
    };
    let starting = kind == "vzstart";
    let work = Box::new(
        move |w: &mut World, _log: &mut Vec<String>| -> Result<u32, String> {
            let node = w.node.name.clone();
            let g = w.guests.get_mut(&vmid).ok_or_else(|| {
                format!("Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist")
            })?;
            if starting && g.config.get("template").is_some_and(|t| t == "1") {
                return Err("you can't start a CT if it's a template".to_owned());
            }
            if g.lock() != Some("mounted") {
                check_lock(g)?;
            }
            if starting {
                g.status = GuestStatus::Running;
                g.started_at = Some(now());
            } else {
                g.status = GuestStatus::Stopped;
                g.started_at = None;
            }
            Ok(0)
        },
    );
    let upid = call.state.start_task(
        w,
        TaskPlan {
            kind,
            id: vmid.to_string(),
            user: call.authid.clone(),
            lock: None,
            first_lines: Vec::new(),
            work,
        },
    );
    Ok(json!(upid))
}

/// pve-container `$netconf_desc` checked like `PVE::JSONSchema::parse_property_string`:
/// unknown keys, a missing `name`, non-boolean `firewall`/`link_down`, a non-numeric
/// `tag`/`mtu`/`rate` or a `type` other than `veth` fail with PVE's texts
/// (`invalid format - format error` plus one `<param>.<key>: <why>` line per problem).
fn check_net(param: &str, value: &str) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let mut has_name = false;
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            // `name` is the default key of the format.
            has_name = true;
            continue;
        };
        let bad_bool = !matches!(
            v.to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on" | "0" | "false" | "no" | "off"
        );
        let why = match k {
            "name" => {
                has_name = true;
                None
            }
            "firewall" | "link_down" if bad_bool => {
                Some(format!("type check ('boolean') failed - got '{v}'"))
            }
            "tag" | "mtu" if v.parse::<u32>().is_err() => {
                Some(format!("type check ('integer') failed - got '{v}'"))
            }
            "rate" if v.parse::<f64>().is_err() => {
                Some(format!("type check ('number') failed - got '{v}'"))
            }
            "type" if v != "veth" => Some(format!(
                "value '{v}' does not have a value in the enumeration 'veth'"
            )),
            "firewall" | "link_down" | "tag" | "mtu" | "rate" | "type" | "bridge" | "hwaddr"
            | "ip" | "ip6" | "gw" | "gw6" | "trunks" | "host-managed" => None,
            _ => Some(
                "property is not defined in schema and the schema does not allow additional properties"
                    .to_owned(),
            ),
        };
        if let Some(why) = why {
            errors.push(format!("{param}.{k}: {why}"));
        }
    }
    if !has_name {
        errors.push(format!(
            "{param}.name: property is missing and it is not optional"
        ));
    }
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort();
    Err(ApiError::param(
        param,
        format!("invalid format - format error\n{}", errors.join("\n")),
    ))
}

/// `PVE::GuestHelpers::get_unique_tags`: split on `;`, `,` or space, drop duplicates, sort,
/// join with `;`.
fn unique_tags(value: &str) -> String {
    let tags: std::collections::BTreeSet<&str> = value
        .split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .collect();
    tags.into_iter().collect::<Vec<_>>().join(";")
}

/// PUT config (synchronous).
pub fn set_config(call: &Call, w: &mut World, vmid: u32) -> Result<Value, ApiError> {
    let new = config_params(call, &["node", "vmid", "delete", "digest", "revert"])?;
    let delete: Vec<String> = call
        .params
        .get("delete")
        .map(|d| {
            d.split([',', ';', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for key in &delete {
        if !CONFIG_KEYS.contains(&key.as_str()) && !is_indexed(key, INDEXED_KEYS) {
            return Err(ApiError::param(
                "delete",
                format!("invalid configuration ID '{key}'"),
            ));
        }
    }
    if new.contains_key("unprivileged") || delete.iter().any(|d| d == "unprivileged") {
        return Err(ApiError::internal(
            "unable to modify read-only option: 'unprivileged'",
        ));
    }
    let mut new = new;
    for (k, v) in new.iter_mut() {
        if is_indexed(k, &["net"]) {
            check_net(k, v)?;
        } else if k == "tags" {
            *v = unique_tags(v);
        }
    }
    let g = guest(w, vmid)?.clone();
    let unprivileged = g.config.get("unprivileged").is_some_and(|u| u == "1");
    check_modify_perm(call, w, vmid, Some(&g.config), &new, &delete, unprivileged)?;
    check_lock(&g).map_err(ApiError::internal)?;
    if let Some(digest) = call.params.get("digest")
        && digest != config_digest(&g)
    {
        return Err(ApiError::internal(
            "detected modified configuration - file changed by other user? Try again.",
        ));
    }
    let g = w
        .guests
        .get_mut(&vmid)
        .ok_or_else(|| ApiError::no_config("", vmid))?;
    for k in &delete {
        g.config.remove(k);
    }
    for (k, v) in new {
        g.config.insert(k, v);
    }
    Ok(Value::Null)
}

/// PUT resize.
pub fn resize(call: &Call, w: &mut World, vmid: u32) -> Result<Value, ApiError> {
    call.need(w, &vms(vmid), "VM.Config.Disk")?;
    let disk = call.params.required("disk")?.to_owned();
    let size = call.params.required("size")?.to_owned();
    if disk != "rootfs" && !is_indexed(&disk, &["mp"]) {
        return Err(ApiError::param(
            "disk",
            format!(
                "value '{disk}' does not have a value in the enumeration 'rootfs, mp0, mp1, …'"
            ),
        ));
    }
    let (grow, amount) = match size.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, size.as_str()),
    };
    let Some(bytes) = parse_size(amount) else {
        return Err(ApiError::param(
            "size",
            "value does not match the regex pattern".to_owned(),
        ));
    };
    let g = guest(w, vmid)?;
    check_lock(g).map_err(ApiError::internal)?;
    let spec = g
        .config
        .get(&disk)
        .ok_or_else(|| ApiError::internal(format!("unable to parse config disk '{disk}'")))?
        .clone();
    let current = volume_size(&spec).unwrap_or(0);
    let target = if grow { current + bytes } else { bytes };
    if target < current {
        return Err(ApiError::internal("unable to shrink disk size"));
    }
    let new_spec = spec
        .split(',')
        .map(|kv| {
            if kv.starts_with("size=") {
                format!("size={}", format_size(target))
            } else {
                kv.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let vol = spec.split(',').next().unwrap_or("").to_owned();
    let work = Box::new(
        move |w: &mut World, log: &mut Vec<String>| -> Result<u32, String> {
            log.push(format!(
                "  Size of logical volume pve/{} changed from {} to {}.",
                vol.split_once(':').map_or(vol.as_str(), |(_, n)| n),
                format_size(current),
                format_size(target)
            ));
            log.push(format!(
                "  Logical volume pve/{} successfully resized.",
                vol.split_once(':').map_or(vol.as_str(), |(_, n)| n)
            ));
            if let Some(g) = w.guests.get_mut(&vmid) {
                g.config.insert(disk.clone(), new_spec);
            }
            Ok(0)
        },
    );
    let upid = call.state.start_task(
        w,
        TaskPlan {
            kind: "resize",
            id: vmid.to_string(),
            user: call.authid.clone(),
            lock: None,
            first_lines: Vec::new(),
            work,
        },
    );
    Ok(json!(upid))
}

fn valid_snapname(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && (2..=40).contains(&name.len())
}

/// POST snapshot.
pub fn snapshot(call: &Call, w: &mut World, vmid: u32) -> Result<Value, ApiError> {
    call.need(w, &vms(vmid), "VM.Snapshot")?;
    let name = call.params.required("snapname")?.to_owned();
    if !valid_snapname(&name) {
        return Err(ApiError::param(
            "snapname",
            format!("invalid format - invalid configuration ID '{name}'"),
        ));
    }
    let description = call.params.get("description").unwrap_or("").to_owned();
    guest(w, vmid)?;
    if name == "current" || name == "vzdump" {
        return Err(ApiError::internal(format!(
            "unable to use snapshot name '{name}' (reserved name)"
        )));
    }
    let locked = guest(w, vmid)?.lock().map(str::to_owned);
    let work = Box::new(
        move |w: &mut World, log: &mut Vec<String>| -> Result<u32, String> {
            if let Some(l) = locked {
                return Err(format!("CT {vmid} is locked ({l})"));
            }
            let g = w
                .guests
                .get_mut(&vmid)
                .ok_or_else(|| format!("CT {vmid} does not exist"))?;
            if g.snapshots.iter().any(|s| s.name == name) {
                return Err(format!("snapshot name '{name}' already used"));
            }
            log.push(format!(
                "  Logical volume \"snap_vm-{vmid}-disk-0_{name}\" created."
            ));
            let parent = g.config.get("parent").cloned();
            g.snapshots.push(super::fixture::SnapshotFixture {
                name: name.clone(),
                description,
                snaptime: now(),
                parent,
            });
            g.config.insert("parent".to_owned(), name);
            Ok(0)
        },
    );
    let lock = if guest(w, vmid)?.lock().is_none() {
        Some((vmid, "snapshot"))
    } else {
        None
    };
    let upid = call.state.start_task(
        w,
        TaskPlan {
            kind: "vzsnapshot",
            id: vmid.to_string(),
            user: call.authid.clone(),
            lock,
            first_lines: Vec::new(),
            work,
        },
    );
    Ok(json!(upid))
}

/// POST snapshot/{snap}/rollback.
pub fn rollback(call: &Call, w: &mut World, vmid: u32, snap: &str) -> Result<Value, ApiError> {
    call.need_any(w, &vms(vmid), &["VM.Snapshot", "VM.Snapshot.Rollback"])?;
    let start = call.params.flag("start")?;
    let g = guest(w, vmid)?;
    let locked = g.lock().map(str::to_owned);
    let snap = snap.to_owned();
    let work = Box::new(
        move |w: &mut World, log: &mut Vec<String>| -> Result<u32, String> {
            if let Some(l) = locked {
                return Err(format!("CT {vmid} is locked ({l})"));
            }
            let g = w
                .guests
                .get_mut(&vmid)
                .ok_or_else(|| format!("CT {vmid} does not exist"))?;
            if !g.snapshots.iter().any(|s| s.name == snap) {
                return Err(format!("snapshot '{snap}' does not exist"));
            }
            if g.status == GuestStatus::Running {
                log.push("stopping container".to_owned());
            }
            log.push(format!(
                "  Logical volume \"vm-{vmid}-disk-0\" successfully removed."
            ));
            log.push(format!("  Logical volume \"vm-{vmid}-disk-0\" created."));
            g.config.insert("parent".to_owned(), snap);
            g.status = if start {
                GuestStatus::Running
            } else {
                GuestStatus::Stopped
            };
            g.started_at = if start { Some(now()) } else { None };
            Ok(0)
        },
    );
    let lock = if guest(w, vmid)?.lock().is_none() {
        Some((vmid, "rollback"))
    } else {
        None
    };
    let upid = call.state.start_task(
        w,
        TaskPlan {
            kind: "vzrollback",
            id: vmid.to_string(),
            user: call.authid.clone(),
            lock,
            first_lines: Vec::new(),
            work,
        },
    );
    Ok(json!(upid))
}

/// DELETE snapshot/{snap}.
pub fn delete_snapshot(
    call: &Call,
    w: &mut World,
    vmid: u32,
    snap: &str,
) -> Result<Value, ApiError> {
    call.need(w, &vms(vmid), "VM.Snapshot")?;
    let g = guest(w, vmid)?;
    let locked = g.lock().map(str::to_owned);
    let snap = snap.to_owned();
    let work = Box::new(
        move |w: &mut World, log: &mut Vec<String>| -> Result<u32, String> {
            if let Some(l) = locked {
                return Err(format!("CT {vmid} is locked ({l})"));
            }
            let g = w
                .guests
                .get_mut(&vmid)
                .ok_or_else(|| format!("CT {vmid} does not exist"))?;
            let Some(pos) = g.snapshots.iter().position(|s| s.name == snap) else {
                return Err(format!("snapshot '{snap}' does not exist"));
            };
            let removed = g.snapshots.remove(pos);
            for s in &mut g.snapshots {
                if s.parent.as_deref() == Some(snap.as_str()) {
                    s.parent.clone_from(&removed.parent);
                }
            }
            if g.config.get("parent") == Some(&snap) {
                match removed.parent {
                    Some(p) => g.config.insert("parent".to_owned(), p),
                    None => g.config.remove("parent"),
                };
            }
            log.push(format!(
                "  Logical volume \"snap_vm-{vmid}-disk-0_{snap}\" successfully removed."
            ));
            Ok(0)
        },
    );
    let lock = if guest(w, vmid)?.lock().is_none() {
        Some((vmid, "snapshot-delete"))
    } else {
        None
    };
    let upid = call.state.start_task(
        w,
        TaskPlan {
            kind: "vzdelsnapshot",
            id: vmid.to_string(),
            user: call.authid.clone(),
            lock,
            first_lines: Vec::new(),
            work,
        },
    );
    Ok(json!(upid))
}

/// Storage types whose volumes support snapshots (pve-storage `volume_has_feature`
/// `snapshot` for a container's raw volumes): dir/NFS/CIFS only for qcow2, LVM (thick) not.
fn storage_snapshots(kind: &str) -> bool {
    matches!(kind, "lvmthin" | "zfspool" | "rbd" | "btrfs" | "zfs")
}

/// POST /nodes/{node}/vzdump (one or more guests, comma-separated `vmid`).
pub fn vzdump(call: &Call, w: &mut World) -> Result<Value, ApiError> {
    let p = &call.params;
    p.only(
        &[
            "node",
            "vmid",
            "storage",
            "mode",
            "compress",
            "remove",
            "notes-template",
            "protected",
            "prune-backups",
            "all",
            "quiet",
            "mailnotification",
            "mailto",
            "bwlimit",
            "ionice",
            "zstd",
            "fleecing",
            "notification-mode",
            "tmpdir",
            "dumpdir",
            "script",
            "maxfiles",
        ],
        &[],
    )?;
    if call.authid != "root@pam" {
        for key in ["tmpdir", "dumpdir", "script"] {
            if p.get(key).is_some() {
                return Err(ApiError::param(key, "Only root may set this option."));
            }
        }
        if p.get("bwlimit").is_some() || p.get("ionice").is_some() {
            call.need(w, "/", "Sys.Modify")?;
        }
    }
    let vmid_list = p.required("vmid")?.to_owned();
    let mut vmids = Vec::new();
    for v in vmid_list.split([',', ' ', ';']).filter(|s| !s.is_empty()) {
        let id = super::reply::parse_vmid(v)?;
        vmids.push(id);
    }
    let storage = p.get("storage").unwrap_or("local").to_owned();
    let mode = p.get("mode").unwrap_or("snapshot").to_owned();
    if !matches!(mode.as_str(), "snapshot" | "suspend" | "stop") {
        return Err(ApiError::param(
            "mode",
            format!(
                "value '{mode}' does not have a value in the enumeration 'snapshot, suspend, stop'"
            ),
        ));
    }
    let compress = p.get("compress").unwrap_or("0").to_owned();
    let notes_template = p.get("notes-template").map(str::to_owned);
    let protected = p.flag("protected")?;
    let keep = match p.get("prune-backups") {
        Some(v) => Some(super::prune::Keep::parse(v)?),
        None => None,
    };
    let prune_raw = p.get("prune-backups").map(str::to_owned);
    let s = w
        .storage(&storage)
        .ok_or_else(|| ApiError::internal(format!("storage '{storage}' does not exist")))?
        .clone();
    if call.authid != "root@pam"
        && (p.get("prune-backups").is_some() || p.get("maxfiles").is_some())
    {
        call.need(w, &format!("/storage/{storage}"), "Datastore.Allocate")?;
    }
    call.need(w, &format!("/storage/{storage}"), "Datastore.AllocateSpace")?;
    if !s.content.iter().any(|c| c == "backup") {
        return Err(ApiError::internal(format!(
            "storage '{storage}' does not support backups"
        )));
    }
    // VM.Backup is checked by the worker, not the API call (the API method is `user => 'all'`).
    let denied = vmids
        .iter()
        .find(|id| !call.has(w, &vms(**id), "VM.Backup"))
        .map(|id| format!("Permission check failed ({}, VM.Backup)", vms(*id)));
    let node = w.node.name.clone();
    let lock = match vmids.as_slice() {
        [one] if denied.is_none() && w.guests.get(one).is_some_and(|g| g.lock().is_none()) => {
            Some((*one, "backup"))
        }
        _ => None,
    };
    let pre_locked: BTreeMap<u32, String> = vmids
        .iter()
        .filter_map(|id| {
            w.guests
                .get(id)
                .and_then(|g| g.lock().map(|l| (*id, l.to_owned())))
        })
        .collect();
    let mut cmd = format!(
        "vzdump {} --storage {storage} --mode {mode}",
        vmids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if compress != "0" {
        cmd.push_str(&format!(" --compress {compress}"));
    }
    if let Some(raw) = &prune_raw {
        cmd.push_str(&format!(" --prune-backups '{raw}'"));
    }
    cmd.push_str(&format!(" --node {node}"));
    let first = vec![format!("INFO: starting new backup job: {cmd}")];
    let started = now();
    let id = match vmids.as_slice() {
        [one] => one.to_string(),
        _ => String::new(),
    };
    let work = Box::new(
        move |w: &mut World, log: &mut Vec<String>| -> Result<u32, String> {
            if let Some(e) = denied {
                return Err(e);
            }
            let mut failed = false;
            for vmid in &vmids {
                log.push(format!("INFO: Starting Backup of VM {vmid} (lxc)"));
                log.push(format!("INFO: Backup started at {}", pve_time(now())));
                if let Some(l) = pre_locked.get(vmid) {
                    log.push(format!(
                        "ERROR: Backup of VM {vmid} failed - CT is locked ({l})"
                    ));
                    failed = true;
                    continue;
                }
                let Some(g) = w.guests.get(vmid).cloned() else {
                    log.push(format!(
                        "ERROR: Backup of VM {vmid} failed - unable to find configuration file for VM {vmid} on node '{}'",
                        w.node.name
                    ));
                    failed = true;
                    continue;
                };
                let running = g.status == GuestStatus::Running;
                log.push(format!("INFO: status = {}", g.status.as_str()));
                log.push(format!("INFO: CT Name: {}", g.name()));
                for (k, v) in &g.config {
                    if k == "rootfs" {
                        log.push("INFO: including mount point rootfs ('/') in backup".to_owned());
                    } else if is_indexed(k, &["mp"]) {
                        let mp = v
                            .split(',')
                            .find_map(|kv| kv.strip_prefix("mp="))
                            .unwrap_or("?");
                        if v.split(',').any(|kv| kv == "backup=0") {
                            log.push(format!("INFO: excluding volume mount point {k} ('{mp}') from backup (disabled)"));
                        } else {
                            log.push(format!(
                                "INFO: including mount point {k} ('{mp}') in backup"
                            ));
                        }
                    }
                }
                // pve-manager PVE/VZDump.pm `exec_backup_task`: a stopped guest is always backed
                // up in stop mode; snapshot mode falls back to suspend when `prepare` fails
                // with `mode failure` (pve-container: some included volume cannot snapshot).
                let mut actual_mode = if running { mode.as_str() } else { "stop" };
                if actual_mode == "snapshot" {
                    let all_snap = g.config.iter().all(|(k, v)| {
                        let included = k == "rootfs"
                            || (is_indexed(k, &["mp"]) && !v.split(',').any(|kv| kv == "backup=0"));
                        if !included {
                            return true;
                        }
                        let vol = v.split(',').next().unwrap_or("");
                        let sid = vol.split_once(':').map_or("", |(s, _)| s);
                        w.storage(sid).is_some_and(|st| storage_snapshots(&st.kind))
                    });
                    if !all_snap {
                        log.push(
                            "INFO: mode failure - some volumes do not support snapshots".to_owned(),
                        );
                        log.push("INFO: trying 'suspend' mode instead".to_owned());
                        actual_mode = "suspend";
                    }
                }
                log.push(format!("INFO: backup mode: {actual_mode}"));
                log.push("INFO: ionice priority: 7".to_owned());
                let linked = s.kind == "pbs" && super::pbs_link::link_of(w, &storage).is_some();
                let key = if s.kind == "pbs" {
                    match w.key_in_use(&storage) {
                        Ok(k) => k,
                        Err(e) => {
                            log.push(format!("ERROR: Backup of VM {vmid} failed - {e}"));
                            failed = true;
                            continue;
                        }
                    }
                } else {
                    None
                };
                let tmpdir = if s.kind == "pbs" {
                    format!("/var/tmp/vzdumptmp{}_{vmid}", 4000 + vmid % 1000)
                } else {
                    let (y, mo, d, h, mi, sec) = civil(started);
                    format!(
                        "/var/lib/vz/dump/vzdump-lxc-{vmid}-{y:04}_{mo:02}_{d:02}-{h:02}_{mi:02}_{sec:02}.tmp"
                    )
                };
                let mut snapdir = "/mnt/vzsnap0".to_owned();
                match actual_mode {
                    "snapshot" => log.push("INFO: create storage snapshot 'vzdump'".to_owned()),
                    "suspend" => {
                        // prepare runs again for the new mode.
                        log.push(format!("INFO: CT Name: {}", g.name()));
                        log.push("INFO: including mount point rootfs ('/') in backup".to_owned());
                        let pid = 10_000 + vmid;
                        log.push(format!(
                            "INFO: starting first sync /proc/{pid}/root/ to {tmpdir}"
                        ));
                        log.push(
                            "INFO: first sync finished - transferred 1.29G bytes in 11s".to_owned(),
                        );
                        log.push("INFO: suspending guest".to_owned());
                        log.push(format!(
                            "INFO: starting final sync /proc/{pid}/root/ to {tmpdir}"
                        ));
                        log.push(
                            "INFO: final sync finished - transferred 0 bytes in 1s".to_owned(),
                        );
                        log.push("INFO: resuming guest".to_owned());
                        log.push("INFO: guest is online again after 1 seconds".to_owned());
                        snapdir.clone_from(&tmpdir);
                    }
                    _ if running => log.push("INFO: stopping virtual guest".to_owned()),
                    _ => {}
                }
                let mut t = started;
                let volid = loop {
                    let (y, mo, d, h, mi, sec) = civil(t);
                    let v = if s.kind == "pbs" {
                        format!(
                            "{storage}:backup/ct/{vmid}/{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}Z"
                        )
                    } else {
                        let ext = match compress.as_str() {
                            "zstd" => ".tar.zst",
                            "gzip" | "1" => ".tar.gz",
                            "lzo" => ".tar.lzo",
                            _ => ".tar",
                        };
                        format!(
                            "{storage}:backup/vzdump-lxc-{vmid}-{y:04}_{mo:02}_{d:02}-{h:02}_{mi:02}_{sec:02}{ext}"
                        )
                    };
                    let taken = w.backups.iter().any(|b| b.volid == v)
                        || super::pbs_link::snapshot_of(w, &v).is_some();
                    if !taken {
                        break v;
                    }
                    t += 1;
                };
                if s.kind == "pbs" {
                    let dir = volid
                        .split_once(":backup/")
                        .map_or("", |(_, r)| r)
                        .to_owned();
                    log.push(format!(
                        "INFO: creating Proxmox Backup Server archive '{dir}'"
                    ));
                    let crypt = match &key {
                        Some(_) => "--crypt-mode=encrypt --keyfd=14",
                        None => "--crypt-mode=none",
                    };
                    let repo = super::pbs_link::repository(&s);
                    log.push(format!(
                        "INFO: run: lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536 -- /usr/bin/proxmox-backup-client backup {crypt} pct.conf:{tmpdir}/etc/vzdump/pct.conf root.pxar:{snapdir} --include-dev {snapdir}/. --skip-lost-and-found --exclude=/tmp/?* --exclude=/var/tmp/?* --exclude=/var/run/?*.pid --backup-type ct --backup-id {vmid} --backup-time {t} --entries-max 1048576 --repository {repo}"
                    ));
                    log.push(format!("INFO: Starting backup: {dir}"));
                    log.push(format!("INFO: Client name: {}", w.node.name));
                    log.push(format!(
                        "INFO: Starting backup protocol: {}",
                        pve_time(now())
                    ));
                    if let Some(k) = &key {
                        log.push("INFO: Using encryption key from file descriptor..".to_owned());
                        log.push(format!(
                            "INFO: Encryption key fingerprint: {}",
                            k.fingerprint()
                        ));
                    }
                    log.push("INFO: No previous manifest available.".to_owned());
                    log.push(format!(
                        "INFO: Upload config file '{tmpdir}/etc/vzdump/pct.conf' to '{repo}' as pct.conf.blob"
                    ));
                    log.push(format!(
                        "INFO: Upload directory '{snapdir}' to '{repo}' as root.pxar.didx"
                    ));
                    log.push("INFO: root.pxar: had to backup 1.2 GiB of 1.2 GiB (compressed 412 MiB) in 12.41 s (average 99.5 MiB/s)".to_owned());
                    log.push("INFO: Uploaded backup catalog (43.5 KiB)".to_owned());
                    log.push("INFO: Duration: 12.41s".to_owned());
                    log.push(format!("INFO: End Time: {}", pve_time(now())));
                } else {
                    log.push(format!(
                        "INFO: creating vzdump archive '/var/lib/vz/dump/{}'",
                        volid.rsplit('/').next().unwrap_or("")
                    ));
                    log.push("INFO: Total bytes written: 1288212480 (1.2GiB, 103MiB/s)".to_owned());
                    log.push("INFO: archive file size: 412MB".to_owned());
                }
                let mut config = g.config.clone();
                config.remove("lock");
                let notes = notes_template.as_ref().map(|tpl| {
                    tpl.replace("{{guestname}}", &g.name())
                        .replace("{{vmid}}", &vmid.to_string())
                        .replace("{{node}}", &w.node.name)
                        .replace("{{cluster}}", "")
                });
                if notes.is_some() {
                    log.push("INFO: adding notes to backup".to_owned());
                }
                if protected {
                    log.push("INFO: marking backup as protected".to_owned());
                }
                let backup = Backup {
                    volid: volid.clone(),
                    vmid: *vmid,
                    ctime: t,
                    size: 412_000_000,
                    notes,
                    protected,
                    config,
                };
                if linked && let Err(e) = super::pbs_link::record_backup(w, &backup) {
                    log.push(format!("ERROR: Backup of VM {vmid} failed - {e}"));
                    failed = true;
                    continue;
                }
                w.backups.push(backup);
                if let Some(k) = &keep {
                    log.push(format!(
                        "INFO: prune older backups with retention: {}",
                        k.describe()
                    ));
                    if linked {
                        log.push(format!(
                            "INFO: running 'proxmox-backup-client prune' for 'ct/{vmid}'"
                        ));
                    }
                    let mine: Vec<super::prune::Candidate> = if linked {
                        super::pbs_link::list(w, &storage)
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|v| v.vmid == *vmid)
                            .map(|v| super::prune::Candidate {
                                id: v.volid,
                                time: v.snapshot.backup_time,
                                protected: v.snapshot.protected,
                            })
                            .collect()
                    } else {
                        w.backups
                            .iter()
                            .filter(|b| b.storage() == storage && b.vmid == *vmid)
                            .map(|b| super::prune::Candidate {
                                id: b.volid.clone(),
                                time: b.ctime,
                                protected: b.protected,
                            })
                            .collect()
                    };
                    let doomed = super::prune::removals(&mine, k);
                    for v in &doomed {
                        if linked {
                            super::pbs_link::forget(w, v);
                        } else {
                            log.push(format!("INFO: removing backup '{v}'"));
                        }
                    }
                    w.backups.retain(|b| !doomed.contains(&b.volid));
                    if doomed.is_empty() {
                        log.push("INFO: pruned 0 backup(s)".to_owned());
                    } else {
                        log.push(format!(
                            "INFO: pruned {} backup(s) not covered by keep-retention policy",
                            doomed.len()
                        ));
                    }
                }
                match actual_mode {
                    "snapshot" => log.push("INFO: cleanup temporary 'vzdump' snapshot".to_owned()),
                    "stop" if running => {
                        log.push("INFO: restarting vm".to_owned());
                        log.push("INFO: guest is online again after 14 seconds".to_owned());
                    }
                    _ => {}
                }
                log.push(format!("INFO: Finished Backup of VM {vmid} (00:00:12)"));
                log.push(format!("INFO: Backup finished at {}", pve_time(now())));
            }
            if failed {
                log.push("INFO: Backup job finished with errors".to_owned());
                Err("job errors".to_owned())
            } else {
                log.push("INFO: Backup job finished successfully".to_owned());
                Ok(0)
            }
        },
    );
    let upid = call.state.start_task(
        w,
        TaskPlan {
            kind: "vzdump",
            id,
            user: call.authid.clone(),
            lock,
            first_lines: first,
            work,
        },
    );
    Ok(json!(upid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(format_size(16 << 30), "16G");
        assert_eq!(volume_size("local-lvm:vm-1-disk-0,size=4G"), Some(4 << 30));
    }
}
