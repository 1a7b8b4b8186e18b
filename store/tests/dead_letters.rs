//! Dead letters: stored once per message, listed newest first page by page, replays
//! counted, discarded; invisible to other tenants.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use chrono::{DateTime, Duration, Utc};
use common::TestDb;
use ris_schemas::dead_letters::{DeadLetterId, MessageProperties};
use ris_store::{DeadLetterCursor, DeadLetterRepo, NewDeadLetter};
use serde_json::json;

fn letter(body: &[u8], dead_at: DateTime<Utc>) -> NewDeadLetter {
    NewDeadLetter {
        source_queue: "ris.submit".into(),
        reason: "unparseable submission: expected value".into(),
        exchange: "ris.submit".into(),
        routing_key: String::new(),
        headers: [
            ("x-ris-dead-reason".to_owned(), json!("unparseable")),
            ("x-death".to_owned(), json!([{ "count": 1, "queue": "q" }])),
        ]
        .into(),
        properties: MessageProperties {
            content_type: Some("application/json".into()),
            message_id: Some("m-1".into()),
            user_id: Some("ris.acme.agent.x".into()),
            timestamp: Some(1_700_000_000),
            ..MessageProperties::default()
        },
        body: body.to_vec(),
        dead_at,
    }
}

#[tokio::test]
async fn a_dead_letter_is_stored_as_given_and_once() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let new = letter(b"\x00\xffnot json", Utc::now());

    let stored = db
        .store
        .insert_dead_letter(&ctx, new.clone())
        .await
        .unwrap();
    assert_eq!(stored.tenant_id, ctx.id);
    assert_eq!(stored.source_queue, new.source_queue);
    assert_eq!(stored.reason, new.reason);
    assert_eq!(stored.exchange, new.exchange);
    assert_eq!(stored.routing_key, new.routing_key);
    assert_eq!(stored.headers, new.headers);
    assert_eq!(stored.properties, new.properties);
    assert_eq!(stored.body, new.body);
    assert_eq!(stored.replayed_at, None);
    assert_eq!(stored.replay_count, 0);
    assert_eq!(
        db.store.get_dead_letter(&ctx, stored.id).await.unwrap(),
        Some(stored.clone())
    );

    // The same message read again (its ack was lost): the first record, not a second.
    let later = NewDeadLetter {
        dead_at: Utc::now() + Duration::seconds(5),
        ..new.clone()
    };
    let again = db.store.insert_dead_letter(&ctx, later).await.unwrap();
    assert_eq!(again, stored);
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 1);

    // A different message (another body) is another dead letter.
    let other = db
        .store
        .insert_dead_letter(&ctx, letter(b"other", Utc::now()))
        .await
        .unwrap();
    assert_ne!(other.id, stored.id);
}

#[tokio::test]
async fn lists_newest_first_page_by_page() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let base = Utc::now();
    let mut ids = Vec::new();
    for i in 0..5 {
        // Two share a dead_at: the id breaks the tie.
        let at = base + Duration::seconds(i.min(3));
        let body = format!("message {i}");
        let stored = db
            .store
            .insert_dead_letter(&ctx, letter(body.as_bytes(), at))
            .await
            .unwrap();
        ids.push(stored.id);
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<DeadLetterCursor> = None;
    loop {
        let page = db
            .store
            .list_dead_letters(&ctx, 2, cursor.as_ref())
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|d| d.id));
        let next = DeadLetterCursor::after(page.last().unwrap());
        cursor = DeadLetterCursor::decode(&next.encode());
        assert_eq!(cursor, Some(next));
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn replays_are_counted_and_deleting_is_final() {
    let db = TestDb::new().await;
    let ctx = db.tenant("acme").await.ctx();
    let stored = db
        .store
        .insert_dead_letter(&ctx, letter(b"{}", Utc::now()))
        .await
        .unwrap();

    let once = db.store.mark_replayed(&ctx, stored.id).await.unwrap();
    let once = once.unwrap();
    assert_eq!(once.replay_count, 1);
    let first_replay = once.replayed_at.unwrap();
    let twice = db
        .store
        .mark_replayed(&ctx, stored.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twice.replay_count, 2);
    assert!(twice.replayed_at.unwrap() >= first_replay);

    assert!(db.store.delete_dead_letter(&ctx, stored.id).await.unwrap());
    assert!(!db.store.delete_dead_letter(&ctx, stored.id).await.unwrap());
    assert_eq!(
        db.store.get_dead_letter(&ctx, stored.id).await.unwrap(),
        None
    );
    assert_eq!(db.store.mark_replayed(&ctx, stored.id).await.unwrap(), None);
    let unknown = DeadLetterId::new();
    assert_eq!(db.store.get_dead_letter(&ctx, unknown).await.unwrap(), None);
}

#[tokio::test]
async fn another_tenant_sees_none_of_them() {
    let db = TestDb::new().await;
    let a = db.tenant("tenant-a").await.ctx();
    let b = db.tenant("tenant-b").await.ctx();
    let new = letter(b"{}", Utc::now());
    let theirs = db.store.insert_dead_letter(&a, new.clone()).await.unwrap();

    assert_eq!(db.store.get_dead_letter(&b, theirs.id).await.unwrap(), None);
    assert!(db
        .store
        .list_dead_letters(&b, 100, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(db.store.mark_replayed(&b, theirs.id).await.unwrap(), None);
    assert!(!db.store.delete_dead_letter(&b, theirs.id).await.unwrap());

    // The same message in tenant B is B's own dead letter, not A's.
    let mine = db.store.insert_dead_letter(&b, new).await.unwrap();
    assert_ne!(mine.id, theirs.id);
    assert_eq!(mine.tenant_id, b.id);
    assert_eq!(
        db.store.get_dead_letter(&a, theirs.id).await.unwrap(),
        Some(theirs)
    );

    // Deleting the tenant deletes its dead letters.
    db.exec(&format!("DELETE FROM tenants WHERE id = '{}'", a.id))
        .await;
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 1);
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_dead_letters() {
    let db = TestDb::new().await;
    let a = db.tenant("tenant-a").await.ctx();
    let b = db.tenant("tenant-b").await.ctx();
    db.store
        .insert_dead_letter(&a, letter(b"{}", Utc::now()))
        .await
        .unwrap();

    // As ris_app with tenant B set, and no tenant filter at all: nothing.
    let mut tx = db.store.pool().begin().await.unwrap();
    sqlx::query(
        "SELECT set_config('role', 'ris_app', true), set_config('ris.tenant_id', $1, true)",
    )
    .bind(b.id.to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM dead_letters")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let deleted = sqlx::query("DELETE FROM dead_letters")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 0);
    tx.rollback().await.unwrap();
}
