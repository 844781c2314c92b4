//! `felhom.agent.v1.LocalApi`: what the local-API gateway calls for an in-guest controller.
//!
//! The caller's guest comes from the bearer token in the `authorization` metadata and nothing
//! else; no request carries a vmid. Mutations go through the guest's work queue (one at a time
//! per guest), are waited to completion, recorded in the job history and the audit log.

use std::sync::Arc;

use felhom_proto::agent::v1 as pb;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::status;
use crate::app::context::AgentContext;
use crate::capabilities::backup::Trigger;
use crate::capabilities::storage::guest_mounts::guest_mounts;
use crate::infra::pve::{PveClient, PveError, Vmid, validate_snapshot_name};
use crate::infra::queue::JobOutcome;
use crate::infra::state::NewAuditEntry;

/// Longest snapshot description accepted (PVE stores it in the guest config).
const MAX_DESCRIPTION: usize = 1024;

/// The guests' service.
#[derive(Debug, Clone)]
pub struct LocalApiService {
    ctx: Arc<AgentContext>,
}

impl LocalApiService {
    pub fn new(ctx: Arc<AgentContext>) -> Self {
        Self { ctx }
    }

    fn pve(&self) -> Result<&PveClient, Status> {
        self.ctx
            .pve
            .as_ref()
            .ok_or_else(|| Status::unavailable("Proxmox VE is not configured"))
    }

    /// The guest the presented token belongs to. All failures look alike to the caller.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Vmid, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("malformed authorization header"))?
            .to_owned();
        let owner = self
            .ctx
            .db
            .run(move |db| db.tokens().lookup(&token))
            .await
            .map_err(|e| match e {
                crate::infra::state::TokensError::Malformed => {
                    Status::unauthenticated("unknown or revoked token")
                }
                other => status::tokens(&other),
            })?
            .ok_or_else(|| Status::unauthenticated("unknown or revoked token"))?;
        Vmid::new(owner.vmid).map_err(|e| status::invalid(&e))
    }

    async fn audit(&self, vmid: Vmid, action: &'static str, detail: String) {
        let actor = format!("guest:{vmid}");
        let result = self
            .ctx
            .db
            .run(move |db| {
                db.audit().append(NewAuditEntry {
                    actor: &actor,
                    action,
                    target: &actor,
                    detail: &detail,
                })
            })
            .await;
        if let Err(e) = result {
            tracing::error!(%vmid, action, error = %e, "cannot append to the audit log");
        }
    }

    /// Runs `work` as a `kind` job on the guest's queue and waits for it, keeping its typed error.
    async fn run_job<T, F, Fut>(
        &self,
        vmid: Vmid,
        kind: &str,
        work: F,
    ) -> Result<(T, String), Status>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, PveError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let handle = self
            .ctx
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
            .map_err(|e| status::queue(&e))?;
        let job_id = handle.id().to_string();
        match rx.await {
            Ok(Ok(value)) => Ok((value, job_id)),
            Ok(Err(e)) => Err(status::pve(&e)),
            // The job never ran (shutdown before start) or panicked: ask the queue why.
            Err(_) => match handle.wait().await {
                Ok(JobOutcome::Failed(text)) => Err(Status::aborted(text)),
                Ok(JobOutcome::Done(_)) => Err(Status::internal("job finished without a result")),
                Err(e) => Err(status::queue(&e)),
            },
        }
    }
}

/// `felhom_YYYYmmdd_HHMMSS` in UTC: a valid PVE snapshot name that sorts by time.
fn default_snapshot_name(now: crate::infra::state::Timestamp) -> String {
    let now = now.to_string(); // 2026-11-23T09:01:52.000Z
    let digits: String = now.chars().filter(char::is_ascii_digit).collect();
    format!("felhom_{}_{}", &digits[..8], &digits[8..14])
}

