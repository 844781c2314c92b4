//! Limits on the snapshots the agent takes for a guest, so that one guest cannot fill the
//! shared thin pool with them: a cap on the agent-made snapshots that still exist, a minimum
//! interval between two, and no snapshot while any storage the guest's volumes live on is at
//! or above the warning fill ([`FILL_WARN`]; for an lvm-thin storage, pool data *and*
//! metadata).
//!
//! At the cap the request is refused (409), never made room for by pruning the oldest: an
//! agent-made snapshot may be the restore point a controller took before an upgrade, and
//! deleting it silently could lose exactly the state someone means to return to. Removing
//! snapshots stays an operator's decision (Proxmox UI or `pct delsnapshot`).
//!
//! Checked inside the guest's queue job, so two concurrent requests cannot both pass the cap.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::core::Vmid;
use crate::core::fill::{FILL_WARN, fraction};
use crate::infra::pve::types::{LxcConfig, StorageConfig};
use crate::infra::pve::{PveClient, PveError};
use crate::infra::state::{GuestSnapshots, StateDb, Timestamp};

/// Per-guest snapshot limits (`[snapshots]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLimits {
    /// Agent-made snapshots of one guest that may exist at once.
    pub max_per_guest: u32,
    /// Shortest time between two agent-made snapshots of one guest.
    pub min_interval: Duration,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        Self {
            max_per_guest: 10,
            min_interval: Duration::from_secs(300),
        }
    }
}

/// Why a snapshot is not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotRefusal {
    #[error(
        "guest {vmid} already has {count} agent-made snapshots (the limit is {max}); an operator must delete one first"
    )]
    TooMany { vmid: Vmid, count: usize, max: u32 },
    #[error(
        "guest {vmid} took a snapshot {ago_secs} s ago; the next one is allowed in {wait_secs} s"
    )]
    TooSoon {
        vmid: Vmid,
        ago_secs: u64,
        wait_secs: u64,
    },
    #[error(
        "storage {storage} of guest {vmid} is {percent}% full ({what}); snapshots are refused from {warn}% on",
        warn = (FILL_WARN * 100.0).round()
    )]
    StorageFull {
        vmid: Vmid,
        storage: String,
        /// `used space` or `thin pool metadata`.
        what: &'static str,
        percent: u64,
    },
}

/// How full one storage of the guest is.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageFill {
    pub storage: String,
    /// `None` when the storage reports no total.
    pub data: Option<f64>,
    /// Thin-pool metadata fill (lvm-thin only, when the pool could be read).
    pub metadata: Option<f64>,
}

/// The decision, from what was gathered.
pub fn decide(
    limits: SnapshotLimits,
    vmid: Vmid,
    taken: &GuestSnapshots,
    now: Timestamp,
    fills: &[StorageFill],
) -> Result<(), SnapshotRefusal> {
    let count = taken.live.len();
    if count >= usize::try_from(limits.max_per_guest).unwrap_or(usize::MAX) {
        return Err(SnapshotRefusal::TooMany {
            vmid,
            count,
            max: limits.max_per_guest,
        });
    }
    if let Some(last) = taken.last_taken_at {
        let ago_ms = u64::try_from(now.unix_millis() - last.unix_millis()).unwrap_or(0);
        let min_ms = u64::try_from(limits.min_interval.as_millis()).unwrap_or(u64::MAX);
        if ago_ms < min_ms {
            return Err(SnapshotRefusal::TooSoon {
                vmid,
                ago_secs: ago_ms / 1000,
                wait_secs: (min_ms - ago_ms).div_ceil(1000),
            });
        }
    }
    for fill in fills {
        for (what, f) in [
            ("used space", fill.data),
            ("thin pool metadata", fill.metadata),
        ] {
            if let Some(f) = f.filter(|f| *f >= FILL_WARN) {
                // A fraction in 0..=1 (or a little above when over-committed).
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let percent = (f * 100.0).round() as u64;
                return Err(SnapshotRefusal::StorageFull {
                    vmid,
                    storage: fill.storage.clone(),
                    what,
                    percent,
                });
            }
        }
    }
    Ok(())
}

/// Storage ids of the guest's volumes (`rootfs`, `mpN`), excluding bind mounts (`/host/path`).
pub fn guest_storages(config: &LxcConfig) -> BTreeSet<String> {
    config
        .rootfs
        .iter()
        .chain(config.mount_points.values())
        .filter_map(|raw| {
            let volume = raw.split(',').next()?;
            let (storage, _) = volume.split_once(':')?;
            (!storage.is_empty() && !volume.starts_with('/')).then(|| storage.to_owned())
        })
        .collect()
}

