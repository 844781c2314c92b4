//! A PVE storage of type `pbs` backed by a running PBS simulator, like a real `pbs:` entry in
//! `storage.cfg` points at a PBS datastore.
//!
//! With [`PbsLink`] in [`super::PveSimOptions::pbs_link`], the linked storage's backups live in
//! the PBS simulator's datastore:
//! - vzdump to it creates the snapshot there (`ct/<vmid>/<backup-time>`, owner = the storage's
//!   `username`, files `pct.conf.blob`, `root.pxar.didx`, `catalog.pcat1.didx`,
//!   `index.json.blob`, `client.log.blob`; crypt-mode `encrypt` plus the key `fingerprint` when
//!   the storage has an encryption key, `none` otherwise);
//! - `GET /nodes/{node}/storage/{storage}/content` lists what the datastore holds now (a
//!   snapshot forgotten or pruned on the PBS side is gone), with `verification`, `notes`
//!   (the snapshot comment), `protected` and `encrypted` taken from the PBS listing;
//! - vzdump's `prune-backups` removes from the datastore;
//! - restore finds the archive there (the archived guest config stays on the PVE side,
//!   standing in for `pct.conf.blob`).
//!
//! At start, backups the PVE fixture lists on the linked storage are written into the datastore
//! (unless it already has them), and the storage's `server`/`port`/`fingerprint`/`datastore`
//! are set to the PBS simulator's, as the admin would configure them.
//!
//! Verified against pve-storage `src/PVE/Storage/PBSPlugin.pm`:
//! - the encryption key is stored in `/etc/pve/priv/storage/<storeid>.enc` (key JSON), and the
//!   `encryption-key` property in `storage.cfg` holds its fingerprint (or `1` when the key JSON
//!   has none), so `GET /storage` and `GET /storage/{storage}` show the fingerprint, never the
//!   key (`api_storage_config` returns the section as stored);
//! - backup/restore run `proxmox-backup-client` with `--crypt-mode=encrypt --keyfd=<fd>` when the
//!   key file exists, else `--crypt-mode=none`, then the command's parameters, then
//!   `--repository <user>@<server>[:<port>]:<datastore>`; the command line is logged as
//!   `run: <argv joined by spaces>`;
//! - `list_volumes` queries `/admin/datastore/<store>/snapshots` and maps each ct/vm snapshot
//!   with a numeric id to `{volid: <sid>:backup/<type>/<id>/<%FT%TZ>, format: pbs-<type>, size,
//!   content: backup, vmid, ctime, subtype}` plus `verification`, `notes` (= comment),
//!   `protected`, and `encrypted` = the snapshot's key fingerprint (or `1` when only the files'
//!   crypt-mode says so);
//! - prune runs `proxmox-backup-client prune <type>/<vmid> --keep-…` per group and logs
//!   `running 'proxmox-backup-client prune' for '<type>/<vmid>'`.
//!
//! From proxmox-backup's client (`proxmox-backup-client/src/main.rs`, verified for the
//! fingerprint line): the backup prints `Starting backup: <dir>`, `Client name: <node>`, the key
//! source and `Encryption key fingerprint: <fp>`; the key source text `Using encryption key from
//! file descriptor..` is from memory of the newer `format_key_source`.
//!
//! With [`super::PveSimOptions::priv_dir`] the key is a file (`storage/<id>.enc`) read at every
//! backup and restore, and storage.cfg's `encryption-key` is kept apart from it, as in PVE: a
//! configured key whose file is gone fails the job ("encryption configured ('<fp>') but no
//! encryption key file found!"), a file without a configured key is still used.
//!
//! Not modelled: namespaces on the PVE side, `master-pubkey`, storage activation errors.

use std::collections::BTreeMap;

use crate::pbs::{BackupType, CryptMode, PbsKey, PbsSimHandle, SimFile, SimSnapshot};

use super::fixture::StorageFixture;
use super::state::{Backup, SimState, World};

/// The PBS user PVE's `pbs` storages log in as unless the fixture names another.
pub const DEFAULT_PBS_USER: &str = "felhom-backup@pbs";

