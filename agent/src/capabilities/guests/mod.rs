//! Guests: listing the node's containers and their tasks, snapshots and rollbacks on the
//! guest's work queue, and provisioning a guest from an archive ([`provision`], journaled:
//! resumable or compensated after a crash). Every change is audited with its actor.

pub mod provision;
pub mod snapshot_limits;

use felhom_proto::agent::v1 as pb;
use tokio::sync::oneshot;

use crate::capabilities::records::{Records, row_limit};
use crate::core::{Actor, InvalidValue, Vmid, validate_snapshot_name};
use crate::infra::journaled::JournalWriter;
use crate::infra::pve::{PveClient, PveError, TaskFilter, TaskSource, WaitOptions};
use crate::infra::queue::{GuestQueue, JobOutcome, QueueError};
use crate::infra::state::{OperationId, StateDb, Timestamp, TokensError};
use provision::{ProvisionError, ProvisionRequest};
use snapshot_limits::{LimitsError, SnapshotLimits, SnapshotRefusal};

/// Longest snapshot description accepted (PVE stores it in the guest config).
const MAX_DESCRIPTION: usize = 1024;

/// Why a guest call failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestsError {
    #[error("Proxmox VE is not configured ([proxmox] endpoint)")]
    NoPve,
    #[error("{field}: {value}")]
    Invalid {
        field: &'static str,
        value: InvalidValue,
    },
    #[error("description: at most {MAX_DESCRIPTION} characters, no control characters")]
    Description,
    #[error("guest {vmid} has no snapshot '{name}'")]
    NoSnapshot { vmid: Vmid, name: String },
    #[error(transparent)]
    Pve(PveError),
    #[error(transparent)]
    Queue(QueueError),
    #[error("Cannot read the guests' tokens")]
    Tokens(#[source] TokensError),
    #[error(transparent)]
    Provision(ProvisionError),
    /// The job never ran (shutdown before start) or ended without its result.
    #[error("{0}")]
    JobFailed(String),
    #[error("job finished without a result")]
    NoResult,
    #[error("the provisioning job was dropped (agent stopping)")]
    Dropped,
    /// A snapshot limit (count, interval, storage fill) refuses the snapshot.
    #[error(transparent)]
    SnapshotRefused(SnapshotRefusal),
    #[error("Cannot check the snapshot limits")]
    SnapshotLimits(#[source] LimitsError),
}

impl GuestsError {
    fn invalid(field: &'static str) -> impl FnOnce(InvalidValue) -> GuestsError {
        move |value| GuestsError::Invalid { field, value }
    }
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// `0`: every guest's.
    pub vmid: u32,
    /// Proxmox task type (`vzdump`, `vzrestore`, …); empty: all.
    pub task_type: String,
    /// Rows (`0`: the default).
    pub limit: u32,
}

/// A snapshot or rollback that finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDone {
    pub vmid: Vmid,
    pub snapshot: String,
    pub job_id: String,
}

/// A provision that finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub vmid: Vmid,
    /// `None` when the operation could not even begin.
    pub operation: Option<OperationId>,
    pub job_id: String,
}

/// What an operator asks to provision (raw, validated here).
#[derive(Debug, Clone, Default)]
pub struct ProvisionInput {
    /// `0`: the next free vmid.
    pub vmid: u32,
    pub archive: String,
    pub storage: String,
    pub hostname: String,
    pub memory_mib: u64,
    pub cores: u32,
    pub rootfs_gib: u64,
    pub start: bool,
}

/// The guests capability.
#[derive(Debug, Clone)]
pub struct Guests {
    pve: Option<PveClient>,
    db: StateDb,
    queue: GuestQueue,
    wait: WaitOptions,
    records: Records,
    snapshot_limits: SnapshotLimits,
}

impl Guests {
    pub fn new(
        pve: Option<PveClient>,
        db: StateDb,
        queue: GuestQueue,
        wait: WaitOptions,
        records: Records,
        snapshot_limits: SnapshotLimits,
    ) -> Self {
        Self {
            snapshot_limits,
            pve,
            db,
            queue,
            wait,
            records,
        }
    }

    fn pve(&self) -> Result<&PveClient, GuestsError> {
        self.pve.as_ref().ok_or(GuestsError::NoPve)
    }

    /// The node's containers, by vmid, with whether each has a local-API token.
    pub async fn list(&self) -> Result<Vec<pb::Guest>, GuestsError> {
        let pve = self.pve()?;
        let guests = pve.cluster_guests().await.map_err(GuestsError::Pve)?;
        let tokens = self
            .db
            .run(|db| db.tokens().list())
            .await
            .map_err(GuestsError::Tokens)?;
        let mut out: Vec<pb::Guest> = guests
            .into_iter()
            .filter(|g| g.kind == "lxc" && g.node == pve.node())
            .map(|g| pb::Guest {
                has_token: tokens.iter().any(|t| t.vmid == g.vmid),
                vmid: g.vmid,
                name: g.name.unwrap_or_default(),
                status: g.status,
                lock: g.lock.unwrap_or_default(),
                tags: g.tags,
                mem_bytes: g.mem,
                maxmem_bytes: g.maxmem,
                disk_bytes: g.disk,
                maxdisk_bytes: g.maxdisk,
                cpu_fraction: g.cpu,
                uptime_seconds: g.uptime,
                template: g.template,
            })
            .collect();
        out.sort_by_key(|g| g.vmid);
        Ok(out)
    }

