//! `felhom.agent.v1.Agent`: the operator surface.

use felhom_proto::agent::v1 as pb;
use tonic::{Request, Response, Status};

use crate::pve::{PveClient, TlsTrust};
use crate::selftest;

/// The operator service. Holds what its RPCs need; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentService {
    pve: Option<(PveClient, TlsTrust)>,
}

impl AgentService {
    /// `pve` is `None` when Proxmox VE is not configured; RPCs that need it then fail with
    /// FAILED_PRECONDITION saying so.
    pub fn new(pve: Option<(PveClient, TlsTrust)>) -> Self {
        Self { pve }
    }

    fn pve(&self) -> Result<&(PveClient, TlsTrust), Status> {
        self.pve.as_ref().ok_or_else(|| {
            Status::failed_precondition("Proxmox VE is not configured ([proxmox] endpoint)")
        })
    }
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn selftest(
        &self,
        _request: Request<pb::SelftestRequest>,
    ) -> Result<Response<pb::SelftestReport>, Status> {
        let (pve, trust) = self.pve()?;
        let report = selftest::read_only(pve, trust).await;
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
}
