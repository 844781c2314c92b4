//! `felhom-agent selftest`: a read-only health report against the configured Proxmox VE, and an
//! explicitly gated task round trip (snapshot → rollback → delete snapshot) on one guest.
//!
//! The read-only report checks what the agent needs to work: the API answers, the node exists and
//! is online, its certificate matches the pin, guests and storages can be listed, and the token
//! holds the FelhomAgent privileges on `/`. It mutates nothing.

use crate::core::error_chain;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::infra::pve::{PveClient, PveError, TaskOutcome, TlsTrust, Vmid, WaitOptions};

/// The privileges of the `FelhomAgent` role (16; see the install guide).
pub const FELHOM_AGENT_PRIVILEGES: [&str; 16] = [
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.Disk",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
    "VM.Backup",
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
    "Sys.Audit",
    "SDN.Use",
];

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    fn push(&mut self, name: &'static str, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(Check { name, ok, detail });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "{} {:<12} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        write!(
            f,
            "{}",
            if self.ok() {
                "selftest passed"
            } else {
                "selftest FAILED"
            }
        )
    }
}

/// Runs the read-only checks. `trust` is what the client was configured with (to compare the
/// pinned fingerprint with what the node reports).
pub async fn read_only(pve: &PveClient, trust: &TlsTrust) -> Report {
    let mut r = Report::default();
    match pve.version().await {
        Ok(v) => r.push(
            "version",
            Ok(format!(
                "Proxmox VE {} (release {}, {})",
                v.version, v.release, v.repoid
            )),
        ),
        Err(e) => {
            // Nothing else can work; say why once instead of failing every check the same way.
            r.push("version", Err(error_chain(&e)));
            return r;
        }
    }
    let node = pve.node().to_owned();
    r.push(
        "node",
        match pve.nodes().await {
            Ok(nodes) => match nodes.iter().find(|n| n.node == node) {
                None => Err(format!(
                    "node '{node}' not in the cluster (have: {})",
                    nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>().join(", ")
                )),
                Some(n) if n.status != "online" => Err(format!("node '{node}' is {}", n.status)),
                Some(n) => match (trust, n.ssl_fingerprint.as_deref()) {
                    (TlsTrust::Pinned(pin), Some(fp))
                        if !fp.eq_ignore_ascii_case(&pin.to_colon_hex()) =>
                    {
                        Err(format!("node '{node}' reports certificate {fp}, but the pin is {pin} (connected through another node or a proxy?)"))
                    }
                    _ => Ok(format!("node '{node}' online, {} CPUs, uptime {}s", n.maxcpu, n.uptime)),
                },
            },
            Err(e) => Err(error_chain(&e)),
        },
    );
    r.push(
        "node-status",
        pve.node_status()
            .await
            .map_err(|e| error_chain(&e))
            .map(|s| {
                format!(
                    "cpu {:.0}%, memory {}/{} MiB, root fs {}/{} GiB, load {}",
                    s.cpu * 100.0,
                    s.memory.used >> 20,
                    s.memory.total >> 20,
                    s.rootfs.used >> 30,
                    s.rootfs.total >> 30,
                    s.loadavg.join(" ")
                )
            }),
    );
    r.push(
        "guests",
        pve.cluster_guests()
            .await
            .map_err(|e| error_chain(&e))
            .map(|g| {
                let lxc: Vec<_> = g
                    .iter()
                    .filter(|g| g.kind == "lxc" && g.node == node)
                    .collect();
                let running = lxc.iter().filter(|g| g.status == "running").count();
                format!("{} LXC guests on {node} ({running} running)", lxc.len())
            }),
    );
    r.push(
        "storage",
        pve.node_storage()
            .await
            .map_err(|e| error_chain(&e))
            .map(|s| {
                let names: Vec<String> = s
                    .iter()
                    .map(|s| {
                        format!(
                            "{} ({}{})",
                            s.storage,
                            s.kind,
                            if s.active { "" } else { ", inactive" }
                        )
                    })
                    .collect();
                format!("{} storages: {}", s.len(), names.join(", "))
            }),
    );
    r.push(
        "privileges",
        match pve.permissions().await {
            Ok(perms) => {
                let root = perms.get("/").cloned().unwrap_or_default();
                let missing: Vec<&str> = FELHOM_AGENT_PRIVILEGES
                    .iter()
                    .copied()
                    .filter(|p| !root.get(*p).is_some_and(|v| v.as_u64().unwrap_or(0) == 1 || v.as_bool() == Some(true)))
                    .collect();
                if missing.is_empty() {
                    Ok(format!("{} holds all {} FelhomAgent privileges on /", pve.authid(), FELHOM_AGENT_PRIVILEGES.len()))
                } else {
                    Err(format!(
                        "{} lacks on /: {} (grant the FelhomAgent role to both the user and the token)",
                        pve.authid(),
                        missing.join(", ")
                    ))
                }
            }
            Err(e) => Err(error_chain(&e)),
        },
    );
    r
}