    /// Proxmox tasks, running ones too (an operator asks what is going on).
    pub async fn tasks(&self, q: TaskQuery) -> Result<Vec<pb::Task>, GuestsError> {
        let filter = TaskFilter {
            vmid: match q.vmid {
                0 => None,
                v => Some(Vmid::new(v).map_err(GuestsError::invalid("vmid"))?),
            },
            typefilter: (!q.task_type.is_empty()).then_some(q.task_type),
            limit: Some(row_limit(q.limit)),
            source: Some(TaskSource::All),
            ..TaskFilter::default()
        };
        let tasks = self.pve()?.tasks(&filter).await.map_err(GuestsError::Pve)?;
        Ok(tasks
            .into_iter()
            .map(|t| pb::Task {
                upid: t.upid.to_string(),
                r#type: t.task_type,
                id: t.id,
                user: t.user,
                status: t.status.unwrap_or_default(),
                starttime: t.starttime,
                endtime: t.endtime.unwrap_or(0),
            })
            .collect())
    }

    /// Takes a snapshot of `vmid` on its queue and waits for it. An empty `name` gets a
    /// time-sortable default.
    pub async fn snapshot(
        &self,
        actor: Actor,
        vmid: Vmid,
        name: String,
        description: String,
    ) -> Result<SnapshotDone, GuestsError> {
        let name = if name.is_empty() {
            default_snapshot_name(self.db.clock().now())
        } else {
            name
        };
        validate_snapshot_name(&name).map_err(GuestsError::invalid("name"))?;
        if description.chars().count() > MAX_DESCRIPTION
            || description.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(GuestsError::Description);
        }
        let pve = self.pve()?.clone();
        let wait = self.wait.clone();
        let snap = name.clone();
        let description = (!description.is_empty()).then_some(description);
        let (db, limits) = (self.db.clone(), self.snapshot_limits);
        let result = self
            .run_job(actor, vmid, "snapshot", move || async move {
                snapshot_limits::check(&pve, &db, limits, vmid)
                    .await
                    .map_err(GuestsError::SnapshotLimits)?
                    .map_err(GuestsError::SnapshotRefused)?;
                let upid = pve
                    .snapshot(vmid, &snap, description.as_deref())
                    .await
                    .map_err(GuestsError::Pve)?;
                // Recorded as soon as Proxmox accepted it: a snapshot whose task then fails
                // still counts for the interval, and the cap counts only what Proxmox lists.
                let record = snap.clone();
                if let Err(e) = db
                    .run(move |db| db.snapshots().record(vmid.get(), &record))
                    .await
                {
                    tracing::warn!(%vmid, error = %crate::core::error_chain(&e), "cannot record the agent-made snapshot");
                }
                pve.wait_task(&upid, &wait, &Default::default())
                    .await
                    .map_err(GuestsError::Pve)
            })
            .await;
        let detail = match &result {
            Ok(job) => format!("snapshot {name} taken (job {job})"),
            Err(e) => format!("snapshot {name} failed: {e}"),
        };
        self.records
            .audit(actor, "guest.snapshot", actor.to_string(), detail)
            .await;
        Ok(SnapshotDone {
            vmid,
            snapshot: name,
            job_id: result?,
        })
    }

    /// Rolls `vmid` back to `name` on its queue and waits; a running guest is started again.
    pub async fn rollback(
        &self,
        actor: Actor,
        vmid: Vmid,
        name: String,
    ) -> Result<SnapshotDone, GuestsError> {
        validate_snapshot_name(&name).map_err(GuestsError::invalid("snapshot"))?;
        let pve = self.pve()?.clone();
        let snapshots = pve.snapshots(vmid).await.map_err(GuestsError::Pve)?;
        if !snapshots.iter().any(|s| s.name == name) {
            return Err(GuestsError::NoSnapshot { vmid, name });
        }
        let wait = self.wait.clone();
        let snap = name.clone();
        let result = self
            .run_job(actor, vmid, "rollback", move || async move {
                // A rollback stops a running guest; start it again so the caller keeps running.
                let rollback = async {
                    let running = pve.lxc_status(vmid).await?.status == "running";
                    let upid = pve.rollback(vmid, &snap, running).await?;
                    pve.wait_task(&upid, &wait, &Default::default()).await
                };
                rollback.await.map_err(GuestsError::Pve)
            })
            .await;
        let detail = match &result {
            Ok(job) => format!("rolled back to {name} (job {job})"),
            Err(e) => format!("rollback to {name} failed: {e}"),
        };
        self.records
            .audit(actor, "guest.rollback", actor.to_string(), detail)
            .await;
        Ok(SnapshotDone {
            vmid,
            snapshot: name,
            job_id: result?,
        })
    }

    /// Provisions a guest (journaled) on its queue and waits for the outcome.
    pub async fn provision(
        &self,
        actor: Actor,
        input: ProvisionInput,
    ) -> Result<Provisioned, GuestsError> {
        let pve = self.pve()?.clone();
        let vmid = match input.vmid {
            0 => pve.next_vmid().await.map_err(GuestsError::Pve)?,
            n => Vmid::new(n).map_err(GuestsError::invalid("vmid"))?,
        };
        let req = ProvisionRequest {
            vmid: Some(vmid),
            archive: input.archive,
            storage: input.storage,
            hostname: input.hostname,
            memory_mib: input.memory_mib,
            cores: input.cores,
            rootfs_gib: input.rootfs_gib,
            start: input.start,
        };
        req.validate().map_err(GuestsError::Provision)?;
        self.records
            .audit(
                actor,
                "guest.provision",
                format!("guest:{vmid}"),
                format!(
                    "archive={} storage={} hostname={} memory_mib={} cores={} rootfs_gib={} start={}",
                    req.archive,
                    req.storage,
                    req.hostname,
                    req.memory_mib,
                    req.cores,
                    req.rootfs_gib,
                    req.start
                ),
            )
            .await;
        let journal = JournalWriter::new(self.db.clone());
        let wait = self.wait.clone();
        let (tx, rx) = oneshot::channel();
        let handle = self
            .queue
            .submit(vmid.get(), "provision", move |_job| async move {
                let kind = if req.start {
                    provision::KIND_START
                } else {
                    provision::KIND
                };
                let (op, result) = match journal.begin(kind, vmid.get()).await {
                    Ok(op) => (
                        Some(op),
                        provision::run(&pve, &journal, &wait, op, vmid, &req).await,
                    ),
                    Err(e) => (None, Err(e.into())),
                };
                let job_result: crate::infra::queue::JobResult = match &result {
                    Ok(()) => Ok(Some(serde_json::json!({ "vmid": vmid.get() }))),
                    Err(e) => Err(e.to_string().into()),
                };
                let _ = tx.send((op, result));
                job_result
            })
            .await
            .map_err(GuestsError::Queue)?;
        let job_id = handle.id().to_string();
        let (operation, result) = rx.await.map_err(|_| GuestsError::Dropped)?;
        result.map_err(GuestsError::Provision)?;
        Ok(Provisioned {
            vmid,
            operation,
            job_id,
        })
    }

    /// Runs `work` as a `kind` job on the guest's queue and waits for it, keeping its typed
    /// error; returns the job id.
    async fn run_job<F, Fut>(
        &self,
        actor: Actor,
        vmid: Vmid,
        kind: &str,
        work: F,
    ) -> Result<String, GuestsError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<crate::infra::pve::TaskOutcome, GuestsError>>
            + Send
            + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let handle = self
            .queue
            .submit(vmid.get(), kind, move |_ctx| async move {
                let result = work().await;
                let recorded = match &result {
                    Ok(_) => Ok(None),
                    Err(e) => Err(e.to_string().into()),
                };
                // The waiter may have gone (client timed out); the job history still has it.
                let _ = tx.send(result);
                recorded
            })
            .await
            .map_err(GuestsError::Queue)?;
        // A job row now exists, even when its audit entry will be coalesced away.
        self.records.job_queued(actor).await;
        let job_id = handle.id().to_string();
        match rx.await {
            Ok(Ok(_)) => Ok(job_id),
            Ok(Err(e)) => Err(e),
            // The job never ran (shutdown before start) or panicked: ask the queue why.
            Err(_) => match handle.wait().await {
                Ok(JobOutcome::Failed(text)) => Err(GuestsError::JobFailed(text)),
                Ok(JobOutcome::Done(_)) => Err(GuestsError::NoResult),
                Err(e) => Err(GuestsError::Queue(e)),
            },
        }
    }
}

/// `felhom_YYYYmmdd_HHMMSS` in UTC: a valid PVE snapshot name that sorts by time.
fn default_snapshot_name(now: Timestamp) -> String {
    let now = now.to_string(); // 2026-11-23T09:01:52.000Z
    let digits: String = now.chars().filter(char::is_ascii_digit).collect();
    format!("felhom_{}_{}", &digits[..8], &digits[8..14])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_snapshot_names_are_valid_and_sortable() {
        let t = Timestamp::from_unix_millis(1_795_424_512_000);
        let name = default_snapshot_name(t);
        assert_eq!(name, "felhom_20261123_090152");
        validate_snapshot_name(&name).unwrap();
    }
}
