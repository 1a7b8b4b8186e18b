//! Agent least privilege, checked with the agent's own credentials on the real broker.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::{next_delivery, TestTenant};
use ris_broker::lapin::options::BasicAckOptions;
use ris_broker::lapin::Connection;
use ris_broker::{
    agent_control_key, agent_control_queue, agent_queue, agent_user, connect, connect_admin,
    consume, deprovision_agent, provision_agent, BrokerError, PublishOptions, Publisher,
    AGENTS_EXCHANGE, RESULTS_EXCHANGE, SUBMIT_EXCHANGE,
};
use ris_schemas::ids::AgentId;
use serde_json::json;

const PASSWORD: &str = "agent-pw:with/odd@chars";

/// Two provisioned agents, `me` connected with its own credentials.
struct Agents {
    me: AgentId,
    other: AgentId,
    /// `me`'s connection.
    conn: Connection,
    admin_conn: Connection,
    admin: Publisher,
}

async fn two_agents(t: &TestTenant) -> Agents {
    let admin_conn = connect_admin(&t.cfg, &t.vhost(), "test admin")
        .await
        .unwrap();
    let channel = admin_conn.create_channel().await.unwrap();
    let (me, other) = (AgentId::new(), AgentId::new());
    for agent in [me, other] {
        provision_agent(&t.mgmt, &channel, &t.tenant, agent, PASSWORD)
            .await
            .unwrap();
    }
    let admin = Publisher::new(&admin_conn).await.unwrap();
    let user = agent_user(&t.tenant, me);
    let conn = connect(&t.cfg, &t.vhost(), &user, PASSWORD, "test agent")
        .await
        .expect("agent logs in with its credentials");
    Agents {
        me,
        other,
        conn,
        admin_conn,
        admin,
    }
}

#[tokio::test]
async fn agent_consumes_its_queues_and_reports_under_its_own_id() {
    let t = TestTenant::provision().await;
    let Agents {
        me, conn, admin, ..
    } = two_agents(&t).await;

    let tasks = conn.create_channel().await.unwrap();
    let mut task_consumer = consume(&tasks, &agent_queue(me), "agent-tasks", 4)
        .await
        .expect("own task queue");
    let control = conn.create_channel().await.unwrap();
    let mut control_consumer = consume(&control, &agent_control_queue(me), "agent-ctl", 1)
        .await
        .expect("own control queue");

    let assign = PublishOptions::default();
    admin
        .publish_json(
            AGENTS_EXCHANGE,
            &me.to_string(),
            &json!({"task": 1}),
            assign,
        )
        .await
        .unwrap();
    let ctl = PublishOptions::default();
    admin
        .publish_json(
            AGENTS_EXCHANGE,
            &agent_control_key(me),
            &json!({"cancel": 1}),
            ctl,
        )
        .await
        .unwrap();
    let task = next_delivery(&mut task_consumer).await;
    task.acker.ack(BasicAckOptions::default()).await.unwrap();
    let cancel = next_delivery(&mut control_consumer).await;
    cancel.acker.ack(BasicAckOptions::default()).await.unwrap();

    let publisher = Publisher::new(&conn).await.unwrap();
    let report = PublishOptions {
        user_id: Some(agent_user(&t.tenant, me)),
        ..PublishOptions::default()
    };
    publisher
        .publish_json(
            RESULTS_EXCHANGE,
            &me.to_string(),
            &json!({"ok": true}),
            report,
        )
        .await
        .expect("agent may publish results under its own id");
}

#[tokio::test]
async fn agent_is_refused_everything_else() {
    let t = TestTenant::provision().await;
    let Agents {
        me, other, conn, ..
    } = two_agents(&t).await;

    let channel = conn.create_channel().await.unwrap();
    let err = consume(&channel, &agent_queue(other), "steal", 1)
        .await
        .unwrap_err();
    assert!(err.is_access_refused(), "other agent's queue: {err}");

    let channel = conn.create_channel().await.unwrap();
    let err = consume(&channel, &agent_control_queue(other), "steal", 1)
        .await
        .unwrap_err();
    assert!(
        err.is_access_refused(),
        "other agent's control queue: {err}"
    );

    let err = publish(&conn, SUBMIT_EXCHANGE, "x").await;
    assert!(err.is_access_refused(), "ris.submit: {err}");

    let err = publish(&conn, RESULTS_EXCHANGE, &other.to_string()).await;
    assert!(err.is_access_refused(), "results as another agent: {err}");

    let err = publish(&conn, "", &agent_queue(other)).await;
    assert!(err.is_access_refused(), "default exchange: {err}");

    let err = publish(&conn, AGENTS_EXCHANGE, &other.to_string()).await;
    assert!(err.is_access_refused(), "ris.agents: {err}");

    // user_id must be the connection's user: no impersonating the admin.
    let publisher = Publisher::new(&conn).await.unwrap();
    let spoof = PublishOptions {
        user_id: Some(t.cfg.username.clone()),
        ..PublishOptions::default()
    };
    let err = publisher
        .publish_json(RESULTS_EXCHANGE, &me.to_string(), &json!({}), spoof)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BrokerError::Amqp(_)),
        "spoofed user_id: {err}"
    );

    // The agent may still report as itself after all that (refusals close channels only).
    publish_ok(&conn, &me.to_string()).await;
}

#[tokio::test]
async fn deprovisioned_agent_can_no_longer_log_in() {
    let t = TestTenant::provision().await;
    let Agents {
        me,
        conn,
        admin_conn,
        ..
    } = two_agents(&t).await;
    let channel = admin_conn.create_channel().await.unwrap();
    deprovision_agent(&t.mgmt, &channel, &t.tenant, me)
        .await
        .unwrap();
    drop(conn);

    let user = agent_user(&t.tenant, me);
    let err = connect(&t.cfg, &t.vhost(), &user, PASSWORD, "test agent")
        .await
        .unwrap_err();
    assert!(err.is_access_refused(), "login after removal: {err}");
}

/// Publishes as the agent on a fresh publisher, expecting a failure.
async fn publish(conn: &Connection, exchange: &str, key: &str) -> BrokerError {
    let publisher = Publisher::new(conn).await.unwrap();
    publisher
        .publish_json(exchange, key, &json!({}), PublishOptions::default())
        .await
        .unwrap_err()
}

async fn publish_ok(conn: &Connection, key: &str) {
    let publisher = Publisher::new(conn).await.unwrap();
    publisher
        .publish_json(RESULTS_EXCHANGE, key, &json!({}), PublishOptions::default())
        .await
        .unwrap();
}
