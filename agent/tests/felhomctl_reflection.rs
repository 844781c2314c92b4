//! felhomctl `list` and `describe` against the agent's real gRPC server, driven by reflection.

mod common;

use common::Agent;

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
    let agent = Agent::start();
    let run = agent.ctl(&["list", "felhom.agent.v1.Nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .starts_with("felhomctl: unknown service `felhom.agent.v1.Nope`; services: "),
        "{run:?}"
    );
    assert!(run.stderr.contains("felhom.agent.v1.Agent"), "{run:?}");
}

#[test]
fn describe_method_prints_its_rpc_line() {
    let agent = Agent::start();
    let run = agent.ctl(&["describe", "felhom.agent.v1.Agent.Selftest"]);
    let text = run.success();
    assert!(
        text.starts_with("felhom.agent.v1.Agent.Selftest is a method:\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "rpc Selftest ( .felhom.agent.v1.SelftestRequest ) returns ( .felhom.agent.v1.SelftestReport );"
        ),
        "{text}"
    );
}

#[test]
fn describe_message_prints_its_fields() {
    let agent = Agent::start();
    let run = agent.ctl(&["describe", "felhom.agent.v1.SelftestReport"]);
    let text = run.success();
    assert!(
        text.starts_with("felhom.agent.v1.SelftestReport is a message:\n"),
        "{text}"
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
    let agent = Agent::start();
    let run = agent.ctl(&["describe", "grpc.reflection.v1.ServerReflection"]);
    let text = run.success();
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
    let agent = Agent::start();
    let run = agent.ctl(&["describe", "felhom.agent.v1.Nothing"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .starts_with("felhomctl: unknown symbol `felhom.agent.v1.Nothing`; services: "),
        "{run:?}"
    );
    assert!(run.stderr.contains("felhom.agent.v1.Agent"), "{run:?}");
}
