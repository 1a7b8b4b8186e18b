//! Tenant and agent provisioning: vhost, users, permissions and topology.
//!
//! Every step is idempotent, so a failed provisioning is repaired by running it again.

use lapin::Channel;
use ris_schemas::ids::{AgentId, TenantName};

use crate::config::BrokerConfig;
use crate::connection::connect_admin;
use crate::error::BrokerError;
use crate::management::Management;
use crate::names::{agent_user, tenant_user_prefix, RESULTS_EXCHANGE};
use crate::topology::{declare_agent_queues, declare_tenant, delete_agent_queues};

/// AMQP reply code for a normal close.
const REPLY_SUCCESS: u16 = 200;

/// Creates vhost `ris.<tenant>`, grants the admin user full permissions on it, connects
/// as admin, declares the tenant topology, closes.
#[tracing::instrument(skip(cfg, mgmt), fields(%tenant))]
pub async fn provision_tenant(
    cfg: &BrokerConfig,
    mgmt: &Management,
    tenant: &TenantName,
) -> Result<(), BrokerError> {
    let vhost = tenant.vhost();
    mgmt.create_vhost(&vhost).await?;
    mgmt.set_permissions(&vhost, &cfg.username, ".*", ".*", ".*")
        .await?;
    let conn = connect_admin(cfg, &vhost, &format!("ris-provision {tenant}")).await?;
    let declared = declare_on(&conn).await;
    // A close error after a dropped channel is harmless: the connection closes anyway.
    if let Err(error) = conn.close(REPLY_SUCCESS, "provisioned".into()).await {
        tracing::debug!(%error, "closing provisioning connection");
    }
    declared
}

async fn declare_on(conn: &lapin::Connection) -> Result<(), BrokerError> {
    let channel = conn.create_channel().await?;
    declare_tenant(&channel).await
}

/// Deletes every broker user with the tenant's user prefix (which closes their
/// connections), then the vhost with everything in it. Idempotent.
#[tracing::instrument(skip(mgmt), fields(%tenant))]
pub async fn deprovision_tenant(mgmt: &Management, tenant: &TenantName) -> Result<(), BrokerError> {
    for user in mgmt
        .list_users_with_prefix(&tenant_user_prefix(tenant))
        .await?
    {
        mgmt.delete_user(&user).await?;
    }
    mgmt.delete_vhost(&tenant.vhost()).await
}

/// Creates (or resets the password of) the agent's broker user, without tags, with least
/// privilege in `ris.<tenant>`:
/// - configure `^$`: it declares and deletes nothing;
/// - write `^ris\.results$`: it publishes only results (never to the default exchange,
///   which reaches every queue by name);
/// - read `^ris\.agent\.<uuid>(\.ctl)?$`: it consumes only its own two queues;
/// - topic permission on `ris.results`: write `^<uuid>$` (it reports only as itself),
///   read `^$`.
///
/// Then declares its queues on `admin_channel` (a channel of an admin connection to the
/// tenant vhost).
#[tracing::instrument(skip(mgmt, admin_channel, password), fields(%tenant, %agent))]
pub async fn provision_agent(
    mgmt: &Management,
    admin_channel: &Channel,
    tenant: &TenantName,
    agent: AgentId,
    password: &str,
) -> Result<(), BrokerError> {
    let (vhost, user) = (tenant.vhost(), agent_user(tenant, agent));
    declare_agent_queues(admin_channel, agent).await?;
    mgmt.put_user(&user, password, "").await?;
    let read = format!(r"^ris\.agent\.{agent}(\.ctl)?$");
    mgmt.set_permissions(&vhost, &user, "^$", r"^ris\.results$", &read)
        .await?;
    let write = format!("^{agent}$");
    mgmt.set_topic_permissions(&vhost, &user, RESULTS_EXCHANGE, &write, "^$")
        .await
}

/// Deletes the agent's broker user (closing its connections) and its queues.
/// Idempotent.
#[tracing::instrument(skip(mgmt, admin_channel), fields(%tenant, %agent))]
pub async fn deprovision_agent(
    mgmt: &Management,
    admin_channel: &Channel,
    tenant: &TenantName,
    agent: AgentId,
) -> Result<(), BrokerError> {
    mgmt.delete_user(&agent_user(tenant, agent)).await?;
    delete_agent_queues(admin_channel, agent).await
}
