//! Per-guest work queue: all mutations of one guest run one at a time, in submission order;
//! different guests run in parallel.
//!
//! [`GuestQueue::submit`] takes a guest id, a job kind and an async task, records the job as
//! `queued` in the state database's job history and returns a [`JobHandle`] at once. The caller
//! may await [`JobHandle::wait`], read the live [`JobHandle::status`], or later — knowing only
//! the [`JobId`] — call [`GuestQueue::wait`] or [`GuestQueue::record`]. Each guest has a lane
//! (a FIFO and at most one worker task); the worker records `running`, runs the task on its own
//! tokio task (so a panic becomes a failed job, not a dead lane) and records `done` with the
//! task's JSON result or `failed` with its error chain.
//!
//! Bounds: [`QueueLimits`] caps the jobs queued or running per guest and in total; a submission
//! beyond either fails with [`QueueError::GuestFull`] / [`QueueError::Full`] and records nothing.
//!
//! Shutdown: [`GuestQueue::shutdown`] stops accepting, marks every job that had not started
//! `failed` ("Agent shut down before the job started"), cancels the [`JobContext`]'s token so
//! running tasks can stop at their next safe point, waits for the running tasks to finish and
//! reports both sets. Jobs a crashed process left `queued`/`running` in the history are marked
//! failed by [`GuestQueue::start`].
//!
//! Limits: the queue orders work, it does not journal it — a multi-step task records its own
//! steps in the operation journal. Task errors are stored and shown to operators verbatim, so
//! tasks must not put secrets in them.

use crate::core::error_chain;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::infra::state::{
    InvalidField, JobId, JobPhase, JobRecord, JobsError, StateDb, check_text, check_vmid,
};

/// Error text of jobs dropped from the queue by [`GuestQueue::shutdown`].
pub const SHUTDOWN_BEFORE_START: &str = "Agent shut down before the job started";
/// Error text of jobs a previous agent process left unfinished.
pub const RESTARTED_BEFORE_FINISH: &str = "Agent restarted before the job finished";
const MAX_KIND: usize = 64;

/// What a job's task returns: an optional JSON result, or an error whose chain is recorded.
pub type JobResult = Result<Option<serde_json::Value>, Box<dyn std::error::Error + Send + Sync>>;

type BoxedTask =
    Box<dyn FnOnce(JobContext) -> Pin<Box<dyn Future<Output = JobResult> + Send>> + Send>;

/// Queue failure.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    InvalidField(#[from] InvalidField),
    #[error("Queue full: guest {vmid} already has {limit} jobs queued or running")]
    GuestFull { vmid: u32, limit: usize },
    #[error("Queue full: {limit} jobs are queued or running across all guests")]
    Full { limit: usize },
    #[error("The work queue is shutting down and accepts no new jobs")]
    ShuttingDown,
    #[error("Job {0} does not exist")]
    UnknownJob(JobId),
    #[error("Job {0} ended without reporting an outcome")]
    Lost(JobId),
    #[error("Could not update the job history")]
    History(#[from] JobsError),
}

/// Caps on queued-or-running jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Per guest (the running job counts).
    pub per_guest: usize,
    /// Across all guests.
    pub total: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            per_guest: 16,
            total: 256,
        }
    }
}

/// Live status of a job, as its [`JobHandle`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    Queued,
    Running,
    Finished(JobOutcome),
}

