//! Results: deduplicated by (task, attempt), fenced by the current attempt.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::{finished, noop_request, TestDb};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::{Outcome, TaskState};
use ris_store::{ResultOutcome, TaskRepo, TenantCtx, Transition, TransitionOutcome};
use serde_json::json;

/// A task placed on `agent` and executing `attempts` times (earlier attempts retried).
async fn running_task(db: &TestDb, ctx: &TenantCtx, agent: AgentId, attempts: u32) -> TaskId {
    let id = TaskId::new();
    db.store
        .insert_task(ctx, id, &noop_request(60), None)
        .await
        .unwrap();
    for attempt in 1..=attempts {
        if attempt > 1 {
            let retry = Transition {
                reason: Some("agent_lost".into()),
                ..Transition::to(TaskState::Retrying)
            };
            assert!(matches!(
                db.store.transition_task(ctx, id, retry).await.unwrap(),
                TransitionOutcome::Applied(_)
            ));
        }
        let placed = db.store.begin_attempt(ctx, id, agent).await.unwrap();
        assert!(
            matches!(placed, TransitionOutcome::Applied(ref t) if t.attempts == attempt),
            "{placed:?}"
        );
        let exec = Transition {
            attempt: Some(attempt),
            ..Transition::to(TaskState::Executing)
        };
        assert!(matches!(
            db.store.transition_task(ctx, id, exec).await.unwrap(),
            TransitionOutcome::Applied(_)
        ));
    }
    id
}

#[tokio::test]
async fn a_redelivered_result_is_recorded_once() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let agent = AgentId::new();
    let id = running_task(&db, &ctx, agent, 1).await;
    let msg = finished(id, 1, agent, Outcome::Failed);

    let ResultOutcome::Applied(task) = db.store.record_result(&ctx, &msg).await.unwrap() else {
        panic!("result refused");
    };
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.reason.as_deref(), Some("exit_status"));
    assert_eq!(task.result.as_ref(), Some(&msg.result));

    assert_eq!(
        db.store.record_result(&ctx, &msg).await.unwrap(),
        ResultOutcome::Duplicate
    );

    let events = db.store.task_events(&ctx, id).await.unwrap();
    let finals: Vec<_> = events
        .iter()
        .filter(|e| e.state == TaskState::Failed)
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(
        finals[0].detail,
        json!({ "duration_ms": 42, "outcome": "failed" })
    );
    assert_eq!(finals[0].attempt, 1);
    assert_eq!(db.store.get_task(&ctx, id).await.unwrap(), Some(task));
}

#[tokio::test]
async fn a_result_of_an_earlier_attempt_is_stale() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let agent = AgentId::new();
    let id = running_task(&db, &ctx, agent, 2).await;

    let late = finished(id, 1, agent, Outcome::Completed);
    let res = db.store.record_result(&ctx, &late).await.unwrap();
    assert_eq!(res, ResultOutcome::Stale { current_attempt: 2 });
    let task = db.store.get_task(&ctx, id).await.unwrap().unwrap();
    assert_eq!((task.state, task.result), (TaskState::Executing, None));
    // The stale result is kept, and its redelivery is a duplicate.
    assert_eq!(db.count("SELECT count(*) FROM task_results").await, 1);
    assert_eq!(
        db.store.record_result(&ctx, &late).await.unwrap(),
        ResultOutcome::Duplicate
    );

    let current = finished(id, 2, agent, Outcome::Completed);
    let ResultOutcome::Applied(done) = db.store.record_result(&ctx, &current).await.unwrap() else {
        panic!("current result refused");
    };
    assert_eq!((done.state, done.reason), (TaskState::Completed, None));
}

#[tokio::test]
async fn results_for_finished_or_unknown_tasks_change_nothing() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let agent = AgentId::new();
    let id = running_task(&db, &ctx, agent, 1).await;
    db.store
        .transition_task(&ctx, id, Transition::to(TaskState::Cancelled))
        .await
        .unwrap();

    let res = db
        .store
        .record_result(&ctx, &finished(id, 1, agent, Outcome::Completed))
        .await
        .unwrap();
    assert!(matches!(res, ResultOutcome::Invalid(_)), "{res:?}");
    assert_eq!(
        db.store.get_task(&ctx, id).await.unwrap().unwrap().state,
        TaskState::Cancelled
    );

    let unknown = finished(TaskId::new(), 1, agent, Outcome::Completed);
    assert_eq!(
        db.store.record_result(&ctx, &unknown).await.unwrap(),
        ResultOutcome::NotFound
    );
}

#[tokio::test]
async fn a_result_may_overtake_its_executing_report() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let agent = AgentId::new();
    let id = TaskId::new();
    db.store
        .insert_task(&ctx, id, &noop_request(60), None)
        .await
        .unwrap();
    db.store.begin_attempt(&ctx, id, agent).await.unwrap();

    let res = db
        .store
        .record_result(&ctx, &finished(id, 1, agent, Outcome::Completed))
        .await
        .unwrap();
    assert!(
        matches!(res, ResultOutcome::Applied(ref t) if t.state == TaskState::Completed),
        "{res:?}"
    );
    // The late executing report is then refused.
    let exec = Transition {
        attempt: Some(1),
        ..Transition::to(TaskState::Executing)
    };
    let late = db.store.transition_task(&ctx, id, exec).await.unwrap();
    assert!(matches!(late, TransitionOutcome::Invalid(_)));
}
