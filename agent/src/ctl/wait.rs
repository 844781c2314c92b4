//! `--wait`: polls a job's status RPC until the job a start call returned has ended, and
//! decides the exit code from how it ended.
//!
//! The loop knows neither gRPC nor time: the status comes from a [`StatusSource`], the pause
//! between polls and the elapsed time from a [`Pacer`], and progress goes to a [`Progress`]
//! sink, so its decisions are unit-tested with fakes. felhomctl's real ones are the agent
//! client, a one-second tokio sleep with an `Instant`, and a single updating terminal line
//! ([`TerminalLine`]) or nothing at all when standard output is not a terminal ([`Silent`]).
//!
//! A job is followed by its id. The status RPCs answer the guest's *newest* job of a kind, and
//! the agent records a job before it answers the start call, so the newest job is ours until
//! ours has ended. When another id shows up, ours ended and a newer one (the scheduler's, say)
//! replaced it between two polls; the status RPC no longer knows how ours ended, and felhomctl
//! says so ([`CtlError::JobReplaced`]) rather than report another job's result.
//!
//! Limits: no overall deadline (a backup may legitimately take hours; Ctrl-C stops waiting,
//! not the job). A gRPC error while polling ends the wait with that error.

use std::io::Write;
use std::time::Duration;

use felhom_proto::agent::v1 as pb;

use super::{CtlError, Exit};

/// Spinner frames of the progress line (braille dots, one per poll).
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Which kind of job a status is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Backup,
    RestoreTest,
    Verify,
}

impl JobKind {
    /// How the operator reads it: "backup", "restore-test", "verify".
    pub fn noun(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::RestoreTest => "restore-test",
            JobKind::Verify => "verify",
        }
    }

    /// The status RPC, for error messages.
    pub fn status_method(self) -> &'static str {
        match self {
            JobKind::Backup => "felhom.agent.v1.Agent/GetBackupStatus",
            JobKind::RestoreTest => "felhom.agent.v1.Agent/GetRestoreTestStatus",
            JobKind::Verify => "felhom.agent.v1.Agent/GetVerifyStatus",
        }
    }
}

/// One answer of a status RPC.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    Backup(pb::BackupStatus),
    RestoreTest(pb::RestoreTestStatus),
    Verify(pb::VerifyStatus),
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Queued or running: poll again.
    Running,
    /// Ended; the verdict decides the exit code.
    Ended(Verdict),
}

/// How a report reads for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing failed (exit 0).
    Ok,
    /// The job failed, the restore-test failed or the snapshot did not verify (exit 1).
    NotOk,
}

impl Verdict {
    pub fn exit(self) -> Exit {
        match self {
            Verdict::Ok => Exit::Ok,
            Verdict::NotOk => Exit::NotOk,
        }
    }
}

impl JobStatus {
    pub fn kind(&self) -> JobKind {
        match self {
            JobStatus::Backup(_) => JobKind::Backup,
            JobStatus::RestoreTest(_) => JobKind::RestoreTest,
            JobStatus::Verify(_) => JobKind::Verify,
        }
    }

    pub fn vmid(&self) -> u32 {
        match self {
            JobStatus::Backup(s) => s.vmid,
            JobStatus::RestoreTest(s) => s.vmid,
            JobStatus::Verify(s) => s.vmid,
        }
    }

    pub fn job_id(&self) -> &str {
        match self {
            JobStatus::Backup(s) => &s.job_id,
            JobStatus::RestoreTest(s) => &s.job_id,
            JobStatus::Verify(s) => &s.job_id,
        }
    }

    pub fn phase(&self) -> &str {
        match self {
            JobStatus::Backup(s) => &s.phase,
            JobStatus::RestoreTest(s) => &s.phase,
            JobStatus::Verify(s) => &s.phase,
        }
    }

    /// Where the newest job stands. `running` polls on; `done` and `failed` have ended.
    /// (A restore-test's phase is only ever `done` when it ended; pass or fail is its result.)
    pub fn stage(&self) -> Result<Stage, CtlError> {
        match self.phase() {
            "running" => Ok(Stage::Running),
            "idle" | "done" | "failed" => Ok(Stage::Ended(self.verdict()?)),
            other => Err(self.unexpected("phase", other)),
        }
    }

