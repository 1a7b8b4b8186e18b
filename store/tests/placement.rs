//! Placement: leased claims that no two dispatchers share, attempts, requeues and
//! queue expiry.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{noop_request, TestDb, LONG_LEASE};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::TaskState;
use ris_store::{Placement, TaskRepo, Transition, TransitionOutcome};

/// Makes every waiting task due for the sweep now, as if its first 2 s (left to its
/// submission message) had passed.
async fn settle(db: &TestDb) {
    db.exec("UPDATE tasks SET next_placement_at = now() WHERE state IN ('queued', 'retrying')")
        .await;
}

#[tokio::test]
async fn claims_are_leased_and_oldest_first() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let other = db.tenant("other").await;
    let mut ids = Vec::new();
    for tenant in [&acme, &other, &acme] {
        let id = TaskId::new();
        db.store
            .insert_task(&tenant.ctx(), id, &noop_request(60), None)
            .await
            .unwrap();
        ids.push((tenant.name.clone(), id));
    }
    // New tasks are left to their submission message for a moment.
    assert!(db
        .store
        .claim_unplaced(10, LONG_LEASE)
        .await
        .unwrap()
        .is_empty());
    settle(&db).await;

    let claimed = db.store.claim_unplaced(10, LONG_LEASE).await.unwrap();
    let got: Vec<_> = claimed
        .iter()
        .map(|(t, task)| (t.name.clone(), task.id))
        .collect();
    assert_eq!(got, ids);
    // Leased: not offered again until the lease ends.
    assert!(db
        .store
        .claim_unplaced(10, LONG_LEASE)
        .await
        .unwrap()
        .is_empty());

    // A zero lease makes them due at once again.
    db.exec("UPDATE tasks SET next_placement_at = now()").await;
    assert_eq!(
        db.store
            .claim_unplaced(2, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        db.store
            .claim_unplaced(10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        3
    );

    // Placed tasks are not offered.
    let (_, first) = &ids[0];
    db.store
        .begin_attempt(&acme.ctx(), *first, AgentId::new())
        .await
        .unwrap();
    assert_eq!(
        db.store.claim_unplaced(10, LONG_LEASE).await.unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_task() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    const TASKS: usize = 120;
    for _ in 0..TASKS {
        db.store
            .insert_task(&ctx, TaskId::new(), &noop_request(60), None)
            .await
            .unwrap();
    }
    settle(&db).await;

    let claimers = (0..8).map(|_| {
        let store = db.store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_unplaced(7, LONG_LEASE).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|(_, t)| t.id));
            }
        })
    });
    let mut all = Vec::new();
    for claimer in futures::future::join_all(claimers).await {
        all.extend(claimer.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a task was claimed twice");
    assert_eq!(all.len(), TASKS);
}

#[tokio::test]
async fn requeue_undoes_a_placement_and_delays_the_next() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let id = TaskId::new();
    db.store
        .insert_task(&ctx, id, &noop_request(60), None)
        .await
        .unwrap();
    let deadline = db
        .store
        .get_task(&ctx, id)
        .await
        .unwrap()
        .unwrap()
        .queue_deadline;
    db.store.claim_unplaced(10, Duration::ZERO).await.unwrap();
    db.store
        .begin_attempt(&ctx, id, AgentId::new())
        .await
        .unwrap();

    let TransitionOutcome::Applied(task) = db
        .store
        .requeue_task(&ctx, id, "publish_failed", LONG_LEASE)
        .await
        .unwrap()
    else {
        panic!("requeue refused");
    };
    assert_eq!((task.state, task.attempts), (TaskState::Queued, 1));
    assert_eq!(task.reason.as_deref(), Some("publish_failed"));
    assert_eq!(
        task.queue_deadline, deadline,
        "an undone placement keeps its deadline"
    );
    assert!(db
        .store
        .claim_unplaced(10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());

    // Only routing or retrying tasks can be requeued.
    let again = db
        .store
        .requeue_task(&ctx, id, "x", Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(again, TransitionOutcome::Invalid(_)), "{again:?}");

    // The next attempt counts on.
    db.exec("UPDATE tasks SET next_placement_at = now()").await;
    let claimed = db.store.claim_unplaced(10, LONG_LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let placed = db
        .store
        .begin_attempt(&ctx, id, AgentId::new())
        .await
        .unwrap();
    assert!(
        matches!(placed, TransitionOutcome::Applied(ref t) if t.attempts == 2),
        "{placed:?}"
    );
}

#[tokio::test]
async fn a_retry_waits_anew() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let id = TaskId::new();
    db.store
        .insert_task(&ctx, id, &noop_request(60), None)
        .await
        .unwrap();
    db.store
        .begin_attempt(&ctx, id, AgentId::new())
        .await
        .unwrap();
    db.store
        .transition_task(&ctx, id, Transition::to(TaskState::Executing))
        .await
        .unwrap();
    db.store
        .transition_task(&ctx, id, Transition::to(TaskState::Retrying))
        .await
        .unwrap();
    // Its first wait is long over.
    db.exec("UPDATE tasks SET queue_deadline = now() - interval '1 hour'")
        .await;

    let TransitionOutcome::Applied(task) = db
        .store
        .requeue_task(&ctx, id, "retry", Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("requeue refused");
    };
    assert!(
        task.queue_deadline > task.updated_at,
        "a retry gets a fresh queue deadline"
    );
    assert!(db.store.expire_unplaced(10).await.unwrap().is_empty());
    assert_eq!(
        db.store.claim_unplaced(10, LONG_LEASE).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn tasks_waiting_past_their_deadline_fail_with_no_agent() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let ctx = acme.ctx();
    let late = TaskId::new();
    let fresh = TaskId::new();
    let placed = TaskId::new();
    for id in [late, fresh, placed] {
        db.store
            .insert_task(&ctx, id, &noop_request(60), None)
            .await
            .unwrap();
    }
    db.store
        .begin_attempt(&ctx, placed, AgentId::new())
        .await
        .unwrap();
    settle(&db).await;
    db.exec(&format!(
        "UPDATE tasks SET queue_deadline = now() - interval '1 second' WHERE id IN ('{late}', '{placed}')"
    ))
    .await;

    // Past its deadline a task is no longer offered for placement.
    let offered: Vec<_> = db
        .store
        .claim_unplaced(10, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, t)| t.id)
        .collect();
    assert_eq!(offered, [fresh]);

    let expired = db.store.expire_unplaced(10).await.unwrap();
    assert_eq!(expired.len(), 1);
    let (tenant, task) = &expired[0];
    assert_eq!(tenant, &acme);
    assert_eq!((task.id, task.state), (late, TaskState::Failed));
    assert_eq!(task.reason.as_deref(), Some("no_agent"));

    let events = db.store.task_events(&ctx, late).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.state, last.reason.as_deref()),
        (TaskState::Failed, Some("no_agent"))
    );
    assert!(db.store.expire_unplaced(10).await.unwrap().is_empty());
    assert_eq!(
        db.store
            .get_task(&ctx, placed)
            .await
            .unwrap()
            .unwrap()
            .state,
        TaskState::Routing
    );
}