/// Checks the limits for a snapshot of `vmid` now: what the agent took (pruned against the
/// snapshots Proxmox still lists) and how full the guest's storages are.
pub async fn check(
    pve: &PveClient,
    db: &StateDb,
    limits: SnapshotLimits,
    vmid: Vmid,
) -> Result<Result<(), SnapshotRefusal>, LimitsError> {
    let existing: Vec<String> = pve
        .snapshots(vmid)
        .await?
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n != "current")
        .collect();
    let taken = db
        .run(move |db| db.snapshots().reconcile(vmid.get(), &existing))
        .await
        .map_err(LimitsError::State)?;
    let now = db.clock().now();
    // Count and interval first: they need no further Proxmox calls.
    if let Err(refusal) = decide(limits, vmid, &taken, now, &[]) {
        return Ok(Err(refusal));
    }
    let config = pve.lxc_config(vmid).await?;
    let storages = guest_storages(&config);
    let mut fills = Vec::with_capacity(storages.len());
    let mut thin_config = None;
    for storage in storages {
        let status = pve.storage_status(&storage).await?;
        let mut fill = StorageFill {
            data: fraction(status.used, status.total),
            metadata: None,
            storage,
        };
        if status.kind == "lvmthin" {
            if thin_config.is_none() {
                thin_config = Some(pve.storage_config().await?);
            }
            fill.metadata =
                thin_metadata(pve, thin_config.as_deref().unwrap_or(&[]), &fill.storage).await;
        }
        fills.push(fill);
    }
    Ok(decide(limits, vmid, &taken, now, &fills))
}

/// Metadata fill of the thin pool behind lvm-thin storage `storage`; `None` when it cannot be
/// read (the data fill from the storage status still applies).
async fn thin_metadata(pve: &PveClient, config: &[StorageConfig], storage: &str) -> Option<f64> {
    let entry = config.iter().find(|c| c.storage == storage)?;
    let (vg, pool) = (entry.vgname.as_deref()?, entry.thinpool.as_deref()?);
    match pve.thin_pools().await {
        Ok(pools) => pools
            .iter()
            .find(|p| p.lv == pool && (p.vg.is_empty() || p.vg == vg))
            .and_then(|p| fraction(p.metadata_used, p.metadata_size)),
        Err(e) => {
            tracing::debug!(storage, error = %e, "thin pool metadata unreadable; checking data fill only");
            None
        }
    }
}

/// Why the limits could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error(transparent)]
    Pve(#[from] PveError),
    #[error("Cannot read the agent's snapshot records")]
    State(#[source] crate::infra::state::SnapshotsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMID: u32 = 101;

    fn vmid() -> Vmid {
        Vmid::new(VMID).unwrap()
    }

    fn limits() -> SnapshotLimits {
        SnapshotLimits {
            max_per_guest: 2,
            min_interval: Duration::from_secs(300),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    fn taken(live: &[&str], last: Option<i64>) -> GuestSnapshots {
        GuestSnapshots {
            live: live.iter().map(|s| (*s).to_owned()).collect(),
            last_taken_at: last.map(at),
        }
    }

    #[test]
    fn at_the_cap_a_snapshot_is_refused_naming_the_limit() {
        let err = decide(
            limits(),
            vmid(),
            &taken(&["a", "b"], Some(0)),
            at(10_000),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "guest 101 already has 2 agent-made snapshots (the limit is 2); an operator must delete one first"
        );
    }

    #[test]
    fn within_the_interval_a_snapshot_is_refused_with_the_wait() {
        let err = decide(limits(), vmid(), &taken(&["a"], Some(1000)), at(1100), &[]).unwrap_err();
        assert_eq!(
            err,
            SnapshotRefusal::TooSoon {
                vmid: vmid(),
                ago_secs: 100,
                wait_secs: 200
            }
        );
    }

    #[test]
    fn a_storage_at_the_warning_fill_refuses_a_snapshot() {
        let fills = [StorageFill {
            storage: "local-lvm".into(),
            data: Some(0.5),
            metadata: Some(0.91),
        }];
        let err = decide(limits(), vmid(), &taken(&[], None), at(0), &fills).unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage local-lvm of guest 101 is 91% full (thin pool metadata); snapshots are refused from 80% on"
        );
    }

    #[test]
    fn below_every_limit_a_snapshot_is_allowed() {
        let fills = [StorageFill {
            storage: "local-lvm".into(),
            data: Some(0.79),
            metadata: None,
        }];
        decide(limits(), vmid(), &taken(&["a"], Some(0)), at(300), &fills).unwrap();
    }

    #[test]
    fn guest_storages_come_from_rootfs_and_volume_mount_points_only() {
        let mut config: LxcConfig = serde_json::from_value(serde_json::json!({
            "rootfs": "local-lvm:vm-101-disk-0,size=8G",
            "mp0": "tank:subvol-101-disk-1,mp=/data,size=0",
            "mp1": "/mnt/host,mp=/host",
        }))
        .unwrap();
        config
            .mount_points
            .insert(2, "local-lvm:vm-101-disk-2,mp=/x".into());
        assert_eq!(
            guest_storages(&config).into_iter().collect::<Vec<_>>(),
            vec!["local-lvm".to_owned(), "tank".to_owned()]
        );
    }
}
