//! The wiring: the Proxmox client, the state database and the per-guest queue, and the
//! capabilities built on them that the front ends call. Built once by the daemon (or a test).

use crate::capabilities::Capabilities;
use crate::capabilities::access::GuestTokens;
use crate::capabilities::backup::service::PbsTarget;
use crate::capabilities::backup::{BackupService, BackupSettings, Backups};
use crate::capabilities::guests::Guests;
use crate::capabilities::guests::snapshot_limits::SnapshotLimits;
use crate::capabilities::records::Records;
use crate::capabilities::records::guest_ledger::GuestAuditPolicy;
use crate::capabilities::selftest::Selftest;
use crate::capabilities::storage::Storage;
use std::collections::BTreeMap;
use std::sync::Arc;

use std::path::Path;

use crate::core::StorageClass;

use crate::frontends::local_api_gateway::GatewaySlot;
use crate::infra::pve::{PveClient, TlsTrust, WaitOptions};
use crate::infra::queue::{GuestQueue, QueueError, QueueLimits};
use crate::infra::state::{OpenError, StateDb};

/// The agent's shared state.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// `None` when Proxmox VE is not configured.
    pub pve: Option<PveClient>,
    pub db: StateDb,
    pub queue: GuestQueue,
    /// How long to wait for Proxmox tasks.
    pub wait: WaitOptions,
    /// The embedded local API gateway, once the daemon has started it.
    pub local_api_gateway: GatewaySlot,
    /// What the front ends call.
    pub capabilities: Arc<Capabilities>,
}

/// Settings of what guests may do through the local API.
#[derive(Debug, Clone, Default)]
pub struct GuestSetup {
    /// Storage id → class, for `GET /storage`.
    pub storage_classes: BTreeMap<String, StorageClass>,
    pub snapshot_limits: SnapshotLimits,
}

/// What the backup side needs beyond the Proxmox client.
#[derive(Debug, Clone, Default)]
pub struct BackupSetup {
    pub settings: BackupSettings,
    pub pbs: Option<PbsTarget>,
}

/// Why the context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot open the state database")]
    State(#[source] OpenError),
    #[error("cannot start the work queue")]
    Queue(#[source] QueueError),
}

impl AgentContext {
    /// Opens the state database in `state_dir` (which must exist) and starts the work queue.
    /// Jobs a previous run left unfinished are marked failed and logged.
    pub async fn start(
        pve: Option<(PveClient, TlsTrust)>,
        state_dir: &Path,
        wait: WaitOptions,
        guest_setup: GuestSetup,
        backup: BackupSetup,
    ) -> Result<Self, ContextError> {
        let db = StateDb::open(state_dir).map_err(ContextError::State)?;
        Self::start_on(
            db,
            pve,
            wait,
            guest_setup,
            backup,
            GuestAuditPolicy::default(),
        )
        .await
    }

    /// [`AgentContext::start`] on an opened database (a test's, with a fake clock) and with
    /// the guests' audit coalescing and row budget of `guest_audit`.
    pub async fn start_on(
        db: StateDb,
        pve: Option<(PveClient, TlsTrust)>,
        wait: WaitOptions,
        guest_setup: GuestSetup,
        backup: BackupSetup,
        guest_audit: GuestAuditPolicy,
    ) -> Result<Self, ContextError> {
        let (queue, abandoned) = GuestQueue::start(db.clone(), QueueLimits::default())
            .await
            .map_err(ContextError::Queue)?;
        for id in abandoned {
            tracing::warn!(job = %id, "job left unfinished by the previous run was marked failed");
        }
        let (pve, trust) = match pve {
            Some((p, t)) => (Some(p), Some(t)),
            None => (None, None),
        };
        let backup = BackupService::new(
            pve.clone(),
            backup.pbs,
            backup.settings,
            db.clone(),
            queue.clone(),
            wait.clone(),
        );
        let records = Records::with_policy(db.clone(), guest_audit);
        let capabilities = Arc::new(Capabilities {
            guests: Guests::new(
                pve.clone(),
                db.clone(),
                queue.clone(),
                wait.clone(),
                records.clone(),
                guest_setup.snapshot_limits,
            ),
            backup: Backups::new(backup, records.clone()),
            storage: Storage::new(pve.clone(), guest_setup.storage_classes),
            tokens: GuestTokens::new(db.clone(), pve.clone(), records.clone()),
            selftest: Selftest::new(pve.clone(), trust),
            records,
        });
        Ok(Self {
            capabilities,
            pve,
            db,
            queue,
            wait,
            local_api_gateway: GatewaySlot::default(),
        })
    }
}
