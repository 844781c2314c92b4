//! Journaled provisioning (front half): restore a guest from a backup archive, configure it,
//! grow its rootfs and optionally start it — each step journaled so a crash at any point is
//! either finished or rolled back by [`recover`] at the next start.
//!
//! Steps, in order: `restore` (the guest is recorded as created *before* the restore POST, with
//! `unique=1`, `force=0`, so a crash between Proxmox creating it and the journal noting the UPID
//! cannot orphan it), `configure` (hostname, memory, cores), `resize` (rootfs to an absolute
//! size; journaled even when skipped because the size already matches, so the step list of a
//! finished operation is always the same), and `start` (only when asked; the operation kind is
//! then [`KIND_START`] so recovery knows the full step list). Any failure compensates: the
//! operation destroys only what it recorded as created (stop if running, destroy with purge),
//! and the original error is returned.
//!
//! Recovery ([`recover`]) runs in the daemon *before* the gRPC socket is bound, so no
//! `ProvisionGuest` can start on a guest whose previous operation is still being resolved.
//! A vmid that already exists is refused before anything is journaled as created; a restore
//! POST that Proxmox rejects outright (4xx, or pve-container's synchronous `CT <vmid> already
//! exists on node '<node>'` 500 if another client won a race) is recorded as "not created"
//! without destroying anything. A restore whose UPID never made it into the journal (a crash
//! right around the POST, or an ambiguous failure: transport error, timeout, other 5xx) is
//! destroyed by compensation only if Proxmox lists a `vzrestore` task of this agent's token for
//! that vmid since the step began; otherwise whatever exists there is not ours and is left
//! alone. Limits: one node. Recovery runs before the socket is bound and before READY=1 / the
//! watchdog (extending systemd's start timeout meanwhile), so a Proxmox VE that is down delays
//! start-up by up to the task deadline per stuck task.
//!
//! The journal, compensation and recovery are the engine's (`infra::journaled`); this module
//! owns the steps and which of them make a provision complete ([`PLANS`]).

use tokio_util::sync::CancellationToken;

use crate::core::{Vmid, error_chain};
use crate::infra::journaled::{
    self, JournalWriter, JournaledError, Plans, compensate, new_guest_restore, restore_new_guest,
    step,
};
use crate::infra::pve::{ConfigUpdate, PveClient, PveError, WaitOptions};
use crate::infra::state::{OperationId, StateDb};

/// Operation kind of a provision that does not start the guest.
pub const KIND: &str = "provision";
/// Operation kind of a provision that starts the guest at the end.
pub const KIND_START: &str = "provision+start";

/// The provisioning kinds recovery may complete, by their full step lists.
pub const PLANS: Plans = Plans(&[
    (KIND, &["restore", "configure", "resize"]),
    (KIND_START, &["restore", "configure", "resize", "start"]),
]);

/// What to provision.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// `None`: the next free vmid.
    pub vmid: Option<Vmid>,
    /// Backup volid to restore from.
    pub archive: String,
    /// Target storage of the guest's volumes.
    pub storage: String,
    pub hostname: String,
    pub memory_mib: u64,
    pub cores: u32,
    /// Absolute rootfs size; must not be smaller than the archive's.
    pub rootfs_gib: u64,
    pub start: bool,
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("Invalid provision request: {0}")]
    Invalid(String),
    #[error(
        "Requested rootfs size {requested} GiB is smaller than the current {current_bytes} bytes"
    )]
    Shrink { requested: u64, current_bytes: u64 },
    #[error(transparent)]
    Journaled(#[from] JournaledError),
}

fn pve_err(step: &'static str) -> impl FnOnce(PveError) -> ProvisionError {
    move |source| JournaledError::Pve { step, source }.into()
}

impl ProvisionRequest {
    /// Checks what Proxmox would reject late, so no operation is journaled for it.
    pub fn validate(&self) -> Result<(), ProvisionError> {
        let bad = |m: String| Err(ProvisionError::Invalid(m));
        if self.archive.is_empty() {
            return bad("archive is empty".into());
        }
        crate::infra::pve::validate_storage_id(&self.storage)
            .map_err(|e| ProvisionError::Invalid(format!("storage: {e}")))?;
        let host_ok = !self.hostname.is_empty()
            && self.hostname.len() <= 63
            && self
                .hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !self.hostname.starts_with('-');
        if !host_ok {
            return bad(format!("hostname {:?} is not a DNS label", self.hostname));
        }
        if self.memory_mib < 16 {
            return bad(format!("memory_mib {} is below 16", self.memory_mib));
        }
        if self.cores == 0 || self.cores > 8192 {
            return bad(format!("cores {} is not 1..8192", self.cores));
        }
        if self.rootfs_gib == 0 {
            return bad("rootfs_gib must be at least 1".into());
        }
        Ok(())
    }
}

