//! Process hygiene and privilege: identity check, process cleanup, capability drop.
//!
//! At start, before the tokio runtime exists (so no other thread can race the environment):
//! [`sanitize_process`] closes every inherited file descriptor above 2 (and points a closed
//! 0/1/2 at /dev/null) and replaces the environment with a fixed `PATH` and `LANG` (keeping
//! only `NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID` for systemd readiness and watchdog and
//! `RUST_LOG` for the log level, all read once and then removed).
//! [`require_root`] refuses to run as anyone but root unless the loud simulated-host switch
//! is given.
//!
//! After the socket is bound and chowned, [`drop_capabilities`] shrinks the bounding set to
//! [`BOUNDING`] and the permitted/effective sets to [`HELPER_OWN`]. Which capability serves
//! which operation, and why:
//!
//! | capability | needed by | why |
//! |---|---|---|
//! | CAP_CHOWN | socket setup; pct | chown of the socket to the agent group happens *before* the drop, so the helper itself drops it; pct chowns the extracted template tree to the container's mapped uids |
//! | CAP_FOWNER, CAP_FSETID, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH | pct | template extraction writes files owned by mapped uids with setuid/setgid bits and reads /etc/pve (root:www-data) |
//! | CAP_SETUID, CAP_SETGID | pct | writing uid/gid maps for the unprivileged container's user namespace (lxc-usernsexec) |
//! | CAP_MKNOD, CAP_SETFCAP | pct | device nodes and file capabilities inside templates |
//! | CAP_SYS_ADMIN | mount/unmount (helper itself); pct (mounting the new rootfs volume); smartctl on NVMe (NVME_IOCTL_ADMIN_CMD requires it) | mount(2)/umount2(2) require it |
//! | CAP_SYS_RAWIO | smartctl | ATA pass-through (SG_IO with ATA_16/ATA_12) on SATA and USB-bridged drives |
//! | CAP_SYS_RESOURCE | pct | raising limits while creating LVM/ZFS volumes |
//! | CAP_KILL | pct | pct stops helper processes it forked (lxc-usernsexec) |
//! | CAP_SYS_CHROOT | pct | template setup runs tools chrooted into the new rootfs |
//! | CAP_IPC_LOCK | pct | pmxcfs client and LVM lock memory |
//! | CAP_AUDIT_WRITE | pct | PAM/auth log entries of PVE's RPC environment |
//!
//! Start only (in the unit's bounding set, never in [`BOUNDING`]): CAP_SETPCAP (the bounding
//! drop itself) and CAP_SYS_PTRACE (opening `/proc/1/ns/mnt`, see [`crate::hostns`]).
//!
//! Children inherit the bounding set: a program executed by root gets
//! `permitted = bounding` (file capabilities of root are "all"). So each child, between fork
//! and exec, shrinks its own bounding set to its program's [`ProgramCaps`] ([`restrict_child`]):
//! pct keeps [`BOUNDING`], smartctl only CAP_SYS_RAWIO and CAP_SYS_ADMIN, sensors and blkid
//! (which parses superblocks an attacker may have written) nothing. Everything else (module
//! loading, raw network, ptrace, time, boot, BPF, perf, MAC, syslog …) is gone for the helper
//! and all its children. The helper's own effective set keeps only CAP_SYS_ADMIN (for mount);
//! its permitted set also keeps CAP_SETPCAP ([`CHILD_SETUP`]) for the children's drop.
//!
//! Doubt, stated plainly: the pct row is derived from what pve-container's create path does
//! (extract template in a user namespace, allocate and mount the volume, write config via
//! pmxcfs); it has not been verified on a real Proxmox host. If a real `pct create` fails
//! with EPERM, the missing capability belongs in [`BOUNDING`], with its reason here.

use std::collections::HashSet;

use caps::{CapSet, Capability};

/// Identity or privilege failure.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Not root and the simulated-host switch was not given.
    #[error(
        "felhom-helper must run as root (euid is {0}); --unprivileged-dev is for the simulated host only"
    )]
    NotRoot(u32),
    /// The simulated-host switch was given to a root process.
    #[error(
        "--unprivileged-dev refused: felhom-helper runs as root; as root it drops its capabilities and restricts its children, which the simulated-host switch would skip"
    )]
    DevAsRoot,
    /// A capability set could not be changed.
    #[error("Cannot change the {set} capability set")]
    Caps {
        /// Which set.
        set: &'static str,
        /// Cause.
        #[source]
        source: caps::errors::CapsError,
    },
}

