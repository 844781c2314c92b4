//! `felhomctl backup …` and `felhomctl restore-test …`: the real felhomctl binary against the
//! agent's real gRPC server on a Unix socket, backed by the simulated Proxmox VE over HTTPS.
//! The agent is configured from an agent.toml with a `[backup]` section (tier `local` on
//! storage `local`, a daily policy for guest 101), parsed by the agent's own config code.
//! The scheduler is not running, so only the operator's commands start jobs.
//!
//! felhomctl's stdout is a pipe here, so `--wait` must print no progress (no `\r`), only the
//! final result; the terminal progress line is unit-tested in `ctl::wait`.

mod common;

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Run, agent_config_for, felhomctl};
use felhom_agent::app::context::{AgentContext, BackupSetup};
use felhom_agent::frontends::grpc::{bind_unix, serve_agent};
use felhom_agent::infra::pve::PveClient;
use felhom_simhost::pve::{PveSim, PveSimOptions};

/// Generous bound for the agent to come up on a loaded 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(120);

/// The simulated Proxmox VE and the agent serving on a socket, both on their own thread.
struct Host {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Host {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_owned();
        let socket = root.join("agent.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let sim = PveSim::start(PveSimOptions::default())
                    .await
                    .expect("simulated Proxmox VE");
                let extra = format!(
                    "socket = \"{sock}\"\n\n\
                     [backup]\ngrace_secs = 604800\nrestore_test_settle_secs = 1\n\
                     scratch_vmid_first = 9900\nscratch_vmid_last = 9999\n\
                     scratch_storage = \"local-lvm\"\n\n\
                     [[backup.tiers]]\nname = \"local\"\nstorage = \"local\"\nkind = \"local\"\n\n\
                     [[backup.policies]]\nvmids = [101]\ntier = \"local\"\n\
                     schedule = \"daily 02:30\"\nmode = \"snapshot\"\nkeep_last = 3\n",
                    sock = path.display(),
                );
                let (config, state) = agent_config_for(&sim, &root, &extra);
                let px = config.proxmox.expect("[proxmox] is configured");
                let pve = PveClient::new(px.client.clone()).expect("PVE client");
                let ctx = AgentContext::start(
                    Some((pve, px.client.trust.clone())),
                    &state,
                    Default::default(),
                    Default::default(),
                    BackupSetup {
                        settings: config.backup,
                        pbs: None,
                    },
                )
                .await
                .expect("agent context");
                let listener = bind_unix(&path).expect("bind agent socket");
                ready_tx.send(()).expect("test thread waits for readiness");
                serve_agent(
                    listener,
                    ctx.capabilities.clone(),
                    ctx.local_api_gateway.clone(),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .expect("agent gRPC server");
                sim.shutdown().await;
            });
        });
        ready_rx
            .recv_timeout(START_LIMIT)
            .expect("agent socket bound");
        Host {
            _dir: dir,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn ctl(&self, args: &[&str]) -> Run {
        felhomctl(&self.socket, args, None)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The whitespace-separated words of each line.
fn words(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// The value of `key` in a `key value` report.
fn field<'a>(report: &'a str, key: &str) -> Option<&'a str> {
    report.lines().find_map(|l| {
        l.strip_prefix(key)
            .filter(|rest| rest.starts_with(' '))
            .map(str::trim)
    })
}

#[test]
fn backup_now_wait_ends_done_and_the_archive_is_listed() {
    let host = Host::start();
    let run = host.ctl(&["backup", "now", "--vmid", "101", "--wait"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains('\r'), "progress on a pipe: {run:?}");
    assert_eq!(field(&run.stdout, "phase"), Some("done"), "{run:?}");
    assert_eq!(field(&run.stdout, "trigger"), Some("operator"), "{run:?}");
    assert_eq!(field(&run.stdout, "consistency"), Some("crash"), "{run:?}");
    let runs = words(&run.stdout);
    let local = runs
        .iter()
        .find(|w| w.first() == Some(&"local"))
        .unwrap_or_else(|| panic!("no run on tier local: {run:?}"));
    assert_eq!(local[1..3], ["local", "done"], "{run:?}");
    let volid = local[4];
    assert!(volid.starts_with("local:backup/vzdump-lxc-101-"), "{run:?}");

    let list = host.ctl(&["backup", "list", "--vmid", "101"]);
    let lines = words(list.success());
    assert_eq!(
        lines[0],
        [
            "VMID",
            "TIER",
            "VOLID",
            "TIME",
            "SIZE",
            "VERIFY",
            "ENCRYPTED",
            "CONSISTENCY",
            "MODE"
        ]
    );
    let row = lines
        .iter()
        .find(|w| w.get(2) == Some(&volid))
        .unwrap_or_else(|| panic!("{volid} not listed: {list:?}"));
    assert_eq!(row[..2], ["101", "local"], "{list:?}");
    assert_eq!(row[6..8], ["no", "crash"], "{list:?}");
}

#[test]
fn backup_now_without_wait_prints_the_job_and_status_follows_it() {
    let host = Host::start();
    let run = host.ctl(&["backup", "now", "--vmid", "101", "--json"]);
    let accepted: serde_json::Value = serde_json::from_str(run.success()).expect("JSON on stdout");
    assert_eq!(accepted["vmid"], 101);
    assert_eq!(accepted["phase"], "running");
    assert_eq!(accepted["newJob"], true);
    let job = accepted["jobId"].as_str().expect("a job id").to_owned();
    assert!(!job.is_empty());

    let status = host.ctl(&["backup", "status", "--vmid", "101"]);
    assert_eq!(field(status.success(), "job"), Some(job.as_str()));
}

#[test]
fn backup_status_of_a_guest_never_backed_up_is_idle() {
    let host = Host::start();
    for vmid in ["101", "102"] {
        let run = host.ctl(&["backup", "status", "--vmid", vmid]);
        assert_eq!(
            run.success(),
            format!("guest       {vmid}\nphase       idle\n")
        );
    }
}

#[test]
fn backup_of_a_guest_without_policy_is_refused_with_the_agents_reason() {
    let host = Host::start();
    host.ctl(&["backup", "now", "--vmid", "102", "--wait"])
        .fails_with_only(
            4,
            "felhomctl: FAILED_PRECONDITION: Guest 102 has no backup policy\n",
        );
}

#[test]
fn backup_due_says_a_guest_never_backed_up_is_due() {
    let host = Host::start();
    let run = host.ctl(&["backup", "due", "--vmid", "101"]);
    assert!(run.success().starts_with("guest 101: due — "), "{run:?}");
}

#[test]
fn restore_test_run_wait_passes_and_leaves_no_scratch_guest() {
    let host = Host::start();
    host.ctl(&["backup", "now", "--vmid", "101", "--wait"])
        .success();

    let run = host.ctl(&["restore-test", "run", "--vmid", "101", "--wait"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains('\r'), "progress on a pipe: {run:?}");
    assert_eq!(field(&run.stdout, "phase"), Some("done"), "{run:?}");
    assert_eq!(field(&run.stdout, "result"), Some("pass"), "{run:?}");
    let scratch: u32 = field(&run.stdout, "scratch guest")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no scratch guest: {run:?}"));
    assert!((9900..=9999).contains(&scratch), "{run:?}");

    let status = host.ctl(&["restore-test", "status", "--vmid", "101"]);
    assert_eq!(field(status.success(), "result"), Some("pass"));

    let guests = host.ctl(&["guests", "--json"]);
    let guests: serde_json::Value = serde_json::from_str(guests.success()).expect("JSON on stdout");
    let left: Vec<u64> = guests["guests"]
        .as_array()
        .expect("a guest list")
        .iter()
        .filter_map(|g| g["vmid"].as_u64())
        .filter(|v| (9900..=9999).contains(v))
        .collect();
    assert_eq!(left, Vec::<u64>::new(), "scratch guests remain");
}

#[test]
fn restore_test_status_of_a_guest_never_tested_is_idle() {
    let host = Host::start();
    let run = host.ctl(&["restore-test", "status", "--vmid", "101"]);
    assert_eq!(
        run.success(),
        "guest         101\nphase         idle\nresult        none\n"
    );
}

#[test]
fn verify_on_a_local_tier_is_refused_with_the_agents_reason() {
    let host = Host::start();
    let run = host.ctl(&[
        "verify", "run", "--vmid", "101", "--tier", "local", "--wait",
    ]);
    run.fails_with_only(
        4,
        "felhomctl: FAILED_PRECONDITION: Tier 'local' is not a PBS tier\n",
    );
}

#[test]
fn verify_status_of_a_guest_never_verified_is_idle() {
    let host = Host::start();
    let run = host.ctl(&["verify", "status", "--vmid", "101"]);
    assert_eq!(run.success(), "guest    101\nphase    idle\n");
}
