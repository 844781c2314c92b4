//! One authenticated call to the simulated API: who makes it, with which parameters, and the
//! privilege checks every handler (`api`, `ops`) makes with it.

use super::reply::{ApiError, Params};
use super::state::{Guest, SimState, World};

/// One authenticated API call.
pub struct Call {
    pub state: SimState,
    pub authid: String,
    pub params: Params,
}

impl Call {
    /// Fails with PVE's 403 unless the caller holds `privilege` on `path`.
    pub fn need(&self, w: &World, path: &str, privilege: &str) -> Result<(), ApiError> {
        if w.access.has(&self.authid, path, privilege) {
            Ok(())
        } else {
            Err(ApiError::perm(path, privilege))
        }
    }

    /// Fails unless the caller holds any of `privs` on `path` (PVE's `check_any`).
    pub fn need_any(&self, w: &World, path: &str, privs: &[&str]) -> Result<(), ApiError> {
        if privs.iter().any(|p| w.access.has(&self.authid, path, p)) {
            Ok(())
        } else {
            Err(ApiError::perm_any(path, privs))
        }
    }

    /// True when the caller holds `privilege` on `path`.
    pub fn has(&self, w: &World, path: &str, privilege: &str) -> bool {
        w.access.has(&self.authid, path, privilege)
    }

    /// The user part of the authid (`felhom-agent@pve` for `felhom-agent@pve!agent`).
    pub fn user(&self) -> &str {
        self.authid.split_once('!').map_or(&self.authid, |(u, _)| u)
    }
}

/// The guest, or PVE's "config file does not exist" 500.
pub fn guest(w: &World, vmid: u32) -> Result<&Guest, ApiError> {
    w.guests
        .get(&vmid)
        .ok_or_else(|| ApiError::no_config(&w.node.name, vmid))
}
