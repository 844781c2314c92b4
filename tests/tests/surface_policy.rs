//! The whole gRPC surface, walked for policy (in the spirit of proxmox-backup's
//! `tests/verify-api.rs`): every method of every service in the compiled descriptor set is
//! called on the real binaries over their real sockets and must be refused where it does not
//! belong —
//!
//! - every `Agent` method answers UNIMPLEMENTED on the LocalApi socket, and every `LocalApi`
//!   method answers UNIMPLEMENTED on the operators' `agent.sock`;
//! - every `LocalApi` method is refused without a token, with a well-formed token this agent
//!   never minted, and with a guest's replaced (rotated) token; no LocalApi request carries a
//!   vmid, so a guest's token acts only as that guest;
//! - every `Helper` method is refused for a uid the helper does not admit;
//! - an operator-group member cannot even connect to the LocalApi socket;
//! - every gateway route maps to exactly one LocalApi method or is listed as not yet available,
//!   and every LocalApi method is reached by exactly one route.
//!
//! A method added to a `.proto` without being placed in [`AGENT_METHODS`], [`LOCAL_API_METHODS`]
//! or [`HELPER_METHODS`] fails [`every_method_of_the_descriptor_set_is_covered`]; the refusal
//! checks themselves walk the descriptor set, so a new method is refused-checked without any
//! change here.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use felhom_agent::ctl::token::{self, TokenAction};
use felhom_localapi_gateway::routes::{Handling, ROUTES};
use felhom_simhost::devhost::{DevhostOptions, TempDevhost};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

const AGENT: &str = "felhom.agent.v1.Agent";
const LOCAL_API: &str = "felhom.agent.v1.LocalApi";
const HELPER: &str = "felhom.helper.v1.Helper";

/// Every operator method; a mutating one writes an audit row with the operator's uid.
const AGENT_METHODS: &[(&str, Effect)] = &[
    ("Selftest", Effect::Reads),
    ("ListGuests", Effect::Reads),
    ("ListTasks", Effect::Reads),
    ("ListJobs", Effect::Reads),
    ("ListOperations", Effect::Reads),
    ("AuditTail", Effect::Reads),
    ("AuditVerify", Effect::Reads),
    ("AuditCheckpoint", Effect::Audited),
    ("MintGuestToken", Effect::Audited),
    ("RotateGuestToken", Effect::Audited),
    ("RevokeGuestToken", Effect::Audited),
    ("ListGuestTokens", Effect::Reads),
    ("ProvisionGuest", Effect::Audited),
    ("GetLocalApiPins", Effect::Reads),
    ("RotateLocalApiCertificate", Effect::Audited),
    ("BackupNow", Effect::Audited),
    ("GetBackupStatus", Effect::Reads),
    ("ListBackups", Effect::Reads),
    ("GetBackupDue", Effect::Reads),
    ("RunRestoreTest", Effect::Audited),
    ("GetRestoreTestStatus", Effect::Reads),
    ("RunVerify", Effect::Audited),
    ("GetVerifyStatus", Effect::Reads),
];

/// Every guest method (each must be reached by exactly one gateway route).
const LOCAL_API_METHODS: &[&str] = &[
    "GetStorage",
    "Snapshot",
    "Rollback",
    "StartBackup",
    "GetBackupDue",
    "GetBackupStatus",
    "GetRestoreTestStatus",
];

/// Every helper method (each admits only the agent uid and root).
const HELPER_METHODS: &[&str] = &[
    "CreateGolden",
    "MountByUuid",
    "Unmount",
    "ListMounts",
    "ReadSmart",
    "ReadSensors",
];

/// Gateway routes that answer 501 because their LocalApi method does not exist yet.
const NOT_YET_AVAILABLE: &[&str] = &[
    "GET /disks",
    "POST /disks/assign",
    "POST /disks/eject",
    "POST /disks/format",
    "GET /host/metrics",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Reads,
    Audited,
}

/// Env var that turns [`connect_probe`] / [`helper_probe`] on (set by their parent tests).
const PROBE_SOCKETS: &str = "FELHOM_SURFACE_PROBE_SOCKETS";

fn descriptor_set() -> prost_types::FileDescriptorSet {
    prost_types::FileDescriptorSet::decode(felhom_proto::FILE_DESCRIPTOR_SET).unwrap()
}

/// `(method, input type)` of every method of `service` in the compiled descriptor set.
fn input_types_of(service: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in &descriptor_set().file {
        for svc in &file.service {
            if format!("{}.{}", file.package(), svc.name()) == service {
                for m in &svc.method {
                    out.push((m.name().to_owned(), m.input_type().to_owned()));
                }
            }
        }
    }
    assert!(!out.is_empty(), "{service} is not in the descriptor set");
    out
}

