//! Waiting for Proxmox tasks, for both products.
//!
//! Every mutating call starts a task whose HTTP answer says nothing about success. The task is
//! polled at `GET /nodes/{upid node}/tasks/{upid}/status` until `status` is `stopped`, and only
//! `exitstatus == "OK"` is success; `WARNINGS: <n>` is success with warnings, reported apart.
//! Anything else is a failure, reported with the exit status and the tail of the task log
//! (PVE numbers log lines from 0, PBS from 1: the first line is a parameter). Each request has
//! its own timeout and the whole wait an overall deadline; transient polling failures
//! (network, timeouts, 5xx) are retried until the deadline; a cancellation token ends the wait
//! at once (the task itself keeps running on the server).
//!
//! Polling uses bounded exponential backoff.

use std::collections::VecDeque;
use std::fmt::Display;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Product;
use super::http::HttpCore;
use super::upid::encode_path_segment;

/// Log lines fetched per request while reading a task log.
const LOG_PAGE: usize = 500;
/// Upper bound on log pages read for one tail (keeps a runaway log from stalling us).
const LOG_MAX_PAGES: usize = 40;

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

/// A product's tasks, as far as waiting needs them; implemented by the product markers.
pub(crate) trait Tasks: Product {
    /// The product's UPID.
    type Upid: Display;
    /// The status answer, decoded in full (a malformed answer is a decode error, exactly as in
    /// a single status read).
    type Status: DeserializeOwned;
    /// One line of the log answer.
    type LogLine: DeserializeOwned;
    /// Number of the log's first line (PVE 0, PBS 1).
    const FIRST_LOG_LINE: usize;

    /// The node named in the UPID: where its status and log are read.
    fn node(upid: &Self::Upid) -> &str;
    /// The UPID's text, as the server sent it.
    fn text(upid: &Self::Upid) -> &str;
    /// The exit status (empty when the server sent none) once the status says `stopped`.
    fn stopped(status: Self::Status) -> Option<String>;
    /// A log line's text.
    fn line_text(line: Self::LogLine) -> String;
    /// The error for a task that stopped with anything but `OK` / `WARNINGS: n`; the log
    /// tail is empty when the log could not be read.
    fn failed(upid: &Self::Upid, exitstatus: String, log_tail: Vec<String>) -> Self::Error;
    /// The error for a task still running at the deadline.
    fn deadline(upid: &Self::Upid, deadline: Duration) -> Self::Error;
    /// The error for a wait ended by its cancellation token.
    fn cancelled(upid: &Self::Upid) -> Self::Error;
}

/// `/nodes/{upid node}/tasks/{percent-encoded upid}/{leaf}`.
pub(crate) fn task_path<P: Tasks>(upid: &P::Upid, leaf: &str) -> String {
    format!(
        "/nodes/{}/tasks/{}/{leaf}",
        P::node(upid),
        encode_path_segment(P::text(upid))
    )
}

/// Waits for a task to stop and classifies its exit status; a failure comes with the log tail.
pub(crate) async fn wait<P: Tasks>(
    core: &HttpCore<P>,
    upid: &P::Upid,
    opts: &WaitOptions,
    cancel: &CancellationToken,
) -> Result<TaskOutcome, P::Error> {
    let status_path = task_path::<P>(upid, "status");
    let poll = |timeout| {
        let path = status_path.as_str();
        async move {
            let status: P::Status = core.call(Method::GET, path, vec![], Some(timeout)).await?;
            Ok(P::stopped(status))
        }
    };
    let end = poll_until_stopped(opts, cancel, poll, P::is_transient, |e| {
        tracing::debug!(%upid, error = %e, "{} status poll failed; retrying", P::TASK_NOUN);
    })
    .await;
    let exitstatus = match end {
        PollEnd::Stopped(exitstatus) => exitstatus,
        PollEnd::Failed(e) => return Err(e),
        PollEnd::Deadline => return Err(P::deadline(upid, opts.deadline)),
        PollEnd::Cancelled => return Err(P::cancelled(upid)),
    };
    if let Some(outcome) = classify_exitstatus(&exitstatus) {
        return Ok(outcome);
    }
    // The log explains the failure; if it cannot be read, the exit status still does.
    let log_tail = match log_tail::<P>(core, upid, opts.log_tail_lines).await {
        Ok(lines) => lines,
        Err(e) => {
            tracing::warn!(%upid, error = %e, "cannot read the failed {}'s log", P::TASK_NOUN);
            Vec::new()
        }
    };
    Err(P::failed(upid, exitstatus, log_tail))
}

/// The last `lines` lines of a task's log, oldest first, read in pages.
pub(crate) async fn log_tail<P: Tasks>(
    core: &HttpCore<P>,
    upid: &P::Upid,
    lines: usize,
) -> Result<Vec<String>, P::Error> {
    let log_path = task_path::<P>(upid, "log");
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut start = P::FIRST_LOG_LINE;
    for _ in 0..LOG_MAX_PAGES {
        let q = vec![
            ("start", start.to_string()),
            ("limit", LOG_PAGE.to_string()),
        ];
        let page: Vec<P::LogLine> = core.call(Method::GET, &log_path, q, None).await?;
        let n = page.len();
        for line in page {
            if tail.len() == lines {
                tail.pop_front();
            }
            tail.push_back(P::line_text(line));
        }
        if n < LOG_PAGE {
            break;
        }
        start += n;
    }
    Ok(tail.into_iter().collect())
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

/// The polling loop: reads the status until the task stops, the deadline passes or `cancel`
/// fires.
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
