//! Tenant and agent provisioning against the real broker.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::TestTenant;
use ris_broker::{
    agent_user, connect_admin, deprovision_agent, deprovision_tenant, provision_agent,
    provision_tenant, DEAD_QUEUE, RESULTS_QUEUE, SUBMIT_QUEUE,
};
use ris_schemas::ids::AgentId;

#[tokio::test]
async fn provision_tenant_is_idempotent_and_declares_the_topology() {
    let t = TestTenant::provision().await;
    provision_tenant(&t.cfg, &t.mgmt, &t.tenant)
        .await
        .expect("second provisioning succeeds");

    assert!(t.mgmt.vhost_exists(&t.vhost()).await.unwrap());
    for queue in [SUBMIT_QUEUE, RESULTS_QUEUE, DEAD_QUEUE] {
        let count = t.mgmt.queue_message_count(&t.vhost(), queue).await.unwrap();
        assert_eq!(count, Some(0), "{queue}");
    }
    let absent = t
        .mgmt
        .queue_message_count(&t.vhost(), "no-such-queue")
        .await;
    assert_eq!(absent.unwrap(), None);
}

#[tokio::test]
async fn deprovision_tenant_removes_vhost_and_users() {
    let t = TestTenant::provision().await;
    let conn = connect_admin(&t.cfg, &t.vhost(), "test provision")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let agent = AgentId::new();
    for _ in 0..2 {
        provision_agent(&t.mgmt, &channel, &t.tenant, agent, "pw")
            .await
            .expect("agent provisioning is idempotent");
    }
    assert_eq!(t.users().await, vec![agent_user(&t.tenant, agent)]);

    deprovision_tenant(&t.mgmt, &t.tenant).await.unwrap();
    assert!(!t.mgmt.vhost_exists(&t.vhost()).await.unwrap());
    assert!(t.users().await.is_empty());
    deprovision_tenant(&t.mgmt, &t.tenant)
        .await
        .expect("deprovisioning twice is fine");
}

#[tokio::test]
async fn deprovision_agent_removes_user_and_queues_idempotently() {
    let t = TestTenant::provision().await;
    let conn = connect_admin(&t.cfg, &t.vhost(), "test provision")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let agent = AgentId::new();
    provision_agent(&t.mgmt, &channel, &t.tenant, agent, "pw")
        .await
        .unwrap();
    let queue = ris_broker::agent_queue(agent);
    assert_eq!(
        t.mgmt
            .queue_message_count(&t.vhost(), &queue)
            .await
            .unwrap(),
        Some(0)
    );

    for _ in 0..2 {
        deprovision_agent(&t.mgmt, &channel, &t.tenant, agent)
            .await
            .expect("agent deprovisioning is idempotent");
    }
    assert_eq!(
        t.mgmt
            .queue_message_count(&t.vhost(), &queue)
            .await
            .unwrap(),
        None
    );
    assert!(t.users().await.is_empty());
}