pub use super::state::PbsLink;

// Reading a storage's backups depends on the link (a linked storage lists what PBS still has).
impl SimState {
    /// Copies of the backups on `storage` (on a PBS-linked storage: those PBS still has).
    pub fn backups(&self, storage: &str) -> Vec<Backup> {
        let w = self.lock();
        w.backups
            .iter()
            .filter(|b| b.storage() == storage && volume_exists(&w, b))
            .cloned()
            .collect()
    }
}

impl PbsLink {
    /// Links `storage` to `pbs`'s `datastore`.
    pub fn new(pbs: &PbsSimHandle, storage: &str, datastore: &str) -> PbsLink {
        PbsLink {
            storage: storage.to_owned(),
            pbs: pbs.state().clone(),
            datastore: datastore.to_owned(),
            port: pbs.addr().port(),
            fingerprint: pbs.fingerprint().to_owned(),
        }
    }
}

/// The PBS user of a `pbs` storage.
pub fn pbs_user(s: &StorageFixture) -> String {
    s.username
        .clone()
        .unwrap_or_else(|| DEFAULT_PBS_USER.to_owned())
}

/// `PVE::PBSClient::get_repository`: `<user>@<server>[:<port>]:<datastore>`.
pub fn repository(s: &StorageFixture) -> String {
    let server = s.server.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
    let server = match s.port {
        Some(p) if p != 8007 => format!("{server}:{p}"),
        Some(_) | None => server,
    };
    format!(
        "{}@{server}:{}",
        pbs_user(s),
        s.datastore.as_deref().unwrap_or("")
    )
}

/// Applies a link to the world: storage settings, and the fixture's backups into PBS.
pub(crate) fn attach(w: &mut World, link: PbsLink) {
    if let Some(s) = w.storages.iter_mut().find(|s| s.storage == link.storage) {
        s.server = Some("127.0.0.1".to_owned());
        s.port = Some(link.port);
        s.fingerprint = Some(link.fingerprint.clone());
        s.datastore = Some(link.datastore.clone());
    }
    let owner = w
        .storage(&link.storage)
        .map(pbs_user)
        .unwrap_or_else(|| DEFAULT_PBS_USER.to_owned());
    let have = link.pbs.snapshots(&link.datastore);
    for b in w.backups.iter().filter(|b| b.storage() == link.storage) {
        let Some((btype, id, time)) = parse_volid(&b.volid) else {
            continue;
        };
        let present = have.iter().any(|s| {
            s.in_ns(None) && s.backup_type == btype && s.backup_id == id && s.backup_time == time
        });
        if !present {
            link.pbs
                .add_snapshot(&link.datastore, snapshot_for(b, &owner, None, &b.config));
        }
    }
    w.pbs_links.push(link);
}

/// The link of a storage, if any.
pub fn link_of<'a>(w: &'a World, sid: &str) -> Option<&'a PbsLink> {
    w.pbs_links.iter().find(|l| l.storage == sid)
}

/// `backup/ct/101/2026-06-09T14:18:33Z` (with or without `<sid>:`) → its parts.
pub fn parse_volid(volid: &str) -> Option<(BackupType, String, i64)> {
    let name = volid.split_once(':').map_or(volid, |(_, n)| n);
    let rest = name.strip_prefix("backup/")?;
    let mut parts = rest.splitn(3, '/');
    let btype = BackupType::parse(parts.next()?)?;
    let id = parts.next()?.to_owned();
    let time = parse_utc(parts.next()?)?;
    Some((btype, id, time))
}

/// `YYYY-MM-DDTHH:MM:SSZ` → unix time.
fn parse_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.timestamp())
}

