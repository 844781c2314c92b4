//! felhomctl `call` against the agent's real gRPC server: request JSON from the argument, a
//! file and stdin; streaming responses; request errors; gRPC status errors.
//!
//! Success paths use the reflection service itself (the only RPC that succeeds without a
//! Proxmox VE behind the agent); it is bidirectional streaming, so it also shows that every
//! response is printed.

mod common;

use common::{Agent, PVE_NOT_CONFIGURED, Run};

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

/// The run succeeded and its `listServices` response names the agent's service.
#[track_caller]
fn assert_lists_the_agent(run: &Run) {
    let services = listed_services(run.success());
    assert!(
        services.contains(&"felhom.agent.v1.Agent".to_owned()),
        "{services:?}"
    );
}

#[test]
fn call_with_json_argument_prints_the_response() {
    let agent = Agent::start();
    let run = agent.ctl(&["call", REFLECT, r#"{"listServices": ""}"#]);
    assert_lists_the_agent(&run);
}

#[test]
fn call_accepts_dotted_method_name() {
    let agent = Agent::start();
    let dotted = REFLECT.replace('/', ".");
    let run = agent.ctl(&["call", &dotted, r#"{"listServices": ""}"#]);
    assert_lists_the_agent(&run);
}

#[test]
fn call_reads_request_from_file() {
    let agent = Agent::start();
    let file = agent.dir.path().join("request.json");
    std::fs::write(&file, r#"{"list_services": ""}"#).expect("write request file");
    let arg = format!("@{}", file.display());
    let run = agent.ctl(&["call", REFLECT, &arg]);
    assert_lists_the_agent(&run);
}

#[test]
fn call_reads_request_from_stdin() {
    let agent = Agent::start();
    let run = agent.ctl_with_stdin(&["call", REFLECT, "-"], r#"{"listServices": ""}"#);
    assert_lists_the_agent(&run);
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
    Agent::start()
        .ctl(&["call", "felhom.agent.v1.Agent/Reboot"])
        .fails_with(2, "felhomctl: service felhom.agent.v1.Agent has no method `Reboot`; methods: Selftest, ListGuests, ListTasks, ListJobs, ListOperations, AuditTail, AuditVerify, AuditCheckpoint, MintGuestToken, RotateGuestToken, RevokeGuestToken, ListGuestTokens, ProvisionGuest, GetLocalApiPins, RotateLocalApiCertificate, BackupNow, GetBackupStatus, ListBackups, GetBackupDue, RunRestoreTest, GetRestoreTestStatus, RunVerify, GetVerifyStatus\n");
}

#[test]
fn invalid_json_reports_its_position() {
    Agent::start()
        .ctl(&["call", REFLECT, "{\"listServices\": \n  oops}"])
        .fails_with(
            2,
            "felhomctl: invalid JSON in the argument: expected value at line 2 column 3\n",
        );
}

#[test]
fn unknown_field_is_named() {
    let args = [
        "call",
        "felhom.agent.v1.Agent/Selftest",
        r#"{"verbose": true}"#,
    ];
    Agent::start().ctl(&args).fails_with(2, "felhomctl: invalid request in the argument for felhom.agent.v1.SelftestRequest: unrecognized field name 'verbose'\n");
}

#[test]
fn grpc_error_prints_code_and_message() {
    Agent::start()
        .ctl(&["call", "felhom.agent.v1.Agent/Selftest"])
        .fails_with_only(4, PVE_NOT_CONFIGURED);
}

#[test]
fn an_operator_signs_off_the_audit_head_they_verified() {
    let agent = Agent::start();
    let verified: serde_json::Value = serde_json::from_str(
        agent
            .ctl(&["call", "felhom.agent.v1.Agent/AuditVerify", "{}"])
            .success(),
    )
    .unwrap();
    let head = verified["headHash"].as_str().unwrap().to_owned();

    let stale = agent.ctl(&[
        "call",
        "felhom.agent.v1.Agent/AuditCheckpoint",
        &format!(r#"{{"headHash": "{}"}}"#, "f".repeat(64)),
    ]);
    assert!(
        stale
            .stderr
            .starts_with("felhomctl: FAILED_PRECONDITION: The audit log's head is "),
        "{stale:?}"
    );
    let signed: serde_json::Value = serde_json::from_str(
        agent
            .ctl(&[
                "call",
                "felhom.agent.v1.Agent/AuditCheckpoint",
                &format!(r#"{{"headHash": "{head}"}}"#),
            ])
            .success(),
    )
    .unwrap();
    assert_eq!(signed["headHash"], head.as_str());
    let tail = agent.ctl(&["call", "felhom.agent.v1.Agent/AuditTail", "{}"]);
    assert!(tail.success().contains("audit.checkpoint"), "{tail:?}");
}
