//! Credentials: API keys, and redeeming enrollment tokens exactly once.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use chrono::{Duration, Utc};
use common::{new_agent, TestDb};
use ris_schemas::ids::ApiKeyId;
use ris_store::{AgentRepo, AuthRepo, RedeemError};

#[tokio::test]
async fn api_keys_are_found_by_id_across_tenants() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let id = ApiKeyId::new();

    let stored = db
        .store
        .insert_api_key(&acme.ctx(), id, "ci", "operator", b"secret-hash", None)
        .await
        .unwrap();
    assert_eq!(stored.tenant, acme);
    assert_eq!(stored.role, "operator");
    assert_eq!(stored.revoked_at, None);

    let found = db.store.find_api_key(id).await.unwrap();
    assert_eq!(found, Some(stored));
    assert_eq!(db.store.find_api_key(ApiKeyId::new()).await.unwrap(), None);
}

#[tokio::test]
async fn a_token_enrolls_one_agent_only() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    db.store
        .insert_enrollment_token(&acme.ctx(), b"tok", Utc::now() + Duration::hours(1))
        .await
        .unwrap();

    let agent = new_agent("web-1");
    let (tenant, record) = db.store.enroll_agent(b"tok", agent.clone()).await.unwrap();
    assert_eq!(tenant, acme);
    assert_eq!(record.id, agent.id);
    assert_eq!(record.tenant_id, acme.id);
    assert_eq!(record.labels, agent.labels);
    assert!(record.addresses.is_empty());
    assert_eq!(record.last_seen_at, None);

    let again = db.store.enroll_agent(b"tok", new_agent("web-2")).await;
    assert!(matches!(again, Err(RedeemError::AlreadyUsed)), "{again:?}");
    let unknown = db.store.enroll_agent(b"nope", new_agent("web-3")).await;
    assert!(matches!(unknown, Err(RedeemError::NotFound)), "{unknown:?}");

    let used_by = db
        .count(&format!(
            "SELECT count(*) FROM enrollment_tokens WHERE agent_id = '{}' AND used_at IS NOT NULL",
            agent.id
        ))
        .await;
    assert_eq!(used_by, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_enroll_once() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    db.store
        .insert_enrollment_token(&acme.ctx(), b"tok", Utc::now() + Duration::hours(1))
        .await
        .unwrap();

    let attempts = (0..8).map(|i| db.store.enroll_agent(b"tok", new_agent(&format!("a{i}"))));
    let results = futures::future::join_all(attempts).await;
    let enrolled = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(enrolled, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|r| r.is_ok() || matches!(r, Err(RedeemError::AlreadyUsed))));
    assert_eq!(db.store.list_agents(&acme.ctx()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    db.store
        .insert_enrollment_token(&acme.ctx(), b"old", Utc::now() - Duration::seconds(1))
        .await
        .unwrap();

    let res = db.store.enroll_agent(b"old", new_agent("web-1")).await;
    assert!(matches!(res, Err(RedeemError::Expired)), "{res:?}");
    assert!(db.store.list_agents(&acme.ctx()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_taken_name_leaves_the_token_usable() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let expires = Utc::now() + Duration::hours(1);
    db.store
        .insert_enrollment_token(&acme.ctx(), b"first", expires)
        .await
        .unwrap();
    db.store
        .insert_enrollment_token(&acme.ctx(), b"second", expires)
        .await
        .unwrap();
    db.store
        .enroll_agent(b"first", new_agent("web-1"))
        .await
        .unwrap();

    let clash = db.store.enroll_agent(b"second", new_agent("web-1")).await;
    assert!(matches!(clash, Err(RedeemError::NameTaken)), "{clash:?}");

    let (_, record) = db
        .store
        .enroll_agent(b"second", new_agent("web-2"))
        .await
        .unwrap();
    assert_eq!(record.name.as_str(), "web-2");

    // The same name in another tenant is fine.
    let other = db.tenant("other").await;
    db.store
        .insert_enrollment_token(&other.ctx(), b"third", expires)
        .await
        .unwrap();
    db.store
        .enroll_agent(b"third", new_agent("web-1"))
        .await
        .unwrap();
}
