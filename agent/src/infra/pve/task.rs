//! Waiting for Proxmox VE tasks.
//!
//! Every mutating PVE call starts a task; its HTTP answer says nothing about success. The task is
//! polled at `GET /nodes/{upid node}/tasks/{upid}/status` until `status` is `stopped`, and only
//! `exitstatus == "OK"` is success. `WARNINGS: <n>` is reported as success with warnings, so
//! callers can tell the two apart. Anything else is a failure carrying the exit status, a parsed
//! permission error when the task failed a privilege check, and the tail of the task log.
//!
//! Polling uses bounded exponential backoff; each request has its own timeout and the whole wait
//! an overall deadline. Transient polling failures (network, timeouts, 5xx) are retried until the
//! deadline; a cancellation token ends the wait at once (the task itself keeps running in PVE).
//! That loop ([`poll_until_stopped`]) and [`classify_exitstatus`] are shared with the PBS client
//! (`crate::infra::pbs`), whose tasks follow the same `running`/`stopped` + exit status protocol.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Params, PveClient};
use super::error::{PermissionDenied, PveError, TaskFailure};
use super::types::{TaskLogLine, TaskStatus};
use super::upid::Upid;

/// How to wait for a task.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// Give up when the task is still running after this long.
    pub deadline: Duration,
    /// Timeout of each status request.
    pub request_timeout: Duration,
    /// First pause between polls; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Task-log lines kept for a failure report.
    pub log_tail_lines: usize,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30 * 60),
            request_timeout: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            log_tail_lines: 20,
        }
    }
}

/// How a task that finished successfully finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// `exitstatus == "OK"`.
    Ok,
    /// `exitstatus == "WARNINGS: n"`: done, but the log has `n` warnings worth reading.
    Warnings(u32),
}

/// Log lines fetched per request while reading a task log.
const LOG_PAGE: usize = 500;
/// Upper bound on log pages read for one tail (keeps a runaway log from stalling us).
const LOG_MAX_PAGES: usize = 40;

impl PveClient {
    /// One status read of a task.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, PveError> {
        self.task_status_with_timeout(upid, self.request_timeout())
            .await
    }

    async fn task_status_with_timeout(
        &self,
        upid: &Upid,
        timeout: Duration,
    ) -> Result<TaskStatus, PveError> {
        let path = format!("/nodes/{}/tasks/{}/status", upid.node(), encode_upid(upid));
        self.get_with_timeout(&path, vec![], timeout).await
    }

    /// A page of a task's log.
    pub async fn task_log(
        &self,
        upid: &Upid,
        start: usize,
        limit: usize,
    ) -> Result<Vec<TaskLogLine>, PveError> {
        let path = format!("/nodes/{}/tasks/{}/log", upid.node(), encode_upid(upid));
        let q: Params = vec![("start", start.to_string()), ("limit", limit.to_string())];
        self.get(&path, q).await
    }

    /// The last `lines` lines of a task's log, oldest first.
    pub async fn task_log_tail(&self, upid: &Upid, lines: usize) -> Result<Vec<String>, PveError> {
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut start = 0;
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
    pub async fn wait_task(
        &self,
        upid: &Upid,
        opts: &WaitOptions,
        cancel: &CancellationToken,
    ) -> Result<TaskOutcome, PveError> {
        let poll = |timeout| async move {
            let status = self.task_status_with_timeout(upid, timeout).await?;
            Ok(if status.status == "stopped" {
                Some(status)
            } else {
                None
            })
        };
        match poll_until_stopped(opts, cancel, poll, PveError::is_transient, |e| {
            tracing::debug!(%upid, error = %e, "task status poll failed; retrying");
        })
        .await
        {
            PollEnd::Stopped(status) => self.finish(upid, status, opts).await,
            PollEnd::Failed(e) => Err(e),
            PollEnd::Deadline => Err(PveError::TaskDeadline {
                upid: upid.clone(),
                deadline: opts.deadline,
            }),
            PollEnd::Cancelled => Err(PveError::Cancelled { upid: upid.clone() }),
        }
    }

    async fn finish(
        &self,
        upid: &Upid,
        status: TaskStatus,
        opts: &WaitOptions,
    ) -> Result<TaskOutcome, PveError> {
        let exitstatus = status.exitstatus.unwrap_or_default();
        match classify_exitstatus(&exitstatus) {
            Some(outcome) => Ok(outcome),
            None => {
                // The log explains the failure; if it cannot be read, the exit status still does.
                let log_tail = match self.task_log_tail(upid, opts.log_tail_lines).await {
                    Ok(lines) => lines,
                    Err(e) => {
                        tracing::warn!(%upid, error = %e, "cannot read the failed task's log");
                        Vec::new()
                    }
                };
                let permission = PermissionDenied::parse(&exitstatus).or_else(|| {
                    log_tail
                        .iter()
                        .rev()
                        .find_map(|l| PermissionDenied::parse(l))
                });
                Err(PveError::TaskFailed(Box::new(TaskFailure {
                    upid: upid.clone(),
                    exitstatus,
                    permission,
                    log_tail,
                })))
            }
        }
    }
}

/// `OK` → success, `WARNINGS: n` → success with warnings, anything else → failure (`None`).
pub fn classify_exitstatus(exitstatus: &str) -> Option<TaskOutcome> {
    if exitstatus == "OK" {
        return Some(TaskOutcome::Ok);
    }
    exitstatus
        .strip_prefix("WARNINGS: ")
        .and_then(|n| n.trim().parse().ok())
        .map(TaskOutcome::Warnings)
}