/// The snapshot a vzdump of `config` writes (sizes derived from the config).
fn snapshot_for(
    b: &Backup,
    owner: &str,
    key: Option<&PbsKey>,
    config: &BTreeMap<String, String>,
) -> SimSnapshot {
    let (mode, manifest) = match key {
        Some(_) => (CryptMode::Encrypt, CryptMode::SignOnly),
        None => (CryptMode::None, CryptMode::None),
    };
    let conf_len: usize = config.iter().map(|(k, v)| k.len() + v.len() + 3).sum();
    let file = |name: &str, crypt, size: u64| SimFile {
        filename: name.to_owned(),
        crypt_mode: Some(crypt),
        size: Some(size),
    };
    let pxar = b.size.max(1);
    SimSnapshot {
        ns: None,
        backup_type: BackupType::Ct,
        backup_id: b.vmid.to_string(),
        backup_time: b.ctime,
        owner: owner.to_owned(),
        protected: b.protected,
        comment: b.notes.clone(),
        fingerprint: key.map(PbsKey::fingerprint),
        files: vec![
            file("catalog.pcat1.didx", mode, 44_527),
            file("index.json.blob", manifest, 717),
            file("pct.conf.blob", mode, conf_len as u64 + 60),
            file("root.pxar.didx", mode, pxar),
            SimFile {
                filename: "client.log.blob".to_owned(),
                crypt_mode: None,
                size: None,
            },
        ],
        verification: None,
    }
}

/// Writes a finished vzdump's snapshot into the linked datastore. Err: the text vzdump logs.
pub(crate) fn record_backup(w: &World, b: &Backup) -> Result<(), String> {
    let Some(link) = link_of(w, b.storage()) else {
        return Ok(());
    };
    if !link.pbs.lock().datastore_exists(&link.datastore) {
        return Err(format!(
            "{}: Cannot find datastore '{}', check permissions and existence!",
            link.storage, link.datastore
        ));
    }
    let owner = w
        .storage(&link.storage)
        .map(pbs_user)
        .unwrap_or_else(|| DEFAULT_PBS_USER.to_owned());
    let key = w.key_in_use(&link.storage)?;
    link.pbs.add_snapshot(
        &link.datastore,
        snapshot_for(b, &owner, key.as_ref(), &b.config),
    );
    Ok(())
}

/// The linked datastore's snapshot behind a volid, if the storage is linked and it exists.
pub fn snapshot_of(w: &World, volid: &str) -> Option<SimSnapshot> {
    let sid = volid.split_once(':')?.0;
    let link = link_of(w, sid)?;
    let (btype, id, time) = parse_volid(volid)?;
    link.pbs.snapshot(&link.datastore, btype, &id, time)
}

/// Whether a backup volume exists: on a linked storage only if PBS still has it.
pub fn volume_exists(w: &World, b: &Backup) -> bool {
    match link_of(w, b.storage()) {
        Some(_) => snapshot_of(w, &b.volid).is_some(),
        None => true,
    }
}

/// One backup volume of a linked storage, as `list_volumes` reports it.
#[derive(Debug, Clone)]
pub struct LinkedVolume {
    pub volid: String,
    pub vmid: u32,
    pub snapshot: SimSnapshot,
}

/// What the linked datastore holds now (ct/vm groups with a numeric id), oldest first;
/// `None` when `sid` is not linked.
pub fn list(w: &World, sid: &str) -> Option<Vec<LinkedVolume>> {
    let link = link_of(w, sid)?;
    let mut snaps = link.pbs.snapshots(&link.datastore);
    snaps.retain(|s| s.in_ns(None));
    snaps.sort_by_key(|s| s.backup_time);
    Some(
        snaps
            .into_iter()
            .filter(|s| matches!(s.backup_type, BackupType::Ct | BackupType::Vm))
            .filter_map(|s| {
                let vmid: u32 = s.backup_id.parse().ok()?;
                Some(LinkedVolume {
                    volid: format!("{sid}:backup/{}", s.dir()),
                    vmid,
                    snapshot: s,
                })
            })
            .collect(),
    )
}

/// The `encrypted` value PVE reports for a snapshot, if any (PBSPlugin `list_volumes`).
pub fn encrypted(s: &SimSnapshot) -> Option<String> {
    if let Some(fp) = &s.fingerprint {
        return Some(fp.clone());
    }
    let mut any = false;
    let mut all = true;
    for f in &s.files {
        if f.filename == "client.log.blob" || f.filename == "index.json.blob" {
            continue;
        }
        let enc = f.crypt_mode == Some(CryptMode::Encrypt);
        all &= enc;
        any |= enc;
    }
    (any && all).then(|| "1".to_owned())
}