#[tokio::test]
async fn a_batch_of_placements_records_each_as_it_would_alone() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let other = db.tenant("other").await.ctx();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = TaskId::new();
        db.store
            .insert_task(&ctx, id, &noop_request(60), None)
            .await
            .unwrap();
        ids.push(id);
    }
    let foreign = TaskId::new();
    db.store
        .insert_task(&other, foreign, &noop_request(60), None)
        .await
        .unwrap();
    // ids[2] has already run.
    db.store
        .begin_attempt(&ctx, ids[2], AgentId::new())
        .await
        .unwrap();
    db.store
        .transition_task(&ctx, ids[2], Transition::to(TaskState::Cancelled))
        .await
        .unwrap();

    let (a, b) = (AgentId::new(), AgentId::new());
    let batch = [
        Placement::new(ids[1], a),
        Placement::new(ids[0], b),
        Placement::new(ids[1], b), // the same task again: refused, as after the first
        Placement::new(ids[2], a),
        Placement::new(TaskId::new(), a),
        Placement::new(foreign, a), // another tenant's: not seen
    ];
    let outcomes = db.store.begin_attempts(&ctx, &batch).await.unwrap();
    assert_eq!(outcomes.len(), batch.len());
    for (i, agent) in [(0, a), (1, b)] {
        let TransitionOutcome::Applied(task) = &outcomes[i] else {
            panic!("placement {i}: {:?}", outcomes[i]);
        };
        assert_eq!(
            (task.id, task.state, task.attempts, task.agent_id),
            (batch[i].task, TaskState::Routing, 1, Some(agent))
        );
    }
    assert!(
        matches!(outcomes[2], TransitionOutcome::Invalid(_)),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(outcomes[3], TransitionOutcome::Invalid(_)),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(outcomes[4], TransitionOutcome::NotFound);
    assert_eq!(outcomes[5], TransitionOutcome::NotFound);
    // One event per placement made, and the other tenant's task untouched.
    let events = db.store.task_events(&ctx, ids[1]).await.unwrap();
    let states: Vec<TaskState> = events.iter().map(|e| e.state).collect();
    assert_eq!(states, [TaskState::Queued, TaskState::Routing]);
    let untouched = db.store.get_task(&other, foreign).await.unwrap().unwrap();
    assert_eq!(untouched.state, TaskState::Queued);

    // Batched reads: each id's record, in order (an id asked twice, twice), only the
    // tenant's own.
    let missing = TaskId::new();
    let read = db
        .store
        .get_tasks(&ctx, &[ids[2], missing, foreign, ids[0], ids[2]])
        .await
        .unwrap();
    let seen: Vec<Option<(TaskId, TaskState)>> = read
        .iter()
        .map(|t| t.as_ref().map(|t| (t.id, t.state)))
        .collect();
    assert_eq!(
        seen,
        [
            Some((ids[2], TaskState::Cancelled)),
            None,
            None,
            Some((ids[0], TaskState::Routing)),
            Some((ids[2], TaskState::Cancelled)),
        ]
    );
}

