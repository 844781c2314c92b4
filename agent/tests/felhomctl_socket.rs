//! felhomctl's connect errors: a missing socket and a socket the caller may not open, with
//! the hint an operator needs and exit code 3; and the socket chosen by flag and environment.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use common::{Agent, felhomctl, felhomctl_bin, run};

/// `felhomctl list` on `socket` exits 3 with "cannot connect to <socket>: `detail`".
#[track_caller]
fn assert_cannot_connect(socket: &std::path::Path, detail: &str) {
    let run = felhomctl(socket, &["list"], None);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "felhomctl: cannot connect to {}: {detail}\n",
            socket.display()
        )
    );
}

#[test]
fn missing_socket_says_so_and_exits_3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    assert_cannot_connect(
        &socket,
        "no such file — is felhom-agent running? (--socket to choose another)",
    );
}

#[test]
fn stale_socket_says_nobody_listens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    // Binding and closing leaves the socket file behind with nobody listening, as after a crash.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert_cannot_connect(
        &socket,
        "connection refused — nobody is listening; is felhom-agent running?",
    );
}

#[test]
fn helper_flag_targets_the_helper_socket() {
    let helper = std::path::Path::new(felhom_agent::app::paths::HELPER_SOCKET);
    if helper.exists() {
        println!("skipped: {} exists on this machine", helper.display());
        return;
    }
    let mut cmd = Command::new(felhomctl_bin());
    cmd.env_remove("FELHOMCTL_SOCKET")
        .args(["--helper", "list"]);
    let out = run(cmd, None);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(
        out.stderr,
        "felhomctl: cannot connect to /run/felhom-helper/helper.sock: no such file — is felhom-helper running? (--socket to choose another)\n"
    );
}

#[test]
fn socket_from_environment_is_used() {
    let agent = Agent::start();
    let mut cmd = Command::new(felhomctl_bin());
    cmd.env("FELHOMCTL_SOCKET", &agent.socket)
        .args(["list", "felhom.agent.v1.Agent"]);
    let out = run(cmd, None);
    assert!(
        out.success()
            .lines()
            .any(|l| l == "felhom.agent.v1.Agent.Selftest"),
        "{out:?}"
    );
}

#[test]
fn socket_without_permission_suggests_the_ops_group() {
    if !nix_is_root() {
        println!("skipped: needs root to run felhomctl as another user (setpriv)");
        return;
    }
    let agent = Agent::start();
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("make the temp dir traversable");
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o000))
        .expect("chmod 000 the socket");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(felhomctl_bin())
        .arg("--socket")
        .arg(&agent.socket)
        .arg("list");
    let out = run(cmd, None);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "felhomctl: cannot connect to {}: permission denied — operators must be in the felhom-ops group (then log in again), or use sudo\n",
            agent.socket.display()
        )
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let mut cmd = Command::new(felhomctl_bin());
    cmd.arg("--help");
    let out = run(cmd, None);
    let text = out.success();
    assert!(text.contains(felhom_agent::ctl::EXIT_CODES_HELP), "{text}");
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
