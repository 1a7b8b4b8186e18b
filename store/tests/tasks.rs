//! Tasks: idempotent submission, the lifecycle and its event log, listing.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use chrono::{Duration, Utc};
use common::{noop_request, TestDb};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::{InvalidTransition, TaskState};
use ris_store::{Cursor, Inserted, TaskFilter, TaskRepo, Transition, TransitionOutcome};
use serde_json::json;

#[tokio::test]
async fn insert_is_idempotent_by_id_and_by_key() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let request = noop_request(300);
    let id = TaskId::new();
    let before = Utc::now();

    let Inserted::New(task) = db
        .store
        .insert_task(&ctx, id, &request, Some("k1"))
        .await
        .unwrap()
    else {
        panic!("first insert must be new");
    };
    assert_eq!(task.id, id);
    assert_eq!(task.state, TaskState::Queued);
    assert_eq!(task.attempts, 0);
    assert_eq!(task.request, request);
    assert_eq!(task.idempotency_key.as_deref(), Some("k1"));
    let wait = task.queue_deadline - task.created_at;
    assert_eq!(wait, Duration::seconds(300));
    assert!(task.created_at >= before - Duration::seconds(5));

    // Same id, with or without the key.
    for key in [Some("k1"), None, Some("k2")] {
        let again = db.store.insert_task(&ctx, id, &request, key).await.unwrap();
        assert_eq!(again, Inserted::Existing(task.clone()), "key {key:?}");
    }
    // Same key, new id.
    let by_key = db
        .store
        .insert_task(&ctx, TaskId::new(), &request, Some("k1"))
        .await
        .unwrap();
    assert_eq!(by_key, Inserted::Existing(task.clone()));

    // No event was added by the repeats; keys are per tenant.
    assert_eq!(db.store.task_events(&ctx, id).await.unwrap().len(), 1);
    let other = db.tenant("other").await.ctx();
    let theirs = db
        .store
        .insert_task(&other, TaskId::new(), &request, Some("k1"))
        .await
        .unwrap();
    assert!(matches!(theirs, Inserted::New(_)));
}

fn to(state: TaskState) -> Transition {
    Transition::to(state)
}

#[tokio::test]
async fn transitions_follow_the_lifecycle_and_are_logged_in_order() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let id = TaskId::new();
    db.store
        .insert_task(&ctx, id, &noop_request(60), None)
        .await
        .unwrap();
    let agent = AgentId::new();

    // queued → executing skips routing.
    let refused = db
        .store
        .transition_task(&ctx, id, to(TaskState::Executing))
        .await
        .unwrap();
    assert_eq!(
        refused,
        TransitionOutcome::Invalid(InvalidTransition {
            from: TaskState::Queued,
            to: TaskState::Executing
        })
    );

    let TransitionOutcome::Applied(routed) = db.store.begin_attempt(&ctx, id, agent).await.unwrap()
    else {
        panic!("placement refused");
    };
    assert_eq!(
        (routed.state, routed.attempts, routed.agent_id),
        (TaskState::Routing, 1, Some(agent))
    );

    // A fenced change for another attempt is stale.
    let stale = db
        .store
        .transition_task(
            &ctx,
            id,
            Transition {
                attempt: Some(2),
                ..to(TaskState::Executing)
            },
        )
        .await
        .unwrap();
    assert_eq!(stale, TransitionOutcome::Stale { current_attempt: 1 });

    let executing = Transition {
        attempt: Some(1),
        detail: json!({ "started_at": "now" }),
        ..to(TaskState::Executing)
    };
    let TransitionOutcome::Applied(running) =
        db.store.transition_task(&ctx, id, executing).await.unwrap()
    else {
        panic!("executing refused");
    };
    assert_eq!(
        running.agent_id,
        Some(agent),
        "agent kept when none is given"
    );

    let cancel = Transition {
        reason: Some("user".into()),
        ..to(TaskState::Cancelled)
    };
    let TransitionOutcome::Applied(cancelled) =
        db.store.transition_task(&ctx, id, cancel).await.unwrap()
    else {
        panic!("cancel refused");
    };
    assert_eq!(cancelled.reason.as_deref(), Some("user"));

    // Terminal: nothing changes any more.
    for state in TaskState::ALL {
        let res = db.store.transition_task(&ctx, id, to(state)).await.unwrap();
        assert!(
            matches!(res, TransitionOutcome::Invalid(_)),
            "{state}: {res:?}"
        );
    }
    assert_eq!(
        db.store.get_task(&ctx, id).await.unwrap(),
        Some(cancelled.clone())
    );

    let events = db.store.task_events(&ctx, id).await.unwrap();
    let states: Vec<TaskState> = events.iter().map(|e| e.state).collect();
    use TaskState::*;
    assert_eq!(states, [Queued, Routing, Executing, Cancelled]);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let attempts: Vec<u32> = events.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [0, 1, 1, 1]);
    assert_eq!(events[2].detail, json!({ "started_at": "now" }));
    assert_eq!(events[3].reason.as_deref(), Some("user"));
    assert_eq!(events[1].agent_id, Some(agent));

    let missing = db
        .store
        .transition_task(&ctx, TaskId::new(), to(Routing))
        .await
        .unwrap();
    assert_eq!(missing, TransitionOutcome::NotFound);
}

#[tokio::test]
async fn list_pages_newest_first_with_filters() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let mut ids = Vec::new();
    for _ in 0..7 {
        let id = TaskId::new();
        db.store
            .insert_task(&ctx, id, &noop_request(60), None)
            .await
            .unwrap();
        ids.push(id);
    }
    // Another tenant's tasks never show.
    let other = db.tenant("other").await.ctx();
    db.store
        .insert_task(&other, TaskId::new(), &noop_request(60), None)
        .await
        .unwrap();
    ids.reverse(); // newest first

    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = db
            .store
            .list_tasks(&ctx, &TaskFilter::default(), 3, cursor.as_ref())
            .await
            .unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|t| t.id));
        match page.last() {
            Some(last) if page.len() == 3 => {
                // Cursors survive their round trip through a URL.
                let encoded = Cursor {
                    created_at: last.created_at,
                    id: last.id,
                }
                .encode();
                cursor = Cursor::decode(&encoded);
            }
            _ => break,
        }
    }
    assert_eq!(seen, ids);

    // Filter by agent and by state.
    let agent = AgentId::new();
    for id in &ids[..2] {
        db.store.begin_attempt(&ctx, *id, agent).await.unwrap();
    }
    let by_agent = TaskFilter {
        agent_id: Some(agent),
        state: None,
    };
    let placed: Vec<TaskId> = db
        .store
        .list_tasks(&ctx, &by_agent, 100, None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(placed, ids[..2]);
    let queued = TaskFilter {
        state: Some(TaskState::Queued),
        agent_id: None,
    };
    let page = db.store.list_tasks(&ctx, &queued, 2, None).await.unwrap();
    assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), ids[2..4]);
    assert_eq!(db.store.count_queued(&ctx).await.unwrap(), 5);

    // A limit of zero still returns a row; the cap is 500.
    assert_eq!(
        db.store
            .list_tasks(&ctx, &queued, 0, None)
            .await
            .unwrap()
            .len(),
        1
    );
}
