//! Wire types of RIS.
//!
//! Everything that crosses a process boundary — AMQP messages, the agent heartbeat
//! frames, REST request and response bodies — is defined here as a serde type, and
//! nothing else. No I/O lives in this crate. JSON Schema files generated from these
//! types are checked in under `schemas/json/` so integrators in other languages can
//! validate what they publish (`tests/json_schema.rs` fails when they drift).
//!
//! # Layout
//!
//! - [`ids`]: identifiers and names that cannot hold an invalid value.
//! - [`labels`]: agent labels and label selectors.
//! - [`job`]: fleet jobs: one task on every agent of a target set, with rate control.
//! - [`rate`]: a count or a percentage of a job's targets (`max_concurrency`, `max_errors`).
//! - [`task`]: task specifications and targets (re-exports the three below).
//! - [`state`]: the task lifecycle and its one transition function.
//! - [`result`]: what an attempt produced.
//! - [`retry`]: retry policies.
//! - [`messages`]: what travels through RabbitMQ (submit, assignment, report, control).
//! - [`heartbeat`]: frames on the agent heartbeat WebSocket.
//! - [`event`]: events published on `ris.events`.
//! - [`service`]: Docker services: specs, revisions, per-agent status.
//! - [`docker`]: one-off `docker` tasks.
//! - [`api`]: REST bodies.
//! - [`dead_letters`]: parked messages, as stored and shown by the API.
//! - [`webhooks`]: outbound webhooks and their deliveries, as the API shows them.
//! - [`hooks`]: inbound webhooks: bodies, views, and the template a trigger fills in.
//! - [`replies`]: the final outcome sent to an integrator's `reply_to` queue.
//! - [`integrations`]: REST bodies of `/v1/integrations`.
//! - [`version`]: the `"v": 1` marker carried by every message.

pub mod api;
pub mod dead_letters;
pub mod docker;
pub mod event;
pub mod heartbeat;
pub mod hooks;
pub mod ids;
pub mod integrations;
pub mod job;
pub mod labels;
pub mod messages;
pub mod rate;
pub mod replies;
pub mod result;
pub mod retry;
pub mod security;
pub mod service;
pub mod state;
pub mod task;
pub mod users;
pub mod version;
pub mod webhooks;

/// Every schema that is published under `schemas/json/`, by file stem.
pub fn json_schemas() -> Vec<(&'static str, schemars::Schema)> {
    use schemars::schema_for;
    vec![
        ("submit-message", schema_for!(messages::SubmitMessage)),
        ("agent-message", schema_for!(messages::AgentMessage)),
        ("result-message", schema_for!(messages::ResultMessage)),
        ("control-message", schema_for!(messages::ControlMessage)),
        ("heartbeat", schema_for!(heartbeat::HeartbeatFrame)),
        ("heartbeat-reply", schema_for!(heartbeat::HeartbeatReply)),
        ("event", schema_for!(event::Event)),
        ("api-create-task", schema_for!(task::TaskRequest)),
        ("api-task", schema_for!(api::TaskView)),
        ("api-task-attempt", schema_for!(api::AttemptView)),
        ("api-tenant-settings", schema_for!(api::TenantSettings)),
        ("api-task-cancelled", schema_for!(api::TaskCancelled)),
        ("api-task-event", schema_for!(api::TaskEventView)),
        ("api-agent", schema_for!(api::AgentView)),
        ("api-tenant", schema_for!(api::TenantView)),
        ("api-create-tenant", schema_for!(api::CreateTenant)),
        ("api-create-api-key", schema_for!(api::CreateApiKey)),
        ("api-api-key-created", schema_for!(api::ApiKeyCreated)),
        ("api-api-key", schema_for!(security::ApiKeyView)),
        ("api-audit-entry", schema_for!(security::AuditEntryView)),
        ("api-audit-verify", schema_for!(security::AuditVerifyReport)),
        ("api-tenant-limits", schema_for!(security::TenantLimits)),
        ("api-create-user", schema_for!(users::CreateUser)),
        ("api-user", schema_for!(users::UserView)),
        ("api-user-created", schema_for!(users::UserCreated)),
        ("api-login", schema_for!(users::LoginRequest)),
        ("api-token-pair", schema_for!(users::TokenPair)),
        (
            "api-create-enrollment-token",
            schema_for!(api::CreateEnrollmentToken),
        ),
        (
            "api-enrollment-token",
            schema_for!(api::EnrollmentTokenCreated),
        ),
        ("api-enroll-request", schema_for!(api::EnrollRequest)),
        ("api-enroll-response", schema_for!(api::EnrollResponse)),
        ("api-error", schema_for!(api::ApiErrorBody)),
        ("api-dead-letter", schema_for!(dead_letters::DeadLetterView)),
        ("task-reply", schema_for!(replies::ReplyMessage)),
        (
            "api-create-integration",
            schema_for!(integrations::CreateIntegration),
        ),
        (
            "api-integration-created",
            schema_for!(integrations::IntegrationCreated),
        ),
        (
            "api-integration",
            schema_for!(integrations::IntegrationView),
        ),
        ("api-create-webhook", schema_for!(webhooks::CreateWebhook)),
        ("api-webhook", schema_for!(webhooks::WebhookView)),
        ("api-webhook-delivery", schema_for!(webhooks::DeliveryView)),
        (
            "api-create-inbound-hook",
            schema_for!(hooks::CreateInboundHook),
        ),
        ("api-inbound-hook", schema_for!(hooks::InboundHookView)),
        ("api-create-job", schema_for!(job::JobRequest)),
        ("api-job", schema_for!(job::JobView)),
        ("api-job-target", schema_for!(job::JobTargetView)),
        ("api-put-service", schema_for!(service::PutService)),
        ("api-scale-service", schema_for!(service::ScaleService)),
        ("api-service", schema_for!(service::ServiceView)),
        (
            "api-service-revision",
            schema_for!(service::ServiceRevision),
        ),
    ]
}
