//! Tenant isolation: a tenant's context never reaches another tenant's rows, and
//! row-level security hides them even from a query that forgets its tenant filter.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use chrono::{Duration, Utc};
use common::{finished, new_agent, noop_request, TestDb};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::{Outcome, TaskState};
use ris_store::{
    AgentRepo, AuthRepo, ResultOutcome, StoreError, TaskFilter, TaskRepo, Tenant, Transition,
    TransitionOutcome,
};

struct World {
    db: TestDb,
    a: Tenant,
    b: Tenant,
    task: TaskId,
    agent: AgentId,
}

async fn world() -> World {
    let db = TestDb::new().await;
    let a = db.tenant("tenant-a").await;
    let b = db.tenant("tenant-b").await;
    let task = TaskId::new();
    db.store
        .insert_task(&a.ctx(), task, &noop_request(60), Some("key"))
        .await
        .unwrap();
    db.store
        .insert_enrollment_token(&a.ctx(), b"tok", Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    let (_, agent) = db
        .store
        .enroll_agent(b"tok", new_agent("web-1"))
        .await
        .unwrap();
    World {
        db,
        a,
        b,
        task,
        agent: agent.id,
    }
}

#[tokio::test]
async fn another_tenants_context_sees_nothing() {
    let World {
        db,
        a,
        b,
        task,
        agent,
    } = world().await;
    let theirs = b.ctx();
    let s = &db.store;

    assert_eq!(s.get_task(&theirs, task).await.unwrap(), None);
    assert!(s
        .list_tasks(&theirs, &TaskFilter::default(), 100, None)
        .await
        .unwrap()
        .is_empty());
    assert!(s.task_events(&theirs, task).await.unwrap().is_empty());
    assert_eq!(s.count_queued(&theirs).await.unwrap(), 0);
    assert_eq!(s.get_agent(&theirs, agent).await.unwrap(), None);
    assert!(s.list_agents(&theirs).await.unwrap().is_empty());

    let t = s
        .transition_task(&theirs, task, Transition::to(TaskState::Cancelled))
        .await
        .unwrap();
    assert_eq!(t, TransitionOutcome::NotFound);
    assert_eq!(
        s.begin_attempt(&theirs, task, agent).await.unwrap(),
        TransitionOutcome::NotFound
    );
    let r = s
        .record_result(&theirs, &finished(task, 1, agent, Outcome::Completed))
        .await
        .unwrap();
    assert_eq!(r, ResultOutcome::NotFound);

    // B may not take A's task id, and learns nothing about the task.
    let taken = s.insert_task(&theirs, task, &noop_request(60), None).await;
    assert!(
        matches!(taken, Err(StoreError::TaskIdTaken(id)) if id == task),
        "{taken:?}"
    );
    // The same idempotency key is B's own.
    let own = s
        .insert_task(&theirs, TaskId::new(), &noop_request(60), Some("key"))
        .await
        .unwrap();
    assert!(matches!(own, ris_store::Inserted::New(_)));

    // A's rows are untouched.
    let still = s.get_task(&a.ctx(), task).await.unwrap().unwrap();
    assert_eq!((still.state, still.attempts), (TaskState::Queued, 0));
    assert_eq!(s.task_events(&a.ctx(), task).await.unwrap().len(), 1);
}

/// Counts `table` rows as the application role with `tenant` (or none) set, with no
/// tenant filter in the query.
async fn visible(db: &TestDb, tenant: Option<&Tenant>, table: &str) -> i64 {
    let mut tx = db.store.pool().begin().await.unwrap();
    sqlx::query("SELECT set_config('role', 'ris_app', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('ris.tenant_id', $1, true)")
            .bind(t.id.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    n
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows() {
    let World { db, a, b, .. } = world().await;
    for table in [
        "tasks",
        "task_events",
        "agents",
        "enrollment_tokens",
        "tenants",
    ] {
        assert_eq!(
            visible(&db, Some(&b), table).await,
            if table == "tenants" { 1 } else { 0 },
            "{table} as B"
        );
        assert_eq!(visible(&db, None, table).await, 0, "{table} with no tenant");
        assert!(visible(&db, Some(&a), table).await >= 1, "{table} as A");
    }

    // Writing a row for another tenant is refused too.
    let mut tx = db.store.pool().begin().await.unwrap();
    sqlx::query(
        "SELECT set_config('role', 'ris_app', true), set_config('ris.tenant_id', $1, true)",
    )
    .bind(b.id.to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
    let forged = sqlx::query(
        "INSERT INTO tasks (id, tenant_id, state, kind, request, queue_deadline)
         VALUES ($1, $2, 'queued', 'noop', '{}', now())",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(a.id)
    .execute(&mut *tx)
    .await;
    let err = forged.unwrap_err().to_string();
    assert!(err.contains("row-level security"), "{err}");
}
