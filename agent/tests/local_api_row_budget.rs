//! A guest's row budget through the real LocalApi gRPC service: the service on a Unix socket in
//! a temp dir, the capabilities on the simulated Proxmox VE over HTTPS, the state database on a
//! fake clock (so the rolling hour passes without sleeping). A guest that has used up its
//! budget gets RESOURCE_EXHAUSTED (429 through the gateway) with a fixed text, nothing is done
//! for it, and its audit log and job history stay bounded; once the hour has rolled on, one
//! row says how many calls were refused. Repeated identical refusals are coalesced and cost
//! nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::agent_config_for;
use felhom_agent::app::context::{AgentContext, GuestSetup};
use felhom_agent::capabilities::records::guest_ledger::{GuestAuditPolicy, OVER_BUDGET_ACTION};
use felhom_agent::core::Actor;
use felhom_agent::frontends::grpc::{bind_unix, serve_local_api};
use felhom_agent::infra::pve::PveClient;
use felhom_agent::infra::state::{AuditEntry, FakeClock, StateDb, Timestamp};
use felhom_proto::agent::v1 as pb;
use felhom_proto::agent::v1::local_api_client::LocalApiClient;
use felhom_simhost::pve::{PveSim, PveSimHandle, PveSimOptions};
use secrecy::ExposeSecret as _;
use tonic::transport::Channel;

/// What a guest over budget is told.
const OVER_BUDGET_TEXT: &str =
    "this guest has asked for too many changes in the last hour; try again later";

/// Rows guest 101 may cause per hour here: a snapshot costs two (its job and its audit row).
const BUDGET: u32 = 6;

