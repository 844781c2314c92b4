//! Storage as the guests see it: each guest's mount points and their storage class.

pub mod guest_mounts;

use std::collections::BTreeMap;

use crate::core::{StorageClass, Vmid};
use crate::infra::pve::{PveClient, PveError};
pub use guest_mounts::GuestMount;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("Proxmox VE is not configured ([proxmox] endpoint)")]
    NoPve,
    #[error(transparent)]
    Pve(PveError),
}

/// The storage capability.
#[derive(Debug, Clone)]
pub struct Storage {
    pve: Option<PveClient>,
    /// Storage id → class.
    classes: BTreeMap<String, StorageClass>,
}

impl Storage {
    pub fn new(pve: Option<PveClient>, classes: BTreeMap<String, StorageClass>) -> Self {
        Self { pve, classes }
    }

    /// The mount points (rootfs and `mpN`) of `vmid`, from its Proxmox config (read at most
    /// [`crate::infra::pve::CONFIG_MAX_AGE`] ago, and after the agent's own last change).
    pub async fn guest_mounts(&self, vmid: Vmid) -> Result<Vec<GuestMount>, StorageError> {
        let pve = self.pve.as_ref().ok_or(StorageError::NoPve)?;
        let config = pve
            .lxc_config_recent(vmid)
            .await
            .map_err(StorageError::Pve)?;
        Ok(guest_mounts::guest_mounts(&config, &self.classes))
    }
}
