//! The `felhomctl selftest` shortcut: a table by default, JSON with `--json`, exit code 1 when
//! the report is not ok, and the agent's gRPC error when Proxmox VE is not configured.
//! (A passing selftest needs the Proxmox simulator; `felhom_agent::ctl::selftest` is the
//! entry point for that test.)

mod common;

use common::{Agent, PVE_NOT_CONFIGURED};

#[test]
fn failed_report_prints_fail_rows_and_exits_1() {
    let agent = Agent::start_with_unreachable_pve();
    let run = agent.ctl(&["selftest"]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(lines[0].starts_with("FAIL version "), "{run:?}");
    assert_eq!(run.stderr, "");
}

#[test]
fn json_flag_prints_the_report_as_json() {
    let agent = Agent::start_with_unreachable_pve();
    let run = agent.ctl(&["selftest", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON report");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["checks"][0]["name"], "version", "{report}");
    assert_eq!(report["checks"][0]["ok"], false, "{report}");
}

#[test]
fn library_entry_point_returns_report_and_verdict() {
    let agent = Agent::start_with_unreachable_pve();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let output = rt
        .block_on(felhom_agent::ctl::selftest(&agent.socket))
        .expect("the agent answers with a report");
    assert!(!output.ok);
    assert!(
        output.table().starts_with("FAIL version "),
        "{}",
        output.table()
    );
}

#[test]
fn unconfigured_agent_error_is_printed_with_its_code() {
    Agent::start()
        .ctl(&["selftest"])
        .fails_with(4, PVE_NOT_CONFIGURED);
}
