//! Every RabbitMQ name RIS uses, in one place.
//!
//! Each tenant has its own vhost (`ris.<tenant>`, see [`TenantName::vhost`]), so the names
//! below are the same in every vhost. Nothing else in the workspace should spell an
//! exchange, queue, user or header name by hand.

use ris_schemas::ids::{AgentId, TenantName};

/// Fanout, durable. The API and enterprise integrators publish task submissions here
/// (any routing key); the dispatcher consumes them from [`SUBMIT_QUEUE`].
pub const SUBMIT_EXCHANGE: &str = "ris.submit";
/// Quorum queue bound to [`SUBMIT_EXCHANGE`], consumed by the dispatcher.
pub const SUBMIT_QUEUE: &str = "ris.submit";
/// Topic, durable. Agents publish reports and results with routing key = their agent id
/// (topic permissions hold each agent to its own id).
pub const RESULTS_EXCHANGE: &str = "ris.results";
/// Quorum queue bound to [`RESULTS_EXCHANGE`] with `#`, consumed by the dispatcher.
pub const RESULTS_QUEUE: &str = "ris.results";
/// Direct, durable. The dispatcher publishes assignments with routing key = agent id and
/// control messages with [`agent_control_key`].
pub const AGENTS_EXCHANGE: &str = "ris.agents";
/// Topic, durable. Task lifecycle events, routing key `task.<state>` and the like.
/// Subscribers (webhooks, UI streams, integrators) bind their own queues.
pub const EVENTS_EXCHANGE: &str = "ris.events";
/// Fanout, durable. Dead letters: messages that could not be processed, with their reason.
pub const DEAD_EXCHANGE: &str = "ris.dead";
/// The queue feeding outbound webhooks, bound to `ris.events` with the patterns the
/// tenant's webhooks ask for (and nothing else).
pub const WEBHOOKS_QUEUE: &str = "ris.webhooks";
/// Classic durable queue bound to [`DEAD_EXCHANGE`], inspected and replayed through the API.
pub const DEAD_QUEUE: &str = "ris.dead";

/// Header set by [`crate::dead_letter`]: why the message was parked.
pub const HEADER_DEAD_REASON: &str = "x-ris-dead-reason";
/// Header set by [`crate::dead_letter`]: the queue the message was taken from.
pub const HEADER_DEAD_SOURCE: &str = "x-ris-dead-source";
/// Header set by [`crate::dead_letter`]: when it was parked (RFC 3339).
pub const HEADER_DEAD_AT: &str = "x-ris-dead-at";
/// Header set by [`crate::dead_letter`]: the original `user_id` property (the publishing
/// broker user), which cannot be republished as a property by another user.
pub const HEADER_DEAD_USER: &str = "x-ris-dead-user-id";
/// Header carrying the tenant name where a message may leave its vhost (e.g. events).
pub const HEADER_TENANT: &str = "x-ris-tenant";

/// The agent's task queue: `ris.agent.<uuid>`.
pub fn agent_queue(agent: AgentId) -> String {
    format!("ris.agent.{agent}")
}

/// The agent's control queue (cancel, config push, ping): `ris.agent.<uuid>.ctl`.
pub fn agent_control_queue(agent: AgentId) -> String {
    format!("ris.agent.{agent}.ctl")
}

/// Routing key on [`AGENTS_EXCHANGE`] for the agent's control queue: `<uuid>.ctl`.
/// (Its task queue is bound with the bare `<uuid>`.)
pub fn agent_control_key(agent: AgentId) -> String {
    format!("{agent}.ctl")
}

/// The agent's broker user: `ris.<tenant>.agent.<uuid>`.
pub fn agent_user(tenant: &TenantName, agent: AgentId) -> String {
    format!("{}agent.{agent}", tenant_user_prefix(tenant))
}

/// Prefix shared by every broker user belonging to the tenant: `ris.<tenant>.`.
/// The trailing dot keeps tenant `acme` from matching users of tenant `acme-2`.
pub fn tenant_user_prefix(tenant: &TenantName) -> String {
    format!("ris.{tenant}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_as_documented() {
        let tenant = TenantName::parse("acme").unwrap();
        let agent: AgentId = "0191d2a4-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(
            agent_queue(agent),
            "ris.agent.0191d2a4-0000-7000-8000-000000000001"
        );
        assert_eq!(
            agent_control_queue(agent),
            "ris.agent.0191d2a4-0000-7000-8000-000000000001.ctl"
        );
        assert_eq!(
            agent_control_key(agent),
            "0191d2a4-0000-7000-8000-000000000001.ctl"
        );
        assert_eq!(
            agent_user(&tenant, agent),
            "ris.acme.agent.0191d2a4-0000-7000-8000-000000000001"
        );
        assert_eq!(tenant_user_prefix(&tenant), "ris.acme.");
    }
}
