//! The Proxmox VE endpoints the agent uses, as typed methods on [`PveClient`].
//!
//! Reads decode into [`super::types`]; every mutating call except `set_config` answers with a
//! [`Upid`] whose task the caller must wait for ([`PveClient::wait_task`]) — PVE can still refuse
//! inside the task. `PUT .../config` is synchronous in PVE (it answers `null`), so `set_config`
//! returns once the change is applied. Identifiers are validated here, before anything is sent.

use std::collections::BTreeMap;

use super::client::{Params, PveClient};
use super::error::PveError;
use super::types::*;
use super::upid::Upid;
pub use crate::core::{Vmid, validate_snapshot_name, validate_storage_id};

fn bool01(b: bool) -> String {
    if b { "1" } else { "0" }.to_owned()
}

/// vzdump backup mode as requested; PVE may pick another (a stopped guest is backed up in
/// `stop` mode), which the task log reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    Snapshot,
    Suspend,
    Stop,
}

impl BackupMode {
    /// PVE's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMode::Snapshot => "snapshot",
            BackupMode::Suspend => "suspend",
            BackupMode::Stop => "stop",
        }
    }
}

/// `POST /nodes/{node}/lxc` with `restore=1`: the provisioning and DR path.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub vmid: Vmid,
    /// Backup volid, e.g. `local:backup/vzdump-lxc-9100-….tar.zst` or `felhom-pbs:backup/ct/…`.
    pub archive: String,
    /// Target storage for the guest's volumes.
    pub storage: String,
    /// Overwrite an existing guest with this vmid. Destructive: callers gate it.
    pub force: bool,
    /// Give the restored guest new MAC addresses.
    pub unique: bool,
    pub start: bool,
    pub hostname: Option<String>,
    pub memory_mib: Option<u64>,
    pub cores: Option<u32>,
    /// `onboot`: given options take precedence over the archive's configuration.
    pub onboot: Option<bool>,
    /// `tags` (`;`-separated), replacing the archive's.
    pub tags: Option<String>,
    /// `protection`, replacing the archive's.
    pub protection: Option<bool>,
}

/// `POST /nodes/{node}/vzdump` for one guest.
#[derive(Debug, Clone)]
pub struct VzdumpRequest {
    pub vmid: Vmid,
    pub storage: String,
    pub mode: BackupMode,
    /// e.g. `zstd`; not sent for PBS storages (PBS compresses itself).
    pub compress: Option<String>,
    /// vzdump `prune-backups`, e.g. `keep-last=3,keep-daily=7`.
    pub prune_backups: Option<String>,
    pub notes_template: Option<String>,
    pub protected: bool,
}

/// `PUT .../config`: keys to set and keys to delete, optionally guarded by the config digest.
#[derive(Debug, Clone, Default)]
pub struct ConfigUpdate {
    pub set: BTreeMap<String, String>,
    pub delete: Vec<String>,
    /// Refuse the change if the config changed since it was read with this digest.
    pub digest: Option<String>,
}

/// `DELETE /nodes/{node}/lxc/{vmid}` options.
#[derive(Debug, Clone, Copy, Default)]
pub struct DestroyOptions {
    /// Remove the guest from jobs, replication and HA too.
    pub purge: bool,
    pub destroy_unreferenced_disks: bool,
    pub force: bool,
}

/// Filters of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub vmid: Option<Vmid>,
    pub typefilter: Option<String>,
    pub limit: Option<u32>,
    /// Which tasks: Proxmox's default is `archive` (finished tasks only).
    pub source: Option<TaskSource>,
    /// Only tasks started at or after this unix time.
    pub since: Option<u64>,
    /// Only tasks started at or before this unix time.
    pub until: Option<u64>,
    /// Only tasks of users whose name contains this (e.g. the token's authid).
    pub userfilter: Option<String>,
}

/// `source` of the task list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSource {
    /// Finished tasks (Proxmox's default).
    Archive,
    /// Running tasks.
    Active,
    All,
}

impl TaskSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSource::Archive => "archive",
            TaskSource::Active => "active",
            TaskSource::All => "all",
        }
    }
}

impl PveClient {
    fn node_path(&self, rest: &str) -> String {
        format!("/nodes/{}/{rest}", self.node())
    }

