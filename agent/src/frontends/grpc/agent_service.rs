//! `felhom.agent.v1.Agent`: the operator surface.
//!
//! Operators reach it through the agent socket (0660, group felhom-ops); the peer uid from the
//! socket's credentials is recorded as the actor of every audited change.

use crate::capabilities::backup::Trigger;
use std::sync::Arc;

use felhom_proto::agent::v1 as pb;
use secrecy::ExposeSecret;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use super::status;
use crate::app::context::AgentContext;
use crate::capabilities::guests::provision::{self, ProvisionError, ProvisionRequest};
use crate::capabilities::selftest;
use crate::infra::journaled::{JournalWriter, JournaledError};
use crate::infra::pve::{PveClient, TaskFilter, TaskSource, Vmid};
use crate::infra::state::{AuditError, NewAuditEntry, StateDb};

/// Default and maximum row counts of list RPCs.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

fn limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

/// The operator service.
#[derive(Debug, Clone)]
pub struct AgentService {
    ctx: Arc<AgentContext>,
}

impl AgentService {
    pub fn new(ctx: Arc<AgentContext>) -> Self {
        Self { ctx }
    }

    fn pve(&self) -> Result<&PveClient, Status> {
        self.ctx.pve.as_ref().ok_or_else(|| {
            Status::failed_precondition("Proxmox VE is not configured ([proxmox] endpoint)")
        })
    }

    fn db(&self) -> &StateDb {
        &self.ctx.db
    }

    async fn audit(&self, actor: String, action: &'static str, target: String, detail: String) {
        let result = self
            .db()
            .run(move |db| {
                db.audit().append(NewAuditEntry {
                    actor: &actor,
                    action,
                    target: &target,
                    detail: &detail,
                })
            })
            .await;
        if let Err(e) = result {
            tracing::error!(action, error = %e, "cannot append to the audit log");
        }
    }
}

/// How a guest token is issued.
#[derive(Debug, Clone, Copy)]
enum TokenIssue {
    /// First token of a guest (fails if it has one).
    Mint,
    /// Replaces the guest's token; the old one stops working.
    Rotate,
}

impl AgentService {
    /// Mints or rotates a guest's token, audits it, and returns it (the only time it is shown).
    async fn issue_token(
        &self,
        actor: String,
        vmid: Vmid,
        how: TokenIssue,
    ) -> Result<Response<pb::GuestToken>, Status> {
        let minted = self
            .db()
            .run(move |db| match how {
                TokenIssue::Mint => db.tokens().mint(vmid.get()),
                TokenIssue::Rotate => db.tokens().rotate(vmid.get()),
            })
            .await
            .map_err(|e| status::tokens(&e))?;
        let action = match how {
            TokenIssue::Mint => "token.mint",
            TokenIssue::Rotate => "token.rotate",
        };
        self.audit(
            actor,
            action,
            format!("guest:{vmid}"),
            format!("token id {}", minted.id),
        )
        .await;
        Ok(Response::new(pb::GuestToken {
            vmid: minted.vmid,
            token: minted.token.expose_secret().to_owned(),
            token_id: minted.id.to_string(),
        }))
    }
}

/// `operator:uid=N` from the Unix socket's peer credentials.
fn operator<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .map(|c| format!("operator:uid={}", c.uid()))
        .unwrap_or_else(|| "operator:uid=unknown".to_owned())
}

fn vmid(raw: u32) -> Result<Vmid, Status> {
    Vmid::new(raw).map_err(|e| Status::invalid_argument(format!("vmid: {e}")))
}

