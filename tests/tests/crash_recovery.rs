//! Crash recovery of journaled provisioning, end to end: the agent runs as a real process
//! against the simulated Proxmox VE, is killed (SIGKILL, via the agent's
//! `FELHOM_AGENT_FAILPOINT=journal:<n>` test hook) right after each of its journal writes in
//! turn, and is restarted; recovery must leave the host either with the guest fully provisioned
//! or with no trace of it — and never touch anything the operation did not create.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use felhom_proto::agent::v1 as pb;
use felhom_proto::agent::v1::agent_client::AgentClient;
use felhom_simhost::devhost::Devhost;
use felhom_simhost::pve::state::TaskState;

const GOLDEN: &str = "local:backup/vzdump-lxc-9000-2026_06_01-03_00_12.tar.zst";
const TARGET: u32 = 9100;

fn devhost_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_felhom-devhost"))
}

fn request(start: bool) -> pb::ProvisionGuestRequest {
    pb::ProvisionGuestRequest {
        vmid: TARGET,
        archive: GOLDEN.into(),
        storage: "local-lvm".into(),
        hostname: "crash-test".into(),
        memory_mib: 1024,
        cores: 2,
        rootfs_gib: 12,
        start,
    }
}

async fn client(host: &Devhost) -> AgentClient<tonic::transport::Channel> {
    AgentClient::new(
        felhom_agent::ctl::unix_channel(&host.info.agent_socket)
            .await
            .unwrap(),
    )
}

fn vmids(host: &Devhost) -> BTreeSet<u32> {
    host.pve()
        .state()
        .with(|w| w.guests.keys().copied().collect())
}

