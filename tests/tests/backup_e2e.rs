//! Backups and self-restore-tests end to end, as a guest's controller sees them: a pinned
//! HTTPS client → the gateway embedded in the real agent (started by [`Devhost`]) → LocalApi →
//! the simulated Proxmox VE linked to the simulated PBS. Restore-tests and faults are started
//! the way an operator or the world would (Agent RPCs, simulator faults, SIGKILL).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeMap;
use std::time::Duration;

use felhom_proto::agent::v1 as pb;
use felhom_proto::agent::v1::agent_client::AgentClient;
use felhom_proto::agent::v1::{GuestBackupRequest, ListOperationsRequest};
use felhom_simhost::devhost::{Devhost, DevhostOptions, TempDevhost};
use felhom_simhost::pinned::pinned_client;
use felhom_simhost::pve::fixture::GuestStatus;
use serde_json::Value;
use tonic::transport::Channel;

/// Scratch guests are restored into this range (devhost's default `[backup]`).
const SCRATCH: std::ops::RangeInclusive<u32> = 9900..=9999;
/// A short settle time so restore-tests finish quickly.
const FAST: [(&str, &str); 1] = [("FELHOM_AGENT_BACKUP_RESTORE_TEST_SETTLE_SECS", "1")];

struct Host(TempDevhost);

