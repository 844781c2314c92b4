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
//! The polling loop (per-request timeout, overall deadline, bounded backoff, cancellation) and
//! the `OK` / `WARNINGS: n` classification are the PVE client's, shared through
//! `crate::infra::pve` rather than copied.

use std::collections::VecDeque;

use tokio_util::sync::CancellationToken;

use super::client::{Params, PbsClient};
use super::error::{PbsError, PbsTaskFailure};
use super::types::{PbsTaskLogLine, PbsTaskStatus};
use super::upid::PbsUpid;
use crate::infra::pve::{
    PollEnd, TaskOutcome, WaitOptions, classify_exitstatus, encode_path_segment, poll_until_stopped,
};

/// Log lines fetched per request while reading a task log.
const LOG_PAGE: usize = 500;
/// Upper bound on log pages read for one tail.
const LOG_MAX_PAGES: usize = 40;
/// The line PBS's verify writes before listing what failed.
const VERIFY_FAILED_MARK: &str = "Failed to verify the following snapshots/groups:";

fn task_path(upid: &PbsUpid, leaf: &str) -> String {
    format!(
        "/nodes/{}/tasks/{}/{leaf}",
        upid.node(),
        encode_path_segment(upid.as_str())
    )
}

impl PbsClient {
    /// One status read of a task, on the node named in its UPID.
    pub async fn task_status(&self, upid: &PbsUpid) -> Result<PbsTaskStatus, PbsError> {
        self.get(&task_path(upid, "status"), vec![], None).await
    }

    /// Up to `limit` log lines starting at line `start` (counting from 1).
    pub async fn task_log(
        &self,
        upid: &PbsUpid,
        start: usize,
        limit: usize,
    ) -> Result<Vec<PbsTaskLogLine>, PbsError> {
        let q: Params = vec![
            ("start", start.max(1).to_string()),
            ("limit", limit.to_string()),
        ];
        self.get(&task_path(upid, "log"), q, None).await
    }

    /// The last `lines` lines of a task's log, oldest first.
    pub async fn task_log_tail(
        &self,
        upid: &PbsUpid,
        lines: usize,
    ) -> Result<Vec<String>, PbsError> {
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut start = 1;
        for _ in 0..LOG_MAX_PAGES {
            let page = self.task_log(upid, start, LOG_PAGE).await?;
            let n = page.len();
            for line in page {
                if tail.len() == lines {
                    tail.pop_front();
                }
                tail.push_back(line.t);
            }
            if n < LOG_PAGE {
                break;
            }
            start += n;
        }
        Ok(tail.into_iter().collect())
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
        let path = task_path(upid, "status");
        let poll = |timeout| {
            let path = path.as_str();
            async move {
                let status: PbsTaskStatus = self.get(path, vec![], Some(timeout)).await?;
                Ok(if status.status == "stopped" {
                    Some(status)
                } else {
                    None
                })
            }
        };
        let end = poll_until_stopped(opts, cancel, poll, PbsError::is_transient, |e| {
            tracing::debug!(%upid, error = %e, "PBS task status poll failed; retrying");
        })
        .await;
        match end {
            PollEnd::Stopped(status) => self.finish(upid, status, opts).await,
            PollEnd::Failed(e) => Err(e),
            PollEnd::Deadline => Err(PbsError::TaskDeadline {
                upid: upid.clone(),
                deadline: opts.deadline,
            }),
            PollEnd::Cancelled => Err(PbsError::Cancelled { upid: upid.clone() }),
        }
    }

    async fn finish(
        &self,
        upid: &PbsUpid,
        status: PbsTaskStatus,
        opts: &WaitOptions,
    ) -> Result<TaskOutcome, PbsError> {
        let exitstatus = status.exitstatus.unwrap_or_default();
        if let Some(outcome) = classify_exitstatus(&exitstatus) {
            return Ok(outcome);
        }
        let log_tail = match self.task_log_tail(upid, opts.log_tail_lines).await {
            Ok(lines) => lines,
            Err(e) => {
                tracing::warn!(%upid, error = %e, "cannot read the failed PBS task's log");
                Vec::new()
            }
        };
        Err(PbsError::TaskFailed(Box::new(PbsTaskFailure {
            upid: upid.clone(),
            failed_snapshots: failed_snapshots(&log_tail),
            exitstatus,
            log_tail,
        })))
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
            task_path(&upid, "status"),
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
