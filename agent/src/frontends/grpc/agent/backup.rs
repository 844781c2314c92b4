//! Backups, restore-tests and verify.

use felhom_proto::agent::v1 as pb;
use tonic::{Request, Response};

use super::{Reply, operator};
use crate::capabilities::Capabilities;
use crate::frontends::grpc::status;

fn tier(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}

pub(super) async fn backup_now(
    caps: &Capabilities,
    r: Request<pb::BackupNowRequest>,
) -> Reply<pb::BackupAccepted> {
    let actor = operator(&r);
    let r = r.into_inner();
    let a = caps
        .backup
        .start(actor, r.vmid, tier(&r.tier))
        .await
        .map_err(|e| status::backup(&e))?;
    Ok(Response::new(pb::BackupAccepted {
        vmid: r.vmid,
        job_id: a.job_id,
        phase: "running".into(),
        new_job: a.new_job,
    }))
}

pub(super) async fn status(
    caps: &Capabilities,
    r: Request<pb::GuestBackupRequest>,
) -> Reply<pb::BackupStatus> {
    let s = caps
        .backup
        .status(r.into_inner().vmid)
        .await
        .map_err(|e| status::backup(&e))?;
    Ok(Response::new(s))
}

pub(super) async fn list(
    caps: &Capabilities,
    r: Request<pb::ListBackupsRequest>,
) -> Reply<pb::ListBackupsResponse> {
    let list = caps
        .backup
        .list(r.into_inner().vmid)
        .await
        .map_err(|e| status::backup(&e))?;
    Ok(Response::new(list))
}

pub(super) async fn due(
    caps: &Capabilities,
    r: Request<pb::GuestBackupRequest>,
) -> Reply<pb::BackupDue> {
    let vmid = r.into_inner().vmid;
    let d = caps
        .backup
        .due(vmid)
        .await
        .map_err(|e| status::backup(&e))?;
    Ok(Response::new(pb::BackupDue {
        vmid,
        due: d.due,
        reason: d.reason,
    }))
}

pub(super) async fn run_restore_test(
    caps: &Capabilities,
    r: Request<pb::GuestBackupRequest>,
) -> Reply<pb::RestoreTestAccepted> {
    let actor = operator(&r);
    let vmid = r.into_inner().vmid;
    let a = caps
        .backup
        .start_restore_test(actor, vmid)
        .await
        .map_err(|e| status::restore_test(&e))?;
    Ok(Response::new(pb::RestoreTestAccepted {
        vmid,
        job_id: a.job_id,
        phase: "running".into(),
        new_job: a.new_job,
    }))
}

pub(super) async fn restore_test_status(
    caps: &Capabilities,
    r: Request<pb::GuestBackupRequest>,
) -> Reply<pb::RestoreTestStatus> {
    let s = caps
        .backup
        .restore_test_status(r.into_inner().vmid)
        .await
        .map_err(|e| status::restore_test(&e))?;
    Ok(Response::new(s))
}

pub(super) async fn run_verify(
    caps: &Capabilities,
    r: Request<pb::RunVerifyRequest>,
) -> Reply<pb::VerifyAccepted> {
    let actor = operator(&r);
    let r = r.into_inner();
    let a = caps
        .backup
        .start_verify(actor, r.vmid, tier(&r.tier))
        .await
        .map_err(|e| status::backup(&e))?;
    Ok(Response::new(pb::VerifyAccepted {
        vmid: r.vmid,
        job_id: a.job_id,
        phase: "running".into(),
        new_job: a.new_job,
    }))
}

pub(super) async fn verify_status(
    caps: &Capabilities,
    r: Request<pb::GuestBackupRequest>,
) -> Reply<pb::VerifyStatus> {
    let s = caps
        .backup
        .verify_status(r.into_inner().vmid)
        .await
        .map_err(|e| status::backup(&e))?;
    Ok(Response::new(s))
}