impl Host {
    async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(env, false).await
    }

    /// `schedules`: devhost's own `[backup]` with the restore-test schedule (what the
    /// `felhom-devhost` binary runs), instead of the quiet one tests get by default.
    async fn start_with(env: &[(&str, &str)], schedules: bool) -> Self {
        let options = DevhostOptions {
            backup_schedules: schedules,
            agent_program: Some(env!("CARGO_BIN_EXE_felhom-devhost").into()),
            agent_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..DevhostOptions::default()
        };
        Self(TempDevhost::start(&options).await.unwrap())
    }

    fn dh(&self) -> &Devhost {
        self.0.dh()
    }

    fn dh_mut(&mut self) -> &mut Devhost {
        self.0.dh_mut()
    }

    fn token(&self, vmid: u32) -> String {
        let guest = self.dh().info.guests.iter().find(|g| g.vmid == vmid);
        guest.unwrap().token.clone()
    }

    /// `GET path` as guest `vmid`'s controller: the envelope's `data` (status must be 200).
    async fn get(&self, vmid: u32, path: &str) -> Value {
        let (status, body) = self.send(vmid, reqwest::Method::GET, path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        data(&body)
    }

    async fn send(&self, vmid: u32, method: reqwest::Method, path: &str) -> (u16, String) {
        let url = format!("https://{}{path}", self.dh().info.local_api_endpoint);
        let mut req = pinned_client(&self.dh().info.local_api_pin_sha256)
            .request(method.clone(), url)
            .bearer_auth(self.token(vmid));
        if method == reqwest::Method::POST {
            req = req.header("content-type", "application/json").body("{}");
        }
        // After an agent restart its gateway listens a moment after its socket: retry connects.
        let mut tries = 0;
        let response = loop {
            match req.try_clone().unwrap().send().await {
                Ok(r) => break r,
                Err(e) if e.is_connect() && tries < 600 => tries += 1,
                Err(e) => panic!("{method} {path}: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn agent(&self) -> AgentClient<Channel> {
        AgentClient::new(
            felhom_agent::ctl::unix_channel(&self.dh().info.agent_socket)
                .await
                .unwrap(),
        )
    }

    fn scratch_guests(&self) -> Vec<u32> {
        self.dh().pve().state().with(|w| {
            w.guests
                .keys()
                .copied()
                .filter(|v| SCRATCH.contains(v))
                .collect()
        })
    }

    async fn stop(self) {
        self.0.stop().await.unwrap();
    }
}

fn data(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["ok"], true, "{body}");
    v["data"].clone()
}

/// Polls `f` every 200 ms for up to three minutes until it answers `Some`.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..900 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} did not happen within three minutes");
}

/// Polls GET /backup/status until its phase is final; returns the data.
async fn backup_final(h: &Host, vmid: u32) -> Value {
    until("backup to finish", || async {
        let s = h.get(vmid, "/backup/status").await;
        matches!(s["phase"].as_str(), Some("done" | "failed")).then_some(s)
    })
    .await
}

/// The error a failed backup shows: the guest gets a fixed text naming the job; the operator's
/// job record (`ListJobs`) has the whole story. Returns the operator's.
async fn failed_backup_error(h: &Host, vmid: u32, status: &Value) -> String {
    let job = status["job_id"].as_str().unwrap();
    assert_eq!(
        status["error"].as_str().unwrap(),
        format!(
            "the job failed; the host operator can see why in the agent's log and in job {job}"
        ),
        "{status}"
    );
    let jobs = h
        .agent()
        .await
        .list_jobs(pb::ListJobsRequest { vmid, limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let record = jobs.iter().find(|j| j.job_id == job).unwrap();
    assert_eq!(record.phase, "failed", "{record:?}");
    record.error.clone()
}

/// Polls GET /restore-test/status until a finished test is reported.
async fn restore_test_final(h: &Host, vmid: u32) -> Value {
    until("restore-test to finish", || async {
        let s = h.get(vmid, "/restore-test/status").await;
        (s["phase"] == "done").then_some(s)
    })
    .await
}

async fn run_restore_test(h: &Host, vmid: u32) -> String {
    let accepted = h
        .agent()
        .await
        .run_restore_test(GuestBackupRequest { vmid })
        .await
        .unwrap()
        .into_inner();
    assert!(accepted.new_job);
    accepted.job_id
}

/// Waits until the agent has no unfinished journaled operation.
async fn wait_journal_quiet(h: &Host) {
    until("journal to be quiet", || async {
        let ops = h
            .agent()
            .await
            .list_operations(ListOperationsRequest {
                unfinished_only: true,
                limit: 100,
            })
            .await
            .ok()?
            .into_inner();
        ops.operations.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quiesce_loop_due_backup_status_done_keeps_one_job_id() {
    let h = Host::start(&[]).await;
    let due = h.get(102, "/backup/due").await;
    assert_eq!(
        due,
        serde_json::json!({"vmid": 102, "due": true, "reason": "never backed up"})
    );

    let (status, body) = h.send(102, reqwest::Method::POST, "/backup").await;
    assert_eq!(status, 202, "{body}");
    let accepted = data(&body);
    assert_eq!(accepted["vmid"], 102);
    assert_eq!(accepted["phase"], "running");
    let job = accepted["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job.len(), 36, "a UUID: {job}");

    let done = backup_final(&h, 102).await;
    assert_eq!(
        done,
        serde_json::json!({"vmid": 102, "phase": "done", "job_id": job, "error": ""})
    );
    let due = h.get(102, "/backup/due").await;
    assert_eq!(due["due"], false, "{due}");
    assert!(
        due["reason"].as_str().unwrap().starts_with("next due "),
        "{due}"
    );

    // The operator view records it as app-consistent, to both tiers, mode read from the log.
    let detail = h
        .agent()
        .await
        .get_backup_status(GuestBackupRequest { vmid: 102 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.trigger, "controller");
    assert_eq!(detail.consistency, "app");
    let tiers: Vec<&str> = detail.runs.iter().map(|r| r.tier.as_str()).collect();
    assert_eq!(tiers, ["local", "offsite"]);
    for run in &detail.runs {
        assert_eq!(run.phase, "done", "{run:?}");
        assert_eq!(run.requested_mode, "snapshot");
        assert!(!run.actual_mode.is_empty(), "{run:?}");
        assert!(run.volid.contains(":backup/"), "{run:?}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_post_while_a_backup_runs_joins_it() {
    let h = Host::start(&[]).await;
    h.dh().pve().faults().hang_next_tasks("vzdump", 1);
    let (status, body) = h.send(102, reqwest::Method::POST, "/backup").await;
    assert_eq!(status, 202, "{body}");
    let first = data(&body)["job_id"].clone();
    let (status, body) = h.send(102, reqwest::Method::POST, "/backup").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(data(&body)["job_id"], first);
    let due = h.get(102, "/backup/due").await;
    assert_eq!(due["due"], false, "{due}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_vzdump_ends_failed_with_the_tasks_error() {
    let h = Host::start(&[]).await;
    h.dh().pve().faults().fail_next_tasks("vzdump", 2, None);
    let (status, body) = h.send(102, reqwest::Method::POST, "/backup").await;
    assert_eq!(status, 202, "{body}");
    let job = data(&body)["job_id"].clone();
    let failed = backup_final(&h, 102).await;
    assert_eq!(failed["phase"], "failed", "{failed}");
    assert_eq!(failed["job_id"], job);
    let error = failed_backup_error(&h, 102, &failed).await;
    assert!(
        error.contains("vzdump to tier 'local' failed: ERROR: Backup of VM 102 failed"),
        "{error}"
    );
    assert!(error.contains("(job errors)"), "{error}");
    // Still due: nothing was backed up.
    assert_eq!(h.get(102, "/backup/due").await["due"], true);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_is_waited_for_the_backup_deadline_not_the_proxmox_one() {
    let h = Host::start(&[
        ("FELHOM_AGENT_PROXMOX_TASK_DEADLINE_SECS", "1"),
        ("FELHOM_AGENT_BACKUP_TASK_DEADLINE_SECS", "4"),
    ])
    .await;
    h.dh().pve().faults().hang_next_tasks("vzdump", 1);
    let (status, body) = h.send(102, reqwest::Method::POST, "/backup").await;
    assert_eq!(status, 202, "{body}");
    let done = backup_final(&h, 102).await;
    assert_eq!(done["phase"], "failed", "{done}");
    let error = failed_backup_error(&h, 102, &done).await;
    assert!(
        error.contains("still running after the 4s deadline"),
        "{error}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storage_without_an_encryption_key_fails_the_encrypted_tier_closed() {
    let h = Host::start(&[]).await;
    // `pvesm set felhom-pbs --delete encryption-key`: vzdump would now write unencrypted.
    h.dh()
        .pve()
        .state()
        .set_pbs_encryption_key("felhom-pbs", None)
        .unwrap();
    let (status, body) = h.send(102, reqwest::Method::POST, "/backup").await;
    assert_eq!(status, 202, "{body}");
    let failed = backup_final(&h, 102).await;
    assert_eq!(failed["phase"], "failed", "{failed}");
    let error = failed_backup_error(&h, 102, &failed).await;
    assert!(
        error
            == "Refusing to back up to tier 'offsite': it is configured as encrypted, but storage 'felhom-pbs' has no client encryption key (no encryption-key in its Proxmox configuration), so the backup would land unencrypted",
        "{error}"
    );
    // Nothing reached the PBS datastore for 102; the local tier still got its backup.
    let pbs = h.dh().pbs().state().snapshots(&h.dh().info.pbs_datastore);
    assert!(pbs.iter().all(|s| s.backup_id != "102"), "{pbs:?}");
    let detail = h
        .agent()
        .await
        .get_backup_status(GuestBackupRequest { vmid: 102 })
        .await
        .unwrap()
        .into_inner();
    let local = detail.runs.iter().find(|r| r.tier == "local").unwrap();
    assert_eq!(local.phase, "done");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storage_configured_with_another_key_than_the_pinned_one_is_refused() {
    let mut h = Host::start(&[]).await;
    // The operator pinned the escrowed key; then someone re-ran `encryption-key autogen`.
    let pinned = felhom_simhost::pbs::PbsKey::generate().fingerprint();
    let config = h.dh().info.state_dir.join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "encrypted = true\n",
        &format!("encrypted = true\nencryption_key_fingerprint = \"{pinned}\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    h.dh_mut().kill_agent().unwrap();
    h.dh_mut().restart_agent(&[]).await.unwrap();
    let configured = h
        .dh()
        .pve()
        .state()
        .storage_key_fingerprint("felhom-pbs")
        .unwrap();
    let (status, body) = h.send(102, reqwest::Method::POST, "/backup").await;
    assert_eq!(status, 202, "{body}");
    let failed = backup_final(&h, 102).await;
    assert_eq!(failed["phase"], "failed", "{failed}");
    let error = failed_backup_error(&h, 102, &failed).await;
    assert_eq!(
        error,
        format!(
            "Refusing to back up to tier 'offsite': storage 'felhom-pbs' is configured with encryption key {configured}, not the key {pinned} the tier pins"
        )
    );
    let pbs = h.dh().pbs().state().snapshots(&h.dh().info.pbs_datastore);
    assert!(pbs.iter().all(|s| s.backup_id != "102"), "{pbs:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_grace_window_the_agent_backs_up_by_itself_crash_consistent() {
    let h = Host::start(&[
        ("FELHOM_AGENT_BACKUP_GRACE_SECS", "1"),
        ("FELHOM_AGENT_BACKUP_TICK_SECS", "1"),
    ])
    .await;
    let done = until("the scheduler's backup", || async {
        let s = h.get(102, "/backup/status").await;
        (s["phase"] == "done").then_some(s)
    })
    .await;
    assert_eq!(done["error"], "");
    let detail = h
        .agent()
        .await
        .get_backup_status(GuestBackupRequest { vmid: 102 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.trigger, "schedule");
    assert_eq!(detail.consistency, "crash");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passing_restore_test_leaves_no_scratch_guest() {
    let h = Host::start(&FAST).await;
    let before = h.get(101, "/restore-test/status").await;
    assert_eq!(
        before,
        serde_json::json!({"vmid": 101, "phase": "idle", "result": "none"})
    );
    let job = run_restore_test(&h, 101).await;
    let after = restore_test_final(&h, 101).await;
    assert_eq!(after["result"], "pass", "{after}");
    let detail = after["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("restored felhom-pbs:backup/ct/101/"),
        "{detail}"
    );
    assert!(detail.contains("into scratch guest 9900"), "{detail}");
    assert!(detail.contains("interface eth0 present"), "{detail}");
    assert!(detail.ends_with("; no scratch guest left"), "{detail}");
    assert!(
        after["last_run_at"].as_str().unwrap().ends_with('Z'),
        "{after}"
    );
    assert_eq!(h.scratch_guests(), Vec::<u32>::new());
    let op = h
        .agent()
        .await
        .get_restore_test_status(GuestBackupRequest { vmid: 101 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(op.job_id, job);
    assert_eq!(op.scratch_vmid, 9900);
    assert_eq!(op.tier, "offsite");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scratch_guest_that_fails_to_start_fails_the_test_and_is_destroyed() {
    let h = Host::start(&FAST).await;
    h.dh().pve().faults().fail_next_tasks("vzstart", 1, None);
    run_restore_test(&h, 101).await;
    let after = restore_test_final(&h, 101).await;
    assert_eq!(after["result"], "fail", "{after}");
    let detail = after["detail"].as_str().unwrap();
    assert!(detail.contains("Step start failed"), "{detail}");
    assert!(detail.ends_with("; no scratch guest left"), "{detail}");
    assert_eq!(h.scratch_guests(), Vec::<u32>::new());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scratch_guest_that_cannot_be_destroyed_at_once_is_removed_by_a_later_tick() {
    let mut env = FAST.to_vec();
    env.push(("FELHOM_AGENT_BACKUP_TICK_SECS", "1"));
    let h = Host::start(&env).await;
    h.dh().pve().faults().fail_next_tasks(
        "vzdestroy",
        1,
        Some("lvremove 'pve/vm-9900-disk-0' error:   Logical volume pve/vm-9900-disk-0 in use."),
    );
    run_restore_test(&h, 101).await;
    let after = restore_test_final(&h, 101).await;
    assert_eq!(after["result"], "fail", "{after}");
    let detail = after["detail"].as_str().unwrap();
    assert!(detail.contains("; interface eth0 present"), "{detail}");
    assert!(
        detail.contains("scratch guest 9900 could NOT be destroyed yet"),
        "{detail}"
    );
    assert!(
        detail.contains("Logical volume pve/vm-9900-disk-0 in use"),
        "{detail}"
    );
    // No restart: the scheduler finishes the removal through the journal.
    wait_journal_quiet(&h).await;
    assert_eq!(h.scratch_guests(), Vec::<u32>::new());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protected_guests_backup_restores_into_a_scratch_guest_that_can_be_destroyed() {
    let h = Host::start(&FAST).await;
    // `protection` travels in the archive's configuration and would make the copy undeletable.
    h.dh().pve().state().with(|w| {
        let g = w.guests.get_mut(&102).unwrap();
        g.config.insert("protection".to_owned(), "1".to_owned());
    });
    backup_done(&h, 102).await;
    run_restore_test(&h, 102).await;
    let after = restore_test_final(&h, 102).await;
    assert_eq!(after["result"], "pass", "{after}");
    assert!(
        after["detail"]
            .as_str()
            .unwrap()
            .starts_with("restored local:backup/vzdump-lxc-102-"),
        "{after}"
    );
    assert_eq!(h.scratch_guests(), Vec::<u32>::new());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_tagged_scratch_by_someone_else_is_never_destroyed() {
    let mut h = Host::start(&FAST).await;
    let mut config = BTreeMap::new();
    config.insert("hostname".to_owned(), "not-ours".to_owned());
    config.insert("tags".to_owned(), "felhom-scratch".to_owned());
    config.insert(
        "rootfs".to_owned(),
        "local-lvm:vm-9900-disk-0,size=1G".to_owned(),
    );
    h.dh()
        .pve()
        .state()
        .add_guest(9900, GuestStatus::Stopped, config)
        .unwrap();
    run_restore_test(&h, 101).await;
    let after = restore_test_final(&h, 101).await;
    assert_eq!(after["result"], "pass", "{after}");
    assert!(
        after["detail"]
            .as_str()
            .unwrap()
            .contains("into scratch guest 9901"),
        "{after}"
    );
    assert_eq!(h.scratch_guests(), vec![9900]);
    // Nor by start-up recovery.
    h.dh_mut().restart_agent(&FAST).await.unwrap();
    wait_journal_quiet(&h).await;
    assert_eq!(h.scratch_guests(), vec![9900]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_restore_test_leaves_no_scratch_guest_after_restart() {
    let mut h = Host::start(&FAST).await;
    // Journal writes of a restore-test: 1 begin, 2 restore started, 3 guest recorded, 4 restore
    // UPID, 5 restore done, 6-7 configure, 8 start started, 9 start UPID, 10 start done,
    // 11 health started. Crash points cover "restore in flight", "guest restored but not yet
    // configured", "start in flight" and "running, health check under way".
    let mut exercised = 0;
    for n in [3u32, 4, 6, 9, 11] {
        let failpoint = format!("journal:{n}");
        let mut env = FAST.to_vec();
        env.push(("FELHOM_AGENT_FAILPOINT", failpoint.as_str()));
        h.dh_mut().restart_agent(&env).await.unwrap();
        run_restore_test(&h, 101).await;
        let exited = h
            .dh_mut()
            .wait_agent_exit(Duration::from_secs(120))
            .await
            .unwrap();
        assert!(exited.is_some(), "write {n}: the agent did not die");
        if n == 6 {
            // Restored, not yet configured: already marked scratch and kept from starting at
            // boot (the archive says onboot=1, tags felhom;home).
            let config = h.dh().pve().state().guest(9900).unwrap().config;
            assert_eq!(config["onboot"], "0", "{config:?}");
            // Plus the restore's marker, by which compensation knows the guest as its own.
            let tags: Vec<&str> = config["tags"].split(';').collect();
            assert_eq!(tags.len(), 2, "{config:?}");
            assert!(tags.contains(&"felhom-scratch"), "{config:?}");
            assert!(
                tags.iter().any(|t| t.starts_with("felhom-op-")),
                "{config:?}"
            );
        }
        exercised += 1;
        h.dh_mut().restart_agent(&FAST).await.unwrap();
        wait_journal_quiet(&h).await;
        assert_eq!(
            h.scratch_guests(),
            Vec::<u32>::new(),
            "crash after journal write {n}"
        );
        let status = h.get(101, "/restore-test/status").await;
        assert_eq!(status["result"], "fail", "write {n}: {status}");
        assert_eq!(
            status["detail"], "interrupted by an agent restart",
            "write {n}: {status}"
        );
        let locked: Vec<u32> = h.dh().pve().state().with(|w| {
            w.guests
                .iter()
                .filter(|(_, g)| g.config.contains_key("lock"))
                .map(|(v, _)| *v)
                .collect()
        });
        assert_eq!(locked, Vec::<u32>::new(), "write {n}: locks left");
    }
    println!("restore-test crash points exercised: {exercised}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_restore_test_stops_the_agent_and_the_next_start_removes_the_scratch_guest() {
    // A ten-minute settle keeps the test in its health check when the agent is told to stop.
    let mut h = Host::start(&[("FELHOM_AGENT_BACKUP_RESTORE_TEST_SETTLE_SECS", "600")]).await;
    run_restore_test(&h, 101).await;
    until("the scratch guest to run", || async {
        let running = h.dh().pve().state().with(|w| {
            w.guests
                .get(&9900)
                .is_some_and(|g| g.status == GuestStatus::Running)
        });
        running.then_some(())
    })
    .await;
    h.dh().terminate_agent().unwrap();
    let exited = h
        .dh_mut()
        .wait_agent_exit(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        exited.is_some_and(|s| s.success()),
        "the agent did not stop cleanly mid restore-test: {exited:?}"
    );
    h.dh_mut().restart_agent(&FAST).await.unwrap();
    wait_journal_quiet(&h).await;
    assert_eq!(h.scratch_guests(), Vec::<u32>::new());
    let status = h.get(101, "/restore-test/status").await;
    assert_eq!(status["result"], "fail", "{status}");
    assert_eq!(
        status["detail"], "interrupted by an agent restart",
        "{status}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_runs_a_due_restore_test_by_itself() {
    // devhost's schedule: restore-tests Sundays 04:00. Guest 101 has a PBS backup from June and
    // was never tested, so the latest Sunday slot makes it due at the first tick. Backups are
    // kept out of the way with the longest grace window.
    let mut env = FAST.to_vec();
    env.push(("FELHOM_AGENT_BACKUP_TICK_SECS", "1"));
    env.push(("FELHOM_AGENT_BACKUP_GRACE_SECS", "604800"));
    let h = Host::start_with(&env, true).await;
    let after = restore_test_final(&h, 101).await;
    assert_eq!(after["result"], "pass", "{after}");
    assert_eq!(h.scratch_guests(), Vec::<u32>::new());
    // Tested since the newest backup: not due again, so no second test starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = h
        .agent()
        .await
        .list_jobs(felhom_proto::agent::v1::ListJobsRequest {
            vmid: 101,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let tests = jobs
        .jobs
        .iter()
        .filter(|j| j.kind == "restore-test")
        .count();
    assert_eq!(tests, 1, "{jobs:?}");
    // Guest 102 has no backup at all: nothing to test, so no test was started.
    assert_eq!(h.get(102, "/restore-test/status").await["phase"], "idle");
    h.stop().await;
}

/// POSTs /backup as guest `vmid` and waits for that job to end done.
async fn backup_done(h: &Host, vmid: u32) {
    let (status, body) = h.send(vmid, reqwest::Method::POST, "/backup").await;
    assert_eq!(status, 202, "{body}");
    let job = data(&body)["job_id"].clone();
    let done = backup_final(h, vmid).await;
    assert_eq!(done["job_id"], job);
    assert_eq!(done["phase"], "done", "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_guest_is_backed_up_in_stop_mode_and_both_modes_are_recorded() {
    let h = Host::start(&[]).await;
    h.dh().pve().state().with(|w| {
        w.guests.get_mut(&102).unwrap().status = GuestStatus::Stopped;
    });
    backup_done(&h, 102).await;
    let detail = h
        .agent()
        .await
        .get_backup_status(GuestBackupRequest { vmid: 102 })
        .await
        .unwrap()
        .into_inner();
    for run in &detail.runs {
        assert_eq!(run.requested_mode, "snapshot", "{run:?}");
        assert_eq!(run.actual_mode, "stop", "{run:?}");
    }
    // The history is shown with the archives, too.
    let list = h
        .agent()
        .await
        .list_backups(felhom_proto::agent::v1::ListBackupsRequest { vmid: 102 })
        .await
        .unwrap()
        .into_inner();
    let ours: Vec<_> = list
        .backups
        .iter()
        .filter(|b| b.job_id == detail.job_id)
        .collect();
    assert_eq!(ours.len(), 2, "{list:#?}");
    for b in ours {
        assert_eq!(
            (b.requested_mode.as_str(), b.actual_mode.as_str()),
            ("snapshot", "stop")
        );
        assert_eq!(b.consistency, "app");
        assert_eq!(b.encrypted, b.tier == "offsite", "{b:?}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_policys_last_backups_on_the_tier() {
    // devhost's local policy: keep_last = 3, keep_daily = 7 (all of today's count as one day).
    let h = Host::start(&[]).await;
    for _ in 0..4 {
        backup_done(&h, 102).await;
    }
    let list = h
        .agent()
        .await
        .list_backups(felhom_proto::agent::v1::ListBackupsRequest { vmid: 102 })
        .await
        .unwrap()
        .into_inner();
    let local = list.backups.iter().filter(|b| b.tier == "local").count();
    assert_eq!(local, 3, "{list:#?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_tier_is_named_but_does_not_stop_the_due_answer() {
    let h = Host::start(&[]).await;
    backup_done(&h, 102).await;
    h.dh().pve().faults().http_error(
        "/nodes/pve1/storage/felhom-pbs/content",
        1,
        500,
        Some("pbs: error fetching datastores - 503 Service Unavailable"),
    );
    let due = h.get(102, "/backup/due").await;
    assert_eq!(due["due"], false, "{due}");
    let reason = due["reason"].as_str().unwrap();
    assert!(reason.starts_with("next due "), "{reason}");
    assert!(
        reason.contains("; tier 'offsite' cannot be checked ("),
        "{reason}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_guests_restore_tests_at_once_both_pass() {
    let h = Host::start(&FAST).await;
    backup_done(&h, 102).await;
    let (a, b) = tokio::join!(run_restore_test(&h, 101), run_restore_test(&h, 102));
    assert_ne!(a, b);
    let (r101, r102) = tokio::join!(restore_test_final(&h, 101), restore_test_final(&h, 102));
    assert_eq!(r101["result"], "pass", "{r101}");
    assert_eq!(r102["result"], "pass", "{r102}");
    assert_eq!(h.scratch_guests(), Vec::<u32>::new());
    h.stop().await;
}

/// The agent with one scheduler tick (at start) behind it: guests 101 and 102 both have
/// policies on `local` and `felhom-pbs`. Also the simulator's state and the two storages'
/// content paths, whose listings the tick has made and a test counts from here.
async fn after_the_first_tick() -> (Host, felhom_simhost::pve::SimState, String, String) {
    let h = Host::start(&[("FELHOM_AGENT_BACKUP_TICK_SECS", "3600")]).await;
    let node = h.dh().pve().node();
    let pve = h.dh().pve().state().clone();
    let path = |storage: &str| format!("/nodes/{node}/storage/{storage}/content");
    let (local, pbs) = (path("local"), path("felhom-pbs"));
    until("the first tick listed both tier storages", || {
        let pve = pve.clone();
        let (local, pbs) = (local.clone(), pbs.clone());
        async move {
            (pve.request_count("GET", &local) >= 1 && pve.request_count("GET", &pbs) >= 1)
                .then_some(())
        }
    })
    .await;
    // Whatever the rest of the tick does, it is done by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (h, pve, local, pbs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduler_tick_lists_each_tier_storage_once_for_all_guests() {
    // Their due-ness must come from one listing per storage, not one per guest and tier.
    let (h, pve, local, pbs) = after_the_first_tick().await;
    assert_eq!(pve.request_count("GET", &local), 1, "listings of {local}");
    assert_eq!(pve.request_count("GET", &pbs), 1, "listings of {pbs}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_every_guests_backups_reads_each_tier_storage_once() {
    // One listing of each storage answers for both guests (it was one per guest and tier).
    let (h, pve, local, pbs) = after_the_first_tick().await;
    let before = (
        pve.request_count("GET", &local),
        pve.request_count("GET", &pbs),
    );
    let list = h
        .agent()
        .await
        .list_backups(felhom_proto::agent::v1::ListBackupsRequest { vmid: 0 })
        .await
        .unwrap()
        .into_inner();
    // The fixture holds backups of 101 only; 102's come from the same listings (empty).
    assert!(list.backups.iter().any(|b| b.vmid == 101), "{list:#?}");
    assert!(list.unreachable.is_empty(), "{list:#?}");
    assert_eq!(pve.request_count("GET", &local), before.0 + 1, "{local}");
    assert_eq!(pve.request_count("GET", &pbs), before.1 + 1, "{pbs}");
    h.stop().await;
}
