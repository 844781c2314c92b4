//! Guests: list, tasks, provision.

use felhom_proto::agent::v1 as pb;
use tonic::{Request, Response};

use super::{Reply, operator};
use crate::capabilities::Capabilities;
use crate::capabilities::guests::{ProvisionInput, TaskQuery};
use crate::frontends::grpc::status;

pub(super) async fn list_guests(
    caps: &Capabilities,
    _r: Request<pb::ListGuestsRequest>,
) -> Reply<pb::ListGuestsResponse> {
    let guests = caps.guests.list().await.map_err(|e| status::guests(&e))?;
    Ok(Response::new(pb::ListGuestsResponse { guests }))
}

pub(super) async fn list_tasks(
    caps: &Capabilities,
    r: Request<pb::ListTasksRequest>,
) -> Reply<pb::ListTasksResponse> {
    let r = r.into_inner();
    let tasks = caps
        .guests
        .tasks(TaskQuery {
            vmid: r.vmid,
            task_type: r.r#type,
            limit: r.limit,
        })
        .await
        .map_err(|e| status::guests(&e))?;
    Ok(Response::new(pb::ListTasksResponse { tasks }))
}

pub(super) async fn provision(
    caps: &Capabilities,
    r: Request<pb::ProvisionGuestRequest>,
) -> Reply<pb::ProvisionGuestResponse> {
    let actor = operator(&r);
    let r = r.into_inner();
    let done = caps
        .guests
        .provision(
            actor,
            ProvisionInput {
                vmid: r.vmid,
                archive: r.archive,
                storage: r.storage,
                hostname: r.hostname,
                memory_mib: r.memory_mib,
                cores: r.cores,
                rootfs_gib: r.rootfs_gib,
                start: r.start,
            },
        )
        .await
        .map_err(|e| status::guests(&e))?;
    Ok(Response::new(pb::ProvisionGuestResponse {
        vmid: done.vmid.get(),
        operation_id: done.operation.map(|o| o.get()).unwrap_or_default(),
        job_id: done.job_id,
    }))
}
