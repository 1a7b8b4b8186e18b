//! Cancelling through the API: at once before a task runs, a recorded request while it
//! runs, nothing once it has ended; scoped to the tenant.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::{finished, noop_request, TestDb};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::{Outcome, TaskState};
use ris_store::{CancelOutcome, ResultOutcome, TaskRepo, TenantCtx, Transition, TransitionOutcome};
use serde_json::json;

async fn queued_task(db: &TestDb, ctx: &TenantCtx) -> TaskId {
    let id = TaskId::new();
    db.store
        .insert_task(ctx, id, &noop_request(60), None)
        .await
        .unwrap();
    id
}

fn detail() -> serde_json::Value {
    json!({ "cancelled_by": "api", "api_key_id": "k" })
}

#[tokio::test]
async fn a_queued_task_is_cancelled_at_once_and_never_placed() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let id = queued_task(&db, &ctx).await;

    let outcome = db.store.cancel_task(&ctx, id, detail()).await.unwrap();
    let CancelOutcome::Cancelled { task, notify } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(notify, None);
    assert_eq!(task.state, TaskState::Cancelled);
    assert_eq!(task.reason.as_deref(), Some("cancelled"));
    assert_eq!(task.attempts, 0);
    assert!(task.cancel_requested_at.is_some());

    let events = db.store.task_events(&ctx, id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.state, TaskState::Cancelled);
    assert_eq!(last.detail, detail());
    // A dispatcher that still holds the submission cannot place it.
    let placed = db.store.begin_attempt(&ctx, id, AgentId::new()).await;
    assert!(matches!(placed.unwrap(), TransitionOutcome::Invalid(_)));
    // Again: finished.
    let again = db.store.cancel_task(&ctx, id, detail()).await.unwrap();
    assert_eq!(again, CancelOutcome::Finished(TaskState::Cancelled));
}

#[tokio::test]
async fn a_routing_task_is_cancelled_and_names_its_agent() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let agent = AgentId::new();
    let id = queued_task(&db, &ctx).await;
    db.store.begin_attempt(&ctx, id, agent).await.unwrap();

    let outcome = db.store.cancel_task(&ctx, id, detail()).await.unwrap();
    let CancelOutcome::Cancelled { task, notify } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(notify, Some(agent));
    assert_eq!((task.state, task.attempts), (TaskState::Cancelled, 1));
    // A late `executing` report changes nothing.
    let exec = Transition {
        attempt: Some(1),
        ..Transition::to(TaskState::Executing)
    };
    let late = db.store.transition_task(&ctx, id, exec).await.unwrap();
    assert!(matches!(late, TransitionOutcome::Invalid(_)), "{late:?}");
}

#[tokio::test]
async fn an_executing_task_records_the_request_until_the_agent_reports() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let agent = AgentId::new();
    let id = queued_task(&db, &ctx).await;
    db.store.begin_attempt(&ctx, id, agent).await.unwrap();
    let exec = Transition {
        attempt: Some(1),
        ..Transition::to(TaskState::Executing)
    };
    db.store.transition_task(&ctx, id, exec).await.unwrap();
    let events_before = db.store.task_events(&ctx, id).await.unwrap().len();

    let outcome = db.store.cancel_task(&ctx, id, detail()).await.unwrap();
    let CancelOutcome::Requested { task, agent: to } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(to, agent);
    assert_eq!(task.state, TaskState::Executing);
    let first = task.cancel_requested_at.unwrap();
    // No state change, so no event; a second request keeps the first time.
    assert_eq!(
        db.store.task_events(&ctx, id).await.unwrap().len(),
        events_before
    );
    let again = db.store.cancel_task(&ctx, id, detail()).await.unwrap();
    assert!(
        matches!(again, CancelOutcome::Requested { ref task, .. } if task.cancel_requested_at == Some(first)),
        "{again:?}"
    );

    // The agent's report ends it.
    let report = finished(id, 1, agent, Outcome::Cancelled);
    let recorded = db.store.record_result(&ctx, &report).await.unwrap();
    assert!(
        matches!(recorded, ResultOutcome::Applied(ref t) if t.state == TaskState::Cancelled),
        "{recorded:?}"
    );
    let got = db.store.get_task(&ctx, id).await.unwrap().unwrap();
    assert_eq!(got.cancel_requested_at, Some(first));
}

#[tokio::test]
async fn unknown_and_other_tenants_tasks_are_not_found() {
    let db = TestDb::new().await;
    let ours = db.tenant("acme").await.ctx();
    let theirs = db.tenant("other").await.ctx();
    let id = queued_task(&db, &theirs).await;

    for task in [id, TaskId::new()] {
        let outcome = db.store.cancel_task(&ours, task, detail()).await.unwrap();
        assert_eq!(outcome, CancelOutcome::NotFound);
    }
    let untouched = db.store.get_task(&theirs, id).await.unwrap().unwrap();
    assert_eq!(untouched.state, TaskState::Queued);
    assert_eq!(untouched.cancel_requested_at, None);
}