/// How a [`poll_until_stopped`] loop ended.
#[derive(Debug)]
pub(crate) enum PollEnd<S, E> {
    /// The task stopped; `S` is the status read that said so.
    Stopped(S),
    /// A poll failed with an error that asking again will not fix.
    Failed(E),
    /// Still running when the overall deadline passed.
    Deadline,
    /// The cancellation token fired (the task itself keeps running on the server).
    Cancelled,
}

/// The polling loop shared by the Proxmox VE and PBS clients: both run work as tasks whose
/// status is read until it says `stopped`.
///
/// `poll(timeout)` reads the status once with that per-request timeout and answers `Some` once
/// the task stopped, `None` while it runs. Errors for which `is_transient` holds are passed to
/// `on_retry` and retried until the deadline; others end the wait. Pauses grow from
/// `initial_backoff` by doubling up to `max_backoff` and never overshoot the deadline.
pub(crate) async fn poll_until_stopped<S, E, F, Fut>(
    opts: &WaitOptions,
    cancel: &CancellationToken,
    mut poll: F,
    is_transient: impl Fn(&E) -> bool,
    on_retry: impl Fn(&E),
) -> PollEnd<S, E>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<Option<S>, E>>,
{
    let deadline = Instant::now() + opts.deadline;
    let mut backoff = opts.initial_backoff;
    loop {
        let polled = tokio::select! {
            () = cancel.cancelled() => return PollEnd::Cancelled,
            r = poll(opts.request_timeout) => r,
        };
        match polled {
            Ok(Some(stopped)) => return PollEnd::Stopped(stopped),
            Ok(None) => {}
            Err(e) if is_transient(&e) => on_retry(&e),
            Err(e) => return PollEnd::Failed(e),
        }
        let now = Instant::now();
        if now >= deadline {
            return PollEnd::Deadline;
        }
        let pause = backoff.min(deadline - now);
        tokio::select! {
            () = cancel.cancelled() => return PollEnd::Cancelled,
            () = tokio::time::sleep(pause) => {}
        }
        backoff = (backoff * 2).min(opts.max_backoff);
    }
}

/// UPIDs contain `:`, `!` and `@`; they go into the path percent-encoded as PVE's own clients do.
fn encode_upid(upid: &Upid) -> String {
    encode_path_segment(upid.as_str())
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one URL path segment
/// (UPIDs, whose `:`, `!`, `@` and PBS's `\` must not be read as URL syntax).
pub(crate) fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ok_and_warnings_are_success() {
        assert_eq!(classify_exitstatus("OK"), Some(TaskOutcome::Ok));
        assert_eq!(
            classify_exitstatus("WARNINGS: 3"),
            Some(TaskOutcome::Warnings(3))
        );
        assert_eq!(classify_exitstatus("unexpected status"), None);
        assert_eq!(
            classify_exitstatus("command 'vzdump 101' failed: exit code 1"),
            None
        );
        assert_eq!(classify_exitstatus(""), None);
        assert_eq!(classify_exitstatus("ok"), None);
    }

    #[test]
    fn upids_are_percent_encoded_in_paths() {
        let upid: Upid = "UPID:pve1:0001E240:00A2F3B1:6745A1C2:vzdump:101:felhom-agent@pve!agent:"
            .parse()
            .unwrap();
        assert_eq!(
            encode_upid(&upid),
            "UPID%3Apve1%3A0001E240%3A00A2F3B1%3A6745A1C2%3Avzdump%3A101%3Afelhom-agent%40pve%21agent%3A"
        );
    }

    fn quick() -> WaitOptions {
        WaitOptions {
            deadline: Duration::from_millis(200),
            request_timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            log_tail_lines: 5,
        }
    }

    #[tokio::test]
    async fn polling_retries_transient_errors_until_the_task_stops() {
        let calls = std::cell::Cell::new(0u32);
        let end = poll_until_stopped(
            &quick(),
            &CancellationToken::new(),
            |_| {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    match n {
                        1 => Err("flaky"),
                        2 => Ok(None),
                        _ => Ok(Some("stopped")),
                    }
                }
            },
            |_| true,
            |_| {},
        )
        .await;
        assert!(matches!(end, PollEnd::Stopped("stopped")), "{end:?}");
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn polling_stops_at_a_permanent_error() {
        let end: PollEnd<(), &str> = poll_until_stopped(
            &quick(),
            &CancellationToken::new(),
            |_| async { Err("denied") },
            |_| false,
            |_| {},
        )
        .await;
        assert!(matches!(end, PollEnd::Failed("denied")), "{end:?}");
    }

    #[tokio::test]
    async fn polling_gives_up_at_the_deadline() {
        let end: PollEnd<(), ()> = poll_until_stopped(
            &quick(),
            &CancellationToken::new(),
            |_| async { Ok(None) },
            |_| true,
            |_| {},
        )
        .await;
        assert!(matches!(end, PollEnd::Deadline), "{end:?}");
    }

    #[tokio::test]
    async fn polling_ends_when_cancelled() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let end: PollEnd<(), ()> = poll_until_stopped(
            &quick(),
            &cancel,
            |_| std::future::pending(),
            |_| true,
            |_| {},
        )
        .await;
        assert!(matches!(end, PollEnd::Cancelled), "{end:?}");
    }
}
