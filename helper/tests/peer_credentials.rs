//! Only the agent uid and root may call; anyone else is refused by SO_PEERCRED before any
//! operation runs, with an audit line naming uid and pid.

mod common;

use std::process::Command;

use felhom_proto::helper::v1::CreateGoldenRequest;

/// Env var telling [`denied_probe`] where the socket is; unset in normal runs.
const PROBE_SOCKET: &str = "FELHOM_HELPER_DENIED_PROBE_SOCKET";

/// The shared golden request without a bridge (so pct gets no `--net0`).
fn golden_request() -> CreateGoldenRequest {
    CreateGoldenRequest {
        bridge: None,
        ..common::golden_request()
    }
}

/// The client half, run by [`disallowed_uid_is_refused_before_any_operation_runs`] in a
/// child process under uid 65534. Ignored in normal runs; it needs the socket from the
/// parent test.
#[tokio::test]
#[ignore = "client half of the disallowed-uid test; started by that test under setpriv"]
async fn denied_probe() {
    let socket = std::env::var(PROBE_SOCKET).expect("run by the parent test with the socket");
    let mut client = common::connect(std::path::Path::new(&socket)).await;
    let status = client
        .create_golden(golden_request())
        .await
        .expect_err("a disallowed uid must be refused");
    println!(
        "PROBE uid={} code={:?} message={}",
        nix::unistd::getuid(),
        status.code(),
        status.message()
    );
}

#[test]
fn disallowed_uid_is_refused_before_any_operation_runs() {
    let dir = common::temp_dir();
    let marker = dir.path().join("pct-ran");
    let pct = common::script(dir.path(), "pct", &format!("touch {}", marker.display()));
    let helper = common::start_in(
        dir,
        common::Options {
            agent_uid: 4242,
            // The socket's group lets uid 65534 (group nogroup) connect at the file level,
            // so the refusal below comes from the peer-credential check, not the mode bits.
            socket_gid: 65534,
            pct: Some(pct),
            ..Default::default()
        },
    );
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "denied_probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_SOCKET, &helper.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run setpriv");
    let pid = child.id();
    let out = child.wait_with_output().expect("probe finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "probe failed: {stdout}");
    assert!(
        stdout.contains(
            "PROBE uid=65534 code=PermissionDenied message=uid 65534 may not call felhom-helper"
        ),
        "unexpected probe output: {stdout}"
    );
    assert!(!marker.exists(), "pct ran for a refused caller");
    let audit = helper.audit_text();
    let line = audit
        .lines()
        .find(|l| l.contains("outcome=denied"))
        .unwrap_or_else(|| panic!("no denial in audit log: {audit}"));
    assert!(line.contains("uid=65534"), "{line}");
    assert!(line.contains(&format!("pid={pid}")), "{line}");
    assert!(
        line.contains("method=/felhom.helper.v1.Helper/CreateGolden"),
        "{line}"
    );
    assert!(
        !audit.contains("op=create_golden"),
        "operation reached a handler: {audit}"
    );
}

#[tokio::test]
async fn root_caller_reaches_the_operation() {
    let dir = common::temp_dir();
    let marker = dir.path().join("pct-ran");
    let pct = common::script(
        dir.path(),
        "pct",
        &format!("echo \"$@\" > {}", marker.display()),
    );
    let helper = common::start_in(
        dir,
        common::Options {
            pct: Some(pct),
            ..Default::default()
        },
    );
    let mut client = helper.client().await;
    let reply = client
        .create_golden(golden_request())
        .await
        .expect("root may call")
        .into_inner();
    assert_eq!(reply.vmid, 9000);
    let argv = std::fs::read_to_string(&marker).expect("pct stand-in ran");
    assert_eq!(
        argv.trim(),
        "create 9000 local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst --hostname golden \
         --storage local-lvm --rootfs local-lvm:8 --memory 1024 --cores 2 --unprivileged 1 \
         --features nesting=1,keyctl=1"
    );
    let audit = helper.audit_text();
    assert!(
        audit.lines().any(|l| l.contains("uid=0")
            && l.contains("op=create_golden")
            && l.contains("outcome=ok")),
        "{audit}"
    );
}
