//! Operation journal over a real database file, including a simulated crash.

use felhom_agent::infra::state::{NewOperation, OperationState, Resource, StateDb, StepState};

const RESTORE_UPID: &str =
    "UPID:pve1:0001E240:00A2F3B1:6745A1C2:vzrestore:9001:felhom-agent@pve!agent:";
const START_UPID: &str =
    "UPID:pve1:0001E250:00A2F3C0:6745A1D0:vzstart:9001:felhom-agent@pve!agent:";

#[test]
fn step_lifecycle_is_recorded_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let journal = db.journal();
    let op = journal
        .begin(NewOperation {
            kind: "provision",
            vmid: Some(9001),
            idempotency_key: Some("req-1"),
        })
        .unwrap();
    let restore = journal
        .step_started(op, "restore golden image", None)
        .unwrap();
    journal
        .record_created(
            restore,
            &Resource::Guest {
                vmid: 9001,
                marker: None,
            },
        )
        .unwrap();
    journal.record_upid(restore, RESTORE_UPID).unwrap();
    journal.step_done(restore).unwrap();
    let start = journal
        .step_started(op, "start guest", Some(START_UPID))
        .unwrap();
    journal.step_done(start).unwrap();
    journal.mark_completed(op).unwrap();

    let stored = journal.get(op).unwrap().unwrap();
    assert_eq!(stored.state, OperationState::Completed);
    assert_eq!(stored.idempotency_key.as_deref(), Some("req-1"));
    let steps: Vec<_> = stored
        .steps
        .iter()
        .map(|s| (s.index, s.name.as_str(), s.state, s.upid.as_deref()))
        .collect();
    assert_eq!(
        steps,
        [
            (
                0,
                "restore golden image",
                StepState::Done,
                Some(RESTORE_UPID)
            ),
            (1, "start guest", StepState::Done, Some(START_UPID)),
        ]
    );
    assert_eq!(stored.resources.len(), 1);
    assert_eq!(
        stored.resources[0].resource,
        Resource::Guest {
            vmid: 9001,
            marker: None
        }
    );
    assert_eq!(stored.resources[0].step, 0);
    assert!(journal.unfinished().unwrap().is_empty());
    assert_eq!(journal.recent(10).unwrap()[0].id, op);
}

#[test]
fn unfinished_operations_survive_a_crash_with_their_upid_and_created_resources() {
    let dir = tempfile::tempdir().unwrap();
    let (running, compensating) = {
        let db = StateDb::open(dir.path()).unwrap();
        let journal = db.journal();
        let done = journal
            .begin(NewOperation {
                kind: "snapshot",
                vmid: Some(9003),
                idempotency_key: None,
            })
            .unwrap();
        journal.mark_completed(done).unwrap();

        let running = journal
            .begin(NewOperation {
                kind: "provision",
                vmid: Some(9001),
                idempotency_key: None,
            })
            .unwrap();
        let step = journal
            .step_started(running, "restore golden image", None)
            .unwrap();
        journal
            .record_created(
                step,
                &Resource::Guest {
                    vmid: 9001,
                    marker: None,
                },
            )
            .unwrap();
        journal.record_upid(step, RESTORE_UPID).unwrap();

        let compensating = journal
            .begin(NewOperation {
                kind: "restore-test",
                vmid: Some(9002),
                idempotency_key: None,
            })
            .unwrap();
        let step = journal
            .step_started(compensating, "restore backup", None)
            .unwrap();
        journal
            .record_created(
                step,
                &Resource::Guest {
                    vmid: 9002,
                    marker: None,
                },
            )
            .unwrap();
        journal.step_failed(step, "restore task failed").unwrap();
        journal
            .begin_compensation(compensating, "restore task failed")
            .unwrap();

        // Crash: the process dies without completing anything or closing the connection.
        std::mem::forget(db);
        (running, compensating)
    };

    let db = StateDb::open(dir.path()).unwrap();
    let unfinished = db.journal().unfinished().unwrap();
    let ids: Vec<_> = unfinished.iter().map(|op| op.id).collect();
    assert_eq!(ids, [running, compensating]);

    let first = &unfinished[0];
    assert_eq!(first.state, OperationState::Running);
    let in_flight = first
        .in_flight_step()
        .expect("the restore step is still in flight");
    assert_eq!(in_flight.upid.as_deref(), Some(RESTORE_UPID));
    assert_eq!(
        first.remaining_resources().collect::<Vec<_>>(),
        [&Resource::Guest {
            vmid: 9001,
            marker: None
        }]
    );

    let second = &unfinished[1];
    assert_eq!(second.state, OperationState::Compensating);
    assert_eq!(second.error.as_deref(), Some("restore task failed"));
    assert_eq!(
        db.journal()
            .creator_of(&Resource::Guest {
                vmid: 9002,
                marker: None
            })
            .unwrap(),
        Some(compensating)
    );
}

#[test]
fn compensation_after_restart_destroys_only_what_the_operation_created() {
    let dir = tempfile::tempdir().unwrap();
    let op = {
        let db = StateDb::open(dir.path()).unwrap();
        let journal = db.journal();
        let op = journal
            .begin(NewOperation {
                kind: "provision",
                vmid: Some(9001),
                idempotency_key: None,
            })
            .unwrap();
        let step = journal
            .step_started(op, "restore golden image", Some(RESTORE_UPID))
            .unwrap();
        journal
            .record_created(
                step,
                &Resource::Guest {
                    vmid: 9001,
                    marker: None,
                },
            )
            .unwrap();
        op
    };

    let db = StateDb::open(dir.path()).unwrap();
    let journal = db.journal();
    let stale = journal.unfinished().unwrap().remove(0);
    let step = stale.in_flight_step().unwrap();
    journal
        .step_failed(
            felhom_agent::infra::state::StepRef {
                operation: op,
                index: step.index,
            },
            "agent restarted; task ended with an error",
        )
        .unwrap();
    journal
        .begin_compensation(op, "agent restarted mid-restore")
        .unwrap();
    let undo = journal
        .step_started(op, "destroy guest 9001", None)
        .unwrap();
    for created in stale.remaining_resources() {
        assert_eq!(journal.creator_of(created).unwrap(), Some(op));
        journal.record_removed(op, created).unwrap();
    }
    // A guest this operation never created cannot be recorded as removed by it.
    let err = journal
        .record_removed(
            op,
            &Resource::Guest {
                vmid: 100,
                marker: None,
            },
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Operation {op} did not create guest 100")
    );
    journal.step_done(undo).unwrap();
    journal.mark_compensated(op).unwrap();
    assert!(journal.unfinished().unwrap().is_empty());
    assert_eq!(
        journal
            .creator_of(&Resource::Guest {
                vmid: 9001,
                marker: None
            })
            .unwrap(),
        None
    );
}
