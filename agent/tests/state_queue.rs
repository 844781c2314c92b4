//! Per-guest work queue over a real state database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use felhom_agent::infra::queue::{
    GuestQueue, JobOutcome, JobStatus, QueueError, QueueLimits, RESTARTED_BEFORE_FINISH,
    SHUTDOWN_BEFORE_START,
};
use felhom_agent::infra::state::{JobId, JobPhase, StateDb};
use serde_json::json;
use tokio::sync::{Barrier, oneshot};

/// Generous bound for anything that should happen "soon" on a loaded machine; only a hang
/// reaches it.
const PATIENCE: Duration = Duration::from_secs(60);

async fn queue(dir: &std::path::Path, limits: QueueLimits) -> (GuestQueue, StateDb) {
    let db = StateDb::open(dir).expect("state database opens in a temp dir");
    let (queue, abandoned) = GuestQueue::start(db.clone(), limits)
        .await
        .expect("queue starts over a fresh database");
    assert!(abandoned.is_empty());
    (queue, db)
}

/// Counts jobs running at once per guest and remembers the highest count seen.
#[derive(Default)]
struct Concurrency {
    current: Mutex<HashMap<u32, usize>>,
    max: Mutex<HashMap<u32, usize>>,
}

impl Concurrency {
    fn enter(&self, vmid: u32) {
        let mut current = self.current.lock().expect("counter lock is never poisoned");
        let now = current.entry(vmid).or_default();
        *now += 1;
        let mut max = self.max.lock().expect("counter lock is never poisoned");
        let seen = max.entry(vmid).or_default();
        *seen = (*seen).max(*now);
    }

    fn leave(&self, vmid: u32) {
        *self
            .current
            .lock()
            .expect("counter lock is never poisoned")
            .get_mut(&vmid)
            .expect("leave follows enter") -= 1;
    }

    fn max(&self, vmid: u32) -> usize {
        self.max
            .lock()
            .expect("counter lock is never poisoned")
            .get(&vmid)
            .copied()
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_on_one_guest_never_overlap_and_run_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _db) = queue(dir.path(), QueueLimits::default()).await;
    let concurrency = Arc::new(Concurrency::default());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for n in 0..6 {
        let (concurrency, order) = (concurrency.clone(), order.clone());
        let handle = queue
            .submit(9001, "config", move |ctx| async move {
                concurrency.enter(ctx.vmid());
                order.lock().unwrap().push(n);
                // Give any (wrongly) parallel job every chance to start meanwhile.
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                concurrency.leave(ctx.vmid());
                Ok(None)
            })
            .await
            .unwrap();
        handles.push(handle);
    }
    for handle in handles {
        let outcome = tokio::time::timeout(PATIENCE, handle.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome, JobOutcome::Done(None));
    }
    assert_eq!(
        concurrency.max(9001),
        1,
        "two jobs of one guest ran at once"
    );
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_on_two_guests_run_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _db) = queue(dir.path(), QueueLimits::default()).await;
    // Each job waits at the barrier until the other guest's job has arrived too; if the queue
    // ran them one after the other, the first would wait forever (and time out).
    let barrier = Arc::new(Barrier::new(2));
    let mut handles = Vec::new();
    for vmid in [9001, 9002] {
        let barrier = barrier.clone();
        let handle = queue
            .submit(vmid, "start", move |_ctx| async move {
                tokio::time::timeout(PATIENCE, barrier.wait())
                    .await
                    .map_err(|_| "the other guest's job never ran alongside this one")?;
                Ok(Some(json!({"vmid": vmid})))
            })
            .await
            .unwrap();
        handles.push(handle);
    }
    for (vmid, handle) in [9001, 9002].into_iter().zip(handles) {
        let outcome = tokio::time::timeout(PATIENCE * 2, handle.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome, JobOutcome::Done(Some(json!({"vmid": vmid}))));
    }
}

