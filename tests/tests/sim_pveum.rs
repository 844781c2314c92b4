//! The `pveum` stand-in against the simulator, as enrollment runs it: every command line maps
//! to the access API and prints what the real CLI prints.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

fn pveum(state: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_felhom-sim-pveum"))
        .arg("--sim-state")
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pveum_sets_up_a_token_the_simulator_then_accepts() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = felhom_simhost::devhost_helper::write_sim_state(dir.path(), &sim).unwrap();

    let (code, _, err) = pveum(
        &state,
        &["role", "add", "Felhom", "--privs", "VM.Audit,Sys.Audit"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pveum(
        &state,
        &["user", "add", "enrolled@pve", "--comment", "felhom"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pveum(
        &state,
        &[
            "user",
            "token",
            "add",
            "enrolled@pve",
            "agent",
            "--privsep",
            "1",
            "--output-format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let token: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(token["full-tokenid"], "enrolled@pve!agent");
    let secret = token["value"].as_str().unwrap();
    for (kind, who) in [
        ("--users", "enrolled@pve"),
        ("--tokens", "enrolled@pve!agent"),
    ] {
        let (code, _, err) = pveum(
            &state,
            &["acl", "modify", "/", "--roles", "Felhom", kind, who],
        );
        assert_eq!(code, 0, "{err}");
    }
    let resp = client(&sim)
        .get(format!("{}/api2/json/access/permissions", sim.url()))
        .header(
            "Authorization",
            format!("PVEAPIToken=enrolled@pve!agent={secret}"),
        )
        .send()
        .await
        .unwrap();
    let perms: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(perms["data"]["/"]["Sys.Audit"], 1, "{perms}");

    let (code, out, _) = pveum(
        &state,
        &[
            "user",
            "token",
            "list",
            "enrolled@pve",
            "--output-format",
            "json",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("\"tokenid\":\"agent\""), "{out}");
    // The secret is printed once, by `token add`, and never again.
    assert!(!out.contains(secret), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pveum_prints_pves_errors_and_exits_255() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = felhom_simhost::devhost_helper::write_sim_state(dir.path(), &sim).unwrap();
    pveum(&state, &["role", "add", "Felhom"]);
    let (code, _, err) = pveum(&state, &["role", "add", "Felhom"]);
    assert_eq!(code, 255);
    assert_eq!(
        err.trim(),
        "create role failed: role 'Felhom' already exists"
    );
    pveum(
        &state,
        &["user", "token", "add", "felhom-agent@pve", "second"],
    );
    let (code, _, err) = pveum(
        &state,
        &["user", "token", "add", "felhom-agent@pve", "second"],
    );
    assert_eq!(code, 255);
    assert_eq!(
        err,
        "400 Parameter verification failed.\ntokenid: Token already exists.\n"
    );
}
