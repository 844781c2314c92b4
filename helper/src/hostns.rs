//! The host mount namespace: where mounts, unmounts, mount-table reads and `pct` run.
//!
//! Why: the systemd unit gives the helper a private mount namespace (ProtectSystem=strict,
//! PrivateTmp=, ProtectHome=, ProtectKernel*=, …), whose mounts would not reach the host. A
//! USB disk mounted under /mnt/felhom must be visible to the host and its containers, and
//! `pct create` must write /etc/pve, /var/lib/lxc and the storage for real. So those
//! operations run on one dedicated thread that has joined the host's mount namespace, while
//! the gRPC server, peer checks, validation and the hardware reads (smartctl, sensors) stay in
//! the sandbox.
//!
//! How: at start, while the helper still holds its full capability sets, [`HostNs::start`]
//! opens the namespace file (`--host-mount-ns`, default `/proc/1/ns/mnt`, PID 1's namespace
//! is the host's) and starts the thread. Opening another process's namespace file passes the
//! kernel's ptrace access check (PTRACE_MODE_READ_FSCREDS); for PID 1 that needs
//! CAP_SYS_PTRACE, because a root whose bounding set is limited never holds all of PID 1's
//! permitted capabilities (security/commoncap.c, `cap_ptrace_access_check`). The unit grants
//! CAP_SYS_PTRACE for start only ([`crate::privilege::START_ONLY`]); the fd is kept open. The thread first calls `unshare(CLONE_FS)`, because
//! setns(2) refuses `CLONE_NEWNS` for a caller that shares its filesystem attributes (root,
//! cwd, umask) with another thread (man setns: "A process can't join a new mount namespace if
//! it is sharing filesystem-related attributes … with another process"; threads share them
//! via CLONE_FS). It then calls `setns(fd, CLONE_NEWNS)`, which needs CAP_SYS_ADMIN and
//! CAP_SYS_CHROOT — held at that point, since capability sets are per thread and the thread
//! is created before the main thread drops them. Afterwards the thread drops its own sets to
//! the helper's ([`crate::privilege::drop_capabilities`]) and runs a current-thread tokio
//! runtime; [`HostNs::run`] spawns futures onto it. Namespaces are per thread and inherited
//! on clone/fork, so a program spawned by such a future (pct, blkid) and a blocking-pool
//! thread that runtime creates are in the host namespace too.
//!
//! When the namespace file names the namespace the helper is already in (same device and
//! inode as `/proc/thread-self/ns/mnt`, e.g. run without systemd, or the simulated host), no
//! setns is done and the thread merely runs the tasks.
//!
//! Limits: a mount(2) that blocks (a dying USB disk) blocks this one thread, so later mount,
//! unmount, list and golden calls wait behind it; the service serializes mounts anyway.
//! Mount-table reads must use `/proc/thread-self/mountinfo` (the default `--mountinfo`):
//! `/proc/self` names the main thread, which stays in the sandbox.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::privilege::{self, PrivilegeError};

/// Failure to reach or use the host mount namespace.
#[derive(Debug, thiserror::Error)]
pub enum HostNsError {
    /// The namespace file could not be opened or inspected.
    #[error("Cannot open the host mount namespace {path}")]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// unshare(CLONE_FS) failed.
    #[error("Cannot unshare filesystem attributes for the host-namespace thread: {0}")]
    Unshare(Errno),
    /// setns(CLONE_NEWNS) failed.
    #[error(
        "Cannot join the host mount namespace {path}: {errno} (needs root with CAP_SYS_ADMIN and CAP_SYS_CHROOT)"
    )]
    Setns {
        /// The namespace file.
        path: PathBuf,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The host-namespace thread could not drop its capabilities.
    #[error("Cannot drop capabilities on the host-namespace thread")]
    Caps(#[source] PrivilegeError),
    /// The thread or its runtime could not be started.
    #[error("Cannot start the host-namespace thread")]
    Thread(#[source] std::io::Error),
    /// The thread ended before reporting whether it joined the namespace.
    #[error("The host-namespace thread died during start")]
    ThreadDied,
    /// A task on the host-namespace thread panicked or was cancelled.
    #[error("Host-namespace task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Whether the thread had to change namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The target was the helper's own namespace; no setns was done.
    AlreadyThere,
    /// setns into the target namespace succeeded.
    Joined,
}

/// Handle to the host-namespace thread.
#[derive(Debug, Clone)]
pub struct HostNs {
    handle: tokio::runtime::Handle,
    joined: Joined,
}

/// The device and inode naming a namespace file.
fn ns_id(file: &File, path: &Path) -> Result<(u64, u64), HostNsError> {
    let meta = file.metadata().map_err(|source| HostNsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((meta.dev(), meta.ino()))
}

impl HostNs {
    /// Opens `path` and starts the host-namespace thread; `drop_caps` makes the thread shrink
    /// its capability sets after joining (off only for `--unprivileged-dev`). Call before
    /// the main thread drops its capabilities.
    pub fn start(path: &Path, drop_caps: bool) -> Result<Self, HostNsError> {
        let target = File::open(path).map_err(|source| HostNsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let target_id = ns_id(&target, path)?;
        let own_path = Path::new("/proc/thread-self/ns/mnt");
        let own = File::open(own_path).map_err(|source| HostNsError::Open {
            path: own_path.to_path_buf(),
            source,
        })?;
        let joined = if ns_id(&own, own_path)? == target_id {
            Joined::AlreadyThere
        } else {
            Joined::Joined
        };
        let path = path.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("felhom-hostns".into())
            .spawn(move || {
                let started = (|| {
                    if joined == Joined::Joined {
                        nix::sched::unshare(CloneFlags::CLONE_FS).map_err(HostNsError::Unshare)?;
                        nix::sched::setns(&target, CloneFlags::CLONE_NEWNS)
                            .map_err(|errno| HostNsError::Setns { path, errno })?;
                    }
                    drop(target);
                    if drop_caps {
                        privilege::drop_capabilities().map_err(HostNsError::Caps)?;
                    }
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(HostNsError::Thread)
                })();
                match started {
                    Ok(runtime) => {
                        if tx.send(Ok(runtime.handle().clone())).is_ok() {
                            // Serve spawned tasks for the life of the process.
                            runtime.block_on(std::future::pending::<()>());
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(HostNsError::Thread)?;
        let handle = rx.recv().map_err(|_| HostNsError::ThreadDied)??;
        Ok(Self { handle, joined })
    }

    /// Whether the thread joined another namespace or was already in it.
    pub fn joined(&self) -> Joined {
        self.joined
    }

    /// Runs `fut` to completion on the host-namespace thread.
    pub async fn run<F>(&self, fut: F) -> Result<F::Output, HostNsError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut).await.map_err(HostNsError::Task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_namespace_needs_no_setns_and_runs_tasks() {
        let ns = HostNs::start(Path::new("/proc/self/ns/mnt"), false).expect("thread starts");
        assert_eq!(ns.joined(), Joined::AlreadyThere);
        let name = ns
            .run(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("task ran");
        assert_eq!(name.as_deref(), Some("felhom-hostns"));
    }

    #[test]
    fn missing_namespace_file_is_named_in_the_error() {
        let err = HostNs::start(Path::new("/nonexistent/ns/mnt"), false).expect_err("no file");
        assert!(
            err.to_string()
                .contains("Cannot open the host mount namespace /nonexistent/ns/mnt"),
            "{err}"
        );
    }
}
