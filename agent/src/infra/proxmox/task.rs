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
//! # When to poll
//!
//! Neither product can push a task's end or hold a status request open until it changes, so
//! over HTTP the end is noticed by the next status read after it: with a poll every `p`, a
//! task is noticed up to `p` (on average `p/2`) plus one request late, at `1/p` reads per
//! second — a 250 ms bound needs 4 reads per second. Two ways out, used together:
//!
//! - **Watched (PVE tasks on this node)**: PVE runs each task in a worker process named in the
//!   UPID, and the task is over exactly when that process exits. The caller passes a wake-up
//!   that fires then (a pidfd, [`crate::infra::pve`]'s `worker` module): the status is read at
//!   once, so the end is noticed one request late (about a millisecond on loopback), at no
//!   read before it. Beside it one backstop read every `watched_period` (default 1 s) goes on,
//!   so a wake-up that never comes (the pid named another process) costs at most that. When a
//!   read after the wake-up still says `running`, the wait goes on on the polled grid.
//! - **Polled (PBS tasks, PVE tasks of another node)**: the first [`FAST_POLLS`] reads after
//!   the immediate one come every `initial_backoff` (default 200 ms), covering the first 2 s
//!   where snapshots, rollbacks, starts and stops usually end (noticed at most 200 ms late);
//!   then one read every `max_backoff` (default 500 ms): 2 reads per second, a task is noticed
//!   on average 250 ms and at most 500 ms (plus one request) late. The tasks waited for this
//!   way run long (PBS verify: minutes to hours), where that is a small fraction.
//!
//! Reads are due on a fixed grid measured from the start of the wait (not a pause after each
//! answer), so request time does not stretch the cadence; a grid point that passed while a
//! slow request was out is skipped rather than made up, so a slow server is never read back to
//! back. Watching the task log instead (its growth, or its final `TASK OK` line) would not
//! lower the count: a log read is a request of the same cost as a status read, a growing log
//! says nothing about when the task will end, and the status is the one answer both products
//! define as "the task is over".

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

/// Reads at the fast period after the immediate first one (see the module docs).
pub const FAST_POLLS: u32 = 10;
/// Shortest period the schedule uses, whatever the options say (a zero period would spin).
const MIN_PERIOD: Duration = Duration::from_millis(1);
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
    /// Poll period of the fast phase: the first [`FAST_POLLS`] reads after the immediate one.
    /// (The name is kept from the earlier doubling backoff; callers set it by name.)
    pub initial_backoff: Duration,
    /// Poll period after the fast phase (the steady rate is one read per this period).
    pub max_backoff: Duration,
    /// Backstop poll period while the caller also watches the task's end (a local PVE worker).
    pub watched_period: Duration,
    /// Task-log lines kept for a failure report.
    pub log_tail_lines: usize,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30 * 60),
            request_timeout: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(500),
            watched_period: Duration::from_secs(1),
            log_tail_lines: 20,
        }
    }
}

impl WaitOptions {
    /// When read number `n` (0 = the immediate first one) is due, measured from the start of
    /// the wait: `n` fast periods for the fast phase, steady periods after it.
    pub fn poll_offset(&self, n: u32) -> Duration {
        let steady = self.max_backoff.max(MIN_PERIOD);
        let fast = self.initial_backoff.clamp(MIN_PERIOD, steady);
        let fast_reads = n.min(FAST_POLLS);
        fast * fast_reads + steady * (n - fast_reads)
    }

    /// The schedule while the end is also watched: one backstop read every `watched_period`.
    fn watched(&self) -> WaitOptions {
        WaitOptions {
            initial_backoff: self.watched_period,
            max_backoff: self.watched_period,
            ..self.clone()
        }
    }

