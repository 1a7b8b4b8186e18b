//! Fleet jobs in the store: bulk creation, counts kept with every child change, the
//! halt (serialized with dispatching on the job row), cancel, waiting targets, and
//! tenant isolation.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::time::Instant;

use common::{finished, TestDb};
use ris_schemas::ids::AgentId;
use ris_schemas::job::{JobId, JobRequest, JobState};
use ris_schemas::task::{Outcome, TaskState};
use ris_store::{
    JobCancel, JobDriving, JobRecord, JobRepo, NewJob, NewTarget, PgStore, RecoveryRepo,
    TaskRecord, TaskRepo, TenantCtx, TransitionOutcome,
};
use serde_json::json;

fn request(extra: serde_json::Value) -> JobRequest {
    let mut body = json!({ "target": { "selector": "env=test" }, "task": { "kind": "noop" } });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    serde_json::from_value(body).unwrap()
}

fn targets(n: usize, online: impl Fn(usize) -> bool) -> Vec<NewTarget> {
    (0..n)
        .map(|i| NewTarget {
            agent_id: AgentId::new(),
            name: format!("agent-{i:05}"),
            online: online(i),
        })
        .collect()
}

async fn create(
    store: &PgStore,
    tenant: &TenantCtx,
    req: JobRequest,
    t: Vec<NewTarget>,
) -> JobRecord {
    store
        .create_job(
            tenant,
            NewJob {
                id: JobId::new(),
                request: req,
                targets: t,
                reason: None,
            },
        )
        .await
        .unwrap()
}

fn assert_adds_up(job: &JobRecord) {
    assert_eq!(
        job.counts.values().sum::<u32>(),
        job.target_count,
        "{job:?}"
    );
}

/// Places a child on its agent (`routing`, attempt 1).
async fn place(store: &PgStore, tenant: &TenantCtx, child: &TaskRecord) -> TaskRecord {
    let agent = match child.request.target {
        ris_schemas::task::Target::Agent(a) => a,
        _ => unreachable!(),
    };
    match store.begin_attempt(tenant, child.id, agent).await.unwrap() {
        TransitionOutcome::Applied(t) => t,
        other => panic!("{other:?}"),
    }
}

