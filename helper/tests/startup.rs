//! Start-up behaviour of the binary: identity check, socket lifecycle, readiness, reflection.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[test]
fn refuses_to_start_unless_root() {
    let dir = common::temp_dir();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_felhom-helper"))
        .arg("--socket")
        .arg(dir.path().join("helper.sock"))
        .args(["--socket-group", "0", "--agent-user", "4242"])
        .output()
        .expect("run the helper as uid 65534");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("felhom-helper must run as root (euid is 65534); --unprivileged-dev is for the simulated host only"),
        "{stderr}"
    );
    assert!(!dir.path().join("helper.sock").exists());
}

#[test]
fn socket_is_group_owned_and_mode_0660() {
    let helper = common::start(common::Options {
        socket_gid: 65534,
        ..Default::default()
    });
    let meta = std::fs::metadata(&helper.socket).expect("socket exists");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.gid(), 65534);
}

/// Runs the helper binary once on `socket` and returns its stderr (it must fail).
fn refused(socket: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_felhom-helper"))
        .arg("--socket")
        .arg(socket)
        .args(["--socket-group", "0", "--agent-user", "4242"])
        .output()
        .expect("run the helper");
    assert!(
        !out.status.success(),
        "the helper started on {}",
        socket.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn refuses_a_socket_directory_owned_by_the_agent() {
    let dir = common::temp_dir();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    std::os::unix::fs::chown(&run, Some(4242), Some(4242)).expect("chown to the agent");
    let stderr = refused(&run.join("helper.sock"));
    assert!(
        stderr.contains(&format!(
            "Refusing the socket directory {}: {} is owned by uid 4242, not by the helper's uid 0",
            run.display(),
            run.display()
        )),
        "{stderr}"
    );
    assert!(!run.join("helper.sock").exists());
}

#[test]
fn refuses_a_socket_directory_others_can_write() {
    let dir = common::temp_dir();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    let stderr = refused(&run.join("helper.sock"));
    assert!(
        stderr.contains(&format!(
            "{} is writable by group or others (mode 0770)",
            run.display()
        )),
        "{stderr}"
    );
}

#[test]
fn refuses_a_socket_directory_that_is_a_symlink() {
    let dir = common::temp_dir();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    let link = dir.path().join("run");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let stderr = refused(&link.join("helper.sock"));
    assert!(
        stderr.contains(&format!(
            "{} is not a directory (symlinks are refused)",
            link.display()
        )),
        "{stderr}"
    );
    assert!(!real.join("helper.sock").exists());
}

#[test]
fn refuses_a_socket_directory_below_one_the_agent_owns() {
    let dir = common::temp_dir();
    let agents = dir.path().join("agents");
    std::fs::create_dir(&agents).expect("mkdir");
    std::os::unix::fs::chown(&agents, Some(4242), Some(4242)).expect("chown to the agent");
    let run = agents.join("run");
    std::fs::create_dir(&run).expect("mkdir");
    let stderr = refused(&run.join("helper.sock"));
    assert!(
        stderr.contains(&format!("{} is owned by uid 4242", agents.display())),
        "the agent could rename {}: {stderr}",
        run.display()
    );
}

#[test]
fn a_missing_socket_directory_is_created_0750_with_the_socket_group() {
    let dir = common::temp_dir();
    let run = dir.path().join("felhom-helper");
    let helper = common::start_at(
        dir,
        &run.join("helper.sock"),
        common::Options {
            socket_gid: 65534,
            ..Default::default()
        },
    );
    let meta = std::fs::symlink_metadata(&run).expect("directory created");
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!((meta.uid(), meta.gid()), (0, 65534));
    assert!(std::os::unix::net::UnixStream::connect(&helper.socket).is_ok());
}

#[test]
fn refuses_the_simulated_host_switch_as_root() {
    let dir = common::temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_felhom-helper"))
        .arg("--socket")
        .arg(dir.path().join("helper.sock"))
        .args([
            "--socket-group",
            "0",
            "--agent-user",
            "4242",
            "--unprivileged-dev",
        ])
        .output()
        .expect("run the helper");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--unprivileged-dev refused: felhom-helper runs as root"),
        "{stderr}"
    );
    assert!(!dir.path().join("helper.sock").exists());
}

#[test]
fn stale_socket_is_replaced() {
    let dir = common::temp_dir();
    let socket = dir.path().join("helper.sock");
    // A socket file nobody listens on any more, as a crashed helper leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind stale socket"));
    assert!(socket.exists());
    let helper = common::start_in(dir, common::Options::default());
    assert!(std::os::unix::net::UnixStream::connect(&helper.socket).is_ok());
}

#[test]
fn refuses_to_replace_a_file_that_is_not_a_socket() {
    let dir = common::temp_dir();
    let socket = dir.path().join("helper.sock");
    std::fs::write(&socket, "precious").expect("write file");
    let out = Command::new(env!("CARGO_BIN_EXE_felhom-helper"))
        .arg("--socket")
        .arg(&socket)
        .args(["--socket-group", "0", "--agent-user", "4242"])
        .output()
        .expect("run the helper");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exists and is not a socket; refusing to replace it"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&socket).expect("file kept"),
        "precious"
    );
}