impl JobStatus {
    pub fn phase(&self) -> JobPhase {
        match self {
            Self::Queued => JobPhase::Queued,
            Self::Running => JobPhase::Running,
            Self::Finished(JobOutcome::Done(_)) => JobPhase::Done,
            Self::Finished(JobOutcome::Failed(_)) => JobPhase::Failed,
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The task succeeded, with its result.
    Done(Option<serde_json::Value>),
    /// The task failed (or never ran); the recorded error text.
    Failed(String),
}

/// What a running task gets: who it is, and the shutdown signal it should observe.
#[derive(Debug, Clone)]
pub struct JobContext {
    id: JobId,
    vmid: u32,
    shutdown: CancellationToken,
}

impl JobContext {
    pub fn id(&self) -> &JobId {
        &self.id
    }

    pub fn vmid(&self) -> u32 {
        self.vmid
    }

    /// Whether the agent is shutting down; a task should stop at its next journal-safe point.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves when the agent starts shutting down (for `tokio::select!`).
    pub async fn shutdown_signal(&self) {
        self.shutdown.cancelled().await;
    }

    /// The shutdown signal as a token, for waits that take one (e.g. waiting on a Proxmox task).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// A submitted job.
#[derive(Debug)]
pub struct JobHandle {
    id: JobId,
    vmid: u32,
    status: watch::Receiver<JobStatus>,
    queue: GuestQueue,
}

impl JobHandle {
    pub fn id(&self) -> &JobId {
        &self.id
    }

    pub fn vmid(&self) -> u32 {
        self.vmid
    }

    /// The job's status right now.
    pub fn status(&self) -> JobStatus {
        self.status.borrow().clone()
    }

    /// Waits until the job has finished.
    pub async fn wait(mut self) -> Result<JobOutcome, QueueError> {
        wait_on(&mut self.status, &self.id, &self.queue).await
    }
}

/// What [`GuestQueue::shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs that were still queued; they never ran and are recorded as failed.
    pub never_started: Vec<JobId>,
    /// Jobs that were running when shutdown began; shutdown waited for them to finish.
    pub were_running: Vec<JobId>,
}

/// The per-guest work queue; clones share one queue.
#[derive(Clone)]
pub struct GuestQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GuestQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestQueue")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: StateDb,
    limits: QueueLimits,
    shutdown: CancellationToken,
    workers: TaskTracker,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    closed: bool,
    /// Jobs reserved, queued or running, all guests.
    total: usize,
    lanes: HashMap<u32, Lane>,
    /// Status senders of unfinished jobs; removed once the outcome is sent.
    watchers: HashMap<JobId, watch::Sender<JobStatus>>,
}

#[derive(Default)]
struct Lane {
    /// Jobs reserved, queued or running for this guest.
    count: usize,
    pending: VecDeque<PendingJob>,
    running: Option<JobId>,
    worker_active: bool,
}

struct PendingJob {
    id: JobId,
    task: BoxedTask,
}

impl GuestQueue {
    /// Creates the queue over `db`, first marking failed every job a previous process left
    /// queued or running. Returns the queue and those jobs' ids.
    pub async fn start(db: StateDb, limits: QueueLimits) -> Result<(Self, Vec<JobId>), QueueError> {
        if limits.per_guest == 0 || limits.total == 0 {
            return Err(InvalidField {
                field: "queue limits",
                reason: "per-guest and total limits must be at least 1".into(),
            }
            .into());
        }
        let abandoned = db
            .run(|db| db.jobs().fail_unfinished(RESTARTED_BEFORE_FINISH))
            .await?;
        let queue = Self {
            inner: Arc::new(Inner {
                db,
                limits,
                shutdown: CancellationToken::new(),
                workers: TaskTracker::new(),
                state: Mutex::new(QueueState::default()),
            }),
        };
        Ok((queue, abandoned))
    }