/// Runs the steps of a begun operation, compensating on failure.
pub async fn run(
    pve: &PveClient,
    journal: &JournalWriter,
    wait: &WaitOptions,
    op: OperationId,
    vmid: Vmid,
    req: &ProvisionRequest,
) -> Result<(), ProvisionError> {
    let cancel = CancellationToken::new();
    match steps(pve, journal, wait, &cancel, op, vmid, req).await {
        Ok(()) => {
            journal.mark_completed(op).await?;
            tracing::info!(operation = %op, %vmid, "provisioning completed");
            Ok(())
        }
        Err(e) => {
            let reason = error_chain(&e);
            tracing::warn!(operation = %op, %vmid, error = %reason, "provisioning failed; compensating");
            if let Err(ce) = compensate(pve, journal, wait, op, Some(reason), &cancel).await {
                tracing::error!(operation = %op, error = %error_chain(&ce), "compensation failed");
            }
            Err(e)
        }
    }
}

async fn steps(
    pve: &PveClient,
    journal: &JournalWriter,
    wait: &WaitOptions,
    cancel: &CancellationToken,
    op: OperationId,
    vmid: Vmid,
    req: &ProvisionRequest,
) -> Result<(), ProvisionError> {
    let restore = new_guest_restore(vmid, &req.archive, &req.storage);
    step::<ProvisionError, _, _>(journal, pve, wait, cancel, op, "restore", |s| async move {
        Ok(restore_new_guest(pve, journal, s, &restore).await?)
    })
    .await?;
    step::<ProvisionError, _, _>(
        journal,
        pve,
        wait,
        cancel,
        op,
        "configure",
        |_| async move {
            let mut update = ConfigUpdate::default();
            update.set.insert("hostname".into(), req.hostname.clone());
            update
                .set
                .insert("memory".into(), req.memory_mib.to_string());
            update.set.insert("cores".into(), req.cores.to_string());
            pve.set_config(vmid, &update)
                .await
                .map_err(pve_err("configure"))?;
            Ok(None)
        },
    )
    .await?;
    step::<ProvisionError, _, _>(journal, pve, wait, cancel, op, "resize", |_| async move {
        let config = pve.lxc_config(vmid).await.map_err(pve_err("resize"))?;
        let current = config.rootfs.as_deref().and_then(rootfs_size_bytes);
        let wanted = req.rootfs_gib.saturating_mul(1 << 30);
        match current {
            Some(c) if c == wanted => return Ok(None),
            Some(c) if c > wanted => {
                return Err(ProvisionError::Shrink {
                    requested: req.rootfs_gib,
                    current_bytes: c,
                });
            }
            Some(_) | None => {}
        }
        let upid = pve
            .resize(vmid, "rootfs", &format!("{}G", req.rootfs_gib))
            .await
            .map_err(pve_err("resize"))?;
        Ok(Some(upid))
    })
    .await?;
    if req.start {
        step::<ProvisionError, _, _>(journal, pve, wait, cancel, op, "start", |_| async move {
            Ok(Some(pve.start(vmid).await.map_err(pve_err("start"))?))
        })
        .await?;
    }
    Ok(())
}

/// Resolves every unfinished operation a previous run left (provisions completed or rolled
/// back, every other kind compensated). See `infra::journaled::recover`.
pub async fn recover(
    pve: Option<&PveClient>,
    db: &StateDb,
    wait: &WaitOptions,
    shutdown: &CancellationToken,
) {
    journaled::recover(pve, db, wait, shutdown, &PLANS).await;
}

/// `size=` of a rootfs/mp value in bytes (`local-lvm:vm-101-disk-0,size=8G`).
pub fn rootfs_size_bytes(raw: &str) -> Option<u64> {
    let size = raw.split(',').find_map(|p| p.strip_prefix("size="))?;
    let (num, unit) = size.split_at(
        size.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(size.len()),
    );
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_size_is_read_from_the_size_option() {
        assert_eq!(
            rootfs_size_bytes("local-lvm:vm-101-disk-0,size=8G"),
            Some(8 << 30)
        );
        assert_eq!(
            rootfs_size_bytes("local:101/vm-101-disk-0.raw,size=512M"),
            Some(512 << 20)
        );
        assert_eq!(
            rootfs_size_bytes("local-lvm:vm-101-disk-0,size=1024"),
            Some(1024)
        );
        assert_eq!(rootfs_size_bytes("local-lvm:vm-101-disk-0"), None);
        assert_eq!(rootfs_size_bytes("local-lvm:vm-101-disk-0,size=8X"), None);
    }

    fn request() -> ProvisionRequest {
        ProvisionRequest {
            vmid: None,
            archive: "local:backup/vzdump-lxc-9000-2026_06_01-03_00_12.tar.zst".into(),
            storage: "local-lvm".into(),
            hostname: "web-1".into(),
            memory_mib: 1024,
            cores: 2,
            rootfs_gib: 8,
            start: true,
        }
    }

    #[test]
    fn a_valid_request_passes_validation() {
        request().validate().expect("valid request");
    }

    #[test]
    fn a_hostname_that_is_not_a_dns_label_is_refused_by_name() {
        let mut r = request();
        r.hostname = "web_1".into();
        let err = r.validate().expect_err("underscore is not allowed");
        assert_eq!(
            err.to_string(),
            "Invalid provision request: hostname \"web_1\" is not a DNS label"
        );
    }

    #[test]
    fn zero_cores_are_refused() {
        let mut r = request();
        r.cores = 0;
        let err = r.validate().expect_err("no cores");
        assert_eq!(
            err.to_string(),
            "Invalid provision request: cores 0 is not 1..8192"
        );
    }
}
