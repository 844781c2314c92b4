//! Noticing the end of a task on this node the moment its worker process exits.
//!
//! PVE runs every task in a forked worker process and names it in the UPID (pid and `pstart`,
//! the process start time in clock ticks since boot); a task is `running` exactly while that
//! process lives (pve-common's `check_process_running(pid, pstart)`), so the process's exit
//! *is* the task's end. On the node the agent itself runs on, a pidfd of the worker becomes
//! readable when it exits — no read of any kind until then. The agent uses that as a wake-up
//! for one status read at once; the status read still decides, and a slow backstop poll goes
//! on beside it (see [`crate::infra::proxmox::task`]), so a wrong or missing pidfd can only
//! make a wait slower, never wrong.
//!
//! Which process the pidfd names: it is opened *before* the first status read. If that read
//! says `running`, the worker held the pid at that moment, and as it held it since before the
//! UPID reached us, it held it when the pidfd was opened: the pidfd is the worker's. Where the
//! agent can read `/proc/<pid>/stat` it also checks the start time against `pstart`; under
//! `ProtectProc=invisible` (the agent's unit) root's processes are hidden there, and pidfd_open
//! does not go through procfs. PBS runs tasks as threads of its proxy daemon (the UPID's pid is
//! the daemon's), so PBS waits have nothing to watch and poll.

use std::os::fd::OwnedFd;

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::unix::AsyncFd;

use super::upid::Upid;

/// A pidfd on a task's worker process.
#[derive(Debug)]
pub struct WorkerExit {
    fd: AsyncFd<OwnedFd>,
}

impl WorkerExit {
    /// Opens a pidfd on the UPID's worker; `None` when there is no such process (it already
    /// exited: the first status read sees the end), when `/proc` shows a process with another
    /// start time under that pid, or when the kernel has no pidfds (before Linux 5.3).
    pub fn open(upid: &Upid) -> Option<WorkerExit> {
        let pid = Pid::from_raw(i32::try_from(upid.pid()).ok().filter(|p| *p > 0)?)?;
        let fd = pidfd_open(pid, PidfdFlags::NONBLOCK).ok()?;
        if let Some(started) = proc_start_time(upid.pid())
            && started != upid.pstart()
        {
            return None;
        }
        register(fd).map(|fd| WorkerExit { fd })
    }

    /// Resolves once the process has exited (at once if it already has). A failed readiness
    /// wait resolves too: the caller then reads the status, which is always safe.
    pub async fn exited(&self) {
        let _ = self.fd.readable().await;
    }
}

/// Registers the pidfd with tokio's reactor; called from inside the runtime (as `wait_task`
/// always is).
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes the OwnedFd and keeps it until it is dropped, so the raw fd
    // it registers stays open and names this pidfd for the AsyncFd's whole life.
    unsafe { AsyncFd::register(fd) }.ok()
}

/// Field 22 of `/proc/<pid>/stat` (start time, clock ticks since boot), if readable.
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The start time from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses: fields are counted after its last
/// `)`, where field 3 is the first.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_after_an_odd_command_name() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    98765 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("4242 (truncated"), None);
        assert_eq!(parse_start_time("4242 (x) S 1 2"), None);
    }

    #[tokio::test]
    async fn this_process_start_time_matches_what_proc_says() {
        let me = std::process::id();
        let started = proc_start_time(me).unwrap();
        let upid: Upid = format!(
            "UPID:pve1:{me:08X}:{started:08X}:6745A1C2:vzsnapshot:101:felhom-agent@pve!agent:"
        )
        .parse()
        .unwrap();
        assert!(WorkerExit::open(&upid).is_some());
        let other: Upid = format!(
            "UPID:pve1:{me:08X}:{:08X}:6745A1C2:vzsnapshot:101:felhom-agent@pve!agent:",
            started + 1
        )
        .parse()
        .unwrap();
        assert!(WorkerExit::open(&other).is_none(), "another start time");
    }

    #[tokio::test]
    async fn the_pidfd_wakes_when_the_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = proc_start_time(pid).unwrap();
        let upid: Upid = format!(
            "UPID:pve1:{pid:08X}:{started:08X}:6745A1C2:vzsnapshot:101:felhom-agent@pve!agent:"
        )
        .parse()
        .unwrap();
        let exit = WorkerExit::open(&upid).unwrap();
        let t0 = std::time::Instant::now();
        exit.exited().await;
        assert!(t0.elapsed() >= std::time::Duration::from_millis(100));
        child.wait().unwrap();
    }
}
