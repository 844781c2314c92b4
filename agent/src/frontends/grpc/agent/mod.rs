//! `felhom.agent.v1.Agent`: the operator surface, served on the agent socket only.
//!
//! Operators reach it through `agent.sock` (0660, group felhom-ops); the peer uid from the
//! socket's credentials is the [`Actor`] of every audited change. Each RPC is one line here
//! that hands the request to its domain's handler module, which converts it into one typed
//! capability call and maps the answer.

mod access;
mod backup;
mod guests;
mod local_api_pins;
mod records;

use std::sync::Arc;

use felhom_proto::agent::v1 as pb;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::capabilities::Capabilities;
use crate::core::Actor;
use crate::frontends::local_api_gateway::GatewaySlot;

/// The operator service.
#[derive(Debug, Clone)]
pub struct AgentService {
    caps: Arc<Capabilities>,
    gateway: GatewaySlot,
}

impl AgentService {
    pub fn new(caps: Arc<Capabilities>, gateway: GatewaySlot) -> Self {
        Self { caps, gateway }
    }
}

/// The operator behind a call, from the Unix socket's peer credentials.
fn operator<T>(request: &Request<T>) -> Actor {
    Actor::Operator {
        uid: request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid()),
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn selftest(&self, r: Request<pb::SelftestRequest>) -> Reply<pb::SelftestReport> {
        records::selftest(&self.caps, r).await
    }
    async fn list_guests(
        &self,
        r: Request<pb::ListGuestsRequest>,
    ) -> Reply<pb::ListGuestsResponse> {
        guests::list_guests(&self.caps, r).await
    }
    async fn list_tasks(&self, r: Request<pb::ListTasksRequest>) -> Reply<pb::ListTasksResponse> {
        guests::list_tasks(&self.caps, r).await
    }
    async fn list_jobs(&self, r: Request<pb::ListJobsRequest>) -> Reply<pb::ListJobsResponse> {
        records::list_jobs(&self.caps, r).await
    }
    async fn list_operations(
        &self,
        r: Request<pb::ListOperationsRequest>,
    ) -> Reply<pb::ListOperationsResponse> {
        records::list_operations(&self.caps, r).await
    }
    async fn audit_tail(&self, r: Request<pb::AuditTailRequest>) -> Reply<pb::AuditTailResponse> {
        records::audit_tail(&self.caps, r).await
    }
    async fn audit_verify(
        &self,
        r: Request<pb::AuditVerifyRequest>,
    ) -> Reply<pb::AuditVerifyResponse> {
        records::audit_verify(&self.caps, r).await
    }
    async fn audit_checkpoint(
        &self,
        r: Request<pb::AuditCheckpointRequest>,
    ) -> Reply<pb::AuditCheckpointResponse> {
        let actor = operator(&r);
        records::audit_checkpoint(&self.caps, actor, r).await
    }
    async fn mint_guest_token(&self, r: Request<pb::GuestTokenRequest>) -> Reply<pb::GuestToken> {
        access::mint(&self.caps, r).await
    }
    async fn rotate_guest_token(&self, r: Request<pb::GuestTokenRequest>) -> Reply<pb::GuestToken> {
        access::rotate(&self.caps, r).await
    }
    async fn revoke_guest_token(
        &self,
        r: Request<pb::GuestTokenRequest>,
    ) -> Reply<pb::RevokeGuestTokenResponse> {
        access::revoke(&self.caps, r).await
    }
    async fn list_guest_tokens(
        &self,
        r: Request<pb::ListGuestTokensRequest>,
    ) -> Reply<pb::ListGuestTokensResponse> {
        access::list(&self.caps, r).await
    }
    async fn get_local_api_pins(
        &self,
        r: Request<pb::GetLocalApiPinsRequest>,
    ) -> Reply<pb::LocalApiPins> {
        local_api_pins::get(&self.gateway, r).await
    }
    async fn rotate_local_api_certificate(
        &self,
        r: Request<pb::RotateLocalApiCertificateRequest>,
    ) -> Reply<pb::LocalApiPins> {
        local_api_pins::rotate(&self.caps, &self.gateway, r).await
    }
    async fn provision_guest(
        &self,
        r: Request<pb::ProvisionGuestRequest>,
    ) -> Reply<pb::ProvisionGuestResponse> {
        guests::provision(&self.caps, r).await
    }
    async fn backup_now(&self, r: Request<pb::BackupNowRequest>) -> Reply<pb::BackupAccepted> {
        backup::backup_now(&self.caps, r).await
    }
    async fn get_backup_status(
        &self,
        r: Request<pb::GuestBackupRequest>,
    ) -> Reply<pb::BackupStatus> {
        backup::status(&self.caps, r).await
    }
    async fn list_backups(
        &self,
        r: Request<pb::ListBackupsRequest>,
    ) -> Reply<pb::ListBackupsResponse> {
        backup::list(&self.caps, r).await
    }
    async fn get_backup_due(&self, r: Request<pb::GuestBackupRequest>) -> Reply<pb::BackupDue> {
        backup::due(&self.caps, r).await
    }
    async fn run_restore_test(
        &self,
        r: Request<pb::GuestBackupRequest>,
    ) -> Reply<pb::RestoreTestAccepted> {
        backup::run_restore_test(&self.caps, r).await
    }
    async fn get_restore_test_status(
        &self,
        r: Request<pb::GuestBackupRequest>,
    ) -> Reply<pb::RestoreTestStatus> {
        backup::restore_test_status(&self.caps, r).await
    }
    async fn run_verify(&self, r: Request<pb::RunVerifyRequest>) -> Reply<pb::VerifyAccepted> {
        backup::run_verify(&self.caps, r).await
    }
    async fn get_verify_status(
        &self,
        r: Request<pb::GuestBackupRequest>,
    ) -> Reply<pb::VerifyStatus> {
        backup::verify_status(&self.caps, r).await
    }
}