/// The methods of `service` in the compiled descriptor set.
fn methods_of(service: &str) -> Vec<String> {
    input_types_of(service)
        .into_iter()
        .map(|(m, _)| m)
        .collect()
}

async fn channel(socket: &Path) -> Channel {
    felhom_agent::ctl::unix_channel(socket).await.unwrap()
}

/// Calls `/service/method` with an empty request (every field default) and `bearer`, if any.
async fn call(
    channel: &Channel,
    service: &str,
    method: &str,
    bearer: Option<&str>,
) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(token) = bearer {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let path = format!("/{service}/{method}").parse().unwrap();
    match grpc
        .unary::<(), (), _>(request, path, tonic_prost::ProstCodec::default())
        .await
    {
        Ok(_) => tonic::Status::ok("answered"),
        Err(status) => status,
    }
}

/// A devhost running the real agent binary.
async fn start_host() -> TempDevhost {
    let options = DevhostOptions {
        agent_program: Some(env!("CARGO_BIN_EXE_felhom-devhost").into()),
        ..DevhostOptions::default()
    };
    TempDevhost::start(&options).await.unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn every_method_of_the_descriptor_set_is_covered() {
    let table = |names: Vec<&str>| sorted(names.into_iter().map(str::to_owned).collect());
    assert_eq!(
        sorted(methods_of(AGENT)),
        table(AGENT_METHODS.iter().map(|(m, _)| *m).collect()),
        "every Agent method must be classified in AGENT_METHODS"
    );
    assert_eq!(
        sorted(methods_of(LOCAL_API)),
        table(LOCAL_API_METHODS.to_vec()),
        "every LocalApi method must be listed in LOCAL_API_METHODS"
    );
    assert_eq!(
        sorted(methods_of(HELPER)),
        table(HELPER_METHODS.to_vec()),
        "every Helper method must be listed in HELPER_METHODS"
    );
    assert!(
        AGENT_METHODS.iter().any(|(_, e)| *e == Effect::Audited)
            && AGENT_METHODS.iter().any(|(_, e)| *e == Effect::Reads)
    );
}

#[test]
fn every_gateway_route_maps_to_exactly_one_local_api_method_or_is_not_yet_available() {
    let mut routed: Vec<String> = Vec::new();
    let mut unavailable: Vec<String> = Vec::new();
    for r in ROUTES {
        let name = format!("{} {}", r.verb.as_str(), r.path);
        match r.handling {
            Handling::Call(rpc) => routed.push(rpc.method().to_owned()),
            Handling::NotAvailable => unavailable.push(name),
            Handling::OpenApiDocument => assert_eq!(name, "GET /openapi.json"),
        }
    }
    assert_eq!(
        sorted(routed.clone()),
        sorted(methods_of(LOCAL_API)),
        "each LocalApi method is reached by exactly one route"
    );
    assert_eq!(
        sorted(unavailable),
        sorted(NOT_YET_AVAILABLE.iter().map(|s| s.to_string()).collect())
    );
}

#[test]
fn no_local_api_request_names_a_guest() {
    // The caller's guest comes from its token only; a vmid field would let a guest name
    // another one.
    let set = descriptor_set();
    for (method, input) in input_types_of(LOCAL_API) {
        let short = input.rsplit('.').next().unwrap();
        let message = set
            .file
            .iter()
            .flat_map(|f| f.message_type.iter())
            .find(|m| m.name() == short)
            .unwrap_or_else(|| panic!("{input} not found"));
        for field in &message.field {
            assert!(
                !field.name().contains("vmid"),
                "LocalApi/{method} request {short} has field {}",
                field.name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_answers_only_on_its_own_socket() {
    let host = start_host().await;
    let info = &host.dh().info;
    let agent = channel(&info.agent_socket).await;
    let local = channel(&info.local_api_socket).await;
    for method in methods_of(AGENT) {
        let status = call(&local, AGENT, &method, None).await;
        assert_eq!(
            status.code(),
            Code::Unimplemented,
            "Agent/{method} on the LocalApi socket: {status:?}"
        );
    }
    for method in methods_of(LOCAL_API) {
        let token = &info.guests[0].token;
        let status = call(&agent, LOCAL_API, &method, Some(token)).await;
        assert_eq!(
            status.code(),
            Code::Unimplemented,
            "LocalApi/{method} on agent.sock: {status:?}"
        );
    }
    // And each does answer where it belongs.
    assert_eq!(
        call(&agent, AGENT, "ListGuestTokens", None).await.code(),
        Code::Ok
    );
    let token = &info.guests[0].token;
    assert_eq!(
        call(&local, LOCAL_API, "GetStorage", Some(token))
            .await
            .code(),
        Code::Ok
    );
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_local_api_method_refuses_a_caller_without_a_valid_token() {
    let host = start_host().await;
    let info = &host.dh().info;
    let local = channel(&info.local_api_socket).await;
    // A guest's token replaced by rotation stops working at once.
    let guest = &info.guests[1];
    let rotated = token::run(&info.agent_socket, TokenAction::Rotate, guest.vmid)
        .await
        .unwrap();
    assert!(rotated.ok);
    assert_ne!(rotated.line.trim(), guest.token);
    // Well-formed (prefix + 43 base64url characters) but never minted by this agent.
    let foreign = format!("fhg_{}", "A".repeat(43));
    for method in methods_of(LOCAL_API) {
        for (what, bearer) in [
            ("no token", None),
            ("a token this agent never minted", Some(foreign.as_str())),
            ("a rotated-away token", Some(guest.token.as_str())),
            ("a malformed token", Some("not-a-token")),
        ] {
            let status = call(&local, LOCAL_API, &method, bearer).await;
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "LocalApi/{method} with {what}: {status:?}"
            );
        }
    }
    host.stop().await.unwrap();
}

/// The client half of [`an_operator_group_member_cannot_reach_the_local_api_socket`], run
/// under another uid by that test. Ignored in normal runs.
#[test]
#[ignore = "client half; started by its parent test under setpriv"]
fn connect_probe() {
    let sockets = std::env::var(PROBE_SOCKETS).expect("set by the parent test");
    for socket in sockets.split(':') {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(_) => println!("PROBE {socket} connected"),
            Err(e) => println!("PROBE {socket} refused: {:?}", e.kind()),
        }
    }
}

fn run_probe_as(uid: u32, gid: u32, probe: &str, sockets: &[&Path]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: needs root to run the probe under another uid");
        return None;
    }
    let joined: Vec<String> = sockets.iter().map(|p| p.display().to_string()).collect();
    let out = Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            probe,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_SOCKETS, joined.join(":"))
        .output();
    match out {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "probe failed: {stdout}");
            Some(stdout)
        }
        Err(e) => {
            println!("SKIPPED: cannot run setpriv: {e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_group_member_cannot_reach_the_local_api_socket() {
    let host = start_host().await;
    let info = host.dh().info.clone();
    // An operator: not the agent user, but in agent.sock's group.
    let ops_gid = std::fs::metadata(&info.agent_socket).unwrap().gid();
    let agent_sock = info.agent_socket.clone();
    let local_sock = info.local_api_socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_probe_as(4242, ops_gid, "connect_probe", &[&agent_sock, &local_sock])
    })
    .await
    .unwrap();
    if let Some(out) = out {
        assert!(
            out.contains(&format!("PROBE {} connected", info.agent_socket.display())),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "PROBE {} refused: PermissionDenied",
                info.local_api_socket.display()
            )),
            "{out}"
        );
        let mode = std::fs::metadata(&info.local_api_socket).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "localapi.sock mode");
        assert_eq!(
            std::fs::metadata(&info.local_api_socket).unwrap().uid(),
            info.agent_uid
        );
    }
    host.stop().await.unwrap();
}