    fn lxc_path(&self, vmid: Vmid, rest: &str) -> String {
        if rest.is_empty() {
            format!("/nodes/{}/lxc/{vmid}", self.node())
        } else {
            format!("/nodes/{}/lxc/{vmid}/{rest}", self.node())
        }
    }

    // ---- reads ----

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, PveError> {
        self.get("/version", vec![]).await
    }

    /// `GET /nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, PveError> {
        self.get("/nodes", vec![]).await
    }

    /// `GET /nodes/{node}/status`.
    pub async fn node_status(&self) -> Result<NodeStatus, PveError> {
        self.get(&self.node_path("status"), vec![]).await
    }

    /// `GET /cluster/resources?type=vm`: every guest in one call.
    pub async fn cluster_guests(&self) -> Result<Vec<ClusterGuest>, PveError> {
        self.get("/cluster/resources", vec![("type", "vm".into())])
            .await
    }

    /// `GET /cluster/nextid`.
    pub async fn next_vmid(&self) -> Result<Vmid, PveError> {
        let raw: serde_json::Value = self.get("/cluster/nextid", vec![]).await?;
        let n = match &raw {
            serde_json::Value::String(s) => s.parse::<u32>().ok(),
            serde_json::Value::Number(n) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
            _ => None,
        };
        let n = n.ok_or_else(|| PveError::InvalidRequest(format!("nextid answered {raw}")))?;
        Ok(Vmid::new(n)?)
    }

    /// `GET /nodes/{node}/lxc`.
    pub async fn list_lxc(&self) -> Result<Vec<LxcSummary>, PveError> {
        self.get(&self.node_path("lxc"), vec![]).await
    }

    /// `GET .../lxc/{vmid}/status/current`.
    pub async fn lxc_status(&self, vmid: Vmid) -> Result<LxcStatus, PveError> {
        self.get(&self.lxc_path(vmid, "status/current"), vec![])
            .await
    }

    /// `GET .../lxc/{vmid}/config`.
    pub async fn lxc_config(&self, vmid: Vmid) -> Result<LxcConfig, PveError> {
        self.get(&self.lxc_path(vmid, "config"), vec![]).await
    }

    /// [`Self::lxc_config`], or the same guest's config read within the last
    /// [`super::CONFIG_MAX_AGE`] if the agent changed nothing since (for hot read paths; see
    /// the `config_cache` module for the staleness bound).
    pub async fn lxc_config_recent(&self, vmid: Vmid) -> Result<LxcConfig, PveError> {
        let generation = match self.configs.get(vmid.get()) {
            Ok(config) => return Ok(config),
            Err(generation) => generation,
        };
        let config = self.lxc_config(vmid).await?;
        self.configs.put(vmid.get(), generation, &config);
        Ok(config)
    }

    /// `GET .../lxc/{vmid}/snapshot` (includes `current`).
    pub async fn snapshots(&self, vmid: Vmid) -> Result<Vec<Snapshot>, PveError> {
        self.get(&self.lxc_path(vmid, "snapshot"), vec![]).await
    }

    /// `GET .../lxc/{vmid}/interfaces` (running guests only).
    pub async fn lxc_interfaces(&self, vmid: Vmid) -> Result<Vec<GuestInterface>, PveError> {
        self.get(&self.lxc_path(vmid, "interfaces"), vec![]).await
    }

    /// `GET /storage`: cluster storage configuration.
    pub async fn storage_config(&self) -> Result<Vec<StorageConfig>, PveError> {
        self.get("/storage", vec![]).await
    }

    /// `POST /storage`: adds an encrypted `pbs` storage with the given client key, or one PVE
    /// makes (`encryption-key autogen`); PVE keeps it in `/etc/pve/priv/storage/<id>.enc`,
    /// storage.cfg its fingerprint, the password in `<id>.pw`. The answer, which carries the
    /// key once, is dropped unread.
    pub async fn add_pbs_storage(&self, req: &PbsStorageRequest) -> Result<(), PveError> {
        use secrecy::ExposeSecret as _;
        let mut form: Params = vec![
            ("storage", req.storage.clone()),
            ("type", "pbs".into()),
            ("server", req.server.clone()),
            ("datastore", req.datastore.clone()),
            ("username", req.username.clone()),
            ("password", req.password.expose_secret().to_owned()),
            ("fingerprint", req.fingerprint.clone()),
            (
                "encryption-key",
                req.encryption_key
                    .as_ref()
                    .map_or_else(|| "autogen".to_owned(), |k| k.as_str().to_owned()),
            ),
            ("content", "backup".into()),
        ];
        if let Some(port) = req.port {
            form.push(("port", port.to_string()));
        }
        self.post_sync("/storage", form).await
    }

    /// `GET /nodes/{node}/storage`: storages with usage on this node.
    pub async fn node_storage(&self) -> Result<Vec<StorageStatus>, PveError> {
        self.get(&self.node_path("storage"), vec![]).await
    }

    /// `GET /nodes/{node}/storage/{storage}/status`.
    pub async fn storage_status(&self, storage: &str) -> Result<StorageStatus, PveError> {
        validate_storage_id(storage)?;
        let mut s: StorageStatus = self
            .get(
                &self.node_path(&format!("storage/{storage}/status")),
                vec![],
            )
            .await?;
        if s.storage.is_empty() {
            s.storage = storage.to_owned();
        }
        Ok(s)
    }

    /// `GET /nodes/{node}/storage/{storage}/content?content=backup[&vmid=N]`.
    pub async fn backup_volumes(
        &self,
        storage: &str,
        vmid: Option<Vmid>,
    ) -> Result<Vec<StorageVolume>, PveError> {
        validate_storage_id(storage)?;
        let mut q: Params = vec![("content", "backup".into())];
        if let Some(v) = vmid {
            q.push(("vmid", v.to_string()));
        }
        self.get(&self.node_path(&format!("storage/{storage}/content")), q)
            .await
    }

    /// `GET /nodes/{node}/tasks`.
    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskSummary>, PveError> {
        let mut q: Params = Vec::new();
        if let Some(v) = filter.vmid {
            q.push(("vmid", v.to_string()));
        }
        if let Some(t) = &filter.typefilter {
            q.push(("typefilter", t.clone()));
        }
        if let Some(l) = filter.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(s) = filter.source {
            q.push(("source", s.as_str().to_owned()));
        }
        if let Some(s) = filter.since {
            q.push(("since", s.to_string()));
        }
        if let Some(u) = filter.until {
            q.push(("until", u.to_string()));
        }
        if let Some(u) = &filter.userfilter {
            q.push(("userfilter", u.clone()));
        }
        self.get(&self.node_path("tasks"), q).await
    }

    /// `GET /nodes/{node}/disks/list`.
    pub async fn disks(&self) -> Result<Vec<PhysicalDisk>, PveError> {
        self.get(&self.node_path("disks/list"), vec![]).await
    }

    /// `GET /nodes/{node}/disks/lvmthin`.
    pub async fn thin_pools(&self) -> Result<Vec<ThinPool>, PveError> {
        self.get(&self.node_path("disks/lvmthin"), vec![]).await
    }

    /// `GET /access/permissions`: the token's effective privileges per path.
    pub async fn permissions(&self) -> Result<Permissions, PveError> {
        self.get("/access/permissions", vec![]).await
    }

    // ---- async mutations (each returns the task's UPID) ----

    /// Restores a backup archive into guest `vmid` (`POST /nodes/{node}/lxc`, `restore=1`).
    pub async fn restore_lxc(&self, req: &RestoreRequest) -> Result<Upid, PveError> {
        validate_storage_id(&req.storage)?;
        if req.archive.is_empty() || req.archive.chars().any(char::is_control) {
            return Err(PveError::InvalidRequest(
                "archive volid is empty or malformed".into(),
            ));
        }
        let mut f: Params = vec![
            ("vmid", req.vmid.to_string()),
            ("ostemplate", req.archive.clone()),
            ("restore", "1".into()),
            ("storage", req.storage.clone()),
        ];
        if req.force {
            f.push(("force", "1".into()));
        }
        if req.unique {
            f.push(("unique", "1".into()));
        }
        if req.start {
            f.push(("start", "1".into()));
        }
        if let Some(h) = &req.hostname {
            f.push(("hostname", h.clone()));
        }
        if let Some(m) = req.memory_mib {
            f.push(("memory", m.to_string()));
        }
        if let Some(c) = req.cores {
            f.push(("cores", c.to_string()));
        }
        if let Some(b) = req.onboot {
            f.push(("onboot", if b { "1" } else { "0" }.into()));
        }
        if let Some(t) = &req.tags {
            f.push(("tags", t.clone()));
        }
        if let Some(p) = req.protection {
            f.push(("protection", if p { "1" } else { "0" }.into()));
        }
        self.post_upid(&self.node_path("lxc"), f).await
    }

    /// Backs one guest up (`POST /nodes/{node}/vzdump`).
    pub async fn vzdump(&self, req: &VzdumpRequest) -> Result<Upid, PveError> {
        validate_storage_id(&req.storage)?;
        let mut f: Params = vec![
            ("vmid", req.vmid.to_string()),
            ("storage", req.storage.clone()),
            ("mode", req.mode.as_str().into()),
        ];
        if let Some(c) = &req.compress {
            f.push(("compress", c.clone()));
        }
        if let Some(p) = &req.prune_backups {
            f.push(("prune-backups", p.clone()));
        }
        if let Some(n) = &req.notes_template {
            f.push(("notes-template", n.clone()));
        }
        if req.protected {
            f.push(("protected", "1".into()));
        }
        self.post_upid(&self.node_path("vzdump"), f).await
    }

    /// Takes a snapshot (`POST .../snapshot`).
    pub async fn snapshot(
        &self,
        vmid: Vmid,
        name: &str,
        description: Option<&str>,
    ) -> Result<Upid, PveError> {
        validate_snapshot_name(name)?;
        let mut f: Params = vec![("snapname", name.to_owned())];
        if let Some(d) = description {
            f.push(("description", d.to_owned()));
        }
        self.post_upid(&self.lxc_path(vmid, "snapshot"), f).await
    }

    /// Rolls back to a snapshot (`POST .../snapshot/{snap}/rollback`).
    pub async fn rollback(&self, vmid: Vmid, name: &str, start: bool) -> Result<Upid, PveError> {
        validate_snapshot_name(name)?;
        let f: Params = if start {
            vec![("start", bool01(true))]
        } else {
            vec![]
        };
        self.post_upid(
            &self.lxc_path(vmid, &format!("snapshot/{name}/rollback")),
            f,
        )
        .await
    }

    /// Deletes a snapshot (`DELETE .../snapshot/{snap}`).
    pub async fn delete_snapshot(&self, vmid: Vmid, name: &str) -> Result<Upid, PveError> {
        validate_snapshot_name(name)?;
        self.delete_upid(&self.lxc_path(vmid, &format!("snapshot/{name}")), vec![])
            .await
    }

    /// Changes guest configuration (`PUT .../config`); synchronous in PVE.
    pub async fn set_config(&self, vmid: Vmid, update: &ConfigUpdate) -> Result<(), PveError> {
        if update.set.is_empty() && update.delete.is_empty() {
            return Err(PveError::InvalidRequest(
                "config update changes nothing".into(),
            ));
        }
        let mut f: Params = Vec::new();
        for (k, v) in &update.set {
            let key: &'static str = config_key(k)?;
            f.push((key, v.clone()));
        }
        if !update.delete.is_empty() {
            for k in &update.delete {
                config_key(k)?;
            }
            f.push(("delete", update.delete.join(",")));
        }
        if let Some(d) = &update.digest {
            f.push(("digest", d.clone()));
        }
        self.put_sync(&self.lxc_path(vmid, "config"), f).await
    }

    /// Resizes a volume (`PUT .../resize`): `disk` is `rootfs` or `mpN`, `size` `+2G` or `16G`.
    pub async fn resize(&self, vmid: Vmid, disk: &str, size: &str) -> Result<Upid, PveError> {
        let disk_ok = disk == "rootfs"
            || disk
                .strip_prefix("mp")
                .is_some_and(|n| n.parse::<u16>().is_ok_and(|n| n < 256));
        if !disk_ok {
            return Err(PveError::InvalidRequest(format!(
                "disk '{}' is not rootfs or mpN",
                disk.escape_debug()
            )));
        }
        let digits = size.strip_prefix('+').unwrap_or(size);
        let (num, unit) = digits.split_at(
            digits
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(digits.len()),
        );
        if num.is_empty() || !matches!(unit, "" | "K" | "M" | "G" | "T") {
            return Err(PveError::InvalidRequest(format!(
                "size '{}' is not like +2G or 16G",
                size.escape_debug()
            )));
        }
        self.put_upid(
            &self.lxc_path(vmid, "resize"),
            vec![("disk", disk.into()), ("size", size.into())],
        )
        .await
    }

    /// Starts a guest.
    pub async fn start(&self, vmid: Vmid) -> Result<Upid, PveError> {
        self.post_upid(&self.lxc_path(vmid, "status/start"), vec![])
            .await
    }

    /// Stops a guest immediately.
    pub async fn stop(&self, vmid: Vmid) -> Result<Upid, PveError> {
        self.post_upid(&self.lxc_path(vmid, "status/stop"), vec![])
            .await
    }

    /// Shuts a guest down cleanly, stopping it after `timeout_s` if `force_stop`.
    pub async fn shutdown(
        &self,
        vmid: Vmid,
        timeout_s: Option<u32>,
        force_stop: bool,
    ) -> Result<Upid, PveError> {
        let mut f: Params = Vec::new();
        if let Some(t) = timeout_s {
            f.push(("timeout", t.to_string()));
        }
        if force_stop {
            f.push(("forceStop", "1".into()));
        }
        self.post_upid(&self.lxc_path(vmid, "status/shutdown"), f)
            .await
    }

    /// Destroys a guest (`DELETE /nodes/{node}/lxc/{vmid}`). Destructive: callers gate it.
    pub async fn destroy(&self, vmid: Vmid, opts: DestroyOptions) -> Result<Upid, PveError> {
        let mut q: Params = Vec::new();
        if opts.purge {
            q.push(("purge", "1".into()));
        }
        if opts.destroy_unreferenced_disks {
            q.push(("destroy-unreferenced-disks", "1".into()));
        }
        if opts.force {
            q.push(("force", "1".into()));
        }
        self.delete_upid(&self.lxc_path(vmid, ""), q).await
    }
}