/// A placement chosen from a submission, without reading the task, applies only to the
/// task as submitted: stored, `queued`, with that request. Anything else is refused as
/// `Unexpected` and changes nothing, so the dispatcher can fall back to reading it.
#[tokio::test]
async fn a_placement_from_a_submission_applies_only_to_the_task_as_submitted() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let request = std::sync::Arc::new(noop_request(60));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = TaskId::new();
        db.store
            .insert_task(&ctx, id, &request, None)
            .await
            .unwrap();
        ids.push(id);
    }
    // ids[1] is placed already; ids[2] was stored with another request than the one
    // its submission carries.
    db.store
        .begin_attempt(&ctx, ids[1], AgentId::new())
        .await
        .unwrap();
    let mut other = noop_request(60);
    other.metadata.insert("changed".into(), "yes".into());
    let other = std::sync::Arc::new(other);

    let agent = AgentId::new();
    let batch = [
        Placement::of_submitted(ids[0], agent, request.clone()),
        Placement::of_submitted(ids[1], agent, request.clone()),
        Placement::of_submitted(ids[2], agent, other),
        Placement::of_submitted(TaskId::new(), agent, request.clone()),
    ];
    let outcomes = db.store.begin_attempts(&ctx, &batch).await.unwrap();
    let TransitionOutcome::Applied(placed) = &outcomes[0] else {
        panic!("the task as submitted: {:?}", outcomes[0]);
    };
    assert_eq!(
        (placed.state, placed.attempts, placed.agent_id),
        (TaskState::Routing, 1, Some(agent))
    );
    assert_eq!(
        outcomes[1..],
        [
            TransitionOutcome::Unexpected,
            TransitionOutcome::Unexpected,
            TransitionOutcome::Unexpected
        ]
    );
    let first = db.store.get_task(&ctx, ids[1]).await.unwrap().unwrap();
    assert_eq!((first.attempts, first.state), (1, TaskState::Routing));
    assert_ne!(first.agent_id, Some(agent), "the earlier placement stands");
    let other = db.store.get_task(&ctx, ids[2]).await.unwrap().unwrap();
    assert_eq!((other.attempts, other.state), (0, TaskState::Queued));
}