    /// Whether this report reads as a failure (exit code 1): the newest backup failed, the
    /// newest finished restore-test failed (or a finished one left no result), the newest
    /// verify could not run or its snapshot is not verified ok. Idle and running are not
    /// failures. Unknown words are errors, so a new phase or state forces a decision here.
    pub fn verdict(&self) -> Result<Verdict, CtlError> {
        match self {
            JobStatus::Backup(s) => match s.phase.as_str() {
                "idle" | "running" | "done" => Ok(Verdict::Ok),
                "failed" => Ok(Verdict::NotOk),
                other => Err(self.unexpected("phase", other)),
            },
            JobStatus::RestoreTest(s) => match (s.phase.as_str(), s.result.as_str()) {
                ("idle" | "running" | "done", "fail") => Ok(Verdict::NotOk),
                ("idle" | "running", "pass" | "none") | ("done", "pass") => Ok(Verdict::Ok),
                ("done", "none") => Ok(Verdict::NotOk),
                ("idle" | "running" | "done", other) => Err(self.unexpected("result", other)),
                (other, _) => Err(self.unexpected("phase", other)),
            },
            JobStatus::Verify(s) => match s.phase.as_str() {
                "idle" | "running" => Ok(Verdict::Ok),
                "failed" => Ok(Verdict::NotOk),
                "done" => match s.state.as_str() {
                    "ok" => Ok(Verdict::Ok),
                    "failed" | "none" | "" => Ok(Verdict::NotOk),
                    other => Err(self.unexpected("state", other)),
                },
                other => Err(self.unexpected("phase", other)),
            },
        }
    }

    fn unexpected(&self, field: &str, value: &str) -> CtlError {
        CtlError::UnexpectedValue {
            method: self.kind().status_method().to_owned(),
            field: field.to_owned(),
            value: value.to_owned(),
        }
    }
}

/// Asks the agent for the newest job's status.
pub trait StatusSource {
    async fn status(&mut self) -> Result<JobStatus, CtlError>;
}

/// The pause between two polls, and the time since waiting began.
pub trait Pacer {
    async fn pause(&mut self);
    fn elapsed(&self) -> Duration;
}

/// Where progress is shown.
pub trait Progress {
    /// The job is still queued or running after `elapsed`.
    fn running(&mut self, status: &JobStatus, elapsed: Duration) -> Result<(), CtlError>;
    /// The job ended after `elapsed`.
    fn ended(
        &mut self,
        status: &JobStatus,
        verdict: Verdict,
        elapsed: Duration,
    ) -> Result<(), CtlError>;
}

/// The job being waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub kind: JobKind,
    pub vmid: u32,
    pub id: String,
}

/// Polls `source` until `job` has ended; its final status and verdict.
pub async fn wait(
    job: &Job,
    source: &mut impl StatusSource,
    pacer: &mut impl Pacer,
    progress: &mut impl Progress,
) -> Result<(JobStatus, Verdict), CtlError> {
    loop {
        let status = source.status().await?;
        if status.job_id() != job.id {
            return Err(CtlError::JobReplaced {
                kind: job.kind.noun(),
                vmid: job.vmid,
                job: job.id.clone(),
                newest: status.job_id().to_owned(),
            });
        }
        match status.stage()? {
            Stage::Running => {
                progress.running(&status, pacer.elapsed())?;
                pacer.pause().await;
            }
            Stage::Ended(verdict) => {
                progress.ended(&status, verdict, pacer.elapsed())?;
                return Ok((status, verdict));
            }
        }
    }
}

/// The real pacer: a fixed pause, elapsed time from a monotonic clock.
#[derive(Debug)]
pub struct EverySecond {
    started: std::time::Instant,
}

impl EverySecond {
    pub fn start() -> Self {
        Self {
            started: std::time::Instant::now(),
        }
    }
}

impl Pacer for EverySecond {
    async fn pause(&mut self) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Progress for a non-terminal: nothing (the final result is printed by the caller).
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn running(&mut self, _: &JobStatus, _: Duration) -> Result<(), CtlError> {
        Ok(())
    }

    fn ended(&mut self, _: &JobStatus, _: Verdict, _: Duration) -> Result<(), CtlError> {
        Ok(())
    }
}

/// Progress on a terminal: one line rewritten in place (`\r`, then erase to end of line),
/// replaced by a summary line when the job ends.
#[derive(Debug)]
pub struct TerminalLine<W: Write> {
    out: W,
    frame: usize,
}

impl<W: Write> TerminalLine<W> {
    pub fn new(out: W) -> Self {
        Self { out, frame: 0 }
    }

    fn write(&mut self, text: &str) -> Result<(), CtlError> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(CtlError::Output)
    }
}

impl<W: Write> Progress for TerminalLine<W> {
    fn running(&mut self, status: &JobStatus, elapsed: Duration) -> Result<(), CtlError> {
        let spinner = SPINNER[self.frame % SPINNER.len()];
        self.frame += 1;
        let line = progress_line(spinner, status, elapsed);
        self.write(&format!("\r{line}\x1b[K"))
    }

