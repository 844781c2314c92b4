//! Selftest, jobs, the operation journal and the audit log.

use felhom_proto::agent::v1 as pb;
use tonic::{Request, Response};

use super::Reply;
use crate::capabilities::Capabilities;
use crate::capabilities::records::ChainCheck;
use crate::core::Actor;
use crate::frontends::grpc::status;
use crate::infra::state::Timestamp;

fn opt_time(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

pub(super) async fn selftest(
    caps: &Capabilities,
    _r: Request<pb::SelftestRequest>,
) -> Reply<pb::SelftestReport> {
    let report = caps
        .selftest
        .run()
        .await
        .map_err(|e| status::selftest(&e))?;
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

pub(super) async fn list_jobs(
    caps: &Capabilities,
    r: Request<pb::ListJobsRequest>,
) -> Reply<pb::ListJobsResponse> {
    let r = r.into_inner();
    let jobs = caps
        .records
        .jobs(r.vmid, r.limit)
        .await
        .map_err(|e| status::records(&e))?;
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

pub(super) async fn list_operations(
    caps: &Capabilities,
    r: Request<pb::ListOperationsRequest>,
) -> Reply<pb::ListOperationsResponse> {
    let r = r.into_inner();
    let ops = caps
        .records
        .operations(r.unfinished_only, r.limit)
        .await
        .map_err(|e| status::records(&e))?;
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

pub(super) async fn audit_tail(
    caps: &Capabilities,
    r: Request<pb::AuditTailRequest>,
) -> Reply<pb::AuditTailResponse> {
    let rows = caps
        .records
        .audit_tail(r.into_inner().limit)
        .await
        .map_err(|e| status::records(&e))?;
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

pub(super) async fn audit_verify(
    caps: &Capabilities,
    _r: Request<pb::AuditVerifyRequest>,
) -> Reply<pb::AuditVerifyResponse> {
    let check = caps
        .records
        .audit_verify()
        .await
        .map_err(|e| status::records(&e))?;
    Ok(Response::new(match check {
        ChainCheck::Intact(summary) => pb::AuditVerifyResponse {
            ok: true,
            rows: summary.rows,
            head_hash: summary.head_hash,
            problem: String::new(),
            pruned_through: summary.pruned_through,
        },
        ChainCheck::Broken(problem) => pb::AuditVerifyResponse {
            ok: false,
            rows: 0,
            head_hash: String::new(),
            problem,
            pruned_through: 0,
        },
    }))
}

pub(super) async fn audit_checkpoint(
    caps: &Capabilities,
    actor: Actor,
    r: Request<pb::AuditCheckpointRequest>,
) -> Reply<pb::AuditCheckpointResponse> {
    let checkpoint = caps
        .records
        .audit_checkpoint(actor, r.into_inner().head_hash)
        .await
        .map_err(|e| status::records(&e))?;
    Ok(Response::new(pb::AuditCheckpointResponse {
        seq: checkpoint.seq,
        head_seq: checkpoint.head_seq,
        head_hash: checkpoint.head_hash,
    }))
}
