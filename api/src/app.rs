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
use axum::extract::connect_info::Connected;
use axum::http::HeaderName;
use axum::serve::{IncomingStream, Listener};
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
use crate::tls::TlsListener;

/// Longest a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct App {
    listener: Bound,
    state: AppState,
}

/// The listening socket: HTTPS, or plain HTTP when explicitly allowed.
enum Bound {
    Tls(TlsListener),
    Plain(TcpListener),
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
        config
            .broker
            .check_transport()
            .context("checking the broker configuration")?;
        let tcp = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let listener = match (&config.tls, config.insecure_http) {
            (Some(tls), _) => {
                let server = tls
                    .server_config(&[b"http/1.1"])
                    .context("loading the TLS certificate")?;
                Bound::Tls(TlsListener::new(tcp, server).context("starting the TLS listener")?)
            }
            (None, true) => {
                tracing::warn!("serving plain HTTP (insecure_http): for local development only");
                Bound::Plain(tcp)
            }
            (None, false) => anyhow::bail!(
                "no TLS certificate configured: set tls.cert and tls.key \
                 (RIS_TLS__CERT, RIS_TLS__KEY), or insecure_http = true for local development"
            ),
        };
        let store: ris_store::DynStore = Arc::new(store);
        let caches = crate::cache::Caches::new(Duration::from_millis(config.credential_cache_ms));
        let state = AppState::new(Inner {
            brokers: TenantBrokers::new(config.broker.clone()),
            audit: crate::audit::AuditWriter::start(store.clone()),
            task_reads: crate::task_reads::TaskReads::start(store.clone()),
            store,
            presence,
            management,
            config,
            caches,
            limits_cache: Default::default(),
            queued_counts: Default::default(),
            signing: Default::default(),
            jwt: Default::default(),
        });
        Ok(App { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.listener {
            Bound::Tls(l) => l.local_addr(),
            Bound::Plain(l) => Listener::local_addr(l),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let state = self.state.clone();
        let app = router(self.state);
        let mut serving = match self.listener {
            Bound::Tls(l) => {
                tracing::info!(%addr, "API listening (HTTPS)");
                spawn_server(l, app, &shutdown)
            }
            Bound::Plain(l) => {
                tracing::info!(%addr, "API listening (plain HTTP)");
                spawn_server(l, app, &shutdown)
            }
        };
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

fn spawn_server<L>(
    listener: L,
    app: Router,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>>
where
    L: Listener<Addr = SocketAddr>,
    for<'a> PeerAddr: Connected<IncomingStream<'a, L>>,
{
    // The peer address reaches handlers (audit, per-address rate limits) as ConnectInfo.
    let app = app.into_make_service_with_connect_info::<PeerAddr>();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::spawn(server.into_future())
}

/// The client's address, whether it came over TLS or plain TCP (axum only knows how to
/// take it from a plain `TcpListener`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
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
