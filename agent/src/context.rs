//! What the agent's services share: the Proxmox client, the state database, the per-guest
//! queue, and the settings that shape their work. Built once by the daemon (or a test).

use std::collections::BTreeMap;

use crate::pve::{PveClient, TlsTrust, WaitOptions};
use crate::queue::GuestQueue;
use crate::state::StateDb;

/// Storage speed class a storage was given at attach time (LOCAL-API.md `class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageClass {
    Fast,
    Slow,
}

impl StorageClass {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Fast => "fast",
            StorageClass::Slow => "slow",
        }
    }
}

/// The agent's shared state.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// `None` when Proxmox VE is not configured.
    pub pve: Option<PveClient>,
    /// TLS trust the client uses (the selftest compares a pin with what the node reports).
    pub trust: Option<TlsTrust>,
    pub db: StateDb,
    pub queue: GuestQueue,
    /// How long to wait for Proxmox tasks.
    pub wait: WaitOptions,
    /// Storage id → class.
    pub storage_classes: BTreeMap<String, StorageClass>,
}
