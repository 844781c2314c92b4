//! Shared test harness: start the real `felhom-helper` binary on a socket in a temp dir,
//! wait for its systemd-style READY=1, connect a gRPC client over the Unix socket, and kill
//! the helper when the harness is dropped.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use felhom_proto::helper::v1::CreateGoldenRequest;
use felhom_proto::helper::v1::helper_client::HelperClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Generous: the CI machine is a loaded 2-core box.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start the helper with.
pub struct Options {
    pub agent_uid: u32,
    pub socket_gid: u32,
    pub pct: Option<PathBuf>,
    pub smartctl: Option<PathBuf>,
    pub sensors: Option<PathBuf>,
    pub read_timeout_secs: u64,
    pub extra: Vec<String>,
    /// Program and arguments to start the helper through (e.g. setpriv, or a shell that
    /// leaves a descriptor open); the helper path and its arguments follow.
    pub wrapper: Vec<String>,
    /// The helper's state directory (default: `<temp>/state`).
    pub state_dir: Option<PathBuf>,
    /// `--host-mount-ns` (default: the test process's own mount namespace; PID 1's is not
    /// reachable in every sandbox the tests run in).
    pub host_mount_ns: Option<PathBuf>,
    /// `WATCHDOG_USEC` to start the helper with.
    pub watchdog_usec: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            agent_uid: 4242,
            socket_gid: 0,
            pct: None,
            smartctl: None,
            sensors: None,
            read_timeout_secs: 60,
            extra: Vec::new(),
            wrapper: Vec::new(),
            state_dir: None,
            host_mount_ns: None,
            watchdog_usec: None,
        }
    }
}

/// A running helper and its temp dir.
pub struct Helper {
    child: Child,
    /// The NOTIFY_SOCKET the helper reports to (READY=1 already consumed).
    pub notify: UnixDatagram,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub audit: PathBuf,
    pub prefix: PathBuf,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes an executable `#!/bin/sh` stand-in program into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write stand-in script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make stand-in executable");
    path
}

/// A fresh temp dir that other users can traverse (the disallowed-uid client needs that).
pub fn temp_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod temp dir");
    dir
}

/// Starts the helper with `opts` in `dir` and waits for READY=1.
pub fn start_in(dir: tempfile::TempDir, opts: Options) -> Helper {
    let socket = dir.path().join("helper.sock");
    start_at(dir, &socket, opts)
}

/// Starts the helper serving `socket` (anywhere), its other files in `dir`.
pub fn start_at(dir: tempfile::TempDir, socket: &Path, opts: Options) -> Helper {
    let socket = socket.to_path_buf();
    let audit = dir.path().join("audit.log");
    let prefix = dir.path().join("mnt");
    let notify = dir.path().join("notify.sock");
    let ready = UnixDatagram::bind(&notify).expect("bind notify socket");
    ready
        .set_read_timeout(Some(START_TIMEOUT))
        .expect("set notify timeout");
    let missing = dir.path().join("not-configured");
    std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o666))
        .expect("let any uid notify");
    let helper_bin = env!("CARGO_BIN_EXE_felhom-helper");
    let mut cmd = match opts.wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(helper_bin);
            c
        }
        None => Command::new(helper_bin),
    };
    cmd.arg("--socket")
        .arg(&socket)
        .arg("--socket-group")
        .arg(opts.socket_gid.to_string())
        .arg("--agent-user")
        .arg(opts.agent_uid.to_string())
        .arg("--audit-file")
        .arg(&audit)
        .arg("--state-dir")
        .arg(
            opts.state_dir
                .clone()
                .unwrap_or_else(|| dir.path().join("state")),
        )
        .arg("--mount-prefix")
        .arg(&prefix)
        .arg("--by-uuid-dir")
        .arg(dir.path().join("by-uuid"))
        .arg("--pct")
        .arg(opts.pct.as_deref().unwrap_or(&missing))
        .arg("--smartctl")
        .arg(opts.smartctl.as_deref().unwrap_or(&missing))
        .arg("--sensors")
        .arg(opts.sensors.as_deref().unwrap_or(&missing))
        .arg("--read-timeout-secs")
        .arg(opts.read_timeout_secs.to_string())
        .arg("--host-mount-ns")
        .arg(
            opts.host_mount_ns
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("/proc/{}/ns/mnt", std::process::id()))),
        )
        .args(&opts.extra)
        .env("NOTIFY_SOCKET", &notify)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(usec) = opts.watchdog_usec {
        cmd.env("WATCHDOG_USEC", usec.to_string());
    }
    let child = cmd.spawn().expect("start felhom-helper");
    let mut helper = Helper {
        child,
        notify: ready,
        dir,
        socket,
        audit,
        prefix,
    };
    let mut buf = [0u8; 64];
    match helper.notify.recv(&mut buf) {
        Ok(n) => assert_eq!(
            buf.get(..n),
            Some(&b"READY=1\n"[..]),
            "unexpected notify message"
        ),
        Err(e) => {
            let status = helper.child.try_wait().ok().flatten();
            panic!(
                "helper did not report READY=1 within {START_TIMEOUT:?}: {e} (exit: {status:?})"
            );
        }
    }
    helper
}

/// Starts the helper in a fresh temp dir.
pub fn start(opts: Options) -> Helper {
    start_in(temp_dir(), opts)
}

/// A gRPC client over the Unix socket at `path`.
pub async fn connect(path: &Path) -> HelperClient<Channel> {
    let path = path.to_path_buf();
    let channel = Endpoint::from_static("http://helper.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect to the helper socket");
    HelperClient::new(channel)
}

impl Helper {
    pub async fn client(&self) -> HelperClient<Channel> {
        connect(&self.socket).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }
}

/// A valid golden-container request (vmid 9000 from the Debian 12 template, bridged to
/// `vmbr0`); tests change the field they are about.
pub fn golden_request() -> CreateGoldenRequest {
    CreateGoldenRequest {
        vmid: 9000,
        template_volid: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
        hostname: "golden".into(),
        storage: "local-lvm".into(),
        disk_gib: 8,
        memory_mib: 1024,
        cores: 2,
        bridge: Some("vmbr0".into()),
    }
}
