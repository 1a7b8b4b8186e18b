//! The audit log: every mutating call and refused credential is recorded in a per-tenant
//! hash chain; tampering with a row is reported at that row.

#![allow(clippy::unwrap_used)]

use reqwest::{Method, StatusCode};
use ris_tests::System;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

fn queued_task() -> Value {
    json!({
        "target": { "selector": "nobody=here" },
        "task": { "kind": "shell", "argv": ["true"] },
        "queue_timeout_secs": 600,
    })
}

async fn superuser(system: &System) -> PgConnection {
    PgConnection::connect(&format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        system.database
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn mutations_and_auth_failures_are_audited_in_a_verified_chain() {
    let system = System::start().await;
    let t = system.tenant().await;
    let task = t.submit(queued_task()).await;
    let (status, _) = t
        .request(Method::POST, &format!("/v1/tasks/{task}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t.enroll_http("audited").await;
    assert_eq!(status, StatusCode::CREATED);
    // A wrong secret for this tenant's key: recorded in the tenant's chain.
    let id = t.key.split('_').nth(1).unwrap();
    let forged = format!("ris_{id}_{}", "0".repeat(43));
    let (status, _) = t
        .with_key(&forged)
        .request(Method::GET, "/v1/tasks", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let page = t.get("/v1/audit").await;
    let entries = page["items"].as_array().unwrap();
    let find = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} entry in {page}"))
            .clone()
    };
    let submit = find("submitTask");
    assert_eq!(submit["target"], format!("task:{task}"));
    assert_eq!(submit["outcome"], "success");
    assert!(
        submit["actor"].as_str().unwrap().starts_with("key:"),
        "{submit}"
    );
    assert!(submit["request_id"].is_string(), "{submit}");
    assert_eq!(submit["source"], "127.0.0.1");
    assert_eq!(find("cancelTask")["outcome"], "success");
    assert!(find("enrollAgent")["actor"]
        .as_str()
        .unwrap()
        .starts_with("agent:"));
    let failed = find("auth.failed");
    assert_eq!(
        (failed["status"].as_u64(), failed["outcome"].as_str()),
        (Some(401), Some("denied"))
    );
    // The key creation by the platform admin is in the tenant's chain too.
    assert_eq!(find("createApiKey")["actor"], "platform-admin");

    // Filters and pagination.
    let only = t.get("/v1/audit?action=submitTask").await;
    assert!(only["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] == "submitTask"));
    let first = t.get("/v1/audit?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = t.get(&format!("/v1/audit?limit=2&cursor={cursor}")).await;
    assert!(
        second["items"][0]["seq"].as_i64().unwrap() < first["items"][1]["seq"].as_i64().unwrap()
    );

    let report = t.get("/v1/audit/verify").await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["checked"].as_u64().unwrap() >= 5, "{report}");
    // The platform chain (tenant creation) verifies too.
    let (status, report) = system.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(
        (status, report["ok"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{report}"
    );
}

#[tokio::test]
async fn tampering_with_one_row_is_reported_at_that_row() {
    let system = System::start().await;
    let t = system.tenant().await;
    for _ in 0..4 {
        t.submit(queued_task()).await;
    }
    assert_eq!(t.get("/v1/audit/verify").await["ok"], true);

    // The app role cannot change the log, and neither can the owner without
    // disabling its trigger.
    let mut db = superuser(&system).await;
    let refused = db
        .execute(
            "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3 AND tenant_id IS NOT NULL",
        )
        .await;
    assert!(refused.is_err(), "the trigger must refuse updates");
    db.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let changed = db
        .execute(
            format!(
                "UPDATE audit_log SET actor = 'someone-else'
                 WHERE seq = 3 AND tenant_name = '{}'",
                t.name
            )
            .as_str(),
        )
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);

    let report = t.get("/v1/audit/verify").await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_broken"]["seq"], 3, "{report}");
    assert_eq!(report["first_broken"]["problem"], "hash_mismatch");
    assert_eq!(report["checked"], 2);

    // Removing an entry is a gap.
    db.execute(
        format!(
            "DELETE FROM audit_log WHERE seq = 2 AND tenant_name = '{}'",
            t.name
        )
        .as_str(),
    )
    .await
    .unwrap();
    let report = t.get("/v1/audit/verify").await;
    assert_eq!(report["first_broken"]["seq"], 3, "{report}");
    assert_eq!(report["first_broken"]["problem"], "seq_gap");
}

#[tokio::test]
async fn concurrent_writers_do_not_fork_the_chain() {
    let system = System::start().await;
    let t = system.tenant().await;
    let submits = (0..24).map(|_| {
        let t = t.clone();
        async move { t.submit(queued_task()).await }
    });
    futures::future::join_all(submits).await;
    let report = t.get("/v1/audit/verify").await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["checked"].as_u64().unwrap() >= 24, "{report}");
    let (status, _) = t
        .request(Method::GET, "/v1/audit?action=nothing", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}