struct Host {
    _dir: tempfile::TempDir,
    sim: PveSimHandle,
    ctx: AgentContext,
    clock: FakeClock,
    client: LocalApiClient<Channel>,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Host {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let sim = PveSim::start(PveSimOptions::default())
            .await
            .expect("simulated Proxmox VE");
        let (config, state) = agent_config_for(
            &sim,
            root,
            "\n[snapshots]\nmin_interval_secs = 0\nmax_per_guest = 1000\n",
        );
        let px = config.proxmox.expect("[proxmox] is configured");
        let pve = PveClient::new(px.client.clone()).expect("PVE client");
        let clock = FakeClock::new(Timestamp::from_unix_millis(1_795_424_512_000));
        let db = StateDb::open_with_clock(&state, Arc::new(clock.clone())).expect("state db");
        let ctx = AgentContext::start_on(
            db,
            Some((pve, px.client.trust.clone())),
            Default::default(),
            GuestSetup {
                storage_classes: BTreeMap::new(),
                snapshot_limits: config.snapshots,
            },
            Default::default(),
            GuestAuditPolicy {
                budget_per_hour: BUDGET,
                ..GuestAuditPolicy::default()
            },
        )
        .await
        .expect("agent context");
        let token = ctx
            .capabilities
            .tokens
            .mint(Actor::Operator { uid: None }, 101)
            .await
            .expect("mint a token for guest 101")
            .token
            .expose_secret()
            .to_owned();
        let socket = root.join("localapi.sock");
        let listener = bind_unix(&socket).expect("bind LocalApi socket");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let caps = ctx.capabilities.clone();
        let server = tokio::spawn(async move {
            serve_local_api(listener, caps, async {
                let _ = stopped.await;
            })
            .await
            .expect("LocalApi server");
        });
        let client = LocalApiClient::new(channel(&socket).await);
        Host {
            _dir: dir,
            sim,
            ctx,
            clock,
            client,
            token,
            stop: Some(stop),
            server,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .expect("a token is valid metadata");
        request.metadata_mut().insert("authorization", bearer);
        request
    }

    async fn snapshot(&self, name: &str) -> Result<pb::SnapshotResult, tonic::Status> {
        let req = self.request(pb::SnapshotRequest {
            name: name.to_owned(),
            description: String::new(),
        });
        self.client
            .clone()
            .snapshot(req)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn start_backup(&self) -> Result<pb::BackupAccepted, tonic::Status> {
        let req = self.request(pb::StartBackupRequest::default());
        self.client
            .clone()
            .start_backup(req)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn rollback(&self, name: &str) -> Result<pb::SnapshotResult, tonic::Status> {
        let req = self.request(pb::RollbackRequest {
            snapshot: name.to_owned(),
        });
        self.client
            .clone()
            .rollback(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Audit rows whose actor is guest 101, oldest first.
    async fn guest_rows(&self) -> Vec<AuditEntry> {
        let rows = self
            .ctx
            .capabilities
            .records
            .audit_tail(1000)
            .await
            .expect("audit tail");
        rows.into_iter()
            .filter(|r| r.actor == "guest:101")
            .collect()
    }

    async fn jobs_of_101(&self) -> usize {
        self.ctx
            .capabilities
            .records
            .jobs(101, 1000)
            .await
            .expect("job history")
            .len()
    }

    fn snapshots_of_101(&self) -> usize {
        let guest = self.sim.state().guest(101).expect("guest 101 exists");
        guest.snapshots.len()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.client);
        self.server.await.expect("LocalApi server task");
        self.sim.shutdown().await;
    }
}

async fn channel(socket: &Path) -> Channel {
    felhom_agent::ctl::unix_channel(socket)
        .await
        .expect("connect the LocalApi socket")
}

fn assert_over_budget(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), OVER_BUDGET_TEXT);
    // What the gateway makes of it.
    assert_eq!(
        felhom_localapi_gateway::status::http_status(status.code()).as_u16(),
        429
    );
    assert_eq!(
        felhom_localapi_gateway::status::caller_message(status),
        OVER_BUDGET_TEXT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_over_its_row_budget_is_refused_before_anything_is_done_and_its_rows_stay_bounded()
{
    let h = Host::start().await;
    let before = h.snapshots_of_101();
    for i in 0..3 {
        h.snapshot(&format!("s{i}")).await.expect("under budget");
    }
    assert_eq!(h.snapshots_of_101(), before + 3);
    assert_eq!(h.jobs_of_101().await, 3);

    // Budget used up (3 jobs + 3 audit rows): every change is refused, nothing is done.
    for i in 0..20 {
        assert_over_budget(&h.snapshot(&format!("t{i}")).await.unwrap_err());
        assert_over_budget(&h.start_backup().await.unwrap_err());
        assert_over_budget(&h.rollback("s0").await.unwrap_err());
    }
    assert_eq!(h.snapshots_of_101(), before + 3);
    assert_eq!(h.jobs_of_101().await, 3);
    let rows = h.guest_rows().await;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(
        rows.iter().all(|r| r.action == "guest.snapshot"),
        "{rows:#?}"
    );

    // Reads are never refused.
    let due = h
        .client
        .clone()
        .get_backup_due(h.request(pb::GetBackupDueRequest::default()))
        .await;
    assert_ne!(
        due.as_ref().map_err(tonic::Status::code).err(),
        Some(tonic::Code::ResourceExhausted),
        "{due:?}"
    );

    // An hour later the guest is admitted again; one row counts the refusals first.
    h.clock.advance(Duration::from_secs(60 * 60));
    h.snapshot("later").await.expect("back under budget");
    let rows = h.guest_rows().await;
    assert_eq!(rows.len(), 5, "{rows:#?}");
    assert_eq!(rows[3].action, OVER_BUDGET_ACTION);
    assert!(
        rows[3]
            .detail
            .starts_with("refused 60 calls over the budget of 6 rows per hour between "),
        "{rows:#?}"
    );
    assert_eq!(rows[4].action, "guest.snapshot");
    assert!(
        rows[4].detail.starts_with("snapshot later taken"),
        "{rows:#?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_identical_refusals_are_one_row_and_a_summary_and_cost_no_budget() {
    let h = Host::start().await;
    // No backup policy: every StartBackup is refused with the same text.
    for _ in 0..(BUDGET * 5) {
        let status = h.start_backup().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    let rows = h.guest_rows().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(rows[0].detail.starts_with("backup refused: "), "{rows:#?}");
    // Still within budget: a snapshot goes ahead, and its different row ends the run.
    h.snapshot("s1").await.expect("under budget");
    let rows = h.guest_rows().await;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(
        rows[1].detail,
        format!(
            "{} (repeated {} more times between 2026-11-23T09:01:52.000Z and 2026-11-23T09:01:52.000Z)",
            rows[0].detail,
            BUDGET * 5 - 1
        )
    );
    // A run still open when the service stops is written by the stop.
    for _ in 0..3 {
        h.start_backup().await.unwrap_err();
    }
    let records = h.ctx.capabilities.records.clone();
    h.stop().await;
    let rows: Vec<_> = records
        .audit_tail(1000)
        .await
        .expect("audit tail")
        .into_iter()
        .filter(|r| r.actor == "guest:101")
        .collect();
    assert_eq!(rows.len(), 5, "{rows:#?}");
    assert!(
        rows[4].detail.contains("(repeated 2 more times between"),
        "{rows:#?}"
    );
}