#[tokio::test]
async fn submitting_beyond_the_per_guest_limit_fails_with_queue_full() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, db) = queue(
        dir.path(),
        QueueLimits {
            per_guest: 2,
            total: 10,
        },
    )
    .await;
    let (release, gate) = oneshot::channel::<()>();
    let blocker = queue
        .submit(9001, "backup", move |_ctx| async move {
            gate.await.map_err(|_| "gate dropped")?;
            Ok(None)
        })
        .await
        .unwrap();
    let queued = queue
        .submit(9001, "start", |_ctx| async { Ok(None) })
        .await
        .unwrap();

    let err = queue
        .submit(9001, "stop", |_ctx| async { Ok(None) })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::GuestFull {
                vmid: 9001,
                limit: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Queue full: guest 9001 already has 2 jobs queued or running"
    );
    assert_eq!(
        db.jobs().list_for_vmid(9001, 10).unwrap().len(),
        2,
        "the refused job is not recorded"
    );

    // Another guest is not affected.
    let other = queue
        .submit(9002, "start", |_ctx| async { Ok(None) })
        .await
        .unwrap();
    release.send(()).unwrap();
    for handle in [blocker, queued, other] {
        tokio::time::timeout(PATIENCE, handle.wait())
            .await
            .unwrap()
            .unwrap();
    }
    // Once the guest's jobs finished, it accepts work again.
    let again = queue
        .submit(9001, "stop", |_ctx| async { Ok(None) })
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, again.wait())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn submitting_beyond_the_total_limit_fails_with_queue_full() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _db) = queue(
        dir.path(),
        QueueLimits {
            per_guest: 5,
            total: 2,
        },
    )
    .await;
    let (release, gate) = oneshot::channel::<()>();
    let first = queue
        .submit(9001, "backup", move |_ctx| async move {
            gate.await.map_err(|_| "gate dropped")?;
            Ok(None)
        })
        .await
        .unwrap();
    let second = queue
        .submit(9002, "start", |_ctx| async { Ok(None) })
        .await
        .unwrap();
    let err = queue
        .submit(9003, "start", |_ctx| async { Ok(None) })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Queue full: 2 jobs are queued or running across all guests"
    );
    release.send(()).unwrap();
    for handle in [first, second] {
        tokio::time::timeout(PATIENCE, handle.wait())
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn failed_job_is_recorded_with_its_error_text() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, db) = queue(dir.path(), QueueLimits::default()).await;
    let handle = queue
        .submit(9001, "resize", |_ctx| async {
            Err(std::io::Error::other("command 'lvextend' failed: exit code 5").into())
        })
        .await
        .unwrap();
    let id = handle.id().clone();
    let outcome = tokio::time::timeout(PATIENCE, handle.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outcome,
        JobOutcome::Failed("command 'lvextend' failed: exit code 5".into())
    );
    let record = db.jobs().get(&id).unwrap().unwrap();
    assert_eq!(record.phase, JobPhase::Failed);
    assert_eq!(
        record.error.as_deref(),
        Some("command 'lvextend' failed: exit code 5")
    );
    assert_eq!(record.kind, "resize");
    assert!(record.started_at.is_some() && record.finished_at.is_some());
}

#[tokio::test]
async fn panicking_job_is_recorded_as_failed_and_the_guest_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _db) = queue(dir.path(), QueueLimits::default()).await;
    let panics = queue
        .submit(9001, "start", |_ctx| async {
            panic!("bug in a task (expected by this test)")
        })
        .await
        .unwrap();
    let next = queue
        .submit(9001, "start", |_ctx| async { Ok(Some(json!("ok"))) })
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(PATIENCE, panics.wait())
            .await
            .unwrap()
            .unwrap(),
        JobOutcome::Failed("Job panicked".into())
    );
    assert_eq!(
        tokio::time::timeout(PATIENCE, next.wait())
            .await
            .unwrap()
            .unwrap(),
        JobOutcome::Done(Some(json!("ok")))
    );
}

#[tokio::test]
async fn job_phase_can_be_polled_by_id_while_it_runs_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _db) = queue(dir.path(), QueueLimits::default()).await;
    let (started_tx, started) = oneshot::channel::<()>();
    let (release, gate) = oneshot::channel::<()>();
    let handle = queue
        .submit(9001, "snapshot", move |_ctx| async move {
            started_tx.send(()).map_err(|_| "test went away")?;
            gate.await.map_err(|_| "gate dropped")?;
            Ok(Some(json!({"snapshot": "pre-upgrade"})))
        })
        .await
        .unwrap();
    let id = handle.id().clone();
    tokio::time::timeout(PATIENCE, started)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(queue.record(&id).await.unwrap().phase, JobPhase::Running);
    assert_eq!(handle.status(), JobStatus::Running);
    release.send(()).unwrap();
    let by_id = tokio::time::timeout(PATIENCE, queue.wait(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        by_id,
        JobOutcome::Done(Some(json!({"snapshot": "pre-upgrade"})))
    );
    // After it finished, waiting by id answers from the history.
    assert_eq!(queue.wait(&id).await.unwrap(), by_id);
    let record = queue.record(&id).await.unwrap();
    assert_eq!(record.phase, JobPhase::Done);
    assert_eq!(record.result, Some(json!({"snapshot": "pre-upgrade"})));
    drop(handle);
}