async fn finish(store: &PgStore, tenant: &TenantCtx, child: &TaskRecord, outcome: Outcome) {
    let agent = child.agent_id.unwrap();
    store
        .record_result_or_retry(
            tenant,
            &finished(child.id, child.attempts, agent, outcome),
            &|_, _| None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_job_over_ten_thousand_targets_is_created_at_once_and_dispatched_in_windows() {
    let db = TestDb::new().await;
    let tenant = db.tenant("acme").await.ctx();
    let started = Instant::now();
    let job = create(
        &db.store,
        &tenant,
        request(json!({ "max_concurrency": "0.5%", "max_errors": "1%" })),
        targets(10_000, |i| i % 100 != 0),
    )
    .await;
    // A figure, not an assertion: see docs/benchmarks.md.
    println!("create_job over 10,000 targets: {:?}", started.elapsed());
    assert_eq!(job.state, JobState::Running);
    assert_eq!((job.max_concurrency, job.max_errors), (50, 100));
    assert_eq!(job.count("pending"), 9_900);
    assert_eq!(job.count("skipped_offline"), 100);
    assert_adds_up(&job);

    let started = Instant::now();
    let children = db.store.dispatch_children(&tenant, job.id).await.unwrap();
    println!("dispatch_children (50): {:?}", started.elapsed());
    assert_eq!(children.len(), 50);
    assert!(children
        .iter()
        .all(|c| c.job_id == Some(job.id) && c.state == TaskState::Queued));
    // The window is full: nothing more until a child ends.
    assert!(db
        .store
        .dispatch_children(&tenant, job.id)
        .await
        .unwrap()
        .is_empty());
    let child = place(&db.store, &tenant, &children[0]).await;
    finish(&db.store, &tenant, &child, Outcome::Completed).await;
    let job = db.store.get_job(&tenant, job.id).await.unwrap().unwrap();
    assert_eq!((job.count("completed"), job.count("queued")), (1, 49));
    assert_adds_up(&job);
    assert_eq!(
        db.store
            .dispatch_children(&tenant, job.id)
            .await
            .unwrap()
            .len(),
        1
    );

    // Pages of targets, in order, filtered by state.
    let page = db
        .store
        .job_targets(&tenant, job.id, Some("queued"), None, 20)
        .await
        .unwrap();
    assert_eq!(page.len(), 20);
    let next = db
        .store
        .job_targets(&tenant, job.id, Some("queued"), Some(page[19].seq), 100)
        .await
        .unwrap();
    assert_eq!(next.len(), 30);
    assert!(next[0].seq > page[19].seq);
    let completed = db
        .store
        .job_targets(&tenant, job.id, Some("completed"), None, 10)
        .await
        .unwrap();
    assert_eq!(completed[0].task_id, Some(child.id));
}

#[tokio::test]
async fn crossing_max_errors_halts_and_the_halt_completes_when_unstarted_children_end() {
    let db = TestDb::new().await;
    let tenant = db.tenant("acme").await.ctx();
    let job = create(
        &db.store,
        &tenant,
        request(json!({ "max_concurrency": 3, "max_errors": 1 })),
        targets(6, |_| true),
    )
    .await;
    let children = db.store.dispatch_children(&tenant, job.id).await.unwrap();
    let a = place(&db.store, &tenant, &children[0]).await;
    let b = place(&db.store, &tenant, &children[1]).await;
    // children[2] stays queued.
    finish(&db.store, &tenant, &a, Outcome::Failed).await;
    let job = db.store.get_job(&tenant, job.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running, "one error is tolerated");
    let more = db.store.dispatch_children(&tenant, job.id).await.unwrap();
    assert_eq!(more.len(), 1);

    finish(&db.store, &tenant, &b, Outcome::TimedOut).await;
    let job = db.store.get_job(&tenant, job.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Halting, "{job:?}");
    assert!(job.halting_at.is_some() && job.halted_at.is_none());
    assert_eq!(job.errors, 2);
    assert_eq!(job.count("skipped_halted"), 2, "pending targets skipped");
    assert_eq!(job.unsettled, 2, "two children not started");
    assert!(job.reason.as_deref().unwrap().contains("max_errors (1)"));
    assert_adds_up(&job);
    assert!(db
        .store
        .dispatch_children(&tenant, job.id)
        .await
        .unwrap()
        .is_empty());

    // A queued child is cancelled rather than placed.
    let agent = match children[2].request.target {
        ris_schemas::task::Target::Agent(a) => a,
        _ => unreachable!(),
    };
    let TransitionOutcome::Applied(c) = db
        .store
        .begin_attempt(&tenant, children[2].id, agent)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (c.state, c.reason.as_deref()),
        (TaskState::Cancelled, Some("job_halted"))
    );
    let job = db.store.get_job(&tenant, job.id).await.unwrap().unwrap();
    assert_eq!((job.state, job.unsettled), (JobState::Halting, 1));
    // The last one was placed before the halt; its agent drops it unstarted.
    let d = place_before_halt_equivalent(&db, &tenant, &more[0]).await;
    let mut dropped = finished(d.id, d.attempts, d.agent_id.unwrap(), Outcome::Cancelled);
    dropped.result.reason = Some("not_started".into());
    db.store
        .record_result_or_retry(&tenant, &dropped, &|_, _| None)
        .await
        .unwrap();
    let job = db.store.get_job(&tenant, job.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Halted, "{job:?}");
    assert!(job.halted_at.unwrap() >= job.halting_at.unwrap());
    assert!(job.ended_at.is_some());
    assert_eq!(job.count("skipped_halted"), 4, "{job:?}");
    assert_adds_up(&job);
    let events = db.store.task_events(&tenant, d.id).await.unwrap();
    let states: Vec<TaskState> = events.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [TaskState::Queued, TaskState::Routing, TaskState::Cancelled]
    );
    let (_, announced) = db
        .store
        .announce_job(&tenant, job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(announced, ["running", "halting", "halted", "ended"]);
    let (_, again) = db
        .store
        .announce_job(&tenant, job.id)
        .await
        .unwrap()
        .unwrap();
    assert!(again.is_empty());
}

/// `more[0]` is queued; after the halt it can no longer be placed through
/// `begin_attempt`, so this test moves it to `routing` the way a placement committed
/// just before the halt would have left it.
async fn place_before_halt_equivalent(
    db: &TestDb,
    tenant: &TenantCtx,
    child: &TaskRecord,
) -> TaskRecord {
    let agent = match child.request.target {
        ris_schemas::task::Target::Agent(a) => a,
        _ => unreachable!(),
    };
    db.exec(&format!(
        "UPDATE tasks SET state = 'routing', attempts = 1, agent_id = '{agent}' WHERE id = '{}'",
        child.id
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO task_events (tenant_id, task_id, state, attempt, agent_id)
         VALUES ('{}', '{}', 'routing', 1, '{agent}')",
        tenant.id, child.id
    ))
    .await;
    db.store.get_task(tenant, child.id).await.unwrap().unwrap()
}

/// Many failures and dispatches at once, from two pools (two dispatchers): every child
/// was created and placed before the halt moment, none after.
#[tokio::test]
async fn halting_serializes_with_concurrent_dispatches() {
    let db = TestDb::new().await;
    let tenant = db.tenant("acme").await.ctx();
    let second = db.second_store();
    let mut halted = 0;
    for round in 0..5 {
        let job = create(
            &db.store,
            &tenant,
            request(json!({ "max_concurrency": 8, "max_errors": 3 })),
            targets(60, |_| true),
        )
        .await;
        let mut workers = Vec::new();
        for w in 0..6 {
            let store = if w % 2 == 0 {
                db.store.clone()
            } else {
                second.clone()
            };
            let tenant = tenant.clone();
            let id = job.id;
            workers.push(tokio::spawn(async move {
                for i in 0..40 {
                    let children = store.dispatch_children(&tenant, id).await.unwrap();
                    for child in children {
                        let agent = match child.request.target {
                            ris_schemas::task::Target::Agent(a) => a,
                            _ => unreachable!(),
                        };
                        let TransitionOutcome::Applied(placed) =
                            store.begin_attempt(&tenant, child.id, agent).await.unwrap()
                        else {
                            continue;
                        };
                        if placed.state != TaskState::Routing {
                            continue;
                        }
                        let outcome = if (i + w) % 3 == 0 {
                            Outcome::Failed
                        } else {
                            Outcome::Completed
                        };
                        let f = finished(placed.id, placed.attempts, agent, outcome);
                        store
                            .record_result_or_retry(&tenant, &f, &|_, _| None)
                            .await
                            .unwrap();
                    }
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        let job = db.store.get_job(&tenant, job.id).await.unwrap().unwrap();
        assert_adds_up(&job);
        if job.state == JobState::Running || job.state == JobState::Completed {
            continue; // the failures did not add up this round
        }
        halted += 1;
        let halting_at = job.halting_at.unwrap();
        assert!(job.errors > 3, "round {round}: {job:?}");
        let (late,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM task_events e JOIN tasks t ON t.id = e.task_id
             WHERE t.job_id = $1 AND e.state IN ('queued', 'routing') AND e.at > $2",
        )
        .bind(job.id.0)
        .bind(halting_at)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
        // `at` is the transaction's start time; a placement whose transaction began
        // before the halt and waited for it would still be refused (it re-reads the job
        // under the job's row lock), so no routing event can even carry a later time.
        assert_eq!(
            late, 0,
            "round {round}: children created or placed after the halt"
        );
    }
    assert!(halted > 0, "no round halted: the test checked nothing");
}

#[tokio::test]
async fn cancel_skips_the_undispatched_and_waiting_targets_are_released_or_skipped() {
    let db = TestDb::new().await;
    let tenant = db.tenant("acme").await.ctx();
    let t = targets(4, |i| i < 2);
    let late = t[2].agent_id;
    let job = create(
        &db.store,
        &tenant,
        request(json!({ "max_concurrency": 1, "wait_offline_secs": 60 })),
        t,
    )
    .await;
    assert_eq!((job.count("pending"), job.count("waiting")), (2, 2));
    assert!(job.wait_until.is_some());
    assert_eq!(
        db.store
            .waiting_targets(&tenant, job.id)
            .await
            .unwrap()
            .len(),
        2
    );
    db.store
        .release_waiting(&tenant, job.id, &[late], false)
        .await
        .unwrap();
    let job = db.store.get_job(&tenant, job.id).await.unwrap().unwrap();
    assert_eq!((job.count("pending"), job.count("waiting")), (3, 1));
    db.store
        .release_waiting(&tenant, job.id, &[], true)
        .await
        .unwrap();
    let job = db.store.get_job(&tenant, job.id).await.unwrap().unwrap();
    assert_eq!((job.count("waiting"), job.count("skipped_offline")), (0, 1));

    let children = db.store.dispatch_children(&tenant, job.id).await.unwrap();
    let running = place(&db.store, &tenant, &children[0]).await;
    let JobCancel::Cancelled(job) = db.store.cancel_job(&tenant, job.id).await.unwrap() else {
        panic!()
    };
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.count("skipped_cancelled"), 2);
    assert!(job.ended_at.is_none(), "a child is still routing");
    let to_stop = db.store.children_to_stop(&tenant, job.id).await.unwrap();
    assert_eq!(to_stop.len(), 1);
    assert!(db
        .store
        .request_cancel(&tenant, running.id)
        .await
        .unwrap()
        .is_some());
    assert!(db
        .store
        .request_cancel(&tenant, running.id)
        .await
        .unwrap()
        .is_none());
    assert!(db
        .store
        .children_to_stop(&tenant, job.id)
        .await
        .unwrap()
        .is_empty());
    let mut dropped = finished(running.id, 1, running.agent_id.unwrap(), Outcome::Cancelled);
    dropped.result.reason = Some("not_started".into());
    db.store
        .record_result_or_retry(&tenant, &dropped, &|_, _| None)
        .await
        .unwrap();
    let job = db.store.get_job(&tenant, job.id).await.unwrap().unwrap();
    assert!(job.ended_at.is_some(), "{job:?}");
    assert_eq!(job.count("skipped_cancelled"), 3, "{job:?}");
    assert_adds_up(&job);
    assert!(matches!(
        db.store.cancel_job(&tenant, job.id).await.unwrap(),
        JobCancel::Ended(_)
    ));

    // Another tenant sees none of it.
    let other = db.tenant("other").await.ctx();
    assert!(db.store.get_job(&other, job.id).await.unwrap().is_none());
    assert!(db
        .store
        .list_jobs(&other, 10, None)
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .store
        .job_targets(&other, job.id, None, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        db.store.cancel_job(&other, job.id).await.unwrap(),
        JobCancel::NotFound
    ));
}

#[tokio::test]
async fn nothing_to_run_ends_at_once() {
    let db = TestDb::new().await;
    let tenant = db.tenant("acme").await.ctx();
    let job = create(&db.store, &tenant, request(json!({})), Vec::new()).await;
    assert_eq!(job.state, JobState::Completed);
    assert!(job.ended_at.is_some());
    let offline = create(
        &db.store,
        &tenant,
        request(json!({})),
        targets(2, |_| false),
    )
    .await;
    assert_eq!(offline.state, JobState::Completed);
    assert_eq!(offline.count("skipped_offline"), 2);
    let claimed = db
        .store
        .claim_jobs(10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2, "ended but not announced");
    for (t, j) in claimed {
        db.store.announce_job(&t.ctx(), j.id).await.unwrap();
    }
    assert!(db
        .store
        .claim_jobs(10, std::time::Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
}
