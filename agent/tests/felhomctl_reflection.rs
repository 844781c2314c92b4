//! felhomctl `list` and `describe` against the agent's real gRPC server, driven by reflection.

mod common;

use common::{Agent, SELFTEST_RPC};

/// What `felhomctl describe what` prints (asserted to succeed).
#[track_caller]
fn describe(what: &str) -> String {
    Agent::start().ctl(&["describe", what]).success().to_owned()
}

/// What `felhomctl describe what` prints, asserted to succeed and start with `heading`.
#[track_caller]
fn describe_as(what: &str, heading: &str) -> String {
    let text = describe(what);
    assert!(text.starts_with(heading), "{text}");
    text
}

/// felhomctl `args` exits 2 with an error that starts with `start` and names the agent's
/// service.
#[track_caller]
fn assert_names_the_services(args: &[&str], start: &str) {
    let run = Agent::start().ctl(args).exits(2);
    assert!(run.stderr.starts_with(start), "{run:?}");
    assert!(run.stderr.contains("felhom.agent.v1.Agent"), "{run:?}");
}

#[test]
fn list_shows_agent_and_reflection_services() {
    let agent = Agent::start();
    let run = agent.ctl(&["list"]);
    let services: Vec<&str> = run.success().lines().collect();
    assert!(services.contains(&"felhom.agent.v1.Agent"), "{services:?}");
    for expected in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(&expected), "{services:?}");
    }
    // The descriptor set also holds the helper's service and the guests' LocalApi; the
    // operators' socket serves neither (LocalApi has a socket of its own).
    for absent in ["felhom.helper.v1.Helper", "felhom.agent.v1.LocalApi"] {
        assert!(!services.contains(&absent), "{services:?}");
    }
    let mut sorted = services.clone();
    sorted.sort_unstable();
    assert_eq!(services, sorted, "services are listed sorted");
}

#[test]
fn list_service_shows_its_methods() {
    let agent = Agent::start();
    let run = agent.ctl(&["list", "felhom.agent.v1.Agent"]);
    let methods: Vec<&str> = run.success().lines().collect();
    assert!(
        methods.contains(&"felhom.agent.v1.Agent.Selftest"),
        "{methods:?}"
    );
    assert!(
        methods.contains(&"felhom.agent.v1.Agent.AuditVerify"),
        "{methods:?}"
    );
    assert!(
        methods
            .iter()
            .all(|m| m.starts_with("felhom.agent.v1.Agent.")),
        "{methods:?}"
    );
}

#[test]
fn list_unknown_service_names_the_known_ones() {
    assert_names_the_services(
        &["list", "felhom.agent.v1.Nope"],
        "felhomctl: unknown service `felhom.agent.v1.Nope`; services: ",
    );
}

#[test]
fn describe_method_prints_its_rpc_line() {
    let text = describe_as(
        "felhom.agent.v1.Agent.Selftest",
        "felhom.agent.v1.Agent.Selftest is a method:\n",
    );
    assert!(text.contains(SELFTEST_RPC), "{text}");
}

#[test]
fn describe_message_prints_its_fields() {
    let text = describe_as(
        "felhom.agent.v1.SelftestReport",
        "felhom.agent.v1.SelftestReport is a message:\n",
    );
    assert!(text.contains("message SelftestReport {\n"), "{text}");
    assert!(text.contains("  bool ok = 1;\n"), "{text}");
    assert!(
        text.contains("  repeated .felhom.agent.v1.SelftestCheck checks = 2;\n"),
        "{text}"
    );
}

#[test]
fn describe_service_lists_streaming_methods() {
    let text = describe("grpc.reflection.v1.ServerReflection");
    assert!(text.contains("service ServerReflection {"), "{text}");
    assert!(
        text.contains(
            "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest ) returns ( stream .grpc.reflection.v1.ServerReflectionResponse );"
        ),
        "{text}"
    );
}

#[test]
fn describe_unknown_symbol_names_the_services() {
    assert_names_the_services(
        &["describe", "felhom.agent.v1.Nothing"],
        "felhomctl: unknown symbol `felhom.agent.v1.Nothing`; services: ",
    );
}
