//! Reports applied in batches: each as it would be alone, all or nothing.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::{finished, noop_request, TestDb};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::{Outcome, TaskState};
use ris_store::{
    RecoveryRepo, Report, ReportOutcome, ResultOutcome, TaskRepo, TenantCtx, Transition,
    TransitionOutcome,
};

/// A task placed on `agent` (attempt 1, `routing`).
async fn placed_task(db: &TestDb, ctx: &TenantCtx, agent: AgentId) -> TaskId {
    let id = TaskId::new();
    db.store
        .insert_task(ctx, id, &noop_request(60), None)
        .await
        .unwrap();
    let placed = db.store.begin_attempt(ctx, id, agent).await.unwrap();
    assert!(
        matches!(placed, TransitionOutcome::Applied(_)),
        "{placed:?}"
    );
    id
}

fn executing(task: TaskId, agent: AgentId) -> Report {
    Report::Transition {
        task,
        change: Transition {
            attempt: Some(1),
            agent_id: Some(agent),
            ..Transition::to(TaskState::Executing)
        },
    }
}

fn no_retry(
) -> impl Fn(&ris_store::TaskRecord, &ris_schemas::task::TaskResult) -> Option<std::time::Duration> + Sync
{
    |_, _| None
}

async fn states(db: &TestDb, ctx: &TenantCtx, id: TaskId) -> Vec<TaskState> {
    let events = db.store.task_events(ctx, id).await.unwrap();
    events.into_iter().map(|e| e.state).collect()
}

#[tokio::test]
async fn a_batch_applies_each_report_as_it_would_alone() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let agent = AgentId::new();
    let (a, b) = (
        placed_task(&db, &ctx, agent).await,
        placed_task(&db, &ctx, agent).await,
    );
    let unknown = TaskId::new();
    let reports = vec![
        // One task's `executing` report, then its result, in arrival order.
        executing(a, agent),
        Report::Result(finished(a, 1, agent, Outcome::Completed)),
        // A result that overtook its `executing` report.
        Report::Result(finished(b, 1, agent, Outcome::Failed)),
        Report::Result(finished(unknown, 1, agent, Outcome::Completed)),
        // A redelivery of the first result.
        Report::Result(finished(a, 1, agent, Outcome::Completed)),
    ];
    let outcomes = db
        .store
        .apply_reports(&ctx, &reports, &no_retry())
        .await
        .unwrap();
    assert_eq!(outcomes.len(), reports.len());
    assert!(
        matches!(&outcomes[0], ReportOutcome::Transition(TransitionOutcome::Applied(t)) if t.state == TaskState::Executing),
        "{:?}",
        outcomes[0]
    );
    assert!(
        matches!(&outcomes[1], ReportOutcome::Result(ResultOutcome::Applied(t)) if t.state == TaskState::Completed),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(&outcomes[2], ReportOutcome::Result(ResultOutcome::Applied(t)) if t.state == TaskState::Failed),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(outcomes[3], ReportOutcome::Result(ResultOutcome::NotFound));
    assert_eq!(outcomes[4], ReportOutcome::Result(ResultOutcome::Duplicate));

    use TaskState::*;
    assert_eq!(
        states(&db, &ctx, a).await,
        [Queued, Routing, Executing, Completed]
    );
    // The overtaken start is recorded from the result, as alone.
    assert_eq!(
        states(&db, &ctx, b).await,
        [Queued, Routing, Executing, Failed]
    );
}

#[tokio::test]
async fn a_batch_with_a_report_the_database_refuses_keeps_nothing() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let agent = AgentId::new();
    let (a, b) = (
        placed_task(&db, &ctx, agent).await,
        placed_task(&db, &ctx, agent).await,
    );
    // PostgreSQL's jsonb cannot hold a NUL character: the event insert fails.
    let poisoned = Report::Transition {
        task: b,
        change: Transition {
            detail: serde_json::json!({ "note": "bad\u{0}byte" }),
            ..Transition::to(TaskState::Executing)
        },
    };
    let reports = vec![
        Report::Result(finished(a, 1, agent, Outcome::Completed)),
        poisoned,
    ];
    assert!(db
        .store
        .apply_reports(&ctx, &reports, &no_retry())
        .await
        .is_err());
    for id in [a, b] {
        let task = db.store.get_task(&ctx, id).await.unwrap().unwrap();
        assert_eq!(task.state, TaskState::Routing, "{task:?}");
    }
    // The good report alone goes through.
    let outcomes = db
        .store
        .apply_reports(&ctx, &reports[..1], &no_retry())
        .await
        .unwrap();
    assert!(matches!(
        &outcomes[0],
        ReportOutcome::Result(ResultOutcome::Applied(_))
    ));
}
