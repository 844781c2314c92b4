//! felhomctl `call` against the agent's real gRPC server: request JSON from the argument, a
//! file and stdin; streaming responses; request errors; gRPC status errors.
//!
//! Success paths use the reflection service itself (the only RPC that succeeds without a
//! Proxmox VE behind the agent); it is bidirectional streaming, so it also shows that every
//! response is printed.

mod common;

use common::Agent;

const REFLECT: &str = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

/// The service names in a printed ListServices response.
fn listed_services(stdout: &str) -> Vec<String> {
    let response: serde_json::Value = serde_json::from_str(stdout).expect("one JSON response");
    response["listServicesResponse"]["service"]
        .as_array()
        .expect("a service list")
        .iter()
        .map(|s| s["name"].as_str().expect("service name").to_owned())
        .collect()
}

#[test]
fn call_with_json_argument_prints_the_response() {
    let agent = Agent::start();
    let run = agent.ctl(&["call", REFLECT, r#"{"listServices": ""}"#]);
    let services = listed_services(run.success());
    assert!(
        services.contains(&"felhom.agent.v1.Agent".to_owned()),
        "{services:?}"
    );
}

#[test]
fn call_accepts_dotted_method_name() {
    let agent = Agent::start();
    let dotted = REFLECT.replace('/', ".");
    let run = agent.ctl(&["call", &dotted, r#"{"listServices": ""}"#]);
    let services = listed_services(run.success());
    assert!(
        services.contains(&"felhom.agent.v1.Agent".to_owned()),
        "{services:?}"
    );
}

#[test]
fn call_reads_request_from_file() {
    let agent = Agent::start();
    let file = agent.dir.path().join("request.json");
    std::fs::write(&file, r#"{"list_services": ""}"#).expect("write request file");
    let arg = format!("@{}", file.display());
    let run = agent.ctl(&["call", REFLECT, &arg]);
    let services = listed_services(run.success());
    assert!(
        services.contains(&"felhom.agent.v1.Agent".to_owned()),
        "{services:?}"
    );
}

#[test]
fn call_reads_request_from_stdin() {
    let agent = Agent::start();
    let run = agent.ctl_with_stdin(&["call", REFLECT, "-"], r#"{"listServices": ""}"#);
    let services = listed_services(run.success());
    assert!(
        services.contains(&"felhom.agent.v1.Agent".to_owned()),
        "{services:?}"
    );
}

#[test]
fn streaming_call_prints_every_response() {
    let agent = Agent::start();
    let run = agent.ctl(&[
        "call",
        REFLECT,
        r#"{"listServices": ""} {"fileContainingSymbol": "felhom.agent.v1.Agent"}"#,
    ]);
    let stdout = run.success();
    let responses: Vec<serde_json::Value> = serde_json::Deserializer::from_str(stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("a sequence of JSON responses");
    assert_eq!(responses.len(), 2, "{stdout}");
    assert!(
        responses[0].get("listServicesResponse").is_some(),
        "{stdout}"
    );
    assert!(
        responses[1].get("fileDescriptorResponse").is_some(),
        "{stdout}"
    );
}

#[test]
fn unknown_method_lists_the_known_methods() {
    let agent = Agent::start();
    let run = agent.ctl(&["call", "felhom.agent.v1.Agent/Reboot"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        "felhomctl: service felhom.agent.v1.Agent has no method `Reboot`; methods: Selftest, ListGuests, ListTasks, ListJobs, ListOperations, AuditTail, AuditVerify, MintGuestToken, RotateGuestToken, RevokeGuestToken, ListGuestTokens, ProvisionGuest, GetLocalApiPins, RotateLocalApiCertificate, BackupNow, GetBackupStatus, ListBackups, GetBackupDue, RunRestoreTest, GetRestoreTestStatus, RunVerify, GetVerifyStatus\n"
    );
}

#[test]
fn invalid_json_reports_its_position() {
    let agent = Agent::start();
    let run = agent.ctl(&["call", REFLECT, "{\"listServices\": \n  oops}"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        "felhomctl: invalid JSON in the argument: expected value at line 2 column 3\n"
    );
}

#[test]
fn unknown_field_is_named() {
    let agent = Agent::start();
    let run = agent.ctl(&[
        "call",
        "felhom.agent.v1.Agent/Selftest",
        r#"{"verbose": true}"#,
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        "felhomctl: invalid request in the argument for felhom.agent.v1.SelftestRequest: unrecognized field name 'verbose'\n"
    );
}

#[test]
fn grpc_error_prints_code_and_message() {
    let agent = Agent::start();
    let run = agent.ctl(&["call", "felhom.agent.v1.Agent/Selftest"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(
        run.stderr,
        "felhomctl: FAILED_PRECONDITION: Proxmox VE is not configured ([proxmox] endpoint)\n"
    );
    assert_eq!(run.stdout, "");
}