/// Polls `ListOperations{unfinished_only}` until it is empty (bounded).
async fn wait_recovered(host: &Devhost) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ops = client(host)
            .await
            .list_operations(pb::ListOperationsRequest {
                unfinished_only: true,
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .operations;
        if ops.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "operations still unfinished: {ops:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No guest locked, no task running.
fn assert_quiet(host: &Devhost, context: &str) {
    let state = host.pve().state();
    for vmid in vmids(host) {
        let g = state.guest(vmid).unwrap();
        assert_eq!(g.lock(), None, "{context}: guest {vmid} is locked");
    }
    for t in state.tasks() {
        assert!(
            !matches!(t.state, TaskState::Running),
            "{context}: task {} still running",
            t.upid
        );
    }
}

/// The target is either completely provisioned as requested, or gone. Returns whether it exists.
fn assert_completed_or_gone(
    host: &Devhost,
    req: &pb::ProvisionGuestRequest,
    context: &str,
) -> bool {
    let Some(g) = host.pve().state().guest(TARGET) else {
        return false;
    };
    let c = &g.config;
    assert_eq!(
        c.get("hostname").map(String::as_str),
        Some("crash-test"),
        "{context}: {c:?}"
    );
    assert_eq!(
        c.get("memory").map(String::as_str),
        Some("1024"),
        "{context}: {c:?}"
    );
    assert_eq!(
        c.get("cores").map(String::as_str),
        Some("2"),
        "{context}: {c:?}"
    );
    let rootfs = c.get("rootfs").cloned().unwrap_or_default();
    assert!(rootfs.contains("size=12G"), "{context}: rootfs {rootfs}");
    let running = matches!(g.status, felhom_simhost::pve::fixture::GuestStatus::Running);
    assert_eq!(running, req.start, "{context}: running state");
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_survives_a_crash_after_every_journal_write() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(true);
    let mut exercised = 0u32;
    let mut outcomes = Vec::new();
    let mut host: Option<Devhost> = None;
    for n in 1..=64u32 {
        let failpoint = format!("journal:{n}");
        let env = [("FELHOM_AGENT_FAILPOINT", failpoint.as_str())];
        let h = match host.as_mut() {
            None => {
                host = Some(
                    Devhost::start_with(&dir.path().join("dh"), &agent_options(&env))
                        .await
                        .unwrap(),
                );
                host.as_mut().unwrap()
            }
            Some(h) => {
                h.restart_agent(&env).await.unwrap();
                h
            }
        };
        let before = vmids(h);
        assert!(
            !before.contains(&TARGET),
            "leftover from the previous round"
        );
        let result = client(h).await.provision_guest(req.clone()).await;
        // The answer is sent only after the operation's last journal write, so an answer means
        // the failpoint was never reached.
        let crashed = result.is_err();
        if !crashed {
            assert!(assert_completed_or_gone(h, &req, "uncrashed run"));
            assert_quiet(h, "uncrashed run");
            break;
        }
        let status = result.unwrap_err();
        assert!(
            h.wait_agent_exit(Duration::from_secs(60))
                .await
                .unwrap()
                .is_some(),
            "write {n}: the call failed ({status:?}) but the agent did not die"
        );
        exercised += 1;
        h.restart_agent(&[]).await.unwrap();
        wait_recovered(h).await;
        let context = format!("crash after journal write {n}");
        let exists = assert_completed_or_gone(h, &req, &context);
        outcomes.push((n, exists));
        let mut after = vmids(h);
        after.remove(&TARGET);
        let mut expected = before.clone();
        expected.remove(&TARGET);
        assert_eq!(after, expected, "{context}: other guests changed");
        assert_quiet(h, &context);
        // Next round starts from the same host: remove a completed target by hand.
        if exists {
            h.pve().state().with(|w| w.guests.remove(&TARGET));
        }
        assert!(n < 64, "the provision never completed without a crash");
    }
    println!("outcomes (write, guest exists after recovery): {outcomes:?}");
    println!("crash points exercised: {exercised}");
    assert!(exercised >= 10, "too few crash points: {exercised}");
    host.unwrap().stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_resize_is_compensated_and_the_guest_removed() {
    let dir = tempfile::tempdir().unwrap();
    let host = Devhost::start_with(&dir.path().join("dh"), &agent_options(&[]))
        .await
        .unwrap();
    let before = vmids(&host);
    host.pve()
        .faults()
        .fail_next_tasks("resize", 1, Some("simulated resize failure"));
    let err = client(&host)
        .await
        .provision_guest(request(true))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("Step resize failed")
            && err.message().contains("simulated resize failure"),
        "{err:?}"
    );
    assert_eq!(vmids(&host), before, "the restored guest was not removed");
    let ops = client(&host)
        .await
        .list_operations(pb::ListOperationsRequest {
            unfinished_only: false,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .operations;
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].state, "compensated", "{ops:?}");
    assert_quiet(&host, "after compensation");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_never_destroys_a_guest_the_operation_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Devhost::start_with(&dir.path().join("dh"), &agent_options(&[]))
        .await
        .unwrap();
    // An interrupted provision naming guest 101 (which the fixture owns), with its restore step
    // in flight but nothing recorded as created.
    interrupt_a_restore(&mut host, 101, false);
    host.restart_agent(&[]).await.unwrap();
    assert_guest_101_survives_a_compensated_operation(&host).await;
    host.stop().await.unwrap();
}

/// The journal records a guest as created *before* the restore POST. A crash right there leaves
/// it recorded without a UPID; if the vmid is then someone else's, recovery must see that no
/// task of the agent created it and leave it alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_recorded_before_a_restore_post_that_never_went_out_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Devhost::start_with(&dir.path().join("dh"), &agent_options(&[]))
        .await
        .unwrap();
    interrupt_a_restore(&mut host, 101, true);
    // Restores of 101 that are not this step's: the agent's own token's from an hour before the
    // step, and another token of the same user's from just now.
    let now = felhom_simhost::pve::state::now();
    add_finished_task(
        &host,
        "vzrestore",
        101,
        "felhom-agent@pve!agent",
        now - 3600,
    );
    add_finished_task(&host, "vzrestore", 101, "felhom-agent@pve!other", now);
    host.restart_agent(&[]).await.unwrap();
    assert_guest_101_survives_a_compensated_operation(&host).await;
    host.stop().await.unwrap();
}

/// The restore POST went out and its UPID is journaled; the agent dies; the operator deletes
/// the leftover guest and Proxmox hands its vmid to a new guest of someone else's. Recovery
/// must not take that guest for the operation's: it lacks the restore's marker tag.
#[tokio::test(flavor = "multi_thread")]
async fn compensation_leaves_alone_a_guest_created_on_the_vmid_after_the_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut host: Option<Devhost> = None;
    for n in 1..=16u32 {
        let failpoint = format!("journal:{n}");
        let env = [("FELHOM_AGENT_FAILPOINT", failpoint.as_str())];
        let h = match host.as_mut() {
            None => {
                host = Some(
                    Devhost::start_with(&dir.path().join("dh"), &agent_options(&env))
                        .await
                        .unwrap(),
                );
                host.as_mut().unwrap()
            }
            Some(h) => {
                h.restart_agent(&env).await.unwrap();
                h
            }
        };
        let result = client(h).await.provision_guest(request(false)).await;
        assert!(
            result.is_err(),
            "write {n}: the provision finished before its restore UPID was journaled"
        );
        assert!(
            h.wait_agent_exit(Duration::from_secs(60))
                .await
                .unwrap()
                .is_some(),
            "write {n}: the agent did not die"
        );
        if !restore_upid_journaled(h) {
            h.restart_agent(&[]).await.unwrap();
            wait_recovered(h).await;
            h.pve().state().with(|w| w.guests.remove(&TARGET));
            continue;
        }
        wait_tasks_ended(h).await;
        let created = h
            .pve()
            .state()
            .guest(TARGET)
            .expect("the restore created the guest");
        assert!(
            created
                .config
                .get("tags")
                .is_some_and(|t| t.contains("felhom-op-")),
            "the restore POST tags the guest with its marker: {:?}",
            created.config
        );
        // The operator deletes the leftover; the next guest anyone creates gets the vmid.
        h.pve().state().with(|w| w.guests.remove(&TARGET));
        let mut config = std::collections::BTreeMap::new();
        config.insert("hostname".to_owned(), "someone-else".to_owned());
        config.insert(
            "rootfs".to_owned(),
            format!("local-lvm:vm-{TARGET}-disk-0,size=4G"),
        );
        h.pve()
            .state()
            .add_guest(
                TARGET,
                felhom_simhost::pve::fixture::GuestStatus::Running,
                config,
            )
            .unwrap();
        h.restart_agent(&[]).await.unwrap();
        wait_recovered(h).await;
        let g = h
            .pve()
            .state()
            .guest(TARGET)
            .expect("the new guest on the reused vmid must survive recovery");
        assert_eq!(g.name(), "someone-else");
        assert!(matches!(
            g.status,
            felhom_simhost::pve::fixture::GuestStatus::Running
        ));
        let ops = client(h)
            .await
            .list_operations(pb::ListOperationsRequest {
                unfinished_only: false,
                limit: 1,
            })
            .await
            .unwrap()
            .into_inner()
            .operations;
        assert_eq!(ops[0].state, "compensated", "{ops:?}");
        host.unwrap().stop().await.unwrap();
        return;
    }
    panic!("no crash point left the restore step with its UPID journaled");
}

