//! Services: revisions, the orders a change makes, reports, the sync's guards, and
//! tenant isolation.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{new_agent, TestDb};
use ris_schemas::ids::AgentId;
use ris_schemas::service::{
    InstanceState, Replicas, ServiceName, ServiceSpec, ServiceStatusReport, ServiceTarget,
};
use ris_store::{
    AuthRepo, ChangeOutcome, ServiceChange, ServiceOrder, ServiceRepo, StatusOutcome, SyncStep,
    Tenant,
};
use serde_json::json;

async fn enrolled(db: &TestDb, tenant: &Tenant, name: &str) -> AgentId {
    let token = format!("tok-{}-{name}", tenant.name);
    db.store
        .insert_enrollment_token(
            &tenant.ctx(),
            token.as_bytes(),
            Utc::now() + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    let (_, agent) = db
        .store
        .enroll_agent(token.as_bytes(), new_agent(name))
        .await
        .unwrap();
    agent.id
}

fn spec(v: serde_json::Value) -> Box<ServiceSpec> {
    Box::new(serde_json::from_value(v).unwrap())
}

fn put(image: &str) -> ServiceChange {
    ServiceChange::Put {
        target: serde_json::from_value(json!({"selector": "env=test"})).unwrap(),
        spec: spec(json!({"image": image, "replicas": 2})),
    }
}

fn changed(outcome: ChangeOutcome) -> (u32, &'static str, Vec<ServiceOrder>) {
    match outcome {
        ChangeOutcome::Changed {
            service,
            change,
            orders,
        } => (service.revision, change, orders),
        other => panic!("expected a change, got {other:?}"),
    }
}

fn report(
    service: &ServiceName,
    desired: u32,
    state: InstanceState,
    restarts: u32,
) -> ServiceStatusReport {
    ServiceStatusReport {
        service: service.clone(),
        desired_revision: desired,
        revision: desired,
        state,
        reason: None,
        error: None,
        containers: Vec::new(),
        restarts,
    }
}

#[tokio::test]
async fn changes_are_revisions_with_orders_for_matching_agents() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let ctx = acme.ctx();
    let a = enrolled(&db, &acme, "a").await;
    let b = enrolled(&db, &acme, "b").await;
    let web = ServiceName::parse("web").unwrap();

    let (rev, change, orders) = changed(
        db.store
            .change_service(&ctx, &web, put("x:1"))
            .await
            .unwrap(),
    );
    assert_eq!((rev, change), (1, "create"));
    let mut agents: Vec<AgentId> = orders.iter().map(|o| o.agent_id).collect();
    agents.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(agents, want);
    assert!(orders.iter().all(|o| o.spec.is_some() && o.revision == 1));

    // The same declaration again: no new revision.
    let same = db
        .store
        .change_service(&ctx, &web, put("x:1"))
        .await
        .unwrap();
    assert!(matches!(same, ChangeOutcome::Unchanged(s) if s.revision == 1));

    // Restart bumps the generation; a later PUT keeps it (clients do not send it).
    let (rev, change, _) = changed(
        db.store
            .change_service(&ctx, &web, ServiceChange::Restart)
            .await
            .unwrap(),
    );
    assert_eq!((rev, change), (2, "restart"));
    let same = db
        .store
        .change_service(&ctx, &web, put("x:1"))
        .await
        .unwrap();
    assert!(matches!(same, ChangeOutcome::Unchanged(_)), "{same:?}");

    let replicas = Replicas::try_from(5u64).unwrap();
    let (rev, change, _) = changed(
        db.store
            .change_service(&ctx, &web, ServiceChange::Scale(replicas))
            .await
            .unwrap(),
    );
    assert_eq!((rev, change), (3, "scale"));

    // Narrow the target to one agent: the other is told to remove it.
    let narrowed = ServiceChange::Put {
        target: ServiceTarget::Agent(a),
        spec: spec(json!({"image": "x:1", "replicas": 5})),
    };
    let (rev, change, orders) =
        changed(db.store.change_service(&ctx, &web, narrowed).await.unwrap());
    assert_eq!((rev, change), (4, "update"));
    let remove: Vec<_> = orders.iter().filter(|o| o.spec.is_none()).collect();
    assert_eq!(remove.len(), 1);
    assert_eq!(remove[0].agent_id, b);

    let revisions = db
        .store
        .service_revisions(&ctx, &web, 10, None)
        .await
        .unwrap();
    let changes: Vec<&str> = revisions.iter().map(|r| r.change.as_str()).collect();
    assert_eq!(changes, ["update", "scale", "restart", "create"]);
    let older = db
        .store
        .service_revisions(&ctx, &web, 10, Some(3))
        .await
        .unwrap();
    assert_eq!(older.len(), 2);

    // Another tenant sees nothing of it.
    let other = db.tenant("other").await;
    assert!(db
        .store
        .get_service(&other.ctx(), &web)
        .await
        .unwrap()
        .is_none());
    assert!(db
        .store
        .list_services(&other.ctx(), 10, None)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        db.store
            .change_service(&other.ctx(), &web, ServiceChange::Restart)
            .await
            .unwrap(),
        ChangeOutcome::NotFound
    ));
}