fn opt_time(t: Option<crate::infra::state::Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn selftest(
        &self,
        _request: Request<pb::SelftestRequest>,
    ) -> Result<Response<pb::SelftestReport>, Status> {
        let pve = self.pve()?;
        let trust = self
            .ctx
            .trust
            .clone()
            .unwrap_or(crate::infra::pve::TlsTrust::InsecureSkipVerify);
        let report = selftest::read_only(pve, &trust).await;
        Ok(Response::new(pb::SelftestReport {
            ok: report.ok(),
            checks: report
                .checks
                .into_iter()
                .map(|c| pb::SelftestCheck {
                    name: c.name.to_owned(),
                    ok: c.ok,
                    detail: c.detail,
                })
                .collect(),
        }))
    }

    async fn list_guests(
        &self,
        _request: Request<pb::ListGuestsRequest>,
    ) -> Result<Response<pb::ListGuestsResponse>, Status> {
        let pve = self.pve()?;
        let guests = pve.cluster_guests().await.map_err(|e| status::pve(&e))?;
        let tokens = self
            .db()
            .run(|db| db.tokens().list())
            .await
            .map_err(|e| status::tokens(&e))?;
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
        Ok(Response::new(pb::ListGuestsResponse { guests: out }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let req = request.into_inner();
        let filter = TaskFilter {
            vmid: if req.vmid == 0 {
                None
            } else {
                Some(vmid(req.vmid)?)
            },
            typefilter: (!req.r#type.is_empty()).then_some(req.r#type),
            limit: Some(limit(req.limit)),
            // Running tasks too: an operator asks what is going on.
            source: Some(TaskSource::All),
            ..TaskFilter::default()
        };
        let tasks = self
            .pve()?
            .tasks(&filter)
            .await
            .map_err(|e| status::pve(&e))?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks
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
                .collect(),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let req = request.into_inner();
        let n = limit(req.limit);
        let guest = if req.vmid == 0 {
            None
        } else {
            Some(vmid(req.vmid)?.get())
        };
        let jobs = self
            .db()
            .run(move |db| match guest {
                Some(v) => db.jobs().list_for_vmid(v, n),
                None => db.jobs().recent(n),
            })
            .await
            .map_err(|e| status::jobs(&e))?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs
                .into_iter()
                .map(|j| pb::Job {
                    job_id: j.id.to_string(),
                    vmid: j.vmid,
                    kind: j.kind,
                    phase: j.phase.as_str().to_owned(),
                    error: j.error.unwrap_or_default(),
                    created_at: j.created_at.to_string(),
                    started_at: opt_time(j.started_at),
                    finished_at: opt_time(j.finished_at),
                })
                .collect(),
        }))
    }

    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let req = request.into_inner();
        let n = limit(req.limit);
        let ops = self
            .db()
            .run(move |db| {
                if req.unfinished_only {
                    db.journal().unfinished()
                } else {
                    db.journal().recent(n)
                }
            })
            .await
            .map_err(|e| status::journal(&e))?;
        Ok(Response::new(pb::ListOperationsResponse {
            operations: ops
                .into_iter()
                .map(|op| pb::Operation {
                    id: op.id.get(),
                    kind: op.kind.clone(),
                    vmid: op.vmid.unwrap_or(0),
                    state: op.state.as_str().to_owned(),
                    created_at: op.created_at.to_string(),
                    error: op.error.clone().unwrap_or_default(),
                    steps: op
                        .steps
                        .iter()
                        .map(|s| pb::OperationStep {
                            index: s.index,
                            name: s.name.clone(),
                            state: s.state.as_str().to_owned(),
                            upid: s.upid.clone().unwrap_or_default(),
                            created: op
                                .resources
                                .iter()
                                .filter(|r| r.step == s.index)
                                .map(|r| r.resource.to_string())
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn audit_tail(
        &self,
        request: Request<pb::AuditTailRequest>,
    ) -> Result<Response<pb::AuditTailResponse>, Status> {
        let n = limit(request.into_inner().limit);
        let rows = self
            .db()
            .run(move |db| db.audit().tail(n))
            .await
            .map_err(|e| status::audit(&e))?;
        Ok(Response::new(pb::AuditTailResponse {
            entries: rows
                .into_iter()
                .map(|r| pb::AuditEntry {
                    seq: r.seq,
                    at: r.at.to_string(),
                    actor: r.actor,
                    action: r.action,
                    target: r.target,
                    detail: r.detail,
                    hash: r.hash,
                })
                .collect(),
        }))
    }

    async fn audit_verify(
        &self,
        _request: Request<pb::AuditVerifyRequest>,
    ) -> Result<Response<pb::AuditVerifyResponse>, Status> {
        let result = self.db().run(|db| db.audit().verify()).await;
        let reply = match result {
            Ok(summary) => pb::AuditVerifyResponse {
                ok: true,
                rows: summary.rows,
                head_hash: summary.head_hash,
                problem: String::new(),
            },
            Err(
                e @ (AuditError::Altered { .. }
                | AuditError::BrokenLink { .. }
                | AuditError::Missing { .. }),
            ) => pb::AuditVerifyResponse {
                ok: false,
                rows: 0,
                head_hash: String::new(),
                problem: e.to_string(),
            },
            Err(e) => return Err(status::audit(&e)),
        };
        Ok(Response::new(reply))
    }

    async fn mint_guest_token(
        &self,
        request: Request<pb::GuestTokenRequest>,
    ) -> Result<Response<pb::GuestToken>, Status> {
        let actor = operator(&request);
        let vmid = vmid(request.into_inner().vmid)?;
        // A token for a guest that does not exist would be a dangling credential.
        self.pve()?
            .lxc_status(vmid)
            .await
            .map_err(|e| status::pve(&e))?;
        self.issue_token(actor, vmid, TokenIssue::Mint).await
    }

    async fn rotate_guest_token(
        &self,
        request: Request<pb::GuestTokenRequest>,
    ) -> Result<Response<pb::GuestToken>, Status> {
        let actor = operator(&request);
        let vmid = vmid(request.into_inner().vmid)?;
        self.issue_token(actor, vmid, TokenIssue::Rotate).await
    }

    async fn revoke_guest_token(
        &self,
        request: Request<pb::GuestTokenRequest>,
    ) -> Result<Response<pb::RevokeGuestTokenResponse>, Status> {
        let actor = operator(&request);
        let vmid = vmid(request.into_inner().vmid)?;
        let revoked = self
            .db()
            .run(move |db| db.tokens().revoke(vmid.get()))
            .await
            .map_err(|e| status::tokens(&e))?;
        if revoked {
            self.audit(
                actor,
                "token.revoke",
                format!("guest:{vmid}"),
                String::new(),
            )
            .await;
        }
        Ok(Response::new(pb::RevokeGuestTokenResponse { revoked }))
    }

    async fn get_local_api_pins(
        &self,
        _request: Request<pb::GetLocalApiPinsRequest>,
    ) -> Result<Response<pb::LocalApiPins>, Status> {
        let pins = self
            .ctx
            .local_api_gateway
            .pins()
            .map_err(|e| status::gateway(&e))?;
        Ok(Response::new(pins_reply(pins)))
    }

    async fn rotate_local_api_certificate(
        &self,
        request: Request<pb::RotateLocalApiCertificateRequest>,
    ) -> Result<Response<pb::LocalApiPins>, Status> {
        let actor = operator(&request);
        let slot = self.ctx.local_api_gateway.clone();
        // Key generation and file writes: off the async workers.
        let pins = tokio::task::spawn_blocking(move || slot.rotate())
            .await
            .map_err(|e| Status::internal(format!("certificate rotation task failed: {e}")))?
            .map_err(|e| status::gateway(&e))?;
        self.audit(
            actor,
            "local_api.rotate_certificate",
            "local-api".to_owned(),
            format!("new leaf sha256 {}", pins.pins.leaf_sha256_hex),
        )
        .await;
        Ok(Response::new(pins_reply(pins)))
    }

    async fn list_guest_tokens(
        &self,
        _request: Request<pb::ListGuestTokensRequest>,
    ) -> Result<Response<pb::ListGuestTokensResponse>, Status> {
        let list = self
            .db()
            .run(|db| db.tokens().list())
            .await
            .map_err(|e| status::tokens(&e))?;
        Ok(Response::new(pb::ListGuestTokensResponse {
            tokens: list
                .into_iter()
                .map(|t| pb::GuestTokenInfo {
                    vmid: t.vmid,
                    token_id: t.id.to_string(),
                    created_at: t.created_at.to_string(),
                })
                .collect(),
        }))
    }

    async fn provision_guest(
        &self,
        request: Request<pb::ProvisionGuestRequest>,
    ) -> Result<Response<pb::ProvisionGuestResponse>, Status> {
        let actor = operator(&request);
        let r = request.into_inner();
        let pve = self.pve()?.clone();
        let vmid = match r.vmid {
            0 => pve.next_vmid().await.map_err(|e| status::pve(&e))?,
            n => vmid(n)?,
        };
        let req = ProvisionRequest {
            vmid: Some(vmid),
            archive: r.archive,
            storage: r.storage,
            hostname: r.hostname,
            memory_mib: r.memory_mib,
            cores: r.cores,
            rootfs_gib: r.rootfs_gib,
            start: r.start,
        };
        req.validate().map_err(|e| provision_status(&e))?;
        self.audit(
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
        let journal = JournalWriter::new(self.db().clone());
        let wait = self.ctx.wait.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = self
            .ctx
            .queue
            .submit(vmid.get(), "provision", move |_job| async move {
                let kind = if req.start {
                    provision::KIND_START
                } else {
                    provision::KIND
                };
                let result = match journal.begin(kind, vmid.get()).await {
                    Ok(op) => (
                        Some(op),
                        provision::run(&pve, &journal, &wait, op, vmid, &req).await,
                    ),
                    Err(e) => (None, Err(e.into())),
                };
                let job_result: crate::infra::queue::JobResult = match &result.1 {
                    Ok(()) => Ok(Some(serde_json::json!({ "vmid": vmid.get() }))),
                    Err(e) => Err(e.to_string().into()),
                };
                let _ = tx.send((result.0, result.1.map_err(|e| provision_status(&e))));
                job_result
            })
            .await
            .map_err(|e| status::queue(&e))?;
        let job_id = handle.id().to_string();
        let (op, result) = rx.await.map_err(|_| {
            Status::unavailable("the provisioning job was dropped (agent stopping)")
        })?;
        result?;
        Ok(Response::new(pb::ProvisionGuestResponse {
            vmid: vmid.get(),
            operation_id: op.map(|o| o.get()).unwrap_or_default(),
            job_id,
        }))
    }

    async fn backup_now(
        &self,
        request: Request<pb::BackupNowRequest>,
    ) -> Result<Response<pb::BackupAccepted>, Status> {
        let actor = operator(&request);
        let req = request.into_inner();
        let guest = vmid(req.vmid)?;
        let tier = (!req.tier.is_empty()).then_some(req.tier.as_str());
        let result = self
            .ctx
            .backup
            .start(guest.get(), Trigger::Operator, tier)
            .await;
        let detail = match &result {
            Ok(a) if a.new_job => format!("backup queued (job {})", a.job_id),
            Ok(a) => format!("joined backup job {} already under way", a.job_id),
            Err(e) => format!("backup refused: {e}"),
        };
        self.audit(actor, "backup.start", format!("guest:{guest}"), detail)
            .await;
        let a = result.map_err(|e| status::backup(&e))?;
        Ok(Response::new(pb::BackupAccepted {
            vmid: guest.get(),
            job_id: a.job_id,
            phase: "running".into(),
            new_job: a.new_job,
        }))
    }

    async fn get_backup_status(
        &self,
        request: Request<pb::GuestBackupRequest>,
    ) -> Result<Response<pb::BackupStatus>, Status> {
        let guest = vmid(request.into_inner().vmid)?;
        let s = self
            .ctx
            .backup
            .status(guest.get())
            .await
            .map_err(|e| status::backup(&e))?;
        Ok(Response::new(s))
    }

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let raw = request.into_inner().vmid;
        let guest = match raw {
            0 => None,
            v => Some(vmid(v)?.get()),
        };
        let list = self
            .ctx
            .backup
            .list(guest)
            .await
            .map_err(|e| status::backup(&e))?;
        Ok(Response::new(list))
    }

    async fn get_backup_due(
        &self,
        request: Request<pb::GuestBackupRequest>,
    ) -> Result<Response<pb::BackupDue>, Status> {
        let guest = vmid(request.into_inner().vmid)?;
        let d = self
            .ctx
            .backup
            .due(guest.get())
            .await
            .map_err(|e| status::backup(&e))?;
        Ok(Response::new(pb::BackupDue {
            vmid: guest.get(),
            due: d.due,
            reason: d.reason,
        }))
    }

    async fn run_restore_test(
        &self,
        request: Request<pb::GuestBackupRequest>,
    ) -> Result<Response<pb::RestoreTestAccepted>, Status> {
        let actor = operator(&request);
        let guest = vmid(request.into_inner().vmid)?;
        let result =
            crate::capabilities::backup::restore_test::start(&self.ctx.backup, guest.get()).await;
        let detail = match &result {
            Ok(a) if a.new_job => format!("restore-test queued (job {})", a.job_id),
            Ok(a) => format!("joined restore-test job {} already under way", a.job_id),
            Err(e) => format!("restore-test refused: {e}"),
        };
        self.audit(
            actor,
            "restore_test.start",
            format!("guest:{guest}"),
            detail,
        )
        .await;
        let a = result.map_err(|e| status::restore_test(&e))?;
        Ok(Response::new(pb::RestoreTestAccepted {
            vmid: guest.get(),
            job_id: a.job_id,
            phase: "running".into(),
            new_job: a.new_job,
        }))
    }

    async fn get_restore_test_status(
        &self,
        request: Request<pb::GuestBackupRequest>,
    ) -> Result<Response<pb::RestoreTestStatus>, Status> {
        let guest = vmid(request.into_inner().vmid)?;
        let s = crate::capabilities::backup::restore_test::status(&self.ctx.backup, guest.get())
            .await
            .map_err(|e| status::restore_test(&e))?;
        Ok(Response::new(s))
    }

    async fn run_verify(
        &self,
        request: Request<pb::RunVerifyRequest>,
    ) -> Result<Response<pb::VerifyAccepted>, Status> {
        let actor = operator(&request);
        let req = request.into_inner();
        let guest = vmid(req.vmid)?;
        let tier = (!req.tier.is_empty()).then_some(req.tier.as_str());
        let result = self.ctx.backup.start_verify(guest.get(), tier).await;
        let detail = match &result {
            Ok(a) if a.new_job => format!("verify queued (job {})", a.job_id),
            Ok(a) => format!("joined verify job {} already under way", a.job_id),
            Err(e) => format!("verify refused: {e}"),
        };
        self.audit(actor, "verify.start", format!("guest:{guest}"), detail)
            .await;
        let a = result.map_err(|e| status::backup(&e))?;
        Ok(Response::new(pb::VerifyAccepted {
            vmid: guest.get(),
            job_id: a.job_id,
            phase: "running".into(),
            new_job: a.new_job,
        }))
    }

    async fn get_verify_status(
        &self,
        request: Request<pb::GuestBackupRequest>,
    ) -> Result<Response<pb::VerifyStatus>, Status> {
        let guest = vmid(request.into_inner().vmid)?;
        let s = self
            .ctx
            .backup
            .verify_status(guest.get())
            .await
            .map_err(|e| status::backup(&e))?;
        Ok(Response::new(s))
    }
}

/// Provisioning errors as gRPC status, with the whole cause chain in the message.
fn provision_status(e: &ProvisionError) -> Status {
    let msg = crate::core::error_chain(e);
    match e {
        ProvisionError::Invalid(_) | ProvisionError::Shrink { .. } => Status::invalid_argument(msg),
        ProvisionError::Journaled(j) => match j {
            JournaledError::AlreadyExists(_) => Status::already_exists(msg),
            JournaledError::Pve { source, .. } => Status::new(status::pve(source).code(), msg),
            JournaledError::Journal(_) | JournaledError::NotRemovable(_) => Status::internal(msg),
            JournaledError::Interrupted => Status::unavailable(msg),
            JournaledError::Held { .. } | JournaledError::Undecided(_) => {
                Status::failed_precondition(msg)
            }
            JournaledError::Refused(_) => Status::invalid_argument(msg),
        },
    }
}

fn pins_reply(p: crate::frontends::local_api_gateway::GatewayPins) -> pb::LocalApiPins {
    pb::LocalApiPins {
        leaf_sha256_hex: p.pins.leaf_sha256_hex,
        spki_sha256_base64: p.pins.spki_sha256_base64,
        listen: p.listen,
    }
}