/// PATH of the sanitized helper and of every child: the fixed system directories, nothing
/// from the caller.
pub const CHILD_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// LANG of the sanitized helper and of every child, so output is in the untranslated form
/// the parsers expect.
pub const CHILD_LANG: &str = "C.UTF-8";

/// The capabilities that stay in the bounding set (see the module table).
pub const BOUNDING: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_MKNOD,
    Capability::CAP_SETFCAP,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_RAWIO,
    Capability::CAP_SYS_RESOURCE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_IPC_LOCK,
    Capability::CAP_AUDIT_WRITE,
];

/// Capabilities the unit's bounding set must also grant because the helper needs them before
/// [`drop_capabilities`] removes them: CAP_SETPCAP for PR_CAPBSET_DROP itself, CAP_SYS_PTRACE
/// to open `/proc/1/ns/mnt` (the kernel's ptrace access check on PID 1 passes only with
/// CAP_SYS_PTRACE or a permitted set covering PID 1's; see [`crate::hostns`]).
pub const START_ONLY: &[Capability] = &[Capability::CAP_SETPCAP, Capability::CAP_SYS_PTRACE];

/// The capabilities the helper process itself keeps in permitted/effective.
pub const HELPER_OWN: &[Capability] = &[Capability::CAP_SYS_ADMIN];

/// Kept in the helper's permitted set only (never effective, never in the bounding set): the
/// forked child raises it to shrink its bounding set to its program's [`ProgramCaps`] just
/// before exec ([`restrict_child`]). It cannot widen anything: with CAP_SETPCAP a thread may
/// only drop bounding capabilities, set securebits, or copy bounding capabilities into its
/// inheritable set — all of which the helper could already pass on by executing a program.
pub const CHILD_SETUP: Capability = Capability::CAP_SETPCAP;

/// Set once [`drop_capabilities`] succeeded: from then on every child must be restricted.
static CHILDREN_RESTRICTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The capabilities each external program runs with. A program executed by root gets its
/// bounding set as permitted, so the child's bounding set is shrunk to exactly this before
/// exec. blkid parses superblocks an attacker may have written, sensors reads sysfs: neither
/// needs any capability as uid 0 (root owns the device nodes and hwmon files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramCaps {
    /// `pct create`: the whole [`BOUNDING`] set (see the module table).
    Pct,
    /// smartctl: CAP_SYS_RAWIO (ATA pass-through) and CAP_SYS_ADMIN (NVMe admin commands).
    Smartctl,
    /// sensors: none.
    Sensors,
    /// blkid: none.
    Blkid,
}

impl ProgramCaps {
    /// The capabilities the program keeps.
    pub fn keep(self) -> &'static [Capability] {
        match self {
            ProgramCaps::Pct => BOUNDING,
            ProgramCaps::Smartctl => &[Capability::CAP_SYS_RAWIO, Capability::CAP_SYS_ADMIN],
            ProgramCaps::Sensors | ProgramCaps::Blkid => &[],
        }
    }

    /// [`Self::keep`] as a kernel capability mask (bit n = capability n).
    pub fn mask(self) -> u64 {
        self.keep().iter().fold(0, |m, c| m | (1u64 << c.index()))
    }
}

