//! One module per resource, each with its own `router()`.

pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod dead_letters;
pub mod enrollment;
pub mod events;
pub mod health;
pub mod heartbeat;
pub mod hooks;
pub mod integrations;
pub mod jobs;
pub mod limits;
pub mod services;
pub mod sessions;
pub mod settings;
pub mod signing_keys;
pub mod tasks;
pub mod tenants;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use axum::{Extension, Router};

use crate::event_streams::EventStreams;

use crate::state::AppState;

/// Every route of the API.
pub fn router() -> Router<AppState> {
    let v1 = Router::new()
        .merge(tenants::router())
        .merge(api_keys::router())
        .merge(dead_letters::router())
        .merge(enrollment::router())
        .merge(agents::router())
        .merge(heartbeat::router())
        .merge(tasks::router())
        .merge(jobs::router())
        .merge(webhooks::router())
        .merge(hooks::router())
        .merge(services::router())
        .merge(settings::router())
        .merge(integrations::router())
        .merge(events::router())
        .merge(audit::router())
        .merge(limits::router())
        .merge(signing_keys::router())
        .merge(sessions::router())
        .merge(sessions::keys_router())
        .merge(users::router())
        // Shared by `/events/stream` and `/tasks/{id}/output`.
        .layer(Extension(Arc::new(EventStreams::default())));
    Router::new()
        .nest("/v1", v1)
        .merge(health::router())
        .merge(crate::openapi::router())
}
