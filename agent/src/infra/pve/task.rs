//! Waiting for Proxmox VE tasks.
//!
//! Every mutating PVE call starts a task; its HTTP answer says nothing about success. The
//! shared waiter ([`crate::infra::proxmox::task`]: poll schedule, deadline, cancellation,
//! transient retries, `OK` / `WARNINGS: n` classification) reads
//! `GET /nodes/{upid node}/tasks/{upid}/status` until `status` is `stopped`. What is PVE's own:
//! the log counts lines from 0, and a failure also carries a parsed permission error when the
//! task failed a privilege check (in its exit status or, failing that, its log).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{Params, PveClient};
use super::error::{PermissionDenied, PveError, TaskFailure};
use super::token::Pve;
use super::types::{TaskLogLine, TaskStatus};
use super::upid::Upid;
use super::worker::WorkerExit;
use crate::infra::proxmox::task::{self, Tasks, task_path};
use crate::infra::proxmox::{TaskOutcome, WaitOptions};

impl Tasks for Pve {
    type Upid = Upid;
    type Status = TaskStatus;
    type LogLine = TaskLogLine;
    const FIRST_LOG_LINE: usize = 0;

    fn node(upid: &Upid) -> &str {
        upid.node()
    }
    fn text(upid: &Upid) -> &str {
        upid.as_str()
    }
    fn stopped(status: TaskStatus) -> Option<String> {
        (status.status == "stopped").then(|| status.exitstatus.unwrap_or_default())
    }
    fn line_text(line: TaskLogLine) -> String {
        line.t
    }
    fn failed(upid: &Upid, exitstatus: String, log_tail: Vec<String>) -> PveError {
        // A privilege check the task failed at run time: in the exit status, else the log.
        let permission = PermissionDenied::parse(&exitstatus).or_else(|| {
            log_tail
                .iter()
                .rev()
                .find_map(|l| PermissionDenied::parse(l))
        });
        PveError::TaskFailed(Box::new(TaskFailure {
            upid: upid.clone(),
            exitstatus,
            permission,
            log_tail,
        }))
    }
    fn deadline(upid: &Upid, deadline: Duration) -> PveError {
        PveError::TaskDeadline {
            upid: upid.clone(),
            deadline,
        }
    }
    fn cancelled(upid: &Upid) -> PveError {
        PveError::Cancelled { upid: upid.clone() }
    }
}

impl PveClient {
    /// One status read of a task.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, PveError> {
        self.get(&task_path::<Pve>(upid, "status"), vec![]).await
    }

    /// A page of a task's log.
    pub async fn task_log(
        &self,
        upid: &Upid,
        start: usize,
        limit: usize,
    ) -> Result<Vec<TaskLogLine>, PveError> {
        let q: Params = vec![("start", start.to_string()), ("limit", limit.to_string())];
        self.get(&task_path::<Pve>(upid, "log"), q).await
    }

    /// The last `lines` lines of a task's log, oldest first.
    pub async fn task_log_tail(&self, upid: &Upid, lines: usize) -> Result<Vec<String>, PveError> {
        task::log_tail::<Pve>(&self.core, upid, lines).await
    }

    /// Waits for a task to stop; success only on `OK` (or `WARNINGS: n`, reported distinctly).
    /// A task of this node, reached over loopback, is also watched through its worker process
    /// ([`super::worker`]): its end is read the moment the worker exits.
    pub async fn wait_task(
        &self,
        upid: &Upid,
        opts: &WaitOptions,
        cancel: &CancellationToken,
    ) -> Result<TaskOutcome, PveError> {
        let watch = self
            .runs_here(upid)
            .then(|| WorkerExit::open(upid))
            .flatten();
        let exited = watch.as_ref().map(WorkerExit::exited);
        let end = task::wait::<Pve, _>(&self.core, upid, opts, cancel, exited).await;
        // The task has changed what it changed by now (or stopped trying).
        self.configs.clear();
        end
    }

    /// Whether the task's worker is a process of this machine: the UPID names this client's
    /// node and the API is reached over loopback (the agent runs on the node it manages).
    fn runs_here(&self, upid: &Upid) -> bool {
        upid.node() == self.node() && self.core.is_loopback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upids_are_percent_encoded_in_paths() {
        let upid: Upid = "UPID:pve1:0001E240:00A2F3B1:6745A1C2:vzdump:101:felhom-agent@pve!agent:"
            .parse()
            .unwrap();
        assert_eq!(
            task_path::<Pve>(&upid, "status"),
            "/nodes/pve1/tasks/UPID%3Apve1%3A0001E240%3A00A2F3B1%3A6745A1C2%3Avzdump%3A101%3Afelhom-agent%40pve%21agent%3A/status"
        );
    }
}
