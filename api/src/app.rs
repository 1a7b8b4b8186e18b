//! Building and serving the API.
//!
//! [`App::build`] connects to the dependencies and binds the listener; [`App::run`]
//! serves until the shutdown token fires, then drains for at most
//! [`SHUTDOWN_GRACE`]. Tests build the same `App` on port 0.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::HeaderName;
use axum::Router;
use ris_broker::Management;
use ris_presence::Presence;
use ris_store::PgStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::state::{AppState, Inner, TenantBrokers};

/// Longest a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct App {
    listener: TcpListener,
    state: AppState,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        if config.bootstrap_admin_key.is_none() {
            tracing::warn!("no bootstrap_admin_key configured: tenants cannot be created");
        }
        let _ = ris_runtime::prometheus();
        let store = PgStore::connect_lazy(&config.database_url, config.database_max_connections)
            .context("configuring the PostgreSQL pool")?;
        ris_runtime::at_startup("postgres", || store.migrate())
            .await
            .context("running database migrations")?;
        let presence_ttl = Duration::from_secs(u64::from(config.presence_ttl_secs));
        let presence = ris_runtime::at_startup("redis", || {
            Presence::connect(&config.redis_url, &config.redis_prefix, presence_ttl)
        })
        .await
        .context("connecting to Redis")?;
        let management = Management::new(&config.broker)
            .context("configuring the RabbitMQ management client")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let state = AppState::new(Inner {
            brokers: TenantBrokers::new(config.broker.clone()),
            store: Arc::new(store),
            presence,
            management,
            config,
            limits_cache: Default::default(),
            signing: Default::default(),
            jwt: Default::default(),
        });
        Ok(App { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "API listening");
        let state = self.state.clone();
        let app = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut serving = tokio::spawn(server.into_future());
        let outcome = tokio::select! {
            res = &mut serving => res,
            _ = shutdown.cancelled() => match tokio::time::timeout(SHUTDOWN_GRACE, &mut serving).await {
                Ok(res) => res,
                Err(_) => {
                    tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
                    serving.abort();
                    Ok(Ok(()))
                }
            },
        };
        state.brokers.close_all().await;
        tracing::info!("API stopped");
        outcome
            .context("server task panicked")?
            .context("serving HTTP")
    }
}

/// The whole HTTP surface, apart from serving (tests call it with `oneshot`).
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    crate::routes::router()
        .route_layer(axum::middleware::from_fn(crate::hardening::timeout))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::guard::guard,
        ))
        .route_layer(axum::middleware::from_fn(crate::http_metrics::track))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(RequestBodyLimitLayer::new(crate::hardening::MAX_BODY))
        .layer(axum::middleware::from_fn(crate::hardening::limit_headers))
        .with_state(state)
}