#[tokio::test]
async fn reports_update_instances_and_delete_completes_on_removed() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let ctx = acme.ctx();
    let a = enrolled(&db, &acme, "a").await;
    let web = ServiceName::parse("web").unwrap();
    changed(
        db.store
            .change_service(&ctx, &web, put("x:1"))
            .await
            .unwrap(),
    );

    let t0 = Utc::now();
    let out = db
        .store
        .record_service_status(&ctx, a, t0, &report(&web, 1, InstanceState::Running, 0))
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            StatusOutcome::Updated {
                before: InstanceState::Pending,
                ..
            }
        ),
        "{out:?}"
    );
    let out = db
        .store
        .record_service_status(
            &ctx,
            a,
            t0 + chrono::Duration::seconds(1),
            &report(&web, 1, InstanceState::Running, 2),
        )
        .await
        .unwrap();
    assert!(
        matches!(out, StatusOutcome::Updated { restarts_before: 0, ref instance, .. } if instance.restarts == 2)
    );
    // Older than the stored report: ignored.
    let out = db
        .store
        .record_service_status(&ctx, a, t0, &report(&web, 1, InstanceState::Failed, 0))
        .await
        .unwrap();
    assert_eq!(out, StatusOutcome::Stale);
    // Unknown service: ignored.
    let other = ServiceName::parse("nope").unwrap();
    let out = db
        .store
        .record_service_status(
            &ctx,
            a,
            Utc::now(),
            &report(&other, 1, InstanceState::Running, 0),
        )
        .await
        .unwrap();
    assert_eq!(out, StatusOutcome::Unknown);

    // `removed` before a remove order is just a state.
    let (rev, _, orders) = changed(
        db.store
            .change_service(&ctx, &web, ServiceChange::Delete)
            .await
            .unwrap(),
    );
    assert_eq!(orders.len(), 1);
    assert!(orders[0].spec.is_none() && orders[0].revision == rev);
    // Deleting: still shown, a second delete changes nothing.
    assert!(db.store.get_service(&ctx, &web).await.unwrap().is_some());
    assert!(matches!(
        db.store
            .change_service(&ctx, &web, ServiceChange::Delete)
            .await
            .unwrap(),
        ChangeOutcome::Unchanged(_)
    ));
    let out = db
        .store
        .record_service_status(
            &ctx,
            a,
            t0 + chrono::Duration::seconds(2),
            &report(&web, rev, InstanceState::Removed, 2),
        )
        .await
        .unwrap();
    assert!(matches!(out, StatusOutcome::Removed { .. }), "{out:?}");
    assert!(db.store.get_service(&ctx, &web).await.unwrap().is_none());
    assert!(db
        .store
        .list_services(&ctx, 10, None)
        .await
        .unwrap()
        .is_empty());

    // Declared again: revisions keep counting, so the agent's memory of the removal
    // does not hide the new declaration.
    let (again, change, _) = changed(
        db.store
            .change_service(&ctx, &web, put("x:2"))
            .await
            .unwrap(),
    );
    assert_eq!((again, change), (rev + 1, "create"));
}

#[tokio::test]
async fn sync_steps_are_guarded_by_revision_and_interval() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let ctx = acme.ctx();
    let web = ServiceName::parse("web").unwrap();
    changed(
        db.store
            .change_service(&ctx, &web, put("x:1"))
            .await
            .unwrap(),
    );
    // An agent enrolled after the change: the sync creates its instance.
    let late = enrolled(&db, &acme, "late").await;
    let state = db.store.service_sync_state(&ctx).await.unwrap();
    assert_eq!(
        (
            state.services.len(),
            state.instances.len(),
            state.agents.len()
        ),
        (1, 0, 1)
    );
    let create = SyncStep::Create {
        service: web.clone(),
        agent: late,
        revision: 1,
    };
    let stale = SyncStep::Create {
        service: web.clone(),
        agent: late,
        revision: 0,
    };
    let interval = Duration::from_secs(15);
    let orders = db
        .store
        .record_sync(&ctx, &[stale], interval)
        .await
        .unwrap();
    assert!(
        orders.is_empty(),
        "a step decided on an old revision does nothing"
    );
    let orders = db
        .store
        .record_sync(&ctx, std::slice::from_ref(&create), interval)
        .await
        .unwrap();
    assert_eq!(orders.len(), 1);
    assert!(orders[0].spec.is_some());
    // Done already: doing it again makes no order.
    assert!(db
        .store
        .record_sync(&ctx, &[create], interval)
        .await
        .unwrap()
        .is_empty());

    // A re-send within the interval does nothing; once unsent, it goes at once.
    let resend = SyncStep::Resend {
        service: web.clone(),
        agent: late,
        desired_revision: 1,
        removing: false,
    };
    assert!(db
        .store
        .record_sync(&ctx, std::slice::from_ref(&resend), interval)
        .await
        .unwrap()
        .is_empty());
    db.store.orders_unsent(&ctx, &orders).await.unwrap();
    let again = db
        .store
        .record_sync(&ctx, &[resend], interval)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id(), orders[0].message_id());

    let remove = SyncStep::Remove {
        service: web.clone(),
        agent: late,
        revision: 1,
    };
    let orders = db
        .store
        .record_sync(&ctx, &[remove], interval)
        .await
        .unwrap();
    assert_eq!(orders.len(), 1);
    assert!(orders[0].spec.is_none());

    let counts = db.store.instances_by_state().await.unwrap();
    assert_eq!(counts, vec![(InstanceState::Pending, 1)]);
}