#[tonic::async_trait]
impl pb::local_api_server::LocalApi for LocalApiService {
    async fn get_storage(
        &self,
        request: Request<pb::GetStorageRequest>,
    ) -> Result<Response<pb::GuestStorage>, Status> {
        let vmid = self.caller(&request).await?;
        let config = self
            .pve()?
            .lxc_config(vmid)
            .await
            .map_err(|e| status::pve(&e))?;
        let mounts = guest_mounts(&config, &self.ctx.storage_classes)
            .into_iter()
            .map(|m| pb::GuestMount {
                key: m.key,
                storage: m.storage,
                mount_point: m.mount_point,
                class: m.class.map(|c| c.as_str().to_owned()).unwrap_or_default(),
                backup: m.backup,
            })
            .collect();
        Ok(Response::new(pb::GuestStorage {
            vmid: vmid.get(),
            mounts,
        }))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResult>, Status> {
        let vmid = self.caller(&request).await?;
        let req = request.into_inner();
        let name = if req.name.is_empty() {
            default_snapshot_name(self.ctx.db.clock().now())
        } else {
            req.name
        };
        validate_snapshot_name(&name)
            .map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
        if req.description.chars().count() > MAX_DESCRIPTION
            || req.description.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(Status::invalid_argument(format!(
                "description: at most {MAX_DESCRIPTION} characters, no control characters"
            )));
        }
        let pve = self.pve()?.clone();
        let wait = self.ctx.wait.clone();
        let snap = name.clone();
        let description = (!req.description.is_empty()).then_some(req.description);
        let result = self
            .run_job(vmid, "snapshot", move || async move {
                let upid = pve.snapshot(vmid, &snap, description.as_deref()).await?;
                pve.wait_task(&upid, &wait, &Default::default()).await
            })
            .await;
        let detail = match &result {
            Ok((_, job)) => format!("snapshot {name} taken (job {job})"),
            Err(s) => format!("snapshot {name} failed: {}", s.message()),
        };
        self.audit(vmid, "guest.snapshot", detail).await;
        let (_, job_id) = result?;
        Ok(Response::new(pb::SnapshotResult {
            vmid: vmid.get(),
            snapshot: name,
            job_id,
        }))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::SnapshotResult>, Status> {
        let vmid = self.caller(&request).await?;
        let name = request.into_inner().snapshot;
        validate_snapshot_name(&name)
            .map_err(|e| Status::invalid_argument(format!("snapshot: {e}")))?;
        let pve = self.pve()?.clone();
        let snapshots = pve.snapshots(vmid).await.map_err(|e| status::pve(&e))?;
        if !snapshots.iter().any(|s| s.name == name) {
            return Err(Status::not_found(format!(
                "guest {vmid} has no snapshot '{name}'"
            )));
        }
        let wait = self.ctx.wait.clone();
        let snap = name.clone();
        let result = self
            .run_job(vmid, "rollback", move || async move {
                // A rollback stops a running guest; start it again so the caller keeps running.
                let running = pve.lxc_status(vmid).await?.status == "running";
                let upid = pve.rollback(vmid, &snap, running).await?;
                pve.wait_task(&upid, &wait, &Default::default()).await
            })
            .await;
        let detail = match &result {
            Ok((_, job)) => format!("rolled back to {name} (job {job})"),
            Err(s) => format!("rollback to {name} failed: {}", s.message()),
        };
        self.audit(vmid, "guest.rollback", detail).await;
        let (_, job_id) = result?;
        Ok(Response::new(pb::SnapshotResult {
            vmid: vmid.get(),
            snapshot: name,
            job_id,
        }))
    }

    async fn start_backup(
        &self,
        request: Request<pb::StartBackupRequest>,
    ) -> Result<Response<pb::BackupAccepted>, Status> {
        let vmid = self.caller(&request).await?;
        let result = self
            .ctx
            .backup
            .start(vmid.get(), Trigger::Controller, None)
            .await;
        let detail = match &result {
            Ok(a) if a.new_job => format!("app-consistent backup queued (job {})", a.job_id),
            Ok(a) => format!("joined backup job {} already under way", a.job_id),
            Err(e) => format!("backup refused: {e}"),
        };
        self.audit(vmid, "guest.backup", detail).await;
        let a = result.map_err(|e| status::backup(&e))?;
        Ok(Response::new(pb::BackupAccepted {
            vmid: vmid.get(),
            job_id: a.job_id,
            phase: "running".into(),
            new_job: a.new_job,
        }))
    }

    async fn get_backup_due(
        &self,
        request: Request<pb::GetBackupDueRequest>,
    ) -> Result<Response<pb::BackupDue>, Status> {
        let vmid = self.caller(&request).await?;
        let d = self
            .ctx
            .backup
            .due(vmid.get())
            .await
            .map_err(|e| status::backup(&e))?;
        Ok(Response::new(pb::BackupDue {
            vmid: vmid.get(),
            due: d.due,
            reason: d.reason,
        }))
    }

    async fn get_backup_status(
        &self,
        request: Request<pb::GetBackupStatusRequest>,
    ) -> Result<Response<pb::BackupStatus>, Status> {
        let vmid = self.caller(&request).await?;
        let s = self
            .ctx
            .backup
            .status(vmid.get())
            .await
            .map_err(|e| status::backup(&e))?;
        Ok(Response::new(s))
    }

    async fn get_restore_test_status(
        &self,
        request: Request<pb::GetRestoreTestStatusRequest>,
    ) -> Result<Response<pb::RestoreTestStatus>, Status> {
        let vmid = self.caller(&request).await?;
        let s = crate::capabilities::backup::restore_test::status(&self.ctx.backup, vmid.get())
            .await
            .map_err(|e| status::restore_test(&e))?;
        Ok(Response::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_snapshot_names_are_valid_and_sortable() {
        let t = crate::infra::state::Timestamp::from_unix_millis(1_795_424_512_000);
        let name = default_snapshot_name(t);
        assert_eq!(name, "felhom_20261123_090152");
        validate_snapshot_name(&name).unwrap();
    }
}