/// True once the helper dropped its capabilities: children must then be restricted (and a
/// child that cannot be is not started). Before that (the simulated host, in-process tests)
/// the process never held more than its caller, and children run as the helper does.
pub fn children_restricted() -> bool {
    CHILDREN_RESTRICTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// In a forked child, before exec: raise [`CHILD_SETUP`] and drop every bounding capability
/// not in `keep_mask`. Only raw system calls on stack data: it runs between fork and exec of a
/// multi-threaded process, where allocating could deadlock.
#[allow(unsafe_code)]
pub fn restrict_child(keep_mask: u64) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget writes two `Data` records (the version-3 layout) into `data`, which is
    // exactly that size; `header` is a valid version-3 header for the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bit = CHILD_SETUP.index();
    data[(bit / 32) as usize].effective |= 1 << (bit % 32);
    // SAFETY: capset reads the header and two `Data` records just filled in by capget.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for cap in 0..64u32 {
        if keep_mask & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes an integer capability number and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // Numbers past the kernel's last capability are EINVAL: nothing to drop.
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// What [`sanitize_process`] read from the environment before clearing it.
#[derive(Debug, Clone, Default)]
pub struct StartEnv {
    /// systemd's notification socket, if any.
    pub notify_socket: Option<std::ffi::OsString>,
    /// The log filter, if any.
    pub rust_log: Option<String>,
    /// systemd's watchdog interval (`WATCHDOG_USEC`), if it is meant for this process.
    pub watchdog: Option<std::time::Duration>,
}

/// Refuses to run unless root, and refuses the simulated-host switch as root: it would serve
/// with every capability and children unrestricted.
pub fn require_root(unprivileged_dev: bool) -> Result<(), PrivilegeError> {
    let euid = nix::unistd::geteuid().as_raw();
    match (euid == 0, unprivileged_dev) {
        (true, false) | (false, true) => Ok(()),
        (true, true) => Err(PrivilegeError::DevAsRoot),
        (false, false) => Err(PrivilegeError::NotRoot(euid)),
    }
}

/// Closes inherited fds above 2 and resets the environment. Must be called while the
/// process is single-threaded (first thing in `main`, before any runtime or logger).
#[allow(unsafe_code)]
pub fn sanitize_process() -> StartEnv {
    // SAFETY: close_range(2) only closes descriptors; nothing in this single-threaded
    // process holds fds above 2 yet (std opens none before main, and this runs before any
    // file, socket or runtime is created), so no live Rust object is invalidated.
    let rc = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    if rc != 0 {
        // Kernels before 5.9 lack close_range; fall back to closing what /proc lists.
        close_fds_from_proc();
    }
    ensure_std_fds_open();
    let start = StartEnv {
        notify_socket: std::env::var_os("NOTIFY_SOCKET"),
        rust_log: std::env::var("RUST_LOG").ok(),
        watchdog: crate::notify::watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        ),
    };
    let keys: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
    for key in keys {
        // SAFETY: the process is single-threaded here (documented precondition, called first
        // in main before the runtime starts), so no other thread reads the environment.
        unsafe { std::env::remove_var(key) };
    }
    // SAFETY: as above, single-threaded.
    unsafe {
        std::env::set_var("PATH", CHILD_PATH);
        std::env::set_var("LANG", CHILD_LANG);
    }
    start
}

/// If the parent started us with fd 0, 1 or 2 closed, point it at /dev/null, so the next
/// file or socket the helper opens cannot land on stdout/stderr and receive log output.
#[allow(unsafe_code)]
fn ensure_std_fds_open() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries the descriptor's flags; it touches no memory.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1;
        if closed {
            // open() returns the lowest free descriptor, which is this one. Leaking the File
            // is deliberate: the descriptor must stay open for the life of the process.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                std::mem::forget(null);
            }
        }
    }
}

#[allow(unsafe_code)]
fn close_fds_from_proc() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: single-threaded start-up, no Rust object owns these inherited fds; the
        // read_dir handle listed above is already dropped (closing it again gives EBADF).
        unsafe { libc::close(fd) };
    }
}

/// Shrinks bounding to [`BOUNDING`], effective to [`HELPER_OWN`], permitted to
/// [`HELPER_OWN`] plus [`CHILD_SETUP`], and clears inheritable/ambient. Call after the socket
/// is bound and chowned.
pub fn drop_capabilities() -> Result<(), PrivilegeError> {
    let keep: HashSet<Capability> = BOUNDING.iter().copied().collect();
    // Bounding first: dropping from it needs CAP_SETPCAP, which is still effective here.
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| PrivilegeError::Caps {
                set: "bounding",
                source,
            })?;
        }
    }
    let own: HashSet<Capability> = HELPER_OWN.iter().copied().collect();
    let sets: [(CapSet, &'static str); 2] = [
        (CapSet::Ambient, "ambient"),
        (CapSet::Inheritable, "inheritable"),
    ];
    for (set, name) in sets {
        caps::clear(None, set).map_err(|source| PrivilegeError::Caps { set: name, source })?;
    }
    // Effective must stay a subset of permitted: shrink effective first.
    caps::set(None, CapSet::Effective, &own).map_err(|source| PrivilegeError::Caps {
        set: "effective",
        source,
    })?;
    let mut permitted = own;
    permitted.insert(CHILD_SETUP);
    caps::set(None, CapSet::Permitted, &permitted).map_err(|source| PrivilegeError::Caps {
        set: "permitted",
        source,
    })?;
    CHILDREN_RESTRICTED.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}
