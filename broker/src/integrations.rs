//! Integrations: an enterprise system's own least-privilege broker user.
//!
//! An integration `<name>` of tenant `<tenant>` gets user `ris.<tenant>.int.<name>`,
//! without tags, with in `ris.<tenant>` only:
//!
//! | permission | regex                                  | what it allows |
//! |------------|----------------------------------------|----------------|
//! | configure  | `^ris\.int\.<name>\..*`                | declare/delete its own queues (and nothing else) |
//! | write      | `^(ris\.submit\|ris\.int\.<name>\..*)$` | publish submissions; bind its own queues (`queue.bind` needs write on the queue) |
//! | read       | `^(ris\.events\|ris\.int\.<name>\..*)$` | consume its own queues; bind them to `ris.events` (`queue.bind` needs read on the exchange) |
//!
//! Not the default exchange (`amq.default` reaches every queue by name), not
//! `ris.agents`, `ris.results` or `ris.dead`, and no queue of an agent or of another
//! integration (names have no `.`, so `ris.int.a.` never prefixes `ris.int.a-b.`).
//! Replies reach its queues through the dispatcher, which publishes as the platform.

use ris_schemas::ids::TenantName;
use ris_schemas::integrations::IntegrationName;
use ris_schemas::replies::ReplyMessage;

use crate::error::BrokerError;
use crate::management::Management;
use crate::names::tenant_user_prefix;
use crate::publisher::{PublishOptions, Publisher};

/// The integration's broker user: `ris.<tenant>.int.<name>` (under the tenant's user
/// prefix, so deprovisioning the tenant deletes it too).
pub fn integration_user(tenant: &TenantName, name: &IntegrationName) -> String {
    format!("{}int.{name}", tenant_user_prefix(tenant))
}

/// Every queue (or exchange) the integration declares starts with this:
/// `ris.int.<name>.`.
pub fn integration_queue_prefix(name: &IntegrationName) -> String {
    format!("ris.int.{name}.")
}

/// The three permission regexes (configure, write, read) of the module docs.
pub fn integration_permissions(name: &IntegrationName) -> (String, String, String) {
    let own = format!(r"ris\.int\.{name}\..*");
    (
        format!("^{own}"),
        format!(r"^(ris\.submit|{own})$"),
        format!(r"^(ris\.events|{own})$"),
    )
}

/// Creates (or resets the password of) the integration's broker user and sets its
/// permissions in the tenant vhost. Idempotent.
#[tracing::instrument(skip(mgmt, password), fields(%tenant, %name))]
pub async fn provision_integration(
    mgmt: &Management,
    tenant: &TenantName,
    name: &IntegrationName,
    password: &str,
) -> Result<(), BrokerError> {
    let user = integration_user(tenant, name);
    mgmt.put_user(&user, password, "").await?;
    let (configure, write, read) = integration_permissions(name);
    mgmt.set_permissions(&tenant.vhost(), &user, &configure, &write, &read)
        .await
}

/// Deletes the integration's broker user, which closes its connections (and with them
/// its exclusive and auto-delete queues). Durable queues it declared stay until the
/// tenant is deprovisioned. Idempotent.
#[tracing::instrument(skip(mgmt), fields(%tenant, %name))]
pub async fn deprovision_integration(
    mgmt: &Management,
    tenant: &TenantName,
    name: &IntegrationName,
) -> Result<(), BrokerError> {
    mgmt.delete_user(&integration_user(tenant, name)).await
}

/// Publishes a task's final outcome to the queue its submitter named: default exchange
/// (the platform's user may write there; integrators may not), routing key =
/// `reply_to`, `correlation_id` echoed, `message_id` = task id. Mandatory, so a queue
/// that is gone is [`BrokerError::Unroutable`] rather than a silent loss; callers log
/// it and carry on (the reply is a notification).
pub async fn publish_reply(
    publisher: &Publisher,
    reply_to: &str,
    correlation_id: Option<&str>,
    reply: &ReplyMessage,
) -> Result<(), BrokerError> {
    let ReplyMessage::Reply(body) = reply;
    let opts = PublishOptions {
        message_id: Some(body.task_id.to_string()),
        correlation_id: correlation_id.map(str::to_owned),
        mandatory: Some(true),
        ..PublishOptions::default()
    };
    publisher.publish_json("", reply_to, reply, opts).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_permissions_are_as_documented() {
        let tenant = TenantName::parse("acme").unwrap();
        let name = IntegrationName::parse("billing").unwrap();
        assert_eq!(integration_user(&tenant, &name), "ris.acme.int.billing");
        assert_eq!(integration_queue_prefix(&name), "ris.int.billing.");
        let (configure, write, read) = integration_permissions(&name);
        assert_eq!(configure, r"^ris\.int\.billing\..*");
        assert_eq!(write, r"^(ris\.submit|ris\.int\.billing\..*)$");
        assert_eq!(read, r"^(ris\.events|ris\.int\.billing\..*)$");
    }
}
