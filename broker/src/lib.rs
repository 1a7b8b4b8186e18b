//! RabbitMQ access for RIS. Only this crate talks AMQP and the management API.
//!
//! # Layout
//!
//! - [`names`]: every exchange, queue, user and header name.
//! - `config`: [`BrokerConfig`], how to reach the broker.
//! - `error`: [`BrokerError`].
//! - `management`: [`Management`], the HTTP API client (vhosts, users, permissions).
//! - `connection`: [`connect`], [`connect_admin`], [`connect_with_retry`], [`amqp_uri`].
//! - `publisher`: [`Publisher`], publish with confirms; [`PublishOptions`].
//! - `consumer`: [`consume`], prefetch + manual acks.
//! - `topology`: [`declare_tenant`], [`declare_agent_queues`], [`delete_agent_queues`].
//! - `dead_letter`: [`dead_letter`], park what cannot be processed on `ris.dead`.
//! - `integrations`: an integration's broker user and its permissions.
//! - `provision`: tenant and agent provisioning, multi-step and idempotent.
//!
//! # Topology of a tenant vhost `ris.<tenant>`
//!
//! ```text
//! ris.submit (fanout)  ──► ris.submit (quorum)        ──► dispatcher
//! ris.results (topic)  ──► ris.results (quorum, "#")  ──► dispatcher
//! ris.agents (direct)  ──► ris.agent.<id>     (classic, key "<id>")     ──► agent
//!                      ──► ris.agent.<id>.ctl (classic, key "<id>.ctl") ──► agent
//! ris.events (topic)   ──► subscribers' own queues
//! ris.dead (fanout)    ──► ris.dead (classic); every queue above dead-letters here
//! ```

//!
//! # Design notes
//!
//! - Publisher confirms on every publish; `mandatory` by default, so a message no queue
//!   takes is an error ([`BrokerError::Unroutable`]), not a silent loss. lapin can pair a
//!   `basic.return` with the wrong confirm when several mandatory messages are in flight
//!   on one channel, so [`Publisher`] keeps one in flight per channel ("lanes") and
//!   pipelines only non-mandatory publishes.
//! - Work queues (`ris.submit`, `ris.results`) are quorum queues with a delivery limit;
//!   per-agent queues are classic (cheap per queue); see `topology` for each argument.
//! - Agents get least privilege (see [`provision_agent`]); the admin user is only used by
//!   server components.
//! - Everything that waits on the network is bounded by a timeout.

pub use lapin;

mod config;
mod connection;
mod consumer;
mod dead_letter;
pub mod envelope;
mod error;
mod events;
mod integrations;
mod management;
pub mod names;
mod percent;
mod provision;
mod publisher;
mod topology;

pub use config::BrokerConfig;
pub use connection::{amqp_uri, connect, connect_admin, connect_with_retry};
pub use consumer::consume;
pub use dead_letter::dead_letter;
pub use error::BrokerError;
pub use events::publish_event;
pub use integrations::{
    deprovision_integration, integration_permissions, integration_queue_prefix, integration_user,
    provision_integration, publish_reply,
};
pub use management::Management;
pub use names::*;
pub use provision::{deprovision_agent, deprovision_tenant, provision_agent, provision_tenant};
pub use publisher::{PublishOptions, Publisher, DEFAULT_LANES};
pub use topology::{
    bind_events, declare_agent_queues, declare_tenant, declare_webhook_queue, delete_agent_queues,
    unbind_events,
};
