//! Tenants: idempotent creation, listing, deletion cascading to everything owned.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use chrono::{Duration, Utc};
use common::{new_agent, noop_request, TestDb};
use ris_schemas::ids::{ApiKeyId, TaskId, TenantName};
use ris_store::{AuthRepo, TaskRepo, TenantRepo};

#[tokio::test]
async fn create_is_idempotent() {
    let db = TestDb::new().await;
    let name = TenantName::parse("acme").unwrap();

    let (first, created) = db.store.create_tenant(&name).await.unwrap();
    assert!(created);
    let (again, created_again) = db.store.create_tenant(&name).await.unwrap();
    assert!(!created_again);
    assert_eq!(again, first);

    assert_eq!(
        db.store.get_tenant(&name).await.unwrap(),
        Some(first.clone())
    );
    let other = TenantName::parse("other").unwrap();
    assert_eq!(db.store.get_tenant(&other).await.unwrap(), None);
    db.store.create_tenant(&other).await.unwrap();
    let names: Vec<String> = db
        .store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, ["acme", "other"]);
}

#[tokio::test]
async fn delete_cascades_to_everything_owned() {
    let db = TestDb::new().await;
    let acme = db.tenant("acme").await;
    let keep = db.tenant("keep").await;
    for tenant in [&acme, &keep] {
        let ctx = tenant.ctx();
        db.store
            .insert_api_key(&ctx, ApiKeyId::new(), "ci", "tenant-admin", b"hash", None)
            .await
            .unwrap();
        let token = format!("token-{}", tenant.name);
        db.store
            .insert_enrollment_token(&ctx, token.as_bytes(), Utc::now() + Duration::hours(1))
            .await
            .unwrap();
        db.store
            .enroll_agent(token.as_bytes(), new_agent("web-1"))
            .await
            .unwrap();
        db.store
            .insert_task(&ctx, TaskId::new(), &noop_request(60), None)
            .await
            .unwrap();
    }

    assert!(db.store.delete_tenant(&acme.name).await.unwrap());
    assert!(!db.store.delete_tenant(&acme.name).await.unwrap());
    assert_eq!(db.store.get_tenant(&acme.name).await.unwrap(), None);

    for table in [
        "api_keys",
        "enrollment_tokens",
        "agents",
        "tasks",
        "task_events",
    ] {
        let gone = db
            .count(&format!(
                "SELECT count(*) FROM {table} WHERE tenant_id = '{}'",
                acme.id
            ))
            .await;
        assert_eq!(gone, 0, "{table} rows of the deleted tenant");
        let kept = db
            .count(&format!(
                "SELECT count(*) FROM {table} WHERE tenant_id = '{}'",
                keep.id
            ))
            .await;
        assert_eq!(kept, 1, "{table} rows of the other tenant");
    }
}
