//! `felhom.agent.v1.LocalApi`: what the local-API gateway calls for an in-guest controller.
//! Served on the LocalApi socket only (owned by the agent; the gateway's side of the trust
//! boundary), never on the operators' `agent.sock`.
//!
//! The caller's guest comes from the bearer token in the `authorization` metadata and nothing
//! else; no request carries a vmid. Each handler authenticates, makes one capability call as
//! that guest and maps the answer; queueing, waiting, job history and audit are the
//! capability's.
//!
//! Every call that leads to an audit row (snapshot, rollback, start backup) first asks the
//! guest's row budget ([`crate::capabilities::records::Records::admit_guest`]): over budget it
//! is refused with RESOURCE_EXHAUSTED (429 through the gateway) before anything is done. Those
//! refusals are counted, not audited or logged one by one.

use std::sync::Arc;

use felhom_proto::agent::v1 as pb;
use tonic::{Request, Response, Status};

use super::guest_status::{self, logged};
use crate::capabilities::Capabilities;
use crate::capabilities::guests::SnapshotDone;
use crate::core::{Actor, Vmid};

/// The guests' service.
#[derive(Debug, Clone)]
pub struct LocalApiService {
    caps: Arc<Capabilities>,
}

impl LocalApiService {
    pub fn new(caps: Arc<Capabilities>) -> Self {
        Self { caps }
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
        self.caps
            .tokens
            .authenticate(token)
            .await
            .map_err(|e| logged(None, "authenticate", &e, guest_status::access(&e)))
    }

    /// The caller, if its row budget admits a change now. Not logged: a guest over budget
    /// would flood the log (the ledger logs the first refusal of each run).
    async fn changing_caller<T>(&self, request: &Request<T>) -> Result<Vmid, Status> {
        let vmid = self.caller(request).await?;
        self.caps
            .records
            .admit_guest(vmid)
            .await
            .map_err(|e| guest_status::budget(&e))?;
        Ok(vmid)
    }
}

fn snapshot_reply(done: SnapshotDone) -> pb::SnapshotResult {
    pb::SnapshotResult {
        vmid: done.vmid.get(),
        snapshot: done.snapshot,
        job_id: done.job_id,
    }
}

#[tonic::async_trait]
impl pb::local_api_server::LocalApi for LocalApiService {
    async fn get_storage(
        &self,
        request: Request<pb::GetStorageRequest>,
    ) -> Result<Response<pb::GuestStorage>, Status> {
        let vmid = self.caller(&request).await?;
        let mounts = self
            .caps
            .storage
            .guest_mounts(vmid)
            .await
            .map_err(|e| logged(Some(vmid), "storage", &e, guest_status::storage(&e)))?
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
        let vmid = self.changing_caller(&request).await?;
        let req = request.into_inner();
        let done = self
            .caps
            .guests
            .snapshot(Actor::Guest(vmid), vmid, req.name, req.description)
            .await
            .map_err(|e| logged(Some(vmid), "snapshot", &e, guest_status::guests(&e)))?;
        Ok(Response::new(snapshot_reply(done)))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::SnapshotResult>, Status> {
        let vmid = self.changing_caller(&request).await?;
        let done = self
            .caps
            .guests
            .rollback(Actor::Guest(vmid), vmid, request.into_inner().snapshot)
            .await
            .map_err(|e| logged(Some(vmid), "rollback", &e, guest_status::guests(&e)))?;
        Ok(Response::new(snapshot_reply(done)))
    }

    async fn start_backup(
        &self,
        request: Request<pb::StartBackupRequest>,
    ) -> Result<Response<pb::BackupAccepted>, Status> {
        let vmid = self.changing_caller(&request).await?;
        let a = self
            .caps
            .backup
            .start(Actor::Guest(vmid), vmid.get(), None)
            .await
            .map_err(|e| logged(Some(vmid), "backup", &e, guest_status::backup(&e)))?;
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
            .caps
            .backup
            .due(vmid.get())
            .await
            .map_err(|e| logged(Some(vmid), "backup due", &e, guest_status::backup(&e)))?;
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
        let mut s = self
            .caps
            .backup
            .status(vmid.get())
            .await
            .map_err(|e| logged(Some(vmid), "backup status", &e, guest_status::backup(&e)))?;
        // The job's recorded error is the operator's (task texts, storages); the guest learns
        // that it failed and where to look.
        if !s.error.is_empty() {
            s.error = guest_status::job_error(&s.job_id);
        }
        Ok(Response::new(s))
    }

    async fn get_restore_test_status(
        &self,
        request: Request<pb::GetRestoreTestStatusRequest>,
    ) -> Result<Response<pb::RestoreTestStatus>, Status> {
        let vmid = self.caller(&request).await?;
        let s = self
            .caps
            .backup
            .restore_test_status(vmid.get())
            .await
            .map_err(|e| {
                logged(
                    Some(vmid),
                    "restore-test status",
                    &e,
                    guest_status::restore_test(&e),
                )
            })?;
        Ok(Response::new(s))
    }
}