    /// Queues `task` as a `kind` job on guest `vmid` and returns its handle at once.
    ///
    /// Cancel-safe: once the slot is reserved, recording and enqueueing run on their own task,
    /// so a caller that gives up waiting cannot leak the reservation or leave a history row
    /// that nothing will finish (the job then runs without anyone holding its handle).
    pub async fn submit<F, Fut>(
        &self,
        vmid: u32,
        kind: &str,
        task: F,
    ) -> Result<JobHandle, QueueError>
    where
        F: FnOnce(JobContext) -> Fut + Send + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        check_vmid(vmid)?;
        check_text("job kind", kind, MAX_KIND)?;
        let id = JobId::generate()?;
        self.reserve(vmid)?;
        let task: BoxedTask = Box::new(move |ctx| Box::pin(task(ctx)));
        let queue = self.clone();
        let kind = kind.to_owned();
        match tokio::spawn(async move { queue.enqueue(id, vmid, kind, task).await }).await {
            Ok(result) => result,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // The runtime is shutting down underneath us.
                Err(_cancelled) => Err(QueueError::ShuttingDown),
            },
        }
    }

    /// Second half of [`Self::submit`], after the slot was reserved: record, then enqueue.
    async fn enqueue(
        &self,
        id: JobId,
        vmid: u32,
        kind: String,
        task: BoxedTask,
    ) -> Result<JobHandle, QueueError> {
        let record = {
            let id = id.clone();
            self.inner
                .db
                .run(move |db| db.jobs().insert_queued(&id, vmid, &kind))
                .await
        };
        if let Err(err) = record {
            self.release(vmid, 1);
            return Err(err.into());
        }
        let (sender, status) = watch::channel(JobStatus::Queued);
        // `None`: the queue closed while the job was being recorded.
        let spawn_worker = {
            let mut state = self.lock();
            if state.closed {
                None
            } else {
                state.watchers.insert(id.clone(), sender);
                let lane = state.lanes.entry(vmid).or_default();
                lane.pending.push_back(PendingJob {
                    id: id.clone(),
                    task,
                });
                Some(!std::mem::replace(&mut lane.worker_active, true))
            }
        };
        let Some(spawn_worker) = spawn_worker else {
            self.release(vmid, 1);
            let id = id.clone();
            self.inner
                .db
                .run(move |db| db.jobs().mark_failed(&id, SHUTDOWN_BEFORE_START))
                .await?;
            return Err(QueueError::ShuttingDown);
        };
        if spawn_worker {
            self.inner.workers.spawn(run_lane(self.clone(), vmid));
        }
        Ok(JobHandle {
            id,
            vmid,
            status,
            queue: self.clone(),
        })
    }

    /// The job's history record (its phase, error text and result).
    pub async fn record(&self, id: &JobId) -> Result<JobRecord, QueueError> {
        let lookup = id.clone();
        let record = self.inner.db.run(move |db| db.jobs().get(&lookup)).await?;
        record.ok_or_else(|| QueueError::UnknownJob(id.clone()))
    }

    /// Waits until job `id` has finished; for a job that finished earlier (or in a previous
    /// process) returns its recorded outcome.
    pub async fn wait(&self, id: &JobId) -> Result<JobOutcome, QueueError> {
        let receiver = self.lock().watchers.get(id).map(watch::Sender::subscribe);
        match receiver {
            Some(mut receiver) => wait_on(&mut receiver, id, self).await,
            None => recorded_outcome(self, id).await,
        }
    }

    /// Stops accepting jobs, fails the ones that had not started, signals running tasks to stop
    /// at a safe point and waits for them. Safe to call more than once.
    pub async fn shutdown(&self) -> ShutdownReport {
        let (dropped, were_running) = {
            let mut state = self.lock();
            state.closed = true;
            let mut dropped = Vec::new();
            let mut were_running = Vec::new();
            for lane in state.lanes.values_mut() {
                lane.count -= lane.pending.len();
                dropped.extend(lane.pending.drain(..).map(|job| job.id));
                were_running.extend(lane.running.clone());
            }
            state.total -= dropped.len();
            state
                .lanes
                .retain(|_, lane| lane.count > 0 || lane.worker_active);
            let dropped: Vec<_> = dropped
                .into_iter()
                .map(|id| {
                    let sender = state.watchers.remove(&id);
                    (id, sender)
                })
                .collect();
            (dropped, were_running)
        };
        self.inner.shutdown.cancel();
        let mut never_started = Vec::with_capacity(dropped.len());
        for (id, sender) in dropped {
            let record = id.clone();
            if let Err(err) = self
                .inner
                .db
                .run(move |db| db.jobs().mark_failed(&record, SHUTDOWN_BEFORE_START))
                .await
            {
                tracing::error!(job = %id, error = %error_chain(&err), "could not record a dropped job");
            }
            if let Some(sender) = sender {
                sender.send_replace(JobStatus::Finished(JobOutcome::Failed(
                    SHUTDOWN_BEFORE_START.into(),
                )));
            }
            never_started.push(id);
        }
        self.inner.workers.close();
        self.inner.workers.wait().await;
        let mut were_running = were_running;
        never_started.sort();
        were_running.sort();
        ShutdownReport {
            never_started,
            were_running,
        }
    }

    fn reserve(&self, vmid: u32) -> Result<(), QueueError> {
        let limits = self.inner.limits;
        let mut state = self.lock();
        if state.closed {
            return Err(QueueError::ShuttingDown);
        }
        if state.total >= limits.total {
            return Err(QueueError::Full {
                limit: limits.total,
            });
        }
        let lane = state.lanes.entry(vmid).or_default();
        if lane.count >= limits.per_guest {
            return Err(QueueError::GuestFull {
                vmid,
                limit: limits.per_guest,
            });
        }
        lane.count += 1;
        state.total += 1;
        Ok(())
    }

    fn release(&self, vmid: u32, jobs: usize) {
        let mut state = self.lock();
        state.total -= jobs;
        if let Some(lane) = state.lanes.get_mut(&vmid) {
            lane.count -= jobs;
            if lane.count == 0 && !lane.worker_active {
                state.lanes.remove(&vmid);
            }
        }
    }

    /// The queue state is only ever changed in short, non-panicking critical sections, so a
    /// poisoned lock still guards consistent data.
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Worker of one guest's lane: runs its jobs one after another until the lane is empty.
async fn run_lane(queue: GuestQueue, vmid: u32) {
    loop {
        let job = {
            let mut state = queue.lock();
            let Some(lane) = state.lanes.get_mut(&vmid) else {
                // Only the worker removes an active lane, so this cannot happen; stop cleanly.
                return;
            };
            match lane.pending.pop_front() {
                Some(job) => {
                    lane.running = Some(job.id.clone());
                    job
                }
                None => {
                    lane.worker_active = false;
                    lane.running = None;
                    if lane.count == 0 {
                        state.lanes.remove(&vmid);
                    }
                    return;
                }
            }
        };
        run_job(&queue, vmid, job).await;
        {
            let mut state = queue.lock();
            if let Some(lane) = state.lanes.get_mut(&vmid) {
                lane.running = None;
            }
        }
        queue.release(vmid, 1);
    }
}