/// The client half of [`every_helper_method_refuses_a_disallowed_uid`]. Ignored in normal runs.
#[tokio::test]
#[ignore = "client half; started by its parent test under setpriv"]
async fn helper_probe() {
    let socket = std::env::var(PROBE_SOCKETS).expect("set by the parent test");
    let helper = channel(Path::new(&socket)).await;
    for method in methods_of(HELPER) {
        let status = call(&helper, HELPER, &method, None).await;
        println!("PROBE {method} {:?} {}", status.code(), status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_helper_method_refuses_a_disallowed_uid() {
    let host = start_host().await;
    let info = host.dh().info.clone();
    // In the helper socket's group, so the file mode lets it connect and the refusal comes
    // from the helper's peer-credential check.
    let gid = std::fs::metadata(&info.helper_socket).unwrap().gid();
    let helper_sock = info.helper_socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_probe_as(4243, gid, "helper_probe", &[&helper_sock])
    })
    .await
    .unwrap();
    if let Some(out) = out {
        for method in methods_of(HELPER) {
            assert!(
                out.contains(&format!(
                    "PROBE {method} PermissionDenied uid 4243 may not call felhom-helper"
                )),
                "Helper/{method}: {out}"
            );
        }
    }
    host.stop().await.unwrap();
}