#[test]
fn refuses_to_start_when_another_helper_serves_the_socket() {
    let helper = common::start(common::Options::default());
    let out = Command::new(env!("CARGO_BIN_EXE_felhom-helper"))
        .arg("--socket")
        .arg(&helper.socket)
        .args(["--socket-group", "0", "--agent-user", "4242"])
        .output()
        .expect("run a second helper");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Another helper is already serving on"),
        "{stderr}"
    );
}

#[test]
fn capabilities_are_dropped_after_binding() {
    let helper = common::start(common::Options::default());
    // Capability sets are per thread: every thread (runtime workers and the host-namespace
    // thread, which is created before the main thread drops) must have dropped.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", helper.pid())).expect("helper tasks");
    let mut checked = 0;
    for task in tasks {
        let path = task.expect("task entry").path().join("status");
        let status = std::fs::read_to_string(&path).expect("task status");
        check_dropped(&status);
        checked += 1;
    }
    assert!(checked >= 2, "main and host-namespace threads checked");
}

fn check_dropped(status: &str) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex capability mask"))
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_SYS_MODULE: u64 = 1 << 16;
    const CAP_SYS_RAWIO: u64 = 1 << 17;
    const CAP_NET_RAW: u64 = 1 << 13;
    const CAP_SYS_PTRACE: u64 = 1 << 19;
    const CAP_SETPCAP: u64 = 1 << 8;
    assert_eq!(field("CapEff:"), CAP_SYS_ADMIN, "{status}");
    assert_eq!(
        field("CapPrm:"),
        CAP_SYS_ADMIN | CAP_SETPCAP,
        "SETPCAP stays permitted only, for the children's bounding drop: {status}"
    );
    let bounding = field("CapBnd:");
    assert_eq!(bounding & CAP_SYS_MODULE, 0, "module loading stays dropped");
    assert_eq!(bounding & CAP_NET_RAW, 0, "raw network stays dropped");
    assert_ne!(bounding & CAP_SYS_RAWIO, 0, "smartctl needs SYS_RAWIO");
    assert_eq!(bounding & CAP_SYS_PTRACE, 0, "ptrace was for start only");
}

#[tokio::test]
async fn reflection_lists_the_helper_service() {
    let helper = common::start(common::Options::default());
    let path = helper.socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://helper.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let reply = stream
        .message()
        .await
        .expect("reflection reply")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let mut names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"felhom.helper.v1.Helper"), "{names:?}");
    // Only what the helper serves: the descriptor set also holds the agent's services.
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "felhom.helper.v1.Helper",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ],
    );
}

#[test]
fn inherited_descriptors_are_closed_at_start() {
    // The shell leaves fd 7 open on a file across exec, as a careless parent would.
    let helper = common::start(common::Options {
        wrapper: vec![
            "/bin/sh".into(),
            "-c".into(),
            "exec 7</etc/hostname; exec \"$0\" \"$@\"".into(),
        ],
        ..Default::default()
    });
    let fds = std::fs::read_dir(format!("/proc/{}/fd", helper.pid())).expect("helper fds");
    for fd in fds {
        let fd = fd.expect("fd entry");
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert_ne!(
            target,
            std::path::Path::new("/etc/hostname"),
            "inherited fd {:?} still open",
            fd.file_name()
        );
    }
}

#[tokio::test]
async fn unprivileged_dev_switch_runs_without_root() {
    let dir = common::temp_dir();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).expect("chown temp dir");
    let helper = common::start_in(
        dir,
        common::Options {
            socket_gid: 65534,
            wrapper: vec![
                "setpriv".into(),
                "--reuid=65534".into(),
                "--regid=65534".into(),
                "--clear-groups".into(),
                "--".into(),
            ],
            extra: vec!["--unprivileged-dev".into()],
            ..Default::default()
        },
    );
    let meta = std::fs::metadata(&helper.socket).expect("socket exists");
    assert_eq!(
        meta.uid(),
        65534,
        "socket belongs to the unprivileged helper"
    );
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    // Root may still call it (the test runs as root).
    let mounts = helper
        .client()
        .await
        .list_mounts(felhom_proto::helper::v1::ListMountsRequest {})
        .await
        .expect("root calls the unprivileged helper")
        .into_inner();
    assert!(mounts.mounts.is_empty());
}

#[tokio::test]
async fn watchdog_is_petted_after_ready() {
    // READY=1 is consumed by the harness; WATCHDOG=1 must follow at half the interval.
    let helper = common::start(common::Options {
        watchdog_usec: Some(400_000),
        ..Default::default()
    });
    let mut buf = [0u8; 64];
    let n = helper.notify.recv(&mut buf).expect("watchdog datagram");
    assert_eq!(buf.get(..n), Some(&b"WATCHDOG=1\n"[..]));
    let n = helper
        .notify
        .recv(&mut buf)
        .expect("second watchdog datagram");
    assert_eq!(buf.get(..n), Some(&b"WATCHDOG=1\n"[..]));
}

#[tokio::test]
async fn no_watchdog_datagram_without_watchdog_usec() {
    let helper = common::start(common::Options::default());
    helper
        .notify
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .expect("set timeout");
    let mut buf = [0u8; 64];
    let got = helper.notify.recv(&mut buf);
    assert!(
        got.is_err(),
        "unexpected datagram: {:?}",
        got.map(|n| buf.get(..n).map(<[u8]>::to_vec))
    );
}
