//! Dead-lettering against the real broker.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::{header, next_delivery, TestTenant};
use ris_broker::lapin::options::QueueDeclareOptions;
use ris_broker::lapin::Channel;
use ris_broker::{
    connect_admin, consume, dead_letter, PublishOptions, Publisher, DEAD_QUEUE, HEADER_DEAD_AT,
    HEADER_DEAD_REASON, HEADER_DEAD_SOURCE, SUBMIT_EXCHANGE, SUBMIT_QUEUE,
};

#[tokio::test]
async fn dead_letter_parks_the_message_with_its_reason_and_acks_the_original() {
    let t = TestTenant::provision().await;
    let conn = connect_admin(&t.cfg, &t.vhost(), "test dead letter")
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    let opts = PublishOptions {
        message_id: Some("poison-1".into()),
        headers: vec![("x-original".into(), "kept".into())],
        // A TTL must not follow the message to ris.dead, nor a user_id.
        expiration_ms: Some(60_000),
        user_id: Some(t.cfg.username.clone()),
        ..PublishOptions::default()
    };
    publisher
        .publish_bytes(SUBMIT_EXCHANGE, "k", b"{not json", opts)
        .await
        .unwrap();

    let consumer_channel = conn.create_channel().await.unwrap();
    let mut submissions = consume(&consumer_channel, SUBMIT_QUEUE, "test-submit", 1)
        .await
        .unwrap();
    let delivery = next_delivery(&mut submissions).await;
    dead_letter(
        &publisher,
        &delivery,
        SUBMIT_QUEUE,
        "invalid JSON at line 1",
    )
    .await
    .unwrap();

    // Closing the consumer's channel would requeue an unacked original.
    consumer_channel.close(200, "done".into()).await.unwrap();
    let check = conn.create_channel().await.unwrap();
    assert_eq!(ready_count(&check, SUBMIT_QUEUE).await, 0, "original acked");

    let mut dead = consume(&check, DEAD_QUEUE, "test-dead", 1).await.unwrap();
    let parked = next_delivery(&mut dead).await;
    assert_eq!(parked.data, b"{not json");
    assert_eq!(
        header(&parked, HEADER_DEAD_REASON).as_deref(),
        Some("invalid JSON at line 1")
    );
    assert_eq!(
        header(&parked, HEADER_DEAD_SOURCE).as_deref(),
        Some(SUBMIT_QUEUE)
    );
    let at = header(&parked, HEADER_DEAD_AT).unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
    assert_eq!(header(&parked, "x-original").as_deref(), Some("kept"));
    let props = &parked.properties;
    assert_eq!(props.message_id().as_ref().unwrap().as_str(), "poison-1");
    assert_eq!(props.expiration(), &None);
    assert_eq!(props.user_id(), &None);
}

#[tokio::test]
async fn dead_letter_falls_back_to_reject_when_ris_dead_is_gone() {
    let t = TestTenant::provision().await;
    let conn = connect_admin(&t.cfg, &t.vhost(), "test dead letter")
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    publisher
        .publish_bytes(SUBMIT_EXCHANGE, "k", b"x", PublishOptions::default())
        .await
        .unwrap();
    let admin = conn.create_channel().await.unwrap();
    admin
        .queue_delete(DEAD_QUEUE.into(), Default::default())
        .await
        .unwrap();

    let consumer_channel = conn.create_channel().await.unwrap();
    let mut submissions = consume(&consumer_channel, SUBMIT_QUEUE, "test-submit", 1)
        .await
        .unwrap();
    let delivery = next_delivery(&mut submissions).await;
    dead_letter(&publisher, &delivery, SUBMIT_QUEUE, "unroutable park")
        .await
        .expect("the delivery is settled by a reject");
    consumer_channel.close(200, "done".into()).await.unwrap();
    assert_eq!(ready_count(&admin, SUBMIT_QUEUE).await, 0, "not requeued");
}

async fn ready_count(channel: &Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), options, Default::default())
        .await
        .unwrap();
    declared.message_count()
}