/// Removes a snapshot from the linked datastore (prune). True when it existed.
pub(crate) fn forget(w: &World, volid: &str) -> bool {
    let Some((sid, _)) = volid.split_once(':') else {
        return false;
    };
    let (Some(link), Some((btype, id, time))) = (link_of(w, sid), parse_volid(volid)) else {
        return false;
    };
    link.pbs.forget_snapshot(&link.datastore, btype, &id, time)
}

/// How to start a linked PVE + PBS pair ([`LinkedSims::start`]).
#[derive(Debug, Clone)]
pub struct LinkedOptions {
    /// The PVE simulator (its `pbs_link` is filled in). Default: the default host.
    pub pve: super::PveSimOptions,
    /// The PBS simulator. Default: [`crate::pbs::PbsFixture::linked_host`].
    pub pbs: crate::pbs::PbsSimOptions,
    /// The PVE storage to link. Default `felhom-pbs`.
    pub storage: String,
    /// Give the storage a fresh encryption key. Default false.
    pub encrypted: bool,
}

impl Default for LinkedOptions {
    fn default() -> Self {
        LinkedOptions {
            pve: super::PveSimOptions::default(),
            pbs: crate::pbs::PbsSimOptions {
                fixture: crate::pbs::PbsFixture::linked_host(),
                ..crate::pbs::PbsSimOptions::default()
            },
            storage: "felhom-pbs".to_owned(),
            encrypted: false,
        }
    }
}

/// Errors starting a linked pair.
#[derive(Debug, thiserror::Error)]
pub enum LinkedStartError {
    #[error("Cannot start the PBS simulator")]
    Pbs(#[from] crate::pbs::PbsSimError),
    #[error("Cannot start the PVE simulator")]
    Pve(#[from] super::PveSimError),
    #[error("The PBS fixture has no datastore to link to")]
    NoDatastore,
    #[error("Cannot set the encryption key: {0}")]
    Key(String),
}

/// A PVE simulator whose `pbs` storage is backed by a running PBS simulator.
#[derive(Debug)]
pub struct LinkedSims {
    pub pve: super::PveSimHandle,
    pub pbs: PbsSimHandle,
    /// The storage's encryption key when [`LinkedOptions::encrypted`].
    pub key: Option<PbsKey>,
}

impl LinkedSims {
    /// Starts PBS, then PVE with its storage linked to PBS's first datastore.
    pub async fn start(opts: LinkedOptions) -> Result<LinkedSims, LinkedStartError> {
        let pbs = crate::pbs::PbsSim::start(opts.pbs).await?;
        let datastore = pbs
            .datastore()
            .ok_or(LinkedStartError::NoDatastore)?
            .to_owned();
        let mut pve_opts = opts.pve;
        pve_opts.pbs_link = Some(PbsLink::new(&pbs, &opts.storage, &datastore));
        let pve = super::PveSim::start(pve_opts).await?;
        let key = if opts.encrypted {
            let key = PbsKey::generate();
            pve.state()
                .set_pbs_encryption_key(&opts.storage, Some(key.clone()))
                .map_err(LinkedStartError::Key)?;
            Some(key)
        } else {
            None
        };
        Ok(LinkedSims { pve, pbs, key })
    }

    /// Stops both simulators.
    pub async fn shutdown(self) {
        self.pve.shutdown().await;
        self.pbs.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volids_parse_back_to_pbs_snapshot_parts() {
        let (t, id, time) = parse_volid("felhom-pbs:backup/ct/101/2026-06-09T14:18:33Z").unwrap();
        assert_eq!(
            (t, id.as_str(), time),
            (BackupType::Ct, "101", 1_781_014_713)
        );
        assert!(parse_volid("local:backup/vzdump-lxc-101-2026_06_09-14_18_33.tar.zst").is_none());
    }
}
