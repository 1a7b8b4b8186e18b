//! Publishing with confirms and consuming with manual acks against the real broker.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::{header, next_delivery, TestTenant};
use futures::future::join_all;
use ris_broker::lapin::options::BasicAckOptions;
use ris_broker::{
    connect_admin, consume, BrokerError, PublishOptions, Publisher, AGENTS_EXCHANGE,
    EVENTS_EXCHANGE, SUBMIT_EXCHANGE, SUBMIT_QUEUE,
};
use serde_json::json;

#[tokio::test]
async fn published_submission_is_consumed_with_its_properties() {
    let t = TestTenant::provision().await;
    let conn = connect_admin(&t.cfg, &t.vhost(), "test publish")
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut consumer = consume(&channel, SUBMIT_QUEUE, "test-consumer", 10)
        .await
        .unwrap();

    let opts = PublishOptions {
        headers: vec![("x-ris-tenant".into(), t.tenant.to_string())],
        message_id: Some("m-1".into()),
        user_id: Some(t.cfg.username.clone()),
        ..PublishOptions::default()
    };
    let body = json!({ "hello": "world" });
    publisher
        .publish_json(SUBMIT_EXCHANGE, "any-key", &body, opts)
        .await
        .expect("confirmed");

    let delivery = next_delivery(&mut consumer).await;
    let received: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(received, body);
    let props = &delivery.properties;
    assert_eq!(
        props.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(props.delivery_mode(), &Some(2));
    assert_eq!(props.message_id().as_ref().unwrap().as_str(), "m-1");
    assert_eq!(
        header(&delivery, "x-ris-tenant"),
        Some(t.tenant.to_string())
    );
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn unroutable_message_is_an_error_unless_not_mandatory() {
    let t = TestTenant::provision().await;
    let conn = connect_admin(&t.cfg, &t.vhost(), "test publish")
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();

    let nobody = ris_schemas::ids::AgentId::new().to_string();
    let err = publisher
        .publish_json(
            AGENTS_EXCHANGE,
            &nobody,
            &json!({}),
            PublishOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Unroutable { .. }), "{err}");

    // Events go out with mandatory=false: no subscriber is not an error.
    let event = PublishOptions {
        mandatory: Some(false),
        ..PublishOptions::default()
    };
    publisher
        .publish_json(EVENTS_EXCHANGE, "task.queued", &json!({}), event)
        .await
        .expect("non-mandatory publish is confirmed");

    // The channel is still usable after an unroutable publish.
    publisher
        .publish_json(SUBMIT_EXCHANGE, "", &json!({}), PublishOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_each_get_their_own_confirm() {
    let t = TestTenant::provision().await;
    let conn = connect_admin(&t.cfg, &t.vhost(), "test publish")
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    assert_eq!(publish_mixed(&publisher, 300).await, 100);
    assert_eq!(passive_count(&publisher, SUBMIT_QUEUE).await, 100);

    let single = Publisher::from_channel(conn.create_channel().await.unwrap());
    assert_eq!(publish_mixed(&single.await.unwrap(), 30).await, 10);
    assert_eq!(passive_count(&publisher, SUBMIT_QUEUE).await, 110);
}

/// Publishes `n` messages from as many tasks: a third routable, a third unroutable, a
/// third non-mandatory events. A confirm paired with the wrong message would show up as
/// a misplaced `Unroutable`. Returns how many were routed to `ris.submit`.
async fn publish_mixed(publisher: &Publisher, n: usize) -> usize {
    let nobody = ris_schemas::ids::AgentId::new().to_string();
    let tasks = (0..n).map(|i| {
        let publisher = publisher.clone();
        let nobody = nobody.clone();
        tokio::spawn(async move {
            let mut opts = PublishOptions::default();
            let (exchange, key) = match i % 3 {
                0 => (SUBMIT_EXCHANGE, ""),
                1 => (AGENTS_EXCHANGE, nobody.as_str()),
                _ => {
                    opts.mandatory = Some(false);
                    (EVENTS_EXCHANGE, "task.queued")
                }
            };
            let body = json!({ "i": i });
            (i, publisher.publish_json(exchange, key, &body, opts).await)
        })
    });
    let mut routed = 0;
    for joined in join_all(tasks).await {
        match joined.unwrap() {
            (i, Ok(())) => assert_ne!(i % 3, 1, "publish {i} should have been unroutable"),
            (i, Err(BrokerError::Unroutable { .. })) => assert_eq!(i % 3, 1, "publish {i}"),
            (i, Err(e)) => panic!("publish {i}: {e}"),
        }
    }
    for i in 0..n {
        routed += usize::from(i % 3 == 0);
    }
    routed
}

async fn passive_count(publisher: &Publisher, queue: &str) -> u32 {
    use ris_broker::lapin::options::QueueDeclareOptions;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = publisher
        .channel()
        .queue_declare(queue.into(), options, Default::default())
        .await
        .unwrap();
    declared.message_count()
}

#[tokio::test]
async fn a_channel_error_costs_one_lane_and_is_open_tells_when_all_are_gone() {
    let t = TestTenant::provision().await;
    let conn = connect_admin(&t.cfg, &t.vhost(), "test publish")
        .await
        .unwrap();
    let publisher = Publisher::with_lanes(&conn, 2).await.unwrap();
    let missing = |p: Publisher| async move {
        p.publish_json(
            "no-such-exchange",
            "",
            &json!({}),
            PublishOptions::default(),
        )
        .await
    };

    let err = missing(publisher.clone()).await.unwrap_err();
    assert!(matches!(err, BrokerError::Amqp(_)), "{err}");
    assert!(publisher.is_open());
    publisher
        .publish_json(SUBMIT_EXCHANGE, "", &json!({}), PublishOptions::default())
        .await
        .expect("the other lane still works");

    missing(publisher.clone()).await.unwrap_err();
    assert!(!publisher.is_open());
    let err = publisher
        .publish_json(SUBMIT_EXCHANGE, "", &json!({}), PublishOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Amqp(_)), "{err}");
}