/// One step of the task round trip, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStep {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn outcome_text(o: TaskOutcome) -> String {
    match o {
        TaskOutcome::Ok => "OK".into(),
        TaskOutcome::Warnings(n) => format!("finished with {n} warning(s)"),
    }
}

/// Snapshot → rollback → delete snapshot on `vmid`, each waited to completion. Reversible, but
/// the rollback stops a running guest and starts it again. The snapshot is always deleted, also
/// when the rollback failed. Returns the steps taken; `Err` carries the steps too.
pub async fn task_round_trip(
    pve: &PveClient,
    vmid: Vmid,
    wait: &WaitOptions,
    cancel: &CancellationToken,
    mut progress: impl FnMut(&TaskStep),
) -> Result<Vec<TaskStep>, Vec<TaskStep>> {
    let mut steps = Vec::new();
    let mut record = |steps: &mut Vec<TaskStep>, name: String, r: Result<String, String>| {
        let step = match r {
            Ok(detail) => TaskStep {
                name,
                ok: true,
                detail,
            },
            Err(detail) => TaskStep {
                name,
                ok: false,
                detail,
            },
        };
        progress(&step);
        let ok = step.ok;
        steps.push(step);
        ok
    };
    let status = match pve.lxc_status(vmid).await {
        Ok(s) => s,
        Err(e) => {
            record(&mut steps, format!("status {vmid}"), Err(error_chain(&e)));
            return Err(steps);
        }
    };
    let was_running = status.status == "running";
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let snap = format!("felhom_selftest_{stamp}");

    let run = |upid: Result<crate::infra::pve::Upid, PveError>| async move {
        let upid = upid.map_err(|e| error_chain(&e))?;
        pve.wait_task(&upid, wait, cancel)
            .await
            .map(|o| format!("{} ({upid})", outcome_text(o)))
            .map_err(|e| error_chain(&e))
    };

    let taken = run(pve
        .snapshot(vmid, &snap, Some("felhom-agent selftest; safe to delete"))
        .await)
    .await;
    if !record(&mut steps, format!("snapshot {snap}"), taken) {
        return Err(steps);
    }
    let rolled = run(pve.rollback(vmid, &snap, was_running).await).await;
    let rollback_ok = record(&mut steps, format!("rollback to {snap}"), rolled);
    let deleted = run(pve.delete_snapshot(vmid, &snap).await).await;
    let delete_ok = record(&mut steps, format!("delete {snap}"), deleted);
    if rollback_ok && delete_ok {
        Ok(steps)
    } else {
        Err(steps)
    }
}

/// Why the selftest could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    #[error("Proxmox VE is not configured ([proxmox] endpoint)")]
    NoPve,
}

/// The selftest as a capability of the running agent (the read-only checks).
#[derive(Debug, Clone)]
pub struct Selftest {
    pve: Option<PveClient>,
    trust: Option<TlsTrust>,
}

impl Selftest {
    pub fn new(pve: Option<PveClient>, trust: Option<TlsTrust>) -> Self {
        Self { pve, trust }
    }

    /// Runs the read-only checks against the configured node.
    pub async fn run(&self) -> Result<Report, SelftestError> {
        let pve = self.pve.as_ref().ok_or(SelftestError::NoPve)?;
        let trust = self.trust.clone().unwrap_or(TlsTrust::InsecureSkipVerify);
        Ok(read_only(pve, &trust).await)
    }
}
