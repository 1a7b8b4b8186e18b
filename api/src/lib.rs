//! The RIS API: REST under `/v1`, agent enrollment, and the agent heartbeat gateway.
//!
//! The API keeps nothing in memory that matters: tasks and identities live in PostgreSQL
//! (`ris-store`), presence in Redis (`ris-presence`), work in flight in RabbitMQ
//! (`ris-broker`). Any number of instances can serve side by side.
//!
//! # Layout
//!
//! - [`config`]: configuration from a file plus `RIS_*` environment variables.
//! - [`app`]: [`app::App`] builds the state and serves the router until shutdown.
//! - [`state`]: shared handles (store, presence, broker connections per tenant).
//! - [`error`]: the one HTTP error type, with a stable `code` and the offending `field`.
//! - [`extract`]: body and path extractors that name the bad field.
//! - [`pagination`]: cursor pagination of lists.
//! - [`cache`]: bounded in-process caches of API keys and finished tasks' bodies.
//! - [`task_reads`]: live tasks' reads for `GET /v1/tasks/{id}`, batched per tenant.
//! - [`auth`]: credentials → caller (platform admin or a tenant's API key) and role.
//! - [`permissions`]: the permission matrix (route → permission → roles).
//! - [`guard`]: the middleware enforcing it, with rate limits and audit entries.
//! - [`audit`]: audit entries the guard writes and handlers annotate.
//! - [`limits`]: rate limits and quotas per tenant.
//! - [`hardening`]: header size limits and handler timeouts.
//! - [`secrets`]: generation and hashing of keys and tokens.
//! - [`signing`]: the keys that sign messages to agents.
//! - [`jwt`]: users' access tokens.
//! - [`passwords`]: argon2id password hashes and TOTP codes.
//! - [`routes`]: one module per resource, each with its own `router()`.
//! - [`events`]: task events the API publishes itself (a cancel that takes effect).
//! - [`event_streams`]: live subscriptions to a tenant's events (`/v1/events/stream`).
//! - [`http_metrics`]: HTTP request metrics middleware.
//! - [`tls`]: the HTTPS listener (rustls, TLS 1.2 minimum).
//! - [`openapi`]: the OpenAPI 3.1 document, served at `/v1/openapi.json`.

pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod event_streams;
pub mod events;
pub mod extract;
pub mod guard;
pub mod hardening;
pub mod http_metrics;
pub mod jwt;
pub mod limits;
pub mod openapi;
pub mod pagination;
pub mod passwords;
pub mod permissions;
pub mod routes;
pub mod secrets;
pub mod signing;
pub mod state;
pub mod task_reads;
pub mod tls;