/// Config keys the agent may set; the `&'static str` form is what the form encoder takes.
fn config_key(key: &str) -> Result<&'static str, PveError> {
    const KEYS: &[&str] = &[
        "hostname",
        "cores",
        "memory",
        "swap",
        "description",
        "onboot",
        "tags",
        "cpulimit",
        "cpuunits",
        "nameserver",
        "searchdomain",
        "startup",
        "protection",
        "mp0",
        "mp1",
        "mp2",
        "mp3",
        "mp4",
        "mp5",
        "mp6",
        "mp7",
        "mp8",
        "mp9",
        "net0",
        "net1",
        "net2",
        "net3",
    ];
    KEYS.iter().copied().find(|k| *k == key).ok_or_else(|| {
        PveError::InvalidRequest(format!(
            "config key '{}' is not one the agent manages",
            key.escape_debug()
        ))
    })
}

/// An encrypted PBS storage to add (`POST /storage`, type `pbs`). Debug hides the password.
pub struct PbsStorageRequest {
    pub storage: String,
    pub server: String,
    pub port: Option<u16>,
    pub datastore: String,
    /// The PBS user or API token PVE logs in as (`user@pbs!token`).
    pub username: String,
    pub password: secrecy::SecretString,
    /// SHA-256 of the PBS certificate (`aa:bb:…`).
    pub fingerprint: String,
    /// The key-file JSON to use (a key already on this host, e.g. recovered from the escrow);
    /// `None`: PVE makes a new one (`autogen`, which would move an existing key file aside).
    pub encryption_key: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for PbsStorageRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbsStorageRequest")
            .field("storage", &self.storage)
            .field("server", &self.server)
            .field("datastore", &self.datastore)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmid_bounds_follow_pve() {
        assert!(Vmid::new(99).is_err());
        assert_eq!(Vmid::new(100).unwrap().get(), 100);
        assert!(Vmid::new(1_000_000_000).is_err());
        assert_eq!(
            PveError::from(Vmid::new(5).unwrap_err()).to_string(),
            "invalid request: vmid 5 is outside 100..=999999999"
        );
    }

    #[test]
    fn snapshot_names_follow_pve_configid() {
        for ok in ["felhom_pre_deploy", "ab", "S1"] {
            validate_snapshot_name(ok).unwrap();
        }
        for bad in [
            "",
            "a",
            "1abc",
            "pre-deploy",
            "../x",
            "current",
            "a b",
            &"a".repeat(42),
        ] {
            assert!(validate_snapshot_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unmanaged_config_keys_are_refused_by_name() {
        let err = config_key("lxc.apparmor.profile").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid request: config key 'lxc.apparmor.profile' is not one the agent manages"
        );
        assert_eq!(config_key("memory").unwrap(), "memory");
    }
}
