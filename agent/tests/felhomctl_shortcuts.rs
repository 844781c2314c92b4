//! The felhomctl read shortcuts against the agent's real gRPC server and state database:
//! `jobs`, `journal`, `audit`, `audit verify` (tables, `--json`, exit codes), and `guests` /
//! `tasks` reporting the agent's error when Proxmox VE is not configured. (Guests and tasks with
//! data need the Proxmox simulator: see the felhom-simhost crate's `felhomctl_shortcuts` test.)

mod common;

use common::{Agent, PVE_NOT_CONFIGURED};
use felhom_agent::infra::state::{
    DB_FILE_NAME, JobId, NewAuditEntry, NewOperation, OperationId, StateDb,
};

fn db(agent: &Agent) -> StateDb {
    StateDb::open(agent.dir.path()).expect("the agent's state database opens twice")
}

/// Begins a `provision` operation for guest 9100 in the journal.
fn begin_provision(db: &StateDb) -> OperationId {
    db.journal()
        .begin(NewOperation {
            kind: "provision",
            vmid: Some(9100),
            idempotency_key: None,
        })
        .expect("the journal begins an operation")
}

fn audit_rows(db: &StateDb, n: u32) {
    for i in 1..=n {
        db.audit()
            .append(NewAuditEntry {
                actor: "operator:uid=1000",
                action: "guest.provision",
                target: &format!("guest:{}", 9100 + i),
                detail: "",
            })
            .expect("audit append succeeds");
    }
}

#[test]
fn journal_prints_operations_as_a_table() {
    let agent = Agent::start();
    begin_provision(&db(&agent));
    let run = agent.ctl(&["journal"]);
    let lines = run.table_under(&["ID", "KIND", "VMID", "STATE", "CREATED", "ERROR"]);
    let out = &run.stdout;
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        &lines[1][..4],
        ["1", "provision", "9100", "running"],
        "{out}"
    );
}

#[test]
fn journal_json_includes_the_steps() {
    let agent = Agent::start();
    let db = db(&agent);
    let op = begin_provision(&db);
    db.journal().step_started(op, "restore", None).unwrap();
    let out = agent.ctl(&["journal", "--json"]).success().to_owned();
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        json["operations"][0]["steps"][0]["name"], "restore",
        "{json}"
    );
    assert_eq!(
        json["operations"][0]["steps"][0]["state"], "started",
        "{json}"
    );
}

#[test]
fn jobs_prints_the_job_history() {
    let agent = Agent::start();
    let id = JobId::generate().unwrap();
    db(&agent)
        .jobs()
        .insert_queued(&id, 9100, "provision")
        .unwrap();
    let run = agent.ctl(&["jobs"]);
    let lines = run.table_under(&["JOB", "VMID", "KIND", "PHASE", "CREATED", "ERROR"]);
    let out = &run.stdout;
    assert_eq!(
        lines[1][..4],
        [id.to_string().as_str(), "9100", "provision", "queued"],
        "{out}"
    );
}

#[test]
fn audit_prints_the_newest_rows() {
    let agent = Agent::start();
    audit_rows(&db(&agent), 2);
    let run = agent.ctl(&["audit"]);
    let lines = run.table_under(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "DETAIL"]);
    let out = &run.stdout;
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[2][0], "2", "{out}");
    assert_eq!(
        lines[2][2..5],
        ["operator:uid=1000", "guest.provision", "guest:9102"],
        "{out}"
    );
}

#[test]
fn audit_verify_is_ok_on_a_fresh_database() {
    let agent = Agent::start();
    let run = agent.ctl(&["audit", "verify"]).exits(0);
    let lines = run.table();
    assert_eq!(lines[0], ["OK", "ROWS", "HEAD", "PROBLEM"], "{run:?}");
    assert_eq!(lines[1][..2], ["ok", "0"], "{run:?}");
}

#[test]
fn audit_verify_names_the_tampered_row_and_exits_1() {
    let agent = Agent::start();
    audit_rows(&db(&agent), 4);
    let raw = rusqlite::Connection::open(agent.dir.path().join(DB_FILE_NAME)).unwrap();
    raw.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .expect("the agent created both triggers");
    raw.execute("UPDATE audit_log SET target = 'guest:1' WHERE seq = 2", [])
        .unwrap();
    let run = agent.ctl(&["audit", "verify"]).exits(1);
    let row = run.stdout.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("FAIL "), "{run:?}");
    assert!(
        row.ends_with("Audit log row 2 was altered: its hash does not match its contents"),
        "{run:?}"
    );
    let json = agent.ctl(&["audit", "verify", "--json"]);
    assert_eq!(json.code, 1, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(
        v["problem"],
        "Audit log row 2 was altered: its hash does not match its contents"
    );
}

#[test]
fn guests_without_proxmox_prints_the_agents_error() {
    Agent::start()
        .ctl(&["guests"])
        .fails_with(4, PVE_NOT_CONFIGURED);
}
