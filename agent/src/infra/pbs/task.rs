//! Waiting for PBS tasks.
//!
//! Confirmed in proxmox-backup `src/api2/node/tasks.rs` and proxmox-rest-server
//! `worker_task.rs`: `GET /nodes/{node}/tasks/{upid}/status` answers `status` `running` or
//! `stopped`, and once stopped an `exitstatus` that is `OK`, `WARNINGS: <n>`, the error message
//! itself (no prefix), or `unknown` when the state cannot be read. The node is taken from the
//! UPID: the field spike saw `localhost` answer `exitstatus: unknown` for a real task. The log is
//! `GET …/log?start=&limit=` → `[{n, t}]` with `n` counting from 1 and lines before `start`
//! skipped (so `start=0` and `start=1` both begin at the first line); a failed task's last line
//! is `TASK ERROR: <message>`.
//!
//! The waiter (poll schedule, per-request timeout, overall deadline, cancellation, transient
//! retries, the `OK` / `WARNINGS: n` classification, the failed task's log tail) is the one
//! shared with the PVE client, [`crate::infra::proxmox::task`], with the log starting at line 1.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{Params, PbsClient};
use super::error::{PbsError, PbsTaskFailure};
use super::token::Pbs;
use super::types::{PbsTaskLogLine, PbsTaskStatus};
use super::upid::PbsUpid;
use crate::infra::proxmox::task::{self, Tasks, task_path};
use crate::infra::proxmox::{TaskOutcome, WaitOptions};

/// The line PBS's verify writes before listing what failed.
const VERIFY_FAILED_MARK: &str = "Failed to verify the following snapshots/groups:";

impl Tasks for Pbs {
    type Upid = PbsUpid;
    type Status = PbsTaskStatus;
    type LogLine = PbsTaskLogLine;
    const FIRST_LOG_LINE: usize = 1;

    fn node(upid: &PbsUpid) -> &str {
        upid.node()
    }
    fn text(upid: &PbsUpid) -> &str {
        upid.as_str()
    }
    fn stopped(status: PbsTaskStatus) -> Option<String> {
        (status.status == "stopped").then(|| status.exitstatus.unwrap_or_default())
    }
    fn line_text(line: PbsTaskLogLine) -> String {
        line.t
    }
    fn failed(upid: &PbsUpid, exitstatus: String, log_tail: Vec<String>) -> PbsError {
        PbsError::TaskFailed(Box::new(PbsTaskFailure {
            upid: upid.clone(),
            failed_snapshots: failed_snapshots(&log_tail),
            exitstatus,
            log_tail,
        }))
    }
    fn deadline(upid: &PbsUpid, deadline: Duration) -> PbsError {
        PbsError::TaskDeadline {
            upid: upid.clone(),
            deadline,
        }
    }
    fn cancelled(upid: &PbsUpid) -> PbsError {
        PbsError::Cancelled { upid: upid.clone() }
    }
}

impl PbsClient {
    /// One status read of a task, on the node named in its UPID.
    pub async fn task_status(&self, upid: &PbsUpid) -> Result<PbsTaskStatus, PbsError> {
        self.get(&task_path::<Pbs>(upid, "status"), vec![], None)
            .await
    }

    /// Up to `limit` log lines starting at line `start` (counting from 1).
    pub async fn task_log(
        &self,
        upid: &PbsUpid,
        start: usize,
        limit: usize,
    ) -> Result<Vec<PbsTaskLogLine>, PbsError> {
        let q: Params = vec![
            ("start", start.max(Pbs::FIRST_LOG_LINE).to_string()),
            ("limit", limit.to_string()),
        ];
        self.get(&task_path::<Pbs>(upid, "log"), q, None).await
    }

    /// The last `lines` lines of a task's log, oldest first.
    pub async fn task_log_tail(
        &self,
        upid: &PbsUpid,
        lines: usize,
    ) -> Result<Vec<String>, PbsError> {
        task::log_tail::<Pbs>(&self.core, upid, lines).await
    }

    /// Waits for a task to stop; success only on `OK` (or `WARNINGS: n`, reported distinctly).
    /// A failure carries the exit status, the log tail and, for verify tasks, the snapshots PBS
    /// listed as failed.
    pub async fn wait_task(
        &self,
        upid: &PbsUpid,
        opts: &WaitOptions,
        cancel: &CancellationToken,
    ) -> Result<TaskOutcome, PbsError> {
        // PBS tasks are threads of its proxy daemon: no worker process to watch, so poll.
        task::wait::<Pbs, _>(
            &self.core,
            upid,
            opts,
            cancel,
            None::<std::future::Ready<()>>,
        )
        .await
    }
}

/// The message part of a task log line (`<RFC 3339 time>: <message>`).
fn log_message(line: &str) -> &str {
    match line.split_once(": ") {
        Some((stamp, msg)) if stamp.starts_with(|c: char| c.is_ascii_digit()) => msg,
        _ => line,
    }
}

/// The tab-indented entries PBS's verify logs after [`VERIFY_FAILED_MARK`].
fn failed_snapshots(log: &[String]) -> Vec<String> {
    let Some(start) = log
        .iter()
        .position(|l| log_message(l) == VERIFY_FAILED_MARK)
    else {
        return Vec::new();
    };
    log[start + 1..]
        .iter()
        .map(|l| log_message(l))
        .take_while(|m| m.starts_with('\t'))
        .map(|m| m.trim().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_log_paths_use_the_upid_node_and_encode_the_upid() {
        let upid: PbsUpid =
            r"UPID:pbs1:000004D2:0000A1B2:00000003:6745A1C2:verify:felhom\x2dstore:felhom@pbs!agent:"
                .parse()
                .unwrap();
        assert_eq!(
            task_path::<Pbs>(&upid, "status"),
            "/nodes/pbs1/tasks/UPID%3Apbs1%3A000004D2%3A0000A1B2%3A00000003%3A6745A1C2%3Averify%3Afelhom%5Cx2dstore%3Afelhom%40pbs%21agent%3A/status"
        );
    }

    #[test]
    fn failed_snapshots_are_read_from_the_verify_log() {
        let log: Vec<String> = [
            "2026-06-09T14:30:01+00:00: verify felhom-store:ct/101/2026-06-09T14:18:33Z",
            "2026-06-09T14:30:01+00:00:   check root.pxar.didx",
            "2026-06-09T14:30:02+00:00: Failed to verify the following snapshots/groups:",
            "2026-06-09T14:30:02+00:00: \tct/101/2026-06-09T14:18:33Z",
            "2026-06-09T14:30:02+00:00: \tct/102/2026-06-10T02:30:00Z",
            "2026-06-09T14:30:02+00:00: TASK ERROR: verification failed - please check the log for details",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            failed_snapshots(&log),
            ["ct/101/2026-06-09T14:18:33Z", "ct/102/2026-06-10T02:30:00Z"]
        );
        assert!(failed_snapshots(&log[..2]).is_empty());
    }
}