    fn ended(
        &mut self,
        status: &JobStatus,
        verdict: Verdict,
        elapsed: Duration,
    ) -> Result<(), CtlError> {
        let line = summary_line(status, verdict, elapsed);
        self.write(&format!("\r{line}\x1b[K\n"))
    }
}

/// `⠋ backup of 101: running (12s)`.
pub fn progress_line(spinner: char, status: &JobStatus, elapsed: Duration) -> String {
    format!(
        "{spinner} {} of {}: {} ({}s)",
        status.kind().noun(),
        status.vmid(),
        status.phase(),
        elapsed.as_secs()
    )
}

/// `✓ backup of 101: done (34s)`, `✗ restore-test of 101: done, fail (20s)`.
pub fn summary_line(status: &JobStatus, verdict: Verdict, elapsed: Duration) -> String {
    let mark = match verdict {
        Verdict::Ok => '✓',
        Verdict::NotOk => '✗',
    };
    let outcome = match status {
        JobStatus::Backup(s) => s.phase.clone(),
        JobStatus::RestoreTest(s) => format!("{}, {}", s.phase, s.result),
        JobStatus::Verify(s) if s.phase == "done" => format!("{}, {}", s.phase, s.state),
        JobStatus::Verify(s) => s.phase.clone(),
    };
    format!(
        "{mark} {} of {}: {outcome} ({}s)",
        status.kind().noun(),
        status.vmid(),
        elapsed.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Answers the queued statuses in order.
    struct Script(VecDeque<Result<JobStatus, CtlError>>);

    impl StatusSource for Script {
        async fn status(&mut self) -> Result<JobStatus, CtlError> {
            self.0.pop_front().expect("the test scripts enough answers")
        }
    }

    /// Ten seconds pass per pause, instantly.
    #[derive(Default)]
    struct FakeClock {
        pauses: u64,
    }

    impl Pacer for FakeClock {
        async fn pause(&mut self) {
            self.pauses += 1;
        }

        fn elapsed(&self) -> Duration {
            Duration::from_secs(self.pauses * 10)
        }
    }

    fn backup(job: &str, phase: &str) -> JobStatus {
        JobStatus::Backup(pb::BackupStatus {
            vmid: 101,
            phase: phase.into(),
            job_id: job.into(),
            ..Default::default()
        })
    }

    fn restore_test(job: &str, phase: &str, result: &str) -> JobStatus {
        JobStatus::RestoreTest(pb::RestoreTestStatus {
            vmid: 101,
            phase: phase.into(),
            job_id: job.into(),
            result: result.into(),
            ..Default::default()
        })
    }

    fn verify(job: &str, phase: &str, state: &str) -> JobStatus {
        JobStatus::Verify(pb::VerifyStatus {
            vmid: 101,
            phase: phase.into(),
            job_id: job.into(),
            state: state.into(),
            ..Default::default()
        })
    }

    fn job(kind: JobKind) -> Job {
        Job {
            kind,
            vmid: 101,
            id: "j1".into(),
        }
    }

    async fn run(
        kind: JobKind,
        answers: Vec<JobStatus>,
    ) -> (Result<(JobStatus, Verdict), CtlError>, String, FakeClock) {
        let mut source = Script(answers.into_iter().map(Ok).collect());
        let mut clock = FakeClock::default();
        let mut screen = Vec::new();
        let result = wait(
            &job(kind),
            &mut source,
            &mut clock,
            &mut TerminalLine::new(&mut screen),
        )
        .await;
        (result, String::from_utf8(screen).expect("utf-8"), clock)
    }

    #[tokio::test]
    async fn a_backup_that_ends_done_exits_0_after_polling_while_running() {
        let (result, _, clock) = run(
            JobKind::Backup,
            vec![
                backup("j1", "running"),
                backup("j1", "running"),
                backup("j1", "done"),
            ],
        )
        .await;
        let (status, verdict) = result.expect("the job ended");
        assert_eq!(verdict.exit(), Exit::Ok);
        assert_eq!(status, backup("j1", "done"));
        assert_eq!(clock.pauses, 2);
    }

    #[tokio::test]
    async fn a_backup_that_ends_failed_exits_1() {
        let (result, _, _) = run(JobKind::Backup, vec![backup("j1", "failed")]).await;
        assert_eq!(result.expect("the job ended").1.exit(), Exit::NotOk);
    }

    #[tokio::test]
    async fn a_restore_test_exits_0_only_when_it_passed() {
        let (passed, _, _) = run(
            JobKind::RestoreTest,
            vec![
                restore_test("j1", "running", "none"),
                restore_test("j1", "done", "pass"),
            ],
        )
        .await;
        assert_eq!(passed.expect("ended").1.exit(), Exit::Ok);
        let (failed, _, _) = run(
            JobKind::RestoreTest,
            vec![restore_test("j1", "done", "fail")],
        )
        .await;
        assert_eq!(failed.expect("ended").1.exit(), Exit::NotOk);
    }

    #[tokio::test]
    async fn a_running_restore_test_is_not_judged_by_the_previous_result() {
        // The previous test failed; this one is still running, then passes.
        let (result, _, clock) = run(
            JobKind::RestoreTest,
            vec![
                restore_test("j1", "running", "fail"),
                restore_test("j1", "done", "pass"),
            ],
        )
        .await;
        assert_eq!(result.expect("ended").1, Verdict::Ok);
        assert_eq!(clock.pauses, 1);
    }

    #[tokio::test]
    async fn a_verify_exits_0_only_when_the_snapshot_verified_ok() {
        for (phase, state, exit) in [
            ("done", "ok", Exit::Ok),
            ("done", "failed", Exit::NotOk),
            ("done", "none", Exit::NotOk),
            ("failed", "", Exit::NotOk),
        ] {
            let (result, _, _) = run(JobKind::Verify, vec![verify("j1", phase, state)]).await;
            assert_eq!(result.expect("ended").1.exit(), exit, "{phase} {state}");
        }
    }

    #[tokio::test]
    async fn a_newer_job_in_the_status_is_reported_not_taken_for_ours() {
        let (result, _, _) = run(
            JobKind::Backup,
            vec![backup("j1", "running"), backup("j2", "running")],
        )
        .await;
        let err = result.expect_err("another job is the newest");
        assert_eq!(
            err.to_string(),
            "backup job j1 of guest 101 ended, but job j2 replaced it before its result was read; see `felhomctl jobs`"
        );
        assert_eq!(err.exit(), Exit::Failed);
    }

    #[tokio::test]
    async fn an_unknown_phase_is_an_error_naming_the_rpc() {
        let (result, _, _) = run(JobKind::Backup, vec![backup("j1", "paused")]).await;
        assert_eq!(
            result.expect_err("paused is no phase").to_string(),
            "felhom.agent.v1.Agent/GetBackupStatus answered unexpected phase `paused`"
        );
    }

    #[tokio::test]
    async fn a_polling_error_ends_the_wait_with_that_error() {
        let mut source = Script(
            vec![
                Ok(backup("j1", "running")),
                Err(CtlError::from(tonic::Status::unavailable("agent stopping"))),
            ]
            .into(),
        );
        let err = wait(
            &job(JobKind::Backup),
            &mut source,
            &mut FakeClock::default(),
            &mut Silent,
        )
        .await
        .expect_err("the second poll failed");
        assert_eq!(err.exit(), Exit::Status);
    }

    #[tokio::test]
    async fn the_terminal_line_is_rewritten_in_place_then_summarised() {
        let (_, screen, _) = run(
            JobKind::Backup,
            vec![
                backup("j1", "running"),
                backup("j1", "running"),
                backup("j1", "done"),
            ],
        )
        .await;
        assert_eq!(
            screen,
            "\r⠋ backup of 101: running (0s)\x1b[K\
             \r⠙ backup of 101: running (10s)\x1b[K\
             \r✓ backup of 101: done (20s)\x1b[K\n"
        );
    }

    #[test]
    fn summaries_name_the_result_of_tests_and_verifies() {
        let elapsed = Duration::from_secs(7);
        assert_eq!(
            summary_line(&restore_test("j1", "done", "fail"), Verdict::NotOk, elapsed),
            "✗ restore-test of 101: done, fail (7s)"
        );
        assert_eq!(
            summary_line(&verify("j1", "done", "ok"), Verdict::Ok, elapsed),
            "✓ verify of 101: done, ok (7s)"
        );
        assert_eq!(
            summary_line(&verify("j1", "failed", ""), Verdict::NotOk, elapsed),
            "✗ verify of 101: failed (7s)"
        );
    }

    #[test]
    fn status_verdicts_do_not_count_idle_or_running_as_failures() {
        assert_eq!(backup("", "idle").verdict().ok(), Some(Verdict::Ok));
        assert_eq!(
            restore_test("", "idle", "none").verdict().ok(),
            Some(Verdict::Ok)
        );
        assert_eq!(verify("", "idle", "").verdict().ok(), Some(Verdict::Ok));
        assert_eq!(
            verify("j1", "running", "").verdict().ok(),
            Some(Verdict::Ok)
        );
    }
}