async fn run_job(queue: &GuestQueue, vmid: u32, job: PendingJob) {
    let PendingJob { id, task } = job;
    let db = &queue.inner.db;
    let started = {
        let id = id.clone();
        db.run(move |db| db.jobs().mark_running(&id)).await
    };
    let outcome = match started {
        Err(err) => JobOutcome::Failed(format!(
            "Could not record the job start: {}",
            error_chain(&err)
        )),
        Ok(()) => {
            set_status(queue, &id, JobStatus::Running);
            let ctx = JobContext {
                id: id.clone(),
                vmid,
                shutdown: queue.inner.shutdown.clone(),
            };
            match tokio::spawn(task(ctx)).await {
                Ok(Ok(result)) => JobOutcome::Done(result),
                Ok(Err(err)) => JobOutcome::Failed(error_chain(err.as_ref())),
                Err(join) if join.is_panic() => JobOutcome::Failed("Job panicked".into()),
                Err(_) => JobOutcome::Failed("Job was cancelled".into()),
            }
        }
    };
    let record = {
        let (id, outcome) = (id.clone(), outcome.clone());
        db.run(move |db| match &outcome {
            JobOutcome::Done(result) => db.jobs().mark_done(&id, result.as_ref()),
            JobOutcome::Failed(error) => db.jobs().mark_failed(&id, error),
        })
        .await
    };
    if let Err(err) = record {
        tracing::error!(job = %id, vmid, error = %error_chain(&err), "could not record a job's outcome");
    }
    let sender = queue.lock().watchers.remove(&id);
    if let Some(sender) = sender {
        sender.send_replace(JobStatus::Finished(outcome));
    }
}

fn set_status(queue: &GuestQueue, id: &JobId, status: JobStatus) {
    if let Some(sender) = queue.lock().watchers.get(id) {
        sender.send_replace(status);
    }
}

async fn wait_on(
    receiver: &mut watch::Receiver<JobStatus>,
    id: &JobId,
    queue: &GuestQueue,
) -> Result<JobOutcome, QueueError> {
    let finished = receiver
        .wait_for(|status| matches!(status, JobStatus::Finished(_)))
        .await
        .map(|status| status.clone());
    match finished {
        Ok(JobStatus::Finished(outcome)) => Ok(outcome),
        // The sender went away without a final status (its worker died); the history is the
        // last word.
        Ok(JobStatus::Queued | JobStatus::Running) | Err(_) => recorded_outcome(queue, id).await,
    }
}

async fn recorded_outcome(queue: &GuestQueue, id: &JobId) -> Result<JobOutcome, QueueError> {
    let record = queue.record(id).await?;
    match record.phase {
        JobPhase::Done => Ok(JobOutcome::Done(record.result)),
        JobPhase::Failed => Ok(JobOutcome::Failed(record.error.unwrap_or_default())),
        JobPhase::Queued | JobPhase::Running => Err(QueueError::Lost(id.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Restore failed")]
    struct Outer(#[source] std::io::Error);

    #[tokio::test]
    async fn a_failed_job_records_its_whole_error_chain() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let (queue, _) = GuestQueue::start(db, QueueLimits::default()).await.unwrap();
        let handle = queue
            .submit(101, "restore", |_ctx| async {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(Outer(std::io::Error::other("disk full")));
                Err(err)
            })
            .await
            .unwrap();
        match handle.wait().await.unwrap() {
            JobOutcome::Failed(text) => assert_eq!(text, "Restore failed: disk full"),
            JobOutcome::Done(v) => panic!("job succeeded: {v:?}"),
        }
    }

    #[test]
    fn status_maps_to_history_phase() {
        assert_eq!(JobStatus::Queued.phase(), JobPhase::Queued);
        assert_eq!(
            JobStatus::Finished(JobOutcome::Failed("x".into())).phase(),
            JobPhase::Failed
        );
    }

    #[tokio::test]
    async fn zero_limits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let err = GuestQueue::start(
            db,
            QueueLimits {
                per_guest: 0,
                total: 4,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid queue limits: per-guest and total limits must be at least 1"
        );
    }
}
