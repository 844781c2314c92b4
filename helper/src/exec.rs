//! Running the helper's external programs.
//!
//! Each operation has exactly one allowlisted absolute program path (configured, so tests and
//! the simulated host can point at stand-ins) and builds a fixed argv from validated values.
//! Programs run without a shell, with stdin closed, the environment cleared except `PATH` and
//! `LANG`, in their own process group (so a timeout kills grandchildren too), under a per-call
//! timeout, with stdout and stderr capped: bytes past the cap are read and discarded so the
//! child never blocks on a full pipe, and the result says it was truncated. Once the helper
//! dropped its capabilities, each program runs with only its [`ProgramCaps`]; a child that
//! cannot drop the rest is not started.
//!
//! Limits: a child stuck in uninterruptible sleep (D state, e.g. on a dying disk) cannot be
//! killed by anyone; the call still returns at its timeout and the child is reaped in the
//! background by tokio once the kernel lets go of it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::privilege::{self, ProgramCaps};

pub use crate::privilege::{CHILD_LANG, CHILD_PATH};

/// Failure to run a program to completion.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The configured program path is not absolute (refused before spawning).
    #[error("Program path {0} is not absolute")]
    NotAbsolute(PathBuf),
    /// The program could not be started.
    #[error("Cannot start {program}")]
    Spawn {
        /// Program path.
        program: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The program ran past its timeout; its process group was killed.
    #[error("{program} timed out after {}s and was killed", timeout.as_secs())]
    Timeout {
        /// Program path.
        program: PathBuf,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// Reading the program's output or waiting for it failed.
    #[error("Lost track of {program}")]
    Wait {
        /// Program path.
        program: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// One program invocation: absolute program, fixed argv, limits.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Arguments (argv[1..]).
    pub args: Vec<OsString>,
    /// Kill the process group after this long.
    pub timeout: Duration,
    /// Keep at most this many bytes of stdout and of stderr each.
    pub output_cap: usize,
    /// The capabilities the program runs with once the helper dropped its own.
    pub caps: ProgramCaps,
}

/// What a finished program left behind.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout, at most `output_cap` bytes.
    pub stdout: Vec<u8>,
    /// Captured stderr, at most `output_cap` bytes.
    pub stderr: Vec<u8>,
    /// True when stdout or stderr exceeded the cap.
    pub truncated: bool,
}

impl Output {
    /// The last line of stderr, lossily decoded and cut to 200 chars, for audit logs only.
    pub fn stderr_tail(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let line = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        line.chars().take(200).collect()
    }
}

/// Runs `inv` to completion or to its timeout.
pub async fn run(inv: &Invocation) -> Result<Output, ExecError> {
    if !inv.program.is_absolute() {
        return Err(ExecError::NotAbsolute(inv.program.clone()));
    }
    let mut cmd = Command::new(&inv.program);
    cmd.args(&inv.args)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("LANG", CHILD_LANG)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if privilege::children_restricted() {
        let keep = inv.caps.mask();
        // SAFETY: the closure runs in the forked child before exec and only makes raw system
        // calls on stack data (see `restrict_child`): no allocation, no locks.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || privilege::restrict_child(keep));
        }
    }
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: inv.program.clone(),
        source,
    })?;
    let pgid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let cap = inv.output_cap;
    let finish = async {
        let (out, err, status) = tokio::join!(
            read_capped(stdout, cap),
            read_capped(stderr, cap),
            child.wait()
        );
        let (stdout, t1) = out?;
        let (stderr, t2) = err?;
        Ok::<_, std::io::Error>(Output {
            status: status?,
            stdout,
            stderr,
            truncated: t1 || t2,
        })
    };
    match tokio::time::timeout(inv.timeout, finish).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(source)) => {
            kill_group(pgid);
            Err(ExecError::Wait {
                program: inv.program.clone(),
                source,
            })
        }
        Err(_elapsed) => {
            kill_group(pgid);
            // Reap the leader so it does not linger as a zombie; bounded because SIGKILL was
            // sent (a D-state child is left to tokio's background reaper, see module docs).
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(ExecError::Timeout {
                program: inv.program.clone(),
                timeout: inv.timeout,
            })
        }
    }
}

/// SIGKILL the whole process group led by the child (it was started with `process_group(0)`,
/// so its pgid is its pid).
fn kill_group(pgid: Option<u32>) {
    let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // ESRCH (already gone) is the normal race here and needs no report.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(mut reader) = reader else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    // On the heap: two of these live in every run() future, which would otherwise be 16 KiB.
    let mut buf = vec![0u8; 8192];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = cap.saturating_sub(kept.len());
        let chunk = buf.get(..n).unwrap_or_default();
        if chunk.len() > room {
            truncated = true;
        }
        kept.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(program: &str, args: &[&str], timeout: Duration, cap: usize) -> Invocation {
        Invocation {
            program: PathBuf::from(program),
            args: args.iter().map(OsString::from).collect(),
            timeout,
            output_cap: cap,
            caps: ProgramCaps::Sensors,
        }
    }

    #[tokio::test]
    async fn environment_is_only_path_and_lang() {
        let out = run(&inv("/usr/bin/env", &[], Duration::from_secs(30), 4096))
            .await
            .expect("env runs");
        let text = String::from_utf8(out.stdout).expect("env prints ASCII");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [format!("LANG={CHILD_LANG}"), format!("PATH={CHILD_PATH}")]
        );
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_dropped_and_flagged() {
        let out = run(&inv(
            "/usr/bin/head",
            &["-c", "100000", "/dev/zero"],
            Duration::from_secs(30),
            1000,
        ))
        .await
        .expect("head runs");
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.truncated);
    }

    #[tokio::test]
    async fn relative_program_is_refused() {
        let err = run(&inv("sleep", &["1"], Duration::from_secs(30), 10))
            .await
            .expect_err("relative path refused");
        assert!(matches!(err, ExecError::NotAbsolute(_)));
    }

    #[tokio::test]
    async fn hung_program_is_killed_at_timeout() {
        let err = run(&inv(
            "/usr/bin/sleep",
            &["600"],
            Duration::from_millis(300),
            10,
        ))
        .await
        .expect_err("sleep outlives its timeout");
        assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    }
}