    /// The first read after read `last` that is not yet overdue at `elapsed` (grid points that
    /// passed while a request was out are skipped), and when it is due.
    fn next_poll(&self, last: u32, elapsed: Duration) -> (u32, Duration) {
        let mut n = last + 1;
        while self.poll_offset(n) < elapsed {
            n += 1;
        }
        (n, self.poll_offset(n))
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
/// `exited`, when given, resolves once the task's end can be read (see the module docs).
pub(crate) async fn wait<P: Tasks, X: Future<Output = ()>>(
    core: &HttpCore<P>,
    upid: &P::Upid,
    opts: &WaitOptions,
    cancel: &CancellationToken,
    exited: Option<X>,
) -> Result<TaskOutcome, P::Error> {
    let status_path = task_path::<P>(upid, "status");
    let poll = |timeout| {
        let path = status_path.as_str();
        async move {
            let status: P::Status = core.call(Method::GET, path, vec![], Some(timeout)).await?;
            Ok(P::stopped(status))
        }
    };
    let end = poll_until_stopped(opts, cancel, poll, exited, P::is_transient, |e| {
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

/// The polling loop: reads on the schedule of [`WaitOptions::poll_offset`] until the task
/// stops, the deadline passes or `cancel` fires.
///
/// `poll(timeout)` reads the status once with that per-request timeout and answers `Some` once
/// the task stopped, `None` while it runs. Errors for which `is_transient` holds are passed to
/// `on_retry` and retried on the same schedule until the deadline; others end the wait. The
/// last pause never overshoots the deadline. With `exited`, reads follow the watched schedule
/// and one is made as soon as it resolves; if that read still says running, the polled
/// schedule takes over from then.
pub(crate) async fn poll_until_stopped<S, E, F, Fut, X>(
    opts: &WaitOptions,
    cancel: &CancellationToken,
    mut poll: F,
    exited: Option<X>,
    is_transient: impl Fn(&E) -> bool,
    on_retry: impl Fn(&E),
) -> PollEnd<S, E>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<Option<S>, E>>,
    X: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let deadline = start + opts.deadline;
    let mut exited = exited.map(Box::pin);
    let mut schedule = match exited {
        Some(_) => opts.watched(),
        None => opts.clone(),
    };
    let mut grid_start = start;
    let mut n = 0;
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
        let (next, due) = schedule.next_poll(n, now - grid_start);
        n = next;
        let woken = async {
            match exited.as_mut() {
                Some(x) => x.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return PollEnd::Cancelled,
            () = tokio::time::sleep_until((grid_start + due).min(deadline)) => {}
            () = woken => {
                // Read now; should the task still run, poll as if the wait began now.
                exited = None;
                schedule = opts.clone();
                grid_start = Instant::now();
                n = 0;
            }
        }
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

    /// No wake-up: the polled schedule.
    const UNWATCHED: Option<std::future::Ready<()>> = None;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_default_schedule_is_200_ms_for_2_s_then_500_ms() {
        let opts = WaitOptions::default();
        let offsets: Vec<u64> = (0..15)
            .map(|n| opts.poll_offset(n).as_millis() as u64)
            .collect();
        assert_eq!(
            offsets,
            [
                0, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2500, 3000, 3500, 4000
            ]
        );
    }

    /// The properties the module docs promise, for the default options: how late a task
    /// ending at any millisecond is noticed (request time aside) and the reads it costs.
    #[test]
    fn the_default_schedule_keeps_its_latency_and_rate_promises() {
        let opts = WaitOptions::default();
        let reads_by = |t: Duration| (0..).take_while(|&n| opts.poll_offset(n) <= t).count();
        let notice_delay = |end: Duration| {
            let n = (0..).find(|&n| opts.poll_offset(n) >= end).unwrap();
            opts.poll_offset(n) - end
        };
        for end_ms in 0..=2000 {
            assert!(notice_delay(ms(end_ms)) <= ms(200), "{end_ms}");
        }
        for end_ms in 2000..=120_000 {
            assert!(notice_delay(ms(end_ms)) <= ms(500), "{end_ms}");
        }
        // 6 reads more than 2 per second, once: 2.1/s over a minute, 2.01/s over ten.
        assert_eq!(reads_by(Duration::from_secs(60)), 127);
        assert_eq!(reads_by(Duration::from_secs(600)), 1207);
        // Short tasks: a 0.3 s task is seen by the read at 0.4 s, a 1 s one at 1.0 s.
        assert_eq!(notice_delay(ms(300)), ms(100));
        assert_eq!(notice_delay(ms(7000)), ms(0));
    }

    #[test]
    fn missed_grid_points_are_skipped_not_made_up() {
        let opts = WaitOptions::default();
        // Read 0 took 450 ms: reads 1 and 2 (200, 400 ms) are gone, read 3 is due at 600 ms.
        assert_eq!(opts.next_poll(0, ms(450)), (3, ms(600)));
        // On time: the next grid point.
        assert_eq!(opts.next_poll(3, ms(601)), (4, ms(800)));
        assert_eq!(opts.next_poll(10, ms(2003)), (11, ms(2500)));
    }

    #[test]
    fn odd_options_do_not_spin_or_run_backwards() {
        let zero = WaitOptions {
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..WaitOptions::default()
        };
        assert_eq!(zero.poll_offset(3), ms(3));
        let inverted = WaitOptions {
            initial_backoff: ms(900),
            max_backoff: ms(300),
            ..WaitOptions::default()
        };
        assert_eq!(inverted.poll_offset(2), ms(600));
    }

    /// The real loop, in paused time: the reads happen exactly on the schedule.
    #[tokio::test(start_paused = true)]
    async fn the_loop_reads_on_the_schedule() {
        let start = Instant::now();
        let seen = std::cell::RefCell::new(Vec::new());
        let end = poll_until_stopped(
            &WaitOptions::default(),
            &CancellationToken::new(),
            |_| {
                let elapsed = start.elapsed();
                seen.borrow_mut().push(elapsed.as_millis() as u64);
                async move {
                    // Each read takes 5 ms; the task ends at 2.7 s.
                    tokio::time::sleep(ms(5)).await;
                    Ok::<_, ()>((elapsed >= ms(2700)).then_some(()))
                }
            },
            UNWATCHED,
            |_| true,
            |_| {},
        )
        .await;
        assert!(matches!(end, PollEnd::Stopped(())), "{end:?}");
        assert_eq!(
            seen.into_inner(),
            [
                0, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2500, 3000
            ]
        );
    }

    /// A watched wait in paused time for a task that ends at `ends` and a wake-up at `wakes`:
    /// the instants (ms from the start) of its status reads.
    async fn watched_reads(ends: u64, wakes: u64) -> Vec<u64> {
        let start = Instant::now();
        let seen = std::cell::RefCell::new(Vec::new());
        let end = poll_until_stopped(
            &WaitOptions::default(),
            &CancellationToken::new(),
            |_| {
                let elapsed = start.elapsed();
                seen.borrow_mut().push(elapsed.as_millis() as u64);
                async move { Ok::<_, ()>((elapsed >= ms(ends)).then_some(())) }
            },
            Some(tokio::time::sleep(ms(wakes))),
            |_| true,
            |_| {},
        )
        .await;
        assert!(matches!(end, PollEnd::Stopped(())), "{end:?}");
        seen.into_inner()
    }

    /// Reads at 0 and every second, and one at once when the worker exits (2.7 s here).
    #[tokio::test(start_paused = true)]
    async fn a_watched_wait_reads_when_the_worker_exits() {
        assert_eq!(watched_reads(2700, 2700).await, [0, 1000, 2000, 2700]);
    }

    /// A wake-up that was wrong (the task still runs): polling on the fast grid from then.
    #[tokio::test(start_paused = true)]
    async fn a_wake_up_while_the_task_runs_falls_back_to_polling() {
        assert_eq!(
            watched_reads(1900, 1300).await,
            [0, 1000, 1300, 1500, 1700, 1900]
        );
    }

    fn quick() -> WaitOptions {
        WaitOptions {
            deadline: ms(200),
            request_timeout: Duration::from_secs(1),
            initial_backoff: ms(1),
            max_backoff: ms(5),
            watched_period: ms(5),
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
            UNWATCHED,
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
            UNWATCHED,
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
            UNWATCHED,
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
            UNWATCHED,
            |_| true,
            |_| {},
        )
        .await;
        assert!(matches!(end, PollEnd::Cancelled), "{end:?}");
    }
}