#[tokio::test]
async fn unknown_job_id_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _db) = queue(dir.path(), QueueLimits::default()).await;
    let id = JobId::generate().unwrap();
    let err = queue.wait(&id).await.unwrap_err();
    assert_eq!(err.to_string(), format!("Job {id} does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_queued_jobs_and_lets_the_running_one_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, db) = queue(dir.path(), QueueLimits::default()).await;
    let (started_tx, started) = oneshot::channel::<()>();
    let saw_shutdown = Arc::new(AtomicUsize::new(0));
    let running = {
        let saw_shutdown = saw_shutdown.clone();
        queue
            .submit(9001, "backup", move |ctx| async move {
                started_tx.send(()).map_err(|_| "test went away")?;
                // A long task that stops at its next safe point when asked to.
                tokio::time::timeout(PATIENCE, ctx.shutdown_signal())
                    .await
                    .map_err(|_| "shutdown was never signalled")?;
                saw_shutdown.fetch_add(usize::from(ctx.shutdown_requested()), Ordering::SeqCst);
                Ok(Some(json!("stopped at a safe point")))
            })
            .await
            .unwrap()
    };
    let ran_anyway = Arc::new(AtomicUsize::new(0));
    let mut queued = Vec::new();
    for _ in 0..2 {
        let ran_anyway = ran_anyway.clone();
        queued.push(
            queue
                .submit(9001, "start", move |_ctx| async move {
                    ran_anyway.fetch_add(1, Ordering::SeqCst);
                    Ok(None)
                })
                .await
                .unwrap(),
        );
    }
    tokio::time::timeout(PATIENCE, started)
        .await
        .unwrap()
        .unwrap();

    let report = tokio::time::timeout(PATIENCE, queue.shutdown())
        .await
        .unwrap();

    let mut expected_dropped: Vec<JobId> = queued.iter().map(|h| h.id().clone()).collect();
    expected_dropped.sort();
    assert_eq!(report.never_started, expected_dropped);
    assert_eq!(report.were_running, [running.id().clone()]);
    assert_eq!(saw_shutdown.load(Ordering::SeqCst), 1);
    assert_eq!(
        ran_anyway.load(Ordering::SeqCst),
        0,
        "a queued job ran after shutdown"
    );
    assert_eq!(
        running.wait().await.unwrap(),
        JobOutcome::Done(Some(json!("stopped at a safe point")))
    );
    for handle in queued {
        let id = handle.id().clone();
        assert_eq!(
            handle.wait().await.unwrap(),
            JobOutcome::Failed(SHUTDOWN_BEFORE_START.into())
        );
        let record = db.jobs().get(&id).unwrap().unwrap();
        assert_eq!(
            (record.phase, record.error.as_deref()),
            (JobPhase::Failed, Some(SHUTDOWN_BEFORE_START))
        );
        assert_eq!(record.started_at, None);
    }
    let err = queue
        .submit(9001, "start", |_ctx| async { Ok(None) })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "The work queue is shutting down and accepts no new jobs"
    );
}

#[tokio::test]
async fn jobs_left_unfinished_by_a_dead_process_are_failed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let stale = JobId::generate().unwrap();
    {
        let db = StateDb::open(dir.path()).unwrap();
        db.jobs().insert_queued(&stale, 9001, "restore").unwrap();
        db.jobs().mark_running(&stale).unwrap();
        std::mem::forget(db); // the process died mid-job
    }
    let db = StateDb::open(dir.path()).unwrap();
    let (queue, abandoned) = GuestQueue::start(db, QueueLimits::default()).await.unwrap();
    assert_eq!(abandoned, std::slice::from_ref(&stale));
    assert_eq!(
        queue.wait(&stale).await.unwrap(),
        JobOutcome::Failed(RESTARTED_BEFORE_FINISH.into())
    );
}

#[tokio::test]
async fn abandoned_submission_still_runs_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, db) = queue(
        dir.path(),
        QueueLimits {
            per_guest: 1,
            total: 1,
        },
    )
    .await;
    let (ran_tx, ran) = oneshot::channel::<()>();
    // A zero timeout polls the submission once and then drops it, like a client that hangs up
    // while its request is being queued.
    let _abandoned = tokio::time::timeout(
        Duration::ZERO,
        queue.submit(9001, "start", move |_ctx| async move {
            ran_tx.send(()).map_err(|_| "test went away")?;
            Ok(None)
        }),
    )
    .await;
    tokio::time::timeout(PATIENCE, ran).await.unwrap().unwrap();

    // The slot comes free once that job has finished; poll for it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let next = loop {
        match queue.submit(9001, "stop", |_ctx| async { Ok(None) }).await {
            Ok(handle) => break handle,
            Err(QueueError::Full { .. } | QueueError::GuestFull { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("slot never came free: {err}"),
        }
    };
    tokio::time::timeout(PATIENCE, next.wait())
        .await
        .unwrap()
        .unwrap();
    let phases: Vec<JobPhase> = db
        .jobs()
        .list_for_vmid(9001, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.phase)
        .collect();
    assert_eq!(phases, [JobPhase::Done, JobPhase::Done]);
}