/// Whether the (dead) agent's journal holds an unfinished restore step with its UPID.
fn restore_upid_journaled(host: &Devhost) -> bool {
    let dir = host.info.state_dir.join("agent-state");
    let found = {
        let db = felhom_agent::infra::state::StateDb::open(&dir).unwrap();
        db.journal().unfinished().unwrap().iter().any(|op| {
            op.steps
                .iter()
                .any(|s| s.name == "restore" && s.upid.is_some())
        })
    };
    give_state_back(&dir);
    found
}

/// Waits (bounded) until the simulated node runs no task.
async fn wait_tasks_ended(host: &Devhost) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while host
        .pve()
        .state()
        .tasks()
        .iter()
        .any(|t| matches!(t.state, TaskState::Running))
    {
        assert!(Instant::now() < deadline, "tasks still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Puts a finished task into the simulated node's task list, as if it had run earlier.
fn add_finished_task(host: &Devhost, kind: &str, vmid: u32, user: &str, starttime: i64) {
    host.pve().state().with(|w| {
        let (pid, pstart) = (
            0x0004_0000 + u32::try_from(w.tasks.len()).unwrap(),
            0x00C1_81AE,
        );
        let upid = format!(
            "UPID:{}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{vmid}:{user}:",
            w.node.name
        );
        w.tasks.push(felhom_simhost::pve::state::Task {
            upid,
            node: w.node.name.clone(),
            pid,
            pstart,
            starttime,
            kind: kind.to_owned(),
            id: vmid.to_string(),
            user: user.to_owned(),
            state: TaskState::Stopped {
                exitstatus: "OK".to_owned(),
                endtime: starttime + 30,
            },
            log: vec!["TASK OK".to_owned()],
        });
    });
}

/// A guest locked `create` with no listed task of the agent: a create is under way whose task
/// may not be listed yet, so compensation must not decide; the operation stays unfinished, and
/// until it is resolved no new operation may take that vmid.
#[tokio::test(flavor = "multi_thread")]
async fn an_undecided_guest_keeps_its_operation_open_and_its_vmid_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Devhost::start_with(&dir.path().join("dh"), &agent_options(&[]))
        .await
        .unwrap();
    interrupt_a_restore(&mut host, TARGET, true);
    let mut config = std::collections::BTreeMap::new();
    config.insert("lock".to_owned(), "create".to_owned());
    config.insert(
        "rootfs".to_owned(),
        format!("local-lvm:vm-{TARGET}-disk-0,size=1G"),
    );
    host.pve()
        .state()
        .add_guest(
            TARGET,
            felhom_simhost::pve::fixture::GuestStatus::Stopped,
            config,
        )
        .unwrap();
    host.restart_agent(&[]).await.unwrap();
    let ops = client(&host)
        .await
        .list_operations(pb::ListOperationsRequest {
            unfinished_only: true,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .operations;
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].state, "compensating", "{ops:?}");
    assert!(
        vmids(&host).contains(&TARGET),
        "the undecided guest was destroyed"
    );
    let mut req = request(false);
    req.vmid = TARGET;
    let err = client(&host).await.provision_guest(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .starts_with(&format!("Guest {TARGET} has an unfinished operation #")),
        "{err:?}"
    );
    host.stop().await.unwrap();
}

/// The other side of the same window: the restore POST went out (Proxmox runs the task) but the
/// agent died before journaling its UPID. Recovery finds the agent's own `vzrestore` task for
/// the vmid, waits for it, and removes the guest it created.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_whose_upid_was_never_journaled_is_found_by_its_task_and_removed() {
    use felhom_agent::infra::pve::{
        ApiToken, CertFingerprint, PveClient, PveClientConfig, RestoreRequest, TlsTrust, Vmid,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut host = Devhost::start_with(&dir.path().join("dh"), &agent_options(&[]))
        .await
        .unwrap();
    interrupt_a_restore(&mut host, TARGET, true);
    // The POST the dead agent made, with its token: Proxmox restores TARGET.
    let pve = PveClient::new(PveClientConfig {
        endpoint: host.info.pve_url.parse().unwrap(),
        node: host.pve().node(),
        token: ApiToken::parse(&host.info.pve_token).unwrap(),
        trust: TlsTrust::Pinned(CertFingerprint::parse(&host.info.pve_fingerprint).unwrap()),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap();
    pve.restore_lxc(&RestoreRequest {
        vmid: Vmid::new(TARGET).unwrap(),
        archive: GOLDEN.into(),
        storage: "local-lvm".into(),
        force: false,
        unique: true,
        start: false,
        hostname: None,
        memory_mib: None,
        cores: None,
        onboot: None,
        tags: Some(MARKER.into()),
        protection: None,
    })
    .await
    .unwrap();
    assert!(vmids(&host).contains(&TARGET));
    host.restart_agent(&[]).await.unwrap();
    wait_recovered(&host).await;
    assert!(
        !vmids(&host).contains(&TARGET),
        "the guest the agent's own restore created must be removed"
    );
    assert_quiet(&host, "after recovery");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_onto_an_existing_guest_is_refused_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let host = Devhost::start_with(&dir.path().join("dh"), &agent_options(&[]))
        .await
        .unwrap();
    let before = host.pve().state().guest(101).unwrap();
    let mut req = request(false);
    req.vmid = 101;
    let err = client(&host).await.provision_guest(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert_eq!(err.message(), "Guest 101 already exists");
    let after = host.pve().state().guest(101).unwrap();
    assert_eq!(after.config, before.config);
    assert_quiet(&host, "after the refusal");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_during_compensation_is_finished_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(true);
    let mut exercised = 0u32;
    let mut host: Option<Devhost> = None;
    for n in 1..=64u32 {
        let failpoint = format!("journal:{n}");
        let env = [("FELHOM_AGENT_FAILPOINT", failpoint.as_str())];
        let h = match host.as_mut() {
            None => {
                host = Some(
                    Devhost::start_with(&dir.path().join("dh"), &agent_options(&env))
                        .await
                        .unwrap(),
                );
                host.as_mut().unwrap()
            }
            Some(h) => {
                h.restart_agent(&env).await.unwrap();
                h
            }
        };
        // The resize fails, so the operation always ends compensated; the crash lands before,
        // during or after the compensation.
        h.pve().faults().clear();
        h.pve()
            .faults()
            .fail_next_tasks("resize", 1, Some("simulated resize failure"));
        let before = vmids(h);
        let status = client(h)
            .await
            .provision_guest(req.clone())
            .await
            .expect_err("the resize fault makes every provision fail");
        // The answer is sent only after the compensation's last journal write.
        let crashed = !status.message().contains("Step resize failed");
        let context = format!("crash after journal write {n}");
        if crashed {
            assert!(
                h.wait_agent_exit(Duration::from_secs(60))
                    .await
                    .unwrap()
                    .is_some(),
                "{context}: the call failed ({status:?}) but the agent did not die"
            );
            exercised += 1;
            h.restart_agent(&[]).await.unwrap();
            wait_recovered(h).await;
        }
        assert_eq!(vmids(h), before, "{context}: guest set changed");
        assert_quiet(h, &context);
        if !crashed {
            break;
        }
        assert!(n < 64, "the provision never ended without a crash");
    }
    println!("crash points exercised (compensation path): {exercised}");
    assert!(exercised >= 10, "too few crash points: {exercised}");
    host.unwrap().stop().await.unwrap();
}

/// Start-up recovery that waits on a long Proxmox task keeps extending systemd's start timeout
/// (so systemd does not kill and restart it in a loop), and SIGTERM ends it at once without
/// deciding anything: the interrupted step stays in flight for the next start.
#[tokio::test(flavor = "multi_thread")]
async fn recovery_waiting_on_a_long_task_extends_the_start_timeout_and_stops_on_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Killed right after journal write 4: the restore's UPID is recorded; the task never ends.
    let env = [("FELHOM_AGENT_FAILPOINT", "journal:4")];
    let mut host = Devhost::start_with(&dir.path().join("dh"), &agent_options(&env))
        .await
        .unwrap();
    host.pve().faults().hang_next_tasks("vzrestore", 1);
    let answer = client(&host).await.provision_guest(request(false)).await;
    assert!(
        answer.is_err(),
        "the agent answered instead of dying: {answer:?}"
    );
    let died = host.wait_agent_exit(Duration::from_secs(60)).await.unwrap();
    assert!(died.is_some(), "the agent did not die at the failpoint");

    // systemd's notify socket, which the agent (unprivileged under CI's root) can reach.
    let notify_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(notify_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = notify_dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    host.restart_agent_unwaited(&[("NOTIFY_SOCKET", path.to_str().unwrap())])
        .unwrap();
    let mut said = String::new();
    let mut buf = [0u8; 4096];
    while !said.contains("EXTEND_TIMEOUT_USEC=") {
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}); so far: {said:?}"));
        said.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    assert!(
        said.contains("STATUS=recovering interrupted operations\n")
            && said.contains("EXTEND_TIMEOUT_USEC=60000000\n"),
        "{said:?}"
    );

    host.terminate_agent().unwrap();
    let exited = host.wait_agent_exit(Duration::from_secs(60)).await.unwrap();
    assert!(
        exited.is_some_and(|s| s.success()),
        "the agent did not stop cleanly during recovery: {exited:?}"
    );
    notify.set_nonblocking(true).unwrap();
    while let Ok(n) = notify.recv(&mut buf) {
        said.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    assert!(
        !said.contains("READY=1"),
        "ready while recovering: {said:?}"
    );

    let db = felhom_agent::infra::state::StateDb::open(&host.info.state_dir.join("agent-state"))
        .unwrap();
    let ops = db.journal().unfinished().unwrap();
    assert_eq!(ops.len(), 1, "{ops:#?}");
    let restore = ops[0]
        .in_flight_step()
        .expect("the restore step is still in flight");
    assert_eq!(restore.name, "restore", "{ops:#?}");
    assert!(restore.upid.is_some(), "{ops:#?}");
    assert!(restore.error.is_none(), "{ops:#?}");
    drop(db);
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_without_a_vmid_takes_the_next_free_one_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let host = Devhost::start_with(&dir.path().join("dh"), &agent_options(&[]))
        .await
        .unwrap();
    let before = vmids(&host);
    let mut req = request(false);
    req.vmid = 0;
    let answer = client(&host)
        .await
        .provision_guest(req)
        .await
        .unwrap()
        .into_inner();
    assert!(!before.contains(&answer.vmid), "{answer:?}");
    assert!(
        answer.operation_id > 0 && !answer.job_id.is_empty(),
        "{answer:?}"
    );
    let g = host.pve().state().guest(answer.vmid).unwrap();
    assert_eq!(g.name(), "crash-test");
    assert_eq!(g.lock(), None);
    let entries = client(&host)
        .await
        .audit_tail(pb::AuditTailRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let uid = nix::unistd::geteuid().as_raw();
    let last = entries.last().unwrap();
    assert_eq!(last.actor, format!("operator:uid={uid}"));
    assert_eq!(last.action, "guest.provision");
    assert_eq!(last.target, format!("guest:{}", answer.vmid));
    host.stop().await.unwrap();
}

/// After recovery: the fixture's guest 101 is untouched and the operation ended compensated.
async fn assert_guest_101_survives_a_compensated_operation(host: &Devhost) {
    wait_recovered(host).await;
    let g = host
        .pve()
        .state()
        .guest(101)
        .expect("guest 101 must survive recovery");
    assert_eq!(g.name(), "felhom-home");
    let ops = client(host)
        .await
        .list_operations(pb::ListOperationsRequest {
            unfinished_only: false,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .operations;
    assert_eq!(ops[0].state, "compensated", "{ops:?}");
}

/// The marker tag [`interrupt_a_restore`] records for a guest (as a restore step would).
const MARKER: &str = "felhom-op-00112233aabbccdd";

/// Stops the agent and journals what a crash inside a provision's `restore` step leaves: the
/// step in flight with no UPID, and (when `recorded`) the guest recorded as created with
/// [`MARKER`], as it is just before the restore POST. The database stays the unprivileged
/// agent's.
fn interrupt_a_restore(host: &mut Devhost, vmid: u32, recorded: bool) {
    host.kill_agent().unwrap();
    let dir = host.info.state_dir.join("agent-state");
    {
        let db = felhom_agent::infra::state::StateDb::open(&dir).unwrap();
        let j = db.journal();
        let op = j
            .begin(felhom_agent::infra::state::NewOperation {
                kind: felhom_agent::capabilities::guests::provision::KIND_START,
                vmid: Some(vmid),
                idempotency_key: None,
            })
            .unwrap();
        let step = j.step_started(op, "restore", None).unwrap();
        if recorded {
            let guest = felhom_agent::infra::state::Resource::Guest {
                vmid,
                marker: Some(MARKER.to_owned()),
            };
            j.record_created(step, &guest).unwrap();
        }
    }
    give_state_back(&dir);
}

/// The state database files stay the unprivileged agent's after a test opened them as root.
fn give_state_back(dir: &Path) {
    if nix::unistd::geteuid().is_root() {
        let uid = felhom_simhost::devhost::UNPRIVILEGED_ID;
        for entry in std::fs::read_dir(dir).unwrap() {
            nix::unistd::chown(&entry.unwrap().path(), Some(uid.into()), Some(uid.into())).unwrap();
        }
    }
}

/// Devhost options running the agent from the devhost binary with `env` added.
fn agent_options(env: &[(&str, &str)]) -> felhom_simhost::devhost::DevhostOptions {
    felhom_simhost::devhost::DevhostOptions {
        agent_program: Some(devhost_exe().into()),
        agent_env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}
