//! Agents: facts from heartbeats and the history of their addresses.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use chrono::{Duration, Utc};
use common::{labels, new_agent, TestDb};
use ris_schemas::ids::AgentId;
use ris_store::{AgentFacts, AgentRepo, AuthRepo, Tenant};

async fn enrolled(db: &TestDb, tenant: &Tenant, name: &str) -> AgentId {
    let token = format!("tok-{name}");
    db.store
        .insert_enrollment_token(
            &tenant.ctx(),
            token.as_bytes(),
            Utc::now() + Duration::hours(1),
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

fn facts(addresses: &[&str], seen_at: chrono::DateTime<Utc>) -> AgentFacts {
    AgentFacts {
        labels: labels(&[("env", "test"), ("region", "eu")]),
        capacity: 8,
        version: "0.2.0".into(),
        hostname: "web.example".into(),
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        capabilities: vec!["shell".into(), "docker".into()],
        seen_at,
    }
}

#[tokio::test]
async fn facts_update_the_agent_and_record_replaced_addresses() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let ctx = acme.ctx();
    let id = enrolled(&db, &acme, "web-1").await;
    let t0 = Utc::now();

    // The first report is a change, but there was no earlier set to record.
    let changed = db
        .store
        .update_agent_facts(&ctx, id, &facts(&["10.0.0.1"], t0))
        .await
        .unwrap();
    assert!(changed);
    let agent = db.store.get_agent(&ctx, id).await.unwrap().unwrap();
    assert_eq!(agent.capacity, 8);
    assert_eq!(agent.version, "0.2.0");
    assert_eq!(agent.labels.get("region"), Some("eu"));
    assert_eq!(agent.addresses, ["10.0.0.1"]);
    assert_eq!(
        agent.last_seen_at.map(|t| t.timestamp_micros()),
        Some(t0.timestamp_micros())
    );
    assert!(db
        .store
        .address_history(&ctx, id, 10)
        .await
        .unwrap()
        .is_empty());

    // The same set (duplicates aside): no change.
    let t1 = t0 + Duration::seconds(5);
    let same = facts(&["10.0.0.1", "10.0.0.1"], t1);
    assert!(!db.store.update_agent_facts(&ctx, id, &same).await.unwrap());

    let t2 = t0 + Duration::seconds(10);
    assert!(db
        .store
        .update_agent_facts(&ctx, id, &facts(&["10.0.0.2", "fd00::2"], t2))
        .await
        .unwrap());
    let reordered = facts(&["fd00::2", "10.0.0.2"], t2 + Duration::seconds(1));
    assert!(!db
        .store
        .update_agent_facts(&ctx, id, &reordered)
        .await
        .unwrap());
    let t3 = t0 + Duration::seconds(20);
    assert!(db
        .store
        .update_agent_facts(&ctx, id, &facts(&["10.0.0.3"], t3))
        .await
        .unwrap());

    let history = db.store.address_history(&ctx, id, 10).await.unwrap();
    let sets: Vec<&[String]> = history.iter().map(|h| h.addresses.as_slice()).collect();
    assert_eq!(
        sets,
        [
            &["10.0.0.2".to_string(), "fd00::2".into()][..],
            &["10.0.0.1".to_string()][..]
        ]
    );
    assert_eq!(
        history[0].changed_at.timestamp_micros(),
        t3.timestamp_micros()
    );
    assert_eq!(
        db.store.address_history(&ctx, id, 1).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn last_seen_never_moves_backwards() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let ctx = acme.ctx();
    let id = enrolled(&db, &acme, "web-1").await;
    let now = Utc::now();

    db.store.touch_agent(&ctx, id, now).await.unwrap();
    db.store
        .touch_agent(&ctx, id, now - Duration::seconds(30))
        .await
        .unwrap();
    let seen = db
        .store
        .get_agent(&ctx, id)
        .await
        .unwrap()
        .unwrap()
        .last_seen_at;
    assert_eq!(
        seen.map(|t| t.timestamp_micros()),
        Some(now.timestamp_micros())
    );

    // Unknown agents change nothing and are no error.
    db.store
        .touch_agent(&ctx, AgentId::new(), now)
        .await
        .unwrap();
    assert!(!db
        .store
        .update_agent_facts(&ctx, AgentId::new(), &facts(&["10.0.0.9"], now))
        .await
        .unwrap());
}

#[tokio::test]
async fn agents_are_listed_by_name_and_found_across_tenants() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let b = enrolled(&db, &acme, "b-agent").await;
    let a = enrolled(&db, &acme, "a-agent").await;

    let listed: Vec<AgentId> = db
        .store
        .list_agents(&acme.ctx())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, [a, b]);

    let (tenant, agent) = db.store.find_agent(b).await.unwrap().unwrap();
    assert_eq!(tenant, acme);
    assert_eq!(agent.name.as_str(), "b-agent");
    assert!(db.store.find_agent(AgentId::new()).await.unwrap().is_none());
}
